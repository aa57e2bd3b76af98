//! The Pi firmware's files: `autoboot.txt` on the first FAT partition and
//! what the firmware reports in `/proc/device-tree/chosen/bootloader`.

use std::path::PathBuf;

use crate::tryboot::{Autoboot, Firmware, TrybootError};

/// Why the Pi's boot state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PiError {
    /// A file could not be read or written.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file says something Cairn does not understand.
    #[error(transparent)]
    Tryboot(#[from] TrybootError),
}

/// The FAT partition that holds `autoboot.txt`.
pub trait BootFiles {
    /// A file's contents.
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>>;
    /// Replaces a file so that a power cut leaves the old or the new one.
    fn replace(&self, name: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// Where the file is, for messages.
    fn describe(&self, name: &str) -> String;
}

/// The partition mounted at a directory (`/boot/autoboot` on a Pi).
#[derive(Debug, Clone)]
pub struct MountedDir(pub PathBuf);

impl BootFiles for MountedDir {
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.0.join(name))
    }

    /// A new file beside it, synced, renamed over it (vfat renames in
    /// place, so the firmware finds the old or the new file), the
    /// directory synced.
    fn replace(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        cairn_host::durable::replace_file(&self.0.join(name), bytes, 0o644)
    }

    fn describe(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

/// The Pi's boot state: `autoboot.txt` and the firmware's report.
#[derive(Debug, Clone)]
pub struct PiBoot<F> {
    /// The partition with `autoboot.txt`.
    pub files: F,
    /// `/proc/device-tree/chosen/bootloader`.
    pub firmware_dir: PathBuf,
}

const AUTOBOOT: &str = "autoboot.txt";

impl<F: BootFiles> PiBoot<F> {
    /// What `autoboot.txt` says.
    pub fn autoboot(&self) -> Result<Autoboot, PiError> {
        let bytes = self.files.read(AUTOBOOT).map_err(|source| PiError::Io {
            path: self.files.describe(AUTOBOOT),
            source,
        })?;
        Ok(Autoboot::parse(&String::from_utf8_lossy(&bytes))?)
    }

    /// Replaces `autoboot.txt`.
    pub fn set_autoboot(&self, autoboot: Autoboot) -> Result<(), PiError> {
        self.files
            .replace(AUTOBOOT, autoboot.render().as_bytes())
            .map_err(|source| PiError::Io {
                path: self.files.describe(AUTOBOOT),
                source,
            })
    }

    /// What the firmware did at this boot.
    pub fn firmware(&self) -> Result<Firmware, PiError> {
        let read = |name: &str| {
            let path = self.firmware_dir.join(name);
            std::fs::read(&path).map_err(|source| PiError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Firmware::from_device_tree(
            &read("tryboot")?,
            &read("partition")?,
        )?)
    }
}

/// The usual places on a Pi running Cairn's image.
pub fn on_the_box() -> PiBoot<MountedDir> {
    PiBoot {
        files: MountedDir(PathBuf::from("/boot/autoboot")),
        firmware_dir: PathBuf::from("/proc/device-tree/chosen/bootloader"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Slot;

    #[test]
    fn a_mounted_partition_keeps_autoboot_and_a_missing_one_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let pi = PiBoot {
            files: MountedDir(dir.path().to_owned()),
            firmware_dir: dir.path().join("bootloader"),
        };
        let err = pi.autoboot().unwrap_err().to_string();
        assert!(err.contains("autoboot.txt"), "{err}");
        let ab = Autoboot {
            primary: Slot::B,
            tryboot: Slot::A,
        };
        pi.set_autoboot(ab).unwrap();
        assert_eq!(pi.autoboot().unwrap(), ab);
        std::fs::create_dir(dir.path().join("bootloader")).unwrap();
        std::fs::write(dir.path().join("bootloader/tryboot"), 1u32.to_be_bytes()).unwrap();
        std::fs::write(dir.path().join("bootloader/partition"), 3u32.to_be_bytes()).unwrap();
        let fw = pi.firmware().unwrap();
        assert!(fw.tryboot);
        assert_eq!(fw.booted(), Some(Slot::B));
    }
}

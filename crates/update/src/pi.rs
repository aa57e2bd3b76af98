//! The Pi firmware's files: `autoboot.txt` on the first FAT partition and
//! what the firmware reports in `/proc/device-tree/chosen/bootloader`.

use std::path::{Path, PathBuf};

use crate::tryboot::{Autoboot, Firmware, TrybootError};

/// Why the Pi's boot state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PiError {
    /// A file could not be read or written.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file says something Cairn does not understand.
    #[error(transparent)]
    Tryboot(#[from] TrybootError),
}

/// The Pi's boot state: where `autoboot.txt` is and where the firmware
/// reports.
#[derive(Debug, Clone)]
pub struct PiBoot {
    /// The mounted partition with `autoboot.txt` (`/boot/autoboot`).
    pub autoboot_dir: PathBuf,
    /// `/proc/device-tree/chosen/bootloader`.
    pub firmware_dir: PathBuf,
}

impl PiBoot {
    fn autoboot_path(&self) -> PathBuf {
        self.autoboot_dir.join("autoboot.txt")
    }

    /// What `autoboot.txt` says.
    pub fn autoboot(&self) -> Result<Autoboot, PiError> {
        let path = self.autoboot_path();
        let text = std::fs::read_to_string(&path).map_err(|source| PiError::Io { path, source })?;
        Ok(Autoboot::parse(&text)?)
    }

    /// Replaces `autoboot.txt`: a new file beside it, synced, renamed over
    /// it (vfat renames in place, so the firmware finds the old or the new
    /// file), and the directory synced.
    pub fn set_autoboot(&self, autoboot: Autoboot) -> Result<(), PiError> {
        let path = self.autoboot_path();
        cairn_host::durable::replace_file(&path, autoboot.render().as_bytes(), 0o644)
            .map_err(|source| PiError::Io { path, source })
    }

    /// What the firmware did at this boot.
    pub fn firmware(&self) -> Result<Firmware, PiError> {
        let read = |name: &str| {
            let path = self.firmware_dir.join(name);
            std::fs::read(&path).map_err(|source| PiError::Io { path, source })
        };
        Ok(Firmware::from_device_tree(
            &read("tryboot")?,
            &read("partition")?,
        )?)
    }
}

/// The usual places on a Pi running Cairn's image.
pub fn on_the_box() -> PiBoot {
    PiBoot {
        autoboot_dir: Path::new("/boot/autoboot").to_owned(),
        firmware_dir: Path::new("/proc/device-tree/chosen/bootloader").to_owned(),
    }
}

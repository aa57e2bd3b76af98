//! The ESP as systemd-boot reads it: Cairn's entries in `loader/entries`
//! and each slot's kernel and initrd in `cairn-<slot>/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Slot;
use crate::bootcount::{Entries, Op, kernel_dir};

/// Why the ESP could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {path}: {source}; is the ESP mounted read-write at the --esp path?")]
pub struct EspError {
    /// What was being done.
    pub what: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// An ESP mounted at a directory.
#[derive(Debug, Clone)]
pub struct Esp(PathBuf);

impl Esp {
    /// The ESP mounted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Esp {
        Esp(dir.into())
    }

    fn entries_dir(&self) -> PathBuf {
        self.0.join("loader/entries")
    }

    /// Cairn's entries there.
    pub fn entries(&self) -> Result<Entries, EspError> {
        let dir = self.entries_dir();
        let read = std::fs::read_dir(&dir).map_err(|source| EspError {
            what: "read",
            path: dir.clone(),
            source,
        })?;
        let mut names = Vec::new();
        for entry in read {
            let entry = entry.map_err(|source| EspError {
                what: "read",
                path: dir.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(Entries::from_names(names))
    }

    /// Carries out the changes, in order, each durable before the next.
    pub fn apply(&self, ops: &[Op]) -> Result<(), EspError> {
        let dir = self.entries_dir();
        for op in ops {
            match op {
                Op::Remove(name) => {
                    let path = dir.join(name);
                    std::fs::remove_file(&path).map_err(|source| EspError {
                        what: "remove",
                        path,
                        source,
                    })?;
                }
                Op::Rename { from, to } => {
                    let path = dir.join(from);
                    std::fs::rename(&path, dir.join(to)).map_err(|source| EspError {
                        what: "rename",
                        path,
                        source,
                    })?;
                }
                Op::Write { name, body } => write_new(&dir.join(name), body.as_bytes())?,
            }
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Copies a slot's kernel and initrd from its root file system (mounted
    /// at `root`, files in `usr/lib/cairn/boot/`) to `cairn-<slot>/` on the
    /// ESP. Called only for the slot being installed, which no entry boots
    /// while it is written.
    pub fn install_kernel(&self, slot: Slot, root: &Path) -> Result<(), EspError> {
        let dir = self.0.join(kernel_dir(slot));
        std::fs::create_dir_all(&dir).map_err(|source| EspError {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        for name in ["vmlinuz", "initrd.img"] {
            let from = root.join("usr/lib/cairn/boot").join(name);
            let bytes = std::fs::read(&from).map_err(|source| EspError {
                what: "read",
                path: from.clone(),
                source,
            })?;
            let to = dir.join(name);
            let _ = std::fs::remove_file(&to);
            write_new(&to, &bytes)?;
        }
        sync_dir(&dir)
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), EspError> {
    let fail = |what, source| EspError {
        what,
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(|e| fail("create", e))?;
    file.write_all(bytes).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))
}

fn sync_dir(dir: &Path) -> Result<(), EspError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| EspError {
            what: "sync",
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SlotState;
    use crate::bootcount::{TRIES, entry_body};

    #[test]
    fn an_esp_directory_takes_a_new_slot_and_its_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let esp = Esp::new(dir.path().join("esp"));
        std::fs::create_dir_all(dir.path().join("esp/loader/entries")).unwrap();
        std::fs::write(dir.path().join("esp/loader/entries/cairn-1-a.conf"), "a").unwrap();
        std::fs::write(dir.path().join("esp/loader/entries/other.conf"), "x").unwrap();
        let root = dir.path().join("root-b");
        std::fs::create_dir_all(root.join("usr/lib/cairn/boot")).unwrap();
        std::fs::write(root.join("usr/lib/cairn/boot/vmlinuz"), "kernel").unwrap();
        std::fs::write(root.join("usr/lib/cairn/boot/initrd.img"), "initrd").unwrap();

        esp.install_kernel(Slot::B, &root).unwrap();
        let body = entry_body(Slot::B, "2.0.0", "quiet");
        esp.apply(&esp.entries().unwrap().set_primary(Slot::B, TRIES, &body))
            .unwrap();
        let entries = esp.entries().unwrap();
        assert_eq!(entries.primary(), Some(Slot::B));
        assert_eq!(entries.state(Slot::B), SlotState::Trial { left: TRIES });
        assert_eq!(
            std::fs::read_to_string(dir.path().join("esp/loader/entries/cairn-2-b+3.conf"))
                .unwrap(),
            body
        );
        assert_eq!(
            std::fs::read(dir.path().join("esp/cairn-b/vmlinuz")).unwrap(),
            b"kernel"
        );
        assert!(dir.path().join("esp/loader/entries/other.conf").exists());
        let missing = esp.install_kernel(Slot::A, &dir.path().join("nowhere"));
        assert!(missing.unwrap_err().to_string().contains("cannot read"));
    }
}

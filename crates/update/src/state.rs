//! The files the update keeps in `/var/lib/cairn-update` (the writable
//! partition, which no update touches): the update being installed, and
//! what became of the last one. Both are TOML with a `format` number
//! (docs/UPDATES.md); root writes them, cairnd reads `status.toml` for its
//! page, log and metrics.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Slot;

/// The format of both files.
pub const FORMAT: u32 = 1;

/// Where the files live on a box.
pub const DEFAULT_DIR: &str = "/var/lib/cairn-update";

/// An update being installed (written before RAUC writes the slot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// [`FORMAT`].
    pub format: u32,
    /// The bundle's version.
    pub version: String,
    /// The version that ran when it was installed.
    pub from_version: String,
    /// The slot that ran when it was installed.
    pub from_slot: Slot,
    /// Data disks online before the update: the new slot must bring as many.
    pub disks_online: usize,
    /// RAUC finished writing the slot and made it primary.
    pub installed: bool,
    /// Why the health gate gave up on the new slot, once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// How the last update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Result {
    /// Installed, booted, passed the gate: the box runs it.
    Kept,
    /// Installed, but the new slot failed: the box is back on the old one.
    RolledBack,
    /// Writing it did not finish: the box runs the old slot, untouched.
    Interrupted,
    /// Refused before anything was written (signature, architecture, version).
    Refused,
}

impl Result {
    /// The word for it on the page, in logs and in the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Result::Kept => "kept",
            Result::RolledBack => "rolled-back",
            Result::Interrupted => "interrupted",
            Result::Refused => "refused",
        }
    }
}

/// What became of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The bundle's version (empty when RAUC refused it before reading one).
    pub version: String,
    /// How it ended.
    pub result: Result,
    /// Why, in words for the owner.
    pub reason: String,
    /// When, Unix seconds.
    pub at: u64,
}

/// The update status cairnd shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// [`FORMAT`].
    pub format: u32,
    /// The slot running.
    pub slot: Slot,
    /// The version running.
    pub version: String,
    /// How the last update ended, if there was one.
    pub last: Option<Outcome>,
}

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not what this version writes.
    #[error("{path} is damaged or from a newer Cairn ({message}); remove it to start afresh")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

/// The directory's two files.
#[derive(Debug, Clone)]
pub struct StateDir(PathBuf);

impl StateDir {
    /// The files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir(dir.into())
    }

    fn pending_path(&self) -> PathBuf {
        self.0.join("pending.toml")
    }

    /// The directory itself: root's own, out of cairnd's reach, so the
    /// bundle RAUC reads is moved here first.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// The status file's path.
    pub fn status_path(&self) -> PathBuf {
        self.0.join("status.toml")
    }

    /// The update being installed, if any.
    pub fn pending(&self) -> std::result::Result<Option<Pending>, StateError> {
        read(&self.pending_path())
    }

    /// Records the update being installed.
    pub fn set_pending(&self, pending: &Pending) -> std::result::Result<(), StateError> {
        write(&self.pending_path(), pending)
    }

    /// Forgets the update being installed.
    pub fn clear_pending(&self) -> std::result::Result<(), StateError> {
        let path = self.pending_path();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StateError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The last status written.
    pub fn status(&self) -> std::result::Result<Option<Status>, StateError> {
        read(&self.status_path())
    }

    /// Writes the status.
    pub fn set_status(&self, status: &Status) -> std::result::Result<(), StateError> {
        write(&self.status_path(), status)
    }
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> std::result::Result<Option<T>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                source: e,
            });
        }
    };
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let parse = |message: String| StateError::Parse {
        path: path.to_owned(),
        message,
    };
    let format: Format = toml::from_str(&text).map_err(|e| parse(e.message().to_owned()))?;
    if format.format != FORMAT {
        return Err(parse(format!("format {}", format.format)));
    }
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| parse(e.message().to_owned()))
}

fn write<T: Serialize>(path: &Path, value: &T) -> std::result::Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = toml::to_string(value).map_err(|e| io(std::io::Error::other(e)))?;
    // Readable by cairnd, which shows the status; nothing in them is secret.
    cairn_host::durable::replace_file(path, text.as_bytes(), 0o644).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_and_status_round_trip_and_a_damaged_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("update"));
        assert_eq!(state.pending().unwrap(), None);
        let pending = Pending {
            format: FORMAT,
            version: "2.0.0".into(),
            from_version: "1.0.0".into(),
            from_slot: Slot::A,
            disks_online: 2,
            installed: true,
            failure: None,
        };
        state.set_pending(&pending).unwrap();
        assert_eq!(state.pending().unwrap(), Some(pending));
        state.clear_pending().unwrap();
        state.clear_pending().unwrap();
        assert_eq!(state.pending().unwrap(), None);
        let status = Status {
            format: FORMAT,
            slot: Slot::B,
            version: "1.0.0".into(),
            last: Some(Outcome {
                version: "2.0.0".into(),
                result: Result::RolledBack,
                reason: "cairnd failed to start (3 restarts)".into(),
                at: 1_800_000_000,
            }),
        };
        state.set_status(&status).unwrap();
        let text = std::fs::read_to_string(state.status_path()).unwrap();
        assert!(text.contains("result = \"rolled-back\""), "{text}");
        assert_eq!(state.status().unwrap(), Some(status));
        std::fs::write(state.status_path(), "format = 9\n").unwrap();
        let err = state.status().unwrap_err().to_string();
        assert!(
            err.contains("format 9") && err.contains("remove it"),
            "{err}"
        );
    }
}

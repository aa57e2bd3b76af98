//! The marker that makes a directory a Cairn data disk, and the node's list
//! of disks it has known.
//!
//! The marker says which node owns the disk. A disk is written only while its
//! marker names this node; a disk moved from another box is adopted by
//! rewriting its marker, explicitly. The list of known disks lives in the
//! node's state directory (not on any data disk) so that an empty mountpoint
//! where a known disk used to be is recognised as a missing disk, never
//! initialised as a new one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fs::DiskFs;
use cairn_proto::ids::{DiskId, NodeId, OwnerId};

/// Path of the marker inside the cairn directory.
pub const MARKER_FILE: &str = "marker.toml";
/// The on-disk format this code writes and understands.
pub const FORMAT_VERSION: u32 = 1;

/// Contents of a disk's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Layout version of the cairn directory.
    pub format: u32,
    /// The node allowed to write this disk.
    pub node: NodeId,
    /// This disk.
    pub disk: DiskId,
    /// The owner of the node, once claimed: public (an owner id is a
    /// public key), so that after a re-image only this owner's signature
    /// can have the disk adopted without a shell.
    pub owner: Option<OwnerId>,
}

#[derive(Serialize, Deserialize)]
struct MarkerFile {
    format: u32,
    node_id: String,
    disk_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner_id: Option<String>,
}

/// Why a marker could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// The marker file could not be read.
    #[error("cannot read the marker: {0}")]
    Io(#[from] io::Error),
    /// The marker is not valid TOML of the expected shape.
    #[error("the marker is damaged ({0}); restore it or re-initialise the disk")]
    Damaged(String),
}

impl Marker {
    /// Reads the marker of a cairn directory.
    pub fn read_from(fs: &dyn DiskFs) -> Result<Self, MarkerError> {
        let bytes = fs.read(MARKER_FILE)?;
        let text = String::from_utf8(bytes).map_err(|e| MarkerError::Damaged(e.to_string()))?;
        let file: MarkerFile =
            toml::from_str(&text).map_err(|e| MarkerError::Damaged(e.to_string()))?;
        Ok(Self {
            format: file.format,
            node: file
                .node_id
                .parse()
                .map_err(|e: cairn_proto::ids::ParseIdError| MarkerError::Damaged(e.to_string()))?,
            disk: file
                .disk_id
                .parse()
                .map_err(|e: cairn_proto::ids::ParseIdError| MarkerError::Damaged(e.to_string()))?,
            owner: file
                .owner_id
                .map(|hex| OwnerId::from_hex(&hex))
                .transpose()
                .map_err(|e| MarkerError::Damaged(format!("owner_id: {e}")))?,
        })
    }

    /// Writes the marker atomically and durably (temporary file, fsync, rename, directory fsync).
    pub fn write_to(&self, fs: &dyn DiskFs) -> io::Result<()> {
        let file = MarkerFile {
            format: self.format,
            node_id: self.node.to_hex(),
            disk_id: self.disk.to_hex(),
            owner_id: self.owner.map(|o| o.to_hex()),
        };
        let body = toml::to_string(&file).map_err(io::Error::other)?;
        let text = format!(
            "# This directory is a Cairn data disk. It belongs to the node named below;\n\
             # do not edit or delete this file. To move the disk to another box, adopt it there.\n{body}"
        );
        let tmp = "marker.toml.new";
        match fs.remove(tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs.write_new(tmp, text.as_bytes(), true)?;
        fs.rename(tmp, MARKER_FILE)?;
        fs.sync_dir("")
    }
}

/// The disks this node has used, kept in its state directory.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KnownDisks {
    /// One entry per disk ever initialised or adopted here.
    #[serde(default, rename = "disk")]
    pub disks: Vec<KnownDisk>,
}

/// A disk this node has used, and where it was last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnownDisk {
    /// The disk's id, hex.
    pub id: String,
    /// The mountpoint it was last seen at.
    pub path: PathBuf,
}

/// File name of the known-disks list in the state directory.
pub const KNOWN_DISKS_FILE: &str = "known-disks.toml";

impl KnownDisks {
    /// Loads the list; a missing file is an empty list.
    pub fn load(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join(KNOWN_DISKS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is damaged: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// The disk last seen at `path`, if any.
    pub fn at_path(&self, path: &Path) -> Option<&KnownDisk> {
        self.disks.iter().find(|d| d.path == path)
    }

    /// Records that `disk` is at `path`; returns whether anything changed.
    pub fn record(&mut self, disk: DiskId, path: &Path) -> bool {
        let id = disk.to_hex();
        if self.disks.iter().any(|d| d.id == id && d.path == path) {
            return false;
        }
        // A path holds one disk at a time: whoever was there before has moved or gone.
        self.disks.retain(|d| d.id != id && d.path != path);
        self.disks.push(KnownDisk {
            id,
            path: path.to_owned(),
        });
        true
    }

    /// Saves the list atomically and durably.
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let text = toml::to_string(self).map_err(io::Error::other)?;
        let tmp = state_dir.join(format!("{KNOWN_DISKS_FILE}.new"));
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(b"# Data disks this Cairn node has used. Managed by cairnd.\n")?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, state_dir.join(KNOWN_DISKS_FILE))?;
        std::fs::File::open(state_dir)?.sync_all()
    }
}

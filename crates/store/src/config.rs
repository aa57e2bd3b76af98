//! What the store needs to know: whose node it is and where its disks are.

use std::path::PathBuf;

use cairn_proto::ids::NodeId;

/// Configuration of a [`super::ShardStore`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This node; disks are written only if their marker names it.
    pub node: NodeId,
    /// The node's own state directory (not on a data disk): remembers which
    /// disks it has used, so that an empty mountpoint is not mistaken for a new disk.
    pub state_dir: PathBuf,
    /// Mountpoints of the data disks.
    pub disks: Vec<PathBuf>,
    /// Bytes left free on every disk, for the file system and the index to breathe.
    pub reserve_bytes: u64,
    /// Most bytes of shards this node stores in all (the space its owner donates); `None`: all there is.
    pub quota_bytes: Option<u64>,
    /// Largest shard accepted.
    pub max_shard_bytes: u64,
    /// Page cache of each disk's index.
    pub index_cache_bytes: usize,
}

impl StoreConfig {
    /// A configuration with the defaults for everything but the node, state directory and disks.
    pub fn new(node: NodeId, state_dir: impl Into<PathBuf>, disks: Vec<PathBuf>) -> Self {
        Self {
            node,
            state_dir: state_dir.into(),
            disks,
            reserve_bytes: 256 << 20,
            quota_bytes: None,
            max_shard_bytes: 16 << 20,
            index_cache_bytes: 16 << 20,
        }
    }
}

//! What can go wrong in the shard store, in words that say what to do.

use std::io;
use std::path::PathBuf;

use cairn_proto::ids::{DiskId, NodeId, ShardId};

/// An error from the shard store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes offered do not hash to the shard id they were offered under.
    #[error(
        "shard {claimed}: the bytes hash to {actual}, not to the shard id; the sender's copy is \
         corrupt or mislabelled, nothing was stored — send the shard again from a good copy"
    )]
    HashMismatch {
        /// The id the shard was offered under.
        claimed: ShardId,
        /// What its bytes hash to.
        actual: ShardId,
    },
    /// The shard is larger than the configured limit.
    #[error(
        "shard {shard} is {len} bytes, over this node's limit of {limit} bytes; nothing was stored"
    )]
    TooLarge {
        /// The shard.
        shard: ShardId,
        /// Its length.
        len: u64,
        /// The limit (`max_shard_bytes`).
        limit: u64,
    },
    /// No online disk has room for the shard.
    #[error("no room for shard {shard} ({len} bytes): {detail}; free space on a disk or add one")]
    NoSpace {
        /// The shard.
        shard: ShardId,
        /// Its length.
        len: u64,
        /// Each disk's free space, or what the file system said.
        detail: String,
    },
    /// Storing the shard would exceed the space this node donates.
    #[error(
        "no room for shard {shard} ({len} bytes): this node already stores {used} of the {quota} \
         bytes it donates; raise the quota or let expired shards be collected"
    )]
    QuotaExceeded {
        /// The shard.
        shard: ShardId,
        /// Its length.
        len: u64,
        /// Bytes stored and in flight.
        used: u64,
        /// The configured quota.
        quota: u64,
    },
    /// No data disk is online.
    #[error("no data disk is online ({summary}); mount the data disks named in the configuration")]
    NoDisks {
        /// Each disk's state.
        summary: String,
    },
    /// The shard is not on any online disk.
    #[error("shard {shard} is not stored on this node{note}")]
    NotFound {
        /// The shard.
        shard: ShardId,
        /// Mentions disks out of service, which might hold it.
        note: String,
    },
    /// The stored copy failed verification (or its file vanished) and is quarantined.
    #[error(
        "shard {shard} on disk {disk} ({path}) is damaged and has been quarantined; it will not be \
         served — fetch it from another holder (the steward is told)"
    )]
    Corrupt {
        /// The shard.
        shard: ShardId,
        /// The disk that held it.
        disk: DiskId,
        /// That disk's mountpoint.
        path: PathBuf,
    },
    /// Every claim slot on a stored shard is held by other owners.
    #[error(
        "shard {shard} is already kept here for {limit} other owners, the most one shard may have; store it on another node"
    )]
    ClaimsFull {
        /// The shard.
        shard: ShardId,
        /// Most owners per shard.
        limit: usize,
    },
    /// A byte range outside the shard.
    #[error("shard {shard} is {shard_len} bytes; the range {offset}+{len} lies outside it")]
    RangeOutOfBounds {
        /// The shard.
        shard: ShardId,
        /// Requested start.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The shard's length.
        shard_len: u64,
    },
    /// A disk failed an operation and has been taken out of service.
    #[error(
        "disk {disk} ({path}) failed while {doing}: {source}; it is out of service and its shards \
         are reported lost — check the disk (dmesg, SMART) and replace it"
    )]
    DiskFailed {
        /// The disk.
        disk: DiskId,
        /// Its mountpoint.
        path: PathBuf,
        /// What the store was doing.
        doing: String,
        /// The error the file system or index reported.
        #[source]
        source: io::Error,
    },
    /// The disk asked for is out of service (failed earlier).
    #[error("shard {shard} is on disk {disk} ({path}), which is out of service: {reason}")]
    Unavailable {
        /// The shard.
        shard: ShardId,
        /// The disk.
        disk: DiskId,
        /// Its mountpoint.
        path: PathBuf,
        /// Why it is out of service.
        reason: String,
    },
    /// A disk could not be adopted.
    #[error("cannot adopt {path}: {reason}")]
    Adopt {
        /// The mountpoint.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The node's state directory could not be read or written.
    #[error(
        "the node state directory {path} is not usable: {source}; check its permissions and free space"
    )]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why a configured disk is not in service. Each says what a person should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskProblem {
    /// The configured path does not exist.
    #[error("{path} does not exist; create the mountpoint and mount the disk there")]
    PathMissing {
        /// The mountpoint.
        path: PathBuf,
    },
    /// A disk this node knows was at this path, but the path is now empty.
    #[error(
        "disk {disk} was at {path}, but its marker is gone and the directory is empty: the disk is \
         probably not mounted. Mount it; nothing is written to an empty mountpoint"
    )]
    MarkerMissing {
        /// The mountpoint.
        path: PathBuf,
        /// The disk last seen there.
        disk: DiskId,
    },
    /// The disk belongs to another node.
    #[error(
        "{path} is a Cairn disk of node {owner}, not of this node ({this}); it was not touched. If it \
         was moved here on purpose, adopt it (cairnd adopt-disk {path})"
    )]
    ForeignMarker {
        /// The mountpoint.
        path: PathBuf,
        /// The node named in its marker.
        owner: NodeId,
        /// This node.
        this: NodeId,
    },
    /// The path holds files but no Cairn marker.
    #[error(
        "{path} holds files but is not a Cairn disk; it was not touched. Give the configuration an \
         empty directory or a Cairn disk"
    )]
    NotEmpty {
        /// The mountpoint.
        path: PathBuf,
    },
    /// The marker cannot be read or parsed.
    #[error("{path}: {reason}")]
    MarkerUnreadable {
        /// The mountpoint.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The disk was written by a newer Cairn.
    #[error(
        "{path} uses disk format {format}, newer than this cairnd understands ({supported}); upgrade cairnd"
    )]
    FormatTooNew {
        /// The mountpoint.
        path: PathBuf,
        /// Its format.
        format: u32,
        /// What this build understands.
        supported: u32,
    },
    /// The same disk is configured twice (e.g. through a bind mount).
    #[error("{path} is the same disk ({disk}) as {other}; it is used once, through {other}")]
    Duplicate {
        /// The second path.
        path: PathBuf,
        /// The disk.
        disk: DiskId,
        /// The path it is used through.
        other: PathBuf,
    },
    /// The disk was taken out of service while the node ran (unplugged or unmounted).
    #[error("{path}: {reason}; plug it back in (or mount it again) to bring its shards back")]
    Detached {
        /// The mountpoint.
        path: PathBuf,
        /// What happened to it.
        reason: String,
    },
    /// An I/O error while opening the disk or its index.
    #[error("{path}: I/O error while {doing}: {error}; check the disk (dmesg, SMART)")]
    Io {
        /// The mountpoint.
        path: PathBuf,
        /// What the store was doing.
        doing: String,
        /// The error.
        error: String,
    },
}

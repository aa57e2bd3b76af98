//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_store::fs::Mount;
use cairn_store::sim::SimDisk;
use cairn_store::{ShardStore, StoreConfig};

pub const NODE_A: NodeId = NodeId([0xa1; 32]);
pub const NODE_B: NodeId = NodeId([0xb2; 32]);
pub const OWNER: OwnerId = OwnerId([0x0e; 32]);
pub const FAR_FUTURE: u64 = 4_000_000_000;

/// Deterministic shard bytes: `len` bytes derived from `seed`.
pub fn shard_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = 0u64;
    while out.len() < len {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(&block.to_le_bytes());
        out.extend_from_slice(hasher.finalize().as_bytes());
        block += 1;
    }
    out.truncate(len);
    out
}

/// A shard: its id and bytes.
pub fn shard(seed: u64, len: usize) -> (ShardId, Vec<u8>) {
    let bytes = shard_bytes(seed, len);
    (ShardId::of(&bytes), bytes)
}

/// A config for tests: small reserve so small disks are usable.
pub fn config(node: NodeId, state_dir: &Path, disks: Vec<PathBuf>) -> StoreConfig {
    let mut config = StoreConfig::new(node, state_dir, disks);
    config.reserve_bytes = 0;
    config.index_cache_bytes = 1 << 20;
    config
}

/// Opens a store over simulated disks.
pub fn open_sim(node: NodeId, state_dir: &Path, disks: &[SimDisk]) -> ShardStore {
    let mounts: Vec<Box<dyn Mount>> = disks
        .iter()
        .map(|d| Box::new(d.clone()) as Box<dyn Mount>)
        .collect();
    ShardStore::open_mounts(config(node, state_dir, Vec::new()), mounts).expect("open store")
}

/// Every file name under `shards/` of a simulated disk.
pub fn sim_shard_files(disk: &SimDisk) -> Vec<String> {
    (0..=255u8)
        .flat_map(|b| disk.names(&format!("shards/{b:02x}")))
        .collect()
}

/// Every shard file under a real disk's `cairn/shards/`.
pub fn real_shard_files(mount: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(mount.join("cairn/shards")).expect("shards dir") {
        for file in std::fs::read_dir(dir.expect("entry").path()).expect("fan-out dir") {
            out.push(file.expect("entry").path());
        }
    }
    out
}

/// `count` empty directories `d1`, `d2`, … under `root`, standing in for disks.
pub fn disk_dirs(root: &Path, count: usize) -> Vec<PathBuf> {
    (1..=count)
        .map(|i| {
            let dir = root.join(format!("d{i}"));
            std::fs::create_dir(&dir).expect("create disk dir");
            dir
        })
        .collect()
}

//! `scripts/bench-store`: the shard store against plain `std::fs` on the same
//! file system, in the same run.
//!
//! - put: 1 MiB shards from 4 writer threads through `ShardStore::put`, against
//!   4 threads that create, write and fsync the same number of 1 MiB files;
//! - get: verified whole-shard reads through `ShardStore::get`, against
//!   `std::fs::read` of the very same shard files (same page-cache state);
//! - open: a store holding 1,000,000 shards is reopened in a fresh child
//!   process, which reports the time `ShardStore::open` took and its own peak
//!   RSS (VmHWM).
//!
//! A warm-up round, then six rounds; the side that writes first alternates. The
//! throughputs printed are medians; each ratio is the geometric mean of the
//! six per-round ratios (both sides measured back to back).

#[path = "../../cairn/benches/common/mod.rs"]
mod common;

use common::{env_or, median, paired_ratio, settle};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_store::{ShardStore, StoreConfig, shard_path};

const NODE: NodeId = NodeId([7; 32]);
const OWNER: OwnerId = OwnerId([9; 32]);
const WRITERS: usize = 4;
const SHARD: usize = 1 << 20;
const ROUNDS: usize = 6;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("open-child") {
        open_child(Path::new(&args[2]), args[3].parse().expect("shard number"));
        return;
    }
    let shards: usize = env_or("CAIRN_BENCH_SHARDS", 256);
    let index_shards: usize = env_or("CAIRN_BENCH_INDEX_SHARDS", 1_000_000);
    let root = std::env::var_os("CAIRN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-store")
        });
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench directory");
    println!(
        "bench-store in {} ({shards} x 1 MiB shards, {WRITERS} writers)",
        root.display()
    );

    let data: Vec<(ShardId, Vec<u8>)> = (0..shards as u64).map(|i| shard(i, SHARD)).collect();
    let mb = (shards * SHARD) as f64 / 1e6;

    let (mut put_store, mut put_plain, mut get_store, mut get_plain) =
        (vec![], vec![], vec![], vec![]);
    // Round 0 is a warm-up, printed but not counted: on this kind of virtual disk the
    // first writes after a large delete (such as the previous run's clean-up) run at
    // up to 3x the steady speed, and only the side that writes first gets that.
    for round in 0..=ROUNDS {
        // Alternate which side writes first, so neither always follows the other's writeback.
        let disk = root.join(format!("disk-{round}"));
        let plain_dir = root.join(format!("plain-{round}"));
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::create_dir_all(&plain_dir).unwrap();
        let store = open(&root.join(format!("state-{round}")), &disk);
        let put_plain_run = || {
            settle(&root);
            let t = Instant::now();
            parallel(&data, |i, (_, bytes)| {
                let mut file = std::fs::File::create(plain_dir.join(i.to_string())).unwrap();
                file.write_all(bytes).unwrap();
                file.sync_all().unwrap();
            });
            mb / t.elapsed().as_secs_f64()
        };
        let put_store_run = || {
            settle(&root);
            let t = Instant::now();
            parallel(&data, |_, (id, bytes)| {
                store.put(*id, bytes, OWNER, u64::MAX).unwrap();
            });
            mb / t.elapsed().as_secs_f64()
        };
        if round % 2 == 0 {
            put_plain.push(put_plain_run());
            put_store.push(put_store_run());
        } else {
            put_store.push(put_store_run());
            put_plain.push(put_plain_run());
        }

        let t = Instant::now();
        parallel(&data, |_, (id, bytes)| {
            assert_eq!(store.get(*id).unwrap().len(), bytes.len());
        });
        get_store.push(mb / t.elapsed().as_secs_f64());
        let t = Instant::now();
        parallel(&data, |_, (id, bytes)| {
            let read = std::fs::read(disk.join("cairn").join(shard_path(id))).unwrap();
            assert_eq!(read.len(), bytes.len());
        });
        get_plain.push(mb / t.elapsed().as_secs_f64());
        let last = put_store.len() - 1;
        println!(
            "round {round}{}: put store {:.0} MB/s plain {:.0} MB/s | get store {:.0} MB/s plain {:.0} MB/s",
            if round == 0 { " (warm-up)" } else { "" },
            put_store[last],
            put_plain[last],
            get_store[last],
            get_plain[last]
        );
        if round == 0 {
            for side in [
                &mut put_store,
                &mut put_plain,
                &mut get_store,
                &mut get_plain,
            ] {
                side.clear();
            }
        }
        // Nothing is deleted until the end: on a `discard` mount (or a thin-provisioned
        // virtual disk) freed blocks change what the next writer pays, unevenly.
        drop(store);
    }
    // Ratios of the two sides measured in the same round, combined geometrically: with the
    // order alternating, a "whoever writes second pays for the other's writeback" bias cancels.
    let put_ratio = paired_ratio(&put_store, &put_plain);
    let get_ratio = paired_ratio(&get_store, &get_plain);
    println!(
        "put: store {:.0} MB/s, std::fs write+fsync {:.0} MB/s, ratio {put_ratio:.2}",
        median(&put_store),
        median(&put_plain)
    );
    println!(
        "get: store (verified) {:.0} MB/s, std::fs::read {:.0} MB/s, ratio {get_ratio:.2}",
        median(&get_store),
        median(&get_plain)
    );

    // A store of many tiny shards, built with batched puts, then reopened in a fresh process.
    let disk = root.join("index-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let state = root.join("index-state");
    let t = Instant::now();
    {
        let store = open(&state, &disk);
        let batch = 10_000;
        for start in (0..index_shards).step_by(batch) {
            let chunk: Vec<(ShardId, Vec<u8>)> = (start..(start + batch).min(index_shards))
                .map(|i| shard(1 << 40 | i as u64, 16))
                .collect();
            let refs: Vec<_> = chunk.iter().map(|(id, b)| (*id, b.as_slice())).collect();
            store.put_many(&refs, OWNER, u64::MAX).unwrap();
        }
        let stats = store.disk_stats();
        assert_eq!(stats[0].shards, index_shards as u64);
    }
    println!(
        "built a store of {index_shards} shards in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "open-child",
            root.to_str().unwrap(),
            &(index_shards / 2).to_string(),
        ])
        .output()
        .expect("run the open child");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "open child failed: {report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child report lacks {name}: {report}"))
    };
    let (open_s, rss_mib, found) = (field("open_s"), field("rss_mib"), field("shards"));
    assert_eq!(found as usize, index_shards);
    println!(
        "open after restart with {index_shards} shards: {open_s:.3} s, child peak RSS {rss_mib:.1} MiB"
    );
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "store put_ratio={put_ratio:.2} get_ratio={get_ratio:.2} open_1m_s={open_s:.3} rss_mib={rss_mib:.1}"
    );
}

/// Runs in a fresh process: opens the big store, checks one shard, reports.
fn open_child(root: &Path, probe: u64) {
    let t = Instant::now();
    let store = open(&root.join("index-state"), &root.join("index-disk"));
    let open_s = t.elapsed().as_secs_f64();
    let (id, bytes) = shard(1 << 40 | probe, 16);
    assert_eq!(store.get(id).unwrap(), bytes);
    let shards: u64 = store.disk_stats().iter().map(|s| s.shards).sum();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    println!(
        "open_s={open_s:.4} rss_mib={:.1} shards={shards}",
        hwm_kib / 1024.0
    );
}

fn open(state: &Path, disk: &Path) -> ShardStore {
    let mut config = StoreConfig::new(NODE, state, vec![disk.to_owned()]);
    config.reserve_bytes = 64 << 20;
    let store = ShardStore::open(config).unwrap();
    assert!(
        store.disk_stats()[0].disk.is_some(),
        "{:?}",
        store.disk_stats()
    );
    store
}

fn shard(seed: u64, len: usize) -> (ShardId, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut bytes);
    (ShardId::of(&bytes), bytes)
}

fn parallel<T: Sync>(items: &[T], work: impl Fn(usize, &T) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    work(i, item);
                }
            });
        }
    });
}

//! The shard store's demonstration (the README's main job until the swarm exists).
//!
//! Stores a file as 1 MiB shards on three directories standing in for disks,
//! kills a writer process mid-put (SIGKILL), rots a bit, unplugs a disk, and
//! reads the file back bit-exact. Cleans up after itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_store::{DiskState, ShardStore, StoreConfig, shard_path};

const NODE: NodeId = NodeId([0x42; 32]);
const OWNER: OwnerId = OwnerId([0x17; 32]);
const SHARD: usize = 1 << 20;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("writer") {
        return writer(Path::new(&args[2]));
    }
    let root = tempfile::tempdir()?;
    let disks: Vec<PathBuf> = (1..=3)
        .map(|i| root.path().join(format!("disk{i}")))
        .collect();
    for d in &disks {
        std::fs::create_dir(d)?;
    }
    let mut file = vec![0u8; 12 * SHARD + 12345];
    blake3::Hasher::new()
        .update(b"demo file")
        .finalize_xof()
        .fill(&mut file);
    println!(
        "1. A node with three data disks stores a {:.1} MiB file as 1 MiB shards.",
        mib(file.len())
    );
    let ids = {
        let store = open(root.path(), &disks)?;
        let mut ids = Vec::new();
        for chunk in file.chunks(SHARD) {
            let id = ShardId::of(chunk);
            store.put(id, chunk, OWNER, u64::MAX)?;
            ids.push(id);
        }
        for s in store.disk_stats() {
            println!(
                "   {}: {} shards, {:.1} MiB",
                s.path.display(),
                s.shards,
                mib(s.used as usize)
            );
        }
        ids
    };

    println!(
        "2. Another process writes shards and is killed with SIGKILL in the middle of its work."
    );
    let mut child = Command::new(std::env::current_exe()?)
        .args(["writer", root.path().to_str().context("temp path")?])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut acked = String::new();
    {
        use std::io::BufRead;
        let mut lines =
            std::io::BufReader::new(child.stdout.take().context("child stdout")?).lines();
        for _ in 0..20 {
            acked = lines.next().context("writer ended early")??;
        }
    }
    child.kill()?;
    child.wait()?;
    let store = open(root.path(), &disks)?;
    let acked_seed: u64 = acked.parse()?;
    for seed in 0..=acked_seed {
        let (id, bytes) = writer_shard(seed);
        ensure!(store.get(id)? == bytes, "acknowledged shard {seed} lost");
    }
    println!(
        "   After restart all {} shards it had acknowledged read back intact; no temp files remain.",
        acked_seed + 1
    );

    println!("3. A bit rots on disk; scrub finds it and quarantines the shard.");
    let victim = ids[5];
    let path = disks
        .iter()
        .map(|d| d.join("cairn").join(shard_path(&victim)))
        .find(|p| p.exists())
        .context("shard file")?;
    let mut bytes = std::fs::read(&path)?;
    bytes[1000] ^= 0x01;
    std::fs::write(&path, bytes)?;
    let mut corrupt = Vec::new();
    loop {
        let report = store.scrub_step(64 << 20);
        corrupt.extend(report.corrupt);
        if report.pass_complete {
            break;
        }
    }
    ensure!(corrupt == vec![victim], "scrub found {corrupt:?}");
    println!(
        "   Scrub quarantined shard {}… and reported it; it is never served.",
        &victim.to_hex()[..12]
    );
    println!(
        "   (In the swarm the steward rebuilds it from other nodes; here we put the good copy back.)"
    );
    store.put(victim, &file[5 * SHARD..6 * SHARD], OWNER, u64::MAX)?;
    drop(store);

    println!(
        "4. A disk is unplugged: its mountpoint is empty. The node says so and never writes there."
    );
    let away = root.path().join("unplugged");
    std::fs::rename(disks[1].join("cairn"), &away)?;
    {
        let store = open(root.path(), &disks)?;
        for s in store.disk_stats() {
            println!("   {}: {}", s.path.display(), s.state);
        }
        ensure!(
            matches!(store.disk_stats()[1].state, DiskState::Offline(_)),
            "disk 2 should be offline"
        );
    }
    ensure!(
        std::fs::read_dir(&disks[1])?.count() == 0,
        "the empty mountpoint was written"
    );
    std::fs::rename(&away, disks[1].join("cairn"))?;

    println!("5. The disk is plugged back in and the whole file is read back.");
    let store = open(root.path(), &disks)?;
    let mut read = Vec::with_capacity(file.len());
    for id in &ids {
        read.extend(store.get(*id)?);
    }
    ensure!(read == file, "the file read back differs");
    println!(
        "   {:.1} MiB read back bit-exact. Done; the demo's files are removed.",
        mib(read.len())
    );
    Ok(())
}

fn writer(root: &Path) -> Result<()> {
    let disks: Vec<PathBuf> = (1..=3).map(|i| root.join(format!("disk{i}"))).collect();
    let store = open(root, &disks)?;
    for seed in 0.. {
        let (id, bytes) = writer_shard(seed);
        store.put(id, &bytes, OWNER, u64::MAX)?;
        println!("{seed}");
    }
    Ok(())
}

fn writer_shard(seed: u64) -> (ShardId, Vec<u8>) {
    let mut bytes = vec![0u8; 256 << 10];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    (ShardId::of(&bytes), bytes)
}

fn open(root: &Path, disks: &[PathBuf]) -> Result<ShardStore> {
    let mut config = StoreConfig::new(NODE, root.join("state"), disks.to_vec());
    config.reserve_bytes = 16 << 20;
    Ok(ShardStore::open(config)?)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

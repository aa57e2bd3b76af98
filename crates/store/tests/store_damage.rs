//! Bitrot and full disks, on real file systems.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use cairn_store::{DiskState, ShardStore, StoreError, StoreEvent, shard_path};
use common::*;

#[test]
fn scrub_finds_every_flipped_bit_quarantines_and_reports_it() {
    let root = tempfile::tempdir().unwrap();
    let disks = disk_dirs(root.path(), 2);
    let store =
        ShardStore::open(config(NODE_A, &root.path().join("state"), disks.clone())).unwrap();
    let shards: Vec<_> = (0..60).map(|i| shard(i, 1000 + i as usize * 311)).collect();
    for (id, bytes) in &shards {
        store.put(*id, bytes, OWNER, FAR_FUTURE).unwrap();
    }
    // Rot one bit in every seventh shard, wherever it landed.
    let mut rotten = BTreeSet::new();
    for (i, (id, bytes)) in shards.iter().enumerate().filter(|(i, _)| i % 7 == 3) {
        let path = disks
            .iter()
            .map(|d| d.join("cairn").join(shard_path(id)))
            .find(|p| p.exists())
            .unwrap();
        let mut on_disk = std::fs::read(&path).unwrap();
        on_disk[(i * 97) % bytes.len()] ^= 0x04;
        std::fs::write(&path, on_disk).unwrap();
        rotten.insert(*id);
    }
    // Scrub in small steps until a full pass is done.
    let mut found = BTreeSet::new();
    let mut checked = 0;
    loop {
        let report = store.scrub_step(20_000);
        checked += report.checked;
        found.extend(report.corrupt);
        assert!(report.missing.is_empty());
        if report.pass_complete {
            break;
        }
    }
    assert_eq!(checked, 60);
    assert_eq!(found, rotten);
    let reported: BTreeSet<_> = store
        .take_events()
        .into_iter()
        .map(|e| match e {
            StoreEvent::ShardCorrupt { shard, .. } => shard,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(reported, rotten);
    let stats = store.disk_stats();
    assert_eq!(
        stats.iter().map(|s| s.quarantined).sum::<u64>(),
        rotten.len() as u64
    );
    assert_eq!(
        stats.iter().map(|s| s.shards).sum::<u64>(),
        60 - rotten.len() as u64
    );
    for (id, bytes) in &shards {
        if rotten.contains(id) {
            assert!(matches!(store.get(*id), Err(StoreError::Corrupt { .. })));
            // Kept aside, not deleted.
            assert!(
                disks
                    .iter()
                    .any(|d| d.join("cairn/quarantine").join(id.to_hex()).exists())
            );
        } else {
            assert_eq!(store.get(*id).unwrap(), *bytes);
        }
    }
    // A good copy sent again (by repair) replaces the quarantined one.
    let (id, bytes) = shards.iter().find(|(id, _)| rotten.contains(id)).unwrap();
    store.put(*id, bytes, OWNER, FAR_FUTURE).unwrap();
    assert_eq!(store.get(*id).unwrap(), *bytes);
    // A second pass finds nothing new.
    loop {
        let report = store.scrub_step(u64::MAX);
        assert!(report.corrupt.is_empty() && report.missing.is_empty());
        if report.pass_complete {
            break;
        }
    }
}

#[test]
fn a_read_of_a_rotten_shard_is_refused_and_quarantined_without_scrub() {
    let root = tempfile::tempdir().unwrap();
    let disk = root.path().join("d");
    std::fs::create_dir(&disk).unwrap();
    let store = ShardStore::open(config(
        NODE_A,
        &root.path().join("state"),
        vec![disk.clone()],
    ))
    .unwrap();
    let (id, bytes) = shard(5, 50_000);
    store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    let path = disk.join("cairn").join(shard_path(&id));
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk.truncate(40_000);
    std::fs::write(&path, on_disk).unwrap();
    assert!(matches!(store.get(id), Err(StoreError::Corrupt { .. })));
    assert_eq!(
        store.take_events(),
        vec![StoreEvent::ShardCorrupt {
            shard: id,
            disk: store.disk_stats()[0].disk.unwrap()
        }]
    );
    // A vanished file is reported as missing, also quarantined.
    let (other, other_bytes) = shard(6, 1000);
    store.put(other, &other_bytes, OWNER, FAR_FUTURE).unwrap();
    std::fs::remove_file(disk.join("cairn").join(shard_path(&other))).unwrap();
    assert!(matches!(store.get(other), Err(StoreError::Corrupt { .. })));
    assert!(
        matches!(store.take_events().as_slice(), [StoreEvent::ShardMissing { shard, .. }] if *shard == other)
    );
}

/// A small tmpfs, unmounted when dropped. Needs root (CI runs as root).
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn small_fs_or_skip(bytes: u64) -> Option<SmallFs> {
    let fs = SmallFs::mount(bytes);
    if fs.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mounting a tmpfs failed; CI runs as root and must be able to run the disk-full tests"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root); the disk-full tests run in CI");
    }
    fs
}

#[test]
fn a_full_disk_refuses_cleanly_and_the_node_keeps_working() {
    let Some(small) = small_fs_or_skip(24 << 20) else {
        return;
    };
    let other = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(NODE_A, state.path(), vec![small.path().to_owned()]);
    config.reserve_bytes = 2 << 20;
    let store = ShardStore::open(config.clone()).unwrap();
    let mut stored = Vec::new();
    let refusal = loop {
        let (id, bytes) = shard(stored.len() as u64, 1 << 20);
        match store.put(id, &bytes, OWNER, FAR_FUTURE) {
            Ok(_) => stored.push((id, bytes)),
            Err(e) => break e,
        }
        assert!(stored.len() < 100, "a 24 MiB disk never filled up");
    };
    assert!(matches!(refusal, StoreError::NoSpace { .. }), "{refusal}");
    assert!(
        refusal
            .to_string()
            .contains("free space on a disk or add one"),
        "{refusal}"
    );
    assert!(stored.len() >= 10, "only {} shards fit", stored.len());
    assert_eq!(store.disk_stats()[0].state, DiskState::Online);
    for (id, bytes) in &stored {
        assert_eq!(store.get(*id).unwrap(), *bytes);
    }
    // Deleting makes room again.
    store.delete(stored[0].0).unwrap();
    let (id, bytes) = shard(1000, 1 << 20);
    store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    drop(store);

    // With no reserve the file system itself says ENOSPC mid-write: still a clean refusal, no
    // temp file left behind, and the disk stays in service.
    config.reserve_bytes = 0;
    config
        .disks
        .push(other.path().join("unused-name-so-one-disk")); // a path that does not exist: offline
    let store = ShardStore::open(config).unwrap();
    let mut last = None;
    for seed in 2000..2100 {
        let (id, bytes) = shard(seed, 1 << 20);
        if let Err(e) = store.put(id, &bytes, OWNER, FAR_FUTURE) {
            last = Some(e);
            break;
        }
    }
    let refusal = last.expect("the disk filled up");
    assert!(matches!(refusal, StoreError::NoSpace { .. }), "{refusal}");
    assert_eq!(
        store.disk_stats()[0].state,
        DiskState::Online,
        "a full disk is not a failed disk"
    );
    store.flush().unwrap();
    assert_eq!(
        std::fs::read_dir(small.path().join("cairn/tmp"))
            .unwrap()
            .count(),
        0,
        "the refused put left a temporary file"
    );
    assert_eq!(store.get(id).unwrap(), bytes);
    let listed = store.list(None, 1000).unwrap();
    assert_eq!(store.disk_stats()[0].shards, listed.len() as u64);
}

//! The shard store's behaviour on real directories and simulated disks:
//! round trips, refusals, disk states, leases, failures.

mod common;

use std::collections::BTreeSet;

use cairn_proto::ids::ShardId;
use cairn_store::sim::SimDisk;
use cairn_store::{
    DiskProblem, DiskState, PutOutcome, ShardState, ShardStore, StoreError, StoreEvent,
};
use common::*;

#[test]
fn put_get_range_delete_and_stats_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let disks = disk_dirs(root.path(), 2);
    let state = root.path().join("state");
    let shards: Vec<_> = (0..40)
        .map(|i| shard(i, (i as usize * 977) % 70_000))
        .collect();
    {
        let store = ShardStore::open(config(NODE_A, &state, disks.clone())).unwrap();
        for (id, bytes) in &shards {
            assert!(matches!(
                store.put(*id, bytes, OWNER, FAR_FUTURE).unwrap(),
                PutOutcome::Stored(_)
            ));
        }
        // A duplicate put is acknowledged without a second copy.
        assert!(matches!(
            store
                .put(shards[3].0, &shards[3].1, OWNER, FAR_FUTURE)
                .unwrap(),
            PutOutcome::AlreadyStored(_)
        ));
        let (id, bytes) = &shards[7];
        assert_eq!(store.get(*id).unwrap(), *bytes);
        assert_eq!(store.get_range(*id, 100, 50).unwrap(), bytes[100..150]);
        assert!(matches!(
            store.get_range(*id, bytes.len() as u64 - 10, 11),
            Err(StoreError::RangeOutOfBounds { .. })
        ));
        assert!(store.delete(shards[0].0).unwrap());
        assert!(!store.delete(shards[0].0).unwrap());
    }
    let store = ShardStore::open(config(NODE_A, &state, disks.clone())).unwrap();
    let stats = store.disk_stats();
    assert!(
        stats.iter().all(|s| s.state == DiskState::Online),
        "{stats:?}"
    );
    let expected_bytes: u64 = shards[1..].iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(stats.iter().map(|s| s.shards).sum::<u64>(), 39);
    assert_eq!(stats.iter().map(|s| s.used).sum::<u64>(), expected_bytes);
    // Both disks got some: the store spreads by free space.
    assert!(stats.iter().all(|s| s.shards > 0), "{stats:?}");
    for (id, bytes) in &shards[1..] {
        assert_eq!(store.get(*id).unwrap(), *bytes);
    }
    assert!(matches!(
        store.get(shards[0].0),
        Err(StoreError::NotFound { .. })
    ));
    // Stats agree with what is actually on disk.
    let files: usize = disks.iter().map(|d| real_shard_files(d).len()).sum();
    assert_eq!(files, 39);
    assert!(disks.iter().all(|d| {
        std::fs::read_dir(d.join("cairn/tmp"))
            .unwrap()
            .next()
            .is_none()
    }));
}

#[test]
fn list_pages_through_every_shard_in_id_order() {
    let state = tempfile::tempdir().unwrap();
    let disks = [
        SimDisk::new("/sim/a", 1 << 30),
        SimDisk::new("/sim/b", 1 << 30),
    ];
    let store = open_sim(NODE_A, state.path(), &disks);
    let mut ids = BTreeSet::new();
    for i in 0..100 {
        let (id, bytes) = shard(i, 64);
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
        ids.insert(id);
    }
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(after, 7).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        listed.extend(page.iter().map(|s| s.id));
    }
    assert_eq!(listed, ids.into_iter().collect::<Vec<_>>());
}

#[test]
fn bytes_that_do_not_match_the_id_are_refused_and_nothing_is_stored() {
    let state = tempfile::tempdir().unwrap();
    let disk = SimDisk::new("/sim/a", 1 << 30);
    let store = open_sim(NODE_A, state.path(), std::slice::from_ref(&disk));
    let (id, mut bytes) = shard(1, 4096);
    bytes[100] ^= 1;
    let err = store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap_err();
    assert!(
        matches!(err, StoreError::HashMismatch { claimed, .. } if claimed == id),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was stored"));
    assert!(matches!(store.get(id), Err(StoreError::NotFound { .. })));
    assert!(sim_shard_files(&disk).is_empty());
    assert!(disk.names("tmp").is_empty());
    let mut limited = config(NODE_A, state.path(), Vec::new());
    limited.max_shard_bytes = 1000;
    drop(store);
    let store = ShardStore::open_mounts(limited, vec![Box::new(disk.clone())]).unwrap();
    let (id, bytes) = shard(2, 1001);
    assert!(matches!(
        store.put(id, &bytes, OWNER, FAR_FUTURE),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn a_foreign_disk_is_refused_untouched_until_adopted() {
    let root = tempfile::tempdir().unwrap();
    let disk = root.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let (id, bytes) = shard(9, 10_000);
    {
        let store = ShardStore::open(config(
            NODE_A,
            &root.path().join("state-a"),
            vec![disk.clone()],
        ))
        .unwrap();
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    }
    let before = snapshot(&disk);
    let config_b = config(NODE_B, &root.path().join("state-b"), vec![disk.clone()]);
    {
        let store = ShardStore::open(config_b.clone()).unwrap();
        let stats = store.disk_stats();
        match &stats[0].state {
            DiskState::Refused(problem @ DiskProblem::ForeignMarker { owner, this, .. }) => {
                assert_eq!((*owner, *this), (NODE_A, NODE_B));
                assert!(problem.to_string().contains("adopt"), "{problem}");
            }
            other => panic!("expected a refused foreign disk, got {other:?}"),
        }
        let (other_id, other_bytes) = shard(10, 100);
        assert!(matches!(
            store.put(other_id, &other_bytes, OWNER, FAR_FUTURE),
            Err(StoreError::NoDisks { .. })
        ));
        assert!(matches!(store.get(id), Err(StoreError::NotFound { .. })));
    }
    assert_eq!(
        snapshot(&disk),
        before,
        "a foreign disk must not be written"
    );
    let adopted =
        ShardStore::adopt_disk(&config_b, &cairn_store::fs::RealMount::new(&disk)).unwrap();
    let store = ShardStore::open(config_b).unwrap();
    assert_eq!(store.disk_stats()[0].disk, Some(adopted));
    assert_eq!(store.get(id).unwrap(), bytes);
    // The old node now finds a foreign disk.
    drop(store);
    let store = ShardStore::open(config(NODE_A, &root.path().join("state-a"), vec![disk])).unwrap();
    assert!(matches!(
        store.disk_stats()[0].state,
        DiskState::Refused(DiskProblem::ForeignMarker { .. })
    ));
}

#[test]
fn an_empty_mountpoint_of_a_known_disk_is_offline_and_never_written() {
    let root = tempfile::tempdir().unwrap();
    let mountpoint = root.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let state = root.path().join("state");
    let (id, bytes) = shard(3, 5000);
    {
        let store = ShardStore::open(config(NODE_A, &state, vec![mountpoint.clone()])).unwrap();
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    }
    // "Unmount": the disk's files go away, the mountpoint stays, empty.
    let away = root.path().join("unmounted");
    std::fs::rename(mountpoint.join("cairn"), &away).unwrap();
    {
        let store = ShardStore::open(config(NODE_A, &state, vec![mountpoint.clone()])).unwrap();
        let stats = store.disk_stats();
        assert!(
            matches!(
                &stats[0].state,
                DiskState::Offline(DiskProblem::MarkerMissing { .. })
            ),
            "{stats:?}"
        );
        assert!(stats[0].state.to_string().contains("not mounted"));
        let (other, other_bytes) = shard(4, 100);
        let err = store
            .put(other, &other_bytes, OWNER, FAR_FUTURE)
            .unwrap_err();
        assert!(matches!(err, StoreError::NoDisks { .. }), "{err}");
    }
    assert_eq!(
        std::fs::read_dir(&mountpoint).unwrap().count(),
        0,
        "nothing may be written to the empty mountpoint"
    );
    std::fs::rename(&away, mountpoint.join("cairn")).unwrap();
    let store = ShardStore::open(config(NODE_A, &state, vec![mountpoint])).unwrap();
    assert_eq!(store.get(id).unwrap(), bytes);
}

#[test]
fn a_directory_with_other_files_is_refused_untouched() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("photos");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("holiday.jpg"), b"not a shard").unwrap();
    let missing = root.path().join("nowhere");
    let store = ShardStore::open(config(
        NODE_A,
        &root.path().join("state"),
        vec![dir.clone(), missing],
    ))
    .unwrap();
    let stats = store.disk_stats();
    assert!(
        matches!(
            &stats[0].state,
            DiskState::Refused(DiskProblem::NotEmpty { .. })
        ),
        "{stats:?}"
    );
    assert!(
        matches!(
            &stats[1].state,
            DiskState::Offline(DiskProblem::PathMissing { .. })
        ),
        "{stats:?}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn an_io_error_takes_one_disk_out_and_the_others_keep_serving() {
    let state = tempfile::tempdir().unwrap();
    let disks = [
        SimDisk::new("/sim/good", 1 << 30),
        SimDisk::new("/sim/dying", 1 << 30),
    ];
    let store = open_sim(NODE_A, state.path(), &disks);
    let mut on_disk: [Vec<(ShardId, Vec<u8>)>; 2] = Default::default();
    let disk_ids: Vec<_> = store.disk_stats().iter().map(|s| s.disk.unwrap()).collect();
    for i in 0..40 {
        let (id, bytes) = shard(i, 3000);
        let PutOutcome::Stored(disk) = store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap() else {
            panic!()
        };
        on_disk[disk_ids.iter().position(|d| *d == disk).unwrap()].push((id, bytes));
    }
    assert!(!on_disk[0].is_empty() && !on_disk[1].is_empty());
    disks[1].set_io_errors(true);
    // The first read that touches the dying disk fails cleanly and takes it out of service.
    let (lost_id, _) = &on_disk[1][0];
    let err = store.get(*lost_id).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DiskFailed { .. } | StoreError::NotFound { .. }
        ),
        "{err}"
    );
    let events = store.take_events();
    let [StoreEvent::DiskFailed { disk, lost, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(*disk, disk_ids[1]);
    if let Some(lost) = lost {
        let expected: BTreeSet<_> = on_disk[1].iter().map(|(id, _)| *id).collect();
        assert_eq!(lost.iter().copied().collect::<BTreeSet<_>>(), expected);
    }
    assert!(matches!(store.disk_stats()[1].state, DiskState::Failed(_)));
    for (id, bytes) in &on_disk[0] {
        assert_eq!(store.get(*id).unwrap(), *bytes);
    }
    assert!(
        matches!(store.get(*lost_id), Err(StoreError::NotFound { note, .. }) if note.contains("out of service"))
    );
    // New shards go to the healthy disk.
    let (id, bytes) = shard(1000, 3000);
    assert_eq!(
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap(),
        PutOutcome::Stored(disk_ids[0])
    );
}

#[test]
fn a_write_error_fails_that_put_and_the_disk_and_the_next_put_succeeds_elsewhere() {
    let state = tempfile::tempdir().unwrap();
    let disks = [
        SimDisk::new("/sim/small", 16 << 20),
        SimDisk::new("/sim/big", 1 << 30),
    ];
    let store = open_sim(NODE_A, state.path(), &disks);
    // The big disk is chosen, passes the free-space check, then dies writing the shard file.
    disks[1].crash_after(0);
    let (id, bytes) = shard(1, 1000);
    let err = store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap_err();
    assert!(matches!(err, StoreError::DiskFailed { .. }), "{err}");
    assert!(err.to_string().contains("out of service"), "{err}");
    assert!(matches!(store.disk_stats()[1].state, DiskState::Failed(_)));
    let small = store.disk_stats()[0].disk.unwrap();
    assert_eq!(
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap(),
        PutOutcome::Stored(small)
    );
    assert_eq!(store.get(id).unwrap(), bytes);
}

#[test]
fn a_disk_failing_its_free_space_check_is_skipped() {
    let state = tempfile::tempdir().unwrap();
    let disks = [
        SimDisk::new("/sim/small", 16 << 20),
        SimDisk::new("/sim/big", 1 << 30),
    ];
    let store = open_sim(NODE_A, state.path(), &disks);
    disks[1].set_io_errors(true);
    let (id, bytes) = shard(1, 1000);
    assert!(matches!(
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap(),
        PutOutcome::Stored(_)
    ));
    assert!(matches!(
        store.take_events().as_slice(),
        [StoreEvent::DiskFailed { .. }]
    ));
    assert_eq!(store.get(id).unwrap(), bytes);
}

#[test]
fn expired_leases_are_collected_and_renewed_ones_are_kept() {
    let state = tempfile::tempdir().unwrap();
    let disk = SimDisk::new("/sim/a", 1 << 30);
    let store = open_sim(NODE_A, state.path(), std::slice::from_ref(&disk));
    let (a, a_bytes) = shard(1, 100);
    let (b, b_bytes) = shard(2, 100);
    store.put(a, &a_bytes, OWNER, 1000).unwrap();
    store.put(b, &b_bytes, OWNER, 1000).unwrap();
    assert!(store.renew_lease(b, 5000).unwrap());
    // A duplicate put with a later lease extends it; an earlier one does not shorten it.
    store.put(a, &a_bytes, OWNER, 1500).unwrap();
    store.put(a, &a_bytes, OWNER, 10).unwrap();
    assert_eq!(store.record(a).unwrap().1.lease_expires(), 1500);
    assert_eq!(store.collect_expired(1499, 100).unwrap(), 0);
    assert_eq!(store.collect_expired(1500, 100).unwrap(), 1);
    assert!(matches!(store.get(a), Err(StoreError::NotFound { .. })));
    assert_eq!(store.get(b).unwrap(), b_bytes);
    assert_eq!(store.collect_expired(6000, 100).unwrap(), 1);
    assert_eq!(store.disk_stats()[0].shards, 0);
    assert!(sim_shard_files(&disk).is_empty());
}

#[test]
fn the_store_prefers_the_disk_with_most_free_space() {
    let state = tempfile::tempdir().unwrap();
    let disks = [
        SimDisk::new("/sim/small", 12 << 20),
        SimDisk::new("/sim/big", 1 << 30),
    ];
    let store = open_sim(NODE_A, state.path(), &disks);
    let big = store.disk_stats()[1].disk.unwrap();
    for i in 0..10 {
        let (id, bytes) = shard(i, 5000);
        assert_eq!(
            store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap(),
            PutOutcome::Stored(big)
        );
    }
}

#[test]
fn the_quota_caps_what_the_node_stores() {
    let state = tempfile::tempdir().unwrap();
    let disk = SimDisk::new("/sim/a", 1 << 30);
    let mut config = config(NODE_A, state.path(), Vec::new());
    config.quota_bytes = Some(10_000);
    let store = ShardStore::open_mounts(config, vec![Box::new(disk)]).unwrap();
    for i in 0..3 {
        let (id, bytes) = shard(i, 3000);
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    }
    let (id, bytes) = shard(99, 3000);
    let err = store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QuotaExceeded {
                used: 9000,
                quota: 10_000,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn concurrent_puts_of_distinct_and_duplicate_shards_all_land_once() {
    let root = tempfile::tempdir().unwrap();
    let disks = disk_dirs(root.path(), 2);
    let store =
        ShardStore::open(config(NODE_A, &root.path().join("state"), disks.clone())).unwrap();
    std::thread::scope(|scope| {
        for t in 0..6u64 {
            let store = &store;
            scope.spawn(move || {
                for i in 0..30u64 {
                    // Threads overlap on half their shards, so duplicates race.
                    let seed = if i % 2 == 0 { i } else { t * 1000 + i };
                    let (id, bytes) = shard(seed, 20_000);
                    store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
                }
            });
        }
    });
    let unique = 15 + 6 * 15;
    let stats = store.disk_stats();
    assert_eq!(stats.iter().map(|s| s.shards).sum::<u64>(), unique);
    let files: usize = disks.iter().map(|d| real_shard_files(d).len()).sum();
    assert_eq!(files as u64, unique);
    for info in store.list(None, 1000).unwrap() {
        assert_eq!(info.record.state, ShardState::Stored);
        assert_eq!(ShardId::of(&store.get(info.id).unwrap()), info.id);
    }
}

/// Every file under a directory with its bytes, to prove nothing changed.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_disk_attached_while_running_serves_and_a_detached_one_stops_until_it_returns() {
    use cairn_store::fs::RealMount;
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    let first = root.path().join("first");
    let second = root.path().join("second");
    std::fs::create_dir(&first).unwrap();
    std::fs::create_dir(&second).unwrap();
    let store = ShardStore::open(config(NODE_A, &state, vec![first.clone()])).unwrap();
    let (kept, kept_bytes) = shard(1, 4000);
    store.put(kept, &kept_bytes, OWNER, FAR_FUTURE).unwrap();

    // A fresh, empty disk mounted later is initialised and taken into service.
    let state_of = store
        .attach(Box::new(RealMount::new(&second)))
        .unwrap()
        .expect("a new mountpoint changes something");
    assert_eq!(state_of, DiskState::Online);
    assert!(second.join("cairn/marker.toml").exists());
    assert_eq!(
        store.attach(Box::new(RealMount::new(&second))).unwrap(),
        None
    );
    let stats = store.disk_stats();
    assert_eq!(stats.len(), 2);
    let second_id = stats[1].disk.expect("the new disk's marker was read");

    // With the first disk gone, every new shard lands on the second.
    assert!(store.detach(&first, "its device is gone"));
    let moved: Vec<_> = (10..20).map(|seed| shard(seed, 3000)).collect();
    for (id, bytes) in &moved {
        assert_eq!(
            store.put(*id, bytes, OWNER, FAR_FUTURE).unwrap(),
            PutOutcome::Stored(second_id)
        );
    }
    let gone = store.get(kept).unwrap_err();
    assert!(
        matches!(&gone, StoreError::NotFound { note, .. } if note.contains("out of service")),
        "{gone}"
    );
    let first_state = store.disk_stats()[0].state.clone();
    assert!(
        matches!(
            &first_state,
            DiskState::Offline(DiskProblem::Detached { .. })
        ),
        "{first_state:?}"
    );
    assert!(
        first_state.to_string().contains("plug it back in"),
        "{first_state}"
    );
    assert!(!store.detach(&first, "again"), "it was no longer open");

    // Plugged back in: its shards are served again.
    assert_eq!(
        store.attach(Box::new(RealMount::new(&first))).unwrap(),
        Some(DiskState::Online)
    );
    assert_eq!(store.get(kept).unwrap(), kept_bytes);
    for (id, bytes) in &moved {
        assert_eq!(&store.get(*id).unwrap(), bytes);
    }
}

#[test]
fn attaching_at_run_time_keeps_the_start_up_refusals() {
    use cairn_store::fs::RealMount;
    let root = tempfile::tempdir().unwrap();
    let mine = root.path().join("mine");
    let theirs = root.path().join("theirs");
    let copy = root.path().join("copy");
    for dir in [&mine, &theirs] {
        std::fs::create_dir(dir).unwrap();
    }
    let (id, bytes) = shard(5, 2000);
    {
        let store =
            ShardStore::open(config(NODE_B, &root.path().join("b"), vec![theirs.clone()])).unwrap();
        store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    }
    let theirs_before = snapshot(&theirs);
    let state = root.path().join("a");
    let store = ShardStore::open(config(NODE_A, &state, vec![mine.clone()])).unwrap();

    // Another node's disk is refused and left untouched.
    let refused = store.attach(Box::new(RealMount::new(&theirs))).unwrap();
    assert!(
        matches!(
            refused,
            Some(DiskState::Refused(DiskProblem::ForeignMarker { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(snapshot(&theirs), theirs_before);

    // The same disk seen through a second path is used once.
    std::fs::create_dir(&copy).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(mine.join("cairn"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let duplicate = store.attach(Box::new(RealMount::new(&copy))).unwrap();
    assert!(
        matches!(
            duplicate,
            Some(DiskState::Refused(DiskProblem::Duplicate { .. }))
        ),
        "{duplicate:?}"
    );

    // A known disk's mountpoint, found empty after a detach, is never initialised again.
    assert!(store.detach(&mine, "it was unmounted"));
    let away = root.path().join("away");
    std::fs::rename(mine.join("cairn"), &away).unwrap();
    let empty = store.attach(Box::new(RealMount::new(&mine))).unwrap();
    assert!(
        matches!(
            empty,
            Some(DiskState::Offline(DiskProblem::MarkerMissing { .. }))
        ),
        "{empty:?}"
    );
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 0);
}

/// An eviction drops only the evicted owner's claims: a shard another owner
/// also claims stays for it, the rest go, all in one pass.
#[test]
fn evicting_an_owner_keeps_the_shards_others_claim() {
    let root = tempfile::tempdir().unwrap();
    let disks = disk_dirs(root.path(), 1);
    let store = ShardStore::open(config(NODE_A, &root.path().join("state"), disks)).unwrap();
    let squatter = cairn_proto::ids::OwnerId([0xee; 32]);
    let shared = shard(1, 5000);
    let alone: Vec<_> = (2..6).map(|i| shard(i, 3000)).collect();
    store.put(shared.0, &shared.1, OWNER, FAR_FUTURE).unwrap();
    store
        .put(shared.0, &shared.1, squatter, FAR_FUTURE)
        .unwrap();
    for (id, bytes) in &alone {
        store.put(*id, bytes, squatter, FAR_FUTURE).unwrap();
    }
    assert_eq!(store.owner_usage(&squatter).unwrap().shards, 5);
    let (released, gone) = store.evict(&squatter, 100).unwrap();
    assert_eq!(released, 5);
    let mut expected: Vec<_> = alone.iter().map(|(id, _)| *id).collect();
    expected.sort();
    assert_eq!(gone, expected);
    assert_eq!(store.get(shared.0).unwrap(), shared.1);
    assert_eq!(store.owner_usage(&squatter).unwrap().shards, 0);
    assert_eq!(store.owner_usage(&OWNER).unwrap().shards, 1);
    assert_eq!(store.evict(&squatter, 100).unwrap(), (0, vec![]));
    assert_eq!(store.disk_stats()[0].shards, 1);
}

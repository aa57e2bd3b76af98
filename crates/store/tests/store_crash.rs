//! Crash consistency: run a workload on a simulated disk, cut the power at
//! every single write or sync it makes, restart, and check that
//! - every acknowledged put reads back bit-exact and every acknowledged
//!   delete stays deleted;
//! - nothing corrupt is served, and nothing listed is unreadable;
//! - `tmp/` is empty and no shard file exists that the index does not list;
//! - the space counters equal the shards actually present.
//!
//! Each crash point runs twice: once losing all unsynced work, once keeping
//! a random part of it (torn files, some index pages, some directory
//! entries), as a real disk may.

mod common;

use std::collections::BTreeMap;

use cairn_proto::ids::ShardId;
use cairn_store::sim::SimDisk;
use cairn_store::{DiskState, ShardStore, StoreError};
use common::*;

#[derive(Debug, Clone)]
enum Step {
    Put(u64, usize),
    PutMany(&'static [(u64, usize)]),
    Delete(u64),
    Renew(u64),
    Collect(u64),
}

/// A workload touching every path: puts of several sizes (one empty), a
/// duplicate put, deletes, a lease renewal and a lease collection.
fn workload() -> Vec<Step> {
    use Step::*;
    vec![
        Put(1, 3000),
        Put(2, 0),
        Put(3, 70_000),
        Put(4, 100),
        Delete(2),
        Put(5, 10_000),
        Put(1, 3000),
        Renew(4),
        Put(6, 1),
        Delete(3),
        Put(7, 40_000),
        Collect(5),
        Put(3, 70_000),
        PutMany(&[(9, 2000), (1, 3000), (10, 30_000), (11, 5)]),
        Put(8, 500),
    ]
}

/// What the test knows was acknowledged: seed → Some(bytes) if stored, None if deleted.
/// The operation cut short by the crash is in doubt: its shard may show either outcome.
#[derive(Default)]
struct Acked {
    shards: BTreeMap<u64, Option<Vec<u8>>>,
    /// A put cut short: its shard may be present (bit-exact) although not acknowledged.
    put_in_doubt: Option<u64>,
    /// A delete or collection cut short: its shard may be gone although not acknowledged.
    delete_in_doubt: Option<u64>,
}

impl Acked {
    fn insert(&mut self, seed: u64, state: Option<Vec<u8>>) {
        self.shards.insert(seed, state);
    }
}

/// Runs the workload until the first error. Returns what was acknowledged.
fn run(store: &ShardStore) -> Acked {
    let mut acked = Acked::default();
    for step in workload() {
        let (put_doubt, delete_doubt) = match step {
            Step::Put(seed, _) => (Some(seed), None),
            // Only fresh shards can be in doubt: the batch re-puts acknowledged seed 1.
            Step::PutMany(_) => (None, None),
            Step::Delete(seed) | Step::Collect(seed) => (None, Some(seed)),
            Step::Renew(_) => (None, None),
        };
        let result = match step {
            Step::Put(seed, len) => {
                let (id, bytes) = shard(seed, len);
                // Seed 5's lease is short so that Collect(5) removes it.
                let lease = if seed == 5 { 100 } else { FAR_FUTURE };
                store.put(id, &bytes, OWNER, lease).map(|_| {
                    acked.insert(seed, Some(bytes));
                })
            }
            Step::PutMany(batch) => {
                let shards: Vec<_> = batch.iter().map(|&(seed, len)| shard(seed, len)).collect();
                let refs: Vec<_> = shards
                    .iter()
                    .map(|(id, bytes)| (*id, bytes.as_slice()))
                    .collect();
                store.put_many(&refs, OWNER, FAR_FUTURE).map(|_| {
                    for (&(seed, _), (_, bytes)) in batch.iter().zip(shards) {
                        acked.insert(seed, Some(bytes));
                    }
                })
            }
            Step::Delete(seed) => store.delete(shard(seed, len_of(seed)).0).map(|existed| {
                assert!(existed, "the workload deletes only stored shards");
                acked.insert(seed, None);
            }),
            Step::Renew(seed) => store
                .renew_lease(shard(seed, len_of(seed)).0, FAR_FUTURE + 1)
                .map(|renewed| assert!(renewed, "the workload renews only stored shards")),
            Step::Collect(seed) => store.collect_expired(200, 10).map(|n| {
                assert_eq!(n, 1);
                acked.insert(seed, None);
            }),
        };
        if let Err(e) = &result {
            if std::env::var_os("CRASH_DEBUG").is_some() {
                eprintln!("cut short: {step:?}: {e}");
            }
            acked.put_in_doubt = put_doubt;
            acked.delete_in_doubt = delete_doubt;
            break;
        }
    }
    acked
}

fn len_of(seed: u64) -> usize {
    workload()
        .iter()
        .find_map(|s| match s {
            Step::Put(s, len) if *s == seed => Some(*len),
            Step::PutMany(batch) => batch.iter().find(|(s, _)| *s == seed).map(|(_, len)| *len),
            _ => None,
        })
        .unwrap_or(0)
}

fn check_after_restart(disk: &SimDisk, state: &std::path::Path, acked: &Acked, context: &str) {
    let store = open_sim(NODE_A, state, std::slice::from_ref(disk));
    let stats = &store.disk_stats()[0];
    assert_eq!(
        stats.state,
        DiskState::Online,
        "{context}: disk not online after restart"
    );
    for (seed, expected) in &acked.shards {
        let id = shard(*seed, len_of(*seed)).0;
        let exact = shard(*seed, len_of(*seed)).1;
        match (expected, store.get(id)) {
            (Some(_), Err(StoreError::NotFound { .. })) if acked.delete_in_doubt == Some(*seed) => {
            }
            (None, Ok(read)) if acked.put_in_doubt == Some(*seed) => {
                assert!(
                    read == exact,
                    "{context}: shard {seed} served with wrong bytes"
                );
            }
            (Some(bytes), Ok(read)) => assert!(&read == bytes, "{context}: shard {seed} changed"),
            (Some(_), Err(e)) => panic!("{context}: acknowledged shard {seed} lost: {e}"),
            (None, Err(StoreError::NotFound { .. })) => {}
            (None, Ok(_)) => panic!("{context}: acknowledged delete of {seed} undone"),
            (None, Err(e)) => panic!("{context}: deleted shard {seed}: unexpected error {e}"),
        }
    }
    // Whatever the index lists must be intact, and must be all there is.
    let listed = store.list(None, 1000).unwrap();
    let mut bytes = 0;
    for info in &listed {
        let read = store
            .get(info.id)
            .unwrap_or_else(|e| panic!("{context}: listed shard unreadable: {e}"));
        assert_eq!(ShardId::of(&read), info.id);
        bytes += read.len() as u64;
    }
    assert_eq!(
        stats.shards,
        listed.len() as u64,
        "{context}: shard count drifted"
    );
    assert_eq!(stats.used, bytes, "{context}: space accounting drifted");
    let mut files = sim_shard_files(disk);
    files.sort();
    let mut expected: Vec<String> = listed.iter().map(|i| i.id.to_hex()).collect();
    expected.sort();
    assert_eq!(files, expected, "{context}: shard files and index disagree");
    assert!(
        disk.names("tmp").is_empty(),
        "{context}: temporary files left"
    );
    assert!(
        store.take_events().is_empty(),
        "{context}: restart reported damage"
    );
}

#[test]
fn crash_at_every_step_loses_nothing_acknowledged() {
    // Count the steps of one clean run.
    let state = tempfile::tempdir().unwrap();
    let disk = SimDisk::new("/sim/a", 1 << 30);
    let store = open_sim(NODE_A, state.path(), std::slice::from_ref(&disk));
    let start = disk.steps();
    let full = run(&store);
    let total = disk.steps() - start;
    drop(store);
    assert_eq!(full.shards.len(), 11);
    assert!(
        total > 50,
        "the workload should have many crash points, has {total}"
    );

    let mut crashes = 0;
    for crash_point in 0..=total {
        for torn_seed in [None, Some(crash_point * 7919 + 1)] {
            let state = tempfile::tempdir().unwrap();
            let disk = SimDisk::new("/sim/a", 1 << 30);
            let store = open_sim(NODE_A, state.path(), std::slice::from_ref(&disk));
            disk.crash_after(crash_point);
            let acked = run(&store);
            drop(store);
            if disk.has_crashed() {
                crashes += 1;
            }
            disk.crash(torn_seed);
            let context = format!("crash at step {crash_point}/{total}, torn {torn_seed:?}");
            check_after_restart(&disk, state.path(), &acked, &context);
            // A second restart finds the same state (recovery is idempotent and complete).
            check_after_restart(
                &disk,
                state.path(),
                &acked,
                &format!("{context}, second restart"),
            );
        }
    }
    assert!(crashes >= 100, "only {crashes} crash points were exercised");
    eprintln!("crash consistency: {crashes} crashes over {total} crash points");
}

#[test]
fn a_crash_during_recovery_is_recovered_from() {
    // Crash mid-workload, then crash again at every step of the recovery itself.
    let probe_state = tempfile::tempdir().unwrap();
    let probe = SimDisk::new("/sim/a", 1 << 30);
    drop(open_sim(
        NODE_A,
        probe_state.path(),
        std::slice::from_ref(&probe),
    ));
    let mut recovery_crashes = 0;
    for first_crash in [20u64, 45, 70, 95] {
        for second_crash in 0..40u64 {
            let state = tempfile::tempdir().unwrap();
            let disk = SimDisk::new("/sim/a", 1 << 30);
            let store = open_sim(NODE_A, state.path(), std::slice::from_ref(&disk));
            disk.crash_after(first_crash);
            let acked = run(&store);
            drop(store);
            disk.crash(Some(first_crash));
            disk.crash_after(second_crash);
            drop(open_sim(NODE_A, state.path(), std::slice::from_ref(&disk)));
            recovery_crashes += u64::from(disk.has_crashed());
            disk.crash(Some(second_crash));
            let context = format!("crash at {first_crash}, then at recovery step {second_crash}");
            check_after_restart(&disk, state.path(), &acked, &context);
        }
    }
    assert!(
        recovery_crashes > 20,
        "recovery crashed only {recovery_crashes} times"
    );
}

#[test]
fn a_shard_put_again_right_after_its_delete_survives_a_crash() {
    // The first put's intent is forgotten only after a later sync; by then
    // the second put has written its own intent for the same shard, which
    // must outlive the first put's forgetting until its own link is durable.
    let state = tempfile::tempdir().unwrap();
    let disk = SimDisk::new("/sim/a", 1 << 30);
    let store = open_sim(NODE_A, state.path(), std::slice::from_ref(&disk));
    let (other, other_bytes) = shard(1, 1000);
    let (id, bytes) = shard(2, 5000);
    store.put(other, &other_bytes, OWNER, FAR_FUTURE).unwrap();
    store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    assert!(store.delete(id).unwrap());
    store.put(id, &bytes, OWNER, FAR_FUTURE).unwrap();
    // A commit with no sync of its own: it carries the pending forgets.
    assert!(store.renew_lease(other, FAR_FUTURE + 1).unwrap());
    // The power goes now: the store's orderly shutdown (a flush) never runs.
    disk.crash_after(0);
    drop(store);
    disk.crash(None);

    let store = open_sim(NODE_A, state.path(), std::slice::from_ref(&disk));
    assert_eq!(store.get(id).expect("the acknowledged second put"), bytes);
    assert_eq!(store.get(other).unwrap(), other_bytes);
    assert!(disk.names("tmp").is_empty(), "temporary files left");
}

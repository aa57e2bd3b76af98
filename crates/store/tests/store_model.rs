//! Property test: random sequences of store operations, on two simulated
//! disks, agree with a plain in-memory model — including across restarts,
//! batch puts and lease collection — and the per-disk counters always equal
//! what `list` shows.

mod common;

use std::collections::BTreeMap;

use cairn_store::sim::SimDisk;
use cairn_store::{PutOutcome, ShardStore, StoreError};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put { seed: u64, lease: u64 },
    PutMany { seeds: Vec<u64>, lease: u64 },
    Get(u64),
    Range { seed: u64, offset: u64, len: u64 },
    Delete(u64),
    Renew { seed: u64, lease: u64 },
    Collect(u64),
    Flush,
    Restart,
}

/// Few seeds, so operations keep meeting the same shards.
fn seed() -> impl Strategy<Value = u64> {
    0u64..12
}

fn lease() -> impl Strategy<Value = u64> {
    1u64..100
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (seed(), lease()).prop_map(|(seed, lease)| Op::Put { seed, lease }),
        1 => (prop::collection::vec(seed(), 1..5), lease())
            .prop_map(|(seeds, lease)| Op::PutMany { seeds, lease }),
        3 => seed().prop_map(Op::Get),
        1 => (seed(), 0u64..600, 0u64..600)
            .prop_map(|(seed, offset, len)| Op::Range { seed, offset, len }),
        2 => seed().prop_map(Op::Delete),
        1 => (seed(), lease()).prop_map(|(seed, lease)| Op::Renew { seed, lease }),
        1 => lease().prop_map(Op::Collect),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
    ]
}

/// Shard sizes vary with the seed, including an empty shard.
fn len_of(seed: u64) -> usize {
    (seed as usize * 97) % 500
}

fn check_agrees(store: &ShardStore, model: &BTreeMap<u64, u64>) -> Result<(), TestCaseError> {
    let listed = store
        .list(None, 1000)
        .map_err(|e| TestCaseError::fail(format!("list: {e}")))?;
    let mut expected: Vec<_> = model
        .iter()
        .map(|(seed, lease)| (shard(*seed, len_of(*seed)).0, *lease))
        .collect();
    expected.sort();
    let mut actual: Vec<_> = listed
        .iter()
        .map(|info| (info.id, info.record.lease_expires()))
        .collect();
    actual.sort();
    prop_assert_eq!(actual, expected, "list disagrees with the model");
    let stats = store.disk_stats();
    let shards: u64 = stats.iter().map(|s| s.shards).sum();
    let used: u64 = stats.iter().map(|s| s.used).sum();
    let model_bytes: u64 = model.keys().map(|s| len_of(*s) as u64).sum();
    prop_assert_eq!(shards, model.len() as u64, "shard counters");
    prop_assert_eq!(used, model_bytes, "space counters");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_a_map(ops in prop::collection::vec(op(), 1..60)) {
        let state = tempfile::tempdir().unwrap();
        let disks = [SimDisk::new("/sim/a", 1 << 30), SimDisk::new("/sim/b", 1 << 30)];
        let mut store = open_sim(NODE_A, state.path(), &disks);
        // seed → lease expiry of every shard the store should hold.
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put { seed, lease } => {
                    let (id, bytes) = shard(seed, len_of(seed));
                    let outcome = store.put(id, &bytes, OWNER, lease).unwrap();
                    match model.get_mut(&seed) {
                        Some(old) => {
                            prop_assert!(matches!(outcome, PutOutcome::AlreadyStored(_)));
                            *old = (*old).max(lease);
                        }
                        None => {
                            prop_assert!(matches!(outcome, PutOutcome::Stored(_)));
                            model.insert(seed, lease);
                        }
                    }
                }
                Op::PutMany { mut seeds, lease } => {
                    seeds.sort();
                    seeds.dedup();
                    let shards: Vec<_> = seeds.iter().map(|s| shard(*s, len_of(*s))).collect();
                    let refs: Vec<_> = shards.iter().map(|(id, b)| (*id, b.as_slice())).collect();
                    store.put_many(&refs, OWNER, lease).unwrap();
                    for seed in seeds {
                        let old = model.entry(seed).or_insert(lease);
                        *old = (*old).max(lease);
                    }
                }
                Op::Get(seed) => {
                    let (id, bytes) = shard(seed, len_of(seed));
                    match (model.contains_key(&seed), store.get(id)) {
                        (true, Ok(read)) => prop_assert_eq!(read, bytes),
                        (false, Err(StoreError::NotFound { .. })) => {}
                        (held, other) => {
                            return Err(TestCaseError::fail(format!("get {seed} (held: {held}): {other:?}")))
                        }
                    }
                }
                Op::Range { seed, offset, len } => {
                    let (id, bytes) = shard(seed, len_of(seed));
                    let result = store.get_range(id, offset, len);
                    let fits = offset + len <= bytes.len() as u64;
                    match (model.contains_key(&seed), fits, result) {
                        (true, true, Ok(read)) => {
                            prop_assert_eq!(&read[..], &bytes[offset as usize..(offset + len) as usize]);
                        }
                        (true, false, Err(StoreError::RangeOutOfBounds { .. })) => {}
                        (false, _, Err(StoreError::NotFound { .. })) => {}
                        (held, fits, other) => {
                            return Err(TestCaseError::fail(format!(
                                "range of {seed} (held: {held}, fits: {fits}): {other:?}"
                            )))
                        }
                    }
                }
                Op::Delete(seed) => {
                    let deleted = store.delete(shard(seed, len_of(seed)).0).unwrap();
                    prop_assert_eq!(deleted, model.remove(&seed).is_some());
                }
                Op::Renew { seed, lease } => {
                    let renewed = store.renew_lease(shard(seed, len_of(seed)).0, lease).unwrap();
                    let held = model.get_mut(&seed);
                    prop_assert_eq!(renewed, held.is_some());
                    if let Some(old) = held {
                        *old = (*old).max(lease);
                    }
                }
                Op::Collect(now) => {
                    let collected = store.collect_expired(now, 1000).unwrap();
                    let before = model.len();
                    model.retain(|_, lease| *lease > now);
                    prop_assert_eq!(collected, before - model.len());
                }
                Op::Flush => store.flush().unwrap(),
                Op::Restart => {
                    drop(store);
                    store = open_sim(NODE_A, state.path(), &disks);
                }
            }
            check_agrees(&store, &model)?;
        }
        // Every disk stays free of leftovers: tmp/ is empty once flushed.
        store.flush().unwrap();
        for disk in &disks {
            prop_assert!(disk.names("tmp").is_empty(), "tmp/ not empty: {:?}", disk.names("tmp"));
        }
    }
}

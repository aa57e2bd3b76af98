//! One disk's index: what shards the disk holds, their leases, the space
//! counters, and the intents of writes in flight — all in one `redb` file on
//! the same disk, so the disk is self-describing and moves with its index.
//!
//! Layout (all integers little-endian):
//! - `shards`: shard id → record `[version=1][len u64][owner 32 B][lease_expires u64][state u8]`
//! - `leases`: (lease_expires, shard id) → (), so expired shards are found
//!   by a range scan rather than a walk
//! - `intents`: shard id → intent kind, for shards whose file operation may
//!   not have finished when the index was committed
//! - `counters`: name → u64, kept in the same transaction as every change, so
//!   space accounting never needs a walk.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::fs::IndexBackend;
use cairn_proto::ids::{OwnerId, ShardId};

const SHARDS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("shards");
const LEASES: TableDefinition<(u64, [u8; 32]), ()> = TableDefinition::new("leases");
const INTENTS: TableDefinition<[u8; 32], u8> = TableDefinition::new("intents");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 1 + 8 + 32 + 8 + 1;

/// Whether a shard may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// Stored and, as far as the last check knows, intact.
    Stored,
    /// Found corrupt or missing; kept aside, never served, reported.
    Quarantined,
}

/// What the index knows about one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRecord {
    /// Length in bytes.
    pub len: u64,
    /// Whose shard it is.
    pub owner: OwnerId,
    /// Unix time (seconds) after which the shard may be collected unless renewed.
    pub lease_expires: u64,
    /// Whether it may be served.
    pub state: ShardState,
}

impl ShardRecord {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = RECORD_VERSION;
        out[1..9].copy_from_slice(&self.len.to_le_bytes());
        out[9..41].copy_from_slice(&self.owner.0);
        out[41..49].copy_from_slice(&self.lease_expires.to_le_bytes());
        out[49] = match self.state {
            ShardState::Stored => 0,
            ShardState::Quarantined => 1,
        };
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, redb::Error> {
        let damaged = || {
            redb::Error::Corrupted(format!(
                "shard record of {} bytes, version {:?}",
                bytes.len(),
                bytes.first()
            ))
        };
        if bytes.len() != RECORD_LEN || bytes[0] != RECORD_VERSION {
            return Err(damaged());
        }
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let mut owner = [0u8; 32];
        owner.copy_from_slice(&bytes[9..41]);
        Ok(Self {
            len: u64_at(1),
            owner: OwnerId(owner),
            lease_expires: u64_at(41),
            state: match bytes[49] {
                0 => ShardState::Stored,
                1 => ShardState::Quarantined,
                _ => return Err(damaged()),
            },
        })
    }
}

/// Space and shard counts of one disk, kept incrementally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Shards that may be served.
    pub shards: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Quarantined shards.
    pub quarantined: u64,
    /// Their bytes (still on the disk).
    pub quarantined_bytes: u64,
}

const COUNTER_NAMES: [&str; 4] = ["shards", "bytes", "quarantined", "quarantined_bytes"];

impl Counters {
    fn as_array(&self) -> [u64; 4] {
        [
            self.shards,
            self.bytes,
            self.quarantined,
            self.quarantined_bytes,
        ]
    }

    fn from_array(values: [u64; 4]) -> Self {
        Self {
            shards: values[0],
            bytes: values[1],
            quarantined: values[2],
            quarantined_bytes: values[3],
        }
    }

    fn add(&mut self, state: ShardState, len: u64) {
        match state {
            ShardState::Stored => {
                self.shards += 1;
                self.bytes += len;
            }
            ShardState::Quarantined => {
                self.quarantined += 1;
                self.quarantined_bytes += len;
            }
        }
    }

    fn sub(&mut self, state: ShardState, len: u64) {
        match state {
            ShardState::Stored => {
                self.shards -= 1;
                self.bytes -= len;
            }
            ShardState::Quarantined => {
                self.quarantined -= 1;
                self.quarantined_bytes -= len;
            }
        }
    }
}

/// A file operation that was committed to the index before it was finished on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// The shard's file may still be in `tmp/`, not yet renamed into place.
    Put,
    /// The shard's file may still exist although its record is gone.
    Delete,
    /// The shard's file may still be in `shards/` rather than `quarantine/`.
    Quarantine,
}

impl Intent {
    fn code(self) -> u8 {
        match self {
            Intent::Put => 1,
            Intent::Delete => 2,
            Intent::Quarantine => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Intent::Put),
            2 => Some(Intent::Delete),
            3 => Some(Intent::Quarantine),
            _ => None,
        }
    }
}

/// A change to the index, batched with others into one commit.
#[derive(Debug, Clone)]
pub enum IndexOp {
    /// Record a newly written shard (with a put intent).
    Insert(ShardId, ShardRecord),
    /// Forget a shard (with a delete intent).
    Remove(ShardId),
    /// Mark a shard quarantined (with a quarantine intent).
    Quarantine(ShardId),
    /// Move a shard's lease expiry.
    RenewLease(ShardId, u64),
}

impl IndexOp {
    /// The shard it changes.
    pub fn shard(&self) -> ShardId {
        match *self {
            IndexOp::Insert(id, _)
            | IndexOp::Remove(id)
            | IndexOp::Quarantine(id)
            | IndexOp::RenewLease(id, _) => id,
        }
    }

    /// Whether [`Index::apply`], finding `outcome`, wrote an intent for
    /// this op's shard: kept beside `apply` so the two cannot drift apart.
    pub fn wrote_intent(&self, outcome: &OpOutcome) -> bool {
        matches!(
            self,
            IndexOp::Insert(..) | IndexOp::Remove(_) | IndexOp::Quarantine(_)
        ) && matches!(outcome, OpOutcome::Applied(_))
    }
}

/// What an [`IndexOp`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// The change was made; the record as it was before, if there was one.
    Applied(Option<ShardRecord>),
    /// Nothing to do: the shard is already stored (a duplicate put), or already quarantined.
    Unchanged,
    /// The shard is not in the index.
    Absent,
}

/// One disk's index.
pub struct Index {
    db: redb::Database,
}

impl Index {
    /// Opens (or creates) the index on `backend`, repairing it after a crash if needed.
    pub fn open(backend: IndexBackend, cache_bytes: usize) -> Result<Self, redb::Error> {
        let db = redb::Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(SHARDS)?;
            txn.open_table(LEASES)?;
            txn.open_table(INTENTS)?;
            txn.open_table(COUNTERS)?;
        }
        txn.commit()?;
        Ok(Self { db })
    }

    /// The record of one shard.
    pub fn get(&self, id: &ShardId) -> Result<Option<ShardRecord>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SHARDS)?;
        table
            .get(&id.0)?
            .map(|v| ShardRecord::decode(v.value()))
            .transpose()
    }

    /// The counters as last committed.
    pub fn counters(&self) -> Result<Counters, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COUNTERS)?;
        let mut values = [0u64; 4];
        for (value, name) in values.iter_mut().zip(COUNTER_NAMES) {
            *value = table.get(name)?.map(|v| v.value()).unwrap_or(0);
        }
        Ok(Counters::from_array(values))
    }

    /// Intents left by operations that may not have finished.
    pub fn intents(&self) -> Result<Vec<(ShardId, Intent)>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INTENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (id, code) = entry?;
            let intent = Intent::from_code(code.value()).ok_or_else(|| {
                redb::Error::Corrupted(format!("unknown intent code {}", code.value()))
            })?;
            out.push((ShardId(id.value()), intent));
        }
        Ok(out)
    }

    /// Up to `limit` shards in id order, starting after `after`.
    pub fn page(
        &self,
        after: Option<ShardId>,
        limit: usize,
    ) -> Result<Vec<(ShardId, ShardRecord)>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SHARDS)?;
        let range = match after {
            Some(id) => {
                table.range((std::ops::Bound::Excluded(id.0), std::ops::Bound::Unbounded))?
            }
            None => table.range::<[u8; 32]>(..)?,
        };
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (id, record) = entry?;
            out.push((ShardId(id.value()), ShardRecord::decode(record.value())?));
        }
        Ok(out)
    }

    /// Up to `limit` shards whose lease expired at or before `now`.
    pub fn expired(&self, now: u64, limit: usize) -> Result<Vec<ShardId>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEASES)?;
        let mut out = Vec::new();
        for entry in table.range(..=(now, [0xff; 32]))?.take(limit) {
            out.push(ShardId(entry?.0.value().1));
        }
        Ok(out)
    }

    /// Applies a batch of changes in one durable commit: first forgets the
    /// intents in `finished` (their file operations are done), then applies
    /// `ops` in order. Returns each op's outcome and the new counters.
    pub fn apply(
        &self,
        finished: &[ShardId],
        ops: &[IndexOp],
    ) -> Result<(Vec<OpOutcome>, Counters), redb::Error> {
        let mut counters = self.counters()?;
        let txn = self.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            let mut shards = txn.open_table(SHARDS)?;
            let mut leases = txn.open_table(LEASES)?;
            let mut intents = txn.open_table(INTENTS)?;
            for id in finished {
                intents.remove(&id.0)?;
            }
            for op in ops {
                let outcome = match *op {
                    IndexOp::Insert(id, record) => {
                        let old = get_record(&shards, &id)?;
                        match old {
                            Some(old) if old.state == ShardState::Stored => {
                                if record.lease_expires > old.lease_expires {
                                    move_lease(
                                        &mut leases,
                                        &id,
                                        old.lease_expires,
                                        record.lease_expires,
                                    )?;
                                    put_record(
                                        &mut shards,
                                        &id,
                                        &ShardRecord {
                                            lease_expires: record.lease_expires,
                                            ..old
                                        },
                                    )?;
                                }
                                OpOutcome::Unchanged
                            }
                            _ => {
                                if let Some(old) = old {
                                    counters.sub(old.state, old.len);
                                    leases.remove(&(old.lease_expires, id.0))?;
                                }
                                counters.add(ShardState::Stored, record.len);
                                put_record(&mut shards, &id, &record)?;
                                leases.insert(&(record.lease_expires, id.0), ())?;
                                intents.insert(&id.0, Intent::Put.code())?;
                                OpOutcome::Applied(old)
                            }
                        }
                    }
                    IndexOp::Remove(id) => match get_record(&shards, &id)? {
                        None => OpOutcome::Absent,
                        Some(old) => {
                            counters.sub(old.state, old.len);
                            shards.remove(&id.0)?;
                            leases.remove(&(old.lease_expires, id.0))?;
                            intents.insert(&id.0, Intent::Delete.code())?;
                            OpOutcome::Applied(Some(old))
                        }
                    },
                    IndexOp::Quarantine(id) => match get_record(&shards, &id)? {
                        None => OpOutcome::Absent,
                        Some(old) if old.state == ShardState::Quarantined => OpOutcome::Unchanged,
                        Some(old) => {
                            counters.sub(old.state, old.len);
                            counters.add(ShardState::Quarantined, old.len);
                            put_record(
                                &mut shards,
                                &id,
                                &ShardRecord {
                                    state: ShardState::Quarantined,
                                    ..old
                                },
                            )?;
                            intents.insert(&id.0, Intent::Quarantine.code())?;
                            OpOutcome::Applied(Some(old))
                        }
                    },
                    IndexOp::RenewLease(id, expires) => match get_record(&shards, &id)? {
                        None => OpOutcome::Absent,
                        // Leases only grow: any peer may renew, and a shorter
                        // lease from one would let holders drop live data.
                        Some(old) if expires <= old.lease_expires => OpOutcome::Applied(Some(old)),
                        Some(old) => {
                            move_lease(&mut leases, &id, old.lease_expires, expires)?;
                            put_record(
                                &mut shards,
                                &id,
                                &ShardRecord {
                                    lease_expires: expires,
                                    ..old
                                },
                            )?;
                            OpOutcome::Applied(Some(old))
                        }
                    },
                };
                outcomes.push(outcome);
            }
            let mut table = txn.open_table(COUNTERS)?;
            for (name, value) in COUNTER_NAMES.iter().zip(counters.as_array()) {
                table.insert(*name, value)?;
            }
        }
        txn.commit()?;
        Ok((outcomes, counters))
    }

    /// Drops records whose files turned out not to exist after a crash, and
    /// clears all intents, in one commit. Returns the new counters.
    pub fn finish_recovery(&self, drop: &[ShardId]) -> Result<Counters, redb::Error> {
        let all: Vec<ShardId> = self.intents()?.into_iter().map(|(id, _)| id).collect();
        let ops: Vec<IndexOp> = drop.iter().map(|id| IndexOp::Remove(*id)).collect();
        let (_, mut counters) = self.apply(&all, &ops)?;
        if !drop.is_empty() {
            // The removals above wrote fresh delete intents; their files are already gone.
            counters = self.apply(drop, &[])?.1;
        }
        Ok(counters)
    }
}

fn get_record(
    table: &redb::Table<[u8; 32], &[u8]>,
    id: &ShardId,
) -> Result<Option<ShardRecord>, redb::Error> {
    table
        .get(&id.0)?
        .map(|v| ShardRecord::decode(v.value()))
        .transpose()
}

fn put_record(
    table: &mut redb::Table<[u8; 32], &[u8]>,
    id: &ShardId,
    record: &ShardRecord,
) -> Result<(), redb::Error> {
    table.insert(&id.0, record.encode().as_slice())?;
    Ok(())
}

fn move_lease(
    table: &mut redb::Table<(u64, [u8; 32]), ()>,
    id: &ShardId,
    old: u64,
    new: u64,
) -> Result<(), redb::Error> {
    table.remove(&(old, id.0))?;
    table.insert(&(new, id.0), ())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every op, on a shard absent, stored or quarantined: `wrote_intent`
    /// says exactly what `apply` did to the intents table.
    #[test]
    fn wrote_intent_matches_what_apply_writes() {
        let index = Index::open(
            IndexBackend(Box::new(redb::backends::InMemoryBackend::new())),
            1 << 20,
        )
        .unwrap();
        let record = |lease_expires| ShardRecord {
            len: 10,
            owner: OwnerId([3; 32]),
            lease_expires,
            state: ShardState::Stored,
        };
        let ops = |id| {
            [
                IndexOp::Insert(id, record(100)),
                IndexOp::Insert(id, record(200)),
                IndexOp::RenewLease(id, 50),
                IndexOp::RenewLease(id, 300),
                IndexOp::Quarantine(id),
                IndexOp::Quarantine(id),
                IndexOp::Remove(id),
                IndexOp::Remove(id),
                IndexOp::RenewLease(id, 400),
                IndexOp::Quarantine(id),
            ]
        };
        let mut seen_with_intent = 0;
        for n in 0..ops(ShardId([0; 32])).len() {
            // The state op n meets: the ops before it, on a shard of its own.
            let id = ShardId([n as u8 + 1; 32]);
            let all = ops(id);
            index.apply(&[], &all[..n]).unwrap();
            let earlier: Vec<ShardId> = index.intents().unwrap().iter().map(|(i, _)| *i).collect();
            index.apply(&earlier, &[]).unwrap();
            let op = &all[n];
            let (outcomes, _) = index.apply(&[], std::slice::from_ref(op)).unwrap();
            let written = index.intents().unwrap().iter().any(|(i, _)| *i == id);
            assert_eq!(
                op.wrote_intent(&outcomes[0]),
                written,
                "{op:?} → {:?}",
                outcomes[0]
            );
            seen_with_intent += usize::from(written);
        }
        assert!(
            seen_with_intent >= 3,
            "puts, quarantines and removes write intents"
        );
    }
}

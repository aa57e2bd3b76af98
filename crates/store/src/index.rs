//! One disk's index: what shards the disk holds, their leases, the space
//! counters, and the intents of writes in flight — all in one `redb` file on
//! the same disk, so the disk is self-describing and moves with its index.
//!
//! Layout (all integers little-endian):
//! - `shards`: shard id → record `[version=2][len u64][state u8][claims u8]`
//!   then per claim `[owner 32 B][lease_expires u64]` (at most
//!   [`MAX_CLAIMS`]); version 1, `[1][len u64][owner 32 B][lease_expires
//!   u64][state u8]`, is still read, as one claim
//! - `leases`: (earliest claim's lease_expires, shard id) → (), so expired
//!   claims are found by a range scan rather than a walk
//! - `owner_shards`: (owner, shard id) → shard length, one row per claim, so
//!   an owner's shards are found (to evict them) without a walk
//! - `owner_usage`: owner → (bytes, shards) of its claims, kept in the same
//!   transaction as every change (an owner's use is read on every put)
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

const OWNER_SHARDS: TableDefinition<([u8; 32], [u8; 32]), u64> =
    TableDefinition::new("owner_shards");
const OWNER_USAGE: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("owner_usage");

const RECORD_V1: u8 = 1;
const RECORD_V1_LEN: usize = 1 + 8 + 32 + 8 + 1;
const RECORD_VERSION: u8 = 2;
const RECORD_HEAD: usize = 1 + 8 + 1 + 1;
const CLAIM_LEN: usize = 32 + 8;

/// Most owners that may hold a claim on one shard. Owners' keys differ, so
/// their encrypted shards differ; two owners storing the same bytes is rare,
/// and a shard whose claims are all taken is refused to a further owner
/// (who places it on another node), never taken from the ones holding it.
pub const MAX_CLAIMS: usize = 4;

/// One owner's hold on a shard: it keeps the shard until its lease ends or
/// it deletes its claim, and only its own signature can delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The owner's public key.
    pub owner: OwnerId,
    /// Unix time (seconds) after which this claim may be collected unless renewed.
    pub lease_expires: u64,
}

/// The claims on one shard, at most [`MAX_CLAIMS`], in the order they came.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    count: u8,
    items: [Claim; MAX_CLAIMS],
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Claims {
    /// One owner's claim alone.
    pub fn one(owner: OwnerId, lease_expires: u64) -> Self {
        let claim = Claim {
            owner,
            lease_expires,
        };
        Self {
            count: 1,
            items: [claim; MAX_CLAIMS],
        }
    }

    /// The claims.
    pub fn iter(&self) -> impl Iterator<Item = &Claim> {
        self.items[..usize::from(self.count)].iter()
    }

    /// How many owners claim the shard.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether no owner claims it (never true of a stored record).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `owner`'s claim, if it has one.
    pub fn of(&self, owner: &OwnerId) -> Option<Claim> {
        self.iter().find(|c| c.owner == *owner).copied()
    }

    /// The earliest lease: when something next expires.
    pub fn first_expiry(&self) -> u64 {
        self.iter().map(|c| c.lease_expires).min().unwrap_or(0)
    }

    /// The latest lease: how long the shard is kept if nothing changes.
    pub fn last_expiry(&self) -> u64 {
        self.iter().map(|c| c.lease_expires).max().unwrap_or(0)
    }

    /// These claims with `claim` added, or its owner's lease moved later;
    /// `None` if a new owner finds every slot taken.
    pub fn with(&self, claim: Claim) -> Option<Self> {
        let mut out = *self;
        let n = usize::from(out.count);
        if let Some(held) = out.items[..n].iter_mut().find(|c| c.owner == claim.owner) {
            held.lease_expires = held.lease_expires.max(claim.lease_expires);
            return Some(out);
        }
        if n == MAX_CLAIMS {
            return None;
        }
        out.items[n] = claim;
        out.count += 1;
        Some(out)
    }

    /// These claims, keeping those `keep` picks.
    fn retain(&self, mut keep: impl FnMut(&Claim) -> bool) -> Self {
        let mut out = *self;
        out.count = 0;
        for claim in self.iter() {
            if keep(claim) {
                out.items[usize::from(out.count)] = *claim;
                out.count += 1;
            }
        }
        out
    }

    /// Every claim's lease moved to at least `expires`.
    fn extended_to(&self, expires: u64) -> Self {
        let mut out = *self;
        for claim in out.items[..usize::from(out.count)].iter_mut() {
            claim.lease_expires = claim.lease_expires.max(expires);
        }
        out
    }
}

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
    /// The owners that keep it, each with its lease.
    pub claims: Claims,
    /// Whether it may be served.
    pub state: ShardState,
}

impl ShardRecord {
    /// A freshly stored shard with one owner's claim.
    pub fn stored(len: u64, owner: OwnerId, lease_expires: u64) -> Self {
        Self {
            len,
            claims: Claims::one(owner, lease_expires),
            state: ShardState::Stored,
        }
    }

    /// Unix time until which the shard is kept if nothing changes (its
    /// latest claim's lease).
    pub fn lease_expires(&self) -> u64 {
        self.claims.last_expiry()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEAD + self.claims.len() * CLAIM_LEN);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.len.to_le_bytes());
        out.push(match self.state {
            ShardState::Stored => 0,
            ShardState::Quarantined => 1,
        });
        out.push(self.claims.count);
        for claim in self.claims.iter() {
            out.extend_from_slice(&claim.owner.0);
            out.extend_from_slice(&claim.lease_expires.to_le_bytes());
        }
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
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let owner_at = |at: usize| {
            let mut owner = [0u8; 32];
            owner.copy_from_slice(&bytes[at..at + 32]);
            OwnerId(owner)
        };
        let state = |code: u8| match code {
            0 => Ok(ShardState::Stored),
            1 => Ok(ShardState::Quarantined),
            _ => Err(damaged()),
        };
        match bytes.first() {
            Some(&RECORD_V1) if bytes.len() == RECORD_V1_LEN => Ok(Self {
                len: u64_at(1),
                claims: Claims::one(owner_at(9), u64_at(41)),
                state: state(bytes[49])?,
            }),
            Some(&RECORD_VERSION) if bytes.len() >= RECORD_HEAD => {
                let count = usize::from(bytes[10]);
                if count == 0
                    || count > MAX_CLAIMS
                    || bytes.len() != RECORD_HEAD + count * CLAIM_LEN
                {
                    return Err(damaged());
                }
                let mut claims = Claims::one(owner_at(RECORD_HEAD), u64_at(RECORD_HEAD + 32));
                for i in 1..count {
                    let at = RECORD_HEAD + i * CLAIM_LEN;
                    claims = claims
                        .with(Claim {
                            owner: owner_at(at),
                            lease_expires: u64_at(at + 32),
                        })
                        .ok_or_else(damaged)?;
                }
                if claims.len() != count {
                    // The same owner twice: not a record this code wrote.
                    return Err(damaged());
                }
                Ok(Self {
                    len: u64_at(1),
                    claims,
                    state: state(bytes[9])?,
                })
            }
            _ => Err(damaged()),
        }
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
    /// Record a newly written shard (with a put intent), or add the
    /// record's claim to a shard already stored.
    Insert(ShardId, ShardRecord),
    /// Forget a shard and every claim on it (with a delete intent).
    Remove(ShardId),
    /// Drop one owner's claim; the last claim's going forgets the shard
    /// (with a delete intent).
    Release(ShardId, OwnerId),
    /// Drop the claims whose lease ended at or before the given time; the
    /// last one's going forgets the shard (with a delete intent).
    Expire(ShardId, u64),
    /// Mark a shard quarantined (with a quarantine intent).
    Quarantine(ShardId),
    /// Move every claim's lease expiry to at least this time.
    RenewLease(ShardId, u64),
}

impl IndexOp {
    /// The shard it changes.
    pub fn shard(&self) -> ShardId {
        match *self {
            IndexOp::Insert(id, _)
            | IndexOp::Remove(id)
            | IndexOp::Release(id, _)
            | IndexOp::Expire(id, _)
            | IndexOp::Quarantine(id)
            | IndexOp::RenewLease(id, _) => id,
        }
    }

    /// Whether [`Index::apply`], finding `outcome`, wrote an intent for
    /// this op's shard: kept beside `apply` so the two cannot drift apart.
    pub fn wrote_intent(&self, outcome: &OpOutcome) -> bool {
        !matches!(self, IndexOp::RenewLease(..)) && matches!(outcome, OpOutcome::Applied(_))
    }
}

/// What an [`IndexOp`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// The change was made (for a release or an expiry: the shard is
    /// gone); the record as it was before, if there was one.
    Applied(Option<ShardRecord>),
    /// A claim went or came, and the shard stays; the record as it was before.
    Claimed(ShardRecord),
    /// Nothing to do: the shard is already stored with this claim, already
    /// quarantined, or holds no such claim.
    Unchanged,
    /// A new owner's claim found every slot taken: the shard is kept for
    /// the owners that hold it, and not for this one.
    ClaimsFull,
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
        let index = Self { db };
        index.upgrade()?;
        Ok(index)
    }

    /// Fills the owner tables of an index written before claims were
    /// counted per owner (record version 1): one pass over the records, once,
    /// marked done in the counters table.
    fn upgrade(&self) -> Result<(), redb::Error> {
        const DONE: &str = "owner_tables";
        {
            let txn = self.db.begin_read()?;
            if txn.open_table(COUNTERS)?.get(DONE)?.is_some() {
                return Ok(());
            }
        }
        let txn = self.db.begin_write()?;
        {
            let mut tables = Tables {
                shards: txn.open_table(SHARDS)?,
                leases: txn.open_table(LEASES)?,
                intents: txn.open_table(INTENTS)?,
                owner_shards: txn.open_table(OWNER_SHARDS)?,
                owner_usage: txn.open_table(OWNER_USAGE)?,
            };
            let mut records = Vec::new();
            for entry in tables.shards.iter()? {
                let (id, record) = entry?;
                records.push((ShardId(id.value()), ShardRecord::decode(record.value())?));
            }
            for (id, record) in &records {
                for claim in record.claims.iter() {
                    tables.account(&claim.owner, id, record.len, true)?;
                }
            }
            txn.open_table(COUNTERS)?.insert(DONE, 1)?;
        }
        txn.commit()?;
        Ok(())
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
            let mut tables = Tables {
                shards: txn.open_table(SHARDS)?,
                leases: txn.open_table(LEASES)?,
                intents: txn.open_table(INTENTS)?,
                owner_shards: txn.open_table(OWNER_SHARDS)?,
                owner_usage: txn.open_table(OWNER_USAGE)?,
            };
            for id in finished {
                tables.intents.remove(&id.0)?;
            }
            for op in ops {
                let outcome = match *op {
                    IndexOp::Insert(id, record) => {
                        let old = get_record(&tables.shards, &id)?;
                        let claim = *record
                            .claims
                            .iter()
                            .next()
                            .expect("a put carries its claim");
                        match old {
                            Some(old) if old.state == ShardState::Stored => {
                                match old.claims.with(claim) {
                                    None => OpOutcome::ClaimsFull,
                                    Some(claims) if claims == old.claims => OpOutcome::Unchanged,
                                    Some(claims) => {
                                        tables.rewrite(&id, &old, ShardRecord { claims, ..old })?;
                                        OpOutcome::Claimed(old)
                                    }
                                }
                            }
                            _ => {
                                // A verified copy replaces a quarantined one,
                                // and keeps the claims it had.
                                let claims = match old {
                                    Some(old) => old.claims.with(claim).unwrap_or(old.claims),
                                    None => record.claims,
                                };
                                if let Some(old) = old {
                                    counters.sub(old.state, old.len);
                                    tables.forget(&id, &old)?;
                                }
                                let record = ShardRecord {
                                    claims,
                                    state: ShardState::Stored,
                                    ..record
                                };
                                counters.add(ShardState::Stored, record.len);
                                tables.record(&id, &record)?;
                                tables.intents.insert(&id.0, Intent::Put.code())?;
                                OpOutcome::Applied(old)
                            }
                        }
                    }
                    IndexOp::Remove(id) => match get_record(&tables.shards, &id)? {
                        None => OpOutcome::Absent,
                        Some(old) => {
                            counters.sub(old.state, old.len);
                            tables.remove(&id, &old)?;
                            OpOutcome::Applied(Some(old))
                        }
                    },
                    IndexOp::Release(id, owner) => match get_record(&tables.shards, &id)? {
                        None => OpOutcome::Absent,
                        Some(old) if old.claims.of(&owner).is_none() => OpOutcome::Unchanged,
                        Some(old) => {
                            let claims = old.claims.retain(|c| c.owner != owner);
                            tables.drop_claims(&mut counters, &id, old, claims)?
                        }
                    },
                    IndexOp::Expire(id, now) => match get_record(&tables.shards, &id)? {
                        None => OpOutcome::Absent,
                        Some(old) => {
                            let claims = old.claims.retain(|c| c.lease_expires > now);
                            if claims == old.claims {
                                OpOutcome::Unchanged
                            } else {
                                tables.drop_claims(&mut counters, &id, old, claims)?
                            }
                        }
                    },
                    IndexOp::Quarantine(id) => match get_record(&tables.shards, &id)? {
                        None => OpOutcome::Absent,
                        Some(old) if old.state == ShardState::Quarantined => OpOutcome::Unchanged,
                        Some(old) => {
                            counters.sub(old.state, old.len);
                            counters.add(ShardState::Quarantined, old.len);
                            put_record(
                                &mut tables.shards,
                                &id,
                                &ShardRecord {
                                    state: ShardState::Quarantined,
                                    ..old
                                },
                            )?;
                            tables.intents.insert(&id.0, Intent::Quarantine.code())?;
                            OpOutcome::Applied(Some(old))
                        }
                    },
                    IndexOp::RenewLease(id, expires) => match get_record(&tables.shards, &id)? {
                        None => OpOutcome::Absent,
                        Some(old) => {
                            // Leases only grow: any peer may renew, and a
                            // shorter lease from one would let holders drop
                            // live data.
                            let claims = old.claims.extended_to(expires);
                            if claims != old.claims {
                                tables.rewrite(&id, &old, ShardRecord { claims, ..old })?;
                            }
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

    /// What `owner`'s claims on this disk add up to: (bytes, shards).
    pub fn owner_usage(&self, owner: &OwnerId) -> Result<(u64, u64), redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OWNER_USAGE)?;
        Ok(table.get(&owner.0)?.map(|v| v.value()).unwrap_or((0, 0)))
    }

    /// Every owner with a claim on this disk and its (bytes, shards), in
    /// owner order, up to `limit` owners.
    pub fn usage(&self, limit: usize) -> Result<Vec<(OwnerId, u64, u64)>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OWNER_USAGE)?;
        let mut out = Vec::new();
        for entry in table.iter()?.take(limit) {
            let (owner, value) = entry?;
            let (bytes, shards) = value.value();
            out.push((OwnerId(owner.value()), bytes, shards));
        }
        Ok(out)
    }

    /// Up to `limit` shards `owner` claims on this disk, in id order.
    pub fn owner_shards(&self, owner: &OwnerId, limit: usize) -> Result<Vec<ShardId>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OWNER_SHARDS)?;
        let mut out = Vec::new();
        for entry in table
            .range((owner.0, [0u8; 32])..=(owner.0, [0xff; 32]))?
            .take(limit)
        {
            out.push(ShardId(entry?.0.value().1));
        }
        Ok(out)
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

/// The tables one commit changes, and the bookkeeping every record change
/// needs: the lease queue keyed by the earliest claim, and each owner's rows
/// and usage.
struct Tables<'txn> {
    shards: redb::Table<'txn, [u8; 32], &'static [u8]>,
    leases: redb::Table<'txn, (u64, [u8; 32]), ()>,
    intents: redb::Table<'txn, [u8; 32], u8>,
    owner_shards: redb::Table<'txn, ([u8; 32], [u8; 32]), u64>,
    owner_usage: redb::Table<'txn, [u8; 32], (u64, u64)>,
}

impl Tables<'_> {
    /// Writes a new record with its lease entry and its owners' rows.
    fn record(&mut self, id: &ShardId, record: &ShardRecord) -> Result<(), redb::Error> {
        put_record(&mut self.shards, id, record)?;
        self.leases
            .insert(&(record.claims.first_expiry(), id.0), ())?;
        for claim in record.claims.iter() {
            self.account(&claim.owner, id, record.len, true)?;
        }
        Ok(())
    }

    /// Takes away an existing record's lease entry and owners' rows (the
    /// record itself is overwritten or removed by the caller).
    fn forget(&mut self, id: &ShardId, old: &ShardRecord) -> Result<(), redb::Error> {
        self.leases.remove(&(old.claims.first_expiry(), id.0))?;
        for claim in old.claims.iter() {
            self.account(&claim.owner, id, old.len, false)?;
        }
        Ok(())
    }

    fn rewrite(
        &mut self,
        id: &ShardId,
        old: &ShardRecord,
        new: ShardRecord,
    ) -> Result<(), redb::Error> {
        self.forget(id, old)?;
        self.record(id, &new)
    }

    fn remove(&mut self, id: &ShardId, old: &ShardRecord) -> Result<(), redb::Error> {
        self.forget(id, old)?;
        self.shards.remove(&id.0)?;
        self.intents.insert(&id.0, Intent::Delete.code())?;
        Ok(())
    }

    /// Leaves `claims` on the shard, or forgets it when none is left.
    fn drop_claims(
        &mut self,
        counters: &mut Counters,
        id: &ShardId,
        old: ShardRecord,
        claims: Claims,
    ) -> Result<OpOutcome, redb::Error> {
        if claims.is_empty() {
            counters.sub(old.state, old.len);
            self.remove(id, &old)?;
            Ok(OpOutcome::Applied(Some(old)))
        } else {
            self.rewrite(id, &old, ShardRecord { claims, ..old })?;
            Ok(OpOutcome::Claimed(old))
        }
    }

    fn account(
        &mut self,
        owner: &OwnerId,
        id: &ShardId,
        len: u64,
        add: bool,
    ) -> Result<(), redb::Error> {
        let (bytes, shards) = self
            .owner_usage
            .get(&owner.0)?
            .map(|v| v.value())
            .unwrap_or((0, 0));
        let (bytes, shards) = if add {
            self.owner_shards.insert(&(owner.0, id.0), len)?;
            (bytes + len, shards + 1)
        } else {
            self.owner_shards.remove(&(owner.0, id.0))?;
            (bytes.saturating_sub(len), shards.saturating_sub(1))
        };
        if shards == 0 {
            self.owner_usage.remove(&owner.0)?;
        } else {
            self.owner_usage.insert(&owner.0, (bytes, shards))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_index() -> Index {
        Index::open(
            IndexBackend(Box::new(redb::backends::InMemoryBackend::new())),
            1 << 20,
        )
        .unwrap()
    }

    /// Two owners hold one shard: each claim is counted to its owner,
    /// releasing or expiring one leaves the other's, and the last one's
    /// going removes the shard and every row it had.
    #[test]
    fn claims_are_kept_counted_and_released_per_owner() {
        let index = memory_index();
        let (alice, mallory) = (OwnerId([1; 32]), OwnerId([2; 32]));
        let id = ShardId([7; 32]);
        let apply = |op| index.apply(&[], &[op]).unwrap().0[0];
        assert!(matches!(
            apply(IndexOp::Insert(id, ShardRecord::stored(100, mallory, 50))),
            OpOutcome::Applied(None)
        ));
        assert!(matches!(
            apply(IndexOp::Insert(id, ShardRecord::stored(100, alice, 900))),
            OpOutcome::Claimed(_)
        ));
        assert_eq!(index.owner_usage(&alice).unwrap(), (100, 1));
        assert_eq!(index.owner_usage(&mallory).unwrap(), (100, 1));
        // Mallory's delete takes only Mallory's claim.
        assert!(matches!(
            apply(IndexOp::Release(id, mallory)),
            OpOutcome::Claimed(_)
        ));
        let record = index.get(&id).unwrap().unwrap();
        assert_eq!(record.claims.len(), 1);
        assert_eq!(record.claims.of(&alice).unwrap().lease_expires, 900);
        assert_eq!(index.owner_usage(&mallory).unwrap(), (0, 0));
        assert_eq!(index.owner_shards(&mallory, 10).unwrap(), vec![]);
        // The lease queue follows the earliest claim.
        assert!(matches!(
            apply(IndexOp::Insert(id, ShardRecord::stored(100, mallory, 50))),
            OpOutcome::Claimed(_)
        ));
        assert_eq!(index.expired(60, 10).unwrap(), vec![id]);
        assert!(matches!(
            apply(IndexOp::Expire(id, 60)),
            OpOutcome::Claimed(_)
        ));
        assert_eq!(index.expired(60, 10).unwrap(), vec![]);
        assert_eq!(index.expired(900, 10).unwrap(), vec![id]);
        // Full: a fifth owner is refused, the four keep theirs.
        for n in 3..6 {
            apply(IndexOp::Insert(
                id,
                ShardRecord::stored(100, OwnerId([n; 32]), 900),
            ));
        }
        assert_eq!(
            apply(IndexOp::Insert(
                id,
                ShardRecord::stored(100, OwnerId([9; 32]), 900)
            )),
            OpOutcome::ClaimsFull
        );
        for n in [1, 3, 4] {
            apply(IndexOp::Release(id, OwnerId([n; 32])));
        }
        assert!(matches!(
            apply(IndexOp::Release(id, OwnerId([5; 32]))),
            OpOutcome::Applied(Some(_))
        ));
        assert_eq!(index.get(&id).unwrap(), None);
        assert_eq!(index.usage(10).unwrap(), vec![]);
        assert_eq!(index.expired(u64::MAX, 10).unwrap(), vec![]);
        assert_eq!(index.counters().unwrap(), Counters::default());
    }

    /// A version-1 record reads as its one owner's claim.
    #[test]
    fn a_version_1_record_reads_as_one_claim() {
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&4096u64.to_le_bytes());
        v1.extend_from_slice(&[5; 32]);
        v1.extend_from_slice(&77u64.to_le_bytes());
        v1.push(1);
        let record = ShardRecord::decode(&v1).unwrap();
        assert_eq!(record.len, 4096);
        assert_eq!(record.state, ShardState::Quarantined);
        assert_eq!(
            record.claims.of(&OwnerId([5; 32])).unwrap().lease_expires,
            77
        );
        assert_eq!(ShardRecord::decode(&record.encode()).unwrap(), record);
        let mut damaged = record.encode();
        damaged[10] = 0;
        assert!(ShardRecord::decode(&damaged).is_err());
    }

    /// An index written before owner rows existed gets them once, at open.
    #[test]
    fn an_index_of_version_1_records_is_upgraded_with_owner_rows() {
        let index = memory_index();
        let txn = index.db.begin_write().unwrap();
        {
            let mut shards = txn.open_table(SHARDS).unwrap();
            for n in 0..3u8 {
                let mut v1 = vec![1u8];
                v1.extend_from_slice(&(1000u64 * u64::from(n + 1)).to_le_bytes());
                v1.extend_from_slice(&[5; 32]);
                v1.extend_from_slice(&77u64.to_le_bytes());
                v1.push(0);
                shards.insert(&[n; 32], v1.as_slice()).unwrap();
            }
            txn.open_table(COUNTERS)
                .unwrap()
                .remove("owner_tables")
                .unwrap();
        }
        txn.commit().unwrap();
        index.upgrade().unwrap();
        assert_eq!(index.owner_usage(&OwnerId([5; 32])).unwrap(), (6000, 3));
        assert_eq!(index.owner_shards(&OwnerId([5; 32]), 10).unwrap().len(), 3);
        // Once only: a second pass would count them twice.
        index.upgrade().unwrap();
        assert_eq!(index.owner_usage(&OwnerId([5; 32])).unwrap(), (6000, 3));
    }

    /// Every op, on a shard absent, stored or quarantined: `wrote_intent`
    /// says exactly what `apply` did to the intents table.
    #[test]
    fn wrote_intent_matches_what_apply_writes() {
        let index = memory_index();
        let record = |lease_expires| ShardRecord::stored(10, OwnerId([3; 32]), lease_expires);
        let other = ShardRecord::stored(10, OwnerId([4; 32]), 150);
        let ops = |id| {
            [
                IndexOp::Insert(id, record(100)),
                IndexOp::Insert(id, record(200)),
                IndexOp::Insert(id, other),
                IndexOp::Release(id, OwnerId([9; 32])),
                IndexOp::Expire(id, 160),
                IndexOp::Insert(id, other),
                IndexOp::Release(id, OwnerId([4; 32])),
                IndexOp::RenewLease(id, 50),
                IndexOp::RenewLease(id, 300),
                IndexOp::Quarantine(id),
                IndexOp::Quarantine(id),
                IndexOp::Remove(id),
                IndexOp::Remove(id),
                IndexOp::RenewLease(id, 400),
                IndexOp::Quarantine(id),
                IndexOp::Insert(id, record(500)),
                IndexOp::Expire(id, 600),
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

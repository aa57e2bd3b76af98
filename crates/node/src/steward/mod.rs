//! The steward: the owner's box keeps, for the owner's data, every shard's
//! id, segment and holder, and decides who to audit, which segments need
//! repair, which shards to move and which leases to renew. It never holds
//! a decryption key: repair rebuilds shards from any k others with
//! Reed–Solomon alone.
//!
//! The table lives in `redb` ([`table`], format written down in
//! `docs/STEWARD.md`) with the indexes the decisions need, so every event
//! commits only what it changed and every round does a bounded slice of
//! work whatever the table's size. The decisions are plain code, driven by
//! events (a holder came or went, an audit's outcome, a repair done) and a
//! given time (Unix seconds); a round returns tasks, and the daemon's
//! steward loop carries them out over the network. Tested with an
//! in-memory table, simulated holders and time over many seeds
//! (`tests/steward_sim.rs`).
//!
//! Rules:
//! - A shard is **healthy** when its holder is up and not marked bad, and
//!   the shard has not failed an audit nor been reported missing.
//! - A shard is **lost** when its holder has been down for the grace period
//!   (a box that reboots comes back well within it), when it failed an
//!   audit or its holder refused to read it (no grace), when its holder
//!   said it went with a failed disk (no grace, no blame) or with a disk
//!   that is offline past the grace, or when its holder is bad.
//! - A holder is **bad** after `bad_after` failures in a row, or when the
//!   steward's own requests went unanswered for the grace period while
//!   the swarm's gossip says it is up (silence is no way out of audits).
//!   A bad spell ends after `bad_for_s` (doubled for each earlier one);
//!   then the holder is on probation and trusted again after passing
//!   `probation_passes` audits, which come first in the audit queue.
//! - A segment is **repaired** when its healthy shards fall below
//!   k + `repair_margin` and some are lost; reboots alone never trigger it.
//!   A repair reads k shards and rebuilds every lost shard of the segment
//!   at once; at the edge (only k healthy), it also rebuilds the shards of
//!   holders that are merely down, for the same k reads.
//! - Every shard at a usable holder is audited at least once per
//!   `audit_period_s`: audits go oldest first at the rate that period
//!   needs, with a per-holder cap per round.

mod group;
mod ids;
pub mod legacy;
mod plan;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

use cairn_client::segment::Coding;
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
pub use group::TrackGroup;
use ids::IdIndex;
use plan::{Holders, Plan};
use table::{
    AUDIT_QUEUE, FORMAT, HOLDER_SHARDS, HOLDERS, HolderRow, ID_PREFIXES, LEASE_QUEUE, META, OWNERS,
    REPAIR_PENDING, REPAIR_QUEUE, SEGMENT_IDS_V1, SEGMENTS, SegmentRow, SlotRow, SlotState,
};

/// The steward's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StewardPolicy {
    /// Seconds a holder (or one of its disks) may be away before its
    /// shards count as lost.
    pub grace_s: u64,
    /// Healthy shards kept above k; a segment with fewer is repaired.
    /// `m` (the default) repairs any lost shard.
    pub repair_margin: Option<u8>,
    /// Every shard at a usable holder is audited at least this often.
    pub audit_period_s: u64,
    /// Audits of one holder per round, at least this many may be handed
    /// out (more when the table's size needs it).
    pub audits_per_holder: usize,
    /// Every this many audits of a holder, one reads the whole shard
    /// instead of a proof, so a holder that proves but will not serve is
    /// found.
    pub read_audit_every: u64,
    /// Failures in a row that mark a holder bad.
    pub bad_after: u32,
    /// The first bad spell, seconds; each later one doubles.
    pub bad_for_s: u64,
    /// Audits (each a whole read) a holder passes after a bad spell before
    /// it is trusted.
    pub probation_passes: u32,
    /// Seconds a lease is granted for.
    pub lease_s: u64,
    /// Leases are renewed when they end within this many seconds.
    pub renew_before_s: u64,
    /// Segments one owner may have tracked here.
    pub max_segments_per_owner: u64,
    /// Owners this steward keeps tables for.
    pub max_owners: u64,
    /// Repairs and moves handed out and not yet reported back, at most.
    pub repairs_in_flight: usize,
    /// Holder-index entries a round looks at for holders lost, bad,
    /// draining or reporting missing shards.
    pub sweep_per_round: usize,
    /// Segments whose leases one round renews, at most.
    pub renewals_per_round: usize,
    /// Segments one round audits, at most.
    pub audits_per_round: usize,
}

impl Default for StewardPolicy {
    fn default() -> Self {
        Self {
            grace_s: 30 * 60,
            repair_margin: None,
            audit_period_s: 30 * 24 * 3600,
            audits_per_holder: 4,
            read_audit_every: 16,
            bad_after: 3,
            bad_for_s: 7 * 24 * 3600,
            probation_passes: 8,
            lease_s: 90 * 24 * 3600,
            renew_before_s: 30 * 24 * 3600,
            max_segments_per_owner: 8_000_000,
            max_owners: 64,
            repairs_in_flight: 96,
            sweep_per_round: 8192,
            renewals_per_round: 2048,
            audits_per_round: 512,
        }
    }
}

/// Why the steward table cannot do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StewardError {
    /// The table's file could not be read or written.
    #[error("the steward table {path}: {source}; check the state directory's disk")]
    Table {
        /// The file (`memory` for a table kept in memory).
        path: PathBuf,
        /// The cause.
        source: std::sync::Arc<redb::Error>,
    },
    /// A row in the table is not one this program wrote.
    #[error(
        "the steward table {path} is damaged ({reason}); move it aside to start an empty table (the owner's client hands its segments over again on its next put)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The table was written by a newer (or unknown) version of cairnd.
    #[error(
        "the steward table {path} has format {found}; this cairnd reads format {FORMAT}: run the cairnd that wrote it, or move the file aside to start an empty table"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u64,
    },
    /// An owner asked to track more segments than this steward keeps for one owner.
    #[error(
        "this steward keeps at most {limit} segments per owner and owner {owner} would have {would}; prune old snapshots (`cairn forget --prune`) or name a second steward"
    )]
    OwnerFull {
        /// The owner.
        owner: String,
        /// What it would have.
        would: u64,
        /// The limit.
        limit: u64,
    },
    /// A new owner asked, and this steward keeps tables for as many owners as it may.
    #[error(
        "this steward keeps tables for {limit} owners already; ask its owner to raise [steward] max_owners or name another steward"
    )]
    TooManyOwners {
        /// The limit.
        limit: u64,
    },
    /// A segment handed over makes no sense.
    #[error("segment {index} of the request: {reason}")]
    BadSegment {
        /// Its position in the request.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// How a repair or move handed out by a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairEnd {
    /// Done: each rebuilt or moved shard (by index) and its new holder.
    Done {
        /// The segment.
        segment: SegmentId,
        /// (shard index, new holder).
        moved: Vec<(usize, NodeId)>,
    },
    /// Not finished; it is handed out again.
    Failed {
        /// The segment.
        segment: SegmentId,
        /// Sources that answered a read with an error or not at all
        /// while connected: their shards count as lost there.
        refused: Vec<(usize, NodeId)>,
        /// Sources that could not be dialled.
        unreachable: Vec<NodeId>,
    },
}

/// A segment as the owner's client reports it after storing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedSegment {
    /// Its coding.
    pub coding: Coding,
    /// Bytes per shard.
    pub shard_len: u64,
    /// Its k + m shards in index order, and their holders.
    pub shards: Vec<(ShardId, NodeId)>,
    /// Unix time its leases run to.
    pub lease_until: u64,
}

impl TrackedSegment {
    /// The segment's name: BLAKE3 over its shard ids in order.
    pub fn id(&self) -> SegmentId {
        segment_id(self.shards.iter().map(|(shard, _)| shard))
    }
}

fn segment_id<'a>(shards: impl Iterator<Item = &'a ShardId>) -> SegmentId {
    let mut hasher = blake3::Hasher::new();
    for shard in shards {
        hasher.update(&shard.0);
    }
    SegmentId(*hasher.finalize().as_bytes())
}

/// A segment's name in the steward table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub [u8; 32]);

/// How an audit (or a read asked of a holder) went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// The proof (or the bytes) checked out against the shard id.
    Passed,
    /// The holder answered without a valid proof or with an error other
    /// than "not found", or never answered while connected: counts
    /// against it.
    Failed,
    /// The holder said it has no such shard: lost there; it counts
    /// against the holder unless the holder reported it missing first.
    NotFound,
    /// No connection (the holder is down or unreachable from here): no
    /// accusation unless gossip says it is up, and then only after the
    /// grace.
    Unanswered,
}

/// Audit one shard at its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditTask {
    /// The segment.
    pub segment: SegmentId,
    /// The shard's index in the segment.
    pub index: u8,
    /// The shard.
    pub shard: ShardId,
    /// Its length (to draw challenge ranges).
    pub shard_len: u64,
    /// Who should hold it.
    pub holder: NodeId,
    /// Read the whole shard (checked against its id) instead of a proof.
    pub read: bool,
}

/// Rebuild a segment's lost shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairTask {
    /// The segment.
    pub segment: SegmentId,
    /// Whose.
    pub owner: OwnerId,
    /// Its coding.
    pub coding: Coding,
    /// Bytes per shard.
    pub shard_len: u64,
    /// Healthy shards to read k of, the preferred first: (index, id,
    /// holder). More than k when more are healthy, so a source that fails
    /// is replaced at once.
    pub sources: Vec<(usize, ShardId, NodeId)>,
    /// Shards to rebuild: (index, id).
    pub lost: Vec<(usize, ShardId)>,
    /// Holders of the segment's healthy shards: new holders must differ,
    /// and together they must pass the placement check.
    pub keep: Vec<(usize, NodeId)>,
    /// Nodes not to place on: bad, down or draining.
    pub avoid: Vec<NodeId>,
    /// The lease to give rebuilt shards.
    pub lease_until: u64,
}

/// Move one shard off a draining holder: read it there (one shard, not
/// k: the holder still has it), store it on a new node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    /// The segment.
    pub segment: SegmentId,
    /// Whose.
    pub owner: OwnerId,
    /// Its coding.
    pub coding: Coding,
    /// Bytes per shard.
    pub shard_len: u64,
    /// The shard's index and id.
    pub shard: (usize, ShardId),
    /// The draining holder.
    pub from: NodeId,
    /// Holders of the segment's other shards: the new holder must differ.
    pub keep: Vec<(usize, NodeId)>,
    /// Nodes not to place on: bad, down or draining.
    pub avoid: Vec<NodeId>,
    /// The lease to give the moved shard.
    pub lease_until: u64,
}

/// Leases to renew in one round, batched per holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewBatch {
    /// The new end.
    pub until: u64,
    /// Each holder and the shards to renew there.
    pub holders: Vec<(NodeId, Vec<ShardId>)>,
    /// The segments covered: (seq, [(holder number, shard)]).
    segments: Vec<(u64, Vec<(u32, ShardId)>)>,
}

impl RenewBatch {
    /// Whether there is nothing to renew.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// How one renewal at a holder went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The holder has it and moved its lease.
    Renewed,
    /// The holder said it has no such shard.
    NotFound,
    /// No answer.
    Unanswered,
}

/// What one round hands out.
#[derive(Debug, Default)]
pub struct Round {
    /// Audits to run.
    pub audits: Vec<AuditTask>,
    /// Repairs to run.
    pub repairs: Vec<RepairTask>,
    /// Moves off draining holders.
    pub moves: Vec<MoveTask>,
    /// Leases to renew.
    pub renewals: RenewBatch,
}

/// How one segment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redundancy {
    /// Healthy shards.
    pub healthy: usize,
    /// k + m.
    pub total: usize,
    /// k.
    pub needed: usize,
}

/// A holder's report of shards it no longer has: each shard and whether
/// it is gone for good (a failed disk) or offline since a time (a disk
/// unplugged, which may come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Gone with a failed disk.
    Gone,
    /// On a disk offline since then.
    Offline(u64),
    /// Its disk is back: served again.
    Back,
}

/// A key of the audit, lease or repair queue: (time, seq).
type QueueKey = (u64, u64);

/// How a holder failed to serve a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// An audit failed (no proof, an error, silence while connected).
    Proof,
    /// A read was refused (a whole-shard audit, or a repair's read).
    Read,
}

/// A report being matched against a holder's shards.
struct MissingReport {
    shards: HashMap<ShardId, Missing>,
    /// Where the holder's report was read to, kept once the sweep is done.
    read_to: u64,
}

/// The steward table and its decisions.
pub struct Steward {
    db: Database,
    path: PathBuf,
    policy: StewardPolicy,
    holders: Vec<HolderRow>,
    holder_numbers: HashMap<NodeId, u32>,
    /// Holders changed in memory since the last commit.
    dirty: HashSet<u32>,
    segments: u64,
    /// Repairs and moves handed out: seq.
    in_flight: HashSet<u64>,
    /// Failed repair attempts, per seq, to rotate sources (forgotten on success).
    attempts: HashMap<u64, u32>,
    /// Renewals handed out: seq.
    renewing: HashSet<u64>,
    missing: HashMap<u32, MissingReport>,
    /// Audits owed by the rate (fractional), and when the last round ran.
    audit_credit: f64,
    last_round: Option<u64>,
    audits_given: HashMap<u32, u64>,
    /// Segment id → seq (prefixes; rows confirm).
    ids: IdIndex,
    commits: std::cell::Cell<u64>,
}

/// Bytes of redb page cache: the table itself stays on disk.
const CACHE_BYTES: usize = 16 << 20;

impl Steward {
    /// Opens (or creates) the table at `path`.
    pub fn open(path: &Path, policy: StewardPolicy) -> Result<Self, StewardError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| table_error(path, e))?;
        Self::start(db, path.to_owned(), policy)
    }

    /// A table kept in memory (for tests and simulations).
    pub fn in_memory(policy: StewardPolicy) -> Self {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory table opens");
        Self::start(db, PathBuf::from("memory"), policy).expect("an empty table starts")
    }

    fn start(db: Database, path: PathBuf, policy: StewardPolicy) -> Result<Self, StewardError> {
        let mut steward = Self {
            db,
            path,
            policy,
            holders: Vec::new(),
            holder_numbers: HashMap::new(),
            dirty: HashSet::new(),
            segments: 0,
            in_flight: HashSet::new(),
            attempts: HashMap::new(),
            renewing: HashSet::new(),
            missing: HashMap::new(),
            audit_credit: 0.0,
            last_round: None,
            audits_given: HashMap::new(),
            ids: IdIndex::default(),
            commits: std::cell::Cell::new(0),
        };
        let txn = steward.begin()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| steward.err(e))?;
            let format = meta
                .get("format")
                .map_err(|e| steward.err(e))?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT).map_err(|e| steward.err(e))?;
                }
                Some(1) => {
                    steward.migrate_v1(&txn)?;
                    meta.insert("format", FORMAT).map_err(|e| steward.err(e))?;
                }
                Some(FORMAT) => {}
                Some(found) => {
                    return Err(StewardError::Format {
                        path: steward.path.clone(),
                        found,
                    });
                }
            }
            steward.segments = meta
                .get("segments")
                .map_err(|e| steward.err(e))?
                .map_or(0, |v| v.value());
            let holders = txn.open_table(HOLDERS).map_err(|e| steward.err(e))?;
            for entry in holders.iter().map_err(|e| steward.err(e))? {
                let (number, row) = entry.map_err(|e| steward.err(e))?;
                let row: HolderRow =
                    postcard::from_bytes(row.value()).map_err(|e| StewardError::Damaged {
                        path: steward.path.clone(),
                        reason: format!("holder {}: {e}", number.value()),
                    })?;
                if number.value() as usize != steward.holders.len() {
                    return Err(StewardError::Damaged {
                        path: steward.path.clone(),
                        reason: format!("holder numbers skip to {}", number.value()),
                    });
                }
                steward.holder_numbers.insert(row.node, number.value());
                steward.holders.push(row);
            }
            // Create the other tables, so readers find them.
            txn.open_table(SEGMENTS).map_err(|e| steward.err(e))?;
            txn.open_table(HOLDER_SHARDS).map_err(|e| steward.err(e))?;
            let prefixes = txn.open_table(ID_PREFIXES).map_err(|e| steward.err(e))?;
            let mut entries = Vec::with_capacity(steward.segments as usize);
            for entry in prefixes.iter().map_err(|e| steward.err(e))? {
                let (seq, prefix) = entry.map_err(|e| steward.err(e))?;
                entries.push((prefix.value(), seq.value()));
            }
            steward.ids = IdIndex::from_entries(entries);
            if steward.ids.len() as u64 != steward.segments {
                // The rows are the truth; a count that drifted from them
                // is put right rather than keeping the steward down.
                tracing::warn!(
                    "steward table {}: {} segments counted but {} tracked; counting {}",
                    steward.path.display(),
                    steward.segments,
                    steward.ids.len(),
                    steward.ids.len()
                );
                steward.segments = steward.ids.len() as u64;
                meta.insert("segments", steward.segments)
                    .map_err(|e| steward.err(e))?;
            }
            txn.open_table(OWNERS).map_err(|e| steward.err(e))?;
        }
        steward.commit(txn)?;
        Ok(steward)
    }

    /// The policy.
    pub fn policy(&self) -> &StewardPolicy {
        &self.policy
    }

    /// Segments tracked, for every owner.
    pub fn len(&self) -> u64 {
        self.segments
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Segments tracked for `owner`.
    pub fn count(&self, owner: &OwnerId) -> Result<u64, StewardError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let owners = txn.open_table(OWNERS).map_err(|e| self.err(e))?;
        Ok(owners
            .get(owner.0)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value()))
    }

    /// Starts (or keeps) tracking segments `owner` stored, in one
    /// transaction: all or none. A segment already tracked keeps its known
    /// holders (the client's view may be older than a repair) and takes
    /// the later lease. Returns how many segments the owner has now.
    pub fn track(
        &mut self,
        owner: &OwnerId,
        segments: &[TrackedSegment],
        now: u64,
    ) -> Result<u64, StewardError> {
        self.track_many(&[(*owner, segments)], now)?
            .pop()
            .unwrap_or(Ok(0))
    }

    /// Several owners' Track requests in one durable commit (a group
    /// commit: the commit's fixed cost is shared). Each request is taken
    /// whole or refused whole, alone: one owner's refusal never touches
    /// another's. The outer error is the table's; the inner ones are each
    /// request's answer (how many segments its owner has now, or why not).
    pub fn track_many<S: AsRef<[TrackedSegment]>>(
        &mut self,
        requests: &[(OwnerId, S)],
        now: u64,
    ) -> Result<Vec<Result<u64, StewardError>>, StewardError> {
        let max_lease = now.saturating_add(2 * self.policy.lease_s);
        let mut results = Vec::with_capacity(requests.len());
        // Segments added by this transaction, indexed once it commits.
        let mut added: HashMap<[u8; 32], u64> = HashMap::new();
        let txn = self.begin()?;
        {
            let mut owners = txn.open_table(OWNERS).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut next_seq = meta
                .get("next_seq")
                .map_err(|e| self.err(e))?
                .map_or(0, |v| v.value());
            let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
            let mut prefixes = txn.open_table(ID_PREFIXES).map_err(|e| self.err(e))?;
            let mut index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
            let mut audits = txn.open_table(AUDIT_QUEUE).map_err(|e| self.err(e))?;
            let mut leases = txn.open_table(LEASE_QUEUE).map_err(|e| self.err(e))?;
            let mut owner_count = owners.len().map_err(|e| self.err(e))?;
            for (owner, segments) in requests {
                let segments = segments.as_ref();
                if let Err(refused) = self.check_segments(segments, max_lease) {
                    results.push(Err(refused));
                    continue;
                }
                let had = owners
                    .get(owner.0)
                    .map_err(|e| self.err(e))?
                    .map(|v| v.value());
                if had.is_none() && owner_count >= self.policy.max_owners {
                    results.push(Err(StewardError::TooManyOwners {
                        limit: self.policy.max_owners,
                    }));
                    continue;
                }
                // Which segments are new, before anything is written: a
                // request over its owner's cap is refused whole.
                let ids: Vec<[u8; 32]> = segments.iter().map(|s| s.id().0).collect();
                let mut known = Vec::with_capacity(ids.len());
                let mut new = HashSet::new();
                for id in &ids {
                    let seq = match added.get(id) {
                        Some(&seq) => Some(seq),
                        None => self.find_in(&rows, id)?.map(|(seq, _)| seq),
                    };
                    if seq.is_none() {
                        new.insert(*id);
                    }
                    known.push(seq);
                }
                let count = had.unwrap_or(0) + new.len() as u64;
                if count > self.policy.max_segments_per_owner {
                    results.push(Err(StewardError::OwnerFull {
                        owner: owner.to_hex(),
                        would: count,
                        limit: self.policy.max_segments_per_owner,
                    }));
                    continue;
                }
                for ((segment, id), known) in segments.iter().zip(&ids).zip(known) {
                    if let Some(seq) = known.or_else(|| added.get(id).copied()) {
                        let mut row = self.row_in(&rows, seq)?;
                        // Another owner's segment of the same bytes is left
                        // alone, and this owner's steward keeps nothing for it.
                        if row.owner == *owner && segment.lease_until > row.lease_until {
                            leases
                                .remove((row.lease_until, seq))
                                .map_err(|e| self.err(e))?;
                            row.lease_until = segment.lease_until;
                            leases
                                .insert((row.lease_until, seq), ())
                                .map_err(|e| self.err(e))?;
                            rows.insert(seq, row.encode().as_slice())
                                .map_err(|e| self.err(e))?;
                        }
                        continue;
                    }
                    let seq = next_seq;
                    next_seq += 1;
                    let mut slots = Vec::with_capacity(segment.shards.len());
                    let mut probation = false;
                    for (i, (shard, node)) in segment.shards.iter().enumerate() {
                        let holder = self.holder_number(*node);
                        probation |= self.holders[holder as usize].probation_left > 0;
                        index
                            .insert((holder, seq, i as u8), shard.0)
                            .map_err(|e| self.err(e))?;
                        slots.push(SlotRow {
                            shard: *shard,
                            holder,
                            state: SlotState::New,
                        });
                    }
                    // A holder on probation earns trust by audits: first in line.
                    let audited = if probation { 0 } else { now };
                    let row = SegmentRow {
                        id: *id,
                        owner: *owner,
                        k: segment.coding.k,
                        m: segment.coding.m,
                        shard_len: segment.shard_len,
                        lease_until: segment.lease_until,
                        audited,
                        slots,
                    };
                    rows.insert(seq, row.encode().as_slice())
                        .map_err(|e| self.err(e))?;
                    prefixes
                        .insert(seq, ids::prefix(id))
                        .map_err(|e| self.err(e))?;
                    audits.insert((audited, seq), ()).map_err(|e| self.err(e))?;
                    leases
                        .insert((row.lease_until, seq), ())
                        .map_err(|e| self.err(e))?;
                    added.insert(*id, seq);
                }
                if had.is_none() && count > 0 {
                    owner_count += 1;
                }
                if had.unwrap_or(0) != count {
                    owners.insert(owner.0, count).map_err(|e| self.err(e))?;
                }
                results.push(Ok(count));
            }
            if !added.is_empty() {
                meta.insert("next_seq", next_seq).map_err(|e| self.err(e))?;
                meta.insert("segments", self.segments + added.len() as u64)
                    .map_err(|e| self.err(e))?;
            }
        }
        self.save_holders(&txn)?;
        self.commit(txn)?;
        self.segments += added.len() as u64;
        for (id, seq) in added {
            self.ids.insert(&id, seq);
        }
        Ok(results)
    }

    /// Refuses a request with a segment that makes no sense.
    fn check_segments(
        &self,
        segments: &[TrackedSegment],
        max_lease: u64,
    ) -> Result<(), StewardError> {
        for (index, segment) in segments.iter().enumerate() {
            let bad = |reason: String| StewardError::BadSegment { index, reason };
            segment.coding.validate().map_err(|e| bad(e.to_string()))?;
            if segment.shards.len() != segment.coding.total() {
                return Err(bad(format!(
                    "{} shards for a {}+{} coding",
                    segment.shards.len(),
                    segment.coding.k,
                    segment.coding.m
                )));
            }
            if segment.shard_len == 0 {
                return Err(bad("shards of 0 bytes".into()));
            }
            if segment.lease_until > max_lease {
                return Err(bad(format!(
                    "a lease to {} is longer than this steward renews ({} s)",
                    segment.lease_until, self.policy.lease_s
                )));
            }
        }
        Ok(())
    }

    /// The seq and row of segment `id`, if tracked: the in-memory index
    /// names candidates by prefix, the rows decide.
    fn find_in(
        &self,
        rows: &impl ReadableTable<u64, &'static [u8]>,
        id: &[u8; 32],
    ) -> Result<Option<(u64, SegmentRow)>, StewardError> {
        for seq in self.ids.candidates(id) {
            let row = self.row_in(rows, seq)?;
            if row.id == *id {
                return Ok(Some((seq, row)));
            }
        }
        Ok(None)
    }

    /// Moves a format 1 table's durable id index to `id_prefixes`.
    fn migrate_v1(&self, txn: &WriteTransaction) -> Result<(), StewardError> {
        {
            let old = txn.open_table(SEGMENT_IDS_V1).map_err(|e| self.err(e))?;
            let mut prefixes = txn.open_table(ID_PREFIXES).map_err(|e| self.err(e))?;
            for entry in old.iter().map_err(|e| self.err(e))? {
                let (id, seq) = entry.map_err(|e| self.err(e))?;
                prefixes
                    .insert(seq.value(), ids::prefix(&id.value()))
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.delete_table(SEGMENT_IDS_V1).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stops tracking those of `segments` that are `owner`'s (the owner
    /// signed for it); another owner's segment of that id is left alone.
    /// Their leases are no longer renewed and their holders collect them
    /// when they run out. Returns how many segments the owner still has.
    pub fn untrack(
        &mut self,
        owner: &OwnerId,
        segments: &[SegmentId],
    ) -> Result<u64, StewardError> {
        let txn = self.begin()?;
        let mut gone = Vec::new();
        let count = {
            let mut prefixes = txn.open_table(ID_PREFIXES).map_err(|e| self.err(e))?;
            let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
            let mut index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
            let mut audits = txn.open_table(AUDIT_QUEUE).map_err(|e| self.err(e))?;
            let mut leases = txn.open_table(LEASE_QUEUE).map_err(|e| self.err(e))?;
            let mut owners = txn.open_table(OWNERS).map_err(|e| self.err(e))?;
            let mut removed = 0;
            for id in segments {
                if gone.iter().any(|(g, _)| g == &id.0) {
                    continue;
                }
                let Some((seq, row)) = self.find_in(&rows, &id.0)? else {
                    continue;
                };
                if row.owner != *owner {
                    continue;
                }
                prefixes.remove(seq).map_err(|e| self.err(e))?;
                rows.remove(seq).map_err(|e| self.err(e))?;
                gone.push((id.0, seq));
                for (i, slot) in row.slots.iter().enumerate() {
                    index
                        .remove((slot.holder, seq, i as u8))
                        .map_err(|e| self.err(e))?;
                }
                audits.remove((row.audited, seq)).map_err(|e| self.err(e))?;
                leases
                    .remove((row.lease_until, seq))
                    .map_err(|e| self.err(e))?;
                self.unqueue_repair(&txn, seq)?;
                self.in_flight.remove(&seq);
                self.renewing.remove(&seq);
                self.attempts.remove(&seq);
                removed += 1;
            }
            let count = owners
                .get(owner.0)
                .map_err(|e| self.err(e))?
                .map_or(0, |v| v.value())
                .saturating_sub(removed);
            if removed > 0 {
                if count == 0 {
                    owners.remove(owner.0).map_err(|e| self.err(e))?;
                } else {
                    owners.insert(owner.0, count).map_err(|e| self.err(e))?;
                }
                self.segments -= removed;
                let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
                meta.insert("segments", self.segments)
                    .map_err(|e| self.err(e))?;
            }
            count
        };
        self.commit(txn)?;
        for (id, seq) in gone {
            self.ids.remove(&id, seq);
        }
        Ok(count)
    }

    /// Where the shards of `owner`'s segments are now, in index order
    /// (`None`: not tracked here for that owner).
    pub fn locate(
        &self,
        owner: &OwnerId,
        segments: &[SegmentId],
    ) -> Result<Vec<Option<Vec<NodeId>>>, StewardError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(segments.len());
        for id in segments {
            let Some((_, row)) = self.find_in(&rows, &id.0)? else {
                out.push(None);
                continue;
            };
            out.push((row.owner == *owner).then(|| {
                row.slots
                    .iter()
                    .map(|slot| self.holders[slot.holder as usize].node)
                    .collect()
            }));
        }
        Ok(out)
    }

    /// How a segment stands at `now`.
    pub fn redundancy(
        &self,
        segment: SegmentId,
        now: u64,
    ) -> Result<Option<Redundancy>, StewardError> {
        let Some((_, row)) = self.read_segment(segment)? else {
            return Ok(None);
        };
        let holders = self.view(now);
        Ok(Some(Redundancy {
            healthy: row.slots.iter().filter(|s| holders.healthy(s)).count(),
            total: row.slots.len(),
            needed: usize::from(row.k),
        }))
    }

    /// Each shard of a segment: its holder and how it stands (for tests
    /// and the operator).
    pub fn shard_states(
        &self,
        segment: SegmentId,
    ) -> Result<Option<Vec<(NodeId, SlotState)>>, StewardError> {
        Ok(self.read_segment(segment)?.map(|(_, row)| {
            row.slots
                .iter()
                .map(|slot| (self.holders[slot.holder as usize].node, slot.state))
                .collect()
        }))
    }

    /// Segments queued for a look by the repair planner (repairs and
    /// moves waiting, or handed out and not reported back).
    pub fn queued_repairs(&self) -> Result<u64, StewardError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let queue = txn.open_table(REPAIR_QUEUE).map_err(|e| self.err(e))?;
        queue.len().map_err(|e| self.err(e))
    }

    /// Every holder the table names.
    pub fn holders(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.holders.iter().map(|h| h.node).collect();
        nodes.sort();
        nodes
    }

    /// Whether `node` still holds any shard the table keeps.
    pub fn holds_any(&self, node: &NodeId) -> Result<bool, StewardError> {
        let Some(&number) = self.holder_numbers.get(node) else {
            return Ok(false);
        };
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
        let mut range = index
            .range((number, 0, 0)..=(number, u64::MAX, u8::MAX))
            .map_err(|e| self.err(e))?;
        Ok(range.next().is_some())
    }

    /// Shards the table places at `node`: counted by a walk of its part of
    /// the holder index (for tests and the operator, not for rounds).
    pub fn held_by(&self, node: &NodeId) -> Result<u64, StewardError> {
        let Some(&number) = self.holder_numbers.get(node) else {
            return Ok(0);
        };
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
        let range = index
            .range((number, 0, 0)..=(number, u64::MAX, u8::MAX))
            .map_err(|e| self.err(e))?;
        Ok(range.count() as u64)
    }

    /// `owner`'s shards that `from` held now live at `to` (its disks moved
    /// there; the owner signed for it): re-points up to `limit` of them
    /// found from `after` on in `from`'s part of the holder index, in one
    /// commit, and has their segments audited first, so the new holder
    /// proves it has them. Returns how many were re-pointed and where the
    /// next call goes on (`None`: `from`'s part is done). Other owners'
    /// shards are left alone: an owner speaks only for its own.
    pub fn moved(
        &mut self,
        owner: &OwnerId,
        from: NodeId,
        to: NodeId,
        after: Option<(u64, u8)>,
        limit: usize,
    ) -> Result<(u64, Option<(u64, u8)>), StewardError> {
        let Some(&from_number) = self.holder_numbers.get(&from) else {
            return Ok((0, None));
        };
        if from == to {
            return Ok((0, None));
        }
        let start = after.map_or((from_number, 0, 0), |(seq, i)| {
            if i == u8::MAX {
                (from_number, seq.saturating_add(1), 0)
            } else {
                (from_number, seq, i + 1)
            }
        });
        // The owner's segments among this batch of `from`'s entries, read
        // before anything is written: a record that names nothing of the
        // owner's adds no holder row (a stranger's key signs for itself).
        let (next, owned) = {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            let index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
            let entries: Vec<(u64, u8)> = index
                .range(start..=(from_number, u64::MAX, u8::MAX))
                .map_err(|e| self.err(e))?
                .take(limit)
                .map(|entry| entry.map(|(key, _)| (key.value().1, key.value().2)))
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(e))?;
            let next = (entries.len() == limit)
                .then(|| entries.last().copied())
                .flatten();
            let rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
            let mut seqs: Vec<u64> = entries.iter().map(|(seq, _)| *seq).collect();
            seqs.dedup();
            let mut owned = Vec::new();
            for seq in seqs {
                let row = self.row_in(&rows, seq)?;
                if row.owner == *owner {
                    owned.push((seq, row));
                }
            }
            (next, owned)
        };
        if owned.is_empty() {
            return Ok((0, next));
        }
        let to_number = self.holder_number(to);
        let txn = self.begin()?;
        let mut repointed = 0;
        {
            let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
            let mut index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
            let mut audits = txn.open_table(AUDIT_QUEUE).map_err(|e| self.err(e))?;
            for (seq, mut row) in owned {
                for (i, slot) in row.slots.iter_mut().enumerate() {
                    if slot.holder != from_number {
                        continue;
                    }
                    index
                        .remove((from_number, seq, i as u8))
                        .map_err(|e| self.err(e))?;
                    index
                        .insert((to_number, seq, i as u8), slot.shard.0)
                        .map_err(|e| self.err(e))?;
                    slot.holder = to_number;
                    slot.state = SlotState::Ok;
                    repointed += 1;
                }
                // Audited next: the new holder proves it has them.
                audits.remove((row.audited, seq)).map_err(|e| self.err(e))?;
                row.audited = 0;
                audits.insert((0, seq), ()).map_err(|e| self.err(e))?;
                rows.insert(seq, row.encode().as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        self.save_holders(&txn)?;
        self.commit(txn)?;
        Ok((repointed, next))
    }

    /// Whether a holder is known to be down now.
    pub fn is_down(&self, node: &NodeId) -> bool {
        self.holder_numbers
            .get(node)
            .is_some_and(|&h| self.holders[h as usize].down_since.is_some())
    }

    /// Whether a holder is marked bad at `now`.
    pub fn is_bad(&self, node: &NodeId, now: u64) -> bool {
        self.holder_numbers.get(node).is_some_and(|&h| {
            self.holders[h as usize]
                .bad_until
                .is_some_and(|until| now < until)
        })
    }

    /// Whether a holder is on probation after a bad spell.
    pub fn on_probation(&self, node: &NodeId) -> bool {
        self.holder_numbers
            .get(node)
            .is_some_and(|&h| self.holders[h as usize].probation_left > 0)
    }

    /// A holder answered (gossip or a probe says it is up).
    pub fn node_up(&mut self, node: NodeId) {
        let h = self.holder_number(node);
        let row = &mut self.holders[h as usize];
        if row.down_since.take().is_some() {
            // Silence is counted while it is up: a spell down starts it over.
            row.silent_since = None;
            row.silent_asks = 0;
            self.dirty.insert(h);
        }
    }

    /// A holder did not answer at `now` (the first time counts).
    pub fn node_down(&mut self, node: NodeId, now: u64) {
        let h = self.holder_number(node);
        if self.holders[h as usize].down_since.is_none() {
            self.holders[h as usize].down_since = Some(now);
            self.dirty.insert(h);
        }
    }

    /// A holder's owner started (or stopped) draining it: its shards are
    /// looked at, a bounded slice per round, and moved.
    pub fn node_draining(&mut self, node: NodeId, draining: bool) {
        let h = self.holder_number(node);
        let row = &mut self.holders[h as usize];
        if row.draining != draining {
            row.draining = draining;
            if draining {
                row.sweep = Some(0);
            }
            self.dirty.insert(h);
        }
    }

    /// Where the holder's missing-shard report was read to (the next read
    /// starts there).
    pub fn missing_read(&self, node: &NodeId) -> u64 {
        self.holder_numbers
            .get(node)
            .map_or(0, |&h| self.holders[h as usize].missing_read)
    }

    /// Whether a missing-shard report of this holder is still being matched.
    pub fn missing_pending(&self, node: &NodeId) -> bool {
        self.holder_numbers
            .get(node)
            .is_some_and(|h| self.missing.contains_key(h))
    }

    /// A holder reported shards it no longer has (read up to `read_to` of
    /// its report): they are matched against its part of the holder index
    /// over the next rounds, and each segment losing one is looked at for
    /// repair. A reported loss is no accusation: an honest holder that
    /// lost a disk says so, and only those shards are rebuilt.
    pub fn missing(&mut self, node: NodeId, shards: Vec<(ShardId, Missing)>, read_to: u64) {
        let h = self.holder_number(node);
        let report = self.missing.entry(h).or_insert_with(|| MissingReport {
            shards: HashMap::new(),
            read_to,
        });
        report.shards.extend(shards);
        report.read_to = report.read_to.max(read_to);
        self.holders[h as usize].sweep = Some(0);
        self.dirty.insert(h);
    }

    /// Records audits' outcomes in one transaction.
    pub fn audited(
        &mut self,
        results: &[(AuditTask, AuditOutcome)],
        now: u64,
    ) -> Result<(), StewardError> {
        if results.is_empty() {
            return Ok(());
        }
        let txn = self.begin()?;
        for (task, outcome) in results {
            let h = self.holder_number(task.holder);
            match outcome {
                AuditOutcome::Passed => {
                    self.passed(h, task.read);
                    self.verify_slot(&txn, task.segment, usize::from(task.index), h)?;
                }
                AuditOutcome::Unanswered => self.unanswered(h, now),
                AuditOutcome::Failed => {
                    let kind = if task.read { Blame::Read } else { Blame::Proof };
                    self.fail_slot(&txn, task.segment, usize::from(task.index), h, kind, now)?;
                }
                AuditOutcome::NotFound => {
                    self.fail_slot(
                        &txn,
                        task.segment,
                        usize::from(task.index),
                        h,
                        Blame::Proof,
                        now,
                    )?;
                }
            }
        }
        self.save_holders(&txn)?;
        self.commit(txn)
    }

    /// Records a finished repair or move: each rebuilt shard (by index)
    /// and its new holder. Rebuilt shards are byte-identical, so their ids
    /// stay. The segment is looked at again next round (another shard may
    /// be due to move).
    pub fn repaired(
        &mut self,
        segment: SegmentId,
        moved: &[(usize, NodeId)],
        now: u64,
    ) -> Result<(), StewardError> {
        self.repairs_ended(
            &[RepairEnd::Done {
                segment,
                moved: moved.to_vec(),
            }],
            now,
        )
    }

    /// Records repairs and moves that ended, in one durable commit (they
    /// end many a second when a disk is rebuilt; a commit each would
    /// queue them behind the disk's sync).
    pub fn repairs_ended(&mut self, ended: &[RepairEnd], now: u64) -> Result<(), StewardError> {
        if ended.is_empty() {
            return Ok(());
        }
        let txn = self.begin()?;
        for end in ended {
            match end {
                RepairEnd::Done { segment, moved } => {
                    self.repaired_in(&txn, *segment, moved, now)?;
                }
                RepairEnd::Failed {
                    segment,
                    refused,
                    unreachable,
                } => self.repair_failed_in(&txn, *segment, refused, unreachable, now)?,
            }
        }
        self.save_holders(&txn)?;
        self.commit(txn)
    }

    fn repaired_in(
        &mut self,
        txn: &WriteTransaction,
        segment: SegmentId,
        moved: &[(usize, NodeId)],
        now: u64,
    ) -> Result<(), StewardError> {
        if let Some(seq) = self.seq_of(txn, segment)? {
            self.in_flight.remove(&seq);
            self.attempts.remove(&seq);
            let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
            let mut index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
            let mut row = self.row_in(&rows, seq)?;
            let mut probation = false;
            for &(i, node) in moved {
                let holder = self.holder_number(node);
                let Some(slot) = row.slots.get_mut(i) else {
                    continue;
                };
                index
                    .remove((slot.holder, seq, i as u8))
                    .map_err(|e| self.err(e))?;
                index
                    .insert((holder, seq, i as u8), slot.shard.0)
                    .map_err(|e| self.err(e))?;
                slot.holder = holder;
                slot.state = SlotState::Ok;
                probation |= self.holders[holder as usize].probation_left > 0;
            }
            if probation {
                let mut audits = txn.open_table(AUDIT_QUEUE).map_err(|e| self.err(e))?;
                audits.remove((row.audited, seq)).map_err(|e| self.err(e))?;
                row.audited = 0;
                audits.insert((0, seq), ()).map_err(|e| self.err(e))?;
            }
            rows.insert(seq, row.encode().as_slice())
                .map_err(|e| self.err(e))?;
            drop((rows, index));
            self.queue_repair(txn, seq, now, true)?;
        }
        Ok(())
    }

    /// A repair or move could not be finished. `refused`: sources that
    /// answered a read with an error or never answered while connected
    /// (their shards count as lost there, and against them);
    /// `unreachable`: sources that could not be dialled. The segment is
    /// handed out again, with other sources first.
    pub fn repair_failed(
        &mut self,
        segment: SegmentId,
        refused: &[(usize, NodeId)],
        unreachable: &[NodeId],
        now: u64,
    ) -> Result<(), StewardError> {
        self.repairs_ended(
            &[RepairEnd::Failed {
                segment,
                refused: refused.to_vec(),
                unreachable: unreachable.to_vec(),
            }],
            now,
        )
    }

    fn repair_failed_in(
        &mut self,
        txn: &WriteTransaction,
        segment: SegmentId,
        refused: &[(usize, NodeId)],
        unreachable: &[NodeId],
        now: u64,
    ) -> Result<(), StewardError> {
        if let Some(seq) = self.seq_of(txn, segment)? {
            self.in_flight.remove(&seq);
            let attempt = self.attempts.entry(seq).or_default();
            *attempt = attempt.saturating_add(1);
            let backoff = 30u64 << (*attempt).min(7);
            for &(i, node) in refused {
                let h = self.holder_number(node);
                self.fail_slot(txn, segment, i, h, Blame::Read, now)?;
            }
            for node in unreachable {
                let h = self.holder_number(*node);
                self.unanswered(h, now);
            }
            let at = if refused.is_empty() {
                now + backoff
            } else {
                now
            };
            self.queue_repair(txn, seq, at, true)?;
        }
        Ok(())
    }

    /// Records how a round's renewals went, in one transaction: a segment
    /// whose every listed holder answered takes the new lease; a shard its
    /// holder does not have is lost there (and rebuilt); silence counts as
    /// for audits, and the segment is asked again next round.
    pub fn renewed(
        &mut self,
        batch: &RenewBatch,
        outcomes: &HashMap<(NodeId, ShardId), RenewOutcome>,
        now: u64,
    ) -> Result<(), StewardError> {
        let txn = self.begin()?;
        for (seq, shards) in &batch.segments {
            self.renewing.remove(seq);
            let mut all = true;
            for &(h, shard) in shards {
                let node = self.holders[h as usize].node;
                match outcomes
                    .get(&(node, shard))
                    .copied()
                    .unwrap_or(RenewOutcome::Unanswered)
                {
                    RenewOutcome::Renewed => {}
                    RenewOutcome::Unanswered => {
                        all = false;
                        self.unanswered(h, now);
                    }
                    // Lost there: rebuilt (with a fresh lease) by repair,
                    // so it does not hold the others' new lease back.
                    RenewOutcome::NotFound => {
                        let rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
                        let Some(bytes) = rows.get(*seq).map_err(|e| self.err(e))? else {
                            continue;
                        };
                        let r = self.decode(*seq, bytes.value())?;
                        drop(bytes);
                        drop(rows);
                        if let Some(i) = r
                            .slots
                            .iter()
                            .position(|s| s.shard == shard && s.holder == h)
                        {
                            self.fail_slot(&txn, SegmentId(r.id), i, h, Blame::Proof, now)?;
                        }
                    }
                }
            }
            if all {
                let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
                let mut leases = txn.open_table(LEASE_QUEUE).map_err(|e| self.err(e))?;
                let Some(bytes) = rows
                    .get(*seq)
                    .map_err(|e| self.err(e))?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let mut r = self.decode(*seq, &bytes)?;
                if batch.until > r.lease_until {
                    leases
                        .remove((r.lease_until, *seq))
                        .map_err(|e| self.err(e))?;
                    r.lease_until = batch.until;
                    leases
                        .insert((r.lease_until, *seq), ())
                        .map_err(|e| self.err(e))?;
                    rows.insert(*seq, r.encode().as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        self.save_holders(&txn)?;
        self.commit(txn)
    }

    /// One round at `now`: holders' states move on (a grace passed, a bad
    /// spell ended, silence turned into a failure), a bounded slice of
    /// holder-index sweeps, and the repairs, moves, audits and renewals due
    /// — each bounded whatever the table's size. Commits what it changed.
    pub fn round(&mut self, now: u64) -> Result<Round, StewardError> {
        let elapsed = self
            .last_round
            .map_or(0, |last| now.saturating_sub(last))
            .min(3600);
        self.last_round = Some(now);
        self.holder_transitions(now);
        let txn = self.begin()?;
        self.sweep(&txn, now)?;
        let (repairs, moves) = self.plan_repairs(&txn, now)?;
        let audits = self.plan_audits(&txn, now, elapsed)?;
        let renewals = self.plan_renewals(&txn, now)?;
        self.save_holders(&txn)?;
        self.commit(txn)?;
        Ok(Round {
            audits,
            repairs,
            moves,
            renewals,
        })
    }

    /// When the next down holder's grace ends (Unix seconds), if one is
    /// waiting for it: the loop runs a round then, not at its next tick.
    pub fn next_grace_end(&self) -> Option<u64> {
        self.holders
            .iter()
            .filter_map(|row| {
                row.down_since
                    .filter(|since| row.swept_down != Some(*since))
                    .map(|since| since.saturating_add(self.policy.grace_s))
            })
            .min()
    }

    fn holder_transitions(&mut self, now: u64) {
        let grace = self.policy.grace_s;
        for h in 0..self.holders.len() {
            let row = &mut self.holders[h];
            let mut changed = false;
            if row.bad_until.is_some_and(|until| now >= until) {
                row.bad_until = None;
                row.failures_in_a_row = 0;
                row.probation_left = self.policy.probation_passes;
                changed = true;
            }
            if let Some(since) = row.down_since
                && now.saturating_sub(since) >= grace
                && row.swept_down != Some(since)
            {
                row.swept_down = Some(since);
                row.sweep = Some(0);
                changed = true;
            }
            // Unanswered again and again, for the whole grace, while the
            // swarm says it is up: it is hiding from audits.
            let silent_too_long = row.down_since.is_none()
                && row.silent_asks >= 2 * self.policy.bad_after
                && row
                    .silent_since
                    .is_some_and(|since| now.saturating_sub(since) >= grace);
            if changed {
                self.dirty.insert(h as u32);
            }
            if silent_too_long {
                self.mark_bad(h as u32, now);
            }
        }
    }

    /// Looks at a bounded number of holder-index entries of holders whose
    /// shards all need a look (lost, bad, draining) or that reported
    /// missing shards, and queues their segments for the repair planner.
    fn sweep(&mut self, txn: &WriteTransaction, now: u64) -> Result<(), StewardError> {
        let mut budget = self.policy.sweep_per_round;
        let sweeping: Vec<u32> = (0..self.holders.len() as u32)
            .filter(|&h| self.holders[h as usize].sweep.is_some())
            .collect();
        for h in sweeping {
            if budget == 0 {
                break;
            }
            let from = self.holders[h as usize].sweep.unwrap_or(0);
            let entries: Vec<(u64, u8, ShardId)> = {
                let index = txn.open_table(HOLDER_SHARDS).map_err(|e| self.err(e))?;
                let range = index
                    .range((h, from, 0)..=(h, u64::MAX, u8::MAX))
                    .map_err(|e| self.err(e))?;
                let mut out = Vec::new();
                for entry in range.take(budget) {
                    let (key, shard) = entry.map_err(|e| self.err(e))?;
                    let (_, seq, i) = key.value();
                    out.push((seq, i, ShardId(shard.value())));
                }
                out
            };
            // Fewer than asked for: the holder's part of the index ended.
            let done = entries.len() < budget;
            budget -= entries.len();
            let report_only = !self.holders[h as usize].draining && !self.sweeps_everything(h, now);
            let mut last = from;
            for (seq, i, shard) in &entries {
                last = *seq;
                let reported = self
                    .missing
                    .get(&h)
                    .and_then(|r| r.shards.get(shard))
                    .copied();
                if let Some(missing) = reported {
                    let state = match missing {
                        Missing::Gone => SlotState::Gone,
                        Missing::Offline(since) => SlotState::Offline(since),
                        Missing::Back => SlotState::New,
                    };
                    let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
                    let mut row = self.row_in(&rows, *seq)?;
                    // Only a shard not found wanting otherwise changes: a
                    // failed one stays failed, and "back" undoes only "offline".
                    let applies = |current: SlotState| match state {
                        SlotState::New => matches!(current, SlotState::Offline(_)),
                        _ => matches!(current, SlotState::Ok | SlotState::New),
                    };
                    if let Some(slot) = row.slots.get_mut(usize::from(*i))
                        && slot.holder == h
                        && slot.shard == *shard
                        && applies(slot.state)
                    {
                        slot.state = state;
                        rows.insert(*seq, row.encode().as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    drop(rows);
                    // An offline disk's shards are looked at when its grace ends.
                    match missing {
                        Missing::Gone => self.queue_repair(txn, *seq, now, false)?,
                        Missing::Offline(since) => self.queue_repair(
                            txn,
                            *seq,
                            since.saturating_add(self.policy.grace_s),
                            false,
                        )?,
                        Missing::Back => {}
                    }
                } else if !report_only {
                    self.queue_repair(txn, *seq, now, false)?;
                }
            }
            let row = &mut self.holders[h as usize];
            if done {
                row.sweep = None;
                if let Some(report) = self.missing.remove(&h) {
                    row.missing_read = report.read_to;
                }
            } else {
                row.sweep = Some(last.saturating_add(1));
            }
            self.dirty.insert(h);
        }
        Ok(())
    }

    /// Whether a holder's every shard needs a look (it is lost or bad),
    /// rather than only those it reported.
    fn sweeps_everything(&self, h: u32, now: u64) -> bool {
        let row = &self.holders[h as usize];
        row.bad_until.is_some_and(|until| now < until)
            || row
                .down_since
                .is_some_and(|since| now.saturating_sub(since) >= self.policy.grace_s)
    }

    fn plan_repairs(
        &mut self,
        txn: &WriteTransaction,
        now: u64,
    ) -> Result<(Vec<RepairTask>, Vec<MoveTask>), StewardError> {
        let room = self
            .policy
            .repairs_in_flight
            .saturating_sub(self.in_flight.len());
        let mut repairs = Vec::new();
        let mut moves = Vec::new();
        if room == 0 {
            return Ok((repairs, moves));
        }
        let due: Vec<(u64, u64)> = {
            let queue = txn.open_table(REPAIR_QUEUE).map_err(|e| self.err(e))?;
            let range = queue.range(..(now + 1, 0)).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for entry in range.take(room * 4) {
                let (key, _) = entry.map_err(|e| self.err(e))?;
                out.push(key.value());
            }
            out
        };
        let avoid = self.unplaceable(now);
        for (_, seq) in due {
            if repairs.len() + moves.len() >= room {
                break;
            }
            if self.in_flight.contains(&seq) {
                continue;
            }
            let row = {
                let rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
                match rows.get(seq).map_err(|e| self.err(e))? {
                    Some(bytes) => Some(self.decode(seq, bytes.value())?),
                    None => None,
                }
            };
            let Some(row) = row else {
                self.unqueue_repair(txn, seq)?;
                continue;
            };
            let attempt = self.attempts.get(&seq).copied().unwrap_or(0);
            let decided = plan::plan(&row, &self.view(now), self.policy.repair_margin, attempt);
            let coding = Coding { k: row.k, m: row.m };
            let lease_until = row.lease_until.max(now + self.policy.lease_s);
            let node = |i: usize| self.holders[row.slots[i].holder as usize].node;
            match decided {
                Plan::Nothing => {
                    self.unqueue_repair(txn, seq)?;
                    continue;
                }
                Plan::Later => {
                    let again = now + (self.policy.grace_s / 10).max(30);
                    self.queue_repair(txn, seq, again, true)?;
                    continue;
                }
                Plan::Repair {
                    lost,
                    sources,
                    keep,
                } => repairs.push(RepairTask {
                    segment: SegmentId(row.id),
                    owner: row.owner,
                    coding,
                    shard_len: row.shard_len,
                    sources: sources
                        .iter()
                        .map(|&i| (i, row.slots[i].shard, node(i)))
                        .collect(),
                    lost: lost.iter().map(|&i| (i, row.slots[i].shard)).collect(),
                    keep: keep.iter().map(|&i| (i, node(i))).collect(),
                    avoid: avoid.clone(),
                    lease_until,
                }),
                Plan::Move { index, keep } => moves.push(MoveTask {
                    segment: SegmentId(row.id),
                    owner: row.owner,
                    coding,
                    shard_len: row.shard_len,
                    shard: (index, row.slots[index].shard),
                    from: node(index),
                    keep: keep.iter().map(|&i| (i, node(i))).collect(),
                    avoid: avoid.clone(),
                    lease_until,
                }),
            }
            self.in_flight.insert(seq);
            // Should the daemon stop before it reports back, the segment
            // comes up again later.
            self.queue_repair(txn, seq, now + 3600, true)?;
        }
        Ok((repairs, moves))
    }

    fn plan_audits(
        &mut self,
        txn: &WriteTransaction,
        now: u64,
        elapsed: u64,
    ) -> Result<Vec<AuditTask>, StewardError> {
        // A round-robin over the queue at this rate audits each segment
        // every 0.8 × the period, whatever the table's size.
        let period = self.policy.audit_period_s.max(1) as f64 * 0.8;
        self.audit_credit += elapsed as f64 * self.segments as f64 / period;
        let quota = (self.audit_credit.floor() as usize).min(self.policy.audits_per_round);
        // Not earlier than this since the last audit (a small table would
        // otherwise spin through itself).
        let min_gap = self.policy.audit_period_s / 8;
        let rows = self.holders.clone();
        let holders = Holders {
            rows: &rows,
            grace_s: self.policy.grace_s,
            now,
        };
        let usable_holders = (0..self.holders.len() as u32)
            .filter(|&h| holders.usable(h))
            .count()
            .max(1);
        let cap = self
            .policy
            .audits_per_holder
            .max((3 * quota * 6).div_ceil(usable_holders));
        // Segments keyed at time 0 have a shard on a holder on probation:
        // they go first, outside the rate.
        let (urgent, candidates): (Vec<QueueKey>, Vec<QueueKey>) = {
            let queue = txn.open_table(AUDIT_QUEUE).map_err(|e| self.err(e))?;
            let mut urgent = Vec::new();
            for entry in queue
                .range(..(1, 0))
                .map_err(|e| self.err(e))?
                .take(self.policy.audits_per_round)
            {
                let (key, _) = entry.map_err(|e| self.err(e))?;
                urgent.push(key.value());
            }
            let range = queue
                .range((1, 0)..(now.saturating_sub(min_gap) + 1, 0))
                .map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for entry in range.take(quota * 2) {
                let (key, _) = entry.map_err(|e| self.err(e))?;
                out.push(key.value());
            }
            (urgent, out)
        };
        let quota = quota + urgent.len();
        let candidates: Vec<(u64, u64)> = urgent.into_iter().chain(candidates).collect();
        let mut per_holder: HashMap<u32, usize> = HashMap::new();
        let mut tasks = Vec::new();
        let mut audited = 0usize;
        let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
        let mut queue = txn.open_table(AUDIT_QUEUE).map_err(|e| self.err(e))?;
        for (at, seq) in candidates {
            if audited >= quota {
                break;
            }
            let Some(bytes) = rows
                .get(seq)
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec())
            else {
                queue.remove((at, seq)).map_err(|e| self.err(e))?;
                continue;
            };
            let mut row = self.decode(seq, &bytes)?;
            let targets: Vec<usize> = (0..row.slots.len())
                .filter(|&i| holders.healthy(&row.slots[i]))
                .collect();
            if targets
                .iter()
                .any(|&i| per_holder.get(&row.slots[i].holder).copied().unwrap_or(0) >= cap)
            {
                continue;
            }
            for &i in &targets {
                let h = row.slots[i].holder;
                *per_holder.entry(h).or_default() += 1;
                let probation = self.holders[h as usize].probation_left > 0;
                let given = self.audits_given.entry(h).or_default();
                *given += 1;
                tasks.push(AuditTask {
                    segment: SegmentId(row.id),
                    index: i as u8,
                    shard: row.slots[i].shard,
                    shard_len: row.shard_len,
                    holder: self.holders[h as usize].node,
                    // On probation, every audit reads the whole shard:
                    // trust comes back only to a holder that serves.
                    read: probation
                        || (self.policy.read_audit_every > 0
                            && (*given).is_multiple_of(self.policy.read_audit_every)),
                });
            }
            queue.remove((at, seq)).map_err(|e| self.err(e))?;
            row.audited = now;
            queue.insert((now, seq), ()).map_err(|e| self.err(e))?;
            rows.insert(seq, row.encode().as_slice())
                .map_err(|e| self.err(e))?;
            audited += 1;
        }
        self.audit_credit = (self.audit_credit - audited as f64).max(0.0);
        // Credit does not pile up while there is nothing old enough.
        self.audit_credit = self.audit_credit.min(self.policy.audits_per_round as f64);
        Ok(tasks)
    }

    fn plan_renewals(
        &mut self,
        txn: &WriteTransaction,
        now: u64,
    ) -> Result<RenewBatch, StewardError> {
        let horizon = now.saturating_add(self.policy.renew_before_s);
        let until = now + self.policy.lease_s;
        let due: Vec<u64> = {
            let queue = txn.open_table(LEASE_QUEUE).map_err(|e| self.err(e))?;
            let range = queue.range(..(horizon, 0)).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for entry in range {
                if out.len() >= self.policy.renewals_per_round {
                    break;
                }
                let (key, _) = entry.map_err(|e| self.err(e))?;
                let (_, seq) = key.value();
                if !self.renewing.contains(&seq) {
                    out.push(seq);
                }
            }
            out
        };
        let holder_rows = self.holders.clone();
        let holders = Holders {
            rows: &holder_rows,
            grace_s: self.policy.grace_s,
            now,
        };
        let rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
        let mut per_holder: HashMap<u32, Vec<ShardId>> = HashMap::new();
        let mut segments = Vec::new();
        for seq in due {
            let Some(bytes) = rows.get(seq).map_err(|e| self.err(e))? else {
                continue;
            };
            let row = self.decode(seq, bytes.value())?;
            let shards: Vec<(u32, ShardId)> = row
                .slots
                .iter()
                .filter(|slot| holders.healthy(slot))
                .map(|slot| (slot.holder, slot.shard))
                .collect();
            for &(h, shard) in &shards {
                per_holder.entry(h).or_default().push(shard);
            }
            self.renewing.insert(seq);
            segments.push((seq, shards));
        }
        let mut by_holder: Vec<(NodeId, Vec<ShardId>)> = per_holder
            .into_iter()
            .map(|(h, shards)| (self.holders[h as usize].node, shards))
            .collect();
        by_holder.sort_by_key(|(node, _)| *node);
        Ok(RenewBatch {
            until,
            holders: by_holder,
            segments,
        })
    }

    /// Nodes no shard should go to now: bad, down or draining.
    fn unplaceable(&self, now: u64) -> Vec<NodeId> {
        let holders = self.view(now);
        let mut nodes: Vec<NodeId> = self
            .holders
            .iter()
            .filter(|h| holders.is_bad(h) || h.down_since.is_some() || h.draining)
            .map(|h| h.node)
            .collect();
        nodes.sort();
        nodes
    }

    fn view(&self, now: u64) -> Holders<'_> {
        Holders {
            rows: &self.holders,
            grace_s: self.policy.grace_s,
            now,
        }
    }

    fn passed(&mut self, h: u32, read: bool) {
        let row = &mut self.holders[h as usize];
        row.failures_in_a_row = 0;
        if read {
            row.read_refusals = 0;
        }
        row.silent_since = None;
        row.silent_asks = 0;
        row.probation_left = row.probation_left.saturating_sub(1);
        self.dirty.insert(h);
    }

    fn unanswered(&mut self, h: u32, now: u64) {
        let row = &mut self.holders[h as usize];
        if row.down_since.is_none() {
            row.silent_since.get_or_insert(now);
            row.silent_asks = row.silent_asks.saturating_add(1);
            self.dirty.insert(h);
        }
    }

    fn failed(&mut self, h: u32, now: u64) {
        let row = &mut self.holders[h as usize];
        row.failures_in_a_row += 1;
        row.silent_since = None;
        row.silent_asks = 0;
        self.dirty.insert(h);
        // On probation, one failure ends it.
        if row.failures_in_a_row >= self.policy.bad_after || row.probation_left > 0 {
            self.mark_bad(h, now);
        }
    }

    fn read_refused(&mut self, h: u32, now: u64) {
        let row = &mut self.holders[h as usize];
        row.read_refusals += 1;
        row.silent_since = None;
        row.silent_asks = 0;
        self.dirty.insert(h);
        if row.read_refusals >= self.policy.bad_after || row.probation_left > 0 {
            self.mark_bad(h, now);
        }
    }

    fn mark_bad(&mut self, h: u32, now: u64) {
        let row = &mut self.holders[h as usize];
        if row.bad_until.is_some_and(|until| now < until) {
            return;
        }
        row.strikes = row.strikes.saturating_add(1);
        let spell = self.policy.bad_for_s << (row.strikes - 1).min(10);
        row.bad_until = Some(now.saturating_add(spell));
        row.failures_in_a_row = 0;
        row.read_refusals = 0;
        row.probation_left = 0;
        row.silent_since = None;
        row.silent_asks = 0;
        row.sweep = Some(0);
        self.dirty.insert(h);
    }

    /// A holder did not serve a shard (`blame`: how). The shard is lost
    /// there and its segment queued for repair; the holder is blamed
    /// only if it had proven the shard before and had not reported it
    /// missing (an owner's client can name any holder, and an honest
    /// holder that lost a disk says so).
    fn fail_slot(
        &mut self,
        txn: &WriteTransaction,
        segment: SegmentId,
        index: usize,
        holder: u32,
        blame: Blame,
        now: u64,
    ) -> Result<(), StewardError> {
        let Some(seq) = self.seq_of(txn, segment)? else {
            return Ok(());
        };
        let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
        let mut row = self.row_in(&rows, seq)?;
        let Some(slot) = row.slots.get_mut(index) else {
            return Ok(());
        };
        if slot.holder != holder || matches!(slot.state, SlotState::Failed | SlotState::Gone) {
            return Ok(());
        }
        let reported = self
            .missing
            .get(&holder)
            .is_some_and(|r| r.shards.contains_key(&slot.shard));
        let proven = slot.state == SlotState::Ok;
        slot.state = if reported {
            SlotState::Gone
        } else {
            SlotState::Failed
        };
        rows.insert(seq, row.encode().as_slice())
            .map_err(|e| self.err(e))?;
        drop(rows);
        self.queue_repair(txn, seq, now, false)?;
        if proven && !reported {
            match blame {
                Blame::Proof => self.failed(holder, now),
                Blame::Read => self.read_refused(holder, now),
            }
        }
        Ok(())
    }

    /// A holder proved a shard: a slot the client named is now proven.
    fn verify_slot(
        &mut self,
        txn: &WriteTransaction,
        segment: SegmentId,
        index: usize,
        holder: u32,
    ) -> Result<(), StewardError> {
        let Some(seq) = self.seq_of(txn, segment)? else {
            return Ok(());
        };
        let mut rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
        let mut row = self.row_in(&rows, seq)?;
        if let Some(slot) = row.slots.get_mut(index)
            && slot.holder == holder
            && slot.state == SlotState::New
        {
            slot.state = SlotState::Ok;
            rows.insert(seq, row.encode().as_slice())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Queues `seq` for the repair planner at `at`; an earlier entry wins
    /// unless `replace`.
    fn queue_repair(
        &self,
        txn: &WriteTransaction,
        seq: u64,
        at: u64,
        replace: bool,
    ) -> Result<(), StewardError> {
        let mut pending = txn.open_table(REPAIR_PENDING).map_err(|e| self.err(e))?;
        let mut queue = txn.open_table(REPAIR_QUEUE).map_err(|e| self.err(e))?;
        let old = pending
            .get(seq)
            .map_err(|e| self.err(e))?
            .map(|v| v.value());
        if let Some(old) = old {
            if old <= at && !replace {
                return Ok(());
            }
            queue.remove((old, seq)).map_err(|e| self.err(e))?;
        }
        pending.insert(seq, at).map_err(|e| self.err(e))?;
        queue.insert((at, seq), ()).map_err(|e| self.err(e))?;
        Ok(())
    }

    fn unqueue_repair(&self, txn: &WriteTransaction, seq: u64) -> Result<(), StewardError> {
        let mut pending = txn.open_table(REPAIR_PENDING).map_err(|e| self.err(e))?;
        if let Some(old) = pending
            .remove(seq)
            .map_err(|e| self.err(e))?
            .map(|v| v.value())
        {
            let mut queue = txn.open_table(REPAIR_QUEUE).map_err(|e| self.err(e))?;
            queue.remove((old, seq)).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn seq_of(
        &self,
        txn: &WriteTransaction,
        segment: SegmentId,
    ) -> Result<Option<u64>, StewardError> {
        let rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
        Ok(self.find_in(&rows, &segment.0)?.map(|(seq, _)| seq))
    }

    fn read_segment(&self, segment: SegmentId) -> Result<Option<(u64, SegmentRow)>, StewardError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let rows = txn.open_table(SEGMENTS).map_err(|e| self.err(e))?;
        self.find_in(&rows, &segment.0)
    }

    fn row_in(
        &self,
        rows: &impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
    ) -> Result<SegmentRow, StewardError> {
        let bytes =
            rows.get(seq)
                .map_err(|e| self.err(e))?
                .ok_or_else(|| StewardError::Damaged {
                    path: self.path.clone(),
                    reason: format!("segment {seq} is indexed but has no row"),
                })?;
        self.decode(seq, bytes.value())
    }

    fn decode(&self, seq: u64, bytes: &[u8]) -> Result<SegmentRow, StewardError> {
        let row = SegmentRow::decode(bytes).ok_or_else(|| StewardError::Damaged {
            path: self.path.clone(),
            reason: format!("segment row {seq} does not decode"),
        })?;
        if row
            .slots
            .iter()
            .any(|s| s.holder as usize >= self.holders.len())
        {
            return Err(StewardError::Damaged {
                path: self.path.clone(),
                reason: format!("segment row {seq} names a holder that is not in the table"),
            });
        }
        Ok(row)
    }

    /// The number of `node` in the table, given one on first sight.
    fn holder_number(&mut self, node: NodeId) -> u32 {
        if let Some(&h) = self.holder_numbers.get(&node) {
            return h;
        }
        let h = self.holders.len() as u32;
        self.holders.push(HolderRow::new(node));
        self.holder_numbers.insert(node, h);
        self.dirty.insert(h);
        h
    }

    fn save_holders(&mut self, txn: &WriteTransaction) -> Result<(), StewardError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(HOLDERS).map_err(|e| self.err(e))?;
        for h in self.dirty.drain() {
            let bytes = postcard::to_stdvec(&self.holders[h as usize]).map_err(|e| {
                StewardError::Damaged {
                    path: self.path.clone(),
                    reason: e.to_string(),
                }
            })?;
            table
                .insert(h, bytes.as_slice())
                .map_err(|e| table_error(&self.path, e))?;
        }
        Ok(())
    }

    fn begin(&self) -> Result<WriteTransaction, StewardError> {
        self.db.begin_write().map_err(|e| self.err(e))
    }

    fn commit(&self, txn: WriteTransaction) -> Result<(), StewardError> {
        txn.commit().map_err(|e| self.err(e))?;
        self.commits.set(self.commits.get() + 1);
        Ok(())
    }

    /// Durable commits made since the table opened.
    pub fn commits(&self) -> u64 {
        self.commits.get()
    }

    fn err(&self, error: impl Into<redb::Error>) -> StewardError {
        table_error(&self.path, error)
    }
}

fn table_error(path: &Path, error: impl Into<redb::Error>) -> StewardError {
    StewardError::Table {
        path: path.to_owned(),
        source: std::sync::Arc::new(error.into()),
    }
}

#[cfg(test)]
mod tests;

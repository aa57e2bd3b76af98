//! The steward's I/O: keeps the [`Steward`] table (in `redb`, in the state
//! directory), and every round asks the swarm's gossip who is up, reads
//! holders' reports of missing shards, runs the audits, repairs, moves
//! and renewals the table hands out, and tells the table how they went.
//! It dials other nodes with this node's own key, at addresses from the
//! swarm's verified membership (never from what a client says); it never
//! sees a decryption key (repair is Reed–Solomon over shards, each checked
//! against its id before and after).
//!
//! Repairs run many at a time and across rounds, with per-holder limits
//! on reads and writes; each reads k sources at once and replaces a
//! failing one with another healthy shard at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::gossip::GossipService;
use crate::steward::{
    AuditOutcome, AuditTask, Missing, MoveTask, RenewBatch, RenewOutcome, RepairEnd, RepairTask,
    Round, SegmentId, Steward, StewardError, StewardPolicy, TrackGroup, TrackedSegment, legacy,
};
use cairn_client::placement::{self, Candidate};
use cairn_client::segment::{self, Coding};
use cairn_host::{lock, unix_now};
use cairn_net::NetError;
use cairn_net::client::Peer;
use cairn_net::pool::Pool;
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_proto::{ErrorCode, MAX_RENEW, MissingState, TrackSegment};

/// The table's file in the state directory.
pub const FILE: &str = "steward.redb";
/// Longest a holder may take to answer one audit or read: past it, the
/// silence counts against the holder.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a holder's "rate limited" is waited out before it counts.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(30);
/// Reads (or writes) at one holder at a time, across repairs.
const PER_HOLDER: usize = 8;
/// How long a probe of the members' free space serves placement.
const CANDIDATES_FOR: Duration = Duration::from_secs(10);
/// Audits in flight at once.
const AUDITS_AT_ONCE: usize = 16;
/// Longest one read of the holders' missing-shard reports takes.
const MISSING_WAIT: Duration = Duration::from_secs(5);
/// Missing-shard entries taken from one holder per round, at most.
const MISSING_PER_ROUND: usize = 65_536;

/// How the steward works.
#[derive(Debug, Clone, Copy)]
pub struct StewardConfig {
    /// The table's rules.
    pub policy: StewardPolicy,
    /// How often it looks at holders and the table.
    pub tick: Duration,
}

/// Holder-index entries one `Moved` commit looks at.
const MOVED_BATCH: usize = 4096;

/// Each member the swarm's gossip knows: its address and site.
type Directory = BTreeMap<NodeId, (String, Option<String>)>;

/// The steward of this node, shared by the server (which takes `Track`,
/// `Untrack` and `Locate`) and its own loop.
pub struct StewardService {
    config: StewardConfig,
    table: Mutex<Steward>,
    /// Track requests in flight share commits.
    tracks: TrackGroup,
    /// Set while repairs or moves run, for the LED and status.
    repairing: AtomicBool,
    /// What its rounds did since start, for the page and `/metrics`.
    done: StewardDone,
}

/// What the steward's rounds did since the node started.
#[derive(Debug, Default)]
struct StewardDone {
    audits_passed: AtomicU64,
    audits_failed: AtomicU64,
    audits_unanswered: AtomicU64,
    shards_rebuilt: AtomicU64,
    shards_moved: AtomicU64,
    repairs_failed: AtomicU64,
}

/// The steward's work, as the page and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StewardProgress {
    /// Segments in its table.
    pub segments: u64,
    /// Segments waiting for a repair.
    pub repairs_queued: u64,
    /// Whether it rebuilds or moves shards right now.
    pub repairing: bool,
    /// Audits that proved the holder has the shard, since start.
    pub audits_passed: u64,
    /// Audits the holder failed (a bad proof, or not found), since start.
    pub audits_failed: u64,
    /// Audits nobody answered, since start.
    pub audits_unanswered: u64,
    /// Shards rebuilt onto new holders, since start.
    pub shards_rebuilt: u64,
    /// Shards moved off draining holders, since start.
    pub shards_moved: u64,
    /// Repairs or moves that failed (tried again later), since start.
    pub repairs_failed: u64,
}

impl StewardService {
    /// Opens (or starts) the table in `state_dir`, taking in a table an
    /// older cairnd left there.
    pub fn open(state_dir: &Path, config: StewardConfig) -> Result<Self, StewardError> {
        let mut table = Steward::open(&state_dir.join(FILE), config.policy)?;
        if let Some(count) = legacy::import(state_dir, &mut table, unix_now())? {
            info!("steward: took {count} segments over from the old table file");
        }
        Ok(Self {
            config,
            table: Mutex::new(table),
            tracks: TrackGroup::new(),
            repairing: AtomicBool::new(false),
            done: StewardDone::default(),
        })
    }

    /// What the steward holds and has done since start.
    pub fn progress(&self) -> StewardProgress {
        let (segments, repairs_queued) = {
            let table = lock(&self.table);
            (table.len(), table.queued_repairs().unwrap_or(0))
        };
        let done = &self.done;
        StewardProgress {
            segments,
            repairs_queued,
            repairing: self.repairing(),
            audits_passed: done.audits_passed.load(Ordering::Relaxed),
            audits_failed: done.audits_failed.load(Ordering::Relaxed),
            audits_unanswered: done.audits_unanswered.load(Ordering::Relaxed),
            shards_rebuilt: done.shards_rebuilt.load(Ordering::Relaxed),
            shards_moved: done.shards_moved.load(Ordering::Relaxed),
            repairs_failed: done.repairs_failed.load(Ordering::Relaxed),
        }
    }

    /// Whether the steward is rebuilding or moving shards right now.
    pub fn repairing(&self) -> bool {
        self.repairing.load(Ordering::Relaxed)
    }

    /// Takes segments the owner stored, durably (the caller proved it is
    /// the owner's client); returns how many segments the table holds for
    /// that owner.
    pub fn track(&self, owner: OwnerId, segments: &[TrackSegment]) -> Result<u64, StewardError> {
        let segments: Vec<TrackedSegment> = segments
            .iter()
            .map(|segment| TrackedSegment {
                coding: Coding {
                    k: segment.k,
                    m: segment.m,
                },
                shard_len: segment.shard_len,
                shards: segment.shards.clone(),
                lease_until: segment.lease_until,
            })
            .collect();
        self.tracks.track(&self.table, owner, segments, unix_now)
    }

    /// Stops tracking those of `segments` that are `owner`'s (the owner
    /// signed for it), durably; returns how many the owner still has.
    pub fn untrack(&self, owner: &OwnerId, segments: &[[u8; 32]]) -> Result<u64, StewardError> {
        let ids: Vec<SegmentId> = segments.iter().map(|s| SegmentId(*s)).collect();
        lock(&self.table).untrack(owner, &ids)
    }

    /// Re-points `owner`'s shards that `from` held to `to`, a bounded
    /// batch per commit, until done or `within` has passed; returns how
    /// many moved and whether more are left.
    pub fn moved(
        &self,
        owner: &OwnerId,
        from: NodeId,
        to: NodeId,
        within: std::time::Duration,
    ) -> Result<(u64, bool), StewardError> {
        let began = std::time::Instant::now();
        let (mut total, mut cursor) = (0, None);
        loop {
            let (count, next) = lock(&self.table).moved(owner, from, to, cursor, MOVED_BATCH)?;
            total += count;
            match next {
                None => return Ok((total, false)),
                Some(_) if began.elapsed() >= within => return Ok((total, true)),
                Some(at) => cursor = Some(at),
            }
        }
    }

    /// Where the shards of the owner's segments are now.
    pub fn locate(
        &self,
        owner: &OwnerId,
        segments: &[[u8; 32]],
    ) -> Result<Vec<Option<Vec<NodeId>>>, StewardError> {
        let ids: Vec<SegmentId> = segments.iter().map(|s| SegmentId(*s)).collect();
        lock(&self.table).locate(owner, &ids)
    }

    /// Runs on the table on a blocking thread (its commits fsync).
    async fn with_table<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Steward) -> T + Send + 'static,
    ) -> Option<T> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&mut lock(&this.table)))
            .await
            .ok()
    }

    /// Works the table until `stop` turns true. Dials with `pool`; takes
    /// liveness and addresses from `gossip`.
    pub async fn run(
        self: Arc<Self>,
        pool: Arc<Pool>,
        gossip: Arc<GossipService>,
        mut stop: watch::Receiver<bool>,
    ) {
        let limits = Arc::new(HolderLimits::default());
        let mut repairs: JoinSet<Finished> = JoinSet::new();
        // Audits and renewals run beside the rounds, so a holder slow to
        // answer never holds repairs up.
        let mut checks: JoinSet<Checked> = JoinSet::new();
        let mut reading_missing = false;
        let mut placing: Option<(std::time::Instant, HashSet<NodeId>, Arc<Vec<Candidate>>)> = None;
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A holder's grace ending is a moment worth a round of its own:
            // its repairs start then, not up to a tick later.
            let grace_end = lock(&self.table).next_grace_end().and_then(|due| {
                let due = std::time::UNIX_EPOCH + Duration::from_secs(due);
                due.duration_since(std::time::SystemTime::now()).ok()
            });
            let wake = tokio::time::sleep(grace_end.unwrap_or(Duration::ZERO));
            let event = tokio::select! {
                _ = ticker.tick() => Event::Tick,
                () = wake, if grace_end.is_some() => Event::Tick,
                Some(done) = repairs.join_next(), if !repairs.is_empty() => Event::Repaired(done.ok()),
                Some(done) = checks.join_next(), if !checks.is_empty() => Event::Checked(done.ok()),
                _ = stop.wait_for(|s| *s) => break,
            };
            match event {
                Event::Tick => {}
                Event::Repaired(done) => {
                    // Every repair that has ended by now goes into one commit.
                    let mut ended: Vec<Finished> = done.into_iter().collect();
                    while let Some(more) = repairs.try_join_next() {
                        ended.extend(more.ok());
                    }
                    self.record(ended).await;
                    // Refill freed slots now rather than a tick later, once
                    // a quarter of them are free.
                    if repairs.len() * 4 > self.config.policy.repairs_in_flight * 3 {
                        continue;
                    }
                }
                Event::Checked(done) => {
                    match done {
                        Some(Checked::MissingRead) | None => reading_missing = false,
                        Some(done) => self.record_checks(done).await,
                    }
                    continue;
                }
            }
            if lock(&self.table).is_empty() {
                continue;
            }
            let (directory, up) = directory(&gossip);
            self.check_liveness(&gossip, &directory);
            // Beside the rounds, one at a time: a holder slow to answer
            // never holds up the refill of repairs (it is asked again
            // once this read ends).
            if !reading_missing {
                reading_missing = true;
                let (this, pool, directory) =
                    (Arc::clone(&self), Arc::clone(&pool), directory.clone());
                checks.spawn(async move {
                    let _ =
                        tokio::time::timeout(MISSING_WAIT, this.read_missing(&pool, &directory))
                            .await;
                    Checked::MissingRead
                });
            }
            let now = unix_now();
            let round = match self.with_table(move |t| t.round(now)).await {
                Some(Ok(round)) => round,
                Some(Err(e)) => {
                    warn!("steward: {e}");
                    continue;
                }
                None => continue,
            };
            let Round {
                audits,
                repairs: rebuilds,
                moves,
                renewals,
            } = round;
            let directory = Arc::new(directory);
            if !rebuilds.is_empty() || !moves.is_empty() {
                // Probed again when the members up change or the last
                // probe is old: a disk's rebuild refills its repairs many
                // times a second, and free space moves slowly (a holder
                // that has filled up refuses, and the repair is retried).
                let fresh = placing
                    .as_ref()
                    .filter(|(at, was_up, _)| at.elapsed() < CANDIDATES_FOR && was_up == &up);
                let candidates = match fresh {
                    Some((_, _, candidates)) => Arc::clone(candidates),
                    None => {
                        let found = Arc::new(candidates(&pool, &directory, &up).await);
                        placing = Some((std::time::Instant::now(), up.clone(), Arc::clone(&found)));
                        found
                    }
                };
                for task in rebuilds {
                    let (pool, directory, candidates, limits) = (
                        Arc::clone(&pool),
                        Arc::clone(&directory),
                        Arc::clone(&candidates),
                        Arc::clone(&limits),
                    );
                    repairs.spawn(async move {
                        let outcome = repair(&pool, &task, &directory, &candidates, &limits).await;
                        Finished::Repair(task, outcome)
                    });
                }
                for task in moves {
                    let (pool, directory, candidates, limits) = (
                        Arc::clone(&pool),
                        Arc::clone(&directory),
                        Arc::clone(&candidates),
                        Arc::clone(&limits),
                    );
                    repairs.spawn(async move {
                        let outcome =
                            move_shard(&pool, &task, &directory, &candidates, &limits).await;
                        Finished::Move(task, outcome)
                    });
                }
            }
            self.repairing.store(!repairs.is_empty(), Ordering::Relaxed);
            if !audits.is_empty() {
                let (pool, directory) = (Arc::clone(&pool), Arc::clone(&directory));
                checks.spawn(
                    async move { Checked::Audits(audit_all(&pool, &directory, audits).await) },
                );
            }
            if !renewals.is_empty() {
                let (pool, directory) = (Arc::clone(&pool), Arc::clone(&directory));
                checks.spawn(async move {
                    let outcomes = renew_all(&pool, &directory, &renewals).await;
                    Checked::Renewals(renewals, outcomes)
                });
            }
        }
        checks.shutdown().await;
        repairs.shutdown().await;
        self.repairing.store(false, Ordering::Relaxed);
    }

    /// The swarm's gossip says who is up and who is draining (SWIM's
    /// verdict, many members probing directly and indirectly, beats one
    /// probe from here). A holder gossip does not know is left as it is:
    /// its audits say whether it answers.
    fn check_liveness(&self, gossip: &GossipService, directory: &Directory) {
        let mut table = lock(&self.table);
        let now = unix_now();
        let mut nodes = table.holders();
        nodes.extend(directory.keys().copied());
        nodes.sort();
        nodes.dedup();
        for node in nodes {
            let Some(view) = gossip.view(&node) else {
                continue;
            };
            if view.up {
                table.node_up(node);
                table.node_draining(node, view.member.advert.draining);
            } else {
                if !table.is_down(&node) {
                    info!(node = %node.to_human(), "steward: holder down, by the swarm's gossip");
                }
                table.node_down(node, now);
            }
        }
    }

    /// Asks each holder that is up for its report of missing shards since
    /// it was last read, and hands new entries to the table.
    async fn read_missing(self: &Arc<Self>, pool: &Arc<Pool>, directory: &Directory) {
        let asks: Vec<(NodeId, String, u64)> = {
            let table = lock(&self.table);
            table
                .holders()
                .into_iter()
                .filter(|node| !table.is_down(node) && !table.missing_pending(node))
                .filter_map(|node| {
                    let (addr, _) = directory.get(&node)?;
                    Some((node, addr.clone(), table.missing_read(&node)))
                })
                .collect()
        };
        let mut reads = JoinSet::new();
        for (node, addr, after) in asks {
            let pool = Arc::clone(pool);
            reads.spawn(async move {
                let mut entries = Vec::new();
                let mut at = after;
                let peer = pool.peer(node, &addr).await.ok()?;
                loop {
                    let (page, first, next) =
                        tokio::time::timeout(ANSWER_TIMEOUT, peer.missing(at)).await.ok()?.ok()?;
                    if next < at {
                        // The holder restarted: its report starts over.
                        at = first;
                        continue;
                    }
                    if first > at {
                        debug!(node = %node.to_human(), "steward: the holder's missing-shard report moved past what was read");
                    }
                    let last = page.last().map(|e| e.seq);
                    entries.extend(page);
                    at = last.map_or(next, |seq| seq + 1);
                    if last.is_none() || at >= next || entries.len() >= MISSING_PER_ROUND {
                        break;
                    }
                }
                Some((node, entries, at))
            });
        }
        for (node, entries, read_to) in reads.join_all().await.into_iter().flatten() {
            if entries.is_empty() {
                continue;
            }
            // The latest word about each shard wins; "back" undoes "offline".
            let mut latest: HashMap<ShardId, MissingState> = HashMap::new();
            for entry in &entries {
                latest.insert(entry.shard, entry.state);
            }
            let shards: Vec<(ShardId, Missing)> = latest
                .into_iter()
                .map(|(shard, state)| {
                    (
                        shard,
                        match state {
                            MissingState::Gone => Missing::Gone,
                            MissingState::Offline(since) => Missing::Offline(since),
                            MissingState::Back => Missing::Back,
                        },
                    )
                })
                .collect();
            info!(
                node = %node.to_human(),
                "steward: the holder reports {} shard(s) missing or back",
                shards.len()
            );
            lock(&self.table).missing(node, shards, read_to);
        }
    }

    /// Tells the table how a round's audits or renewals went.
    async fn record_checks(self: &Arc<Self>, checked: Checked) {
        let now = unix_now();
        let result = match checked {
            Checked::MissingRead => return,
            Checked::Audits(results) => {
                for (task, outcome) in &results {
                    let counter = match outcome {
                        AuditOutcome::Passed => &self.done.audits_passed,
                        AuditOutcome::Failed | AuditOutcome::NotFound => &self.done.audits_failed,
                        AuditOutcome::Unanswered => &self.done.audits_unanswered,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        AuditOutcome::Failed | AuditOutcome::NotFound => warn!(
                            holder = %task.holder.to_human(),
                            shard = %task.shard,
                            "steward: audit failed ({outcome:?}): the holder does not serve the shard it was given"
                        ),
                        AuditOutcome::Unanswered => {
                            debug!(holder = %task.holder.to_human(), "steward: audit unanswered")
                        }
                        AuditOutcome::Passed => {}
                    }
                }
                self.with_table(move |t| t.audited(&results, now)).await
            }
            Checked::Renewals(batch, outcomes) => {
                self.with_table(move |t| t.renewed(&batch, &outcomes, now))
                    .await
            }
        };
        if let Some(Err(e)) = result {
            warn!("steward: {e}");
        }
    }

    /// Tells the table how repairs and moves ended, in one commit.
    async fn record(self: &Arc<Self>, ended: Vec<Finished>) {
        let now = unix_now();
        let mut ends = Vec::with_capacity(ended.len());
        let mut drained_from = Vec::new();
        for done in ended {
            match done {
                Finished::Repair(task, Ok(done)) => {
                    info!(
                        "steward: repaired a segment: rebuilt {} shard(s) from {} read ({} bytes read, {} written)",
                        done.moved.len(),
                        task.coding.k,
                        done.read,
                        done.written
                    );
                    self.done
                        .shards_rebuilt
                        .fetch_add(done.moved.len() as u64, Ordering::Relaxed);
                    ends.push(RepairEnd::Done {
                        segment: task.segment,
                        moved: done.moved,
                    });
                }
                Finished::Move(task, Ok((to, bytes))) => {
                    info!(
                        "steward: moved shard {} ({bytes} bytes) off draining node {} to {}",
                        task.shard.1,
                        task.from.to_human(),
                        to.to_human()
                    );
                    self.done.shards_moved.fetch_add(1, Ordering::Relaxed);
                    drained_from.push(task.from);
                    ends.push(RepairEnd::Done {
                        segment: task.segment,
                        moved: vec![(task.shard.0, to)],
                    });
                }
                Finished::Repair(RepairTask { segment, .. }, Err(failure))
                | Finished::Move(MoveTask { segment, .. }, Err(failure)) => {
                    self.done.repairs_failed.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        "steward: a repair or move failed and will be tried again: {}",
                        failure.message
                    );
                    ends.push(RepairEnd::Failed {
                        segment,
                        refused: failure.refused,
                        unreachable: failure.unreachable,
                    });
                }
            }
        }
        drained_from.sort();
        drained_from.dedup();
        let result = self
            .with_table(move |t| {
                t.repairs_ended(&ends, now)?;
                for from in drained_from {
                    if !t.holds_any(&from)? {
                        info!(
                            "steward: node {} holds none of the shards this steward keeps any more",
                            from.to_human()
                        );
                    }
                }
                Ok::<(), StewardError>(())
            })
            .await;
        if let Some(Err(e)) = result {
            warn!("steward: {e}");
        }
    }
}

/// Rebuilds the `lost` shards from unchecked sources and checks each
/// against its id. `Ok(Err(liars))`: the rebuilt bytes are wrong because
/// these sources (index, holder, shard) served bytes that are not their
/// shards; `Err`: the rebuild failed for another reason.
fn rebuild_checked(
    coding: Coding,
    have: &[Source],
    lost: &[(usize, ShardId)],
) -> Result<Result<Rebuilt, Liars>, String> {
    let refs: Vec<(usize, &[u8])> = have.iter().map(|s| (s.index, s.bytes.as_slice())).collect();
    let want: Vec<usize> = lost.iter().map(|(i, _)| *i).collect();
    let rebuilt = segment::rebuild(coding, &refs, &want).map_err(|e| e.to_string())?;
    let wrong = rebuilt
        .iter()
        .zip(lost)
        .find(|((_, bytes), (_, expected))| ShardId::of(bytes) != *expected);
    let Some(((index, _), (_, expected))) = wrong else {
        return Ok(Ok(rebuilt));
    };
    let liars: Liars = have
        .iter()
        .filter(|s| ShardId::of(&s.bytes) != s.shard)
        .map(|s| (s.index, s.holder, s.shard))
        .collect();
    if liars.is_empty() {
        return Err(format!(
            "rebuilt shard {index} does not hash to {expected}; not stored"
        ));
    }
    Ok(Err(liars))
}

/// Rebuilt shards: (index, bytes).
type Rebuilt = Vec<(usize, Vec<u8>)>;

/// Sources that served bytes other than their shards: (index, holder, shard).
type Liars = Vec<(usize, NodeId, ShardId)>;

/// A source shard read for a repair, not yet checked.
struct Source {
    index: usize,
    shard: ShardId,
    holder: NodeId,
    bytes: Vec<u8>,
}

/// Whether a read shard is hashed against its id as it arrives.
#[derive(Clone, Copy)]
enum Check {
    /// Now: the bytes go on as they are.
    Now,
    /// By the caller, once it knows whether it must.
    ByCaller,
}

/// What woke the steward's loop.
enum Event {
    Tick,
    Repaired(Option<Finished>),
    Checked(Option<Checked>),
}

/// A round's audits or renewals, done.
enum Checked {
    Audits(Vec<(AuditTask, AuditOutcome)>),
    Renewals(RenewBatch, HashMap<(NodeId, ShardId), RenewOutcome>),
    /// Holders' missing-shard reports were read (and handed to the table).
    MissingRead,
}

/// Runs a round's audits, a bounded number at once.
async fn audit_all(
    pool: &Arc<Pool>,
    directory: &Directory,
    tasks: Vec<AuditTask>,
) -> Vec<(AuditTask, AuditOutcome)> {
    let gate = Arc::new(Semaphore::new(AUDITS_AT_ONCE));
    let mut audits = JoinSet::new();
    for task in tasks {
        let addr = directory.get(&task.holder).map(|(a, _)| a.clone());
        let (pool, gate) = (Arc::clone(pool), Arc::clone(&gate));
        audits.spawn(async move {
            let _turn = gate.acquire_owned().await;
            (task, audit(&pool, &task, addr).await)
        });
    }
    audits.join_all().await
}

/// Renews a round's leases, one `RenewMany` per holder and chunk.
async fn renew_all(
    pool: &Arc<Pool>,
    directory: &Directory,
    batch: &RenewBatch,
) -> HashMap<(NodeId, ShardId), RenewOutcome> {
    let until = batch.until;
    let mut asks = JoinSet::new();
    for (holder, shards) in batch.holders.clone() {
        let addr = directory.get(&holder).map(|(a, _)| a.clone());
        let pool = Arc::clone(pool);
        asks.spawn(async move {
            let mut outcomes = Vec::with_capacity(shards.len());
            let peer = match addr {
                Some(addr) => pool.peer(holder, &addr).await.ok(),
                None => None,
            };
            for chunk in shards.chunks(MAX_RENEW) {
                let answer = match &peer {
                    Some(peer) => patiently(|| peer.renew_many(chunk.to_vec(), until)).await,
                    None => Err(NetError::Refused("no address".into())),
                };
                match answer {
                    Ok(found) => outcomes.extend(chunk.iter().zip(found).map(|(shard, found)| {
                        let outcome = if found {
                            RenewOutcome::Renewed
                        } else {
                            RenewOutcome::NotFound
                        };
                        ((holder, *shard), outcome)
                    })),
                    Err(_) => outcomes.extend(
                        chunk
                            .iter()
                            .map(|shard| ((holder, *shard), RenewOutcome::Unanswered)),
                    ),
                }
            }
            outcomes
        });
    }
    asks.join_all().await.into_iter().flatten().collect()
}

/// A repair or move, ended.
enum Finished {
    Repair(RepairTask, Result<RepairDone, Failure>),
    Move(MoveTask, Result<(NodeId, u64), Failure>),
}

/// Why a repair or move did not finish, and whom it blames.
#[derive(Debug, Default)]
struct Failure {
    message: String,
    /// Sources that answered a read with an error, or not at all while
    /// connected: (shard index, holder).
    refused: Vec<(usize, NodeId)>,
    /// Sources that could not be dialled.
    unreachable: Vec<NodeId>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::default()
        }
    }
}

struct RepairDone {
    moved: Vec<(usize, NodeId)>,
    read: u64,
    written: u64,
}

/// Per-holder limits on reads and writes, shared by every repair and move.
#[derive(Default)]
struct HolderLimits {
    gates: Mutex<HashMap<NodeId, Arc<Semaphore>>>,
}

impl HolderLimits {
    fn gate(&self, node: NodeId) -> Arc<Semaphore> {
        Arc::clone(
            lock(&self.gates)
                .entry(node)
                .or_insert_with(|| Arc::new(Semaphore::new(PER_HOLDER))),
        )
    }
}

/// Each member the swarm's gossip knows, with the address it advertises
/// (membership is verified: only admitted members gossip), and those that
/// are up.
fn directory(gossip: &GossipService) -> (Directory, HashSet<NodeId>) {
    let members = gossip.members();
    let up = members
        .iter()
        .filter(|m| m.up)
        .map(|m| m.member.node)
        .collect();
    let directory = members
        .into_iter()
        .map(|m| (m.member.node, (m.member.addr, m.member.advert.site)))
        .collect();
    (directory, up)
}

/// Every member that is up, answers and is not draining, with its free
/// space: asked once per round for all repairs the round starts. (A member
/// gossip says is down is not dialled: its probe would only time out.)
async fn candidates(
    pool: &Arc<Pool>,
    directory: &Directory,
    up: &HashSet<NodeId>,
) -> Vec<Candidate> {
    let mut probes = JoinSet::new();
    for (node, (addr, site)) in directory.iter().filter(|(node, _)| up.contains(node)) {
        let (pool, node, addr, site) = (Arc::clone(pool), *node, addr.clone(), site.clone());
        probes.spawn(async move {
            let (_, stat) = pool.probe(node, &addr).await?;
            (!stat.ownership.draining).then(|| Candidate {
                node,
                site,
                free: stat.free(),
            })
        });
    }
    let mut found: Vec<Candidate> = probes.join_all().await.into_iter().flatten().collect();
    // Join order is completion order: sort so placement depends only on the seed.
    found.sort_by_key(|c| c.node);
    found
}

/// Asks again while the peer says it is rate limited, for a bounded time.
async fn patiently<T, F, Fut>(mut ask: F) -> Result<T, NetError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, NetError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, ask())
            .await
            .unwrap_or(Err(NetError::Timeout(ANSWER_TIMEOUT)));
        match answer {
            Err(NetError::Remote {
                code: ErrorCode::RateLimited,
                ..
            }) if started.elapsed() + pause < RATE_LIMIT_PATIENCE => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Whether an error means the holder never got the request (no
/// connection), rather than that it answered badly or not at all.
fn unreachable(error: &NetError) -> bool {
    matches!(
        error,
        NetError::Connect { .. }
            | NetError::Resolve(_)
            | NetError::Handshake(_)
            | NetError::Refused(_)
    )
}

async fn audit(pool: &Pool, task: &AuditTask, addr: Option<String>) -> AuditOutcome {
    let Some(addr) = addr else {
        return AuditOutcome::Unanswered;
    };
    let peer = match pool.peer(task.holder, &addr).await {
        Ok(peer) => peer,
        Err(_) => return AuditOutcome::Unanswered,
    };
    let answer = if task.read {
        // `get` checks the bytes against the shard id.
        patiently(|| peer.get(task.shard)).await.map(|_| ())
    } else {
        let mut seed = [0u8; 32];
        if getrandom::fill(&mut seed).is_err() {
            return AuditOutcome::Unanswered;
        }
        patiently(|| peer.audit(task.shard, task.shard_len, seed))
            .await
            .map(|_| ())
    };
    match answer {
        Ok(()) => AuditOutcome::Passed,
        Err(NetError::Remote {
            code: ErrorCode::NotFound,
            ..
        }) => AuditOutcome::NotFound,
        Err(e) if unreachable(&e) => {
            pool.mark_down(task.holder);
            AuditOutcome::Unanswered
        }
        // A wrong proof, any other error code, rate limits past the
        // patience, a timeout or a connection dropped mid-answer: the
        // holder had the request and did not serve it.
        Err(e) => {
            debug!(holder = %task.holder.to_human(), "steward: audit not served: {e}");
            AuditOutcome::Failed
        }
    }
}

/// Reads one source shard (verified against its id), within the holder's limit.
async fn read_source(
    pool: &Pool,
    limits: &HolderLimits,
    directory: &Directory,
    holder: NodeId,
    shard: ShardId,
    check: Check,
) -> Result<Vec<u8>, (bool, String)> {
    let addr = directory
        .get(&holder)
        .map(|(a, _)| a.clone())
        .ok_or_else(|| {
            (
                true,
                format!("no address known for node {}", holder.to_human()),
            )
        })?;
    let _turn = limits.gate(holder).acquire_owned().await;
    let peer: Arc<Peer> = pool
        .peer(holder, &addr)
        .await
        .map_err(|e| (true, format!("source {}: {e}", holder.to_human())))?;
    let read = match check {
        Check::Now => patiently(|| peer.get(shard)).await,
        Check::ByCaller => patiently(|| peer.get_raw(shard, None)).await,
    };
    read.map_err(|e| {
        (
            unreachable(&e),
            format!("reading shard {shard} from {}: {e}", holder.to_human()),
        )
    })
}

/// Reads k of the task's sources at once; a source that fails is
/// replaced by the next healthy one at once. The bytes are not checked
/// here: the rebuilt shards are, and only if they fail are the sources
/// hashed to find which one lied (an MDS code's every output depends on
/// every input, so a wrong source never goes unnoticed).
async fn read_k(
    pool: &Arc<Pool>,
    limits: &Arc<HolderLimits>,
    directory: &Arc<Directory>,
    k: usize,
    sources: &[(usize, ShardId, NodeId)],
) -> Result<(Vec<Source>, Failure), Failure> {
    let mut failure = Failure::default();
    let mut have = Vec::with_capacity(k);
    let mut next = 0;
    let mut reads = JoinSet::new();
    let start = |reads: &mut JoinSet<_>, (index, shard, holder): (usize, ShardId, NodeId)| {
        let (pool, limits, directory) =
            (Arc::clone(pool), Arc::clone(limits), Arc::clone(directory));
        reads.spawn(async move {
            let read =
                read_source(&pool, &limits, &directory, holder, shard, Check::ByCaller).await;
            (index, holder, shard, read)
        });
    };
    while next < sources.len() && next < k {
        start(&mut reads, sources[next]);
        next += 1;
    }
    while let Some(joined) = reads.join_next().await {
        let Ok((index, holder, shard, read)) = joined else {
            continue;
        };
        match read {
            Ok(bytes) => have.push(Source {
                index,
                shard,
                holder,
                bytes,
            }),
            Err((unreachable, message)) => {
                if unreachable {
                    failure.unreachable.push(holder);
                } else {
                    failure.refused.push((index, holder));
                }
                failure.message = message;
                if next < sources.len() {
                    start(&mut reads, sources[next]);
                    next += 1;
                }
            }
        }
        if have.len() == k {
            reads.abort_all();
            return Ok((have, failure));
        }
    }
    if failure.message.is_empty() {
        failure.message = format!("only {} of {k} sources could be read", have.len());
    } else {
        failure.message = format!(
            "only {} of {k} sources could be read; last: {}",
            have.len(),
            failure.message
        );
    }
    Err(failure)
}

/// Reads k shards, rebuilds the lost ones, checks each against its id,
/// places them on new nodes (spread over sites, never k on one node) and
/// stores them under the owner with the segment's lease.
async fn repair(
    pool: &Arc<Pool>,
    task: &RepairTask,
    directory: &Arc<Directory>,
    candidates: &[Candidate],
    limits: &Arc<HolderLimits>,
) -> Result<RepairDone, Failure> {
    let k = usize::from(task.coding.k);
    let (have, blamed) = read_k(pool, limits, directory, k, &task.sources).await?;
    let read: u64 = have.iter().map(|s| s.bytes.len() as u64).sum();
    let (coding, lost) = (task.coding, task.lost.clone());
    let rebuilt = tokio::task::spawn_blocking(move || rebuild_checked(coding, &have, &lost))
        .await
        .map_err(|e| Failure::new(e.to_string()))?
        .map_err(Failure::new)?;
    let rebuilt = match rebuilt {
        Ok(rebuilt) => rebuilt,
        Err(liars) => {
            let message = liars
                .iter()
                .map(|(_, holder, shard)| {
                    format!(
                        "node {} served bytes that are not shard {shard}",
                        holder.to_human()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Failure {
                message: format!("{message}; nothing rebuilt from them was stored"),
                refused: liars.iter().map(|(i, h, _)| (*i, *h)).collect(),
                unreachable: Vec::new(),
            });
        }
    };
    let keep: Vec<(usize, NodeId)> = task.keep.clone();
    let mut written = 0;
    let mut moved = Vec::new();
    let mut stores = JoinSet::new();
    let indices: Vec<usize> = rebuilt.iter().map(|(i, _)| *i).collect();
    let new = place_new(
        directory,
        candidates,
        Placing {
            coding: task.coding,
            keep: &keep,
            indices: &indices,
            shard_len: task.shard_len,
            avoid: &task.avoid,
            seed: task.segment.0,
        },
    )
    .map_err(Failure::new)?;
    for (((index, bytes), (_, id)), node) in rebuilt.into_iter().zip(&task.lost).zip(new) {
        let (pool, directory, limits, id) = (
            Arc::clone(pool),
            Arc::clone(directory),
            Arc::clone(limits),
            *id,
        );
        let (owner, lease_until) = (task.owner, task.lease_until);
        stores.spawn(async move {
            let len = bytes.len() as u64;
            let stored = store_on(
                &pool,
                &directory,
                &limits,
                node,
                id,
                bytes.into(),
                (owner, lease_until),
            )
            .await;
            (index, node, len, stored)
        });
    }
    let mut errors = Vec::new();
    for (index, node, len, stored) in stores.join_all().await {
        match stored {
            Ok(()) => {
                written += len;
                moved.push((index, node));
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() && moved.is_empty() {
        return Err(Failure {
            message: errors.join("; "),
            ..blamed
        });
    }
    // Shards stored are kept (the table records them); the rest are
    // rebuilt on the next look at the segment.
    if !errors.is_empty() {
        warn!(
            "steward: a repair stored {} of {} shards: {}",
            moved.len(),
            moved.len() + errors.len(),
            errors.join("; ")
        );
    }
    moved.sort();
    Ok(RepairDone {
        moved,
        read,
        written,
    })
}

/// Moves one shard off a draining holder: read there (verified), stored on
/// a new node. Returns the new holder and the bytes moved.
async fn move_shard(
    pool: &Arc<Pool>,
    task: &MoveTask,
    directory: &Arc<Directory>,
    candidates: &[Candidate],
    limits: &Arc<HolderLimits>,
) -> Result<(NodeId, u64), Failure> {
    let (index, shard) = task.shard;
    let bytes = read_source(pool, limits, directory, task.from, shard, Check::Now)
        .await
        .map_err(|(unreachable, message)| Failure {
            message,
            refused: if unreachable {
                vec![]
            } else {
                vec![(index, task.from)]
            },
            unreachable: if unreachable { vec![task.from] } else { vec![] },
        })?;
    // `avoid` names every draining node, this one too.
    let new = place_new(
        directory,
        candidates,
        Placing {
            coding: task.coding,
            keep: &task.keep,
            indices: &[index],
            shard_len: task.shard_len,
            avoid: &task.avoid,
            seed: task.segment.0,
        },
    )
    .map_err(Failure::new)?;
    let to = new[0];
    let len = bytes.len() as u64;
    store_on(
        pool,
        directory,
        limits,
        to,
        shard,
        bytes.into(),
        (task.owner, task.lease_until),
    )
    .await
    .map_err(Failure::new)?;
    Ok((to, len))
}

/// Stores shard `id` (`bytes`, checked against it by the caller) on
/// `node` under `owner`.
async fn store_on(
    pool: &Pool,
    directory: &Directory,
    limits: &HolderLimits,
    node: NodeId,
    id: ShardId,
    bytes: bytes::Bytes,
    (owner, lease_until): (OwnerId, u64),
) -> Result<(), String> {
    let addr = directory
        .get(&node)
        .map(|(a, _)| a.clone())
        .ok_or_else(|| format!("no address known for node {}", node.to_human()))?;
    let _turn = limits.gate(node).acquire_owned().await;
    let peer = pool
        .peer(node, &addr)
        .await
        .map_err(|e| format!("new holder {}: {e}", node.to_human()))?;
    patiently(|| peer.put(id, bytes.clone(), owner, lease_until))
        .await
        .map(|_| ())
        .map_err(|e| format!("storing on {}: {e}", node.to_human()))
}

/// What a placement of rebuilt or moved shards must respect.
struct Placing<'a> {
    coding: Coding,
    /// The segment's other holders, by index: they stay.
    keep: &'a [(usize, NodeId)],
    /// The indices to place.
    indices: &'a [usize],
    shard_len: u64,
    /// Nodes never to use.
    avoid: &'a [NodeId],
    /// Seeds the weighted draw (the segment id: the same plan on a retry).
    seed: [u8; 32],
}

/// New holders for the shards at `indices`: members that answered this
/// round, have room, are not draining, hold nothing of the segment and
/// are not in `avoid`; on sites the segment does not use where possible.
/// The whole segment's holders then pass the placement check (never k on
/// one node).
fn place_new(
    directory: &Directory,
    candidates: &[Candidate],
    placing: Placing<'_>,
) -> Result<Vec<NodeId>, String> {
    let Placing {
        coding,
        keep,
        indices,
        shard_len,
        avoid,
        seed,
    } = placing;
    let kept: Vec<NodeId> = keep.iter().map(|(_, n)| *n).collect();
    let usable: Vec<Candidate> = candidates
        .iter()
        .filter(|c| !kept.contains(&c.node) && !avoid.contains(&c.node))
        .cloned()
        .collect();
    let used_sites: HashSet<Option<String>> = kept
        .iter()
        .map(|n| directory.get(n).and_then(|(_, site)| site.clone()))
        .collect();
    let fresh: Vec<Candidate> = usable
        .iter()
        .filter(|c| c.site.is_none() || !used_sites.contains(&c.site))
        .cloned()
        .collect();
    let new = placement::place_n(&fresh, coding, indices.len(), shard_len, seed, &kept)
        .or_else(|_| placement::place_n(&usable, coding, indices.len(), shard_len, seed, &kept))
        .map_err(|e| e.to_string())?;
    let mut holders = vec![NodeId([0; 32]); coding.total()];
    for (index, node) in keep {
        holders[*index] = *node;
    }
    for (index, node) in indices.iter().zip(&new) {
        holders[*index] = *node;
    }
    // Indices neither kept nor placed (shards merely down, not rebuilt)
    // keep their place in the check as distinct unknowns.
    for (i, holder) in holders.iter_mut().enumerate() {
        if *holder == NodeId([0; 32]) {
            let mut id = [0xff; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            *holder = NodeId(id);
        }
    }
    placement::check(&holders, coding).map_err(|e| e.to_string())?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that serves other bytes is named, and nothing rebuilt
    /// from it passes; honest sources rebuild the lost shard exactly.
    #[test]
    fn a_lying_source_is_found_only_when_the_rebuilt_shard_is_wrong() {
        let coding = Coding { k: 4, m: 2 };
        let sealed = segment::seal(&[3; 32], coding, &[7u8; 10_000]).unwrap();
        let holder = |i: usize| NodeId([i as u8; 32]);
        let sources = |corrupt: Option<usize>| -> Vec<Source> {
            [0usize, 2, 3, 5]
                .iter()
                .map(|&i| {
                    let (shard, bytes) = &sealed.shards[i];
                    let mut bytes = bytes.clone();
                    if corrupt == Some(i) {
                        bytes[17] ^= 1;
                    }
                    Source {
                        index: i,
                        shard: *shard,
                        holder: holder(i),
                        bytes,
                    }
                })
                .collect()
        };
        let lost = [(1, sealed.shards[1].0), (4, sealed.shards[4].0)];
        let rebuilt = rebuild_checked(coding, &sources(None), &lost)
            .unwrap()
            .unwrap();
        assert_eq!(rebuilt[0].1, sealed.shards[1].1);
        assert_eq!(rebuilt[1].1, sealed.shards[4].1);
        for liar in [0, 2, 3, 5] {
            let blamed = rebuild_checked(coding, &sources(Some(liar)), &lost)
                .unwrap()
                .unwrap_err();
            assert_eq!(blamed, [(liar, holder(liar), sealed.shards[liar].0)]);
        }
        // Sources that are right but rebuild something else (a wrong id
        // asked for): nobody is blamed.
        let wrong_id = [(1, ShardId([0; 32]))];
        assert!(rebuild_checked(coding, &sources(None), &wrong_id).is_err());
    }
}

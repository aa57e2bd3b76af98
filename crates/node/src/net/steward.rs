//! The steward's I/O: keeps the [`Steward`] table on disk, and on every tick
//! asks holders whether they are up, audits shards, repairs segments and
//! renews leases, as the table decides. It dials other nodes with this
//! node's own key; it never sees a decryption key (repair is Reed–Solomon
//! over shards, each checked against its id before and after).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::gossip::GossipService;
use crate::steward::{
    AuditOutcome, AuditTask, MoveTask, RepairTask, Steward, StewardPolicy, TrackedSegment,
};
use cairn_client::placement::{self, Candidate};
use cairn_client::segment::{self, Coding};
use cairn_host::{lock, unix_now};
use cairn_net::NetError;
use cairn_net::pool::Pool;
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_proto::{ErrorCode, NodeAddr, TrackSegment};

const FILE: &str = "steward.bin";

/// How the steward works.
#[derive(Debug, Clone, Copy)]
pub struct StewardConfig {
    /// The table's rules.
    pub policy: StewardPolicy,
    /// How often it looks at holders and the table.
    pub tick: Duration,
    /// Audits per tick, at most.
    pub audits_per_tick: usize,
}

/// Why the steward's table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StewardError {
    /// The table file could not be read or written.
    #[error("the steward table {path}: {source}; check the state directory's disk")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The table file is not one this program wrote.
    #[error(
        "the steward table {path} is damaged ({reason}); move it aside to start an empty table (an owner's client hands over a file's segments again when it next puts that file)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Each node the owners named: its address and site.
type Directory = BTreeMap<NodeId, (String, Option<String>)>;

#[derive(Serialize, Deserialize)]
struct State {
    steward: Steward,
    /// Where each node is: address and site.
    directory: Directory,
}

/// The steward of this node, shared by the server (which takes `Track` and
/// answers `Locate`) and its own loop.
pub struct StewardService {
    path: PathBuf,
    config: StewardConfig,
    state: Mutex<State>,
    /// Serialises saves; holds the hash of the table as last saved, so an
    /// unchanged table is not written again.
    saved: Mutex<[u8; 32]>,
    /// Set while a round rebuilds or moves shards, for the LED and status.
    repairing: AtomicBool,
}

impl StewardService {
    /// Opens (or starts) the table in `state_dir`.
    pub fn open(state_dir: &Path, config: StewardConfig) -> Result<Self, StewardError> {
        let path = state_dir.join(FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let mut state: State =
                    postcard::from_bytes(&bytes).map_err(|e| StewardError::Damaged {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                state.steward.set_policy(config.policy);
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                steward: Steward::new(config.policy),
                directory: BTreeMap::new(),
            },
            Err(source) => return Err(StewardError::Io { path, source }),
        };
        Ok(Self {
            path,
            config,
            state: Mutex::new(state),
            saved: Mutex::new([0; 32]),
            repairing: AtomicBool::new(false),
        })
    }

    /// Whether the steward is rebuilding or moving shards right now.
    pub fn repairing(&self) -> bool {
        self.repairing.load(Ordering::Relaxed)
    }

    /// Takes segments an owner stored, durably; returns how many segments
    /// the table holds for that owner.
    pub fn track(
        &self,
        owner: OwnerId,
        nodes: &[NodeAddr],
        segments: &[TrackSegment],
    ) -> Result<u64, StewardError> {
        let now = unix_now();
        let count = {
            let mut state = lock(&self.state);
            for node in nodes {
                state
                    .directory
                    .insert(node.node, (node.addr.clone(), node.site.clone()));
            }
            for segment in segments {
                state.steward.track(
                    TrackedSegment {
                        owner,
                        coding: Coding {
                            k: segment.k,
                            m: segment.m,
                        },
                        shard_len: segment.shard_len,
                        shards: segment
                            .shards
                            .iter()
                            .map(|(shard, holder)| (*shard, *holder))
                            .collect(),
                        lease_until: segment.lease_until,
                    },
                    now,
                );
            }
            state.steward.count(&owner) as u64
        };
        self.save()?;
        Ok(count)
    }

    /// Stops tracking those of `segments` that are `owner`'s (the owner
    /// signed for it), durably; returns how many the owner still has.
    pub fn untrack(&self, owner: &OwnerId, segments: &[[u8; 32]]) -> Result<u64, StewardError> {
        let count = {
            let mut state = lock(&self.state);
            for segment in segments {
                state
                    .steward
                    .untrack_owned(owner, crate::steward::SegmentId(*segment));
            }
            state.steward.count(owner) as u64
        };
        self.save()?;
        Ok(count)
    }

    /// Where the owner's shards are now (`None`: not in the table).
    pub fn locate(&self, owner: &OwnerId, shards: &[ShardId]) -> Vec<Option<NodeId>> {
        let state = lock(&self.state);
        let known: HashMap<ShardId, NodeId> = state.steward.locations(owner).into_iter().collect();
        shards.iter().map(|s| known.get(s).copied()).collect()
    }

    /// Works the table until `stop` turns true: liveness, audits, repairs,
    /// renewals, each tick. Dials from `endpoint` as `identity`, showing
    /// the node's swarm membership; takes liveness from `gossip`.
    pub async fn run(
        self: Arc<Self>,
        pool: Arc<Pool>,
        gossip: Arc<GossipService>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if lock(&self.state).steward.is_empty() {
                continue;
            }
            self.tick(&pool, &gossip).await;
            if let Err(e) = self.save() {
                warn!("steward: {e}");
            }
        }
    }

    async fn tick(self: &Arc<Self>, pool: &Arc<Pool>, gossip: &GossipService) {
        self.check_liveness(pool, gossip).await;
        self.run_audits(pool).await;
        self.run_repairs(pool).await;
        self.run_moves(pool).await;
        self.run_renewals(pool).await;
    }

    fn directory(&self) -> Directory {
        lock(&self.state).directory.clone()
    }

    /// Whether each holder is up (and draining): the swarm's gossip says
    /// so for members it knows (SWIM's verdict, many members probing and
    /// probing indirectly, beats one probe from here); the others are
    /// asked directly.
    async fn check_liveness(&self, pool: &Arc<Pool>, gossip: &GossipService) {
        let directory = self.directory();
        // Every node it may read from or place on, so repairs skip dead ones.
        let mut holders = lock(&self.state).steward.holders();
        holders.extend(directory.keys().copied());
        holders.sort();
        holders.dedup();
        let mut asks = JoinSet::new();
        let now = unix_now();
        for node in holders {
            if let Some(view) = gossip.view(&node) {
                let mut state = lock(&self.state);
                if view.up {
                    state.steward.node_up(node);
                    state
                        .steward
                        .node_draining(node, view.member.advert.draining);
                } else {
                    if !state.steward.is_down(&node) {
                        info!(node = %node.to_human(), "steward: holder down, by the swarm's gossip");
                    }
                    state.steward.node_down(node, now);
                }
                continue;
            }
            let Some((addr, _)) = directory.get(&node).cloned() else {
                continue;
            };
            let pool = Arc::clone(pool);
            asks.spawn(async move {
                let answer = pool.probe(node, &addr).await;
                (node, answer.map(|(_, stat)| stat.ownership.draining))
            });
        }
        for (node, answer) in asks.join_all().await {
            let mut state = lock(&self.state);
            match answer {
                Some(draining) => {
                    state.steward.node_up(node);
                    state.steward.node_draining(node, draining);
                }
                None => state.steward.node_down(node, now),
            }
        }
    }

    async fn run_audits(&self, pool: &Arc<Pool>) {
        let tasks = lock(&self.state)
            .steward
            .audits(unix_now(), self.config.audits_per_tick);
        let directory = self.directory();
        let mut audits = JoinSet::new();
        for task in tasks {
            let addr = directory.get(&task.holder).map(|(a, _)| a.clone());
            let pool = Arc::clone(pool);
            audits.spawn(async move { (task, audit(&pool, &task, addr).await) });
        }
        let now = unix_now();
        for (task, outcome) in audits.join_all().await {
            if outcome == AuditOutcome::Failed {
                warn!(holder = %task.holder.to_human(), shard = %task.shard, "steward: audit failed: the holder does not have the shard it was given");
            }
            lock(&self.state).steward.audited(&task, outcome, now);
        }
    }

    async fn run_repairs(&self, pool: &Arc<Pool>) {
        let tasks = lock(&self.state).steward.repairs(unix_now());
        let directory = self.directory();
        let _busy = Busy::new(&self.repairing, !tasks.is_empty());
        for task in tasks {
            match repair(pool, &task, &directory).await {
                Ok(done) => {
                    info!(
                        "steward: repaired a segment: rebuilt {} shard(s) from {} read ({} bytes read, {} written)",
                        done.moved.len(),
                        task.sources.len(),
                        done.read,
                        done.written
                    );
                    lock(&self.state)
                        .steward
                        .repaired(task.segment, &done.moved, unix_now());
                }
                Err(e) => {
                    warn!("steward: a repair failed and will be tried again: {e}");
                    lock(&self.state).steward.repair_failed(task.segment);
                }
            }
        }
    }

    async fn run_moves(&self, pool: &Arc<Pool>) {
        let tasks = lock(&self.state).steward.moves(unix_now());
        let directory = self.directory();
        let _busy = Busy::new(&self.repairing, !tasks.is_empty());
        for task in tasks {
            match move_shard(pool, &task, &directory).await {
                Ok((to, bytes)) => {
                    info!(
                        "steward: moved shard {} ({bytes} bytes) off draining node {} to {}",
                        task.shard.1,
                        task.from.to_human(),
                        to.to_human()
                    );
                    let mut state = lock(&self.state);
                    state
                        .steward
                        .repaired(task.segment, &[(task.shard.0, to)], unix_now());
                    if state.steward.held_by(&task.from) == 0 {
                        info!(
                            "steward: node {} holds none of the shards this steward keeps any more",
                            task.from.to_human()
                        );
                    }
                }
                Err(e) => {
                    warn!(
                        "steward: moving a shard off a draining node failed and will be tried again: {e}"
                    );
                    lock(&self.state).steward.repair_failed(task.segment);
                }
            }
        }
    }

    async fn run_renewals(&self, pool: &Arc<Pool>) {
        let tasks = lock(&self.state).steward.renewals(unix_now());
        let directory = self.directory();
        for task in tasks {
            let mut all = true;
            for (shard, holder) in &task.shards {
                let Some((addr, _)) = directory.get(holder) else {
                    all = false;
                    continue;
                };
                let renewed = match pool.peer(*holder, addr).await {
                    Ok(peer) => peer.renew(*shard, task.until).await.unwrap_or(false),
                    Err(_) => false,
                };
                all &= renewed;
            }
            // A holder that missed it is asked again next tick; one that
            // lost the shard fails its next audit and the shard is repaired.
            if all {
                lock(&self.state).steward.renewed(task.segment, task.until);
            }
        }
    }

    /// Writes the table durably, unless it is as last saved (most rounds
    /// change nothing, and a round may be a second).
    fn save(&self) -> Result<(), StewardError> {
        let mut saved = lock(&self.saved);
        let bytes = postcard::to_stdvec(&*lock(&self.state)).map_err(|e| StewardError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        let hash = *blake3::hash(&bytes).as_bytes();
        if hash == *saved {
            return Ok(());
        }
        cairn_host::durable::replace_file(&self.path, &bytes, 0o644).map_err(|source| {
            StewardError::Io {
                path: self.path.clone(),
                source,
            }
        })?;
        *saved = hash;
        Ok(())
    }
}

async fn audit(pool: &Pool, task: &AuditTask, addr: Option<String>) -> AuditOutcome {
    let Some(addr) = addr else {
        return AuditOutcome::Unreachable;
    };
    let peer = match pool.peer(task.holder, &addr).await {
        Ok(peer) => peer,
        Err(_) => return AuditOutcome::Unreachable,
    };
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        return AuditOutcome::Unreachable;
    }
    match peer.audit(task.shard, task.shard_len, seed).await {
        Ok(_) => AuditOutcome::Passed,
        // A wrong proof, or "not found" for a shard it was given: lost there.
        Err(NetError::Corrupt(_))
        | Err(NetError::Remote {
            code: ErrorCode::NotFound | ErrorCode::BadRequest,
            ..
        }) => AuditOutcome::Failed,
        Err(e) => {
            debug!(holder = %task.holder.to_human(), "steward: audit unanswered: {e}");
            pool.mark_down(task.holder);
            AuditOutcome::Unreachable
        }
    }
}

struct RepairDone {
    moved: Vec<(usize, NodeId)>,
    read: u64,
    written: u64,
}

/// Reads k shards, rebuilds the lost ones, checks each against its id,
/// places them on new nodes (spread over sites, never k on one node) and
/// stores them under the owner with the segment's lease.
async fn repair(
    pool: &Arc<Pool>,
    task: &RepairTask,
    directory: &Directory,
) -> Result<RepairDone, String> {
    let mut have = Vec::with_capacity(task.sources.len());
    let mut read = 0u64;
    for (index, shard, holder) in &task.sources {
        let peer = pool
            .peer(*holder, address_of(directory, holder)?)
            .await
            .map_err(|e| format!("source {}: {e}", holder.to_human()))?;
        // `get` checks the bytes against the shard id.
        let bytes = peer
            .get(*shard)
            .await
            .map_err(|e| format!("reading shard {shard} from {}: {e}", holder.to_human()))?;
        read += bytes.len() as u64;
        have.push((*index, bytes));
    }
    let have_refs: Vec<(usize, &[u8])> = have.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    let want: Vec<usize> = task.lost.iter().map(|(i, _)| *i).collect();
    let rebuilt = segment::rebuild(task.coding, &have_refs, &want).map_err(|e| e.to_string())?;
    for ((index, bytes), (_, expected)) in rebuilt.iter().zip(&task.lost) {
        if ShardId::of(bytes) != *expected {
            return Err(format!(
                "rebuilt shard {index} does not hash to {expected}: a source lied; not stored"
            ));
        }
    }

    let new = place_new(
        pool,
        directory,
        Placing {
            coding: task.coding,
            keep: &task.keep,
            indices: &want,
            shard_len: task.shard_len,
            avoid: &task.avoid,
            seed: task.segment.0,
        },
    )
    .await?;

    let mut written = 0;
    let mut moved = Vec::new();
    for ((index, bytes), node) in rebuilt.into_iter().zip(&new) {
        written += bytes.len() as u64;
        store_on(
            pool,
            directory,
            *node,
            bytes.into(),
            task.owner,
            task.lease_until,
        )
        .await?;
        moved.push((index, *node));
    }
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
    directory: &Directory,
) -> Result<(NodeId, u64), String> {
    let (index, shard) = task.shard;
    let bytes = pool
        .peer(task.from, address_of(directory, &task.from)?)
        .await
        .map_err(|e| e.to_string())?
        .get(shard)
        .await
        .map_err(|e| format!("reading shard {shard} from {}: {e}", task.from.to_human()))?;
    // `avoid` names every draining node, this one too.
    let new = place_new(
        pool,
        directory,
        Placing {
            coding: task.coding,
            keep: &task.keep,
            indices: &[index],
            shard_len: task.shard_len,
            avoid: &task.avoid,
            seed: task.segment.0,
        },
    )
    .await?;
    let to = new[0];
    let len = bytes.len() as u64;
    store_on(
        pool,
        directory,
        to,
        bytes.into(),
        task.owner,
        task.lease_until,
    )
    .await?;
    Ok((to, len))
}

/// Stores `bytes` (a shard, named by its hash) on `node` under `owner`.
async fn store_on(
    pool: &Pool,
    directory: &Directory,
    node: NodeId,
    bytes: bytes::Bytes,
    owner: OwnerId,
    lease_until: u64,
) -> Result<(), String> {
    pool.peer(node, address_of(directory, &node)?)
        .await
        .map_err(|e| format!("new holder {}: {e}", node.to_human()))?
        .put(ShardId::of(&bytes), bytes, owner, lease_until)
        .await
        .map(|_| ())
        .map_err(|e| format!("storing on {}: {e}", node.to_human()))
}

/// Where `node` listens, from the owners' node lists.
fn address_of<'a>(directory: &'a Directory, node: &NodeId) -> Result<&'a str, String> {
    directory
        .get(node)
        .map(|(addr, _)| addr.as_str())
        .ok_or_else(|| format!("no address known for node {}", node.to_human()))
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

/// New holders for the shards at `indices`: nodes that answer, have room,
/// are not draining, hold nothing of the segment and are not in `avoid`;
/// on sites the segment does not use where possible. The whole segment's
/// holders then pass the placement check (never k on one node).
async fn place_new(
    pool: &Arc<Pool>,
    directory: &Directory,
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
    let mut probes = JoinSet::new();
    for (node, (addr, site)) in directory {
        if kept.contains(node) || avoid.contains(node) {
            continue;
        }
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
    let mut candidates: Vec<Candidate> = probes.join_all().await.into_iter().flatten().collect();
    // Join order is completion order: sort so placement depends only on the seed.
    candidates.sort_by_key(|c| c.node);
    let used_sites: Vec<Option<String>> = kept
        .iter()
        .map(|n| directory.get(n).and_then(|(_, site)| site.clone()))
        .collect();
    let fresh: Vec<Candidate> = candidates
        .iter()
        .filter(|c| c.site.is_none() || !used_sites.contains(&c.site))
        .cloned()
        .collect();
    let new = placement::place_n(&fresh, coding, indices.len(), shard_len, seed, &kept)
        .or_else(|_| placement::place_n(&candidates, coding, indices.len(), shard_len, seed, &kept))
        .map_err(|e| e.to_string())?;
    let mut holders = vec![NodeId([0; 32]); coding.total()];
    for (index, node) in keep {
        holders[*index] = *node;
    }
    for (index, node) in indices.iter().zip(&new) {
        holders[*index] = *node;
    }
    placement::check(&holders, coding).map_err(|e| e.to_string())?;
    Ok(new)
}

/// Holds a flag up while work runs, and lowers it however the work ends.
struct Busy<'a>(&'a AtomicBool);

impl<'a> Busy<'a> {
    fn new(flag: &'a AtomicBool, busy: bool) -> Option<Self> {
        busy.then(|| {
            flag.store(true, Ordering::Relaxed);
            Self(flag)
        })
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The LED shows "repairing" from this flag: it must be up for exactly
    /// as long as a round has rebuilds or moves to do, however the round
    /// ends (a failed repair returns early through `?` or panics).
    #[test]
    fn the_repairing_flag_is_up_only_while_there_is_work() {
        let flag = AtomicBool::new(false);
        {
            let _idle = Busy::new(&flag, false);
            assert!(!flag.load(Ordering::Relaxed));
        }
        {
            let _busy = Busy::new(&flag, true);
            assert!(flag.load(Ordering::Relaxed));
        }
        assert!(!flag.load(Ordering::Relaxed));
        let unwound = std::panic::catch_unwind(|| {
            let _busy = Busy::new(&flag, true);
            panic!("a repair failed");
        });
        assert!(unwound.is_err());
        assert!(!flag.load(Ordering::Relaxed));
    }
}

//! The owner's client talking to its nodes: place and store sealed
//! segments, read pieces back from the fastest holders (a few segments in
//! flight, a small cache of packs), keep the owner's root record on every
//! node, and tell the steward what to track, untrack and where shards are.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::catalog::{SegmentRef, ShardRef};
use super::chunk::{ChunkSizes, chunks};
use super::keys::OwnerKeys;
use super::placement::{self, Candidate};
use super::segment::{self, Coding};
use super::tree::{Located, RootPointer, SNAPSHOT_FORMAT, StoredRef};
use cairn_host::unix_now;
use cairn_net::identity::Identity;
use cairn_net::pool::{PROBE_TIMEOUT, PoolConfig};
use cairn_net::{NetError, Peer, Pool, RouteTable, Routes};
use cairn_proto::ids::{NodeId, ShardId};
use cairn_proto::membership::MemberCert;
use cairn_proto::root::RootRecord;
use cairn_proto::{ErrorCode, MAX_LOCATE, MAX_TRACK, NodeAddr, SteerGrant, TrackSegment};

/// How long shards are kept before the steward must renew them.
pub const LEASE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Segments being fetched at once (each is k parallel shard gets). Reads
/// wait on round trips more than on the CPU, so more are in flight.
const GET_SEGMENTS_IN_FLIGHT: usize = 32;
/// A node that failed is not dialled again for this long.
const DOWN_FOR: Duration = Duration::from_secs(60);
/// How long the root lookup waits for more nodes after the first answer.
const ROOT_GRACE: Duration = Duration::from_millis(1000);
/// Attempts to place one shard before the upload gives up.
const PLACE_ATTEMPTS: usize = 4;
/// How long a request waits on a node that answers RateLimited before
/// that answer counts as the node's failure.
const RATE_LIMIT_PATIENCE: Duration = Duration::from_secs(30);
/// Pack segments kept decoded for reads that come back to the same pack.
const PACK_CACHE: usize = 16;

/// What went wrong moving data to or from the swarm.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// Reading the input or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Fewer nodes answer (and take shards) than a segment has shards.
    #[error(
        "only {have} of your nodes can take shards now and {need} are needed ({why}); start them, or add nodes"
    )]
    TooFewNodes {
        /// Nodes that answered and are not draining.
        have: usize,
        /// k + m.
        need: usize,
        /// What the others said.
        why: String,
    },
    /// Not enough nodes to place shards.
    #[error(transparent)]
    Placement(#[from] placement::PlacementError),
    /// A segment could not be sealed or opened.
    #[error(transparent)]
    Segment(#[from] segment::SegmentError),
    /// Fewer than k holders of a segment answered with a good shard.
    #[error(
        "segment {index} cannot be read: only {good} good shards of the {need} needed could be fetched ({detail}); bring its holders back online"
    )]
    Unreadable {
        /// Which segment of the blob.
        index: usize,
        /// Good shards fetched.
        good: usize,
        /// k.
        need: usize,
        /// What went wrong with the others.
        detail: String,
    },
    /// A shard could not be stored anywhere.
    #[error("a shard could not be stored: {0}")]
    Upload(String),
    /// A task of the client itself failed (a bug, or the system refused).
    #[error("cairn failed internally ({0}); please report this with the command you ran")]
    Task(String),
    /// The steward could not be reached or refused.
    #[error("the steward: {0}")]
    Steward(String),
    /// The client's own key could not be used on the network.
    #[error("cannot open a network endpoint: {0}")]
    Endpoint(NetError),
    /// No node answered for the root record.
    #[error("no node could be asked for the root record ({0}); check that your nodes are running")]
    NoRoot(String),
    /// A record or catalog failed to decode.
    #[error(
        "stored data does not decode ({0}); it was written by an incompatible cairn, or is damaged"
    )]
    Decode(String),
}

/// What a transfer did, for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Plaintext bytes.
    pub bytes: u64,
    /// Segments.
    pub segments: usize,
    /// Shard bytes sent or received.
    pub shard_bytes: u64,
    /// Segments rebuilt from parity because data shards were missing.
    pub decoded: usize,
    /// Shards that failed verification: `(shard, holder)`.
    pub bad_shards: Vec<(ShardId, NodeId)>,
    /// Holders that could not be reached.
    pub unreachable: Vec<NodeId>,
}

impl TransferStats {
    /// Adds what one segment's fetch met.
    pub(crate) fn add(&mut self, report: FetchReport) {
        self.shard_bytes += report.shard_bytes;
        self.decoded += usize::from(report.decoded);
        self.bad_shards.extend(report.bad);
        for node in report.unreachable {
            if !self.unreachable.contains(&node) {
                self.unreachable.push(node);
            }
        }
    }
}

/// Track requests a client keeps in flight to one steward.
const TRACK_IN_FLIGHT: usize = 8;

/// The owner's connection to their nodes.
pub struct Swarm {
    pool: Pool,
    /// The key this client connects with (what a steer grant names).
    client_id: NodeId,
    keys: OwnerKeys,
    nodes: Mutex<Vec<NodeAddr>>,
    /// Asked where shards are now when their recorded holders fail.
    steward: Mutex<Option<NodeId>>,
    /// How to reach nodes behind routers: a node's member list and this
    /// computer's public address, learned before the command's first dial.
    routes: Arc<RouteTable>,
    /// Whether `routes` was learned (once per command).
    routes_loaded: tokio::sync::OnceCell<()>,
    /// Recently read packs by segment key, newest last; a pack being read
    /// is in here already, so readers that want it too wait for that read.
    packs: Mutex<VecDeque<([u8; 32], PackSlot)>>,
    /// Erasure coding of new data.
    pub coding: Coding,
}

impl Swarm {
    /// A client for `nodes`, authenticating with a key derived from the
    /// owner's secret (`client_key`).
    pub fn new(
        keys: OwnerKeys,
        client_key: [u8; 32],
        nodes: Vec<NodeAddr>,
        coding: Coding,
        timeout: Duration,
        member: Option<MemberCert>,
    ) -> Result<Arc<Self>, SwarmError> {
        let (endpoint, raw) = Peer::dual_stack_endpoint().map_err(SwarmError::Endpoint)?;
        let client_id = Identity::from_private(client_key).id;
        let routes = Arc::new(RouteTable::default());
        let pool = Pool::new(
            endpoint,
            Identity::from_private(client_key),
            Box::new(move || member.clone()),
            PoolConfig {
                timeout,
                down_for: DOWN_FOR,
            },
        )
        .with_routes(Arc::clone(&routes) as Arc<dyn Routes>, Some(raw));
        Ok(Arc::new(Self {
            pool,
            client_id,
            keys,
            nodes: Mutex::new(nodes),
            routes,
            routes_loaded: tokio::sync::OnceCell::new(),
            steward: Mutex::new(None),
            packs: Mutex::new(VecDeque::new()),
            coding,
        }))
    }

    /// The steward to ask where shards went when a read finds them moved.
    pub fn set_steward(&self, steward: Option<NodeId>) {
        *cairn_host::lock(&self.steward) = steward;
    }

    /// The owner's keys.
    pub fn keys(&self) -> &OwnerKeys {
        &self.keys
    }

    /// Runs `op` on a connection to `node`. A node that answers
    /// RateLimited is waited for, as it asks, for a bounded time: it is
    /// busy, not gone, and never counted as down for it.
    pub async fn patiently<T, F, Fut>(&self, node: NodeId, op: F) -> Result<T, NetError>
    where
        F: Fn(Arc<Peer>) -> Fut,
        Fut: Future<Output = Result<T, NetError>>,
    {
        let give_up = Instant::now() + RATE_LIMIT_PATIENCE;
        let mut wait = Duration::from_millis(25);
        loop {
            let peer = self.peer(node).await?;
            match op(peer).await {
                Err(NetError::Remote {
                    code: ErrorCode::RateLimited,
                    ..
                }) if Instant::now() + wait < give_up => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// The nodes this client knows.
    pub fn nodes(&self) -> Vec<NodeAddr> {
        cairn_host::lock(&self.nodes).clone()
    }

    /// Adds nodes this client did not know (from a root record, say).
    pub fn learn_nodes(&self, more: &[NodeAddr]) {
        let mut nodes = cairn_host::lock(&self.nodes);
        for node in more {
            if !nodes.iter().any(|n| n.node == node.node) {
                nodes.push(node.clone());
            }
        }
    }

    /// A connection to one of the known nodes (dialled once, then shared);
    /// a node that failed is not retried for a while, so a dead node costs
    /// one timeout, not one per shard.
    pub async fn peer(&self, node: NodeId) -> Result<Arc<Peer>, NetError> {
        let entry = self
            .nodes()
            .into_iter()
            .find(|n| n.node == node)
            .ok_or_else(|| NetError::Refused(format!("node {} is not known", node.to_human())))?;
        // Once per command: how the swarm's members are reached (some may
        // be behind routers in other houses).
        self.routes_loaded.get_or_init(|| self.load_routes()).await;
        let dialled = self.pool.peer(node, &entry.addr).await;
        match dialled {
            Err(e) if !self.routes.is_empty() && self.routes.member(node).is_none() => {
                Err(NetError::NoPath {
                    node: node.to_human(),
                    why: format!(
                        "it did not answer at {} ({e}), and no member of the swarm has heard from it: it is off, or it cannot reach any member (is UDP blocked where it is?)",
                        entry.addr
                    ),
                })
            }
            other => other,
        }
    }

    /// Fills the route table from the first node (in the settings' order)
    /// that answers `Members`, and learns this computer's public address
    /// from a member anyone can dial: with it, a node behind the same
    /// router is dialled on the LAN, not through a punch.
    async fn load_routes(&self) {
        let mut loaded = false;
        for entry in self.nodes() {
            let ask = async {
                let peer = self.pool.peer(entry.node, &entry.addr).await?;
                peer.members().await
            };
            let Ok(Ok(members)) = tokio::time::timeout(PROBE_TIMEOUT, ask).await else {
                continue;
            };
            for state in members {
                let member = state.member;
                // Asked before the routes were known, at its LAN address.
                self.pool.forget_failure(member.node);
                self.routes
                    .set_member(member.node, member.addr, member.advert.reach);
            }
            loaded = true;
            break;
        }
        if !loaded {
            return;
        }
        let observers: Vec<(NodeId, String)> = self
            .nodes()
            .into_iter()
            .filter_map(|n| {
                let (_, reach) = self.routes.member(n.node)?;
                let public = reach.public.filter(|_| reach.nat.dialable())?;
                Some((n.node, public))
            })
            .collect();
        let mut me = cairn_proto::reach::Reach::default();
        for (node, addr) in observers.into_iter().take(2) {
            let ask = async { self.pool.peer(node, &addr).await?.observe().await };
            if let Ok(Ok(seen)) = tokio::time::timeout(PROBE_TIMEOUT, ask).await {
                me.public = Some(seen.to_string());
                break;
            }
        }
        me.ipv6 = self.observe_ipv6().await;
        self.routes.set_me(me);
    }

    /// This computer's IPv6 address, once a node anyone can dial over IPv6
    /// saw it used: then nodes with IPv6 are dialled that way (a punch
    /// opens the firewall of one that filters). `None` without a global
    /// IPv6 address, or when no node with one answered.
    async fn observe_ipv6(&self) -> Option<cairn_proto::reach::Ipv6Reach> {
        use cairn_proto::reach::{Ipv6Reach, Ipv6State};
        let own = cairn_net::pool::global_ipv6_addresses();
        if own.is_empty() {
            return None;
        }
        let port = self.pool.endpoint().local_addr().ok()?.port();
        let observers: Vec<(NodeId, String)> = self
            .nodes()
            .into_iter()
            .filter_map(|n| {
                let (_, reach) = self.routes.member(n.node)?;
                let v6 = reach.ipv6.filter(|v6| v6.state == Ipv6State::Open)?;
                Some((n.node, v6.addr))
            })
            .collect();
        for (node, addr) in observers.into_iter().take(2) {
            let ask = async {
                let peer = self.pool.dial_aside(node, &addr, PROBE_TIMEOUT).await?;
                let seen = peer.observe().await;
                peer.close();
                seen
            };
            if let Ok(Ok(seen)) = tokio::time::timeout(PROBE_TIMEOUT, ask).await
                && own.contains(&seen.ip())
                && seen.port() == port
            {
                // This program only dials: for nodes, it is behind
                // whatever firewall it has.
                return Some(Ipv6Reach {
                    addr: seen.to_string(),
                    state: Ipv6State::Filtered,
                });
            }
        }
        None
    }

    /// How the connection to `node` was made, if one is open.
    pub fn path(&self, node: NodeId) -> Option<cairn_proto::reach::PathKind> {
        self.pool.path(node)
    }

    fn mark_down(&self, node: NodeId) {
        self.pool.mark_down(node);
    }

    fn note_latency(&self, node: NodeId, took: Duration) {
        self.pool.note_latency(node, took);
    }

    fn latency(&self, node: NodeId) -> (bool, Duration) {
        self.pool.latency(node)
    }

    /// Nodes that answer and take shards, with their free space, for
    /// placement (asked once per command); an error naming every other
    /// node and why when fewer than k + m can.
    pub async fn placement_candidates(self: &Arc<Self>) -> Result<Arc<Vec<Candidate>>, SwarmError> {
        let mut asks = JoinSet::new();
        for entry in self.nodes() {
            let this = Arc::clone(self);
            asks.spawn(async move {
                let stat = this
                    .patiently(entry.node, |peer| async move { peer.stat().await })
                    .await
                    .map_err(|e| format!("{}: {e}", entry.node.to_human()))?;
                // A draining node refuses new shards: never plan on it.
                if stat.ownership.draining {
                    return Err(format!("{}: draining", entry.node.to_human()));
                }
                let free = stat.free();
                Ok(Candidate {
                    node: entry.node,
                    site: entry.site.clone(),
                    free,
                })
            });
        }
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        while let Some(done) = asks.join_next().await {
            match done {
                Ok(Ok(candidate)) => out.push(candidate),
                Ok(Err(problem)) => problems.push(problem),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if out.len() < self.coding.total() {
            problems.sort();
            return Err(SwarmError::TooFewNodes {
                have: out.len(),
                need: self.coding.total(),
                why: problems.join("; "),
            });
        }
        out.sort_by_key(|c| c.node);
        Ok(Arc::new(out))
    }

    /// Stores `bytes` (the snapshot history, say) as content-defined
    /// chunks, each a segment of its own, on `candidates`.
    pub async fn put_bytes(
        self: &Arc<Self>,
        bytes: &[u8],
        candidates: &Arc<Vec<Candidate>>,
    ) -> Result<Vec<SegmentRef>, SwarmError> {
        self.coding.validate()?;
        let mut segments = Vec::new();
        for chunk in chunks(bytes, self.keys.chunk_seed, ChunkSizes::default()) {
            let plain = chunk.map_err(|source| SwarmError::Io {
                what: "chunking".into(),
                source,
            })?;
            let sealed = segment::seal(&self.keys.convergence, self.coding, &plain)?;
            segments.push(
                Arc::clone(self)
                    .upload_segment(sealed, Arc::clone(candidates))
                    .await?,
            );
        }
        Ok(segments)
    }

    /// Places and stores one segment's shards, all in parallel; a shard
    /// whose node fails goes to another node that holds none of this
    /// segment. Checks the fewer-than-k rule before anything is sent.
    pub(crate) async fn upload_segment(
        self: Arc<Self>,
        sealed: segment::SealedSegment,
        candidates: Arc<Vec<Candidate>>,
    ) -> Result<SegmentRef, SwarmError> {
        let shard_len = sealed.shards.first().map_or(0, |(_, b)| b.len() as u64);
        let mut holders = placement::place(&candidates, self.coding, shard_len, sealed.key, &[])?;
        placement::check(&holders, self.coding)?;
        let lease = unix_now() + LEASE.as_secs();
        let owner = self.keys.owner_id();
        let (key, plain_len) = (sealed.key, sealed.plain_len);
        // Bytes: every attempt hands the same buffers to the network, uncopied.
        let (ids, bodies): (Vec<ShardId>, Vec<bytes::Bytes>) = sealed
            .shards
            .into_iter()
            .map(|(id, body)| (id, body.into()))
            .unzip();
        let mut pending: Vec<usize> = (0..holders.len()).collect();
        let mut failed: Vec<NodeId> = Vec::new();
        // Why each failed node failed, for the error if no home is left.
        let mut causes: Vec<String> = Vec::new();
        for attempt in 0..PLACE_ATTEMPTS {
            let mut puts = JoinSet::new();
            for &i in &pending {
                let node = holders[i];
                let (id, body) = (ids[i], bodies[i].clone());
                let this = Arc::clone(&self);
                puts.spawn(async move {
                    let outcome = this
                        .patiently(node, |peer| {
                            let body = body.clone();
                            async move { peer.put(id, body, owner, lease).await.map(|_| ()) }
                        })
                        .await;
                    (i, node, outcome)
                });
            }
            let mut retry = Vec::new();
            while let Some(joined) = puts.join_next().await {
                let (i, node, outcome) = joined.map_err(|e| SwarmError::Task(e.to_string()))?;
                if let Err(e) = outcome {
                    tracing::debug!("shard {i} to {}: {e}", node.to_human());
                    if !matches!(e, NetError::Remote { .. }) {
                        self.mark_down(node);
                    }
                    causes.push(format!("{}: {e}", node.to_human()));
                    failed.push(node);
                    retry.push(i);
                }
            }
            if retry.is_empty() {
                return Ok(SegmentRef {
                    key,
                    plain_len,
                    k: self.coding.k,
                    shards: ids
                        .iter()
                        .zip(&holders)
                        .map(|(id, holder)| ShardRef {
                            id: *id,
                            holder: *holder,
                        })
                        .collect(),
                });
            }
            if attempt + 1 == PLACE_ATTEMPTS {
                break;
            }
            // New homes for the failed shards: not a node that failed, not
            // one that already holds a shard of this segment.
            let mut exclude: Vec<NodeId> = failed.clone();
            exclude.extend(
                holders
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !retry.contains(i))
                    .map(|(_, n)| *n),
            );
            let mut seed = key;
            seed[0] ^= attempt as u8 + 1;
            let fresh = placement::place_n(
                &candidates,
                self.coding,
                retry.len(),
                shard_len,
                seed,
                &exclude,
            )
            .map_err(|e| SwarmError::Upload(format!("{e}, after {}", causes.join("; "))))?;
            for (i, node) in retry.iter().zip(fresh) {
                holders[*i] = node;
            }
            placement::check(&holders, self.coding)?;
            pending = retry;
        }
        Err(SwarmError::Upload(format!(
            "{} shards of a segment found no node after {PLACE_ATTEMPTS} attempts ({})",
            pending.len(),
            causes.join("; ")
        )))
    }

    /// Writes the bytes of `pieces` to `out`, in order: k shards per
    /// segment from the fastest holders, each verified, decoded from parity
    /// when needed; a pack read for one piece serves the next ones from a
    /// small cache.
    pub async fn read_pieces<W: Write + Send + 'static>(
        self: &Arc<Self>,
        pieces: &[Located],
        out: W,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(TransferStats, W), SwarmError> {
        // The output is written on a thread of its own, so that a slow disk
        // never stops new fetches from starting; the channel bounds memory.
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = out;
            while let Some(plain) = rx.blocking_recv() {
                out.write_all(&plain)?;
            }
            out.flush()?;
            Ok::<W, std::io::Error>(out)
        });
        let fetched = self.fetch_in_order(pieces, &tx, progress).await;
        drop(tx);
        let written = writer
            .await
            .map_err(|e| SwarmError::Task(format!("the writer: {e}")))?;
        let stats = fetched?;
        let out = written.map_err(|source| SwarmError::Io {
            what: "writing the output".into(),
            source,
        })?;
        Ok((stats, out))
    }

    /// Fetches pieces, several at once, and passes their plaintext to
    /// `out` in order.
    async fn fetch_in_order(
        self: &Arc<Self>,
        pieces: &[Located],
        out: &mpsc::Sender<Vec<u8>>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<TransferStats, SwarmError> {
        let mut stats = TransferStats::default();
        let mut fetches = JoinSet::new();
        let mut ready: BTreeMap<usize, (Vec<u8>, FetchReport)> = BTreeMap::new();
        let mut next_to_start = 0usize;
        let mut next_to_write = 0usize;
        let total = pieces.len();
        while next_to_write < total {
            while next_to_start < total && fetches.len() + ready.len() < GET_SEGMENTS_IN_FLIGHT {
                let index = next_to_start;
                next_to_start += 1;
                let piece = pieces[index].clone();
                let this = Arc::clone(self);
                fetches.spawn(async move { (index, this.fetch_piece(index, piece).await) });
            }
            if !ready.contains_key(&next_to_write) {
                let (index, outcome) = join_one(&mut fetches).await?;
                ready.insert(index, outcome);
                continue;
            }
            let (plain, report) = ready.remove(&next_to_write).unwrap_or_default();
            let len = plain.len() as u64;
            if out.send(plain).await.is_err() {
                // The writer stopped: its error is reported by the caller.
                break;
            }
            progress(len);
            stats.bytes += len;
            stats.segments += 1;
            stats.add(report);
            next_to_write += 1;
        }
        Ok(stats)
    }

    /// One piece's plaintext.
    async fn fetch_piece(
        self: Arc<Self>,
        index: usize,
        piece: Located,
    ) -> Result<(Vec<u8>, FetchReport), SwarmError> {
        match piece {
            Located::Segment(segment) => self.fetch_moved(index, segment).await,
            Located::Packed { pack, offset, len } => {
                let (plain, report) = self.pack(index, pack).await?;
                let range = offset as usize..offset as usize + len as usize;
                let bytes = plain.get(range).ok_or_else(|| {
                    SwarmError::Decode(format!(
                        "a piece at {offset}+{len} lies outside its pack of {} bytes",
                        plain.len()
                    ))
                })?;
                Ok((bytes.to_vec(), report))
            }
        }
    }

    /// A pack's plaintext, from the cache or the swarm.
    pub(crate) async fn pack(
        self: &Arc<Self>,
        index: usize,
        pack: SegmentRef,
    ) -> Result<(Arc<Vec<u8>>, FetchReport), SwarmError> {
        let slot = {
            let mut cache = cairn_host::lock(&self.packs);
            match cache.iter().find(|(key, _)| *key == pack.key) {
                Some((_, slot)) => Arc::clone(slot),
                None => {
                    let slot = PackSlot::default();
                    cache.push_back((pack.key, Arc::clone(&slot)));
                    if cache.len() > PACK_CACHE {
                        cache.pop_front();
                    }
                    slot
                }
            }
        };
        let mut report = None;
        let plain = slot
            .get_or_try_init(|| async {
                let (plain, fetched) = Arc::clone(self).fetch_moved(index, pack).await?;
                report = Some(fetched);
                Ok::<_, SwarmError>(Arc::new(plain))
            })
            .await?;
        Ok((Arc::clone(plain), report.unwrap_or_default()))
    }

    /// The bytes of `pieces` in one buffer (for small files: no writer
    /// thread, and packs come from the cache).
    pub async fn read_pieces_whole(
        self: &Arc<Self>,
        pieces: &[Located],
    ) -> Result<(Vec<u8>, TransferStats), SwarmError> {
        let mut stats = TransferStats::default();
        let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len() as usize).sum());
        for (index, piece) in pieces.iter().enumerate() {
            let (bytes, report) = Arc::clone(self).fetch_piece(index, piece.clone()).await?;
            stats.bytes += bytes.len() as u64;
            stats.segments += 1;
            stats.add(report);
            out.extend_from_slice(&bytes);
        }
        Ok((out, stats))
    }

    /// A segment's plaintext; when its recorded holders cannot give k good
    /// shards, the steward is asked where they are now (it may have moved
    /// them in a repair) and the read is tried once more.
    pub(crate) async fn fetch_moved(
        self: Arc<Self>,
        index: usize,
        segment: SegmentRef,
    ) -> Result<(Vec<u8>, FetchReport), SwarmError> {
        let first = Arc::clone(&self)
            .fetch_segment(index, segment.clone())
            .await;
        let steward = *cairn_host::lock(&self.steward);
        let (Err(SwarmError::Unreadable { .. }), Some(steward)) = (&first, steward) else {
            return first;
        };
        let mut moved = segment;
        match self
            .relocate(steward, std::slice::from_mut(&mut moved))
            .await
        {
            Ok(n) if n > 0 => self.fetch_segment(index, moved).await,
            // Nothing moved: the first error is the one to report.
            _ => first,
        }
    }

    async fn fetch_segment(
        self: Arc<Self>,
        index: usize,
        segment: SegmentRef,
    ) -> Result<(Vec<u8>, FetchReport), SwarmError> {
        let coding = segment.coding();
        coding.validate()?;
        let k = usize::from(coding.k);
        // Data shards first (no decoding), then parity; within each, up
        // nodes before down ones, faster before slower.
        let mut order: Vec<usize> = (0..segment.shards.len()).collect();
        order.sort_by_key(|&i| {
            let (down, latency) = self.latency(segment.shards[i].holder);
            (down, i >= k, latency)
        });
        let mut order = order.into_iter();
        let mut report = FetchReport::default();
        let mut good: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut errors = Vec::new();
        let mut running = JoinSet::new();
        loop {
            while good.len() + running.len() < k {
                let Some(i) = order.next() else { break };
                let shard = segment.shards[i];
                let this = Arc::clone(&self);
                running.spawn(async move {
                    let started = Instant::now();
                    let result = this
                        .patiently(shard.holder, |peer| async move { peer.get(shard.id).await })
                        .await;
                    (i, shard, started.elapsed(), result)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (i, shard, took, result) = joined.map_err(|e| SwarmError::Task(e.to_string()))?;
            match result {
                Ok(bytes) => {
                    self.note_latency(shard.holder, took);
                    report.shard_bytes += bytes.len() as u64;
                    good.push((i, bytes));
                    if good.len() == k {
                        break;
                    }
                }
                Err(e) => {
                    match &e {
                        NetError::Corrupt(_) => report.bad.push((shard.id, shard.holder)),
                        NetError::Remote { .. } => {}
                        _ => {
                            self.mark_down(shard.holder);
                            report.unreachable.push(shard.holder);
                        }
                    }
                    errors.push(format!("shard {i} on {}: {e}", shard.holder.to_human()));
                }
            }
        }
        running.abort_all();
        if good.len() < k {
            return Err(SwarmError::Unreadable {
                index,
                good: good.len(),
                need: k,
                detail: errors.join("; "),
            });
        }
        report.decoded = good.iter().any(|(i, _)| *i >= k);
        let shards: Vec<(usize, &[u8])> = good.iter().map(|(i, b)| (*i, &b[..])).collect();
        let convergence = self.keys.convergence;
        let plain = segment::open(
            &convergence,
            coding,
            &segment.key,
            segment.plain_len,
            &shards,
        )?;
        Ok((plain, report))
    }

    /// Signs and offers a root record pointing at `catalog` to every node;
    /// succeeds if at least one node keeps it. Returns how many did.
    pub async fn put_root(
        self: &Arc<Self>,
        seq: u64,
        history: &StoredRef,
    ) -> Result<usize, SwarmError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce)
            .map_err(|e| SwarmError::Task(format!("the system's random source: {e}")))?;
        let pointer = RootPointer {
            format: SNAPSHOT_FORMAT,
            history: history.clone(),
            time: unix_now(),
            nodes: self.nodes(),
        };
        let payload = super::catalog::seal_root(&self.keys.manifest, &pointer, nonce);
        let record = RootRecord::sign(&self.keys.signing, seq, payload);
        let mut puts = JoinSet::new();
        for node in self.nodes().iter().map(|n| n.node) {
            let (this, record) = (Arc::clone(self), record.clone());
            puts.spawn(async move {
                this.patiently(node, |peer| {
                    let record = record.clone();
                    async move { peer.put_root(record).await }
                })
                .await
            });
        }
        let mut kept = 0;
        let mut errors = Vec::new();
        while let Some(joined) = puts.join_next().await {
            match joined {
                Ok(Ok(())) => kept += 1,
                Ok(Err(e)) => errors.push(e.to_string()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if kept == 0 {
            return Err(SwarmError::NoRoot(errors.join("; ")));
        }
        Ok(kept)
    }

    /// The newest root record any node holds, opened: `(seq, pointer)`.
    pub async fn latest_root(self: &Arc<Self>) -> Result<Option<(u64, RootPointer)>, SwarmError> {
        let owner = self.keys.owner_id();
        // Detached asks: one still connecting to a down node when the lookup
        // is done goes on and records that node as down for the rest of the run.
        let nodes = self.nodes();
        let (tx, mut rx) = mpsc::channel(nodes.len().max(1));
        for node in nodes.iter().map(|n| n.node) {
            let (this, tx) = (Arc::clone(self), tx.clone());
            tokio::spawn(async move {
                let answer = this
                    .patiently(node, |peer| async move { peer.get_root(owner).await })
                    .await;
                let _ = tx.send(answer).await;
            });
        }
        drop(tx);
        let mut best: Option<RootRecord> = None;
        let mut answered = 0;
        let mut errors = Vec::new();
        // Every commit offers the root to every node, so once some node has
        // answered, a node that is down (its connect times out) is not worth
        // waiting for: the others are given a short grace.
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let answer = match grace {
                None => rx.recv().await,
                Some(deadline) => tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .unwrap_or_default(),
            };
            let Some(answer) = answer else { break };
            match answer {
                Ok(record) => {
                    answered += 1;
                    grace.get_or_insert_with(|| tokio::time::Instant::now() + ROOT_GRACE);
                    if let Some(record) = record
                        && best.as_ref().is_none_or(|b| record.seq > b.seq)
                    {
                        best = Some(record);
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if answered == 0 {
            return Err(SwarmError::NoRoot(errors.join("; ")));
        }
        match best {
            None => Ok(None),
            Some(record) => {
                let pointer = super::catalog::open_root(&self.keys.manifest, &record.payload)
                    .map_err(|e| SwarmError::Decode(e.to_string()))?;
                // The catalog's holders may be nodes this client has not met.
                self.learn_nodes(&pointer.nodes);
                Ok(Some((record.seq, pointer)))
            }
        }
    }

    /// Whether `holder` proves it holds `shard` (random ranges, checked
    /// against the id alone).
    pub async fn audit(
        &self,
        holder: NodeId,
        shard: ShardId,
        shard_len: u64,
        seed: [u8; 32],
    ) -> bool {
        match self.peer(holder).await {
            Ok(peer) => peer.audit(shard, shard_len, seed).await.is_ok(),
            Err(_) => false,
        }
    }

    /// The owner's leave for this client to steer its table at `steward`
    /// for the next hour: shown with every `Track` and `Locate`.
    fn steer_grant(&self, steward: &NodeId) -> SteerGrant {
        let not_after = unix_now() + 3600;
        let message = cairn_proto::signed::steer_message(
            steward,
            &self.keys.owner_id(),
            &self.client_id,
            not_after,
        );
        SteerGrant {
            not_after,
            signature: cairn_proto::signed::sign(&self.keys.signing, &message),
        }
    }

    /// Tells the steward `steward` about `segments`, so it audits, repairs
    /// and renews them; returns how many segments it tracks for this owner.
    /// The steward finds the holders' addresses in its swarm's membership.
    /// Up to `TRACK_IN_FLIGHT` requests are in flight at once: the
    /// steward commits the ones that arrive together in one go.
    pub async fn track(
        self: &Arc<Self>,
        steward: NodeId,
        segments: &[SegmentRef],
    ) -> Result<u64, SwarmError> {
        let lease_until = unix_now() + LEASE.as_secs();
        let segments: Vec<TrackSegment> = segments
            .iter()
            .map(|segment| {
                let coding = segment.coding();
                TrackSegment {
                    k: coding.k,
                    m: coding.m,
                    shard_len: segment.shard_len(),
                    shards: segment.shards.iter().map(|s| (s.id, s.holder)).collect(),
                    lease_until,
                }
            })
            .collect();
        let owner = self.keys.owner_id();
        let grant = self.steer_grant(&steward);
        let mut tracked = 0;
        let mut running = JoinSet::new();
        let mut batches = segments.chunks(MAX_TRACK);
        loop {
            while running.len() < TRACK_IN_FLIGHT {
                let Some(batch) = batches.next() else { break };
                let (this, grant, batch) = (Arc::clone(self), grant.clone(), batch.to_vec());
                running.spawn(async move {
                    this.patiently(steward, |peer| {
                        let (grant, batch) = (grant.clone(), batch.clone());
                        async move { peer.track(owner, grant, batch).await }
                    })
                    .await
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let count = done
                .map_err(|e| SwarmError::Steward(e.to_string()))?
                .map_err(|e| SwarmError::Steward(e.to_string()))?;
            // Answers arrive in any order; the last commit saw them all.
            tracked = tracked.max(count);
        }
        Ok(tracked)
    }

    /// Tells the steward to stop tracking `segments` (ids: BLAKE3 over
    /// each one's shard ids), signed with the owner's key: nobody else can.
    pub async fn untrack(&self, steward: NodeId, segments: &[[u8; 32]]) -> Result<u64, SwarmError> {
        let owner = self.keys.owner_id();
        let mut tracked = 0;
        for batch in segments.chunks(cairn_proto::MAX_UNTRACK) {
            let not_after = unix_now() + 600;
            let signature =
                cairn_proto::signed::sign_untrack(&self.keys.signing, &steward, batch, not_after);
            tracked = self
                .patiently(steward, |peer| {
                    let (batch, signature) = (batch.to_vec(), signature.clone());
                    async move { peer.untrack(owner, batch, not_after, signature).await }
                })
                .await
                .map_err(|e| SwarmError::Steward(e.to_string()))?;
        }
        Ok(tracked)
    }

    /// Deletes one shard at its holder with the owner's signature; `Ok(false)`
    /// when the holder did not have it.
    pub async fn delete(&self, shard: ShardRef) -> Result<bool, NetError> {
        let not_after = unix_now() + 600;
        let signature = cairn_proto::signed::sign_delete(
            &self.keys.signing,
            &shard.holder,
            &shard.id,
            not_after,
        );
        self.patiently(shard.holder, |peer| {
            let signature = signature.clone();
            async move { peer.delete(shard.id, not_after, signature).await }
        })
        .await
    }

    /// Rewrites the holders of `segments` with where the steward says their
    /// shards are now (after repairs); segments it does not know keep their
    /// holders. Returns how many shards moved.
    pub async fn relocate(
        &self,
        steward: NodeId,
        segments: &mut [SegmentRef],
    ) -> Result<usize, SwarmError> {
        let owner = self.keys.owner_id();
        let grant = self.steer_grant(&steward);
        let mut moved = 0;
        for batch in segments.chunks_mut(MAX_LOCATE) {
            let ids: Vec<[u8; 32]> = batch.iter().map(SegmentRef::steward_id).collect();
            let found = self
                .patiently(steward, |peer| {
                    let (grant, ids) = (grant.clone(), ids.clone());
                    async move { peer.locate(owner, grant, &ids).await }
                })
                .await
                .map_err(|e| SwarmError::Steward(e.to_string()))?;
            for (segment, holders) in batch.iter_mut().zip(found) {
                let Some(holders) = holders else {
                    continue;
                };
                if holders.len() != segment.shards.len() {
                    continue;
                }
                for (shard, holder) in segment.shards.iter_mut().zip(holders) {
                    if shard.holder != holder {
                        shard.holder = holder;
                        moved += 1;
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One pack in the cache: filled by the first reader that gets it.
type PackSlot = Arc<tokio::sync::OnceCell<Arc<Vec<u8>>>>;

/// What fetching one segment met.
#[derive(Default)]
pub(crate) struct FetchReport {
    shard_bytes: u64,
    decoded: bool,
    bad: Vec<(ShardId, NodeId)>,
    unreachable: Vec<NodeId>,
}

/// Waits for one task of `set` and unpacks its `(index, result)`.
async fn join_one<T: 'static>(
    set: &mut JoinSet<(usize, Result<T, SwarmError>)>,
) -> Result<(usize, T), SwarmError> {
    match set.join_next().await {
        Some(Ok((index, Ok(value)))) => Ok((index, value)),
        Some(Ok((_, Err(e)))) => Err(e),
        Some(Err(e)) => Err(SwarmError::Task(e.to_string())),
        None => Err(SwarmError::Task("no transfer was running".into())),
    }
}

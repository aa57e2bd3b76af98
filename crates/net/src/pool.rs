//! The one connection pool: connections to other nodes, dialled on demand
//! with this program's key and its swarm certificate, shared by every task
//! and kept until they fail. The node's steward and gossip use it, and so
//! does the owner's client; the only difference is whether a node that
//! failed is left alone for a while ([`PoolConfig::down_for`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_proto::ids::NodeId;
use cairn_proto::membership::MemberCert;
use cairn_proto::reach::{self, PathKind, Reach, Step};

use crate::NetError;
use crate::client::Peer;
use crate::identity::Identity;

/// How long a node may take to connect and answer a liveness question; a
/// dead node must not hold up a round (QUIC to a closed port on some paths
/// only times out, and quinn does not act on ICMP unreachable).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The latency assumed for a node not measured yet.
const FIRST_LATENCY: Duration = Duration::from_millis(50);

/// How long a punched or relayed dial may take once its rendezvous
/// answered: QUIC resends its first packet after about a second, which
/// a router that saw the callee's punch then lets in.
const TRAVERSAL_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a plain dial may take when a punch or relay follows it.
const LAN_DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Members tried per [`Pool::upgrade`]: each try may take a few seconds.
pub const UPGRADES_PER_CALL: usize = 4;

/// [`reach::plan`] for `node`, without a punch or relay through `node`
/// itself: a member heard of only through others is guessed to wait at
/// this program's own rendezvous, and when that member is the rendezvous,
/// dialling it through itself would wait on its own dial.
fn plan_to(me: &Reach, own: NodeId, node: NodeId, them: &Reach, addr: &str) -> Vec<Step> {
    let mut steps = reach::plan(me, own, them, addr);
    steps.retain(|step| match step {
        Step::Punch { via, .. } | Step::Relay { via } => *via != node,
        Step::Dial { .. } => true,
    });
    steps
}

/// This host's global IPv6 addresses (not unique-local, link-local or
/// loopback): where members elsewhere might reach it over IPv6.
pub fn global_ipv6_addresses() -> Vec<std::net::IpAddr> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    interfaces
        .iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv6() && reach::observer_counts(SocketAddr::new(*ip, 1)))
        .collect()
}

/// What a pool knows of how to reach members across routers: its own
/// state and each member's advert. The node fills it from gossip, the
/// owner's client from a node's member list.
pub trait Routes: Send + Sync {
    /// This program's own reach (its NAT, its public address).
    fn me(&self) -> Reach;
    /// A member's gossip address and advertised reach.
    fn member(&self, node: NodeId) -> Option<(String, Reach)>;
    /// When `node` waits for calls at this very program (it is `node`'s
    /// rendezvous): has it punch toward this program (its IPv4 address and
    /// its IPv6 one), and returns where it is seen.
    fn punch_here(&self, _node: NodeId) -> Option<SocketAddr> {
        None
    }
}

/// [`Routes`] as a plain table, set whole.
#[derive(Default)]
pub struct RouteTable {
    me: Mutex<Reach>,
    members: Mutex<HashMap<NodeId, (String, Reach)>>,
}

impl RouteTable {
    /// Sets this program's own reach.
    pub fn set_me(&self, me: Reach) {
        *cairn_host::lock(&self.me) = me;
    }

    /// Sets what is known of one member.
    pub fn set_member(&self, node: NodeId, addr: String, reach: Reach) {
        cairn_host::lock(&self.members).insert(node, (addr, reach));
    }

    /// How many members it knows.
    pub fn len(&self) -> usize {
        cairn_host::lock(&self.members).len()
    }

    /// Whether it knows no member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Routes for RouteTable {
    fn me(&self) -> Reach {
        cairn_host::lock(&self.me).clone()
    }

    fn member(&self, node: NodeId) -> Option<(String, Reach)> {
        cairn_host::lock(&self.members).get(&node).cloned()
    }
}

/// The certificate to show when dialling, asked at every dial because a
/// node may join a swarm while it runs.
pub type CertSource = Box<dyn Fn() -> Option<MemberCert> + Send + Sync>;

/// How a pool dials.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Time for each request on a connection.
    pub timeout: Duration,
    /// After a failed dial, the node is not dialled again for this long
    /// (zero: dial again at the next ask), so that a dead node costs one
    /// timeout, not one per shard.
    pub down_for: Duration,
}

/// Connections to other nodes, made on demand and kept.
pub struct Pool {
    endpoint: quinn::Endpoint,
    identity: Identity,
    cert: CertSource,
    config: PoolConfig,
    slots: Mutex<HashMap<NodeId, Slot>>,
    /// Dials started, for tests and metrics.
    dials: std::sync::atomic::AtomicU64,
    /// One dial per node at a time: others asking for it wait for that one.
    dialling: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    /// How to reach members behind routers; without it, every node is
    /// dialled at its address as given.
    routes: Option<Arc<dyn Routes>>,
    /// The endpoint's own socket, for relay tokens.
    raw: Option<Arc<std::net::UdpSocket>>,
    /// The last member [`Pool::upgrade`] tried.
    upgrade_turn: Mutex<Option<NodeId>>,
}

struct Slot {
    peer: Option<Arc<Peer>>,
    down_since: Option<Instant>,
    /// Smoothed time of a request, for "fastest first".
    latency: Duration,
    /// How the kept connection was made.
    path: Option<PathKind>,
}

impl Pool {
    /// An empty pool dialling from `endpoint` as `identity`, showing what
    /// `cert` gives.
    pub fn new(
        endpoint: quinn::Endpoint,
        identity: Identity,
        cert: CertSource,
        config: PoolConfig,
    ) -> Self {
        Self {
            endpoint,
            identity,
            cert,
            config,
            slots: Mutex::new(HashMap::new()),
            dials: std::sync::atomic::AtomicU64::new(0),
            dialling: Mutex::new(HashMap::new()),
            routes: None,
            raw: None,
            upgrade_turn: Mutex::new(None),
        }
    }

    /// Dials members behind routers as `routes` says (punch, relay), with
    /// `raw`, the endpoint's own socket, for relay tokens.
    pub fn with_routes(
        mut self,
        routes: Arc<dyn Routes>,
        raw: Option<Arc<std::net::UdpSocket>>,
    ) -> Self {
        self.routes = Some(routes);
        self.raw = raw;
        self
    }

    /// Tries, for members reached a worse way than their plan now offers,
    /// the better ways (a punch or a dial where a relay carries them; IPv6
    /// where IPv4 does), and keeps the connection that works in place of
    /// the old one; how many were upgraded. A member is relayed when that
    /// was the only way when it was dialled (the relay is a member's
    /// bandwidth, so the pool moves off it when it can), and reached over
    /// IPv4 when its IPv6 was not proven yet. At most
    /// [`UPGRADES_PER_CALL`] members are tried per call, each in turn.
    pub async fn upgrade(&self) -> usize {
        let Some(routes) = self.routes.clone() else {
            return 0;
        };
        let connected: Vec<(NodeId, PathKind)> = self
            .slots()
            .iter()
            .filter(|(_, slot)| slot.peer.is_some())
            .filter_map(|(node, slot)| Some((*node, slot.path?)))
            .collect();
        let me = routes.me();
        let mut candidates = Vec::new();
        // A LAN path is as good as any, and an IPv6 one is what comes first.
        let connected = connected
            .into_iter()
            .filter(|(_, path)| *path != PathKind::Lan && !path.ipv6());
        for (node, path) in connected {
            let Some((addr, them)) = routes.member(node) else {
                continue;
            };
            let relayed = matches!(path, PathKind::Relayed(_));
            // The steps before the one that made the kept connection, and
            // of those only IPv6 ones unless a relay carries it: a better
            // IPv4 way would have been taken when it was dialled.
            let better: Vec<Step> = plan_to(&me, self.identity.id, node, &them, &addr)
                .into_iter()
                .take_while(|step| step.path() != path && !matches!(step, Step::Relay { .. }))
                .filter(|step| relayed || step.path().ipv6())
                .collect();
            if !better.is_empty() {
                candidates.push((node, better));
            }
        }
        // Each member in turn across calls, so that a few that never
        // upgrade do not keep the others waiting.
        candidates.sort_by_key(|(node, _)| *node);
        let start = {
            let mut turn = cairn_host::lock(&self.upgrade_turn);
            let start = candidates
                .iter()
                .position(|(node, _)| Some(*node) > *turn)
                .unwrap_or(0);
            *turn = candidates
                .get(start + UPGRADES_PER_CALL - 1)
                .or(candidates.last())
                .map(|(node, _)| *node);
            start
        };
        candidates.rotate_left(start);
        candidates.truncate(UPGRADES_PER_CALL);
        let mut upgraded = 0;
        for (node, better) in candidates {
            for step in better {
                let tried = match &step {
                    Step::Dial { addr, kind } => self
                        .connect(node, addr, LAN_DIAL_TIMEOUT)
                        .await
                        .map(|peer| (peer, *kind)),
                    Step::Punch { via, ipv6 } => self.punched(node, *via, ipv6.as_deref()).await,
                    Step::Relay { .. } => continue,
                };
                if let Ok((peer, path)) = tried {
                    if let Some(slot) = self.slots().get_mut(&node) {
                        slot.peer = Some(peer);
                        slot.path = Some(path);
                    }
                    upgraded += 1;
                    break;
                }
            }
        }
        upgraded
    }

    /// How the kept connection to `node` was made, if there is one.
    pub fn path(&self, node: NodeId) -> Option<PathKind> {
        self.slots()
            .get(&node)
            .filter(|slot| slot.peer.is_some())
            .and_then(|slot| slot.path)
    }

    /// The endpoint the pool dials from.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// A connection to `node` at `addr` (HOST:PORT): the one kept, or a new
    /// one; the error of a recent failure while [`PoolConfig::down_for`]
    /// has not passed.
    pub async fn peer(&self, node: NodeId, addr: &str) -> Result<Arc<Peer>, NetError> {
        if let Some(known) = self.known(node) {
            return known;
        }
        let asked = Instant::now();
        let gate = Arc::clone(cairn_host::lock(&self.dialling).entry(node).or_default());
        let _gate = gate.lock().await;
        if let Some(known) = self.known(node) {
            return known;
        }
        // A dial that failed while this ask waited for it answers this ask
        // too: a burst of asks for a dead node costs one timeout, not one
        // each, whatever `down_for` says about later asks.
        if self
            .slots()
            .get(&node)
            .and_then(|slot| slot.down_since)
            .is_some_and(|since| since >= asked)
        {
            return Err(NetError::Refused("the node did not answer just now".into()));
        }
        let result = self.dial(node, addr).await;
        let mut slots = self.slots();
        let slot = slots.entry(node).or_insert(Slot {
            peer: None,
            down_since: None,
            latency: FIRST_LATENCY,
            path: None,
        });
        match result {
            Ok((peer, path)) => {
                slot.peer = Some(Arc::clone(&peer));
                slot.down_since = None;
                slot.path = Some(path);
                Ok(peer)
            }
            Err(e) => {
                slot.down_since = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Connects (if needed) and asks for `Stat`, within [`PROBE_TIMEOUT`];
    /// a node that fails is forgotten so the next ask dials afresh.
    pub async fn probe(
        &self,
        node: NodeId,
        addr: &str,
    ) -> Option<(Arc<Peer>, cairn_proto::StatInfo)> {
        let ask = async {
            let peer = self.peer(node, addr).await.ok()?;
            let stat = peer.stat().await.ok()?;
            Some((peer, stat))
        };
        let answer = tokio::time::timeout(PROBE_TIMEOUT, ask)
            .await
            .ok()
            .flatten();
        if answer.is_none() {
            self.mark_down(node);
        }
        answer
    }

    /// How many dials the pool has started.
    pub fn dials(&self) -> u64 {
        self.dials.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops the kept connection to `node`, and counts it as down from now.
    pub fn mark_down(&self, node: NodeId) {
        if let Some(slot) = self.slots().get_mut(&node) {
            slot.peer = None;
            slot.down_since = Some(Instant::now());
        }
    }

    /// Forgets that `node` failed, so the next ask dials it again (what
    /// is known of its path changed).
    pub fn forget_failure(&self, node: NodeId) {
        if let Some(slot) = self.slots().get_mut(&node) {
            slot.down_since = None;
        }
    }

    /// Folds one request's time into `node`'s smoothed latency.
    pub fn note_latency(&self, node: NodeId, took: Duration) {
        if let Some(slot) = self.slots().get_mut(&node) {
            slot.latency = (slot.latency * 3 + took) / 4;
        }
    }

    /// Whether `node` failed lately, and its smoothed latency.
    pub fn latency(&self, node: NodeId) -> (bool, Duration) {
        match self.slots().get(&node) {
            Some(slot) => (slot.down_since.is_some(), slot.latency),
            None => (false, FIRST_LATENCY),
        }
    }

    /// Closes every connection, and abandons dials still waiting on nodes
    /// that are down. The close frames go out at once; waiting for the full
    /// drain (three probe timeouts, seconds for a peer that never answered)
    /// helps nobody.
    pub async fn close(&self) {
        let peers: Vec<Arc<Peer>> = self
            .slots()
            .values()
            .filter_map(|slot| slot.peer.clone())
            .collect();
        for peer in peers {
            peer.close();
        }
        self.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_millis(200), self.endpoint.wait_idle()).await;
    }

    /// Tries the ways to `node` in the order [`reach::plan`] gives.
    async fn dial(&self, node: NodeId, addr: &str) -> Result<(Arc<Peer>, PathKind), NetError> {
        self.dials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let steps = match &self.routes {
            Some(routes) => {
                let them = routes.member(node).map(|(_, r)| r).unwrap_or_default();
                plan_to(&routes.me(), self.identity.id, node, &them, addr)
            }
            None => vec![Step::Dial {
                addr: addr.to_owned(),
                kind: PathKind::Lan,
            }],
        };
        if steps.is_empty() {
            return Err(NetError::NoPath {
                node: node.to_human(),
                why: "it is behind a router and keeps no rendezvous with any member anyone can reach (is UDP blocked in its house?)".into(),
            });
        }
        let mut failures = Vec::new();
        let last = steps.len() - 1;
        for (i, step) in steps.into_iter().enumerate() {
            // On a LAN a dial takes milliseconds: an address that does
            // not answer within a second is not on this LAN, and the
            // punch or relay after it should not wait for it.
            let within = if i < last {
                LAN_DIAL_TIMEOUT
            } else {
                self.config.timeout.min(PROBE_TIMEOUT)
            };
            let tried = match &step {
                Step::Dial { addr, kind } => self
                    .connect(node, addr, within)
                    .await
                    .map(|peer| (peer, *kind)),
                Step::Punch { via, ipv6 } => self.punched(node, *via, ipv6.as_deref()).await,
                Step::Relay { via } => self.relayed(node, *via).await,
            };
            match tried {
                Ok(done) => return Ok(done),
                // A single plain dial keeps its own error, as before any
                // traversal: it names the address and the cause.
                Err(e) if i == last && failures.is_empty() => return Err(e),
                Err(e) => failures.push(format!("{step:?}: {e}")),
            }
        }
        Err(NetError::NoPath {
            node: node.to_human(),
            why: failures.join("; "),
        })
    }

    async fn connect(
        &self,
        node: NodeId,
        addr: &str,
        within: Duration,
    ) -> Result<Arc<Peer>, NetError> {
        let socket: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| NetError::Resolve(addr.to_owned()))?;
        let peer = Peer::connect_as(
            &self.endpoint,
            socket,
            node,
            &self.identity,
            (self.cert)(),
            within,
        )
        .await?;
        Ok(Arc::new(peer.with_timeout(self.config.timeout)))
    }

    /// A connection to `node` at `addr` from the pool's endpoint that the
    /// pool does not keep (the caller closes it): to ask a question over
    /// a path other than the kept connection's, such as IPv6.
    pub async fn dial_aside(
        &self,
        node: NodeId,
        addr: &str,
        within: Duration,
    ) -> Result<Arc<Peer>, NetError> {
        self.connect(node, addr, within).await
    }

    /// The connection to a rendezvous `via`, dialled as any member.
    async fn rendezvous(&self, via: NodeId) -> Result<Arc<Peer>, NetError> {
        let addr = self
            .routes
            .as_ref()
            .and_then(|routes| routes.member(via))
            .map(|(addr, reach)| reach.public.unwrap_or(addr))
            .ok_or_else(|| {
                NetError::Refused(format!("rendezvous {} is not known", via.to_human()))
            })?;
        Box::pin(self.peer(via, &addr)).await
    }

    /// Has `node` punch toward this endpoint through its rendezvous, then
    /// dials it at `ipv6` when given, else where the rendezvous sees it.
    async fn punched(
        &self,
        node: NodeId,
        via: NodeId,
        ipv6: Option<&str>,
    ) -> Result<(Arc<Peer>, PathKind), NetError> {
        let asked = Instant::now();
        let seen = if via == self.identity.id {
            self.routes
                .as_ref()
                .and_then(|r| r.punch_here(node))
                .ok_or_else(|| {
                    NetError::Refused(format!("{} does not wait for calls here", node.to_human()))
                })?
        } else {
            let own_v6 = self
                .routes
                .as_ref()
                .and_then(|r| r.me().ipv6_working().map(|(addr, _)| addr.to_owned()));
            self.rendezvous(via)
                .await?
                .connect_call(node, own_v6)
                .await?
        };
        // The rendezvous may see the target over IPv6 (its call waits
        // there), yet this punch is over IPv4: its advertised public
        // address is where its router keeps the port. The path is named by
        // the family dialled.
        let at = match ipv6 {
            Some(v6) => v6.to_owned(),
            None if reach::canonical(seen.ip()).is_ipv6() => self
                .routes
                .as_ref()
                .and_then(|r| r.member(node))
                .and_then(|(_, them)| them.public)
                .unwrap_or_else(|| seen.to_string()),
            None => seen.to_string(),
        };
        let path = match at.parse::<SocketAddr>() {
            Ok(addr) if reach::canonical(addr.ip()).is_ipv6() => PathKind::Punched6,
            _ => PathKind::Punched,
        };
        // The callee hears of the punch about when this answer arrived:
        // a dial sent before its punch left would be dropped by its router
        // and resent only after QUIC's first timeout.
        tokio::time::sleep(asked.elapsed().min(Duration::from_millis(500))).await;
        let peer = self.connect(node, &at, TRAVERSAL_TIMEOUT).await?;
        Ok((peer, path))
    }

    /// Opens a relay toward `node` at its rendezvous and dials through it.
    async fn relayed(&self, node: NodeId, via: NodeId) -> Result<(Arc<Peer>, PathKind), NetError> {
        let raw = self
            .raw
            .clone()
            .ok_or_else(|| NetError::Refused("this endpoint cannot send relay tokens".into()))?;
        if via == self.identity.id {
            return Err(NetError::Refused("a node does not relay to itself".into()));
        }
        let rendezvous = self.rendezvous(via).await?;
        let (at, token) = rendezvous.relay_open(node).await?;
        // The token tells the relay where this side is; a few copies, as
        // any datagram may be lost.
        for _ in 0..3 {
            crate::tls::send_raw(&raw, &token, at);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let peer = self
            .connect(node, &at.to_string(), TRAVERSAL_TIMEOUT)
            .await?;
        Ok((peer, PathKind::Relayed(via)))
    }

    /// A live connection, or the error of a recent failure; `None` if a
    /// dial is due.
    fn known(&self, node: NodeId) -> Option<Result<Arc<Peer>, NetError>> {
        let mut slots = self.slots();
        let slot = slots.get_mut(&node)?;
        // A connection the node closed (it restarted, say) is dialled
        // afresh rather than handed out to fail every request.
        if slot.peer.as_ref().is_some_and(|peer| peer.is_closed()) {
            slot.peer = None;
        }
        if let Some(peer) = &slot.peer {
            return Some(Ok(Arc::clone(peer)));
        }
        let down_for = self.config.down_for;
        slot.down_since
            .is_some_and(|since| since.elapsed() < down_for)
            .then(|| Err(NetError::Refused("the node did not answer recently".into())))
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<NodeId, Slot>> {
        cairn_host::lock(&self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rendezvous whose own advert this program has not heard is guessed
    /// to wait at... itself: its plan must not go through it, or the dial
    /// would wait on its own gate forever.
    #[test]
    fn no_member_is_dialled_through_itself() {
        let (own, rendezvous) = (NodeId([1; 32]), NodeId([9; 32]));
        let me = Reach {
            nat: reach::Nat::Punchable,
            public: Some("11.77.0.20:7447".into()),
            rendezvous: Some(rendezvous),
            relays: false,
            ipv6: None,
        };
        let unknown = Reach::default();
        let steps = plan_to(&me, own, rendezvous, &unknown, "11.77.0.2:7447");
        assert_eq!(
            steps,
            vec![Step::Dial {
                addr: "11.77.0.2:7447".into(),
                kind: PathKind::Direct
            }]
        );
        // Another member not heard from: its guessed rendezvous stays.
        let other = plan_to(&me, own, NodeId([5; 32]), &unknown, "192.168.4.10:7447");
        assert!(other.contains(&Step::Relay { via: rendezvous }));
    }

    /// A burst of asks for a node that does not answer (a stopped box: QUIC
    /// hears nothing back) costs one dial: the asks queued behind it get
    /// its failure instead of a timeout each, even when failed nodes may
    /// be dialled again at once (`down_for` zero, as the node's pool has).
    #[tokio::test]
    async fn asks_waiting_on_a_failed_dial_share_its_failure() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let pool = Arc::new(Pool::new(
            endpoint,
            Identity::generate().unwrap(),
            Box::new(|| None),
            PoolConfig {
                timeout: Duration::from_millis(300),
                down_for: Duration::ZERO,
            },
        ));
        let node = NodeId([9; 32]);
        let asks: Vec<_> = (0..4)
            .map(|_| {
                let (pool, addr) = (Arc::clone(&pool), addr.clone());
                tokio::spawn(async move { pool.peer(node, &addr).await.is_err() })
            })
            .collect();
        for ask in asks {
            assert!(ask.await.unwrap(), "a silent node cannot be connected");
        }
        assert_eq!(pool.dials(), 1);
        // A later ask dials again (down_for is zero).
        assert!(pool.peer(node, &addr).await.is_err());
        assert_eq!(pool.dials(), 2);
        assert!(pool.latency(node).0, "counted as down");
    }
}

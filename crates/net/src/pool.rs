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

use crate::NetError;
use crate::client::Peer;
use crate::identity::Identity;

/// How long a node may take to connect and answer a liveness question; a
/// dead node must not hold up a round (QUIC to a closed port on some paths
/// only times out, and quinn does not act on ICMP unreachable).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The latency assumed for a node not measured yet.
const FIRST_LATENCY: Duration = Duration::from_millis(50);

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
}

struct Slot {
    peer: Option<Arc<Peer>>,
    down_since: Option<Instant>,
    /// Smoothed time of a request, for "fastest first".
    latency: Duration,
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
        }
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
        });
        match &result {
            Ok(peer) => {
                slot.peer = Some(Arc::clone(peer));
                slot.down_since = None;
            }
            Err(_) => slot.down_since = Some(Instant::now()),
        }
        result
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

    async fn dial(&self, node: NodeId, addr: &str) -> Result<Arc<Peer>, NetError> {
        self.dials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            self.config.timeout.min(PROBE_TIMEOUT),
        )
        .await?;
        Ok(Arc::new(peer.with_timeout(self.config.timeout)))
    }

    /// A live connection, or the error of a recent failure; `None` if a
    /// dial is due.
    fn known(&self, node: NodeId) -> Option<Result<Arc<Peer>, NetError>> {
        let slots = self.slots();
        let slot = slots.get(&node)?;
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

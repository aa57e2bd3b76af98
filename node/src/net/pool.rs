//! Connections a node makes to other nodes (the steward to holders, gossip
//! to members), dialled on demand with the node's own key and its swarm
//! certificate, and kept until they fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::NetError;
use super::client::Peer;
use crate::identity::Identity;
use crate::ids::NodeId;
use crate::membership::Membership;

/// How long a node may take to connect and answer a liveness question; a
/// dead node must not hold up a round (QUIC to a closed port on some paths
/// only times out).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections to other nodes, made on demand and kept.
pub struct Pool {
    endpoint: quinn::Endpoint,
    identity: Identity,
    /// Shown to other nodes, so that members of the swarm admit this one.
    membership: Arc<Membership>,
    timeout: Duration,
    peers: tokio::sync::Mutex<HashMap<NodeId, Arc<Peer>>>,
}

impl Pool {
    /// An empty pool dialling from `endpoint` as `identity`, showing the
    /// node's membership; requests get `timeout` each.
    pub fn new(
        endpoint: quinn::Endpoint,
        identity: Identity,
        membership: Arc<Membership>,
        timeout: Duration,
    ) -> Self {
        Self {
            endpoint,
            identity,
            membership,
            timeout,
            peers: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A connection to `node` at `addr`: the one kept, or a new one.
    pub async fn peer(&self, node: NodeId, addr: &str) -> Result<Arc<Peer>, NetError> {
        if let Some(peer) = self.peers.lock().await.get(&node) {
            return Ok(Arc::clone(peer));
        }
        let socket: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| NetError::Resolve(addr.to_owned()))?;
        let peer = Arc::new(
            Peer::connect_as(
                &self.endpoint,
                socket,
                node,
                &self.identity,
                self.membership.own_cert(),
                self.timeout.min(PROBE_TIMEOUT),
            )
            .await?
            .with_timeout(self.timeout),
        );
        self.peers.lock().await.insert(node, Arc::clone(&peer));
        Ok(peer)
    }

    /// Connects (if needed) and asks for `Stat`, within [`PROBE_TIMEOUT`];
    /// a node that fails is forgotten so the next ask dials afresh.
    pub async fn probe(
        &self,
        node: NodeId,
        addr: &str,
    ) -> Option<(Arc<Peer>, crate::proto::StatInfo)> {
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
            self.forget(node).await;
        }
        answer
    }

    /// Drops the kept connection to `node`.
    pub async fn forget(&self, node: NodeId) {
        self.peers.lock().await.remove(&node);
    }
}

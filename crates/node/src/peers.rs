//! What one peer key may hold of the node at once, whatever it sends: a
//! few connections, and one request rate across all of them. Plain code on
//! a given time; the server asks it at each connection and each request.
//!
//! A connection has its own streams and buffers, so a key that opened
//! connections without end would multiply every per-connection limit; and
//! a rate per connection would be multiplied the same way. So connections
//! are counted per key and in all, and the token bucket is the key's, kept
//! a while after its last connection closes (reconnecting does not refill
//! it). A key's newest connection replaces its oldest beyond the share:
//! a close that never arrived (a crashed program, a router that forgot
//! the flow) must not lock an owner out until the idle timeout, and the
//! key still holds no more than its share.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_proto::ids::NodeId;
use cairn_proto::limits::{Limits, RateLimiter};

/// Connections one key may hold at once. The owner's client, a steward and
/// gossip each share one connection per node, so honest keys use one or two.
pub const MAX_CONNECTIONS_PER_KEY: u32 = 4;
/// Connections the node holds at once, from all keys.
pub const MAX_CONNECTIONS: u32 = 256;
/// Keys whose rate is remembered after their last connection closed.
const REMEMBERED: usize = 1024;

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooMany {
    /// The node holds all the connections it takes.
    #[error("this node serves {MAX_CONNECTIONS} connections already; try again shortly")]
    InAll,
}

#[derive(Debug)]
struct Entry {
    /// Its connections' numbers, oldest first.
    connections: std::collections::VecDeque<u64>,
    limiter: RateLimiter,
}

/// The keys connected now (and recently), with their connections and rate.
#[derive(Debug)]
pub struct PeerTable {
    limits: Limits,
    connections: u32,
    keys: BTreeMap<NodeId, Entry>,
}

impl PeerTable {
    /// An empty table; every key gets `limits`' burst and rate.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            connections: 0,
            keys: BTreeMap::new(),
        }
    }

    /// Connection number `id` of `key` was authenticated at `now`:
    /// counted, or refused. Beyond the key's share it replaces the key's
    /// oldest connection, whose number is returned for the server to
    /// close.
    pub fn connect(&mut self, key: NodeId, id: u64, now: Duration) -> Result<Option<u64>, TooMany> {
        let limits = self.limits.clone();
        let full = self.connections >= MAX_CONNECTIONS;
        let entry = self.keys.entry(key).or_insert_with(|| Entry {
            connections: std::collections::VecDeque::new(),
            limiter: RateLimiter::new(&limits, now),
        });
        let replaced = if entry.connections.len() >= MAX_CONNECTIONS_PER_KEY as usize {
            entry.connections.pop_front()
        } else if full {
            return Err(TooMany::InAll);
        } else {
            self.connections += 1;
            None
        };
        entry.connections.push_back(id);
        self.forget_idle(key);
        Ok(replaced)
    }

    /// Connection number `id` of `key` ended (nothing, if it was replaced).
    pub fn disconnect(&mut self, key: &NodeId, id: u64) {
        if let Some(entry) = self.keys.get_mut(key)
            && let Some(at) = entry.connections.iter().position(|c| *c == id)
        {
            entry.connections.remove(at);
            self.connections -= 1;
        }
    }

    /// One request of `key` at `now`: taken from its bucket, or how long
    /// until there is room.
    pub fn request(&mut self, key: &NodeId, now: Duration) -> Result<(), Duration> {
        match self.keys.get_mut(key) {
            Some(entry) => entry.limiter.try_acquire(now),
            None => Err(Duration::from_secs(1)),
        }
    }

    /// Connections held now.
    #[cfg(test)]
    fn connections(&self) -> u32 {
        self.connections
    }

    /// Keeps the table to the connected keys and at most [`REMEMBERED`]
    /// others (not `keep`).
    fn forget_idle(&mut self, keep: NodeId) {
        while self.keys.len() > REMEMBERED + self.connections as usize {
            let idle = self
                .keys
                .iter()
                .find(|(k, e)| e.connections.is_empty() && **k != keep)
                .map(|(k, _)| *k);
            match idle {
                Some(k) => {
                    self.keys.remove(&k);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            burst: 10,
            per_second: 5,
            ..Limits::default()
        }
    }

    #[test]
    fn a_key_gets_a_few_connections_and_one_rate_across_them() {
        let mut table = PeerTable::new(limits());
        let key = NodeId([1; 32]);
        let t = Duration::ZERO;
        for id in 0..u64::from(MAX_CONNECTIONS_PER_KEY) {
            assert_eq!(table.connect(key, id, t), Ok(None));
        }
        // A fifth replaces the first: the key never holds more than four.
        assert_eq!(table.connect(key, 100, t), Ok(Some(0)));
        assert_eq!(table.connections(), MAX_CONNECTIONS_PER_KEY);
        // The replaced one's end changes nothing.
        table.disconnect(&key, 0);
        assert_eq!(table.connections(), MAX_CONNECTIONS_PER_KEY);
        table.connect(NodeId([2; 32]), 200, t).unwrap();
        // The burst is the key's, not each connection's.
        let taken = (0..100).filter(|_| table.request(&key, t).is_ok()).count();
        assert_eq!(taken, 10);
        // Reconnecting does not refill the bucket.
        for id in [1, 2, 3, 100] {
            table.disconnect(&key, id);
        }
        table.connect(key, 300, t).unwrap();
        assert!(table.request(&key, t).is_err());
        assert!(table.request(&key, t + Duration::from_secs(1)).is_ok());
        assert_eq!(table.connections(), 2);
    }

    #[test]
    fn the_node_holds_a_bounded_number_of_connections_and_keys() {
        let mut table = PeerTable::new(limits());
        let t = Duration::ZERO;
        for n in 0..MAX_CONNECTIONS {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            table.connect(NodeId(id), n.into(), t).unwrap();
        }
        assert_eq!(
            table.connect(NodeId([0xff; 32]), 999, t),
            Err(TooMany::InAll)
        );
        // Many keys come and go: the table keeps a bounded number.
        for n in 0..MAX_CONNECTIONS {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            table.disconnect(&NodeId(id), n.into());
        }
        for n in 0..5_000u32 {
            let mut id = [0xaa; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            table.connect(NodeId(id), n.into(), t).unwrap();
            table.disconnect(&NodeId(id), n.into());
        }
        assert!(table.keys.len() <= REMEMBERED + 1, "{}", table.keys.len());
        assert_eq!(table.connections(), 0);
    }
}

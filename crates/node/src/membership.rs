//! This node's swarm: its own membership certificate and the removals it
//! has seen (`swarm.toml` in the state directory, replaced atomically), and
//! the admission rule for peers that show a certificate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use cairn_proto::NodeAddr;
use cairn_proto::ids::{NodeId, OwnerId};
use cairn_proto::membership::{MemberCert, MembershipError, Removal, Role};

const FILE: &str = "swarm.toml";

/// Why a membership change is refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The certificate or removal does not check out.
    #[error("refused: the certificate {0}")]
    Invalid(#[from] MembershipError),
    /// The certificate is not for a node.
    #[error("refused: that ticket admits an owner's client, not a node; ask for a node invite")]
    NotANode,
    /// The node is already in another swarm.
    #[error(
        "refused: this node is in swarm {0} already; it must leave it first (a factory reset), or be removed there"
    )]
    OtherSwarm(String),
    /// The node is in no swarm, so a removal means nothing here.
    #[error("this node is in no swarm")]
    NoSwarm,
    /// The file could not be written; nothing changed.
    #[error("cannot record the swarm membership in {path}: {source}; nothing changed")]
    Save {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {reason}; fix or remove it (removing it leaves the swarm)")]
    Load {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// This node's certificate, as a ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
    /// Removed members' keys, hex.
    #[serde(default)]
    removed: BTreeSet<String>,
    /// The founder's signed removals (postcard, hex), kept so that this
    /// node can retell them to members that missed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removals: Vec<String>,
    /// Members to gossip with first, as given at the join.
    #[serde(default)]
    seeds: Vec<NodeAddr>,
}

/// The node's membership, shared by the server and the steward.
#[derive(Debug)]
pub struct Membership {
    path: PathBuf,
    node: NodeId,
    state: Mutex<(Option<MemberCert>, State)>,
}

impl Membership {
    /// Loads the membership of `node` from `state_dir` (none: in no swarm).
    pub fn open(state_dir: &Path, node: NodeId) -> Result<Self, JoinError> {
        let path = state_dir.join(FILE);
        let state: State = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| JoinError::Load {
                path: path.clone(),
                reason: e.to_string().trim_end().to_owned(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                return Err(JoinError::Load {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let cert = match &state.cert {
            Some(ticket) => Some(
                MemberCert::from_ticket(ticket).map_err(|e| JoinError::Load {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            ),
            None => None,
        };
        Ok(Self {
            path,
            node,
            state: Mutex::new((cert, state)),
        })
    }

    /// Forgets the membership kept in `state_dir` (a factory reset: the
    /// certificate names a key the node no longer has).
    pub fn forget(state_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(state_dir.join(FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The swarm this node is in.
    pub fn swarm(&self) -> Option<OwnerId> {
        self.lock().0.as_ref().map(|c| c.swarm)
    }

    /// This node's certificate, to show to others.
    pub fn own_cert(&self) -> Option<MemberCert> {
        self.lock().0.clone()
    }

    /// The node's connection pool: dials as `identity` from `endpoint`,
    /// showing the certificate the node holds at each dial (it may join a
    /// swarm while it runs); a failed node is dialled again at the next
    /// ask, since rounds are seconds apart.
    pub fn pool(
        self: &std::sync::Arc<Self>,
        endpoint: quinn::Endpoint,
        identity: cairn_net::Identity,
        timeout: std::time::Duration,
    ) -> cairn_net::Pool {
        let membership = std::sync::Arc::clone(self);
        cairn_net::Pool::new(
            endpoint,
            identity,
            Box::new(move || membership.own_cert()),
            cairn_net::pool::PoolConfig {
                timeout,
                down_for: std::time::Duration::ZERO,
            },
        )
    }

    /// Members to gossip with first.
    pub fn seeds(&self) -> Vec<NodeAddr> {
        self.lock().1.seeds.clone()
    }

    /// Joins (or renews membership in) the certificate's swarm; `seeds` are
    /// members to gossip with first.
    pub fn join(
        &self,
        cert: MemberCert,
        seeds: &[NodeAddr],
        now: u64,
    ) -> Result<OwnerId, JoinError> {
        let swarm = cert.swarm;
        if cert.role != Role::Node {
            return Err(JoinError::NotANode);
        }
        cert.verify(&swarm, &self.node, now)?;
        let mut guard = self.lock();
        if let Some(current) = &guard.0
            && current.swarm != cert.swarm
        {
            return Err(JoinError::OtherSwarm(current.swarm.to_hex()));
        }
        let mut next = guard.1.clone();
        next.cert = Some(cert.to_ticket());
        if !seeds.is_empty() {
            next.seeds = seeds.to_vec();
        }
        self.save(&next)?;
        *guard = (Some(cert), next);
        Ok(swarm)
    }

    /// Leaves the swarm: forgets the certificate, the seeds and the
    /// removals (the box was handed to an owner outside that swarm's
    /// founder's authority). Returns the swarm left, if any.
    pub fn leave(&self) -> Result<Option<OwnerId>, JoinError> {
        let mut guard = self.lock();
        let left = guard.0.as_ref().map(|c| c.swarm);
        if left.is_none() {
            return Ok(None);
        }
        let next = State::default();
        self.save(&next)?;
        *guard = (None, next);
        Ok(left)
    }

    /// Keeps a removal of this node's swarm; true when it is news.
    pub fn remove(&self, removal: &Removal) -> Result<bool, JoinError> {
        let mut guard = self.lock();
        let swarm = guard
            .0
            .as_ref()
            .map(|c| c.swarm)
            .ok_or(JoinError::NoSwarm)?;
        removal.verify(&swarm)?;
        let mut next = guard.1.clone();
        if !next.removed.insert(removal.member.to_hex()) {
            return Ok(false);
        }
        if let Ok(bytes) = postcard::to_allocvec(removal) {
            next.removals.push(data_encoding::HEXLOWER.encode(&bytes));
        }
        self.save(&next)?;
        guard.1 = next;
        Ok(true)
    }

    /// The signed removals this node keeps (those it can retell).
    pub fn removals(&self) -> Vec<Removal> {
        self.lock()
            .1
            .removals
            .iter()
            .filter_map(|h| {
                postcard::from_bytes(&data_encoding::HEXLOWER.decode(h.as_bytes()).ok()?).ok()
            })
            .collect()
    }

    /// Whether `peer`, showing `cert`, is a member of this node's swarm now.
    pub fn admits(&self, peer: &NodeId, cert: Option<&MemberCert>, now: u64) -> bool {
        let guard = self.lock();
        let (Some(own), Some(cert)) = (&guard.0, cert) else {
            return false;
        };
        cert.verify(&own.swarm, peer, now).is_ok() && !guard.1.removed.contains(&peer.to_hex())
    }

    /// Whether `peer` was removed.
    pub fn is_removed(&self, peer: &NodeId) -> bool {
        self.lock().1.removed.contains(&peer.to_hex())
    }

    fn lock(&self) -> MutexGuard<'_, (Option<MemberCert>, State)> {
        cairn_host::lock(&self.state)
    }

    fn save(&self, state: &State) -> Result<(), JoinError> {
        let save = |source| JoinError::Save {
            path: self.path.clone(),
            source,
        };
        let text = format!(
            "# This node's swarm membership (its certificate) and the members removed\n# from the swarm. Written by cairnd; do not edit.\n{}",
            toml::to_string(state).map_err(|e| save(std::io::Error::other(e)))?
        );
        cairn_host::durable::replace_file(&self.path, text.as_bytes(), 0o644).map_err(save)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NODE: NodeId = NodeId([5; 32]);
    const PEER: NodeId = NodeId([6; 32]);

    #[test]
    fn joined_members_admit_each_other_until_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let founder = SigningKey::from_bytes(&[1; 32]);
        let membership = Membership::open(dir.path(), NODE).unwrap();
        let peer_cert = MemberCert::issue(&founder, &PEER, Role::Node, 1_000);
        assert!(
            !membership.admits(&PEER, Some(&peer_cert), 10),
            "in no swarm yet"
        );
        // A ticket for another node, or for a client, does not make this node a member.
        assert!(membership.join(peer_cert.clone(), &[], 10).is_err());
        let client_cert = MemberCert::issue(&founder, &NODE, Role::Client, 1_000);
        assert!(matches!(
            membership.join(client_cert, &[], 10),
            Err(JoinError::NotANode)
        ));
        membership
            .join(
                MemberCert::issue(&founder, &NODE, Role::Node, 1_000),
                &[],
                10,
            )
            .unwrap();
        assert!(membership.admits(&PEER, Some(&peer_cert), 10));
        assert!(!membership.admits(&PEER, None, 10));
        assert!(
            !membership.admits(&PEER, Some(&peer_cert), 1_001),
            "expired"
        );
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let foreign = MemberCert::issue(&stranger, &PEER, Role::Node, 1_000);
        assert!(
            !membership.admits(&PEER, Some(&foreign), 10),
            "another swarm"
        );
        assert!(matches!(
            membership.join(
                MemberCert::issue(&stranger, &NODE, Role::Node, 1_000),
                &[],
                10
            ),
            Err(JoinError::OtherSwarm(_))
        ));
        // A forged removal changes nothing; the founder's does, and persists.
        let forged = Removal {
            swarm: cairn_proto::OwnerId(founder.verifying_key().to_bytes()),
            ..Removal::issue(&stranger, &PEER)
        };
        assert!(membership.remove(&forged).is_err());
        assert!(membership.admits(&PEER, Some(&peer_cert), 10));
        let removal = Removal::issue(&founder, &PEER);
        assert!(membership.remove(&removal).unwrap(), "news");
        assert!(!membership.remove(&removal).unwrap(), "heard before");
        assert!(!membership.admits(&PEER, Some(&peer_cert), 10));
        let reopened = Membership::open(dir.path(), NODE).unwrap();
        assert!(reopened.is_removed(&PEER));
        assert_eq!(reopened.removals(), vec![removal]);
        // A factory reset forgets it all (and forgetting twice is fine).
        Membership::forget(dir.path()).unwrap();
        Membership::forget(dir.path()).unwrap();
        let forgotten = Membership::open(dir.path(), NODE).unwrap();
        assert_eq!(forgotten.swarm(), None);
        assert!(!forgotten.is_removed(&PEER));
        assert_eq!(
            reopened.swarm(),
            Some(OwnerId(founder.verifying_key().to_bytes()))
        );
    }
}

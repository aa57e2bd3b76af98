//! Who may use this node, and for what, as plain code: the server gathers
//! what it knows of a peer ([`Standing`]) and these functions decide, at
//! the handshake and again on every request (so a removal, a claim or a
//! transfer takes effect at once, on connections already open).
//!
//! The rules: a key the node's configuration allows, or the owner's
//! client, administers the node; a member of the node's swarm (by a
//! certificate its founder signed for that very key, not removed) may use
//! it; while the pairing window is open anyone may connect, but a key
//! admitted only by the window may look (`Stat`) and claim, nothing else.
//! A removed key is refused even while the window is open.

use cairn_proto::ids::NodeId;
use cairn_proto::limits::Refusal;
use cairn_proto::{ErrorCode, PROTOCOL_VERSION, Request};

/// What the node knows of a peer when it decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// The node's configuration allows the key (or allows any key).
    pub configured: bool,
    /// The key is the client key of the box's owner.
    pub owner_client: bool,
    /// The key showed a valid certificate of the node's swarm.
    pub member: bool,
    /// The key was removed from the node's swarm.
    pub removed: bool,
}

impl Standing {
    /// Whether the peer may administer the node (join it to a swarm).
    pub fn administers(&self) -> bool {
        self.configured || self.owner_client
    }

    /// Whether the peer may use the node.
    pub fn admitted(&self) -> bool {
        self.administers() || (self.member && !self.removed)
    }
}

/// Whether to finish a handshake with `peer`, who speaks `versions`; the
/// refusal says why, in words sent to the peer.
pub fn at_handshake(
    peer: &NodeId,
    standing: Standing,
    versions: &[u16],
    pairing_open: bool,
) -> Result<(), String> {
    if !versions.contains(&PROTOCOL_VERSION) {
        return Err(format!(
            "no common protocol version (this node speaks {PROTOCOL_VERSION})"
        ));
    }
    if standing.removed {
        return Err(format!(
            "key {} was removed from this node's swarm",
            peer.to_human()
        ));
    }
    if !standing.admitted() && !pairing_open {
        return Err(format!(
            "key {} is not allowed on this node; ask its owner to add it, or, to claim an unclaimed box, open its pairing window first (hold its button about 5 seconds)",
            peer.to_human()
        ));
    }
    Ok(())
}

/// Whether `peer` may make `request` now.
pub fn for_request(peer: &NodeId, standing: Standing, request: &Request) -> Result<(), Refusal> {
    if !standing.admitted() && !matches!(request, Request::Stat | Request::Claim { .. }) {
        return Err(Refusal {
            code: ErrorCode::Forbidden,
            message: format!(
                "key {} may only claim this box (its pairing window is open); claim it first",
                peer.to_human()
            ),
        });
    }
    if matches!(request, Request::Join { .. }) && !standing.administers() {
        return Err(Refusal {
            code: ErrorCode::Forbidden,
            message: "only the box's owner may make it join a swarm (claim it first)".into(),
        });
    }
    if matches!(request, Request::Usage | Request::Evict { .. }) && !standing.administers() {
        return Err(Refusal {
            code: ErrorCode::Forbidden,
            message: "only the box's owner may see who uses it or evict an owner".into(),
        });
    }
    if matches!(
        request,
        Request::Settings { .. } | Request::AdoptDisks { .. }
    ) && !standing.administers()
    {
        return Err(Refusal {
            code: ErrorCode::Forbidden,
            message: "only the box's owner may change its settings or make it adopt disks (claim it first)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: NodeId = NodeId([7; 32]);

    fn standing(configured: bool, owner_client: bool, member: bool, removed: bool) -> Standing {
        Standing {
            configured,
            owner_client,
            member,
            removed,
        }
    }

    #[test]
    fn the_handshake_admits_the_allowed_the_owner_and_members_or_anyone_while_pairing() {
        let v = [PROTOCOL_VERSION];
        for admitted in [
            standing(true, false, false, false),
            standing(false, true, false, false),
            standing(false, false, true, false),
        ] {
            assert_eq!(at_handshake(&PEER, admitted, &v, false), Ok(()));
        }
        let stranger = Standing::default();
        let refused = at_handshake(&PEER, stranger, &v, false).unwrap_err();
        assert!(refused.contains("pairing window"), "{refused}");
        assert_eq!(at_handshake(&PEER, stranger, &v, true), Ok(()));
        // A removed member stays out, window or not.
        let removed = standing(false, false, true, true);
        assert!(at_handshake(&PEER, removed, &v, true).is_err());
        // No common version: refused whoever it is.
        let err = at_handshake(&PEER, standing(true, false, false, false), &[9], false);
        assert!(err.unwrap_err().contains("protocol version"));
    }

    #[test]
    fn a_key_in_only_by_the_window_may_look_and_claim_and_nothing_else() {
        let stranger = Standing::default();
        assert!(for_request(&PEER, stranger, &Request::Stat).is_ok());
        let claim = Request::Claim {
            owner: cairn_proto::OwnerId([1; 32]),
            signature: vec![],
        };
        assert!(for_request(&PEER, stranger, &claim).is_ok());
        let put = Request::Put {
            id: cairn_proto::ShardId([1; 32]),
            len: 1,
            owner: cairn_proto::OwnerId([1; 32]),
            lease_expires: 1,
        };
        let refused = for_request(&PEER, stranger, &put).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert!(for_request(&PEER, standing(false, false, true, false), &put).is_ok());
    }

    #[test]
    fn only_an_administrator_joins_the_node_to_a_swarm() {
        let founder = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let join = Request::Join {
            cert: cairn_proto::membership::MemberCert::issue(
                &founder,
                &NodeId([1; 32]),
                cairn_proto::membership::Role::Node,
                10,
            ),
            seeds: vec![],
        };
        let member = standing(false, false, true, false);
        assert_eq!(
            for_request(&PEER, member, &join).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(for_request(&PEER, standing(false, true, false, false), &join).is_ok());
        assert!(for_request(&PEER, standing(true, false, false, false), &join).is_ok());
    }
}

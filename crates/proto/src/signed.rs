//! Every domain-separated message an owner or a swarm's founder signs, in
//! one place, so that no two can ever be confused: each starts with its own
//! tag (`cairn/1 delete\0`, `claim`, `transfer`, `drain`, `member`,
//! `remove`, `root`) and binds what it speaks about (the node, the shard,
//! the client key, the swarm, an expiry), so it cannot be replayed on
//! another box, for another shard, or forever. All are Ed25519; the keys
//! are owners' keys (an owner id is its public key).
//!
//! - delete: only a shard's owner may delete it from a node;
//! - claim: a new owner takes a box through its client key, only while the
//!   box's pairing window is open (someone is at the box);
//! - transfer and drain: the box's owner hands it on, or empties it;
//! - member and remove: a swarm's founder admits a key, or removes it
//!   (the records are in the `membership` module);
//! - root: the owner's root record (the `root` module);
//! - steer: an owner lets its client (by client key) steer its table at
//!   one steward (track, locate) for a while.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::ids::{NodeId, OwnerId, ShardId};

/// What kind of member a certificate admits; part of what the founder signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// A storage node (its node key).
    Node,
    /// An owner's client (its client key).
    Client,
}

/// Longest an expiring signature (delete, transfer, drain) may be valid
/// for, counted from the node's clock.
pub const MAX_VALIDITY_S: u64 = 24 * 3600;

/// Why an owner-signed request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OwnerAuthError {
    /// The signature is not 64 bytes or does not verify with the owner's key.
    #[error("the request is not signed by the owner (of the shard, or of the box)")]
    BadSignature,
    /// The owner id is not a valid Ed25519 public key.
    #[error("the owner key is not a valid Ed25519 key")]
    BadOwnerKey,
    /// The signature's validity has ended.
    #[error(
        "the signed request expired at {not_after} (now {now}); sign a fresh one (is this machine's clock right?)"
    )]
    Expired {
        /// When it ended.
        not_after: u64,
        /// The node's time.
        now: u64,
    },
    /// The signature claims a validity longer than the node accepts.
    #[error("the signed request is valid until {not_after}, more than {MAX_VALIDITY_S} s ahead")]
    TooLong {
        /// The claimed end.
        not_after: u64,
    },
}

/// The bytes an owner signs to delete `shard` from `node`.
pub fn delete_message(node: &NodeId, shard: &ShardId, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"cairn/1 delete\0");
    out.extend_from_slice(&node.0);
    out.extend_from_slice(&shard.0);
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// The bytes an owner signs to claim `node` through `client`.
pub fn claim_message(node: &NodeId, client: &NodeId, owner: &OwnerId) -> Vec<u8> {
    let mut out = Vec::with_capacity(110);
    out.extend_from_slice(b"cairn/1 claim\0");
    out.extend_from_slice(&node.0);
    out.extend_from_slice(&client.0);
    out.extend_from_slice(&owner.0);
    out
}

/// The bytes the current owner signs to hand `node` to another owner.
pub fn transfer_message(
    node: &NodeId,
    to_owner: &OwnerId,
    to_client: &NodeId,
    not_after: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(121);
    out.extend_from_slice(b"cairn/1 transfer\0");
    out.extend_from_slice(&node.0);
    out.extend_from_slice(&to_owner.0);
    out.extend_from_slice(&to_client.0);
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// What the box's owner signs to evict `owner` from `node` (or lift it).
pub fn evict_message(node: &NodeId, owner: &OwnerId, evict: bool, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 32 + 32 + 1 + 8);
    out.extend_from_slice(b"cairn/1 evict\0");
    out.extend_from_slice(&node.0);
    out.extend_from_slice(&owner.0);
    out.push(u8::from(evict));
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// The bytes the owner signs to start (or stop) draining `node`.
pub fn drain_message(node: &NodeId, draining: bool, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(56);
    out.extend_from_slice(b"cairn/1 drain\0");
    out.extend_from_slice(&node.0);
    out.push(u8::from(draining));
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// What the box's owner signs to change `node`'s settings (the change as
/// postcard encodes it: one encoding per change).
pub fn settings_message(node: &NodeId, change: &crate::SettingsChange, not_after: u64) -> Vec<u8> {
    let mut out = b"cairn/1 settings\0".to_vec();
    out.extend_from_slice(&node.0);
    out.extend_from_slice(&postcard::to_stdvec(change).unwrap_or_default());
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// What the box's owner signs to offer `node` an update bundle.
pub fn update_message(
    node: &NodeId,
    bundle: &crate::BundleRef,
    allow_downgrade: bool,
    from: Option<&NodeId>,
    not_after: u64,
) -> Vec<u8> {
    let mut out = b"cairn/1 update\0".to_vec();
    out.extend_from_slice(&node.0);
    out.extend_from_slice(&bundle.hash);
    out.extend_from_slice(&bundle.size.to_le_bytes());
    out.extend_from_slice(&(bundle.version.len() as u64).to_le_bytes());
    out.extend_from_slice(bundle.version.as_bytes());
    out.push(u8::from(allow_downgrade));
    match from {
        Some(member) => {
            out.push(1);
            out.extend_from_slice(&member.0);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// What the box's owner signs for a link to `node`'s page (the owner's
/// view), valid until `not_after`.
pub fn panel_message(node: &NodeId, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + 32 + 8);
    out.extend_from_slice(b"cairn/1 panel\0");
    out.extend_from_slice(&node.0);
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// A link to the owner's view of a box's page: until when, and the
/// owner's signature over [`panel_message`]. In the URL's query as
/// `until=<unix seconds>&sig=<128 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelLink {
    /// Unix time after which the link is void.
    pub not_after: u64,
    /// The owner's signature.
    pub signature: Vec<u8>,
}

/// Why an owner's link to the page is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PanelLinkError {
    /// The URL carries no link.
    #[error("this page is for the box's owner: open the link `cairn panel NODE` prints")]
    Missing,
    /// The query is not a link `cairn panel` makes.
    #[error("this is not a link `cairn panel` makes ({0}); open the link it prints, whole")]
    Malformed(&'static str),
    /// The box has no owner to sign links.
    #[error("this box has no owner yet: claim it first (`cairn claim`)")]
    Unclaimed,
    /// The owner's signature did not check, or the link is too long-lived.
    #[error("this link is not signed by this box's owner for this box: {0}")]
    Refused(OwnerAuthError),
}

impl PanelLink {
    /// Signs a link to `node`'s page until `not_after`.
    pub fn sign(key: &SigningKey, node: &NodeId, not_after: u64) -> Self {
        Self {
            not_after,
            signature: sign(key, &panel_message(node, not_after)),
        }
    }

    /// The URL query that carries it.
    pub fn to_query(&self) -> String {
        let mut sig = String::with_capacity(128);
        for byte in &self.signature {
            sig.push_str(&format!("{byte:02x}"));
        }
        format!("until={}&sig={sig}", self.not_after)
    }

    /// Reads a link from a URL's query (`None`: no query at all).
    pub fn from_query(query: Option<&str>) -> Result<Self, PanelLinkError> {
        let query = query
            .filter(|q| !q.is_empty())
            .ok_or(PanelLinkError::Missing)?;
        let (mut until, mut sig) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("until", value)) => until = Some(value),
                Some(("sig", value)) => sig = Some(value),
                _ => {}
            }
        }
        if until.is_none() && sig.is_none() {
            return Err(PanelLinkError::Missing);
        }
        let not_after = until
            .and_then(|u| u.parse().ok())
            .ok_or(PanelLinkError::Malformed("no valid `until`"))?;
        let sig = sig.ok_or(PanelLinkError::Malformed("no `sig`"))?;
        if sig.len() != 128 || !sig.is_ascii() {
            return Err(PanelLinkError::Malformed("`sig` is not 128 hex digits"));
        }
        let signature = (0..64)
            .map(|i| u8::from_str_radix(&sig[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| PanelLinkError::Malformed("`sig` is not 128 hex digits"))?;
        Ok(Self {
            not_after,
            signature,
        })
    }

    /// Checks the link for `node`, owned by `owner`, at `now`, valid for at
    /// most `longest_s` ahead.
    pub fn verify(
        &self,
        node: &NodeId,
        owner: Option<&OwnerId>,
        now: u64,
        longest_s: u64,
    ) -> Result<(), PanelLinkError> {
        let owner = owner.ok_or(PanelLinkError::Unclaimed)?;
        if self.not_after > now.saturating_add(longest_s) {
            return Err(PanelLinkError::Refused(OwnerAuthError::TooLong {
                not_after: self.not_after,
            }));
        }
        verify_expiring(
            owner,
            &panel_message(node, self.not_after),
            &self.signature,
            self.not_after,
            now,
        )
        .map_err(PanelLinkError::Refused)
    }
}

/// What an owner signs for `new_node` to take over the data disks of
/// `old_node` (its own box, re-imaged or replaced).
pub fn adopt_message(old_node: &NodeId, new_node: &NodeId, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + 64 + 8);
    out.extend_from_slice(b"cairn/1 adopt\0");
    out.extend_from_slice(&old_node.0);
    out.extend_from_slice(&new_node.0);
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// What an owner signs to tell its stewards that `from`'s shards now live
/// at `to`.
pub fn moved_message(owner: &OwnerId, from: &NodeId, to: &NodeId, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + 96 + 8);
    out.extend_from_slice(b"cairn/1 moved\0");
    out.extend_from_slice(&owner.0);
    out.extend_from_slice(&from.0);
    out.extend_from_slice(&to.0);
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// The bytes a swarm's founder signs to admit `member` in `role`.
pub fn member_message(swarm: &OwnerId, member: &NodeId, role: Role, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(90);
    out.extend_from_slice(b"cairn/1 member\0");
    out.extend_from_slice(&swarm.0);
    out.extend_from_slice(&member.0);
    out.push(match role {
        Role::Node => 0,
        Role::Client => 1,
    });
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// The bytes a swarm's founder signs to remove `member`.
pub fn removal_message(swarm: &OwnerId, member: &NodeId) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(b"cairn/1 remove\0");
    out.extend_from_slice(&swarm.0);
    out.extend_from_slice(&member.0);
    out
}

/// The bytes an owner signs for root record number `seq` with `payload`.
pub fn root_message(owner: &OwnerId, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = b"cairn/1 root\0".to_vec();
    out.extend_from_slice(&owner.0);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out
}

/// Signs any of the messages above.
pub fn sign(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    key.sign(message).to_bytes().to_vec()
}

/// The owner id of a signing key.
pub fn owner_id(key: &SigningKey) -> OwnerId {
    OwnerId(key.verifying_key().to_bytes())
}

/// Checks a signature by `owner` over `message`.
pub fn verify(owner: &OwnerId, message: &[u8], signature: &[u8]) -> Result<(), OwnerAuthError> {
    let key = VerifyingKey::from_bytes(&owner.0).map_err(|_| OwnerAuthError::BadOwnerKey)?;
    let signature = Signature::from_slice(signature).map_err(|_| OwnerAuthError::BadSignature)?;
    key.verify(message, &signature)
        .map_err(|_| OwnerAuthError::BadSignature)
}

/// Checks an expiring signature: not expired, not valid for too long, and by `owner`.
pub fn verify_expiring(
    owner: &OwnerId,
    message: &[u8],
    signature: &[u8],
    not_after: u64,
    now: u64,
) -> Result<(), OwnerAuthError> {
    if not_after < now {
        return Err(OwnerAuthError::Expired { not_after, now });
    }
    if not_after > now.saturating_add(MAX_VALIDITY_S) {
        return Err(OwnerAuthError::TooLong { not_after });
    }
    verify(owner, message, signature)
}

/// What an owner signs to make a steward drop segments: the steward's
/// id, the expiry and a hash of the segment ids (so the message stays
/// small however many there are).
pub fn untrack_message(steward: &NodeId, segments: &[[u8; 32]], not_after: u64) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    for segment in segments {
        hasher.update(segment);
    }
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"cairn/1 untrack\0");
    out.extend_from_slice(&steward.0);
    out.extend_from_slice(hasher.finalize().as_bytes());
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// What an owner signs to let `client` (the key its client connects
/// with) steer the owner's table at `steward` until `not_after`: a grant
/// shown with every `Track` and `Locate`, bound to the connection's
/// authenticated key, so another member holding it gains nothing.
pub fn steer_message(
    steward: &NodeId,
    owner: &OwnerId,
    client: &NodeId,
    not_after: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(120);
    out.extend_from_slice(b"cairn/1 steer\0");
    out.extend_from_slice(&steward.0);
    out.extend_from_slice(&owner.0);
    out.extend_from_slice(&client.0);
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// Signs an untrack with the owner's key.
pub fn sign_untrack(
    key: &SigningKey,
    steward: &NodeId,
    segments: &[[u8; 32]],
    not_after: u64,
) -> Vec<u8> {
    sign(key, &untrack_message(steward, segments, not_after))
}

/// Signs a delete with the owner's key.
pub fn sign_delete(key: &SigningKey, node: &NodeId, shard: &ShardId, not_after: u64) -> Vec<u8> {
    sign(key, &delete_message(node, shard, not_after))
}

/// Checks a delete signature against the owner recorded with the shard.
pub fn verify_delete(
    owner: &OwnerId,
    node: &NodeId,
    shard: &ShardId,
    not_after: u64,
    signature: &[u8],
    now: u64,
) -> Result<(), OwnerAuthError> {
    verify_expiring(
        owner,
        &delete_message(node, shard, not_after),
        signature,
        not_after,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: NodeId = NodeId([4; 32]);
    const SHARD: ShardId = ShardId([5; 32]);

    #[test]
    fn only_the_owner_can_delete_and_only_there_and_then() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let id = owner_id(&owner);
        let good = sign_delete(&owner, &NODE, &SHARD, 1_000);
        assert_eq!(verify_delete(&id, &NODE, &SHARD, 1_000, &good, 900), Ok(()));
        let forged = sign_delete(&stranger, &NODE, &SHARD, 1_000);
        assert_eq!(
            verify_delete(&id, &NODE, &SHARD, 1_000, &forged, 900),
            Err(OwnerAuthError::BadSignature)
        );
        // Replayed on another node, for another shard, or with another expiry.
        for (node, shard, not_after) in [
            (NodeId([9; 32]), SHARD, 1_000),
            (NODE, ShardId([9; 32]), 1_000),
            (NODE, SHARD, 1_001),
        ] {
            assert_eq!(
                verify_delete(&id, &node, &shard, not_after, &good, 900),
                Err(OwnerAuthError::BadSignature)
            );
        }
        assert_eq!(
            verify_delete(&id, &NODE, &SHARD, 1_000, &good, 1_001),
            Err(OwnerAuthError::Expired {
                not_after: 1_000,
                now: 1_001
            })
        );
        assert_eq!(
            verify_delete(&id, &NODE, &SHARD, 1_000, &good[..63], 900),
            Err(OwnerAuthError::BadSignature)
        );
        let far = sign_delete(&owner, &NODE, &SHARD, 10_000_000);
        assert_eq!(
            verify_delete(&id, &NODE, &SHARD, 10_000_000, &far, 900),
            Err(OwnerAuthError::TooLong {
                not_after: 10_000_000
            })
        );
    }

    const CLIENT: NodeId = NodeId([5; 32]);

    #[test]
    fn a_claim_binds_the_owner_to_this_node_and_this_client() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let owner = owner_id(&key);
        let signature = sign(&key, &claim_message(&NODE, &CLIENT, &owner));
        assert_eq!(
            verify(&owner, &claim_message(&NODE, &CLIENT, &owner), &signature),
            Ok(())
        );
        for (node, client) in [(NodeId([9; 32]), CLIENT), (NODE, NodeId([9; 32]))] {
            assert_eq!(
                verify(&owner, &claim_message(&node, &client, &owner), &signature),
                Err(OwnerAuthError::BadSignature)
            );
        }
        let stranger = owner_id(&SigningKey::from_bytes(&[2; 32]));
        assert_eq!(
            verify(
                &stranger,
                &claim_message(&NODE, &CLIENT, &stranger),
                &signature
            ),
            Err(OwnerAuthError::BadSignature)
        );
    }

    #[test]
    fn transfers_and_drains_expire_and_cannot_be_bent() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let owner = owner_id(&key);
        let to = OwnerId([8; 32]);
        let message = transfer_message(&NODE, &to, &CLIENT, 1_000);
        let signature = sign(&key, &message);
        assert_eq!(
            verify_expiring(&owner, &message, &signature, 1_000, 900),
            Ok(())
        );
        assert!(matches!(
            verify_expiring(&owner, &message, &signature, 1_000, 1_001),
            Err(OwnerAuthError::Expired { .. })
        ));
        let other = transfer_message(&NODE, &OwnerId([7; 32]), &CLIENT, 1_000);
        assert_eq!(
            verify_expiring(&owner, &other, &signature, 1_000, 900),
            Err(OwnerAuthError::BadSignature)
        );
        let drain = sign(&key, &drain_message(&NODE, true, 1_000));
        assert_eq!(
            verify_expiring(
                &owner,
                &drain_message(&NODE, false, 1_000),
                &drain,
                1_000,
                900
            ),
            Err(OwnerAuthError::BadSignature)
        );
    }

    #[test]
    fn no_two_domains_share_a_tag() {
        let node = NodeId([1; 32]);
        let owner = OwnerId([1; 32]);
        let tags: Vec<Vec<u8>> = [
            delete_message(&node, &ShardId([1; 32]), 1),
            claim_message(&node, &node, &owner),
            transfer_message(&node, &owner, &node, 1),
            drain_message(&node, true, 1),
            member_message(&owner, &node, Role::Node, 1),
            removal_message(&owner, &node),
            root_message(&owner, 1, b""),
            untrack_message(&node, &[[1; 32]], 1),
            steer_message(&node, &owner, &node, 1),
            evict_message(&node, &owner, true, 1),
        ]
        .iter()
        .map(|m| m[..=m.iter().position(|&b| b == 0).unwrap()].to_vec())
        .collect();
        for (i, a) in tags.iter().enumerate() {
            assert!(a.starts_with(b"cairn/1 "), "{a:?}");
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}

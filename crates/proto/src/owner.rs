//! Owner signatures: operations only a shard's owner may ask for (delete)
//! carry an Ed25519 signature by the owner's key, bound to the node, the
//! shard and an expiry so it cannot be replayed elsewhere or forever.

use ed25519_dalek::{Signer, SigningKey};

use crate::ids::{NodeId, OwnerId, ShardId};

/// Longest a delete signature may be valid for, counted from the node's clock.
pub const MAX_DELETE_VALIDITY_S: u64 = 24 * 3600;

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
    #[error(
        "the signed request is valid until {not_after}, more than {MAX_DELETE_VALIDITY_S} s ahead"
    )]
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

/// Signs a delete with the owner's key.
pub fn sign_delete(key: &SigningKey, node: &NodeId, shard: &ShardId, not_after: u64) -> Vec<u8> {
    key.sign(&delete_message(node, shard, not_after))
        .to_bytes()
        .to_vec()
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
    super::ownership::verify_expiring(
        owner,
        &delete_message(node, shard, not_after),
        signature,
        not_after,
        now,
    )
}

/// The owner id of a signing key.
pub fn owner_id(key: &SigningKey) -> OwnerId {
    OwnerId(key.verifying_key().to_bytes())
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
}

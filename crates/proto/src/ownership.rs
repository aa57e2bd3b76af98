//! Who owns a box, and the signed requests that change it: a claim (only
//! while the box's pairing window is open, proving someone is at the box),
//! a transfer to another owner, and a drain. Each is an Ed25519 signature by
//! an owner key over a message bound to the node, so it cannot be replayed
//! on another box; transfers and drains also carry an expiry.
//!
//! An owner acts through a client key (its QUIC/Noise identity), which the
//! node admits. A claim proves that the connecting client key speaks for the
//! owner key; a transfer names the new owner's client key as well.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use super::owner::{MAX_DELETE_VALIDITY_S, OwnerAuthError};
use crate::ids::{NodeId, OwnerId};

/// Longest a transfer or drain signature may be valid for.
pub const MAX_VALIDITY_S: u64 = MAX_DELETE_VALIDITY_S;

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

/// The bytes the owner signs to start (or stop) draining `node`.
pub fn drain_message(node: &NodeId, draining: bool, not_after: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(56);
    out.extend_from_slice(b"cairn/1 drain\0");
    out.extend_from_slice(&node.0);
    out.push(u8::from(draining));
    out.extend_from_slice(&not_after.to_le_bytes());
    out
}

/// Signs any of the messages above.
pub fn sign(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    key.sign(message).to_bytes().to_vec()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::owner_id;

    const NODE: NodeId = NodeId([4; 32]);
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
}

//! The owner's root record: the one mutable thing an owner keeps in the
//! swarm. It is signed by the owner's Ed25519 key and carries a sequence
//! number, so any node can check it and keep only the newest, and a client
//! that knows nothing but the owner's key can find the latest one. Its
//! payload is encrypted by the owner; nodes learn only its length.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::ids::OwnerId;
use crate::signed::{self, root_message};

/// Largest payload a root record may carry (it must fit in one frame).
pub const MAX_ROOT_PAYLOAD: usize = 32 * 1024;

/// A signed, sequence-numbered pointer to the owner's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    /// The owner's public key.
    pub owner: OwnerId,
    /// Grows by one with every change; nodes keep the highest.
    pub seq: u64,
    /// Encrypted by the owner; opaque to nodes.
    pub payload: Vec<u8>,
    /// Ed25519 over [`signed::root_message`].
    pub signature: Vec<u8>,
}

/// Why a root record is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    /// The signature does not verify with the record's owner key.
    #[error("the root record is not signed by its owner")]
    BadSignature,
    /// The payload exceeds [`MAX_ROOT_PAYLOAD`].
    #[error("the root record's payload of {0} bytes exceeds {MAX_ROOT_PAYLOAD}")]
    TooLarge(usize),
    /// The node already holds a newer record (or a different one with this number).
    #[error("the node holds root record {held}; {offered} is not newer")]
    Stale {
        /// The sequence number the node holds.
        held: u64,
        /// The one offered.
        offered: u64,
    },
}

impl RootRecord {
    /// Signs a new record.
    pub fn sign(key: &SigningKey, seq: u64, payload: Vec<u8>) -> Self {
        let owner = signed::owner_id(key);
        let signature = signed::sign(key, &root_message(&owner, seq, &payload));
        Self {
            owner,
            seq,
            payload,
            signature,
        }
    }

    /// The owner.
    pub fn owner_id(&self) -> OwnerId {
        self.owner
    }

    /// Checks size and signature.
    pub fn verify(&self) -> Result<(), RootError> {
        if self.payload.len() > MAX_ROOT_PAYLOAD {
            return Err(RootError::TooLarge(self.payload.len()));
        }
        signed::verify(
            &self.owner,
            &root_message(&self.owner, self.seq, &self.payload),
            &self.signature,
        )
        .map_err(|_| RootError::BadSignature)
    }

    /// Whether a node holding `held` should replace it with `self` (both
    /// verified): a higher number wins; the same record again is accepted.
    pub fn supersedes(&self, held: Option<&RootRecord>) -> Result<bool, RootError> {
        match held {
            None => Ok(true),
            Some(held) if self.seq > held.seq => Ok(true),
            Some(held) if held == self => Ok(false),
            Some(held) => Err(RootError::Stale {
                held: held.seq,
                offered: self.seq,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_signs_and_only_newer_wins() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let first = RootRecord::sign(&key, 1, b"catalog v1".to_vec());
        first.verify().unwrap();
        let mut forged = first.clone();
        forged.payload = b"catalog evil".to_vec();
        assert_eq!(forged.verify(), Err(RootError::BadSignature));
        let mut renumbered = first.clone();
        renumbered.seq = 9;
        assert_eq!(renumbered.verify(), Err(RootError::BadSignature));
        let other = RootRecord::sign(&SigningKey::from_bytes(&[2; 32]), 5, vec![]);
        let mut stolen = other.clone();
        stolen.owner = first.owner;
        assert_eq!(stolen.verify(), Err(RootError::BadSignature));

        let second = RootRecord::sign(&key, 2, b"catalog v2".to_vec());
        assert_eq!(second.supersedes(Some(&first)), Ok(true));
        assert_eq!(first.supersedes(Some(&first)), Ok(false));
        assert!(first.supersedes(Some(&second)).is_err());
        let rival = RootRecord::sign(&key, 2, b"other v2".to_vec());
        assert!(rival.supersedes(Some(&second)).is_err());
        let big = RootRecord::sign(&key, 3, vec![0; MAX_ROOT_PAYLOAD + 1]);
        assert!(matches!(big.verify(), Err(RootError::TooLarge(_))));
    }
}

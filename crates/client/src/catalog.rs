//! References to stored data as plain data: which shards make a segment
//! and who holds them, which version of a path to read,
//! and the sealing of the root record's payload under the owner's fixed
//! manifest key. The snapshot tree built on these is in [`crate::tree`].

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use super::segment::Coding;
use crate::tree::{self, RootPointer};
use cairn_proto::ids::{NodeId, ShardId};

/// One shard of a segment and the node that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    /// The shard's id.
    pub id: ShardId,
    /// Its holder.
    pub holder: NodeId,
}

/// A stored segment: its key, its coding and its shards (index = position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// The chunk key (see `segment::chunk_key`).
    pub key: [u8; 32],
    /// Plaintext length.
    pub plain_len: u64,
    /// Data shards (k); the rest of `shards` are parity.
    pub k: u8,
    /// k + m shards, data first.
    pub shards: Vec<ShardRef>,
}

impl SegmentRef {
    /// Its id as a steward knows it: BLAKE3 over its shard ids in order.
    pub fn steward_id(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for shard in &self.shards {
            hasher.update(&shard.id.0);
        }
        *hasher.finalize().as_bytes()
    }

    /// How it was erasure-coded.
    pub fn coding(&self) -> Coding {
        Coding {
            k: self.k,
            m: u8::try_from(self.shards.len().saturating_sub(usize::from(self.k)))
                .unwrap_or(u8::MAX),
        }
    }

    /// Bytes of each of its shards.
    pub fn shard_len(&self) -> u64 {
        let cipher =
            usize::try_from(self.plain_len).unwrap_or(usize::MAX) + super::segment::TAG_LEN;
        self.coding().shard_len(cipher) as u64
    }
}

/// Which version of a path to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The newest.
    Latest,
    /// The one with this number.
    Version(u32),
    /// The one that was current at this Unix time.
    At(u64),
}

/// A lookup in the catalog that fails.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// No such path.
    #[error("{0} is not stored; `cairn ls` lists what is")]
    NoSuchPath(String),
    /// The path exists but not in the asked form.
    #[error("{path} has no {what}; `cairn versions {path}` lists its versions")]
    NoSuchVersion {
        /// The path.
        path: String,
        /// What was asked, in words.
        what: String,
    },
    /// The path was removed at that point.
    #[error(
        "{path} was removed (version {version}); ask for an earlier version with --version or --at"
    )]
    Removed {
        /// The path.
        path: String,
        /// The removal's version number.
        version: u32,
    },
    /// The root payload does not decrypt or decode.
    #[error("the root record does not open with this owner's key: {0}")]
    BadRoot(String),
}

const ROOT_AAD: &[u8] = b"cairn/1 root payload";

fn root_key(manifest_key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, manifest_key)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is valid for ChaCha20-Poly1305")),
    )
}

/// Encrypts a root pointer under the owner's manifest key. The nonce is
/// random and sent along: the same key seals every root.
pub fn seal_root(manifest_key: &[u8; 32], pointer: &RootPointer, nonce: [u8; 12]) -> Vec<u8> {
    let mut sealed = tree::encode(pointer);
    let tag = root_key(manifest_key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(ROOT_AAD),
            &mut sealed,
        )
        .unwrap_or_else(|_| unreachable!("a root payload is far below the AEAD's length limit"));
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Opens a root payload.
pub fn open_root(manifest_key: &[u8; 32], payload: &[u8]) -> Result<RootPointer, CatalogError> {
    let (nonce, sealed) = payload
        .split_first_chunk::<12>()
        .ok_or_else(|| CatalogError::BadRoot("too short".into()))?;
    let mut sealed = sealed.to_vec();
    let plain = root_key(manifest_key)
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(ROOT_AAD),
            &mut sealed,
        )
        .map_err(|_| CatalogError::BadRoot("it does not decrypt".into()))?;
    // Roots before snapshots began with a catalog reference (0 or 1).
    if matches!(plain.first(), Some(0 | 1)) {
        return Err(CatalogError::BadRoot(
            "it was written by a cairn from before snapshots (a single catalog); restore those files with that cairn, then put them with this one".into(),
        ));
    }
    tree::decode(plain, "the root record's payload")
        .map_err(|e| CatalogError::BadRoot(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_opens_only_with_the_owner_key() {
        let pointer = RootPointer {
            format: tree::SNAPSHOT_FORMAT,
            history: tree::StoredRef {
                id: [3; 32],
                pieces: Vec::new(),
            },
            time: 7,
            nodes: Vec::new(),
        };
        let sealed = seal_root(&[1; 32], &pointer, [9; 12]);
        assert_eq!(open_root(&[1; 32], &sealed).unwrap(), pointer);
        assert!(open_root(&[2; 32], &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(open_root(&[1; 32], &tampered).is_err());
    }
}

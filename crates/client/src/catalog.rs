//! What the owner keeps about their files, as plain data: references to
//! stored segments, per-version manifests, the catalog of paths and
//! versions, and the encrypted payload of the owner's root record that
//! points at the catalog. Manifests and the catalog are themselves stored in
//! the swarm like file data (sealed, erasure-coded); only the root record's
//! payload is encrypted under the owner's fixed manifest key.

use std::collections::BTreeMap;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use super::segment::Coding;
use cairn_proto::NodeAddr;
use cairn_proto::ids::{NodeId, ShardId};

/// One shard of a segment and the node that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    /// The shard's id.
    pub id: ShardId,
    /// Its holder.
    pub holder: NodeId,
}

/// A stored segment: its key and its shards (index = position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// The chunk key (see `segment::chunk_key`).
    pub key: [u8; 32],
    /// Plaintext length.
    pub plain_len: u64,
    /// k + m shards, data first.
    pub shards: Vec<ShardRef>,
}

/// Any stored byte string (file content, a manifest, the catalog): its
/// segments in order, and how they were coded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BlobRef {
    /// Erasure coding of every segment.
    pub coding: Option<Coding>,
    /// The segments, in order.
    pub segments: Vec<SegmentRef>,
}

impl BlobRef {
    /// Bytes of plaintext.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.plain_len).sum()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// One version of one file. Its content references live in a manifest
/// stored in the swarm; the catalog keeps only the manifest's reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// 1, 2, 3, … per path.
    pub version: u32,
    /// When it was put, Unix seconds.
    pub time: u64,
    /// File size in bytes.
    pub size: u64,
    /// A deletion: the path had no file from this time on.
    pub deleted: bool,
    /// The stored manifest (a postcard [`Manifest`]).
    pub manifest: BlobRef,
}

/// A file version's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The file's content.
    pub content: BlobRef,
    /// Unix permission bits, for restoring.
    pub mode: u32,
}

/// Every path the owner stored, with all its versions. (How to reach the
/// nodes travels in the root pointer, which a recovering client reads first.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Catalog {
    /// Path → versions, oldest first.
    pub files: BTreeMap<String, Vec<VersionEntry>>,
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

impl Catalog {
    /// The version of `path` that `selector` names.
    pub fn select(&self, path: &str, selector: Selector) -> Result<&VersionEntry, CatalogError> {
        let versions = self
            .files
            .get(path)
            .ok_or_else(|| CatalogError::NoSuchPath(path.to_owned()))?;
        let found = match selector {
            Selector::Latest => versions.last(),
            Selector::Version(n) => versions.iter().find(|v| v.version == n),
            Selector::At(time) => versions.iter().rev().find(|v| v.time <= time),
        };
        let entry = found.ok_or_else(|| CatalogError::NoSuchVersion {
            path: path.to_owned(),
            what: match selector {
                Selector::Latest => "version".into(),
                Selector::Version(n) => format!("version {n}"),
                Selector::At(t) => format!("version as early as {t} (Unix time)"),
            },
        })?;
        if entry.deleted {
            return Err(CatalogError::Removed {
                path: path.to_owned(),
                version: entry.version,
            });
        }
        Ok(entry)
    }

    /// Records a new version of `path`; returns its number.
    pub fn add_version(&mut self, path: &str, time: u64, size: u64, manifest: BlobRef) -> u32 {
        self.push(path, time, size, false, manifest)
    }

    /// Records that `path` was removed; its earlier versions stay readable.
    pub fn remove(&mut self, path: &str, time: u64) -> Result<u32, CatalogError> {
        self.select(path, Selector::Latest)?;
        Ok(self.push(path, time, 0, true, BlobRef::default()))
    }

    fn push(&mut self, path: &str, time: u64, size: u64, deleted: bool, manifest: BlobRef) -> u32 {
        let versions = self.files.entry(path.to_owned()).or_default();
        let version = versions.last().map_or(1, |v| v.version + 1);
        // Versions are ordered by time too, so --at finds the right one even if
        // the clock stepped back.
        let time = versions.last().map_or(time, |v| time.max(v.time));
        versions.push(VersionEntry {
            version,
            time,
            size,
            deleted,
            manifest,
        });
        version
    }

    /// Paths currently present (latest version not a removal), under `prefix`.
    pub fn present<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a VersionEntry)> {
        self.files.iter().filter_map(move |(path, versions)| {
            let latest = versions.last()?;
            (!latest.deleted && path.starts_with(prefix)).then_some((path.as_str(), latest))
        })
    }
}

/// What the root record's payload holds once opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootPointer {
    /// The stored catalog.
    pub catalog: BlobRef,
    /// When the root was written, Unix seconds.
    pub time: u64,
    /// How to reach the owner's nodes, so that a client that found this
    /// record through one node can fetch the catalog from all of them.
    pub nodes: Vec<NodeAddr>,
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
    let mut sealed = postcard::to_stdvec(pointer).unwrap_or_default();
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
    postcard::from_bytes(plain).map_err(|e| CatalogError::BadRoot(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_by_number_and_time_and_removal() {
        let mut catalog = Catalog::default();
        assert_eq!(catalog.add_version("/a", 100, 1, BlobRef::default()), 1);
        assert_eq!(catalog.add_version("/a", 200, 2, BlobRef::default()), 2);
        assert_eq!(catalog.select("/a", Selector::Latest).unwrap().size, 2);
        assert_eq!(catalog.select("/a", Selector::Version(1)).unwrap().size, 1);
        assert_eq!(catalog.select("/a", Selector::At(150)).unwrap().size, 1);
        assert_eq!(catalog.select("/a", Selector::At(200)).unwrap().size, 2);
        assert!(matches!(
            catalog.select("/a", Selector::At(99)),
            Err(CatalogError::NoSuchVersion { .. })
        ));
        assert_eq!(catalog.remove("/a", 300).unwrap(), 3);
        assert!(matches!(
            catalog.select("/a", Selector::Latest),
            Err(CatalogError::Removed { version: 3, .. })
        ));
        assert_eq!(catalog.select("/a", Selector::At(250)).unwrap().size, 2);
        assert_eq!(catalog.present("/").count(), 0);
        assert!(catalog.remove("/b", 1).is_err());
        // A clock that stepped back still gives ordered times.
        catalog.add_version("/a", 50, 4, BlobRef::default());
        assert_eq!(catalog.select("/a", Selector::Latest).unwrap().time, 300);
    }

    #[test]
    fn the_root_opens_only_with_the_owner_key() {
        let pointer = RootPointer {
            catalog: BlobRef::default(),
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

//! Snapshots as a tree, as plain data (owner data format 2, specified in
//! `docs/SNAPSHOTS.md`; format 1 was the single catalog before snapshots). A snapshot is one content-addressed tree of
//! directory nodes over the owner's whole namespace (absolute paths, from
//! `/`): a put rewrites only the nodes on the paths that changed, and the
//! root record points at a history of fixed-size snapshot entries however
//! many files there are.
//!
//! Where bytes live is a list of [`Piece`]s: a chunk of a large file is a
//! segment of its own; small files, file tails and tree nodes are ranges of
//! a *pack*, one segment of a few MiB holding many of them. A tree node
//! carries the table of the packs its entries name, so a node read alone
//! says where every byte below it is.

use serde::{Deserialize, Serialize};

use crate::catalog::SegmentRef;

/// The version of every structure below; written first in each encoding.
/// (Format 1 roots began with a catalog reference, whose first byte is 0
/// or 1, so the two never mix up.)
pub const SNAPSHOT_FORMAT: u8 = 2;

/// Where one run of bytes is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    /// A segment of its own (a chunk of a large file).
    Segment(SegmentRef),
    /// `len` bytes at `offset` of pack number `pack` of the tree node's
    /// pack table.
    Packed {
        /// Index into [`TreeNode::packs`].
        pack: u32,
        /// Offset in the pack's plaintext.
        offset: u32,
        /// Length.
        len: u32,
    },
}

/// A piece that needs no tree node to be found: a segment, or a range of a
/// pack named in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Located {
    /// A segment of its own.
    Segment(SegmentRef),
    /// A range of a pack.
    Packed {
        /// The pack.
        pack: SegmentRef,
        /// Offset in the pack's plaintext.
        offset: u32,
        /// Length.
        len: u32,
    },
}

impl Located {
    /// Plaintext bytes it holds.
    pub fn len(&self) -> u64 {
        match self {
            Self::Segment(s) => s.plain_len,
            Self::Packed { len, .. } => u64::from(*len),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment that stores it.
    pub fn segment(&self) -> &SegmentRef {
        match self {
            Self::Segment(s) | Self::Packed { pack: s, .. } => s,
        }
    }
}

/// A stored byte string (a tree node, the history) that needs nothing else
/// to be read: its id and its pieces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRef {
    /// Keyed BLAKE3 of its plaintext (the owner's convergence key), the
    /// content address a local cache keeps it under.
    pub id: [u8; 32],
    /// Where its bytes are, in order.
    pub pieces: Vec<Located>,
}

impl StoredRef {
    /// Plaintext bytes.
    pub fn len(&self) -> u64 {
        self.pieces.iter().map(Located::len).sum()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One directory: its entries (sorted by name bytes) and the packs they name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TreeNode {
    /// Packs named by [`Piece::Packed`] in the entries.
    pub packs: Vec<SegmentRef>,
    /// The entries, sorted by name.
    pub entries: Vec<Entry>,
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The name's bytes (Unix names need not be UTF-8).
    pub name: Vec<u8>,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// What it is.
    pub kind: EntryKind,
}

/// What a directory entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Its size.
        size: u64,
        /// Change time in nanoseconds and inode number when it was read:
        /// with size and mtime, how the next put sees it is unchanged.
        ctime_ns: i64,
        /// Inode number.
        inode: u64,
        /// Its content, in order.
        content: Vec<Piece>,
    },
    /// A directory.
    Dir {
        /// Its own node's id.
        id: [u8; 32],
        /// Where its node is stored (packs index this node's table).
        node: Vec<Piece>,
    },
    /// A symbolic link, kept as a link and never followed.
    Symlink {
        /// The target's bytes.
        target: Vec<u8>,
    },
}

/// One snapshot: when, what the put named, and the root of its tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken, Unix seconds.
    pub time: u64,
    /// What made it (`put PATH…`, `rm PATH`), for people.
    pub made_by: String,
    /// The root directory's node.
    pub root: StoredRef,
}

impl Snapshot {
    /// A short id people type (`--snapshot`): the first bytes of a hash of
    /// its time and root.
    pub fn short_id(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.time.to_le_bytes());
        hasher.update(&self.root.id);
        hasher.finalize().to_hex()[..12].to_owned()
    }
}

/// Every snapshot the owner keeps, oldest first; what the root record points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct History {
    /// Kept snapshots, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Snapshots forgotten but not yet pruned: their data is deleted by
    /// the next prune, unless a kept snapshot still uses it.
    pub forgotten: Vec<Snapshot>,
    /// Segments of earlier histories, deleted by the next prune.
    pub retired: Vec<SegmentRef>,
}

/// What the root record's payload holds once opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootPointer {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u8,
    /// The stored [`History`].
    pub history: StoredRef,
    /// When the root was written, Unix seconds.
    pub time: u64,
    /// How to reach the owner's nodes, so that a client that found this
    /// record through one node can read from all of them.
    pub nodes: Vec<cairn_proto::NodeAddr>,
}

/// A tree structure that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// Written by a different format version.
    #[error(
        "{what} is in snapshot format {found}, this cairn reads format {SNAPSHOT_FORMAT}; use a cairn of the same version"
    )]
    Format {
        /// What was read.
        what: &'static str,
        /// The version found.
        found: u8,
    },
    /// The bytes do not decode.
    #[error("{what} does not decode ({reason}); it is damaged")]
    Decode {
        /// What was read.
        what: &'static str,
        /// The decoder's words.
        reason: String,
    },
    /// A piece names a pack the node does not have.
    #[error("a tree node names pack {0}, which its table does not hold; the node is damaged")]
    NoSuchPack(u32),
}

/// Encodes a structure with its format version first.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_FORMAT];
    // Postcard into a Vec fails only on a serializer bug or out of memory.
    out.extend(postcard::to_stdvec(value).unwrap_or_default());
    out
}

/// Decodes a structure written by [`encode`].
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, TreeError> {
    match bytes.split_first() {
        Some((&SNAPSHOT_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| TreeError::Decode {
                what,
                reason: e.to_string(),
            })
        }
        Some((&found, _)) => Err(TreeError::Format { what, found }),
        None => Err(TreeError::Decode {
            what,
            reason: "it is empty".into(),
        }),
    }
}

impl TreeNode {
    /// A piece of this node made standalone.
    pub fn locate(&self, piece: &Piece) -> Result<Located, TreeError> {
        Ok(match piece {
            Piece::Segment(s) => Located::Segment(s.clone()),
            Piece::Packed { pack, offset, len } => Located::Packed {
                pack: self
                    .packs
                    .get(*pack as usize)
                    .cloned()
                    .ok_or(TreeError::NoSuchPack(*pack))?,
                offset: *offset,
                len: *len,
            },
        })
    }

    /// Pieces of this node made standalone.
    pub fn locate_all(&self, pieces: &[Piece]) -> Result<Vec<Located>, TreeError> {
        pieces.iter().map(|p| self.locate(p)).collect()
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// Builds a [`TreeNode`]'s pack table while entries are added: standalone
/// pieces become table-relative ones, each pack listed once.
#[derive(Debug, Default)]
pub struct NodeBuilder {
    node: TreeNode,
    packs: std::collections::HashMap<[u8; 32], u32>,
}

impl NodeBuilder {
    /// Table-relative pieces for `located`.
    pub fn pieces(&mut self, located: &[Located]) -> Vec<Piece> {
        located
            .iter()
            .map(|l| match l {
                Located::Segment(s) => Piece::Segment(s.clone()),
                Located::Packed { pack, offset, len } => {
                    let next = self.node.packs.len() as u32;
                    let index = *self.packs.entry(pack.key).or_insert_with(|| {
                        self.node.packs.push(pack.clone());
                        next
                    });
                    Piece::Packed {
                        pack: index,
                        offset: *offset,
                        len: *len,
                    }
                }
            })
            .collect()
    }

    /// Adds an entry (entries must come in name order).
    pub fn push(&mut self, entry: Entry) {
        self.node.entries.push(entry);
    }

    /// The node, entries sorted by name.
    pub fn finish(mut self) -> TreeNode {
        self.node.entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.node
    }
}

/// Splits an absolute path into its names (`/a/b` → `[a, b]`); `..` and
/// `.` are resolved lexically, so a path names one place in the tree. Bytes,
/// not text: Unix names need not be UTF-8.
pub fn path_names(path: &[u8]) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                names.pop();
            }
            name => names.push(name.to_vec()),
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::ids::{NodeId, ShardId};

    fn segment(key: u8) -> SegmentRef {
        SegmentRef {
            key: [key; 32],
            plain_len: 100,
            k: 4,
            shards: vec![crate::catalog::ShardRef {
                id: ShardId([key; 32]),
                holder: NodeId([1; 32]),
            }],
        }
    }

    #[test]
    fn a_builder_lists_each_pack_once_and_pieces_resolve_back() {
        let mut builder = NodeBuilder::default();
        let a = Located::Packed {
            pack: segment(7),
            offset: 0,
            len: 10,
        };
        let b = Located::Packed {
            pack: segment(7),
            offset: 10,
            len: 5,
        };
        let c = Located::Segment(segment(9));
        let pieces = builder.pieces(&[a.clone(), b.clone(), c.clone()]);
        builder.push(Entry {
            name: b"z".to_vec(),
            mode: 0o644,
            mtime_ns: 1,
            kind: EntryKind::File {
                size: 115,
                ctime_ns: 1,
                inode: 2,
                content: pieces.clone(),
            },
        });
        builder.push(Entry {
            name: b"a".to_vec(),
            mode: 0o755,
            mtime_ns: 1,
            kind: EntryKind::Symlink {
                target: b"z".to_vec(),
            },
        });
        let node = builder.finish();
        assert_eq!(node.packs.len(), 1);
        assert_eq!(node.locate_all(&pieces).unwrap(), vec![a, b, c]);
        assert_eq!(node.entries[0].name, b"a");
        assert!(node.entry(b"z").is_some() && node.entry(b"y").is_none());
        let bytes = encode(&node);
        assert_eq!(decode::<TreeNode>(&bytes, "a node").unwrap(), node);
        assert!(
            node.locate(&Piece::Packed {
                pack: 3,
                offset: 0,
                len: 1
            })
            .is_err()
        );
    }

    #[test]
    fn another_format_or_garbage_is_a_clear_error() {
        let mut bytes = encode(&TreeNode::default());
        bytes[0] = 9;
        assert_eq!(
            decode::<TreeNode>(&bytes, "a node"),
            Err(TreeError::Format {
                what: "a node",
                found: 9
            })
        );
        assert!(decode::<TreeNode>(&[SNAPSHOT_FORMAT, 0xff, 0xff], "a node").is_err());
        assert!(decode::<TreeNode>(&[], "a node").is_err());
    }

    #[test]
    fn paths_resolve_lexically() {
        assert_eq!(
            path_names(b"/a//b/./c/../d"),
            vec![b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]
        );
        assert!(path_names(b"/").is_empty());
        assert!(path_names(b"/..").is_empty());
    }
}

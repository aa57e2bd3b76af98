//! Making a new snapshot from the previous one: paths put (walked without
//! following symlinks), paths removed. A file whose size, mtime, ctime and
//! inode match the previous snapshot's entry is not read again; only the
//! tree nodes on changed paths are rewritten.
//!
//! Data moves through a bounded pipeline: one thread walks, reads, chunks
//! and seals (small files and file tails go into packs of a few MiB, larger
//! chunks into segments of their own); the async side uploads several
//! segments at once, placing shards on nodes probed once per command, and
//! records each finished upload in the journal. Tree nodes are written
//! last, deepest first, one level per round of packs, since a node names
//! the packs of what is below it.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::ClientError;
use crate::catalog::SegmentRef;
use crate::chunk::{ChunkSizes, chunks};
use crate::local::{Journal, TreeCache};
use crate::placement::Candidate;
use crate::segment::{self, Coding, SealedSegment};
use crate::swarm::{Swarm, SwarmError};
use crate::tree::{self, Entry, EntryKind, Located, NodeBuilder, StoredRef, TreeNode};

/// Chunks smaller than this go into packs (every chunk but a file's last
/// is at least this large, so this packs small files and file tails).
pub const PACK_PIECE_MAX: usize = 256 << 10;
/// A pack is sealed once it holds this much.
pub const PACK_TARGET: usize = 4 << 20;
/// Tree nodes up to this size go into packs; larger ones are chunked.
const TREE_PIECE_MAX: usize = 1 << 20;
/// Segments uploading at once (each is k + m parallel shard puts).
const UPLOADS_IN_FLIGHT: usize = 8;

/// What to leave out of a put.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    /// Patterns (`*.tmp`, `/home/me/.cache`): one without a `/` matches a
    /// name anywhere; one with a `/` matches the whole absolute path.
    pub patterns: Vec<String>,
}

impl Excludes {
    /// Adds the patterns of an ignore file: one per line, `#` comments.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ClientError> {
        let text = std::fs::read_to_string(path)
            .map_err(ClientError::file(&path.display().to_string()))?;
        self.patterns.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        Ok(())
    }

    fn compile(&self) -> Result<(GlobSet, GlobSet), ClientError> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for pattern in &self.patterns {
            let glob = Glob::new(pattern.trim_end_matches('/')).map_err(|e| {
                ClientError::Usage(format!("the exclude pattern {pattern:?} is not valid: {e}"))
            })?;
            if pattern.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let built = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| ClientError::Usage(format!("the exclude patterns: {e}")))
        };
        Ok((built(names)?, built(paths)?))
    }
}

/// What a put did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PutSummary {
    /// The new snapshot's id, or `None` when nothing changed (no snapshot
    /// is made then).
    pub snapshot: Option<String>,
    /// Files not in the previous snapshot.
    pub files_new: u64,
    /// Files read again because they changed.
    pub files_changed: u64,
    /// Files seen unchanged and not read.
    pub files_unchanged: u64,
    /// Directories walked.
    pub dirs: u64,
    /// Bytes of files read.
    pub bytes_read: u64,
    /// Segments uploaded (data, packs and tree nodes).
    pub segments_uploaded: u64,
    /// Shard bytes sent.
    pub shard_bytes: u64,
    /// Chunks already stored (by an earlier put, or earlier in this one)
    /// and not sent again.
    pub chunks_reused: u64,
    /// Things left out or kept from the previous snapshot, for the person.
    pub warnings: Vec<String>,
    /// Some file or directory could not be read: the snapshot keeps its
    /// previous version, or leaves it out if it had none.
    pub partial: bool,
}

/// One change a new snapshot makes.
#[derive(Debug, Clone)]
pub enum Change {
    /// Store what is at this path now (a file, a directory, a link).
    Put(PathBuf),
    /// Leave this absolute path out from now on.
    Remove(String),
}

/// Where a piece will be once its upload is done.
#[derive(Debug, Clone)]
enum Pending {
    Done(Located),
    Segment(u64),
    Packed { seq: u64, offset: u32, len: u32 },
}

#[derive(Debug)]
struct MemEntry {
    name: Vec<u8>,
    mode: u32,
    mtime_ns: i64,
    kind: MemKind,
    /// Identical to the previous snapshot's entry of that name.
    same: bool,
}

#[derive(Debug)]
enum MemKind {
    File {
        size: u64,
        ctime_ns: i64,
        inode: u64,
        content: Vec<Pending>,
    },
    Dir(usize),
    Symlink(Vec<u8>),
}

/// A directory of the new tree.
#[derive(Debug, Default)]
struct MemDir {
    depth: usize,
    /// The previous snapshot's node here.
    old: Option<(StoredRef, Option<TreeNode>)>,
    /// Loaded: `entries` say what it holds. Not loaded: it is the old node.
    loaded: bool,
    entries: Vec<MemEntry>,
}

/// A chunk in a segment: `(chunk key, offset, len)`.
type PieceAt = ([u8; 32], u32, u32);

/// A sealed segment on its way to the uploader, with the chunks it holds.
struct Job {
    seq: u64,
    sealed: SealedSegment,
    /// `(chunk key, offset, len)` of each piece; a segment of its own has
    /// one at offset 0 and is not a pack.
    pieces: Vec<PieceAt>,
    pack: bool,
}

/// Collects small pieces into one pack. The pack's upload number is
/// taken when its first piece comes, so that segments sealed meanwhile
/// never take it.
#[derive(Default)]
struct Packer {
    seq: Option<u64>,
    buf: Vec<u8>,
    pieces: Vec<PieceAt>,
}

/// A full pack, ready to seal.
struct Pack {
    seq: u64,
    plain: Vec<u8>,
    pieces: Vec<PieceAt>,
}

impl Packer {
    /// Adds a piece; where it will be once the pack is uploaded.
    fn add(&mut self, sealer: &mut Sealer, key: [u8; 32], bytes: &[u8]) -> Pending {
        let seq = *self.seq.get_or_insert_with(|| sealer.reserve());
        let offset = self.buf.len() as u32;
        self.buf.extend_from_slice(bytes);
        self.pieces.push((key, offset, bytes.len() as u32));
        Pending::Packed {
            seq,
            offset,
            len: bytes.len() as u32,
        }
    }

    fn full(&self) -> bool {
        self.buf.len() >= PACK_TARGET
    }

    fn take(&mut self) -> Option<Pack> {
        let seq = self.seq.take()?;
        Some(Pack {
            seq,
            plain: std::mem::take(&mut self.buf),
            pieces: std::mem::take(&mut self.pieces),
        })
    }
}

/// Shared by the walker and the tree writer: ids for segments, and the
/// sealing of chunks and packs.
struct Sealer {
    convergence: [u8; 32],
    coding: Coding,
    next_seq: u64,
}

impl Sealer {
    /// A fresh upload number.
    fn reserve(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// A chunk as a segment of its own.
    fn seal_chunk(&mut self, key: [u8; 32], plain: &[u8]) -> Result<Job, SwarmError> {
        let sealed = segment::seal(&self.convergence, self.coding, plain)?;
        Ok(Job {
            seq: self.reserve(),
            sealed,
            pieces: vec![(key, 0, plain.len() as u32)],
            pack: false,
        })
    }

    fn seal_pack(&self, pack: Pack) -> Result<Job, SwarmError> {
        Ok(Job {
            seq: pack.seq,
            sealed: segment::seal(&self.convergence, self.coding, &pack.plain)?,
            pieces: pack.pieces,
            pack: true,
        })
    }
}

/// Uploads jobs, a bounded number at once, and journals each one done.
struct Uploader {
    swarm: Arc<Swarm>,
    candidates: Arc<Vec<Candidate>>,
    journal: Arc<Journal>,
    running: JoinSet<(u64, Result<SegmentRef, SwarmError>)>,
    pieces: HashMap<u64, (Vec<PieceAt>, bool)>,
    done: HashMap<u64, SegmentRef>,
    uploaded: u64,
    shard_bytes: u64,
}

impl Uploader {
    async fn submit(&mut self, job: Job) -> Result<(), ClientError> {
        while self.running.len() >= UPLOADS_IN_FLIGHT {
            self.join_one().await?;
        }
        self.shard_bytes += job
            .sealed
            .shards
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>();
        self.pieces.insert(job.seq, (job.pieces, job.pack));
        let (swarm, candidates) = (Arc::clone(&self.swarm), Arc::clone(&self.candidates));
        let seq = job.seq;
        self.running
            .spawn(async move { (seq, swarm.upload_segment(job.sealed, candidates).await) });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), ClientError> {
        let Some(joined) = self.running.join_next().await else {
            return Ok(());
        };
        let (seq, outcome) =
            joined.map_err(|e| ClientError::swarm("uploading")(SwarmError::Task(e.to_string())))?;
        let segment = outcome.map_err(ClientError::swarm("uploading to your nodes"))?;
        let (pieces, pack) = self.pieces.remove(&seq).unwrap_or_default();
        let records: Vec<([u8; 32], Located)> = pieces
            .into_iter()
            .map(|(key, offset, len)| {
                let located = if pack {
                    Located::Packed {
                        pack: segment.clone(),
                        offset,
                        len,
                    }
                } else {
                    Located::Segment(segment.clone())
                };
                (key, located)
            })
            .collect();
        self.journal
            .append(&records)
            .map_err(ClientError::file("the put journal in the client directory"))?;
        self.uploaded += 1;
        self.done.insert(seq, segment);
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ClientError> {
        while !self.running.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }

    fn resolve(&self, pending: &Pending) -> Result<Located, ClientError> {
        let missing = || {
            ClientError::swarm("building the snapshot")(SwarmError::Task(
                "an upload's result is missing".into(),
            ))
        };
        Ok(match pending {
            Pending::Done(located) => located.clone(),
            Pending::Segment(seq) => {
                Located::Segment(self.done.get(seq).cloned().ok_or_else(missing)?)
            }
            Pending::Packed { seq, offset, len } => Located::Packed {
                pack: self.done.get(seq).cloned().ok_or_else(missing)?,
                offset: *offset,
                len: *len,
            },
        })
    }
}

/// The walking, reading, chunking and sealing side (a blocking thread).
struct Walker {
    runtime: tokio::runtime::Handle,
    swarm: Arc<Swarm>,
    trees: TreeCache,
    names: GlobSet,
    paths: GlobSet,
    chunk_seed: u64,
    sealer: Sealer,
    known: HashMap<[u8; 32], Pending>,
    /// Segments the journal names (uploaded by a put that did not commit).
    journaled: HashSet<[u8; 32]>,
    /// Those of them this put reuses: the steward must be told of them.
    journal_reused: HashMap<[u8; 32], SegmentRef>,
    packer: Packer,
    jobs: mpsc::Sender<Job>,
    dirs: Vec<MemDir>,
    summary: PutSummary,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
}

/// The walker stopped: the uploader side is gone (its error is the one to
/// report) or the walk itself failed.
enum Stop {
    Uploader,
    Failed(ClientError),
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Self {
        Self::Failed(e)
    }
}

impl From<SwarmError> for Stop {
    fn from(e: SwarmError) -> Self {
        Self::Failed(ClientError::swarm("sealing")(e))
    }
}

fn meta_times(meta: &std::fs::Metadata) -> (i64, i64) {
    (
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    )
}

impl Walker {
    fn send(&mut self, job: Job) -> Result<(), Stop> {
        self.jobs.blocking_send(job).map_err(|_| Stop::Uploader)
    }

    fn flush_pack(&mut self) -> Result<(), Stop> {
        if let Some(pack) = self.packer.take() {
            let job = self.sealer.seal_pack(pack)?;
            self.send(job)?;
        }
        Ok(())
    }

    /// The previous snapshot's node, loaded.
    fn load(&self, old: &StoredRef) -> Result<TreeNode, ClientError> {
        self.runtime
            .block_on(self.trees.node(&self.swarm, &old.id, &old.pieces))
            .map_err(ClientError::swarm("reading the previous snapshot's tree"))
    }

    /// A directory that is the old node as it was (not loaded).
    fn old_dir(&mut self, old: StoredRef, depth: usize) -> usize {
        self.dirs.push(MemDir {
            depth,
            old: Some((old, None)),
            loaded: false,
            entries: Vec::new(),
        });
        self.dirs.len() - 1
    }

    /// Loads a directory's old node into entries (all the same as before).
    fn expand(&mut self, index: usize) -> Result<(), ClientError> {
        if self.dirs[index].loaded {
            return Ok(());
        }
        let depth = self.dirs[index].depth;
        let old = self.dirs[index].old.as_ref().map(|(r, _)| r.clone());
        let node = match &old {
            Some(old) => self.load(old)?,
            None => TreeNode::default(),
        };
        let mut entries = Vec::with_capacity(node.entries.len());
        for entry in &node.entries {
            entries.push(self.entry_from_old(&node, entry, depth)?);
        }
        let dir = &mut self.dirs[index];
        dir.entries = entries;
        dir.loaded = true;
        if let Some((_, slot)) = &mut dir.old {
            *slot = Some(node);
        }
        Ok(())
    }

    fn entry_from_old(
        &mut self,
        node: &TreeNode,
        entry: &Entry,
        depth: usize,
    ) -> Result<MemEntry, ClientError> {
        let kind = match &entry.kind {
            EntryKind::File {
                size,
                ctime_ns,
                inode,
                content,
            } => MemKind::File {
                size: *size,
                ctime_ns: *ctime_ns,
                inode: *inode,
                content: node
                    .locate_all(content)
                    .map_err(|e| ClientError::Usage(e.to_string()))?
                    .into_iter()
                    .map(Pending::Done)
                    .collect(),
            },
            EntryKind::Dir { id, node: pieces } => {
                let stored = StoredRef {
                    id: *id,
                    pieces: node
                        .locate_all(pieces)
                        .map_err(|e| ClientError::Usage(e.to_string()))?,
                };
                MemKind::Dir(self.old_dir(stored, depth + 1))
            }
            EntryKind::Symlink { target } => MemKind::Symlink(target.clone()),
        };
        Ok(MemEntry {
            name: entry.name.clone(),
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            kind,
            same: true,
        })
    }

    fn excluded(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }

    fn warn(&mut self, warning: String) {
        self.summary.warnings.push(warning);
    }

    /// The entry for what is at `path` now, compared with `old` (the
    /// previous snapshot's entry of that name, in `old_node`). `None`:
    /// nothing to store (excluded, gone, or a kind that is not stored).
    fn scan(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        old: Option<(&TreeNode, &Entry)>,
        depth: usize,
    ) -> Result<Option<MemEntry>, Stop> {
        let shown = path.display().to_string();
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return self.unreadable(&shown, &e, old, depth),
        };
        let (mtime_ns, ctime_ns) = meta_times(&meta);
        let mode = meta.mode() & 0o7777;
        let same_meta = |e: &Entry| e.mode == mode && e.mtime_ns == mtime_ns;
        let file_type = meta.file_type();
        let (kind, same) = if file_type.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(target) => target.as_os_str().as_bytes().to_vec(),
                Err(e) => return self.unreadable(&shown, &e, old, depth),
            };
            let same = old.is_some_and(|(_, e)| {
                same_meta(e) && matches!(&e.kind, EntryKind::Symlink { target: t } if *t == target)
            });
            (MemKind::Symlink(target), same)
        } else if file_type.is_dir() {
            let old_dir = match old {
                Some((node, e)) => match &e.kind {
                    EntryKind::Dir { id, node: pieces } => Some(StoredRef {
                        id: *id,
                        pieces: node
                            .locate_all(pieces)
                            .map_err(|e| ClientError::Usage(e.to_string()))?,
                    }),
                    _ => None,
                },
                None => None,
            };
            let Some(index) = self.scan_dir(path, old_dir, depth + 1)? else {
                return self.unreadable(
                    &shown,
                    &std::io::Error::other("cannot list it"),
                    old,
                    depth,
                );
            };
            let same = !self.dirs[index].loaded && old.is_some_and(|(_, e)| same_meta(e));
            (MemKind::Dir(index), same)
        } else if file_type.is_file() {
            let unchanged = old.and_then(|(node, e)| match &e.kind {
                EntryKind::File {
                    size,
                    ctime_ns: c,
                    inode,
                    content,
                } if *size == meta.len()
                    && e.mtime_ns == mtime_ns
                    && *c == ctime_ns
                    && *inode == meta.ino() =>
                {
                    node.locate_all(content).ok()
                }
                _ => None,
            });
            if let Some(content) = unchanged {
                self.summary.files_unchanged += 1;
                let same = old.is_some_and(|(_, e)| e.mode == mode);
                (
                    MemKind::File {
                        size: meta.len(),
                        ctime_ns,
                        inode: meta.ino(),
                        content: content.into_iter().map(Pending::Done).collect(),
                    },
                    same,
                )
            } else {
                // Large chunks of the previous version are reused by key.
                if let Some((
                    node,
                    Entry {
                        kind: EntryKind::File { content, .. },
                        ..
                    },
                )) = old
                {
                    for piece in node.locate_all(content).unwrap_or_default() {
                        if let Located::Segment(s) = &piece {
                            self.known
                                .entry(s.key)
                                .or_insert(Pending::Done(piece.clone()));
                        }
                    }
                }
                let (content, size) = match self.read_file(path) {
                    Ok(read) => read,
                    Err(Stop::Failed(ClientError::File { source, .. })) => {
                        return self.unreadable(&shown, &source, old, depth);
                    }
                    Err(stop) => return Err(stop),
                };
                if old.is_some() {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
                (
                    MemKind::File {
                        size,
                        ctime_ns,
                        inode: meta.ino(),
                        content,
                    },
                    false,
                )
            }
        } else {
            self.warn(format!("{shown}: not stored (a device, socket or pipe)"));
            return Ok(None);
        };
        Ok(Some(MemEntry {
            name,
            mode,
            mtime_ns,
            kind,
            same,
        }))
    }

    /// Something could not be read: warned about, the put goes on, and the
    /// previous snapshot's entry is kept if there was one.
    fn unreadable(
        &mut self,
        shown: &str,
        error: &std::io::Error,
        old: Option<(&TreeNode, &Entry)>,
        depth: usize,
    ) -> Result<Option<MemEntry>, Stop> {
        self.summary.partial = true;
        match old {
            Some((node, entry)) => {
                self.warn(format!(
                    "{shown}: cannot be read ({error}); its previous version is kept"
                ));
                Ok(Some(self.entry_from_old(node, entry, depth)?))
            }
            None => {
                self.warn(format!("{shown}: cannot be read ({error}); not stored"));
                Ok(None)
            }
        }
    }

    /// Walks a directory; `None` if it cannot be listed.
    fn scan_dir(
        &mut self,
        path: &Path,
        old: Option<StoredRef>,
        depth: usize,
    ) -> Result<Option<usize>, Stop> {
        self.summary.dirs += 1;
        let mut names: Vec<(Vec<u8>, PathBuf)> = match std::fs::read_dir(path) {
            Ok(dir) => dir
                .filter_map(Result::ok)
                .map(|e| (e.file_name().as_bytes().to_vec(), e.path()))
                .collect(),
            Err(_) => return Ok(None),
        };
        names.sort();
        let old_node = match &old {
            Some(old) => Some(self.load(old)?),
            None => None,
        };
        let mut entries = Vec::with_capacity(names.len());
        let mut all_same = old_node.is_some();
        for (name, child) in names {
            if self.excluded(&child) {
                continue;
            }
            let old_entry = old_node
                .as_ref()
                .and_then(|node| node.entry(&name).map(|e| (node, e)));
            if let Some(entry) = self.scan(&child, name, old_entry, depth)? {
                all_same &= entry.same && old_entry.is_some();
                entries.push(entry);
            }
        }
        let same = all_same
            && old_node
                .as_ref()
                .is_some_and(|n| n.entries.len() == entries.len());
        self.dirs.push(MemDir {
            depth,
            loaded: !same,
            old: old.map(|o| (o, old_node)),
            entries: if same { Vec::new() } else { entries },
        });
        Ok(Some(self.dirs.len() - 1))
    }

    /// Reads, chunks and seals one file; its pieces and the bytes read.
    fn read_file(&mut self, path: &Path) -> Result<(Vec<Pending>, u64), Stop> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(ClientError::file(&shown))?;
        let mut content = Vec::new();
        let mut size = 0u64;
        for chunk in chunks(file, self.chunk_seed, ChunkSizes::default()) {
            let plain = chunk.map_err(ClientError::file(&shown))?;
            size += plain.len() as u64;
            self.summary.bytes_read += plain.len() as u64;
            (self.progress)(plain.len() as u64);
            let key = segment::chunk_key(&self.sealer.convergence, &plain);
            if let Some(known) = self.known.get(&key) {
                if let Pending::Done(located) = known
                    && self.journaled.contains(&located.segment().key)
                {
                    let segment = located.segment();
                    self.journal_reused.insert(segment.key, segment.clone());
                }
                self.summary.chunks_reused += 1;
                content.push(known.clone());
                continue;
            }
            let pending = if plain.len() < PACK_PIECE_MAX {
                let pending = self.packer.add(&mut self.sealer, key, &plain);
                if self.packer.full() {
                    self.flush_pack()?;
                }
                pending
            } else {
                let job = self.sealer.seal_chunk(key, &plain)?;
                let pending = Pending::Segment(job.seq);
                self.send(job)?;
                pending
            };
            self.known.insert(key, pending.clone());
            content.push(pending);
        }
        Ok((content, size))
    }

    /// Applies one change to the tree rooted at `root`.
    fn apply(&mut self, root: usize, change: &Change) -> Result<(), Stop> {
        let (path, names) = match change {
            Change::Put(path) => {
                let absolute = std::path::absolute(path)
                    .map_err(ClientError::file(&path.display().to_string()))?;
                let names = tree::path_names(absolute.as_os_str().as_bytes());
                (Some(absolute), names)
            }
            Change::Remove(path) => (None, tree::path_names(path.as_bytes())),
        };
        let Some((last, ancestors)) = names.split_last() else {
            // The whole namespace: scan / itself.
            if let Some(path) = path {
                let old = self.dirs[root].old.as_ref().map(|(r, _)| r.clone());
                if let Some(index) = self.scan_dir(&path, old, 0)? {
                    self.dirs.swap(root, index);
                    self.dirs[root].depth = 0;
                }
            }
            return Ok(());
        };
        let mut dir = root;
        let mut at = PathBuf::from("/");
        for name in ancestors {
            self.expand(dir)?;
            at.push(std::ffi::OsStr::from_bytes(name));
            let depth = self.dirs[dir].depth;
            let found = self.dirs[dir].entries.iter().position(|e| e.name == *name);
            let child = match found.map(|i| &self.dirs[dir].entries[i].kind) {
                Some(MemKind::Dir(child)) => *child,
                _ => {
                    if path.is_none() {
                        // Removing something that is not stored.
                        return Err(Stop::Failed(ClientError::Usage(format!(
                            "{} is not stored; `cairn ls` lists what is",
                            change_path(change)
                        ))));
                    }
                    // An ancestor the tree did not have (or had as a file).
                    let meta = std::fs::metadata(&at)
                        .map_err(ClientError::file(&at.display().to_string()))?;
                    self.dirs.push(MemDir {
                        depth: depth + 1,
                        old: None,
                        loaded: true,
                        entries: Vec::new(),
                    });
                    let child = self.dirs.len() - 1;
                    let entry = MemEntry {
                        name: name.clone(),
                        mode: meta.mode() & 0o7777,
                        mtime_ns: meta_times(&meta).0,
                        kind: MemKind::Dir(child),
                        same: false,
                    };
                    put_entry(&mut self.dirs[dir].entries, entry);
                    child
                }
            };
            dir = child;
        }
        self.expand(dir)?;
        let depth = self.dirs[dir].depth;
        match path {
            Some(path) => {
                let old_node = self.dirs[dir].old.as_ref().and_then(|(_, n)| n.clone());
                let old_entry = old_node
                    .as_ref()
                    .and_then(|n| n.entry(last).map(|e| (n, e)));
                if self.excluded(&path) {
                    return Ok(());
                }
                match self.scan(&path, last.clone(), old_entry, depth)? {
                    Some(entry) => put_entry(&mut self.dirs[dir].entries, entry),
                    None if std::fs::symlink_metadata(&path).is_err() => {
                        return Err(Stop::Failed(ClientError::Usage(format!(
                            "{} does not exist; nothing was stored",
                            path.display()
                        ))));
                    }
                    None => {}
                }
            }
            None => {
                let entries = &mut self.dirs[dir].entries;
                let before = entries.len();
                entries.retain(|e| e.name != *last);
                if entries.len() == before {
                    return Err(Stop::Failed(ClientError::Usage(format!(
                        "{} is not stored; `cairn ls` lists what is",
                        change_path(change)
                    ))));
                }
            }
        }
        Ok(())
    }
}

fn change_path(change: &Change) -> String {
    match change {
        Change::Put(p) => p.display().to_string(),
        Change::Remove(p) => p.clone(),
    }
}

/// Inserts or replaces an entry, keeping name order.
fn put_entry(entries: &mut Vec<MemEntry>, entry: MemEntry) {
    match entries.binary_search_by(|e| e.name.cmp(&entry.name)) {
        Ok(i) => entries[i] = entry,
        Err(i) => entries.insert(i, entry),
    }
}

/// Everything a snapshot build needs from the session.
pub(crate) struct Build {
    pub swarm: Arc<Swarm>,
    pub trees: TreeCache,
    pub journal: Arc<Journal>,
    pub previous: Option<StoredRef>,
    pub excludes: Excludes,
}

/// What a build made: the new root (`None` when nothing changed) and the
/// segments it uploaded or reused from the journal, for the steward. (A
/// journalled segment nothing reuses is never tracked: its lease runs out.)
pub(crate) struct Built {
    pub root: Option<StoredRef>,
    /// The nodes asked for room, for the commit that follows.
    pub candidates: Arc<Vec<Candidate>>,
    pub new_segments: Vec<SegmentRef>,
    pub summary: PutSummary,
}

/// Builds a new tree from the previous one and `changes`, uploading what
/// is new; nothing is committed here.
pub(crate) async fn build(
    build: Build,
    changes: Vec<Change>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Built, ClientError> {
    let Build {
        swarm,
        trees,
        journal,
        previous,
        excludes,
    } = build;
    let (names, paths) = excludes.compile()?;
    let candidates = swarm
        .placement_candidates()
        .await
        .map_err(ClientError::swarm("asking your nodes for room"))?;
    // Half a lease: what the journal names is surely still stored.
    let journal_pieces = journal.load(crate::swarm::LEASE / 2);
    let journaled = journal_pieces.values().map(|l| l.segment().key).collect();
    let known = journal_pieces
        .into_iter()
        .map(|(key, located)| (key, Pending::Done(located)))
        .collect();
    let keys = swarm.keys().clone();
    let (tx, mut rx) = mpsc::channel::<Job>(2);
    let mut walker = Walker {
        runtime: tokio::runtime::Handle::current(),
        swarm: Arc::clone(&swarm),
        trees: trees.clone(),
        names,
        paths,
        chunk_seed: keys.chunk_seed,
        sealer: Sealer {
            convergence: keys.convergence,
            coding: swarm.coding,
            next_seq: 0,
        },
        known,
        journaled,
        journal_reused: HashMap::new(),
        packer: Packer::default(),
        jobs: tx,
        dirs: Vec::new(),
        summary: PutSummary::default(),
        progress,
    };
    let walking = tokio::task::spawn_blocking(move || {
        let root = match previous {
            Some(previous) => walker.old_dir(previous, 0),
            None => {
                walker.dirs.push(MemDir {
                    loaded: true,
                    ..MemDir::default()
                });
                0
            }
        };
        let mut outcome = Ok(());
        for change in &changes {
            outcome = walker.apply(root, change);
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            outcome = walker.flush_pack();
        }
        // Dropping the sender lets the uploader see the end.
        let Walker {
            dirs,
            summary,
            sealer,
            journal_reused,
            ..
        } = walker;
        (outcome, dirs, summary, sealer, journal_reused)
    });
    let mut uploader = Uploader {
        swarm: Arc::clone(&swarm),
        candidates: Arc::clone(&candidates),
        journal: Arc::clone(&journal),
        running: JoinSet::new(),
        pieces: HashMap::new(),
        done: HashMap::new(),
        uploaded: 0,
        shard_bytes: 0,
    };
    let mut uploading = Ok(());
    while let Some(job) = rx.recv().await {
        if let Err(e) = uploader.submit(job).await {
            uploading = Err(e);
            break;
        }
    }
    drop(rx);
    if uploading.is_ok() {
        uploading = uploader.finish().await;
    }
    let (walked, mut dirs, mut summary, mut sealer, mut new_segments) = walking
        .await
        .map_err(|e| ClientError::swarm("walking")(SwarmError::Task(e.to_string())))?;
    match walked {
        Err(Stop::Failed(e)) => return Err(e),
        Err(Stop::Uploader) => {
            uploading?;
            return Err(ClientError::swarm("uploading")(SwarmError::Task(
                "the uploader stopped".into(),
            )));
        }
        Ok(()) => uploading?,
    }
    let root = 0;
    let changed = settle(&mut dirs, root);
    let root = if changed {
        Some(write_trees(&mut dirs, &mut uploader, &mut sealer, &trees).await?)
    } else {
        None
    };
    for segment in uploader.done.values() {
        new_segments.insert(segment.key, segment.clone());
    }
    summary.segments_uploaded = uploader.uploaded;
    summary.shard_bytes = uploader.shard_bytes;
    Ok(Built {
        root,
        candidates,
        new_segments: new_segments.into_values().collect(),
        summary,
    })
}

/// Marks directories that turned out the same as before as not loaded
/// (their old node is reused); returns whether `index` changed.
fn settle(dirs: &mut [MemDir], index: usize) -> bool {
    if !dirs[index].loaded {
        return false;
    }
    let children: Vec<(usize, usize)> = dirs[index]
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.kind {
            MemKind::Dir(child) => Some((i, child)),
            _ => None,
        })
        .collect();
    for (i, child) in children {
        if settle(dirs, child) {
            dirs[index].entries[i].same = false;
        }
    }
    let dir = &dirs[index];
    let same = match &dir.old {
        Some((_, Some(node))) => {
            node.entries.len() == dir.entries.len() && dir.entries.iter().all(|e| e.same)
        }
        // Loaded without an old node: new. (`Some((_, None))` cannot be
        // loaded.)
        _ => false,
    };
    if same {
        dirs[index].loaded = false;
        dirs[index].entries.clear();
    }
    !same
}

/// Writes the changed directories, deepest first; returns the root's ref.
async fn write_trees(
    dirs: &mut [MemDir],
    uploader: &mut Uploader,
    sealer: &mut Sealer,
    trees: &TreeCache,
) -> Result<StoredRef, ClientError> {
    let live = live_dirs(dirs);
    let max_depth = live.iter().map(|&i| dirs[i].depth).max().unwrap_or(0);
    let mut written: HashMap<usize, StoredRef> = HashMap::new();
    for depth in (0..=max_depth).rev() {
        let level: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| dirs[i].depth == depth)
            .collect();
        let mut packer = Packer::default();
        let mut placed: Vec<(usize, [u8; 32], Vec<Pending>)> = Vec::new();
        for index in level {
            let node = node_of(dirs, index, uploader, &written)?;
            let bytes = tree::encode(&node);
            let id = trees.id_of(&bytes);
            trees.put(&id, &bytes);
            let pieces = if bytes.len() <= TREE_PIECE_MAX {
                let pending = packer.add(sealer, id, &bytes);
                if packer.full()
                    && let Some(pack) = packer.take()
                {
                    let job = sealer
                        .seal_pack(pack)
                        .map_err(ClientError::swarm("sealing"))?;
                    uploader.submit(job).await?;
                }
                vec![pending]
            } else {
                let mut pieces = Vec::new();
                for chunk in bytes.chunks(PACK_TARGET) {
                    let key = segment::chunk_key(&sealer.convergence, chunk);
                    let job = sealer
                        .seal_chunk(key, chunk)
                        .map_err(ClientError::swarm("sealing"))?;
                    pieces.push(Pending::Segment(job.seq));
                    uploader.submit(job).await?;
                }
                pieces
            };
            placed.push((index, id, pieces));
        }
        if let Some(pack) = packer.take() {
            let job = sealer
                .seal_pack(pack)
                .map_err(ClientError::swarm("sealing"))?;
            uploader.submit(job).await?;
        }
        uploader.finish().await?;
        for (index, id, pieces) in placed {
            let pieces = pieces
                .iter()
                .map(|p| uploader.resolve(p))
                .collect::<Result<Vec<_>, _>>()?;
            written.insert(index, StoredRef { id, pieces });
        }
    }
    written.remove(&0).ok_or_else(|| {
        ClientError::swarm("building the snapshot")(SwarmError::Task(
            "the root was not written".into(),
        ))
    })
}

/// The loaded directories still in the tree (a replaced subtree is not):
/// every one hangs from the root through loaded parents.
fn live_dirs(dirs: &[MemDir]) -> Vec<usize> {
    let mut live = Vec::new();
    let mut stack = vec![0];
    while let Some(index) = stack.pop() {
        if !dirs[index].loaded {
            continue;
        }
        live.push(index);
        for entry in &dirs[index].entries {
            if let MemKind::Dir(child) = entry.kind {
                stack.push(child);
            }
        }
    }
    live
}

/// The tree node of a loaded directory, its pieces resolved.
fn node_of(
    dirs: &[MemDir],
    index: usize,
    uploader: &Uploader,
    written: &HashMap<usize, StoredRef>,
) -> Result<TreeNode, ClientError> {
    let mut builder = NodeBuilder::default();
    for entry in &dirs[index].entries {
        let kind = match &entry.kind {
            MemKind::File {
                size,
                ctime_ns,
                inode,
                content,
            } => {
                let located = content
                    .iter()
                    .map(|p| uploader.resolve(p))
                    .collect::<Result<Vec<_>, _>>()?;
                EntryKind::File {
                    size: *size,
                    ctime_ns: *ctime_ns,
                    inode: *inode,
                    content: builder.pieces(&located),
                }
            }
            MemKind::Dir(child) => {
                let stored = match written.get(child) {
                    Some(stored) => stored.clone(),
                    None => dirs[*child]
                        .old
                        .as_ref()
                        .map(|(r, _)| r.clone())
                        .ok_or_else(|| {
                            ClientError::swarm("building the snapshot")(SwarmError::Task(
                                "a directory was neither written nor kept".into(),
                            ))
                        })?,
                };
                EntryKind::Dir {
                    id: stored.id,
                    node: builder.pieces(&stored.pieces),
                }
            }
            MemKind::Symlink(target) => EntryKind::Symlink {
                target: target.clone(),
            },
        };
        builder.push(Entry {
            name: entry.name.clone(),
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            kind,
        });
    }
    Ok(builder.finish())
}

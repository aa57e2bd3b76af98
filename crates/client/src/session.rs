//! The file-level API: an open [`Session`] puts paths (a new snapshot),
//! reads a path back (any version, by number or by time), restores whole
//! trees, lists, removes, forgets and prunes, and reports health; each
//! change is committed as a new history under a new signed root record.
//! Every operation returns a report type; nothing here prints. Notes for
//! the person (a steward that could not be told, say) are collected and
//! handed out by [`Session::take_notes`].

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::task::JoinSet;

use cairn_proto::ids::NodeId;

use crate::ClientError;
use crate::backup::{self, Build, Change, Excludes, PutSummary};
use crate::catalog::{CatalogError, SegmentRef, Selector};
use crate::home::{CachedHistory, ClientHome};
use crate::keys::OwnerSecret;
use crate::local::TreeCache;
use crate::placement::Candidate;
use crate::restore::{self, RestoreSummary};
use crate::retention::{self, Policy};
use crate::swarm::{Swarm, TransferStats};
use crate::tree::{self, Entry, EntryKind, History, Located, Snapshot, StoredRef, TreeNode};
use crate::writeback::EarlyWriteback;

/// Told how far a transfer has come, for a progress bar.
pub trait Progress: Sync {
    /// A transfer of `total` bytes of `what` begins.
    fn start(&self, what: &str, total: u64);
    /// `bytes` more were moved.
    fn advance(&self, bytes: u64);
    /// The transfer ended.
    fn finish(&self);
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What one transfer moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransferReport {
    /// Plaintext bytes.
    pub bytes: u64,
    /// Segments.
    pub segments: usize,
    /// Shard bytes sent or received.
    pub shard_bytes: u64,
    /// Segments rebuilt from parity because holders were missing.
    pub decoded_segments: usize,
    /// Shards that failed verification and were not used.
    pub bad_shards: Vec<BadShard>,
    /// Holders that did not answer (`cn…`).
    pub unreachable_nodes: Vec<String>,
}

/// A shard that failed verification, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadShard {
    /// The shard id (hex).
    pub shard: String,
    /// The holder (`cn…`).
    pub holder: String,
}

impl From<&TransferStats> for TransferReport {
    fn from(stats: &TransferStats) -> Self {
        Self {
            bytes: stats.bytes,
            segments: stats.segments,
            shard_bytes: stats.shard_bytes,
            decoded_segments: stats.decoded,
            bad_shards: stats
                .bad_shards
                .iter()
                .map(|(shard, holder)| BadShard {
                    shard: shard.to_hex(),
                    holder: holder.to_human(),
                })
                .collect(),
            unreachable_nodes: stats.unreachable.iter().map(|n| n.to_human()).collect(),
        }
    }
}

/// One file read back by [`Session::get_to_path`] or [`Session::get_to_writer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GetReport {
    /// The path read.
    pub read: String,
    /// The version read.
    pub version: u32,
    /// What the download moved.
    pub transfer: TransferReport,
}

/// A path in a snapshot, as [`Session::list`] gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    /// The path.
    pub path: String,
    /// `file` or `symlink`.
    pub kind: &'static str,
    /// Its size (a link's: its target's length).
    pub size: u64,
    /// Its modification time (Unix seconds).
    pub time: u64,
}

/// One version of a path, as [`Session::versions`] gives it: a run of
/// snapshots in which the path had the same content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionReport {
    /// The version number (1 is the oldest kept).
    pub version: u32,
    /// When the first snapshot with it was taken (Unix seconds).
    pub time: u64,
    /// Its size.
    pub size: u64,
    /// Whether this version is a removal (the path was absent).
    pub removed: bool,
    /// That snapshot's id.
    pub snapshot: String,
}

/// A path removed by [`Session::remove`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoveReport {
    /// The path.
    pub removed: String,
    /// The new snapshot, without it.
    pub snapshot: String,
}

/// A snapshot, as [`Session::snapshots`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotReport {
    /// Its id (`--snapshot`).
    pub id: String,
    /// When it was taken (Unix seconds).
    pub time: u64,
    /// What made it.
    pub made_by: String,
}

impl From<&Snapshot> for SnapshotReport {
    fn from(snapshot: &Snapshot) -> Self {
        Self {
            id: snapshot.short_id(),
            time: snapshot.time,
            made_by: snapshot.made_by.clone(),
        }
    }
}

/// What [`Session::forget`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    /// Snapshots kept.
    pub kept: Vec<SnapshotReport>,
    /// Snapshots forgotten: their data goes at the next prune.
    pub forgotten: Vec<SnapshotReport>,
}

/// What [`Session::prune`] gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Forgotten snapshots whose data was looked at.
    pub snapshots_pruned: usize,
    /// Segments no kept snapshot uses, deleted.
    pub segments_deleted: u64,
    /// Shards deleted at their holders.
    pub shards_deleted: u64,
    /// Shards their holders no longer had.
    pub shards_already_gone: u64,
    /// Shards that could not be deleted now (holder unreachable): their
    /// leases are no longer renewed, so their holders collect them later.
    pub shards_left_to_expire: u64,
    /// Bytes of shards deleted.
    pub shard_bytes_freed: u64,
    /// Segments still used by kept snapshots.
    pub segments_kept: u64,
}

/// Which snapshot to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotPick {
    /// The newest.
    Latest,
    /// The newest taken at or before this Unix time.
    At(u64),
    /// The one with this id (or a unique prefix of it).
    Id(String),
}

/// How well one stored file survives, from fresh audits of its shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileHealth {
    /// The path.
    pub path: String,
    /// The snapshot audited (the newest).
    pub snapshot: String,
    /// Its size.
    #[serde(skip)]
    pub size: u64,
    /// Healthy shards of its weakest segment (a pack or a chunk of its own).
    pub healthy_shards_min: usize,
    /// Shards per segment (k + m).
    pub shards_per_segment: usize,
    /// Shards needed to read a segment.
    pub k: usize,
    /// Further node losses it survives.
    pub survives_node_losses: usize,
    /// Whether the file has any content (an empty file is always readable).
    #[serde(skip)]
    pub empty: bool,
}

impl FileHealth {
    /// Whether a segment has fewer reachable healthy shards than it needs.
    pub fn unreadable(&self) -> bool {
        self.healthy_shards_min < self.k && !self.empty
    }
}

/// An open session: keys, nodes, and the snapshot history as the swarm has it.
///
/// ```no_run
/// # async fn demo() -> Result<(), cairn_client::ClientError> {
/// use cairn_client::{ClientHome, NoProgress, Selector, Session};
/// let mut session = Session::open(ClientHome::at("/home/me/.config/cairn")).await?;
/// session.put(&["/home/me/notes.txt".into()], &Default::default(), &NoProgress).await?;
/// let (report, bytes) = session
///     .get_to_writer("/home/me/notes.txt", Selector::Latest, Vec::new(), &NoProgress)
///     .await?;
/// assert_eq!(bytes.len() as u64, report.transfer.bytes);
/// session.close().await;
/// # Ok(()) }
/// ```
pub struct Session {
    home: ClientHome,
    swarm: Arc<Swarm>,
    secret: OwnerSecret,
    steward: Option<NodeId>,
    seq: u64,
    history: History,
    stored_as: Option<StoredRef>,
    trees: TreeCache,
    notes: Mutex<Vec<String>>,
}

impl Session {
    /// Opens a session from the client directory: reads the secret and
    /// settings, finds the newest root record and its history (from the
    /// cache when the root names it).
    pub async fn open(home: ClientHome) -> Result<Self, ClientError> {
        let (swarm, secret) = home.swarm(None)?;
        let steward = home.config()?.steward;
        swarm.set_steward(steward);
        let trees = home.trees(secret.keys().convergence);
        let mut session = Self {
            home,
            swarm,
            secret,
            steward,
            seq: 0,
            history: History::default(),
            stored_as: None,
            trees,
            notes: Mutex::new(Vec::new()),
        };
        let root = session
            .swarm
            .latest_root()
            .await
            .map_err(ClientError::swarm("finding your newest root record"))?;
        if let Some((seq, pointer)) = root {
            session.seq = seq;
            session.history =
                match session.home.cache() {
                    Some(cache) if cache.stored_as == pointer.history => cache.history,
                    _ => {
                        let (_, bytes) = session
                            .swarm
                            .read_pieces(&pointer.history.pieces, Vec::new(), &|_| {})
                            .await
                            .map_err(ClientError::swarm(
                                "reading your snapshot history from the swarm",
                            ))?;
                        if session.trees.id_of(&bytes) != pointer.history.id {
                            return Err(ClientError::Decode {
                                what: "the snapshot history".into(),
                                reason: "it does not match the id the root record names".into(),
                            });
                        }
                        let history: History = tree::decode(&bytes, "the snapshot history")
                            .map_err(|e| ClientError::Decode {
                                what: "the snapshot history".into(),
                                reason: e.to_string(),
                            })?;
                        session.home.save_cache(&CachedHistory {
                            stored_as: pointer.history.clone(),
                            history: history.clone(),
                        })?;
                        history
                    }
                };
            session.stored_as = Some(pointer.history);
        }
        Ok(session)
    }

    /// The swarm handle (for node-level requests).
    pub fn swarm(&self) -> &Arc<Swarm> {
        &self.swarm
    }

    /// The client directory.
    pub fn home(&self) -> &ClientHome {
        &self.home
    }

    /// The owner secret.
    pub fn secret(&self) -> &OwnerSecret {
        &self.secret
    }

    /// The snapshot history as of the newest root record.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Notes for the person collected since the last call: things that did
    /// not fail the operation but that they should know.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *cairn_host::lock(&self.notes))
    }

    /// Closes the session's connections.
    pub async fn close(self) {
        self.swarm.close().await;
    }

    /// Makes a new snapshot with what is at `paths` now (files, directories
    /// walked without following links, links as links), everything else as
    /// in the previous snapshot; commits it and tells the steward. Nothing
    /// is committed, and no snapshot made, when nothing changed.
    pub async fn put(
        &mut self,
        paths: &[PathBuf],
        excludes: &Excludes,
        progress: &dyn Progress,
    ) -> Result<PutSummary, ClientError> {
        let made_by = format!(
            "put {}",
            paths
                .iter()
                .map(|p| std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let changes = paths.iter().cloned().map(Change::Put).collect();
        progress.start("put", 0);
        // The walker runs on a thread of its own and only counts; the count
        // is handed to `progress` from here.
        let read = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&read);
        let mut shown = 0;
        let built = {
            let build = self.build(
                changes,
                excludes,
                Arc::new(move |n| {
                    counter.fetch_add(n, Ordering::Relaxed);
                }),
            );
            tokio::pin!(build);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    built = &mut build => break built?,
                    _ = tick.tick() => {
                        let now = read.load(Ordering::Relaxed);
                        progress.advance(now - shown);
                        shown = now;
                    }
                }
            }
        };
        progress.advance(read.load(Ordering::Relaxed) - shown);
        progress.finish();
        let mut summary = built.summary;
        if let Some(root) = built.root {
            summary.snapshot = Some(
                self.add_snapshot(root, made_by, built.new_segments, built.candidates)
                    .await?,
            );
        }
        // Everything journalled is in the snapshot now (or was not needed:
        // never tracked, its leases run out).
        self.home
            .journal()
            .clear()
            .map_err(ClientError::file("the put journal in the client directory"))?;
        Ok(summary)
    }

    async fn build(
        &self,
        changes: Vec<Change>,
        excludes: &Excludes,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<backup::Built, ClientError> {
        let build = Build {
            swarm: Arc::clone(&self.swarm),
            trees: self.trees.clone(),
            journal: Arc::new(self.home.journal()),
            previous: self.history.snapshots.last().map(|s| s.root.clone()),
            excludes: excludes.clone(),
        };
        backup::build(build, changes, progress).await
    }

    /// Makes a new snapshot without `path` (earlier snapshots still have
    /// it), commits and tells the steward.
    pub async fn remove(&mut self, path: &str) -> Result<RemoveReport, ClientError> {
        let built = self
            .build(
                vec![Change::Remove(path.to_owned())],
                &Excludes::default(),
                Arc::new(|_| {}),
            )
            .await?;
        let Some(root) = built.root else {
            return Err(ClientError::Usage(format!(
                "{path} is not stored; `cairn ls` lists what is"
            )));
        };
        let id = self
            .add_snapshot(
                root,
                format!("rm {path}"),
                built.new_segments,
                built.candidates,
            )
            .await?;
        Ok(RemoveReport {
            removed: path.to_owned(),
            snapshot: id,
        })
    }

    /// Commits a new snapshot of `root` and tells the steward about what
    /// it added; returns the snapshot's id.
    async fn add_snapshot(
        &mut self,
        root: StoredRef,
        made_by: String,
        mut new_segments: Vec<SegmentRef>,
        candidates: Arc<Vec<Candidate>>,
    ) -> Result<String, ClientError> {
        let snapshot = Snapshot {
            time: cairn_host::unix_now(),
            made_by,
            root,
        };
        let id = snapshot.short_id();
        let mut history = self.history.clone();
        history.snapshots.push(snapshot);
        let stored = self.commit(history, Some(candidates)).await?;
        new_segments.extend(stored.pieces.iter().map(|p| p.segment().clone()));
        self.track(&new_segments).await;
        Ok(id)
    }

    /// Every kept snapshot, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotReport> {
        self.history
            .snapshots
            .iter()
            .map(SnapshotReport::from)
            .collect()
    }

    fn pick(&self, pick: &SnapshotPick) -> Result<&Snapshot, ClientError> {
        let snapshots = &self.history.snapshots;
        let found = match pick {
            SnapshotPick::Latest => snapshots.last(),
            SnapshotPick::At(time) => snapshots.iter().rev().find(|s| s.time <= *time),
            SnapshotPick::Id(id) => {
                let matching: Vec<&Snapshot> = snapshots
                    .iter()
                    .filter(|s| s.short_id().starts_with(id.as_str()))
                    .collect();
                if matching.len() > 1 {
                    return Err(ClientError::Usage(format!(
                        "{id} names {} snapshots; give more of its id (`cairn snapshots` lists them)",
                        matching.len()
                    )));
                }
                matching.first().copied()
            }
        };
        found.ok_or_else(|| {
            ClientError::Usage(match pick {
                SnapshotPick::Latest => "nothing is stored yet; `cairn put PATH` makes the first snapshot".into(),
                SnapshotPick::At(time) => format!("no snapshot was taken at or before {time} (Unix time); `cairn snapshots` lists them"),
                SnapshotPick::Id(id) => format!("no snapshot has the id {id}; `cairn snapshots` lists them"),
            })
        })
    }

    /// The entry at `path` in `snapshot`, with the node holding it.
    async fn find(
        &self,
        snapshot: &Snapshot,
        path: &str,
    ) -> Result<Option<(Entry, TreeNode)>, ClientError> {
        restore::find(
            &self.swarm,
            &self.trees,
            &snapshot.root,
            &tree::path_names(path.as_bytes()),
        )
        .await
    }

    /// Every version of `path`, oldest first: each run of snapshots with
    /// the same content at that path is one version; a run without it is a
    /// removal.
    pub async fn versions(&self, path: &str) -> Result<Vec<VersionReport>, ClientError> {
        Ok(self
            .version_entries(path)
            .await?
            .into_iter()
            .map(|(report, _)| report)
            .collect())
    }

    /// [`Session::versions`], each with its entry and the node holding it
    /// (`None` for a removal).
    async fn version_entries(
        &self,
        path: &str,
    ) -> Result<Vec<(VersionReport, Option<(Entry, TreeNode)>)>, ClientError> {
        let mut out: Vec<(VersionReport, Option<(Entry, TreeNode)>)> = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for snapshot in &self.history.snapshots {
            let found = self.find(snapshot, path).await?;
            let identity = found.as_ref().map(|(entry, node)| identity(entry, node));
            if identity == last {
                continue;
            }
            let present = identity.is_some();
            if present || !out.is_empty() {
                let report = VersionReport {
                    version: out.len() as u32 + 1,
                    time: snapshot.time,
                    size: found.as_ref().map_or(0, |(e, _)| entry_size(e)),
                    removed: !present,
                    snapshot: snapshot.short_id(),
                };
                out.push((report, found));
            }
            last = identity;
        }
        if out.is_empty() {
            return Err(CatalogError::NoSuchPath(path.to_owned()).into());
        }
        Ok(out)
    }

    /// The file `path` names under `selector`, with its pieces.
    async fn select_file(
        &self,
        path: &str,
        selector: Selector,
    ) -> Result<(u32, u64, u32, Vec<Located>), ClientError> {
        let versions = self.version_entries(path).await?;
        let (version, found) = match selector {
            Selector::Latest => versions.last(),
            Selector::Version(n) => versions.iter().find(|(v, _)| v.version == n),
            Selector::At(time) => versions.iter().rev().find(|(v, _)| v.time <= time),
        }
        .ok_or_else(|| CatalogError::NoSuchVersion {
            path: path.to_owned(),
            what: match selector {
                Selector::Latest => "version".into(),
                Selector::Version(n) => format!("version {n}"),
                Selector::At(t) => format!("version as early as {t} (Unix time)"),
            },
        })?;
        let Some((entry, node)) = found else {
            return Err(CatalogError::Removed {
                path: path.to_owned(),
                version: version.version,
            }
            .into());
        };
        match &entry.kind {
            EntryKind::File { size, content, .. } => {
                let pieces = node
                    .locate_all(content)
                    .map_err(|e| ClientError::Usage(e.to_string()))?;
                Ok((version.version, *size, entry.mode, pieces))
            }
            EntryKind::Dir { .. } => Err(ClientError::Usage(format!(
                "{path} is a directory; `cairn restore {path} --target DIR` brings it back"
            ))),
            EntryKind::Symlink { .. } => Err(ClientError::Usage(format!(
                "{path} is a symbolic link; `cairn restore {path} --target DIR` brings it back as a link"
            ))),
        }
    }

    /// Reads a version of the file `path` into the file `out`: written
    /// beside it and renamed over it only when complete, verified and
    /// durable, with the stored mode. A device or pipe (`/dev/null`, a
    /// FIFO) is written as it is, since renaming over it would replace the
    /// device itself.
    pub async fn get_to_path(
        &self,
        path: &str,
        selector: Selector,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<GetReport, ClientError> {
        let (version, size, mode, pieces) = self.select_file(path, selector).await?;
        let shown = out.display().to_string();
        let special = std::fs::metadata(out).is_ok_and(|meta| !meta.is_file());
        progress.start(path, size);
        let stats = if special {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .map_err(ClientError::file(&shown))?;
            let (stats, _) = self.download(path, &pieces, file, progress).await?;
            whole(path, &stats, size)?;
            stats
        } else {
            let tmp = out.with_file_name(format!(
                ".{}.cairn-partial",
                out.file_name()
                    .map_or("out".into(), |n| n.to_string_lossy())
            ));
            let file = std::fs::File::create(&tmp).map_err(ClientError::file(&shown))?;
            let writer = EarlyWriteback::new(file).map_err(ClientError::file(&shown))?;
            let result = self.download(path, &pieces, writer, progress).await;
            let finished = result.and_then(|(stats, writer)| {
                whole(path, &stats, size)?;
                let file = writer.finish().map_err(ClientError::file(&shown))?;
                Ok((stats, file))
            });
            let (stats, file) = match finished {
                Ok(done) => done,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            drop(file);
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .map_err(ClientError::file(&shown))?;
            std::fs::rename(&tmp, out).map_err(ClientError::file(&shown))?;
            stats
        };
        progress.finish();
        Ok(GetReport {
            read: path.to_owned(),
            version,
            transfer: TransferReport::from(&stats),
        })
    }

    /// Reads a version of `path` into `out`, and gives `out` back. A short
    /// read is an error, but the bytes already written cannot be taken
    /// back: write to a file with [`Session::get_to_path`] to get all or
    /// nothing.
    pub async fn get_to_writer<W: Write + Send + 'static>(
        &self,
        path: &str,
        selector: Selector,
        out: W,
        progress: &dyn Progress,
    ) -> Result<(GetReport, W), ClientError> {
        let (version, size, _, pieces) = self.select_file(path, selector).await?;
        progress.start(path, size);
        let (stats, out) = self.download(path, &pieces, out, progress).await?;
        whole(path, &stats, size)?;
        progress.finish();
        let report = GetReport {
            read: path.to_owned(),
            version,
            transfer: TransferReport::from(&stats),
        };
        Ok((report, out))
    }

    /// Restores `path` (a directory tree, a file or a link) from the
    /// snapshot `pick` names into `target` as `target/NAME` (the whole
    /// namespace, for `/`, goes into `target` itself).
    pub async fn restore(
        &self,
        path: &str,
        pick: &SnapshotPick,
        target: &Path,
        progress: &dyn Progress,
    ) -> Result<RestoreSummary, ClientError> {
        let snapshot = self.pick(pick)?;
        let names = tree::path_names(path.as_bytes());
        let Some((entry, node)) = self.find(snapshot, path).await? else {
            return Err(ClientError::Usage(format!(
                "{path} is not in snapshot {} (`cairn ls` lists what the newest has)",
                snapshot.short_id()
            )));
        };
        std::fs::create_dir_all(target)
            .map_err(ClientError::file(&target.display().to_string()))?;
        let dest = match names.last() {
            Some(name) => target.join(std::ffi::OsStr::from_bytes(name)),
            None => target.to_owned(),
        };
        let mut summary =
            restore::restore(&self.swarm, &self.trees, &entry, &node, &dest, progress).await?;
        summary.snapshot = snapshot.short_id();
        Ok(summary)
    }

    /// The files and links under `prefix` in the newest snapshot.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, ClientError> {
        let Some(snapshot) = self.history.snapshots.last() else {
            return Ok(Vec::new());
        };
        let Some((entry, node)) = self.find(snapshot, prefix).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let base = if prefix.ends_with('/') || tree::path_names(prefix.as_bytes()).is_empty() {
            prefix.trim_end_matches('/').to_owned()
        } else {
            prefix.to_owned()
        };
        let mut stack = vec![(base, entry, Arc::new(node))];
        while let Some((path, entry, node)) = stack.pop() {
            let time = entry.mtime_ns.div_euclid(1_000_000_000).max(0) as u64;
            match &entry.kind {
                EntryKind::File { size, .. } => out.push(ListEntry {
                    path,
                    kind: "file",
                    size: *size,
                    time,
                }),
                EntryKind::Symlink { target } => out.push(ListEntry {
                    path,
                    kind: "symlink",
                    size: target.len() as u64,
                    time,
                }),
                EntryKind::Dir { id, node: pieces } => {
                    let pieces = node
                        .locate_all(pieces)
                        .map_err(|e| ClientError::Usage(e.to_string()))?;
                    let child = Arc::new(
                        self.trees
                            .node(&self.swarm, id, &pieces)
                            .await
                            .map_err(ClientError::swarm("reading the snapshot's tree"))?,
                    );
                    for e in child.entries.iter().rev() {
                        let name = String::from_utf8_lossy(&e.name);
                        stack.push((format!("{path}/{name}"), e.clone(), Arc::clone(&child)));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Forgets snapshots the policy does not keep (the newest is always
    /// kept); their data stays until [`Session::prune`].
    pub async fn forget(&mut self, policy: Policy) -> Result<ForgetReport, ClientError> {
        let times: Vec<u64> = self.history.snapshots.iter().map(|s| s.time).collect();
        let keep = retention::keep(&times, policy);
        let mut history = self.history.clone();
        let mut forgotten: Vec<Snapshot> = Vec::new();
        for (snapshot, keep) in std::mem::take(&mut history.snapshots).into_iter().zip(keep) {
            if keep {
                history.snapshots.push(snapshot);
            } else {
                forgotten.push(snapshot);
            }
        }
        let report = ForgetReport {
            kept: history.snapshots.iter().map(SnapshotReport::from).collect(),
            forgotten: forgotten.iter().map(SnapshotReport::from).collect(),
        };
        if !forgotten.is_empty() {
            history.forgotten.extend(forgotten);
            let stored = self.commit(history, None).await?;
            let segments: Vec<SegmentRef> =
                stored.pieces.iter().map(|p| p.segment().clone()).collect();
            self.track(&segments).await;
        }
        Ok(report)
    }

    /// Deletes, at their holders and with the owner's signature, every
    /// segment that forgotten snapshots and earlier histories used and no
    /// kept snapshot uses; the steward stops tracking them.
    pub async fn prune(&mut self) -> Result<PruneReport, ClientError> {
        let mut report = PruneReport {
            snapshots_pruned: self.history.forgotten.len(),
            ..PruneReport::default()
        };
        if self.history.forgotten.is_empty() && self.history.retired.is_empty() {
            return Ok(report);
        }
        let mut visited = HashSet::new();
        let mut used: HashMap<[u8; 32], SegmentRef> = HashMap::new();
        for snapshot in &self.history.snapshots {
            self.segments_of(&snapshot.root, &mut visited, &mut used)
                .await?;
        }
        if let Some(stored) = &self.stored_as {
            for piece in &stored.pieces {
                used.insert(piece.segment().key, piece.segment().clone());
            }
        }
        let mut candidates: HashMap<[u8; 32], SegmentRef> = HashMap::new();
        for snapshot in &self.history.forgotten {
            self.segments_of(&snapshot.root, &mut visited, &mut candidates)
                .await?;
        }
        for segment in &self.history.retired {
            candidates.insert(segment.key, segment.clone());
        }
        let mut doomed: Vec<SegmentRef> = candidates
            .into_iter()
            .filter(|(key, _)| !used.contains_key(key))
            .map(|(_, segment)| segment)
            .collect();
        report.segments_kept = used.len() as u64;
        if let Some(steward) = self.steward
            && let Err(e) = self.swarm.relocate(steward, &mut doomed).await
        {
            self.note(format!("note: {e}; deleting at the holders as recorded"));
        }
        let mut deletes = JoinSet::new();
        let shards: Vec<(crate::catalog::ShardRef, u64)> = doomed
            .iter()
            .flat_map(|s| s.shards.iter().map(move |shard| (*shard, s.shard_len())))
            .collect();
        for (shard, len) in shards {
            while deletes.len() >= 32 {
                tally(&mut deletes, &mut report).await;
            }
            let swarm = Arc::clone(&self.swarm);
            deletes.spawn(async move { (swarm.delete(shard).await, len) });
        }
        while !deletes.is_empty() {
            tally(&mut deletes, &mut report).await;
        }
        report.segments_deleted = doomed.len() as u64;
        if let Some(steward) = self.steward {
            let ids: Vec<[u8; 32]> = doomed.iter().map(SegmentRef::steward_id).collect();
            if let Err(e) = self.swarm.untrack(steward, &ids).await {
                self.note(format!(
                    "warning: pruned, but {e}; the steward still tracks the deleted segments and will report them lost: run `cairn prune` again once it answers"
                ));
            }
        }
        let mut history = self.history.clone();
        history.forgotten.clear();
        history.retired.clear();
        let stored = self.commit(history, None).await?;
        let segments: Vec<SegmentRef> = stored.pieces.iter().map(|p| p.segment().clone()).collect();
        self.track(&segments).await;
        Ok(report)
    }

    /// Adds every segment `root`'s tree uses to `out`; trees in `visited`
    /// (and so everything below them) are skipped.
    async fn segments_of(
        &self,
        root: &StoredRef,
        visited: &mut HashSet<[u8; 32]>,
        out: &mut HashMap<[u8; 32], SegmentRef>,
    ) -> Result<(), ClientError> {
        let mut stack = vec![root.clone()];
        while let Some(stored) = stack.pop() {
            for piece in &stored.pieces {
                out.insert(piece.segment().key, piece.segment().clone());
            }
            if !visited.insert(stored.id) {
                continue;
            }
            let node = self
                .trees
                .node(&self.swarm, &stored.id, &stored.pieces)
                .await
                .map_err(ClientError::swarm("reading a snapshot's tree"))?;
            for pack in &node.packs {
                out.insert(pack.key, pack.clone());
            }
            for entry in &node.entries {
                match &entry.kind {
                    EntryKind::File { content, .. } => {
                        for piece in node
                            .locate_all(content)
                            .map_err(|e| ClientError::Usage(e.to_string()))?
                        {
                            out.insert(piece.segment().key, piece.segment().clone());
                        }
                    }
                    EntryKind::Dir { id, node: pieces } => stack.push(StoredRef {
                        id: *id,
                        pieces: node
                            .locate_all(pieces)
                            .map_err(|e| ClientError::Usage(e.to_string()))?,
                    }),
                    EntryKind::Symlink { .. } => {}
                }
            }
        }
        Ok(())
    }

    /// Audits every file under `prefix` in the newest snapshot with fresh
    /// challenges (each segment once, however many files share it).
    pub async fn status(&self, prefix: &str) -> Result<Vec<FileHealth>, ClientError> {
        let Some(snapshot) = self.history.snapshots.last() else {
            return Ok(Vec::new());
        };
        let mut files: Vec<(String, Vec<Located>, u64)> = Vec::new();
        for listed in self.list(prefix).await? {
            if listed.kind != "file" {
                continue;
            }
            let Some((entry, node)) = self.find(snapshot, &listed.path).await? else {
                continue;
            };
            if let EntryKind::File { content, size, .. } = &entry.kind {
                let pieces = node
                    .locate_all(content)
                    .map_err(|e| ClientError::Usage(e.to_string()))?;
                files.push((listed.path, pieces, *size));
            }
        }
        // Each segment once, at its holders as the steward knows them now
        // (it may have repaired or moved shards since the put).
        let mut segments: Vec<SegmentRef> = Vec::new();
        let mut seen = HashSet::new();
        for (_, pieces, _) in &files {
            for piece in pieces {
                if seen.insert(piece.segment().key) {
                    segments.push(piece.segment().clone());
                }
            }
        }
        if let Some(steward) = self.steward
            && let Err(e) = self.swarm.relocate(steward, &mut segments).await
        {
            self.note(format!("note: {e}; auditing the holders as recorded"));
        }
        let mut audited: HashMap<[u8; 32], (usize, usize, usize)> = HashMap::new();
        for segment in &segments {
            audited.insert(segment.key, self.audit_segment(segment).await);
        }
        let mut out = Vec::new();
        for (path, pieces, size) in files {
            let mut worst: Option<(usize, usize, usize)> = None;
            for piece in &pieces {
                let health = audited
                    .get(&piece.segment().key)
                    .copied()
                    .unwrap_or_default();
                if worst.is_none_or(|w| health.0 < w.0) {
                    worst = Some(health);
                }
            }
            let (healthy, total, k) = worst.unwrap_or((0, 0, 0));
            out.push(FileHealth {
                path,
                snapshot: snapshot.short_id(),
                size,
                healthy_shards_min: healthy,
                shards_per_segment: total,
                k,
                survives_node_losses: healthy.saturating_sub(k),
                empty: pieces.is_empty(),
            });
        }
        Ok(out)
    }

    /// Healthy shards of a segment (each audited with a fresh challenge),
    /// shards per segment, and k.
    async fn audit_segment(&self, segment: &SegmentRef) -> (usize, usize, usize) {
        let coding = segment.coding();
        let shard_len = segment.shard_len();
        let mut healthy = 0;
        for shard in &segment.shards {
            let mut seed = [0u8; 32];
            let _ = getrandom::fill(&mut seed);
            if self
                .swarm
                .audit(shard.holder, shard.id, shard_len, seed)
                .await
            {
                healthy += 1;
            }
        }
        (healthy, coding.total(), usize::from(coding.k))
    }

    /// Stores `history` (on `candidates`, the nodes this command already
    /// asked, else they are asked now) and points a new root record at it;
    /// the history it replaces is retired (deleted by the next prune).
    /// Returns where the new history is stored.
    async fn commit(
        &mut self,
        mut history: History,
        candidates: Option<Arc<Vec<Candidate>>>,
    ) -> Result<StoredRef, ClientError> {
        if let Some(previous) = &self.stored_as {
            for piece in &previous.pieces {
                if !history.retired.iter().any(|s| s.key == piece.segment().key) {
                    history.retired.push(piece.segment().clone());
                }
            }
        }
        let bytes = tree::encode(&history);
        let id = self.trees.id_of(&bytes);
        let candidates = match candidates {
            Some(candidates) => candidates,
            None => self
                .swarm
                .placement_candidates()
                .await
                .map_err(ClientError::swarm("asking your nodes for room"))?,
        };
        let segments = self
            .swarm
            .put_bytes(&bytes, &candidates)
            .await
            .map_err(ClientError::swarm("storing the snapshot history"))?;
        let stored = StoredRef {
            id,
            pieces: segments.into_iter().map(Located::Segment).collect(),
        };
        let seq = self.seq + 1;
        self.swarm.put_root(seq, &stored).await.map_err(ClientError::swarm(
            "publishing the new root record (another cairn may have changed your files at the same time; run the command again)",
        ))?;
        self.seq = seq;
        self.home.save_cache(&CachedHistory {
            stored_as: stored.clone(),
            history: history.clone(),
        })?;
        self.history = history;
        self.stored_as = Some(stored.clone());
        Ok(stored)
    }

    /// Hands what was just stored to the steward. The data is stored
    /// either way; without a steward nothing repairs or renews it.
    async fn track(&self, segments: &[SegmentRef]) {
        let Some(steward) = self.steward else {
            return;
        };
        if let Err(e) = self.swarm.track(steward, segments).await {
            self.note(format!(
                "warning: stored, but {e}; until the steward is told, nothing audits, repairs or renews this data: once it answers, put the same files again (unchanged data is not uploaded twice, and the steward is told)"
            ));
        }
    }

    async fn download<W: Write + Send + 'static>(
        &self,
        path: &str,
        pieces: &[Located],
        out: W,
        progress: &dyn Progress,
    ) -> Result<(TransferStats, W), ClientError> {
        self.swarm
            .read_pieces(pieces, out, &|n| progress.advance(n))
            .await
            .map_err(ClientError::swarm(format!("reading {path}")))
    }

    fn note(&self, note: String) {
        cairn_host::lock(&self.notes).push(note);
    }
}

async fn tally(
    deletes: &mut JoinSet<(Result<bool, cairn_net::NetError>, u64)>,
    report: &mut PruneReport,
) {
    match deletes.join_next().await {
        Some(Ok((Ok(true), len))) => {
            report.shards_deleted += 1;
            report.shard_bytes_freed += len;
        }
        Some(Ok((Ok(false), _))) => report.shards_already_gone += 1,
        Some(Ok((Err(e), _))) => {
            tracing::debug!("delete: {e}");
            report.shards_left_to_expire += 1;
        }
        Some(Err(_)) => report.shards_left_to_expire += 1,
        None => {}
    }
}

/// What makes two entries the same version of a path.
fn identity(entry: &Entry, node: &TreeNode) -> Vec<u8> {
    let content = match &entry.kind {
        EntryKind::File { content, .. } => {
            tree::encode(&node.locate_all(content).unwrap_or_default())
        }
        EntryKind::Symlink { target } => target.clone(),
        EntryKind::Dir { id, .. } => id.to_vec(),
    };
    let mut out = tree::encode(&(entry.mode, entry.mtime_ns, entry_size(entry)));
    out.extend(content);
    out
}

fn entry_size(entry: &Entry) -> u64 {
    match &entry.kind {
        EntryKind::File { size, .. } => *size,
        EntryKind::Symlink { target } => target.len() as u64,
        EntryKind::Dir { .. } => 0,
    }
}

/// Checks that a read delivered every byte the tree names.
fn whole(path: &str, stats: &TransferStats, size: u64) -> Result<(), ClientError> {
    if stats.bytes != size {
        return Err(ClientError::ShortRead {
            path: path.to_owned(),
            read: stats.bytes,
            size,
        });
    }
    Ok(())
}

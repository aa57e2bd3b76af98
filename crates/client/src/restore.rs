//! Bringing a snapshot's tree (or one file) back into a directory: every
//! directory, file (with its mode and mtime), symbolic link (as a link) and
//! empty directory. Files are read several at once; files that share a
//! pack fetch it once. Each file is written beside its final name and
//! renamed into place only when it is whole, and the restore ends with
//! one sync of the target's file system, so "done" means durable.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::ClientError;
use crate::local::TreeCache;
use crate::session::{Progress, TransferReport};
use crate::swarm::{Swarm, SwarmError, TransferStats};
use crate::tree::{Entry, EntryKind, Located, StoredRef, TreeNode};

/// Files up to this size are read whole into memory, many at once.
const SMALL_FILE: u64 = 1 << 20;
/// Small files restored at once.
const SMALL_IN_FLIGHT: usize = 32;
/// Large files restored at once (each has many segments in flight).
const LARGE_IN_FLIGHT: usize = 2;

/// What a restore brought back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    /// The snapshot read.
    pub snapshot: String,
    /// Where the restored tree (or file) is now.
    pub restored_to: String,
    /// Regular files written.
    pub files: u64,
    /// Directories made (empty ones included).
    pub dirs: u64,
    /// Symbolic links made.
    pub symlinks: u64,
    /// File bytes written.
    pub bytes: u64,
    /// What the reads moved.
    pub transfer: TransferReport,
}

struct FileJob {
    dest: PathBuf,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    pieces: Vec<Located>,
}

/// Restores `entry` (found in `parent`) as `dest`.
pub(crate) async fn restore(
    swarm: &Arc<Swarm>,
    trees: &TreeCache,
    entry: &Entry,
    parent: &TreeNode,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<RestoreSummary, ClientError> {
    let mut summary = RestoreSummary {
        restored_to: dest.display().to_string(),
        ..RestoreSummary::default()
    };
    let mut files = Vec::new();
    // Directories with their mode and mtime, set after everything inside
    // them is written (deepest last in this list).
    let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
    let mut stack: Vec<(PathBuf, Entry, Arc<TreeNode>)> =
        vec![(dest.to_owned(), entry.clone(), Arc::new(parent.clone()))];
    while let Some((dest, entry, parent)) = stack.pop() {
        let shown = dest.display().to_string();
        match &entry.kind {
            EntryKind::Dir { id, node } => {
                let pieces = parent
                    .locate_all(node)
                    .map_err(|e| ClientError::Usage(e.to_string()))?;
                let node = trees
                    .node(swarm, id, &pieces)
                    .await
                    .map_err(ClientError::swarm(format!("reading the directory {shown}")))?;
                match std::fs::create_dir(&dest) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(ClientError::file(&shown)(e));
                    }
                    _ => {}
                }
                summary.dirs += 1;
                // The namespace's root has no metadata of its own to give
                // the target.
                if !entry.name.is_empty() {
                    dirs.push((dest.clone(), entry.mode, entry.mtime_ns));
                }
                let node = Arc::new(node);
                for child in node.entries.iter().rev() {
                    let name = std::ffi::OsStr::from_bytes(&child.name);
                    stack.push((dest.join(name), child.clone(), Arc::clone(&node)));
                }
            }
            EntryKind::Symlink { target } => {
                let _ = std::fs::remove_file(&dest);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &dest)
                    .map_err(ClientError::file(&shown))?;
                set_mtime(&dest, entry.mtime_ns).map_err(ClientError::file(&shown))?;
                summary.symlinks += 1;
            }
            EntryKind::File { size, content, .. } => {
                files.push(FileJob {
                    dest,
                    size: *size,
                    mode: entry.mode,
                    mtime_ns: entry.mtime_ns,
                    pieces: parent
                        .locate_all(content)
                        .map_err(|e| ClientError::Usage(e.to_string()))?,
                });
            }
        }
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    progress.start(&summary.restored_to, total);
    // Files of one pack next to each other, so the pack cache serves them.
    files.sort_by(|a, b| first_key(&a.pieces).cmp(&first_key(&b.pieces)));
    let (small, large): (Vec<FileJob>, Vec<FileJob>) =
        files.into_iter().partition(|f| f.size <= SMALL_FILE);
    let mut stats = TransferStats::default();
    for (jobs, in_flight) in [(small, SMALL_IN_FLIGHT), (large, LARGE_IN_FLIGHT)] {
        let mut running = JoinSet::new();
        for job in jobs {
            while running.len() >= in_flight {
                collect(&mut running, &mut stats, &mut summary, progress).await?;
            }
            let swarm = Arc::clone(swarm);
            running.spawn(async move { restore_file(swarm, job).await });
        }
        while !running.is_empty() {
            collect(&mut running, &mut stats, &mut summary, progress).await?;
        }
    }
    for (dir, mode, mtime_ns) in dirs.iter().rev() {
        let shown = dir.display().to_string();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .map_err(ClientError::file(&shown))?;
        set_mtime(dir, *mtime_ns).map_err(ClientError::file(&shown))?;
    }
    // One sync for everything written, instead of one per file.
    let sync_at = if entry_is_dir(entry) {
        dest.to_owned()
    } else {
        dest.parent().unwrap_or(dest).to_owned()
    };
    std::fs::File::open(&sync_at)
        .and_then(|dir| rustix::fs::syncfs(&dir).map_err(std::io::Error::from))
        .map_err(ClientError::file(&sync_at.display().to_string()))?;
    progress.finish();
    summary.transfer = TransferReport::from(&stats);
    Ok(summary)
}

fn entry_is_dir(entry: &Entry) -> bool {
    matches!(entry.kind, EntryKind::Dir { .. })
}

fn first_key(pieces: &[Located]) -> [u8; 32] {
    pieces.first().map_or([0; 32], |p| p.segment().key)
}

async fn collect(
    running: &mut JoinSet<Result<(u64, TransferStats), ClientError>>,
    stats: &mut TransferStats,
    summary: &mut RestoreSummary,
    progress: &dyn Progress,
) -> Result<(), ClientError> {
    let Some(joined) = running.join_next().await else {
        return Ok(());
    };
    let (bytes, file_stats) =
        joined.map_err(|e| ClientError::swarm("restoring")(SwarmError::Task(e.to_string())))??;
    progress.advance(bytes);
    summary.files += 1;
    summary.bytes += bytes;
    stats.bytes += file_stats.bytes;
    stats.shard_bytes += file_stats.shard_bytes;
    stats.segments += file_stats.segments;
    stats.decoded += file_stats.decoded;
    stats.bad_shards.extend(file_stats.bad_shards);
    for node in file_stats.unreachable {
        if !stats.unreachable.contains(&node) {
            stats.unreachable.push(node);
        }
    }
    Ok(())
}

/// Writes one file beside its name, checks it is whole, sets its mode and
/// mtime, and renames it into place.
async fn restore_file(
    swarm: Arc<Swarm>,
    job: FileJob,
) -> Result<(u64, TransferStats), ClientError> {
    let shown = job.dest.display().to_string();
    let tmp = job.dest.with_file_name(format!(
        ".{}.cairn-partial",
        job.dest
            .file_name()
            .map_or("out".into(), |n| n.to_string_lossy())
    ));
    let file = std::fs::File::create(&tmp).map_err(ClientError::file(&shown))?;
    let read = if job.size <= SMALL_FILE {
        swarm
            .read_pieces_whole(&job.pieces)
            .await
            .and_then(|(bytes, stats)| {
                use std::io::Write;
                let mut file = file;
                file.write_all(&bytes)
                    .map_err(|source| SwarmError::Io {
                        what: "writing the file".into(),
                        source,
                    })
                    .map(|()| stats)
            })
    } else {
        swarm
            .read_pieces(&job.pieces, file, &|_| {})
            .await
            .map(|(stats, _)| stats)
    };
    let finished = read
        .map_err(ClientError::swarm(format!("restoring {shown}")))
        .and_then(|stats| {
            if stats.bytes != job.size {
                return Err(ClientError::ShortRead {
                    path: shown.clone(),
                    read: stats.bytes,
                    size: job.size,
                });
            }
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(job.mode))
                .and_then(|()| set_mtime(&tmp, job.mtime_ns))
                .and_then(|()| std::fs::rename(&tmp, &job.dest))
                .map_err(ClientError::file(&shown))?;
            Ok(stats)
        });
    match finished {
        Ok(stats) => Ok((job.size, stats)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Sets a path's mtime (and atime, to the same) without following a link.
fn set_mtime(path: &Path, mtime_ns: i64) -> std::io::Result<()> {
    let time = rustix::fs::Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(std::io::Error::from)
}

/// The entry at `names` below the root `root`, with the node that holds it
/// (for the root itself, a made-up entry in an empty node).
pub(crate) async fn find(
    swarm: &Arc<Swarm>,
    trees: &TreeCache,
    root: &StoredRef,
    names: &[Vec<u8>],
) -> Result<Option<(Entry, TreeNode)>, ClientError> {
    let mut node = trees
        .node(swarm, &root.id, &root.pieces)
        .await
        .map_err(ClientError::swarm("reading the snapshot's tree"))?;
    let Some((last, ancestors)) = names.split_last() else {
        // The root: an entry in a node whose pack table holds its pieces.
        let mut builder = crate::tree::NodeBuilder::default();
        let pieces = builder.pieces(&root.pieces);
        let entry = Entry {
            name: Vec::new(),
            mode: 0o755,
            mtime_ns: 0,
            kind: EntryKind::Dir {
                id: root.id,
                node: pieces,
            },
        };
        return Ok(Some((entry, builder.finish())));
    };
    for name in ancestors {
        let Some(Entry {
            kind: EntryKind::Dir { id, node: pieces },
            ..
        }) = node.entry(name)
        else {
            return Ok(None);
        };
        let (id, pieces) = (
            *id,
            node.locate_all(pieces)
                .map_err(|e| ClientError::Usage(e.to_string()))?,
        );
        node = trees
            .node(swarm, &id, &pieces)
            .await
            .map_err(ClientError::swarm("reading the snapshot's tree"))?;
    }
    Ok(node.entry(last).cloned().map(|e| (e, node)))
}

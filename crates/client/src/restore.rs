//! Bringing a snapshot's tree (or one file) back into a directory: every
//! directory, file (with its mode and mtime), symbolic link (as a link) and
//! empty directory. Files are read several at once; files that share a
//! pack fetch it once. Each file is written beside its final name and
//! renamed into place only when it is whole, and the restore ends with
//! one sync of the target's file system, so "done" means durable.

use std::collections::BTreeMap;
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
/// Small files restored at once (those not all in one pack).
const SMALL_IN_FLIGHT: usize = 16;
/// Packs whose files are restored at once.
const PACKS_IN_FLIGHT: usize = 12;
/// Large files restored at once (each has many segments in flight).
const LARGE_IN_FLIGHT: usize = 4;

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

/// One task of a restore lane.
enum Work {
    /// Files whose bytes all lie in one pack.
    Pack(Vec<FileJob>),
    /// One file.
    File(FileJob),
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
                    // A name that could climb out of the target is never
                    // used, whatever a tree says.
                    if matches!(&child.name[..], b"" | b"." | b"..")
                        || child.name.contains(&b'/')
                        || child.name.contains(&0)
                    {
                        return Err(ClientError::Usage(format!(
                            "{shown} holds the name {:?}, which no directory can; the snapshot is damaged",
                            String::from_utf8_lossy(&child.name)
                        )));
                    }
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
    let sync_at = if entry_is_dir(entry) {
        dest.to_owned()
    } else {
        dest.parent().unwrap_or(dest).to_owned()
    };
    let flusher =
        Flusher::start(&sync_at).map_err(ClientError::file(&sync_at.display().to_string()))?;
    // Small files whose bytes all lie in one pack are restored pack by
    // pack, several packs at once: each pack is fetched once and its files
    // written in one trip to a blocking thread.
    let mut by_pack: BTreeMap<[u8; 32], Vec<FileJob>> = BTreeMap::new();
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for job in files {
        match single_pack(&job.pieces) {
            Some(pack) if job.size <= SMALL_FILE => by_pack.entry(pack).or_default().push(job),
            _ if job.size <= SMALL_FILE => small.push(job),
            _ => large.push(job),
        }
    }
    let packs = by_pack.into_values().map(Work::Pack).collect();
    let small = small.into_iter().map(Work::File).collect();
    let large = large.into_iter().map(Work::File).collect();
    // Three lanes at once, so that neither waits for the other's tail:
    // packs of small files, other small files, large files.
    let tally = std::sync::Mutex::new((TransferStats::default(), summary));
    let lane = |works: Vec<Work>, in_flight: usize| {
        let (tally, flusher) = (&tally, &flusher);
        async move {
            let mut running = JoinSet::new();
            for work in works {
                while running.len() >= in_flight {
                    collect(&mut running, tally, progress, flusher).await?;
                }
                let swarm = Arc::clone(swarm);
                running.spawn(async move {
                    match work {
                        Work::Pack(jobs) => restore_packed(swarm, jobs).await,
                        Work::File(job) => Ok(vec![restore_file(swarm, job).await?]),
                    }
                });
            }
            while !running.is_empty() {
                collect(&mut running, tally, progress, flusher).await?;
            }
            Ok::<(), ClientError>(())
        }
    };
    let (packed, small, large) = tokio::join!(
        lane(packs, PACKS_IN_FLIGHT),
        lane(small, SMALL_IN_FLIGHT),
        lane(large, LARGE_IN_FLIGHT)
    );
    packed?;
    small?;
    large?;
    let (stats, mut summary) = tally
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (dir, mode, mtime_ns) in dirs.iter().rev() {
        let shown = dir.display().to_string();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .map_err(ClientError::file(&shown))?;
        set_mtime(dir, *mtime_ns).map_err(ClientError::file(&shown))?;
    }
    // One sync for everything written (most of it already on its way),
    // instead of one per file.
    flusher
        .finish()
        .map_err(ClientError::file(&sync_at.display().to_string()))?;
    progress.finish();
    summary.transfer = TransferReport::from(&stats);
    Ok(summary)
}

fn entry_is_dir(entry: &Entry) -> bool {
    matches!(entry.kind, EntryKind::Dir { .. })
}

/// The pack every piece lies in, if there is one (`[0; 32]` for no piece).
fn single_pack(pieces: &[Located]) -> Option<[u8; 32]> {
    let mut packs = pieces.iter().map(|p| match p {
        Located::Packed { pack, .. } => Some(pack.key),
        Located::Segment(_) => None,
    });
    let first = packs.next().unwrap_or(Some([0; 32]))?;
    packs.all(|p| p == Some(first)).then_some(first)
}

async fn collect(
    running: &mut JoinSet<Result<Vec<(u64, TransferStats)>, ClientError>>,
    tally: &std::sync::Mutex<(TransferStats, RestoreSummary)>,
    progress: &dyn Progress,
    flusher: &Flusher,
) -> Result<(), ClientError> {
    let Some(joined) = running.join_next().await else {
        return Ok(());
    };
    let files =
        joined.map_err(|e| ClientError::swarm("restoring")(SwarmError::Task(e.to_string())))??;
    let mut tally = cairn_host::lock(tally);
    let (stats, summary) = &mut *tally;
    for (bytes, file_stats) in files {
        add_file(stats, summary, progress, bytes, file_stats);
    }
    flusher.wrote(summary.bytes);
    Ok(())
}

/// Starts writing back what the restore wrote while it goes on (a syncfs
/// on a thread of its own every so many MiB), so that the final sync has
/// little left to do and the disk works while the network does.
struct Flusher {
    requests: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
    next: std::sync::atomic::AtomicU64,
    dir: std::fs::File,
}

impl Flusher {
    const EVERY: u64 = 64 << 20;

    fn start(dir: &Path) -> std::io::Result<Self> {
        let dir = std::fs::File::open(dir)?;
        let on_thread = dir.try_clone()?;
        // One request may wait; more are dropped while a sync runs.
        let (requests, wanted) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            while wanted.recv().is_ok() {
                rustix::fs::syncfs(&on_thread)?;
            }
            Ok(())
        });
        Ok(Self {
            requests,
            thread,
            next: std::sync::atomic::AtomicU64::new(Self::EVERY),
            dir,
        })
    }

    /// `total` bytes are written so far.
    fn wrote(&self, total: u64) {
        use std::sync::atomic::Ordering;
        let next = self.next.load(Ordering::Relaxed);
        if total >= next {
            self.next.store(total + Self::EVERY, Ordering::Relaxed);
            let _ = self.requests.try_send(());
        }
    }

    /// Waits for the syncs under way, then syncs what is left.
    fn finish(self) -> std::io::Result<()> {
        drop(self.requests);
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("the writeback thread failed"))??;
        rustix::fs::syncfs(&self.dir).map_err(std::io::Error::from)
    }
}

fn add_file(
    stats: &mut TransferStats,
    summary: &mut RestoreSummary,
    progress: &dyn Progress,
    bytes: u64,
    file_stats: TransferStats,
) {
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
}

/// Restores files whose bytes all lie in one pack: the pack is fetched
/// once, then every file is written (beside its name, renamed when whole)
/// in one trip to a blocking thread.
async fn restore_packed(
    swarm: Arc<Swarm>,
    jobs: Vec<FileJob>,
) -> Result<Vec<(u64, TransferStats)>, ClientError> {
    let pack = jobs.iter().find_map(|job| match job.pieces.first() {
        Some(Located::Packed { pack, .. }) => Some(pack.clone()),
        _ => None,
    });
    let mut first = TransferStats::default();
    let plain = match pack {
        Some(pack) => {
            let (plain, report) = swarm
                .pack(0, pack)
                .await
                .map_err(ClientError::swarm("restoring files from a pack"))?;
            first.add(report);
            plain
        }
        // Only empty files.
        None => Arc::new(Vec::new()),
    };
    tokio::task::spawn_blocking(move || {
        let mut done = Vec::with_capacity(jobs.len());
        for job in jobs {
            let shown = job.dest.display().to_string();
            // The file's slices of the pack, written as they are (no copy).
            let mut slices: Vec<&[u8]> = Vec::with_capacity(job.pieces.len());
            for piece in &job.pieces {
                if let Located::Packed { offset, len, .. } = piece {
                    let range = *offset as usize..*offset as usize + *len as usize;
                    let slice = plain.get(range).ok_or_else(|| {
                        ClientError::swarm(format!("restoring {shown}"))(SwarmError::Decode(
                            format!("a piece at {offset}+{len} lies outside its pack"),
                        ))
                    })?;
                    slices.push(slice);
                }
            }
            let mut stats = std::mem::take(&mut first);
            stats.bytes = slices.iter().map(|s| s.len() as u64).sum();
            if stats.bytes != job.size {
                return Err(short(&shown, &stats, job.size));
            }
            let tmp = partial_name(&job.dest);
            let written = std::fs::File::create(&tmp)
                .and_then(|mut file| {
                    use std::io::Write;
                    for slice in &slices {
                        file.write_all(slice)?;
                    }
                    finish_file(&file, job.mode, job.mtime_ns)
                })
                .and_then(|()| std::fs::rename(&tmp, &job.dest));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(ClientError::file(&shown)(e));
            }
            done.push((job.size, stats));
        }
        Ok(done)
    })
    .await
    .map_err(|e| ClientError::swarm("restoring")(SwarmError::Task(e.to_string())))?
}

/// Where a file is written until it is whole.
fn partial_name(dest: &Path) -> PathBuf {
    dest.with_file_name(format!(
        ".{}.cairn-partial",
        dest.file_name()
            .map_or("out".into(), |n| n.to_string_lossy())
    ))
}

/// Writes one file beside its name, checks it is whole, sets its mode and
/// mtime, and renames it into place. File system calls run on blocking
/// threads, so that they never hold up the network.
async fn restore_file(
    swarm: Arc<Swarm>,
    job: FileJob,
) -> Result<(u64, TransferStats), ClientError> {
    let shown = job.dest.display().to_string();
    let tmp = partial_name(&job.dest);
    let (mode, mtime_ns, dest) = (job.mode, job.mtime_ns, job.dest.clone());
    // Mode, mtime, then the rename: one trip to a blocking thread.
    let finish = move |file: std::fs::File, tmp: PathBuf| -> std::io::Result<()> {
        finish_file(&file, mode, mtime_ns)?;
        drop(file);
        std::fs::rename(&tmp, &dest)
    };
    let finished = if job.size <= SMALL_FILE {
        match swarm.read_pieces_whole(&job.pieces).await {
            Ok((bytes, stats)) if stats.bytes == job.size => {
                let tmp = tmp.clone();
                blocking(move || {
                    use std::io::Write;
                    let mut file = std::fs::File::create(&tmp)?;
                    file.write_all(&bytes)?;
                    finish(file, tmp)
                })
                .await
                .map_err(ClientError::file(&shown))
                .map(|()| stats)
            }
            Ok((_, stats)) => Err(short(&shown, &stats, job.size)),
            Err(e) => Err(ClientError::swarm(format!("restoring {shown}"))(e)),
        }
    } else {
        let file = blocking({
            let tmp = tmp.clone();
            move || std::fs::File::create(&tmp)
        })
        .await
        .map_err(ClientError::file(&shown))?;
        match swarm.read_pieces(&job.pieces, file, &|_| {}).await {
            Ok((stats, file)) if stats.bytes == job.size => {
                let tmp = tmp.clone();
                blocking(move || finish(file, tmp))
                    .await
                    .map_err(ClientError::file(&shown))
                    .map(|()| stats)
            }
            Ok((stats, _)) => Err(short(&shown, &stats, job.size)),
            Err(e) => Err(ClientError::swarm(format!("restoring {shown}"))(e)),
        }
    };
    match finished {
        Ok(stats) => Ok((job.size, stats)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Gives a written file its mode and mtime through its descriptor (no
/// path lookups).
fn finish_file(file: &std::fs::File, mode: u32, mtime_ns: i64) -> std::io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    let since_epoch = std::time::Duration::from_nanos(mtime_ns.unsigned_abs());
    let mtime = if mtime_ns >= 0 {
        std::time::UNIX_EPOCH + since_epoch
    } else {
        std::time::UNIX_EPOCH - since_epoch
    };
    file.set_modified(mtime)
}

fn short(shown: &str, stats: &TransferStats, size: u64) -> ClientError {
    ClientError::ShortRead {
        path: shown.to_owned(),
        read: stats.bytes,
        size,
    }
}

/// Runs file system work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
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

//! One open data disk: its file layout, its index, the write path with group
//! commit, and recovery after a crash.
//!
//! Layout of a cairn directory:
//! ```text
//! marker.toml       which node and disk this is (see marker.rs)
//! index.redb        the disk's index (see index.rs)
//! shards/00 … ff/   shard files, named by id, fanned out by the id's first byte
//! tmp/              files being written; emptied at every start
//! quarantine/       shards that failed verification; kept, never served
//! ```
//!
//! The write path of a shard: write `tmp/<id>.<n>` and fsync it; commit its
//! record to the index together with a put intent (many puts share one
//! commit); rename it into `shards/`; fsync that directory; acknowledge. The
//! intent is forgotten in a later commit. After a crash only the shards with
//! intents are checked, so start-up never walks the shard files.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::fs::DiskFs;
use super::index::{Counters, Index, IndexOp, Intent, OpOutcome, ShardRecord, ShardState};
use crate::ids::{DiskId, ShardId};

/// File name of the index inside the cairn directory.
pub const INDEX_FILE: &str = "index.redb";
const TMP_DIR: &str = "tmp";
const SHARDS_DIR: &str = "shards";
const QUARANTINE_DIR: &str = "quarantine";

/// Where a shard's file lives while it may be served.
pub fn shard_path(id: &ShardId) -> String {
    format!("{SHARDS_DIR}/{:02x}/{}", id.0[0], id.to_hex())
}

/// Where a quarantined shard's file is kept.
pub fn quarantine_path(id: &ShardId) -> String {
    format!("{QUARANTINE_DIR}/{}", id.to_hex())
}

fn shard_dir(id: &ShardId) -> String {
    format!("{SHARDS_DIR}/{:02x}", id.0[0])
}

/// An I/O or index failure on this disk, with what the store was doing.
#[derive(Debug)]
pub struct DiskIoError {
    /// What the store was doing.
    pub doing: String,
    /// The underlying error.
    pub source: io::Error,
}

impl DiskIoError {
    fn new(doing: impl Into<String>, source: io::Error) -> Self {
        Self {
            doing: doing.into(),
            source,
        }
    }

    fn index(doing: impl Into<String>, error: &redb::Error) -> Self {
        Self::new(doing, io::Error::other(error.to_string()))
    }

    /// Whether the file system ran out of space (not a disk failure).
    pub fn is_out_of_space(&self) -> bool {
        is_out_of_space(&self.source)
    }
}

/// Whether an I/O error means "no space" rather than "broken disk".
pub fn is_out_of_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A data disk whose marker names this node, with its index open.
pub struct OpenDisk {
    /// The disk's id.
    pub id: DiskId,
    /// Its mountpoint.
    pub path: PathBuf,
    fs: Arc<dyn DiskFs>,
    index: Index,
    commits: Mutex<CommitQueue>,
    committed: Condvar,
    counters: Mutex<Counters>,
    failure: Mutex<Option<String>>,
    /// Bytes of puts chosen for this disk and not yet finished.
    pub reserved: AtomicU64,
    tmp_seq: AtomicU64,
}

#[derive(Default)]
struct CommitQueue {
    waiting: Vec<(u64, IndexOp)>,
    finished_intents: Vec<ShardId>,
    next_ticket: u64,
    leader_active: bool,
    results: HashMap<u64, Result<OpOutcome, Arc<redb::Error>>>,
}

/// What recovery at open found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Unfinished writes whose records were dropped (never acknowledged).
    pub dropped_puts: usize,
    /// Deletes and quarantines completed.
    pub completed: usize,
    /// Temporary files removed.
    pub tmp_removed: usize,
}

impl OpenDisk {
    /// Creates the layout in a fresh cairn directory (the marker is written by the caller first).
    pub fn create_layout(fs: &dyn DiskFs) -> io::Result<()> {
        for dir in [TMP_DIR, SHARDS_DIR, QUARANTINE_DIR] {
            fs.create_dir(dir)?;
        }
        for byte in 0..=255u8 {
            fs.create_dir(&format!("{SHARDS_DIR}/{byte:02x}"))?;
        }
        fs.sync_dir(SHARDS_DIR)?;
        fs.sync_dir("")
    }

    /// Opens the index of a disk whose marker was checked, and recovers from a crash if needed.
    pub fn open(
        id: DiskId,
        path: PathBuf,
        fs: Arc<dyn DiskFs>,
        cache_bytes: usize,
    ) -> Result<(Self, Recovery), DiskIoError> {
        let backend = fs
            .open_index(INDEX_FILE)
            .map_err(|e| DiskIoError::new("opening the index", e))?;
        let index = Index::open(backend, cache_bytes)
            .map_err(|e| DiskIoError::index("opening the index", &e))?;
        let recovery = recover(fs.as_ref(), &index)?;
        let counters = index
            .counters()
            .map_err(|e| DiskIoError::index("reading the counters", &e))?;
        let disk = Self {
            id,
            path,
            fs,
            index,
            commits: Mutex::new(CommitQueue::default()),
            committed: Condvar::new(),
            counters: Mutex::new(counters),
            failure: Mutex::new(None),
            reserved: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
        };
        Ok((disk, recovery))
    }

    /// The file system under this disk.
    pub fn fs(&self) -> &dyn DiskFs {
        self.fs.as_ref()
    }

    /// Why the disk is out of service, if it is.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Takes the disk out of service; returns false if it already was.
    pub fn mark_failed(&self, reason: String) -> bool {
        let mut failure = lock(&self.failure);
        if failure.is_some() {
            return false;
        }
        *failure = Some(reason);
        true
    }

    /// The counters as of the last commit.
    pub fn counters(&self) -> Counters {
        *lock(&self.counters)
    }

    /// The index record of a shard.
    pub fn record(&self, id: &ShardId) -> Result<Option<ShardRecord>, DiskIoError> {
        self.index
            .get(id)
            .map_err(|e| DiskIoError::index("reading the index", &e))
    }

    /// The index, for listing and lease scans.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Writes a shard durably. The caller holds the shard's lock and has verified its bytes.
    pub fn put(
        &self,
        id: &ShardId,
        bytes: &[u8],
        record: ShardRecord,
    ) -> Result<OpOutcome, DiskIoError> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = format!("{TMP_DIR}/{}.{seq}", id.to_hex());
        if let Err(e) = self.fs.write_new(&tmp, bytes, true) {
            let _ = self.fs.remove(&tmp);
            return Err(DiskIoError::new(format!("writing shard {id}"), e));
        }
        let outcome = match self.commit(IndexOp::Insert(*id, record)) {
            Ok(outcome) => outcome,
            Err(e) => {
                let _ = self.fs.remove(&tmp);
                return Err(DiskIoError::index(
                    format!("recording shard {id} in the index"),
                    &e,
                ));
            }
        };
        match outcome {
            OpOutcome::Applied(old) => {
                self.fs
                    .rename(&tmp, &shard_path(id))
                    .and_then(|()| self.fs.sync_dir(&shard_dir(id)))
                    .map_err(|e| DiskIoError::new(format!("moving shard {id} into place"), e))?;
                if old.is_some_and(|old| old.state == ShardState::Quarantined) {
                    // The damaged copy is replaced by a verified one; it has served its purpose.
                    let _ = self.fs.remove(&quarantine_path(id));
                }
                self.intent_finished(*id);
            }
            OpOutcome::Unchanged | OpOutcome::Absent => {
                let _ = self.fs.remove(&tmp);
            }
        }
        Ok(outcome)
    }

    /// Writes many shards durably with one file-system sync and one index
    /// commit, for bulk work (repair, migration). The caller holds every
    /// shard's lock and has verified their bytes.
    pub fn put_many(
        &self,
        shards: &[(ShardId, &[u8], ShardRecord)],
    ) -> Result<Vec<OpOutcome>, DiskIoError> {
        let mut tmps = Vec::with_capacity(shards.len());
        let cleanup = |tmps: &[String]| {
            for tmp in tmps {
                let _ = self.fs.remove(tmp);
            }
        };
        for (id, bytes, _) in shards {
            let tmp = format!(
                "{TMP_DIR}/{}.{}",
                id.to_hex(),
                self.tmp_seq.fetch_add(1, Ordering::Relaxed)
            );
            if let Err(e) = self.fs.write_new(&tmp, bytes, false) {
                cleanup(&tmps);
                let _ = self.fs.remove(&tmp);
                return Err(DiskIoError::new(format!("writing shard {id}"), e));
            }
            tmps.push(tmp);
        }
        if let Err(e) = self.fs.sync_all() {
            cleanup(&tmps);
            return Err(DiskIoError::new("syncing a batch of shards", e));
        }
        let ops = shards
            .iter()
            .map(|(id, _, record)| IndexOp::Insert(*id, *record))
            .collect();
        let outcomes = match self.commit_all(ops) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                cleanup(&tmps);
                return Err(DiskIoError::index(
                    "recording a batch of shards in the index",
                    &e,
                ));
            }
        };
        let mut dirs = std::collections::BTreeSet::new();
        for ((id, _, _), (tmp, outcome)) in shards.iter().zip(tmps.iter().zip(&outcomes)) {
            if matches!(outcome, OpOutcome::Applied(_)) {
                self.fs
                    .rename(tmp, &shard_path(id))
                    .map_err(|e| DiskIoError::new(format!("moving shard {id} into place"), e))?;
                dirs.insert(shard_dir(id));
            } else {
                let _ = self.fs.remove(tmp);
            }
        }
        for dir in &dirs {
            self.fs
                .sync_dir(dir)
                .map_err(|e| DiskIoError::new(format!("syncing {dir}"), e))?;
        }
        for ((id, _, _), outcome) in shards.iter().zip(&outcomes) {
            if matches!(outcome, OpOutcome::Applied(_)) {
                self.intent_finished(*id);
            }
        }
        Ok(outcomes)
    }

    /// Forgets a shard and removes its file. The caller holds the shard's lock.
    pub fn delete(&self, id: &ShardId) -> Result<Option<ShardRecord>, DiskIoError> {
        let outcome = self
            .commit(IndexOp::Remove(*id))
            .map_err(|e| DiskIoError::index(format!("removing shard {id} from the index"), &e))?;
        let OpOutcome::Applied(Some(old)) = outcome else {
            return Ok(None);
        };
        remove_files(self.fs.as_ref(), id)
            .map_err(|e| DiskIoError::new(format!("removing shard {id}"), e))?;
        self.intent_finished(*id);
        Ok(Some(old))
    }

    /// Marks a shard quarantined and moves its file (if any) aside. The caller holds the shard's lock.
    pub fn quarantine(&self, id: &ShardId) -> Result<bool, DiskIoError> {
        let outcome = self
            .commit(IndexOp::Quarantine(*id))
            .map_err(|e| DiskIoError::index(format!("quarantining shard {id} in the index"), &e))?;
        if !matches!(outcome, OpOutcome::Applied(_)) {
            return Ok(false);
        }
        move_to_quarantine(self.fs.as_ref(), id)
            .map_err(|e| DiskIoError::new(format!("quarantining shard {id}"), e))?;
        self.intent_finished(*id);
        Ok(true)
    }

    /// Moves a shard's lease expiry. The caller holds the shard's lock.
    pub fn renew_lease(&self, id: &ShardId, expires: u64) -> Result<bool, DiskIoError> {
        let outcome = self
            .commit(IndexOp::RenewLease(*id, expires))
            .map_err(|e| DiskIoError::index(format!("renewing the lease of shard {id}"), &e))?;
        Ok(matches!(outcome, OpOutcome::Applied(_)))
    }

    /// Commits one change, sharing the commit with whatever other changes are
    /// waiting: the first caller to find no commit running becomes the leader
    /// and commits everyone's changes; the others wait for its result.
    fn commit(&self, op: IndexOp) -> Result<OpOutcome, Arc<redb::Error>> {
        let mut outcomes = self.commit_all(vec![op])?;
        Ok(outcomes.pop().expect("one outcome per op"))
    }

    /// Commits several changes in one transaction (shared with other waiting changes).
    fn commit_all(&self, ops: Vec<IndexOp>) -> Result<Vec<OpOutcome>, Arc<redb::Error>> {
        let mut queue = lock(&self.commits);
        let first = queue.next_ticket;
        let count = ops.len() as u64;
        queue.next_ticket += count;
        for (ticket, op) in (first..).zip(ops) {
            queue.waiting.push((ticket, op));
        }
        loop {
            if (first..first + count).all(|t| queue.results.contains_key(&t)) {
                return (first..first + count)
                    .map(|t| queue.results.remove(&t).expect("checked above"))
                    .collect();
            }
            if queue.leader_active {
                queue = self
                    .committed
                    .wait(queue)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            queue.leader_active = true;
            let batch = std::mem::take(&mut queue.waiting);
            let finished = std::mem::take(&mut queue.finished_intents);
            drop(queue);
            let ops: Vec<IndexOp> = batch.iter().map(|(_, op)| op.clone()).collect();
            let result = self.index.apply(&finished, &ops);
            queue = lock(&self.commits);
            match result {
                Ok((outcomes, counters)) => {
                    *lock(&self.counters) = counters;
                    for ((ticket, _), outcome) in batch.iter().zip(outcomes) {
                        queue.results.insert(*ticket, Ok(outcome));
                    }
                }
                Err(error) => {
                    let error = Arc::new(error);
                    for (ticket, _) in &batch {
                        queue.results.insert(*ticket, Err(Arc::clone(&error)));
                    }
                }
            }
            queue.leader_active = false;
            self.committed.notify_all();
        }
    }

    fn intent_finished(&self, id: ShardId) {
        lock(&self.commits).finished_intents.push(id);
    }

    /// Commits the forgetting of finished intents, so the next start has nothing to check.
    pub fn flush_intents(&self) -> Result<(), DiskIoError> {
        let finished = std::mem::take(&mut lock(&self.commits).finished_intents);
        if finished.is_empty() || self.failure().is_some() {
            return Ok(());
        }
        let (_, counters) = self
            .index
            .apply(&finished, &[])
            .map_err(|e| DiskIoError::index("committing the index", &e))?;
        *lock(&self.counters) = counters;
        Ok(())
    }
}

impl Drop for OpenDisk {
    fn drop(&mut self) {
        // Best effort: if it fails, the next start simply re-checks these few shards.
        let _ = self.flush_intents();
    }
}

/// Reconciles the index with the files after a crash: only shards with
/// intents and files in `tmp/` are looked at.
fn recover(fs: &dyn DiskFs, index: &Index) -> Result<Recovery, DiskIoError> {
    let mut recovery = Recovery::default();
    let intents = index
        .intents()
        .map_err(|e| DiskIoError::index("reading intents", &e))?;
    let mut drop = Vec::new();
    for (id, intent) in &intents {
        let io = |e| DiskIoError::new(format!("recovering shard {id}"), e);
        match intent {
            Intent::Put => {
                let Some(record) = index
                    .get(id)
                    .map_err(|e| DiskIoError::index("reading the index", &e))?
                else {
                    continue;
                };
                let intact = match fs.read(&shard_path(id)) {
                    Ok(bytes) => bytes.len() as u64 == record.len && ShardId::of(&bytes) == *id,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => return Err(io(e)),
                };
                if !intact {
                    // The write never reached its acknowledgement: forget it.
                    match fs.remove(&shard_path(id)) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(e)),
                        _ => {}
                    }
                    drop.push(*id);
                    recovery.dropped_puts += 1;
                }
            }
            Intent::Delete => {
                remove_files(fs, id).map_err(io)?;
                recovery.completed += 1;
            }
            Intent::Quarantine => {
                move_to_quarantine(fs, id).map_err(io)?;
                recovery.completed += 1;
            }
        }
    }
    let tmp_files = fs
        .list(TMP_DIR)
        .map_err(|e| DiskIoError::new("listing tmp/", e))?;
    for name in &tmp_files {
        fs.remove(&format!("{TMP_DIR}/{name}"))
            .map_err(|e| DiskIoError::new("cleaning tmp/", e))?;
    }
    recovery.tmp_removed = tmp_files.len();
    if !drop.is_empty() {
        for dir in drop
            .iter()
            .map(shard_dir)
            .collect::<std::collections::BTreeSet<_>>()
        {
            fs.sync_dir(&dir)
                .map_err(|e| DiskIoError::new("syncing shards/", e))?;
        }
    }
    if !tmp_files.is_empty() {
        fs.sync_dir(TMP_DIR)
            .map_err(|e| DiskIoError::new("syncing tmp/", e))?;
    }
    if !intents.is_empty() {
        index
            .finish_recovery(&drop)
            .map_err(|e| DiskIoError::index("committing recovery", &e))?;
    }
    Ok(recovery)
}

fn remove_files(fs: &dyn DiskFs, id: &ShardId) -> io::Result<()> {
    for (path, dir) in [
        (shard_path(id), shard_dir(id)),
        (quarantine_path(id), QUARANTINE_DIR.to_owned()),
    ] {
        match fs.remove(&path) {
            Ok(()) => fs.sync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn move_to_quarantine(fs: &dyn DiskFs, id: &ShardId) -> io::Result<()> {
    match fs.rename(&shard_path(id), &quarantine_path(id)) {
        Ok(()) => {
            fs.sync_dir(QUARANTINE_DIR)?;
            fs.sync_dir(&shard_dir(id))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, so a panic elsewhere does not poison it.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

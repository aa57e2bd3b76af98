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
//! The write path of a shard: write `tmp/<id>.<n>` (its writeback starts at
//! once, unsynced); join a group commit, whose leader runs one `syncfs` for
//! its whole batch alongside one index commit that records the shards with
//! put intents; link the file into `shards/`; acknowledge. At that point the
//! shard is durable under its temporary name, and the intent tells recovery
//! to restore the link if the crash came first. A later commit's sync makes
//! the links durable; only then are the intents forgotten and the tmp names
//! removed, so no put waits for a sync of `shards/`. Intents are keyed by
//! shard, so a later operation on the same shard (a delete, a put again)
//! takes the intent over: the earlier put's pending forget is then dropped.
//! After a crash only the shards with intents are checked, so start-up never
//! walks the shard files.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::fs::DiskFs;
use super::index::{Counters, Index, IndexOp, Intent, OpOutcome, ShardRecord, ShardState};
use cairn_host::lock;
use cairn_proto::ids::{DiskId, ShardId};

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

/// A put linked into place, waiting for a sync to make the link durable.
struct Linked {
    id: ShardId,
    /// Its name in `tmp/`, removed once the link is durable.
    tmp: String,
    /// Whether its intent is still its own to forget: false once a later
    /// operation on the same shard has written an intent of its own.
    forget: bool,
}

#[derive(Default)]
struct CommitQueue {
    waiting: Vec<(u64, IndexOp)>,
    /// Tickets of callers with no ops that wait for the next commit (see `flush_intents`).
    barriers: Vec<u64>,
    /// Puts linked into `shards/` whose links may not be durable yet, with
    /// their names in `tmp/`, which keep the data reachable until then.
    linked: Vec<Linked>,
    /// Puts whose renames a finished sync made durable: their intents can go.
    synced: Vec<ShardId>,
    /// Some waiting op records a shard whose file is not durable yet.
    needs_sync: bool,
    next_ticket: u64,
    leader_active: bool,
    results: HashMap<u64, Result<OpOutcome, Arc<redb::Error>>>,
}

/// What recovery at open found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Unfinished writes whose records were dropped (never acknowledged).
    pub dropped_puts: usize,
    /// Acknowledged shards found only under their temporary name and put in place.
    pub relinked: usize,
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
        let mut outcomes = self.put_many(&[(*id, bytes, record)])?;
        Ok(outcomes.pop().expect("one outcome per shard"))
    }

    /// Writes shards durably: all of them, and whatever other puts are
    /// waiting, share one file-system sync and one index commit. The caller
    /// holds every shard's lock and has verified their bytes.
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
        let ops = shards
            .iter()
            .map(|(id, _, record)| IndexOp::Insert(*id, *record))
            .collect();
        let outcomes = match self.commit_all(ops, true) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                cleanup(&tmps);
                let what = match shards {
                    [(id, _, _)] => format!("recording shard {id} in the index"),
                    _ => format!("recording {} shards in the index", shards.len()),
                };
                return Err(DiskIoError::index(what, &e));
            }
        };
        for ((id, _, _), (tmp, outcome)) in shards.iter().zip(tmps.into_iter().zip(&outcomes)) {
            match outcome {
                OpOutcome::Applied(old) => {
                    // Durable from here on: the file is synced under its tmp name, and the
                    // intent makes recovery put it in place if this link is lost.
                    self.link_into_place(id, &tmp)?;
                    if old.is_some_and(|old| old.state == ShardState::Quarantined) {
                        // The damaged copy is replaced by a verified one; it has served its purpose.
                        let _ = self.fs.remove(&quarantine_path(id));
                    }
                    self.intent_finished(*id, tmp);
                }
                OpOutcome::Claimed(_)
                | OpOutcome::Unchanged
                | OpOutcome::ClaimsFull
                | OpOutcome::Absent => {
                    let _ = self.fs.remove(&tmp);
                }
            }
        }
        Ok(outcomes)
    }

    /// Applies a claim's change ([`IndexOp::Insert`] of a shard already
    /// here, [`IndexOp::Release`], [`IndexOp::Expire`], [`IndexOp::Remove`]);
    /// when it took the last claim, the shard's files go too. The caller
    /// holds the shard's lock.
    pub fn change_claims(&self, op: IndexOp) -> Result<OpOutcome, DiskIoError> {
        let mut outcomes = self.change_claims_many(vec![op])?;
        Ok(outcomes.pop().expect("one outcome per op"))
    }

    /// [`OpenDisk::change_claims`] for many shards in one index commit (an
    /// eviction). The caller holds every shard's lock.
    pub fn change_claims_many(&self, ops: Vec<IndexOp>) -> Result<Vec<OpOutcome>, DiskIoError> {
        let ids: Vec<ShardId> = ops.iter().map(IndexOp::shard).collect();
        let outcomes = self.commit_all(ops, false).map_err(|e| {
            let what = match ids.as_slice() {
                [id] => format!("changing the claims on shard {id}"),
                _ => format!("changing the claims on {} shards", ids.len()),
            };
            DiskIoError::index(what, &e)
        })?;
        for (id, outcome) in ids.iter().zip(&outcomes) {
            if let OpOutcome::Applied(Some(_)) = outcome {
                remove_files(self.fs.as_ref(), id)
                    .map_err(|e| DiskIoError::new(format!("removing shard {id}"), e))?;
                self.intent_done(*id);
            }
        }
        Ok(outcomes)
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
        self.intent_done(*id);
        Ok(true)
    }

    /// Moves a shard's lease expiry. The caller holds the shard's lock.
    pub fn renew_lease(&self, id: &ShardId, expires: u64) -> Result<bool, DiskIoError> {
        let outcome = self
            .commit(IndexOp::RenewLease(*id, expires))
            .map_err(|e| DiskIoError::index(format!("renewing the lease of shard {id}"), &e))?;
        Ok(matches!(outcome, OpOutcome::Applied(_)))
    }

    /// Moves many shards' leases in one index commit; says for each
    /// whether this disk holds it.
    pub fn renew_leases(&self, ids: &[ShardId], expires: u64) -> Result<Vec<bool>, DiskIoError> {
        let ops = ids
            .iter()
            .map(|id| IndexOp::RenewLease(*id, expires))
            .collect();
        let outcomes = self.commit_all(ops, false).map_err(|e| {
            DiskIoError::index(format!("renewing the leases of {} shards", ids.len()), &e)
        })?;
        Ok(outcomes
            .iter()
            .map(|outcome| matches!(outcome, OpOutcome::Applied(_)))
            .collect())
    }

    /// Commits one change, sharing the commit with whatever other changes are
    /// waiting: the first caller to find no commit running becomes the leader
    /// and commits everyone's changes; the others wait for its result.
    fn commit(&self, op: IndexOp) -> Result<OpOutcome, Arc<redb::Error>> {
        let mut outcomes = self.commit_all(vec![op], false)?;
        Ok(outcomes.pop().expect("one outcome per op"))
    }

    /// Commits several changes in one transaction (shared with other waiting
    /// changes). `needs_sync`: the changes record files whose data and `tmp/`
    /// entries are not durable yet; the leader makes them durable with one
    /// `syncfs` for its whole batch, run alongside the index commit.
    fn commit_all(
        &self,
        ops: Vec<IndexOp>,
        needs_sync: bool,
    ) -> Result<Vec<OpOutcome>, Arc<redb::Error>> {
        let mut queue = lock(&self.commits);
        queue.needs_sync |= needs_sync;
        let first = queue.next_ticket;
        let barrier = ops.is_empty();
        // With no ops, one ticket that the next commit answers: "wait for a commit of my own".
        let count = ops.len().max(1) as u64;
        queue.next_ticket += count;
        if barrier {
            queue.barriers.push(first);
        }
        for (ticket, op) in (first..).zip(ops) {
            queue.waiting.push((ticket, op));
        }
        loop {
            if (first..first + count).all(|t| queue.results.contains_key(&t)) {
                let outcomes = (first..first + count)
                    .map(|t| queue.results.remove(&t).expect("checked above"))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(if barrier { Vec::new() } else { outcomes });
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
            let barriers = std::mem::take(&mut queue.barriers);
            let sync = std::mem::take(&mut queue.needs_sync);
            // Links made before this sync starts are durable once it ends.
            let linked = if sync {
                std::mem::take(&mut queue.linked)
            } else {
                Vec::new()
            };
            let forget = std::mem::take(&mut queue.synced);
            drop(queue);
            let ops: Vec<IndexOp> = batch.iter().map(|(_, op)| op.clone()).collect();
            // The sync and the commit need not be ordered: until a put is acknowledged,
            // recovery drops a record whose file did not survive.
            let (synced, committed) = if sync {
                std::thread::scope(|scope| {
                    let syncing = std::thread::Builder::new()
                        .name("cairn-syncfs".into())
                        .spawn_scoped(scope, || self.fs.sync_all());
                    let committed = self.index.apply(&forget, &ops);
                    let synced = match syncing {
                        Ok(thread) => thread
                            .join()
                            .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked"))),
                        // No thread to spare: sync here, after the commit.
                        Err(_) => self.fs.sync_all(),
                    };
                    (synced, committed)
                })
            } else {
                (Ok(()), self.index.apply(&forget, &ops))
            };
            queue = lock(&self.commits);
            // Intents are keyed by shard: one written by this commit replaces an
            // earlier operation's, so that operation's pending forget must not
            // remove it (its own operation forgets it when its files are durable).
            let rewritten: HashSet<ShardId> = match &committed {
                Ok((outcomes, _)) => batch
                    .iter()
                    .zip(outcomes)
                    .filter(|((_, op), outcome)| op.wrote_intent(outcome))
                    .map(|((_, op), _)| op.shard())
                    .collect(),
                Err(_) => HashSet::new(),
            };
            // On a failed sync they stay intents: the next start checks those shards.
            let durable_links = if synced.is_ok() { linked } else { Vec::new() };
            queue.synced.extend(
                durable_links
                    .iter()
                    .filter(|l| l.forget && !rewritten.contains(&l.id))
                    .map(|l| l.id),
            );
            if !rewritten.is_empty() {
                queue.synced.retain(|id| !rewritten.contains(id));
                for waiting in queue.linked.iter_mut() {
                    waiting.forget &= !rewritten.contains(&waiting.id);
                }
            }
            if committed.is_err() {
                queue.synced.extend(forget);
            }
            let result = synced.map_err(redb::Error::Io).and(committed);
            match result {
                Ok((outcomes, counters)) => {
                    *lock(&self.counters) = counters;
                    for ((ticket, _), outcome) in batch.iter().zip(outcomes) {
                        queue.results.insert(*ticket, Ok(outcome));
                    }
                    for ticket in barriers {
                        queue.results.insert(ticket, Ok(OpOutcome::Unchanged));
                    }
                }
                Err(error) => {
                    let error = Arc::new(error);
                    let tickets = batch.iter().map(|(ticket, _)| *ticket).chain(barriers);
                    for ticket in tickets {
                        queue.results.insert(ticket, Err(Arc::clone(&error)));
                    }
                }
            }
            queue.leader_active = false;
            self.committed.notify_all();
            // Off the acknowledgement's path: a tmp name left by a crash here
            // is removed at the next start (its link is durable already).
            if !durable_links.is_empty() {
                drop(queue);
                self.drop_tmp_names(&durable_links);
                queue = lock(&self.commits);
            }
        }
    }

    /// Gives a shard written to `tmp` its place in `shards/`. A stale file there
    /// (never acknowledged, left by a failed operation) is replaced.
    fn link_into_place(&self, id: &ShardId, tmp: &str) -> Result<(), DiskIoError> {
        let io = |e| DiskIoError::new(format!("moving shard {id} into place"), e);
        match self.fs.link(tmp, &shard_path(id)) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.fs.remove(&shard_path(id)).map_err(io)?;
                self.fs.link(tmp, &shard_path(id)).map_err(io)
            }
            other => other.map_err(io),
        }
    }

    /// Notes that a put's link is done; its tmp name goes, and its intent is
    /// forgotten, once a sync has made the link durable.
    fn intent_finished(&self, id: ShardId, tmp: String) {
        lock(&self.commits).linked.push(Linked {
            id,
            tmp,
            forget: true,
        });
    }

    /// Notes that an operation's file changes are durable: the next commit forgets its intent.
    fn intent_done(&self, id: ShardId) {
        lock(&self.commits).synced.push(id);
    }

    /// Removes tmp names whose shards now have durable links (best effort:
    /// whatever is left is removed at the next start).
    fn drop_tmp_names(&self, linked: &[Linked]) {
        for linked in linked {
            let _ = self.fs.remove(&linked.tmp);
        }
    }

    /// Makes every finished put durable in place and forgets its intent, so
    /// the next start has nothing to check: one commit with a sync moves the
    /// linked puts to "synced", a second forgets them.
    pub fn flush_intents(&self) -> Result<(), DiskIoError> {
        if self.failure().is_some() {
            return Ok(());
        }
        let pending = {
            let queue = lock(&self.commits);
            (!queue.linked.is_empty(), !queue.synced.is_empty())
        };
        let flush = |sync| {
            self.commit_all(Vec::new(), sync)
                .map(drop)
                .map_err(|e| DiskIoError::index("flushing the disk", &e))
        };
        match pending {
            (false, false) => Ok(()),
            (false, true) => flush(false),
            (true, _) => flush(true).and_then(|()| flush(false)),
        }
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
    let tmp_files = fs
        .list(TMP_DIR)
        .map_err(|e| DiskIoError::new("listing tmp/", e))?;
    let mut drop = Vec::new();
    let mut linked_into = std::collections::BTreeSet::new();
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
                let intact = |path: &str| match fs.read(path) {
                    Ok(bytes) => Ok(bytes.len() as u64 == record.len && ShardId::of(&bytes) == *id),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io(e)),
                };
                let mut found = intact(&shard_path(id))?;
                if !found {
                    // Acknowledged before its link was durable: make it again.
                    let prefix = format!("{}.", id.to_hex());
                    for name in tmp_files.iter().filter(|n| n.starts_with(&prefix)) {
                        let tmp = format!("{TMP_DIR}/{name}");
                        if intact(&tmp)? {
                            match fs.remove(&shard_path(id)) {
                                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                                    return Err(io(e));
                                }
                                _ => {}
                            }
                            fs.link(&tmp, &shard_path(id)).map_err(io)?;
                            linked_into.insert(shard_dir(id));
                            recovery.relinked += 1;
                            found = true;
                            break;
                        }
                    }
                }
                if !found {
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
    // The links made above are durable before their tmp names go.
    for dir in linked_into.into_iter().chain(drop.iter().map(shard_dir)) {
        fs.sync_dir(&dir)
            .map_err(|e| DiskIoError::new("syncing shards/", e))?;
    }
    for name in &tmp_files {
        fs.remove(&format!("{TMP_DIR}/{name}"))
            .map_err(|e| DiskIoError::new("cleaning tmp/", e))?;
    }
    recovery.tmp_removed = tmp_files.len();
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

/// Link first, unlink after the link is durable: a crash in between leaves
/// the file under both names, never under none.
fn move_to_quarantine(fs: &dyn DiskFs, id: &ShardId) -> io::Result<()> {
    match fs.link(&shard_path(id), &quarantine_path(id)) {
        Ok(()) => {}
        // Already linked by an earlier, interrupted attempt.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    fs.sync_dir(QUARANTINE_DIR)?;
    match fs.remove(&shard_path(id)) {
        Ok(()) => fs.sync_dir(&shard_dir(id)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

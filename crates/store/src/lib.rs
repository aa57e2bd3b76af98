//! The shard store: immutable, content-addressed shards on a pool of data disks.
//!
//! A shard is a blob (up to a few MiB) whose id is the BLAKE3 hash of its
//! bytes. [`ShardStore`] pools the data disks named in its [`StoreConfig`]:
//! each disk carries a marker naming this node, its own index and its shard
//! files, so it is self-describing and can move to another box
//! ([`ShardStore::adopt_disk`]).
//!
//! The promises, each guarded by tests:
//! - **Durable when acknowledged.** [`ShardStore::put`] returns only after the
//!   shard's bytes, its name and its index record are on stable storage.
//!   Concurrent puts share index commits.
//! - **Nothing corrupt is served.** Bytes are checked against the id before
//!   they are stored, and whole-shard reads are checked again before they are
//!   returned; a shard that fails is quarantined and reported, never served
//!   and never silently deleted.
//! - **Never write a disk that is not ours.** A disk whose marker names another
//!   node, or a known disk whose marker is gone (an empty mountpoint), is never
//!   written.
//! - **A failing disk does not take the node down.** An I/O error takes that
//!   disk out of service; the others keep serving, and the shards it held are
//!   reported through [`ShardStore::take_events`].
//! - **Start-up does not walk the shards.** Space is accounted incrementally in
//!   the index; after a crash only the writes that were in flight are checked.
//!
//! Methods block on disk I/O; the async daemon calls them from blocking threads.

mod config;
mod disk;
mod error;
pub mod fs;
mod index;
mod marker;
mod scrub;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use cairn_host::{lock, read, write};

pub use config::StoreConfig;
pub use disk::{Recovery, quarantine_path, shard_path};
pub use error::{DiskProblem, StoreError};
pub use index::{Claim, Claims, MAX_CLAIMS, ShardRecord, ShardState};
pub use marker::{FORMAT_VERSION, KnownDisks, Marker};
pub use scrub::{ScrubHandle, ScrubPacer, ScrubReport};

use disk::{DiskIoError, OpenDisk};
use fs::{Mount, Probe, RealMount};
use index::{IndexOp, OpOutcome};

use cairn_proto::ids::{DiskId, NodeId, OwnerId, ShardId};

/// A pool of data disks holding shards.
pub struct ShardStore {
    config: StoreConfig,
    /// Grows when a disk is attached at run time; a slot is replaced, never
    /// removed, so a scrub cursor's index stays meaningful.
    disks: RwLock<Vec<DiskSlot>>,
    locks: ShardLocks,
    events: Mutex<Vec<StoreEvent>>,
    /// Disks detached while the store ran: their return is news.
    detached: Mutex<HashSet<DiskId>>,
    attaching: Mutex<()>,
    scrub_cursor: Mutex<(usize, Option<ShardId>)>,
}

/// A disk's mountpoint and what became of it when it was last opened.
enum DiskSlot {
    Open(Arc<OpenDisk>),
    Unusable { path: PathBuf, problem: DiskProblem },
}

impl DiskSlot {
    fn path(&self) -> &std::path::Path {
        match self {
            DiskSlot::Open(disk) => &disk.path,
            DiskSlot::Unusable { path, .. } => path,
        }
    }
}

/// Whether a disk is serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskState {
    /// Serving reads and writes.
    Online,
    /// Failed an operation; out of service until it is detached and attached
    /// again (unplugged and plugged back in) or the node restarts.
    Failed(String),
    /// Not there right now (not mounted, path missing); never written.
    Offline(DiskProblem),
    /// Not this node's to use (foreign marker, foreign files, unknown format); never written.
    Refused(DiskProblem),
}

impl std::fmt::Display for DiskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskState::Online => f.write_str("online"),
            DiskState::Failed(why) => write!(f, "failed: {why}"),
            DiskState::Offline(why) => write!(f, "offline: {why}"),
            DiskState::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

/// One disk's figures, from the index counters and `statvfs` (never from a walk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStats {
    /// The mountpoint.
    pub path: PathBuf,
    /// The disk, if its marker was read.
    pub disk: Option<DiskId>,
    /// Whether it serves.
    pub state: DiskState,
    /// Size of its file system.
    pub capacity: u64,
    /// Bytes of shards it holds (quarantined ones included: they still take space).
    pub used: u64,
    /// Bytes a new shard may still take (after the reserve).
    pub free: u64,
    /// Shards it serves.
    pub shards: u64,
    /// Shards it has quarantined.
    pub quarantined: u64,
}

impl DiskStats {
    /// Bytes new shards may still take on these disks (a disk out of
    /// service counts none).
    pub fn free_of(disks: &[DiskStats]) -> u64 {
        disks.iter().map(|d| d.free).sum()
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The shard was written to this disk.
    Stored(DiskId),
    /// The shard was already there (its lease was extended if the new one is later).
    AlreadyStored(DiskId),
}

/// Most owners' rows read from one disk for [`ShardStore::usage`]: the
/// answer must fit one frame, and a box serving more owners than this shows
/// the rest when the largest are evicted.
pub const MAX_USAGE_ROWS: usize = 4096;

/// What one owner's claims on this node add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerUsage {
    /// The owner.
    pub owner: OwnerId,
    /// Bytes of the shards it claims (a shard claimed by two owners counts
    /// for each).
    pub bytes: u64,
    /// Shards it claims.
    pub shards: u64,
}

/// What a change of claims did on the disks that hold the shard.
#[derive(Debug, Default, Clone, Copy)]
struct Unclaimed {
    /// The last claim went, and the shard with it.
    gone: bool,
    /// A claim went; other owners keep the shard.
    released: bool,
}

impl Unclaimed {
    fn changed(&self) -> bool {
        self.gone || self.released
    }
}

/// A shard as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard.
    pub id: ShardId,
    /// The disk holding it.
    pub disk: DiskId,
    /// Its record.
    pub record: ShardRecord,
}

/// Something the steward (and the operator) must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A disk was taken out of service; the shards it held are lost to this node.
    DiskFailed {
        /// The disk.
        disk: DiskId,
        /// Its mountpoint.
        path: PathBuf,
        /// What went wrong.
        reason: String,
        /// The shards it held, if its index could still be read.
        lost: Option<Vec<ShardId>>,
    },
    /// A shard failed verification and was quarantined.
    ShardCorrupt {
        /// The shard.
        shard: ShardId,
        /// The disk.
        disk: DiskId,
    },
    /// A shard's file was missing although the index listed it; quarantined.
    ShardMissing {
        /// The shard.
        shard: ShardId,
        /// The disk.
        disk: DiskId,
    },
    /// A disk went away (unplugged or unmounted): its shards are not
    /// served until it comes back.
    DiskOffline {
        /// The disk.
        disk: DiskId,
        /// Its mountpoint.
        path: PathBuf,
        /// The shards it held, if its index could still be read.
        shards: Option<Vec<ShardId>>,
    },
    /// A disk that went away while this store ran is back in service.
    DiskBack {
        /// The disk.
        disk: DiskId,
        /// Its mountpoint.
        path: PathBuf,
        /// The shards it holds.
        shards: Option<Vec<ShardId>>,
    },
}

impl ShardStore {
    /// Opens the store on the disks named in `config`, initialising empty ones.
    /// Disks that cannot be used are reported by [`ShardStore::disk_stats`];
    /// the store opens as long as the node state directory is usable.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        let mounts: Vec<Box<dyn Mount>> = config
            .disks
            .iter()
            .map(|path| Box::new(RealMount::new(path.clone())) as Box<dyn Mount>)
            .collect();
        Self::open_mounts(config, mounts)
    }

    /// Opens the store on the given mounts (real or simulated); `config.disks` is ignored.
    pub fn open_mounts(
        config: StoreConfig,
        mounts: Vec<Box<dyn Mount>>,
    ) -> Result<Self, StoreError> {
        let state_error = |source| StoreError::StateDir {
            path: config.state_dir.clone(),
            source,
        };
        let mut known = KnownDisks::load(&config.state_dir).map_err(state_error)?;
        let mut known_changed = false;
        let mut disks = Vec::with_capacity(mounts.len());
        let mut seen: BTreeMap<DiskId, PathBuf> = BTreeMap::new();
        for mount in &mounts {
            let slot = match open_disk(&config, mount.as_ref(), &known) {
                Ok(disk) => match seen.get(&disk.id) {
                    Some(other) => DiskSlot::Unusable {
                        path: disk.path.clone(),
                        problem: DiskProblem::Duplicate {
                            path: disk.path.clone(),
                            disk: disk.id,
                            other: other.clone(),
                        },
                    },
                    None => {
                        seen.insert(disk.id, disk.path.clone());
                        known_changed |= known.record(disk.id, &disk.path);
                        DiskSlot::Open(Arc::new(disk))
                    }
                },
                Err(problem) => DiskSlot::Unusable {
                    path: mount.path().to_owned(),
                    problem,
                },
            };
            disks.push(slot);
        }
        if known_changed {
            known.save(&config.state_dir).map_err(state_error)?;
        }
        Ok(Self {
            config,
            disks: RwLock::new(disks),
            locks: ShardLocks::default(),
            events: Mutex::new(Vec::new()),
            detached: Mutex::new(HashSet::new()),
            attaching: Mutex::new(()),
            scrub_cursor: Mutex::new((0, None)),
        })
    }

    /// Makes a Cairn disk that belongs to another node belong to this one, by
    /// rewriting its marker. Its shards stay (they belong to their owners, not
    /// to a node). Call it before opening the store on that disk.
    pub fn adopt_disk(config: &StoreConfig, mount: &dyn Mount) -> Result<DiskId, StoreError> {
        Self::adopt_disk_of(config, mount, None)
    }

    /// Like [`ShardStore::adopt_disk`], but only a disk of `from` (whose
    /// marker names that node) whose marker names `owner` as its owner:
    /// what an owner's signed request may adopt without a shell.
    pub fn adopt_disk_of(
        config: &StoreConfig,
        mount: &dyn Mount,
        expect: Option<(&NodeId, &OwnerId)>,
    ) -> Result<DiskId, StoreError> {
        let path = mount.path().to_owned();
        let refuse = |reason: String| StoreError::Adopt {
            path: path.clone(),
            reason,
        };
        let fs = match mount.probe() {
            Ok(Probe::Cairn(fs)) => fs,
            Ok(_) => {
                return Err(refuse(
                    "it is not a Cairn disk (no cairn directory); nothing to adopt".into(),
                ));
            }
            Err(e) => return Err(refuse(format!("cannot read it: {e}"))),
        };
        let marker = Marker::read_from(fs.as_ref()).map_err(|e| refuse(e.to_string()))?;
        if marker.format > FORMAT_VERSION {
            return Err(refuse(format!(
                "its format {} is newer than this cairnd; upgrade first",
                marker.format
            )));
        }
        if let Some((from, owner)) = expect {
            if marker.node != *from {
                return Err(refuse(format!(
                    "it is node {}'s disk, not node {}'s",
                    marker.node.to_human(),
                    from.to_human()
                )));
            }
            if marker.owner.as_ref() != Some(owner) {
                return Err(refuse(
                    "its marker does not name this owner (a disk records its owner once its node is claimed); adopt it at the box with `cairnd adopt-disk`".into(),
                ));
            }
        }
        if marker.node != config.node {
            Marker {
                node: config.node,
                // Adopted at the shell (or by a factory reset), the disk's
                // next owner is whoever owns this node: recorded once it
                // is claimed. An owner's signed adoption keeps its owner.
                owner: expect.map(|(_, owner)| *owner),
                ..marker.clone()
            }
            .write_to(fs.as_ref())
            .map_err(|e| refuse(format!("writing the new marker failed: {e}")))?;
        }
        let mut known =
            KnownDisks::load(&config.state_dir).map_err(|source| StoreError::StateDir {
                path: config.state_dir.clone(),
                source,
            })?;
        if known.record(marker.disk, &path) {
            known
                .save(&config.state_dir)
                .map_err(|source| StoreError::StateDir {
                    path: config.state_dir.clone(),
                    source,
                })?;
        }
        Ok(marker.disk)
    }

    /// Writes `owner` into the marker of every disk in service that does
    /// not name it yet (a node claimed, transferred, or a disk plugged in
    /// since); returns how many were written. A disk that cannot be written
    /// is left for the next call.
    pub fn stamp_owner(&self, owner: &OwnerId) -> usize {
        let mut written = 0;
        for disk in self.online() {
            let Ok(marker) = Marker::read_from(disk.fs()) else {
                continue;
            };
            if marker.owner.as_ref() == Some(owner) || marker.node != self.config.node {
                continue;
            }
            let stamped = Marker {
                owner: Some(*owner),
                ..marker
            };
            if stamped.write_to(disk.fs()).is_ok() {
                written += 1;
            }
        }
        written
    }

    /// Takes a disk into service while the store runs: a data disk mounted
    /// after start-up, or one plugged back in. It is opened with the same
    /// checks as at start-up (an empty mountpoint of a known disk, a foreign
    /// marker, a duplicate are refused). Returns the disk's state afterwards,
    /// or `None` when a disk at that mountpoint is already open (a failed one
    /// must be detached first).
    pub fn attach(&self, mount: Box<dyn Mount>) -> Result<Option<DiskState>, StoreError> {
        let path = mount.path().to_owned();
        // Opening reads the disk's index, so it happens outside the slots'
        // lock; this one keeps two attaches from racing for one mountpoint.
        let _attaching = lock(&self.attaching);
        if read(&self.disks)
            .iter()
            .any(|slot| slot.path() == path && matches!(slot, DiskSlot::Open(_)))
        {
            return Ok(None);
        }
        let state_error = |source| StoreError::StateDir {
            path: self.config.state_dir.clone(),
            source,
        };
        let mut known = KnownDisks::load(&self.config.state_dir).map_err(state_error)?;
        let slot = match open_disk(&self.config, mount.as_ref(), &known) {
            Ok(disk) => {
                let other = read(&self.disks).iter().find_map(|slot| match slot {
                    DiskSlot::Open(open) if open.id == disk.id => Some(open.path.clone()),
                    _ => None,
                });
                match other {
                    Some(other) => DiskSlot::Unusable {
                        path: path.clone(),
                        problem: DiskProblem::Duplicate {
                            path: path.clone(),
                            disk: disk.id,
                            other,
                        },
                    },
                    None => {
                        if known.record(disk.id, &disk.path) {
                            known.save(&self.config.state_dir).map_err(state_error)?;
                        }
                        DiskSlot::Open(Arc::new(disk))
                    }
                }
            }
            Err(problem) => DiskSlot::Unusable {
                path: path.clone(),
                problem,
            },
        };
        let state = self.stats_of(&slot).state;
        if let DiskSlot::Open(disk) = &slot
            && lock(&self.detached).remove(&disk.id)
        {
            lock(&self.events).push(StoreEvent::DiskBack {
                disk: disk.id,
                path: path.clone(),
                shards: all_shards(disk),
            });
        }
        let mut disks = write(&self.disks);
        match disks.iter_mut().find(|existing| existing.path() == path) {
            Some(existing) => *existing = slot,
            None => disks.push(slot),
        }
        Ok(Some(state))
    }

    /// Takes the disk at `path` out of service because it is gone (unplugged
    /// or unmounted): the store stops using it at once, its files close as
    /// the last operation on it ends, and it is listed as offline with
    /// `reason`. Returns whether a disk was open there.
    pub fn detach(&self, path: &std::path::Path, reason: &str) -> bool {
        let gone = {
            let mut disks = write(&self.disks);
            let Some(slot) = disks.iter_mut().find(|slot| slot.path() == path) else {
                return false;
            };
            let unusable = DiskSlot::Unusable {
                path: path.to_owned(),
                problem: DiskProblem::Detached {
                    path: path.to_owned(),
                    reason: reason.to_owned(),
                },
            };
            match std::mem::replace(slot, unusable) {
                DiskSlot::Open(disk) => disk,
                _ => return false,
            }
        };
        // Its index may still be readable (its files are open): say which
        // shards went with it, so stewards rebuild only those. Read outside
        // the slots' lock: a dying disk may be slow to answer.
        lock(&self.detached).insert(gone.id);
        let shards = all_shards(&gone);
        lock(&self.events).push(StoreEvent::DiskOffline {
            disk: gone.id,
            path: path.to_owned(),
            shards,
        });
        true
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.config.node
    }

    /// Stores a shard durably. Verifies that `bytes` hash to `id` first; a
    /// duplicate put is acknowledged without writing; it adds `owner`'s
    /// claim, or moves its lease later, never earlier.
    pub fn put(
        &self,
        id: ShardId,
        bytes: &[u8],
        owner: OwnerId,
        lease_expires: u64,
    ) -> Result<PutOutcome, StoreError> {
        let len = bytes.len() as u64;
        if len > self.config.max_shard_bytes {
            return Err(StoreError::TooLarge {
                shard: id,
                len,
                limit: self.config.max_shard_bytes,
            });
        }
        let actual = ShardId::of(bytes);
        if actual != id {
            return Err(StoreError::HashMismatch {
                claimed: id,
                actual,
            });
        }
        let record = ShardRecord::stored(len, owner, lease_expires);
        let _guard = self.locks.lock(id);
        let mut quarantined_on = None;
        for disk in self.online() {
            match disk.record(&id) {
                Ok(Some(existing)) if existing.state == ShardState::Stored => {
                    self.add_claim(&disk, id, record)?;
                    return Ok(PutOutcome::AlreadyStored(disk.id));
                }
                Ok(Some(_)) => quarantined_on = Some(disk.id),
                Ok(None) => {}
                Err(e) => {
                    self.disk_failed(&disk, e);
                }
            }
        }
        let disk = self.choose_disk(id, len, quarantined_on)?;
        disk.reserved.fetch_add(len, Ordering::Relaxed);
        let result = disk.put(&id, bytes, record);
        disk.reserved.fetch_sub(len, Ordering::Relaxed);
        match result {
            Ok(OpOutcome::Applied(_)) => Ok(PutOutcome::Stored(disk.id)),
            Ok(_) => Ok(PutOutcome::AlreadyStored(disk.id)),
            Err(e) if e.is_out_of_space() => Err(StoreError::NoSpace {
                shard: id,
                len,
                detail: format!(
                    "disk {} ({}) reported: {}",
                    disk.id,
                    disk.path.display(),
                    e.source
                ),
            }),
            Err(e) => Err(self.disk_failed(&disk, e)),
        }
    }

    /// Stores many shards at once, durably, with one file-system sync and one
    /// index commit: for bulk work such as repair or migration. Every shard is
    /// verified first; if any fails, nothing is stored. Shards already present
    /// are acknowledged as [`PutOutcome::AlreadyStored`] (leases extended).
    pub fn put_many(
        &self,
        shards: &[(ShardId, &[u8])],
        owner: OwnerId,
        lease_expires: u64,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        for (id, bytes) in shards {
            let len = bytes.len() as u64;
            if len > self.config.max_shard_bytes {
                return Err(StoreError::TooLarge {
                    shard: *id,
                    len,
                    limit: self.config.max_shard_bytes,
                });
            }
            let actual = ShardId::of(bytes);
            if actual != *id {
                return Err(StoreError::HashMismatch {
                    claimed: *id,
                    actual,
                });
            }
        }
        // Locks are taken in id order, so two overlapping batches cannot deadlock.
        let mut order: Vec<usize> = (0..shards.len()).collect();
        order.sort_by_key(|&i| shards[i].0);
        order.dedup_by_key(|i| shards[*i].0);
        let _guards: Vec<ShardGuard<'_>> = order
            .iter()
            .map(|&i| self.locks.lock(shards[i].0))
            .collect();
        let mut outcomes: Vec<Option<PutOutcome>> = vec![None; shards.len()];
        let mut fresh = Vec::new();
        for &i in &order {
            let (id, bytes) = shards[i];
            let record = ShardRecord::stored(bytes.len() as u64, owner, lease_expires);
            let held = self
                .online()
                .into_iter()
                .find_map(|disk| match disk.record(&id) {
                    Ok(Some(r)) if r.state == ShardState::Stored => Some((disk, r)),
                    _ => None,
                });
            match held {
                Some((disk, _)) => {
                    self.add_claim(&disk, id, record)?;
                    outcomes[i] = Some(PutOutcome::AlreadyStored(disk.id));
                }
                None => fresh.push((id, bytes, record)),
            }
        }
        if !fresh.is_empty() {
            let total: u64 = fresh.iter().map(|(_, bytes, _)| bytes.len() as u64).sum();
            let disk = self.choose_disk(fresh[0].0, total, None)?;
            disk.reserved.fetch_add(total, Ordering::Relaxed);
            let result = disk.put_many(&fresh);
            disk.reserved.fetch_sub(total, Ordering::Relaxed);
            let results = match result {
                Ok(results) => results,
                Err(e) if e.is_out_of_space() => {
                    return Err(StoreError::NoSpace {
                        shard: fresh[0].0,
                        len: total,
                        detail: format!(
                            "disk {} ({}) reported: {}",
                            disk.id,
                            disk.path.display(),
                            e.source
                        ),
                    });
                }
                Err(e) => return Err(self.disk_failed(&disk, e)),
            };
            let mut results = fresh.iter().zip(results);
            for &i in &order {
                if outcomes[i].is_none() {
                    let (_, outcome) = results.next().expect("one result per fresh shard");
                    outcomes[i] = Some(match outcome {
                        OpOutcome::Applied(_) => PutOutcome::Stored(disk.id),
                        _ => PutOutcome::AlreadyStored(disk.id),
                    });
                }
            }
        }
        // A repeated id in the batch shares the outcome of its first occurrence.
        let by_id: std::collections::HashMap<ShardId, PutOutcome> = order
            .iter()
            .filter_map(|&i| Some((shards[i].0, outcomes[i]?)))
            .collect();
        Ok(shards.iter().map(|(id, _)| by_id[id]).collect())
    }

    /// Reads a whole shard, verified against its id. A copy that fails is
    /// quarantined, reported, and not returned.
    pub fn get(&self, id: ShardId) -> Result<Vec<u8>, StoreError> {
        let (disk, record) = self.find(id)?;
        let bytes = match disk.fs().read(&shard_path(&id)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.missing_file(&disk, id));
            }
            Err(e) => {
                return Err(self.disk_failed(
                    &disk,
                    DiskIoError {
                        doing: format!("reading shard {id}"),
                        source: e,
                    },
                ));
            }
        };
        if bytes.len() as u64 != record.len || ShardId::of(&bytes) != id {
            return Err(self.quarantine(
                &disk,
                id,
                StoreEvent::ShardCorrupt {
                    shard: id,
                    disk: disk.id,
                },
            ));
        }
        Ok(bytes)
    }

    /// Reads `len` bytes of a shard from `offset`. Ranges are not verified
    /// here (a range cannot be checked against the id alone); callers verify
    /// them with the shard's Merkle proof, and scrub checks whole shards.
    pub fn get_range(&self, id: ShardId, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let (disk, record) = self.find(id)?;
        if offset.checked_add(len).is_none_or(|end| end > record.len) {
            return Err(StoreError::RangeOutOfBounds {
                shard: id,
                offset,
                len,
                shard_len: record.len,
            });
        }
        match disk.fs().read_at(&shard_path(&id), offset, len as usize) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.missing_file(&disk, id)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.quarantine(
                &disk,
                id,
                StoreEvent::ShardCorrupt {
                    shard: id,
                    disk: disk.id,
                },
            )),
            Err(e) => Err(self.disk_failed(
                &disk,
                DiskIoError {
                    doing: format!("reading shard {id}"),
                    source: e,
                },
            )),
        }
    }

    /// The record of a shard, if an online disk holds it (in any state).
    pub fn record(&self, id: ShardId) -> Option<(DiskId, ShardRecord)> {
        self.online().into_iter().find_map(|disk| {
            disk.record(&id)
                .ok()
                .flatten()
                .map(|record| (disk.id, record))
        })
    }

    /// Deletes a shard (including a quarantined copy) and every claim on it.
    /// Returns whether it was there. Authorisation is checked by the caller.
    pub fn delete(&self, id: ShardId) -> Result<bool, StoreError> {
        let _guard = self.locks.lock(id);
        Ok(self.unclaim_locked(IndexOp::Remove(id))?.gone)
    }

    /// Drops `owner`'s claim on a shard; the shard goes when no claim is
    /// left. Returns whether `owner` had a claim. The owner's signature is
    /// checked by the caller: nobody's delete touches another owner's claim.
    pub fn release(&self, id: ShardId, owner: OwnerId) -> Result<bool, StoreError> {
        let _guard = self.locks.lock(id);
        Ok(self.unclaim_locked(IndexOp::Release(id, owner))?.changed())
    }

    /// What `owner`'s claims on the online disks add up to.
    pub fn owner_usage(&self, owner: &OwnerId) -> Result<OwnerUsage, StoreError> {
        let mut usage = OwnerUsage {
            owner: *owner,
            bytes: 0,
            shards: 0,
        };
        for disk in self.online() {
            let (bytes, shards) = disk
                .index()
                .owner_usage(owner)
                .map_err(|e| self.index_failed(&disk, "reading an owner's use", e))?;
            usage.bytes += bytes;
            usage.shards += shards;
        }
        Ok(usage)
    }

    /// Every owner with a claim here and what its claims add up to, largest
    /// first, at most `limit` owners (each disk is read up to
    /// [`MAX_USAGE_ROWS`] owners).
    pub fn usage(&self, limit: usize) -> Result<Vec<OwnerUsage>, StoreError> {
        let mut all: BTreeMap<OwnerId, OwnerUsage> = BTreeMap::new();
        for disk in self.online() {
            let rows = disk
                .index()
                .usage(MAX_USAGE_ROWS)
                .map_err(|e| self.index_failed(&disk, "listing owners' use", e))?;
            for (owner, bytes, shards) in rows {
                let entry = all.entry(owner).or_insert(OwnerUsage {
                    owner,
                    bytes: 0,
                    shards: 0,
                });
                entry.bytes += bytes;
                entry.shards += shards;
            }
        }
        let mut all: Vec<OwnerUsage> = all.into_values().collect();
        all.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.owner.cmp(&b.owner)));
        all.truncate(limit);
        Ok(all)
    }

    /// Drops up to `limit` of `owner`'s claims here (the box's owner evicting
    /// it); shards no other owner claims are deleted. Returns how many claims
    /// went and the shards deleted with them (call again until no claim
    /// goes).
    pub fn evict(
        &self,
        owner: &OwnerId,
        limit: usize,
    ) -> Result<(usize, Vec<ShardId>), StoreError> {
        let mut released = 0;
        let mut gone = Vec::new();
        for disk in self.online() {
            let ids = disk
                .index()
                .owner_shards(owner, limit - released)
                .map_err(|e| self.index_failed(&disk, "listing an owner's shards", e))?;
            // One commit for the page: an eviction of thousands of claims
            // must not cost thousands of syncs. Locks in id order (the
            // page is sorted), as put_many takes them.
            let _guards: Vec<ShardGuard<'_>> = ids.iter().map(|id| self.locks.lock(*id)).collect();
            let ops = ids.iter().map(|id| IndexOp::Release(*id, *owner)).collect();
            let outcomes = disk
                .change_claims_many(ops)
                .map_err(|e| self.disk_failed(&disk, e))?;
            for (id, outcome) in ids.iter().zip(outcomes) {
                match outcome {
                    OpOutcome::Applied(Some(_)) => {
                        released += 1;
                        gone.push(*id);
                    }
                    OpOutcome::Claimed(_) => released += 1,
                    _ => {}
                }
            }
            if released >= limit {
                break;
            }
        }
        Ok((released, gone))
    }

    /// Extends a shard's lease to `expires` (unix seconds); an earlier time
    /// changes nothing. Returns whether the shard is here.
    pub fn renew_lease(&self, id: ShardId, expires: u64) -> Result<bool, StoreError> {
        let _guard = self.locks.lock(id);
        for disk in self.online() {
            if disk
                .record(&id)
                .map_err(|e| self.disk_failed(&disk, e))?
                .is_some()
            {
                return disk
                    .renew_lease(&id, expires)
                    .map_err(|e| self.disk_failed(&disk, e));
            }
        }
        Ok(false)
    }

    /// Moves many shards' leases (a steward's batch), one index commit per
    /// disk; says for each shard whether this node holds it. Leases only
    /// grow, and the index applies each move atomically, so no shard lock
    /// is needed: a put or delete racing with it sees the lease before or
    /// after.
    pub fn renew_leases(&self, ids: &[ShardId], expires: u64) -> Result<Vec<bool>, StoreError> {
        let mut found = vec![false; ids.len()];
        for disk in self.online() {
            let mut here = Vec::new();
            let mut at = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if !found[i]
                    && disk
                        .record(id)
                        .map_err(|e| self.disk_failed(&disk, e))?
                        .is_some()
                {
                    here.push(*id);
                    at.push(i);
                }
            }
            if here.is_empty() {
                continue;
            }
            let renewed = disk
                .renew_leases(&here, expires)
                .map_err(|e| self.disk_failed(&disk, e))?;
            for (i, ok) in at.into_iter().zip(renewed) {
                found[i] = ok;
            }
        }
        Ok(found)
    }

    /// Drops the claims whose lease ended at or before `now` (unix seconds)
    /// on up to `limit` shards, and deletes the shards left with none.
    /// Returns how many shards were deleted.
    pub fn collect_expired(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        let mut collected = 0;
        for disk in self.online() {
            let expired = disk.index().expired(now, limit - collected).map_err(|e| {
                self.disk_failed(
                    &disk,
                    DiskIoError {
                        doing: "scanning leases".into(),
                        source: std::io::Error::other(e.to_string()),
                    },
                )
            })?;
            for id in expired {
                let _guard = self.locks.lock(id);
                // The lease may have been renewed since the scan; a claim
                // that ended goes, and the shard with its last claim.
                if self.unclaim_locked(IndexOp::Expire(id, now))?.gone {
                    collected += 1;
                }
            }
            if collected >= limit {
                break;
            }
        }
        Ok(collected)
    }

    /// Up to `limit` shards in id order after `after`, across all online disks.
    pub fn list(&self, after: Option<ShardId>, limit: usize) -> Result<Vec<ShardInfo>, StoreError> {
        let mut all = Vec::new();
        for disk in self.online() {
            let page = disk.index().page(after, limit).map_err(|e| {
                self.disk_failed(
                    &disk,
                    DiskIoError {
                        doing: "listing shards".into(),
                        source: std::io::Error::other(e.to_string()),
                    },
                )
            })?;
            all.extend(page.into_iter().map(|(id, record)| ShardInfo {
                id,
                disk: disk.id,
                record,
            }));
        }
        all.sort_by_key(|info| info.id);
        all.truncate(limit);
        Ok(all)
    }

    /// Figures for every configured disk.
    pub fn disk_stats(&self) -> Vec<DiskStats> {
        read(&self.disks)
            .iter()
            .map(|slot| self.stats_of(slot))
            .collect()
    }

    /// Events (lost shards, corrupt shards) since the last call.
    pub fn take_events(&self) -> Vec<StoreEvent> {
        std::mem::take(&mut *lock(&self.events))
    }

    /// Makes every finished write durable in its final place and forgets its
    /// intent, so that a restart has nothing to check and `tmp/` is empty.
    /// Puts are durable without it; the daemon calls it when idle.
    pub fn flush(&self) -> Result<(), StoreError> {
        for disk in self.online() {
            if let Err(e) = disk.flush_intents() {
                return Err(self.disk_failed(&disk, e));
            }
        }
        Ok(())
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The disks serving now. A snapshot: a disk detached meanwhile stays
    /// usable by whoever holds it (its operations fail once it is gone).
    fn online(&self) -> Vec<Arc<OpenDisk>> {
        read(&self.disks)
            .iter()
            .filter_map(|slot| match slot {
                DiskSlot::Open(disk) if disk.failure().is_none() => Some(Arc::clone(disk)),
                _ => None,
            })
            .collect()
    }

    /// Finds the disk serving a shard, preferring a good copy over a quarantined one.
    fn find(&self, id: ShardId) -> Result<(Arc<OpenDisk>, ShardRecord), StoreError> {
        let mut quarantined = None;
        let online = self.online();
        for disk in &online {
            match disk.record(&id) {
                Ok(Some(record)) if record.state == ShardState::Stored => {
                    return Ok((Arc::clone(disk), record));
                }
                Ok(Some(_)) => quarantined = Some(disk),
                Ok(None) => {}
                Err(e) => {
                    self.disk_failed(disk, e);
                }
            }
        }
        if let Some(disk) = quarantined {
            return Err(StoreError::Corrupt {
                shard: id,
                disk: disk.id,
                path: disk.path.clone(),
            });
        }
        let out_of_service = read(&self.disks).len() - online.len();
        Err(StoreError::NotFound {
            shard: id,
            note: if out_of_service > 0 {
                format!(
                    " (not on any online disk; {out_of_service} disk(s) out of service might hold it)"
                )
            } else {
                String::new()
            },
        })
    }

    /// A listed shard's file is gone. Unless a concurrent delete explains it, quarantine and report.
    fn missing_file(&self, disk: &OpenDisk, id: ShardId) -> StoreError {
        let _guard = self.locks.lock(id);
        match disk.record(&id) {
            Ok(Some(record)) if record.state == ShardState::Stored => {
                match disk.fs().exists(&shard_path(&id)) {
                    Ok(false) => self.quarantine_locked(
                        disk,
                        id,
                        StoreEvent::ShardMissing {
                            shard: id,
                            disk: disk.id,
                        },
                    ),
                    // It was being written or moved while we looked: not lost.
                    _ => StoreError::NotFound {
                        shard: id,
                        note: " (it was being changed; try again)".into(),
                    },
                }
            }
            _ => StoreError::NotFound {
                shard: id,
                note: String::new(),
            },
        }
    }

    fn quarantine(&self, disk: &OpenDisk, id: ShardId, event: StoreEvent) -> StoreError {
        let _guard = self.locks.lock(id);
        self.quarantine_locked(disk, id, event)
    }

    fn quarantine_locked(&self, disk: &OpenDisk, id: ShardId, event: StoreEvent) -> StoreError {
        match disk.quarantine(&id) {
            Ok(newly) => {
                if newly {
                    lock(&self.events).push(event);
                }
                StoreError::Corrupt {
                    shard: id,
                    disk: disk.id,
                    path: disk.path.clone(),
                }
            }
            Err(e) => self.disk_failed(disk, e),
        }
    }

    /// Applies a change of claims on every online disk that holds the shard.
    /// The caller holds the shard's lock.
    fn unclaim_locked(&self, op: IndexOp) -> Result<Unclaimed, StoreError> {
        let id = op.shard();
        let mut result = Unclaimed::default();
        for disk in self.online() {
            if disk
                .record(&id)
                .map_err(|e| self.disk_failed(&disk, e))?
                .is_none()
            {
                continue;
            }
            match disk
                .change_claims(op.clone())
                .map_err(|e| self.disk_failed(&disk, e))?
            {
                OpOutcome::Applied(Some(_)) => result.gone = true,
                OpOutcome::Claimed(_) => result.released = true,
                _ => {}
            }
        }
        Ok(result)
    }

    /// A duplicate put adds its owner's claim (or moves its lease later).
    fn add_claim(
        &self,
        disk: &OpenDisk,
        id: ShardId,
        record: ShardRecord,
    ) -> Result<(), StoreError> {
        match disk
            .change_claims(IndexOp::Insert(id, record))
            .map_err(|e| self.disk_failed(disk, e))?
        {
            OpOutcome::ClaimsFull => Err(StoreError::ClaimsFull {
                shard: id,
                limit: MAX_CLAIMS,
            }),
            _ => Ok(()),
        }
    }

    fn index_failed(&self, disk: &OpenDisk, doing: &str, e: redb::Error) -> StoreError {
        self.disk_failed(
            disk,
            DiskIoError {
                doing: doing.into(),
                source: std::io::Error::other(e.to_string()),
            },
        )
    }

    fn choose_disk(
        &self,
        id: ShardId,
        len: u64,
        prefer: Option<DiskId>,
    ) -> Result<Arc<OpenDisk>, StoreError> {
        if let Some(quota) = self.config.quota_bytes {
            let used: u64 = read(&self.disks)
                .iter()
                .filter_map(|slot| match slot {
                    DiskSlot::Open(disk) => {
                        let c = disk.counters();
                        Some(c.bytes + c.quarantined_bytes + disk.reserved.load(Ordering::Relaxed))
                    }
                    DiskSlot::Unusable { .. } => None,
                })
                .sum();
            if used + len > quota {
                return Err(StoreError::QuotaExceeded {
                    shard: id,
                    len,
                    used,
                    quota,
                });
            }
        }
        let mut best: Option<(Arc<OpenDisk>, u64)> = None;
        let mut detail = Vec::new();
        for disk in self.online() {
            let free = match self.free_bytes(&disk) {
                Ok(free) => free,
                Err(e) => {
                    self.disk_failed(&disk, e);
                    continue;
                }
            };
            detail.push(format!(
                "{} has {free} bytes free after the reserve",
                disk.path.display()
            ));
            if free < len {
                continue;
            }
            if prefer == Some(disk.id) {
                return Ok(disk);
            }
            // Disks sharing one file system report the same free space: then the emptier one wins.
            let used = disk.counters().bytes;
            if best.as_ref().is_none_or(|(other, most)| {
                free > *most || (free == *most && used < other.counters().bytes)
            }) {
                best = Some((disk, free));
            }
        }
        if let Some((disk, _)) = best {
            return Ok(disk);
        }
        if detail.is_empty() {
            return Err(StoreError::NoDisks {
                summary: self.summary(),
            });
        }
        Err(StoreError::NoSpace {
            shard: id,
            len,
            detail: detail.join(", "),
        })
    }

    fn free_bytes(&self, disk: &OpenDisk) -> Result<u64, DiskIoError> {
        let space = disk.fs().space().map_err(|source| DiskIoError {
            doing: "reading free space".into(),
            source,
        })?;
        Ok(space
            .available
            .saturating_sub(self.config.reserve_bytes)
            .saturating_sub(disk.reserved.load(Ordering::Relaxed)))
    }

    /// Takes a disk out of service after an I/O error and reports its shards lost.
    fn disk_failed(&self, disk: &OpenDisk, error: DiskIoError) -> StoreError {
        let reason = format!("{}: {}", error.doing, error.source);
        if disk.mark_failed(reason.clone()) {
            let lost = all_shards(disk);
            lock(&self.events).push(StoreEvent::DiskFailed {
                disk: disk.id,
                path: disk.path.clone(),
                reason,
                lost,
            });
        }
        StoreError::DiskFailed {
            disk: disk.id,
            path: disk.path.clone(),
            doing: error.doing,
            source: error.source,
        }
    }

    fn stats_of(&self, slot: &DiskSlot) -> DiskStats {
        match slot {
            DiskSlot::Open(disk) => {
                let counters = disk.counters();
                let failure = disk.failure();
                let space = if failure.is_none() {
                    disk.fs().space().ok()
                } else {
                    None
                };
                DiskStats {
                    path: disk.path.clone(),
                    disk: Some(disk.id),
                    state: failure.map_or(DiskState::Online, DiskState::Failed),
                    capacity: space.map_or(0, |s| s.total),
                    used: counters.bytes + counters.quarantined_bytes,
                    free: space
                        .map_or(0, |s| s.available.saturating_sub(self.config.reserve_bytes)),
                    shards: counters.shards,
                    quarantined: counters.quarantined,
                }
            }
            DiskSlot::Unusable { path, problem } => DiskStats {
                path: path.clone(),
                disk: None,
                state: match problem {
                    DiskProblem::PathMissing { .. }
                    | DiskProblem::MarkerMissing { .. }
                    | DiskProblem::Detached { .. } => DiskState::Offline(problem.clone()),
                    DiskProblem::Io { .. } => DiskState::Failed(problem.to_string()),
                    _ => DiskState::Refused(problem.clone()),
                },
                capacity: 0,
                used: 0,
                free: 0,
                shards: 0,
                quarantined: 0,
            },
        }
    }

    fn summary(&self) -> String {
        self.disk_stats()
            .iter()
            .map(|s| format!("{}: {}", s.path.display(), s.state))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Opens one configured disk, or says why it cannot be used.
fn open_disk(
    config: &StoreConfig,
    mount: &dyn Mount,
    known: &KnownDisks,
) -> Result<OpenDisk, DiskProblem> {
    let path = mount.path().to_owned();
    let io_problem = |doing: &str, error: &dyn std::fmt::Display| DiskProblem::Io {
        path: path.clone(),
        doing: doing.to_owned(),
        error: error.to_string(),
    };
    let fs = match mount
        .probe()
        .map_err(|e| io_problem("looking at the mountpoint", &e))?
    {
        Probe::Missing => return Err(DiskProblem::PathMissing { path }),
        Probe::NotEmpty => return Err(DiskProblem::NotEmpty { path }),
        Probe::Empty => {
            if let Some(disk) = known.at_path(&path) {
                return Err(DiskProblem::MarkerMissing {
                    path: path.clone(),
                    disk: disk.id.parse().unwrap_or(DiskId([0; 16])),
                });
            }
            let fs = mount
                .create_cairn_dir()
                .map_err(|e| io_problem("creating the cairn directory", &e))?;
            initialise(config, fs.as_ref()).map_err(|e| io_problem("initialising the disk", &e))?;
            fs
        }
        Probe::Cairn(fs) => fs,
    };
    let marker = match Marker::read_from(fs.as_ref()) {
        Ok(marker) => marker,
        Err(marker::MarkerError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            // A cairn directory without a marker: initialisation was cut short, or someone deleted it.
            let names = fs
                .list("")
                .map_err(|e| io_problem("listing the cairn directory", &e))?;
            if names.is_empty() && known.at_path(&path).is_none() {
                initialise(config, fs.as_ref())
                    .map_err(|e| io_problem("initialising the disk", &e))?;
                Marker::read_from(fs.as_ref())
                    .map_err(|e| io_problem("reading the new marker", &e))?
            } else {
                return Err(DiskProblem::MarkerUnreadable {
                    path,
                    reason:
                        "the cairn directory has no marker.toml; if this is your disk, restore the \
                             marker or adopt the disk"
                            .into(),
                });
            }
        }
        Err(e) => {
            return Err(DiskProblem::MarkerUnreadable {
                path,
                reason: e.to_string(),
            });
        }
    };
    if marker.format > FORMAT_VERSION {
        return Err(DiskProblem::FormatTooNew {
            path,
            format: marker.format,
            supported: FORMAT_VERSION,
        });
    }
    if marker.node != config.node {
        return Err(DiskProblem::ForeignMarker {
            path,
            owner: marker.node,
            this: config.node,
        });
    }
    let (disk, _recovery) = OpenDisk::open(marker.disk, path.clone(), fs, config.index_cache_bytes)
        .map_err(|e| io_problem(&e.doing, &e.source))?;
    Ok(disk)
}

/// Writes a fresh disk's marker, then its layout (a layout is re-checked at every open).
fn initialise(config: &StoreConfig, fs: &dyn fs::DiskFs) -> std::io::Result<()> {
    Marker {
        format: FORMAT_VERSION,
        node: config.node,
        disk: DiskId::random(),
        owner: None,
    }
    .write_to(fs)?;
    OpenDisk::create_layout(fs)
}

/// Every shard a disk's index lists, if it can still be read.
fn all_shards(disk: &OpenDisk) -> Option<Vec<ShardId>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = disk.index().page(after, 10_000).ok()?;
        let Some((last, _)) = page.last() else {
            return Some(out);
        };
        after = Some(*last);
        out.extend(page.iter().map(|(id, _)| *id));
    }
}

/// Serialises operations on the same shard (a put and a delete of one id,
/// two puts of one id), while different shards proceed in parallel.
#[derive(Default)]
struct ShardLocks {
    held: Mutex<HashSet<ShardId>>,
    released: Condvar,
}

struct ShardGuard<'a> {
    locks: &'a ShardLocks,
    id: ShardId,
}

impl ShardLocks {
    fn lock(&self, id: ShardId) -> ShardGuard<'_> {
        let mut held = lock(&self.held);
        while !held.insert(id) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        ShardGuard { locks: self, id }
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        lock(&self.locks.held).remove(&self.id);
        self.locks.released.notify_all();
    }
}

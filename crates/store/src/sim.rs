//! A simulated disk that knows which bytes a sync made durable.
//!
//! Tests use it the way redb's own tests use their fault-injecting backend:
//! run the store on it, make the N-th write or sync fail as if the power went
//! out, throw away whatever was not made durable, reopen, and check that
//! nothing acknowledged was lost and nothing corrupt is served. With a seed,
//! the crash also keeps a random part of the unsynced work (a random prefix of
//! an unsynced file, some unsynced index pages, some directories' unsynced
//! entries), as a real disk may. It can also fail every operation with an I/O
//! error, or look unmounted.
//!
//! The model is deliberately stricter than ext4: a rename or create is only
//! durable once its directory is synced, and unsynced file data may be torn.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{DiskFs, IndexBackend, Mount, Probe, Space};

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// A simulated data disk: both the mountpoint and the cairn directory on it.
#[derive(Clone)]
pub struct SimDisk {
    path: PathBuf,
    state: Arc<Mutex<SimState>>,
}

#[derive(Default)]
struct SimState {
    mounted: bool,
    files: HashMap<u64, SimFile>,
    next_file: u64,
    dirs: BTreeMap<String, SimDir>,
    indexes: HashMap<String, SimIndex>,
    capacity: u64,
    steps: u64,
    crash_at: Option<u64>,
    crashed: bool,
    io_errors: bool,
}

#[derive(Default)]
struct SimFile {
    durable: Vec<u8>,
    written: Vec<u8>,
}

#[derive(Default, Clone)]
struct SimDir {
    durable_exists: bool,
    durable: BTreeMap<String, u64>,
    entries: BTreeMap<String, u64>,
}

#[derive(Default)]
struct SimIndex {
    durable: Vec<u8>,
    written: Vec<u8>,
    unsynced: Vec<IndexChange>,
}

enum IndexChange {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

impl SimDisk {
    /// A mounted, empty disk of `capacity` bytes, shown in messages as `path`.
    pub fn new(path: impl Into<PathBuf>, capacity: u64) -> Self {
        let state = SimState {
            mounted: true,
            capacity,
            ..SimState::default()
        };
        Self {
            path: path.into(),
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// How many writes and syncs the disk has seen; crash points count in these steps.
    pub fn steps(&self) -> u64 {
        self.lock().steps
    }

    /// Makes step number `step` (counting from the current count) fail as a power
    /// cut would: it and everything after it fail until [`SimDisk::crash`].
    pub fn crash_after(&self, steps_from_now: u64) {
        let mut state = self.lock();
        state.crash_at = Some(state.steps + steps_from_now + 1);
    }

    /// Whether the power cut set by [`SimDisk::crash_after`] has happened.
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Loses everything that was not made durable and brings the disk back.
    /// With `Some(seed)`, some unsynced work survives, chosen by the seed.
    pub fn crash(&self, keep_some_unsynced: Option<u64>) {
        let mut state = self.lock();
        let mut rng = keep_some_unsynced.map(SplitMix::new);
        let coin = |rng: &mut Option<SplitMix>| rng.as_mut().is_some_and(|r| r.next() & 1 == 1);

        let dir_names: Vec<String> = state.dirs.keys().cloned().collect();
        for name in dir_names {
            let keep_unsynced = coin(&mut rng);
            let dir = state.dirs.get_mut(&name).expect("listed above");
            if keep_unsynced {
                dir.durable_exists = true;
                dir.durable = dir.entries.clone();
            }
            if !dir.durable_exists {
                state.dirs.remove(&name);
                continue;
            }
            dir.entries = dir.durable.clone();
        }
        for file in state.files.values_mut() {
            if file.written != file.durable {
                if let Some(r) = rng.as_mut().filter(|_| file.durable.is_empty()) {
                    let keep = (r.next() % (file.written.len() as u64 + 1)) as usize;
                    file.durable = file.written[..keep].to_vec();
                }
                file.written = file.durable.clone();
            }
        }
        for index in state.indexes.values_mut() {
            for change in std::mem::take(&mut index.unsynced) {
                if !coin(&mut rng) {
                    continue;
                }
                match change {
                    IndexChange::Write(offset, data) => {
                        write_into(&mut index.durable, offset, &data)
                    }
                    IndexChange::SetLen(len) => index.durable.resize(len as usize, 0),
                }
            }
            index.written = index.durable.clone();
        }
        state.crashed = false;
        state.crash_at = None;
    }

    /// Makes every operation fail with an I/O error (`true`), as a dying disk does.
    pub fn set_io_errors(&self, failing: bool) {
        self.lock().io_errors = failing;
    }

    /// Unmounts (the mountpoint looks empty) or mounts the disk again.
    pub fn set_mounted(&self, mounted: bool) {
        self.lock().mounted = mounted;
    }

    /// Flips one bit of a file's bytes, durably: bitrot.
    pub fn flip_bit(&self, path: &str, byte: usize) {
        let mut state = self.lock();
        let (dir, name) = split(path);
        let file = state.dirs[dir].entries[name];
        let file = state.files.get_mut(&file).expect("entry points at a file");
        file.written[byte] ^= 0x10;
        file.durable[byte] ^= 0x10;
    }

    /// Names in a directory, for tests that look at what is on the disk.
    pub fn names(&self, dir: &str) -> Vec<String> {
        self.lock()
            .dirs
            .get(dir)
            .map(|d| d.entries.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The bytes of every file on the disk, for privacy checks.
    pub fn all_file_bytes(&self) -> Vec<Vec<u8>> {
        self.lock()
            .files
            .values()
            .map(|f| f.written.clone())
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A test thread that panicked while holding the lock leaves nothing half-done worth guarding.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SimState {
    /// Counts one write or sync, failing it if the power is (now) out.
    fn step(&mut self) -> io::Result<()> {
        self.check()?;
        self.steps += 1;
        if self.crash_at == Some(self.steps) {
            self.crashed = true;
        }
        self.check()
    }

    fn check(&self) -> io::Result<()> {
        if self.io_errors {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        if self.crashed {
            return Err(io::Error::other("simulated power cut"));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        let files: usize = self.files.values().map(|f| f.written.len()).sum();
        let indexes: usize = self.indexes.values().map(|i| i.written.len()).sum();
        (files + indexes) as u64
    }

    fn lookup(&self, path: &str) -> io::Result<u64> {
        let (dir, name) = split(path);
        self.dirs
            .get(dir)
            .and_then(|d| d.entries.get(name))
            .copied()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn dir_mut(&mut self, dir: &str) -> io::Result<&mut SimDir> {
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

impl Mount for SimDisk {
    fn path(&self) -> &Path {
        &self.path
    }

    fn probe(&self) -> io::Result<Probe> {
        let state = self.lock();
        state.check()?;
        if state.mounted && state.dirs.contains_key("") {
            Ok(Probe::Cairn(Arc::new(self.clone())))
        } else {
            Ok(Probe::Empty)
        }
    }

    fn create_cairn_dir(&self) -> io::Result<Arc<dyn DiskFs>> {
        let mut state = self.lock();
        state.step()?;
        state.dirs.insert(
            String::new(),
            SimDir {
                durable_exists: true,
                ..SimDir::default()
            },
        );
        Ok(Arc::new(self.clone()))
    }
}

impl DiskFs for SimDisk {
    fn write_new(&self, path: &str, data: &[u8], sync: bool) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        if state.lookup(path).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        if state.used() + data.len() as u64 > state.capacity {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let id = state.next_file;
        state.next_file += 1;
        state.files.insert(
            id,
            SimFile {
                durable: Vec::new(),
                written: data.to_vec(),
            },
        );
        let (dir, name) = split(path);
        state.dir_mut(dir)?.entries.insert(name.to_owned(), id);
        if sync {
            state.step()?;
            let file = state.files.get_mut(&id).expect("just inserted");
            file.durable = file.written.clone();
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        let id = state.lookup(from)?;
        let (to_dir, to_name) = split(to);
        state
            .dir_mut(to_dir)?
            .entries
            .insert(to_name.to_owned(), id);
        let (from_dir, from_name) = split(from);
        state.dir_mut(from_dir)?.entries.remove(from_name);
        Ok(())
    }

    fn link(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        let id = state.lookup(from)?;
        if state.lookup(to).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let (to_dir, to_name) = split(to);
        state
            .dir_mut(to_dir)?
            .entries
            .insert(to_name.to_owned(), id);
        Ok(())
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        let entries = state.dir_mut(dir)?.entries.clone();
        state.dir_mut(dir)?.durable = entries;
        let child_prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        for (name, child) in state.dirs.iter_mut() {
            if let Some(rest) = name.strip_prefix(&child_prefix)
                && !name.is_empty()
                && name != dir
                && !rest.contains('/')
            {
                child.durable_exists = true;
            }
        }
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        for dir in state.dirs.values_mut() {
            dir.durable_exists = true;
            dir.durable = dir.entries.clone();
        }
        for file in state.files.values_mut() {
            file.durable = file.written.clone();
        }
        for index in state.indexes.values_mut() {
            index.durable = index.written.clone();
            index.unsynced.clear();
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        state.lookup(path)?;
        let (dir, name) = split(path);
        state.dir_mut(dir)?.entries.remove(name);
        Ok(())
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let state = self.lock();
        state.check()?;
        let id = state.lookup(path)?;
        Ok(state.files[&id].written.clone())
    }

    fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let state = self.lock();
        state.check()?;
        let bytes = &state.files[&state.lookup(path)?].written;
        let start = offset as usize;
        bytes
            .get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.check()?;
        let mut names: Vec<String> = state
            .dirs
            .get(dir)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
            .entries
            .keys()
            .cloned()
            .collect();
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        for name in state.dirs.keys() {
            if let Some(rest) = name.strip_prefix(&prefix)
                && !rest.is_empty()
                && !rest.contains('/')
            {
                names.push(rest.to_owned());
            }
        }
        Ok(names)
    }

    fn create_dir(&self, dir: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        state.dirs.entry(dir.to_owned()).or_default();
        Ok(())
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let state = self.lock();
        state.check()?;
        Ok(state.lookup(path).is_ok() || state.dirs.contains_key(path))
    }

    fn space(&self) -> io::Result<Space> {
        let state = self.lock();
        state.check()?;
        Ok(Space {
            total: state.capacity,
            available: state.capacity.saturating_sub(state.used()),
        })
    }

    fn open_index(&self, path: &str) -> io::Result<IndexBackend> {
        let mut state = self.lock();
        state.check()?;
        state.indexes.entry(path.to_owned()).or_default();
        Ok(IndexBackend(Box::new(SimIndexBackend {
            disk: self.clone(),
            path: path.to_owned(),
        })))
    }
}

/// The index file of a simulated disk, as redb sees it.
struct SimIndexBackend {
    disk: SimDisk,
    path: String,
}

impl std::fmt::Debug for SimIndexBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimIndexBackend({})", self.path)
    }
}

impl SimIndexBackend {
    fn with<T>(
        &self,
        counts: bool,
        op: impl FnOnce(&mut SimIndex, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.disk.lock();
        if counts {
            state.step()?
        } else {
            state.check()?
        }
        let free = state.capacity.saturating_sub(state.used());
        op(
            state
                .indexes
                .get_mut(&self.path)
                .expect("created by open_index"),
            free,
        )
    }
}

impl redb::StorageBackend for SimIndexBackend {
    fn len(&self) -> io::Result<u64> {
        self.with(false, |index, _| Ok(index.written.len() as u64))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.with(false, |index, _| {
            let start = offset as usize;
            let bytes = index
                .written
                .get(start..start + out.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            out.copy_from_slice(bytes);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |index, free| {
            if len > index.written.len() as u64 + free {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            index.written.resize(len as usize, 0);
            index.unsynced.push(IndexChange::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(true, |index, _| {
            index.durable = index.written.clone();
            index.unsynced.clear();
            Ok(())
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(true, |index, _| {
            write_into(&mut index.written, offset, data);
            index
                .unsynced
                .push(IndexChange::Write(offset, data.to_vec()));
            Ok(())
        })
    }
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// A tiny deterministic generator for choosing what survives a crash.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

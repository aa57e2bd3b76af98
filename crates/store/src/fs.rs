//! The seam between the store and a disk's file system.
//!
//! Every byte the store reads or writes on a data disk goes through
//! [`DiskFs`], with paths relative to the disk's cairn directory. The real
//! implementation ([`RealMount`]) holds an open descriptor of that directory
//! and does every operation relative to it (`openat`, `renameat`, ...), so
//! once a disk's marker has been checked, nothing can redirect writes to
//! another file system: if the disk is unmounted underneath us, its cairn
//! directory simply is not there and the write fails, rather than landing on
//! the empty mountpoint. The simulated implementation
//! (`sim.rs`, behind the `sim` feature) records what a sync made durable, so tests can
//! crash the store at every step and inject I/O errors.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};

/// Name of the cairn directory inside a data disk's mountpoint.
pub const CAIRN_DIR: &str = "cairn";

/// Size of a disk's file system, as `statvfs` reports it to an unprivileged writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Total bytes of the file system.
    pub total: u64,
    /// Bytes an unprivileged process may still write.
    pub available: u64,
}

/// File operations on one disk's cairn directory. Paths are relative to it.
pub trait DiskFs: Send + Sync + 'static {
    /// Creates `path`, which must not exist, writes `data` into it and, when
    /// `sync`, makes its contents durable (fsync). The directory entry is not
    /// durable until [`DiskFs::sync_dir`].
    fn write_new(&self, path: &str, data: &[u8], sync: bool) -> io::Result<()>;
    /// Renames atomically, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Gives the file `from` a second name `to` (a hard link); `AlreadyExists` if `to` exists.
    fn link(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the entries of directory `dir` (`""` for the cairn directory itself) durable.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Makes everything written to this file system so far durable (`syncfs`).
    fn sync_all(&self) -> io::Result<()>;
    /// Removes a file; `NotFound` if it is not there.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Reads a whole file.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    /// Reads exactly `len` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Names in directory `dir`, without `.` and `..`.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Creates directory `dir` if it does not exist yet.
    fn create_dir(&self, dir: &str) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &str) -> io::Result<bool>;
    /// The file system's size and free space.
    fn space(&self) -> io::Result<Space>;
    /// Opens (creating if needed) the file that holds the disk's index.
    fn open_index(&self, path: &str) -> io::Result<IndexBackend>;
}

/// A mountpoint named in the configuration, before its cairn directory is trusted.
pub trait Mount: Send + Sync {
    /// The mountpoint, for messages and for remembering where a disk was seen.
    fn path(&self) -> &Path;
    /// Looks at what is there.
    fn probe(&self) -> io::Result<Probe>;
    /// Creates the cairn directory in an empty mountpoint and opens it.
    fn create_cairn_dir(&self) -> io::Result<Arc<dyn DiskFs>>;
}

/// What a mountpoint holds.
pub enum Probe {
    /// The path does not exist.
    Missing,
    /// An empty directory: a fresh disk, or a mountpoint whose disk is not mounted.
    Empty,
    /// Something other than a cairn directory: never touched.
    NotEmpty,
    /// A cairn directory, opened (its marker is still to be checked).
    Cairn(Arc<dyn DiskFs>),
}

/// The index's storage, boxed so that real and simulated disks can both hand one to redb.
pub struct IndexBackend(pub Box<dyn redb::StorageBackend>);

impl fmt::Debug for IndexBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl redb::StorageBackend for IndexBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.0.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// A real mountpoint on this machine.
pub struct RealMount {
    path: PathBuf,
}

impl RealMount {
    /// A mountpoint at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn open_cairn_dir(&self) -> io::Result<Arc<dyn DiskFs>> {
        let dir = rustix::fs::open(
            self.path.join(CAIRN_DIR),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        let device = rustix::fs::fstat(&dir)?.st_dev;
        Ok(Arc::new(RealDiskFs { dir, device }))
    }
}

impl Mount for RealMount {
    fn path(&self) -> &Path {
        &self.path
    }

    fn probe(&self) -> io::Result<Probe> {
        let mut entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
            Err(e) => return Err(e),
        };
        if self.path.join(CAIRN_DIR).is_dir() {
            return self.open_cairn_dir().map(Probe::Cairn);
        }
        // A fresh file system carries lost+found; that still counts as empty.
        let has_other = entries.try_fold(false, |found, entry| {
            let entry = entry?;
            Ok::<_, io::Error>(found || entry.file_name() != "lost+found")
        })?;
        Ok(if has_other {
            Probe::NotEmpty
        } else {
            Probe::Empty
        })
    }

    fn create_cairn_dir(&self) -> io::Result<Arc<dyn DiskFs>> {
        std::fs::create_dir(self.path.join(CAIRN_DIR))?;
        File::open(&self.path)?.sync_all()?;
        self.open_cairn_dir()
    }
}

/// A cairn directory on a real file system, reached through its open descriptor.
///
/// A data disk is whatever someone plugged in: its file system may hold
/// symbolic links, FIFOs or device nodes put there to make the daemon read or
/// write outside the disk (a `shards/xx/<id>` that points at the node key).
/// So every path is resolved one component at a time from the directory's
/// descriptor, each with `O_NOFOLLOW` (a link is refused, never followed),
/// `.` and `..` refused, and each directory checked to be on the disk's own
/// file system: what `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_XDEV` does, done by hand because systemd's
/// `RestrictSUIDSGID=` (which the appliance's unit sets) blocks `openat2`
/// itself. A read opens only a regular file.
struct RealDiskFs {
    dir: OwnedFd,
    /// The file system every path must stay on.
    device: u64,
}

/// A path below the cairn directory that goes through a link, leaves the
/// disk's file system, or names something that is not what it must be.
fn refused(path: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{path} on this data disk {what}; cairnd never follows one (a disk prepared to make it read elsewhere)"
        ),
    )
}

/// Opens `path` below `dir` (on file system `device`) the way the module's
/// doc says: every component without following a link, every directory on
/// the same file system.
fn open_beneath(
    dir: &OwnedFd,
    device: u64,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    if path == "." {
        return Ok(rustix::fs::openat(dir, ".", flags | OFlags::CLOEXEC, mode)?);
    }
    let components: Vec<&str> = path.split('/').collect();
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} does not name an entry below the cairn directory"),
        ));
    }
    let (name, parents) = components.split_last().expect("split yields one at least");
    let mut parent: Option<OwnedFd> = None;
    for component in parents {
        let at = parent.as_ref().unwrap_or(dir);
        let next = match rustix::fs::openat(
            at,
            *component,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            // O_PATH | O_NOFOLLOW on a link opens the link, and O_DIRECTORY
            // then refuses it.
            Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
                return Err(refused(
                    path,
                    "passes through a symbolic link or a non-directory",
                ));
            }
            other => other?,
        };
        if rustix::fs::fstat(&next)?.st_dev != device {
            return Err(refused(path, "passes through another file system"));
        }
        parent = Some(next);
    }
    let at = parent.as_ref().unwrap_or(dir);
    let fd = match rustix::fs::openat(at, *name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode) {
        Err(rustix::io::Errno::LOOP) => return Err(refused(path, "is a symbolic link")),
        Err(rustix::io::Errno::NOTDIR) if flags.contains(OFlags::DIRECTORY) => {
            return Err(refused(path, "is a symbolic link or not a directory"));
        }
        other => other?,
    };
    if rustix::fs::fstat(&fd)?.st_dev != device {
        return Err(refused(path, "is on another file system"));
    }
    Ok(fd)
}

impl RealDiskFs {
    fn open_file(&self, path: &str, flags: OFlags) -> io::Result<File> {
        // A FIFO would block an open for reading forever, so reads do not
        // wait; O_NONBLOCK changes nothing for a regular file.
        let flags = if flags.intersects(OFlags::WRONLY | OFlags::RDWR) {
            flags
        } else {
            flags | OFlags::NONBLOCK
        };
        // A mode is meaningful only when the open may create the file.
        let mode = if flags.contains(OFlags::CREATE) {
            Mode::from(0o640)
        } else {
            Mode::empty()
        };
        let fd = open_beneath(&self.dir, self.device, path, flags, mode)?;
        let file = File::from(fd);
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{path} on this data disk is not a regular file; cairnd reads only files it wrote"
                ),
            ));
        }
        Ok(file)
    }

    fn open_dir(&self, dir: &str) -> io::Result<OwnedFd> {
        let path = if dir.is_empty() { "." } else { dir };
        open_beneath(
            &self.dir,
            self.device,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
    }

    /// The directory that holds `path` (resolved like every open) and the
    /// last component's name, for the calls that act on a name: link,
    /// rename, unlink, mkdir, stat. None of them follows a link in that name.
    fn parent_of<'a>(&self, path: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name.is_empty() || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path:?} does not name an entry below the cairn directory"),
            ));
        }
        let fd = open_beneath(
            &self.dir,
            self.device,
            if dir.is_empty() { "." } else { dir },
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        Ok((fd, name))
    }
}

impl DiskFs for RealDiskFs {
    fn write_new(&self, path: &str, data: &[u8], sync: bool) -> io::Result<()> {
        let mut file = self.open_file(path, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL)?;
        file.write_all(data)?;
        if sync {
            file.sync_data()?;
        } else {
            // Start writing the data out now, while the caller waits for its group
            // commit, so the commit's syncfs finds it mostly on disk already. On
            // Linux, DONTNEED starts writeback of dirty pages and drops only pages
            // already clean, so the file mostly stays cached. It is only advice: a
            // failure is not an error.
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_name) = self.parent_of(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        Ok(rustix::fs::renameat(
            &from_dir, from_name, &to_dir, to_name,
        )?)
    }

    fn link(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_name) = self.parent_of(from)?;
        let (to_dir, to_name) = self.parent_of(to)?;
        // Without AT_SYMLINK_FOLLOW a link in `from` is linked as itself,
        // and every later open of it is refused.
        Ok(rustix::fs::linkat(
            &from_dir,
            from_name,
            &to_dir,
            to_name,
            AtFlags::empty(),
        )?)
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        Ok(rustix::fs::fsync(self.open_dir(dir)?)?)
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.dir)?)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let (dir, name) = self.parent_of(path)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?)
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        let mut file = self.open_file(path, OFlags::RDONLY)?;
        let mut out = Vec::with_capacity(file.metadata()?.len() as usize);
        file.read_to_end(&mut out)?;
        Ok(out)
    }

    fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.open_file(path, OFlags::RDONLY)?;
        let mut out = vec![0u8; len];
        file.read_exact_at(&mut out, offset)?;
        Ok(out)
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let fd = self.open_dir(dir)?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy();
            if name != "." && name != ".." {
                names.push(name.into_owned());
            }
        }
        Ok(names)
    }

    fn create_dir(&self, dir: &str) -> io::Result<()> {
        let (parent, name) = self.parent_of(dir)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from(0o750)) {
            Err(rustix::io::Errno::EXIST) => Ok(()),
            other => Ok(other?),
        }
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        let (dir, name) = match self.parent_of(path) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn space(&self) -> io::Result<Space> {
        let stat = rustix::fs::fstatvfs(&self.dir)?;
        Ok(Space {
            total: stat.f_blocks.saturating_mul(stat.f_frsize),
            available: stat.f_bavail.saturating_mul(stat.f_frsize),
        })
    }

    fn open_index(&self, path: &str) -> io::Result<IndexBackend> {
        let file = self.open_file(path, OFlags::RDWR | OFlags::CREATE)?;
        let backend = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
        Ok(IndexBackend(Box::new(backend)))
    }
}

//! Data disks that come and go under the disks directory (`disks_dir`,
//! `/srv/cairn/disks` on the appliance, where `cairn-adopt-disk` mounts
//! every disk labelled CAIRN…).
//!
//! [`DiskWatch`] is plain logic: given what is mounted there now and which
//! block devices exist, it says which disks to attach to the store and which
//! to detach. [`scan`] and [`block_device_present`] are the small bits of I/O
//! the daemon feeds it with, every few seconds.
//!
//! A mount counts only while it is one (its file system differs from the
//! directory's own), so an empty mountpoint left after an unmount is never
//! mistaken for a disk. An unplugged USB disk can stay mounted, dead, for a
//! while (its files are still open): its block device vanishing is what
//! takes it out of service, at once, rather than its next I/O error.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// A file system mounted in the disks directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Device(pub u64);

impl Device {
    /// Major and minor number.
    pub fn numbers(self) -> (u32, u32) {
        (rustix::fs::major(self.0), rustix::fs::minor(self.0))
    }

    /// Whether the file system lives on a block device at all (tmpfs and
    /// other virtual file systems have major number 0 and cannot be unplugged).
    pub fn is_block(self) -> bool {
        self.numbers().0 != 0
    }
}

/// What the store should do about one mountpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskChange {
    /// Open the disk mounted here (again).
    Attach(PathBuf),
    /// Stop using the disk that was here.
    Detach {
        /// The mountpoint.
        path: PathBuf,
        /// What happened, for the log and the disk's status.
        reason: String,
    },
}

/// Remembers which mounts the store was told about.
#[derive(Debug, Default)]
pub struct DiskWatch {
    /// Mounts handed to the store, by mountpoint.
    attached: BTreeMap<PathBuf, Device>,
    /// Mounts whose device vanished while still mounted: not attached again
    /// until a different file system is mounted there.
    dead: BTreeMap<PathBuf, Device>,
}

impl DiskWatch {
    /// A watch that knows of no disk yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares what is mounted now with what the store uses. `retry` names
    /// mountpoints attached earlier that did not come into service (say, the
    /// cairn directory was not made yet): they are attached again.
    pub fn step(
        &mut self,
        mounted: &BTreeMap<PathBuf, Device>,
        device_present: impl Fn(Device) -> bool,
        retry: &[PathBuf],
    ) -> Vec<DiskChange> {
        let mut changes = Vec::new();
        let attached = std::mem::take(&mut self.attached);
        for (path, device) in attached {
            let reason = match mounted.get(&path) {
                None => Some("it was unmounted".to_owned()),
                Some(now) if *now != device => {
                    Some("another file system was mounted in its place".to_owned())
                }
                Some(_) if !device_present(device) => {
                    let (major, minor) = device.numbers();
                    self.dead.insert(path.clone(), device);
                    Some(format!(
                        "its block device {major}:{minor} is gone (unplugged?)"
                    ))
                }
                Some(_) => None,
            };
            match reason {
                Some(reason) => changes.push(DiskChange::Detach {
                    path: path.clone(),
                    reason,
                }),
                None => {
                    if retry.contains(&path) {
                        changes.push(DiskChange::Attach(path.clone()));
                    }
                    self.attached.insert(path, device);
                }
            }
        }
        self.dead
            .retain(|path, device| mounted.get(path) == Some(device));
        for (path, device) in mounted {
            if self.attached.contains_key(path)
                || self.dead.contains_key(path)
                || !device_present(*device)
            {
                continue;
            }
            self.attached.insert(path.clone(), *device);
            changes.push(DiskChange::Attach(path.clone()));
        }
        changes
    }
}

/// The file systems mounted directly in `dir`: its subdirectories that sit on
/// a different device from `dir` itself. A missing `dir` holds none.
pub fn scan(dir: &Path) -> io::Result<BTreeMap<PathBuf, Device>> {
    let own = match rustix::fs::stat(dir) {
        Ok(stat) => Device(stat.st_dev),
        Err(rustix::io::Errno::NOENT) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut mounted = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // A dead mount may fail to stat: it is then simply not there.
        let Ok(stat) = rustix::fs::stat(&path) else {
            continue;
        };
        let is_dir =
            rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory;
        if is_dir && Device(stat.st_dev) != own {
            mounted.insert(path, Device(stat.st_dev));
        }
    }
    Ok(mounted)
}

/// Whether a file system's block device still exists (`/sys/dev/block/MAJ:MIN`).
pub fn block_device_present(device: Device) -> bool {
    if !device.is_block() {
        return true;
    }
    let (major, minor) = device.numbers();
    Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(list: &[(&str, u64)]) -> BTreeMap<PathBuf, Device> {
        list.iter()
            .map(|(path, dev)| (PathBuf::from(path), Device(*dev)))
            .collect()
    }

    const SDA1: u64 = (8 << 8) | 1;
    const SDB1: u64 = (8 << 8) | 17;

    fn attach(path: &str) -> DiskChange {
        DiskChange::Attach(PathBuf::from(path))
    }

    fn is_detach(change: &DiskChange, of: &str, because: &str) -> bool {
        matches!(change, DiskChange::Detach { path, reason } if path == Path::new(of) && reason.contains(because))
    }

    #[test]
    fn a_new_mount_is_attached_once() {
        let mut watch = DiskWatch::new();
        let now = mounts(&[("/d/a", SDA1)]);
        assert_eq!(watch.step(&now, |_| true, &[]), vec![attach("/d/a")]);
        assert!(watch.step(&now, |_| true, &[]).is_empty());
        // One that did not come into service is tried again when asked.
        assert_eq!(
            watch.step(&now, |_| true, &[PathBuf::from("/d/a")]),
            vec![attach("/d/a")]
        );
    }

    #[test]
    fn an_unmount_detaches_and_a_remount_attaches_again() {
        let mut watch = DiskWatch::new();
        watch.step(&mounts(&[("/d/a", SDA1), ("/d/b", SDB1)]), |_| true, &[]);
        let changes = watch.step(&mounts(&[("/d/b", SDB1)]), |_| true, &[]);
        assert_eq!(changes.len(), 1);
        assert!(is_detach(&changes[0], "/d/a", "unmounted"), "{changes:?}");
        assert_eq!(
            watch.step(&mounts(&[("/d/a", SDA1), ("/d/b", SDB1)]), |_| true, &[]),
            vec![attach("/d/a")]
        );
    }

    #[test]
    fn an_unplugged_device_still_mounted_is_detached_and_stays_out() {
        let mut watch = DiskWatch::new();
        let now = mounts(&[("/d/a", SDA1)]);
        watch.step(&now, |_| true, &[]);
        let gone = |d: Device| d != Device(SDA1);
        let changes = watch.step(&now, gone, &[]);
        assert_eq!(changes.len(), 1);
        assert!(is_detach(&changes[0], "/d/a", "8:1 is gone"), "{changes:?}");
        // The dead mount lingers: it is not attached again, whatever is asked.
        assert!(watch.step(&now, gone, &[PathBuf::from("/d/a")]).is_empty());
        // It is finally unmounted; the disk comes back as another device.
        assert!(watch.step(&mounts(&[]), gone, &[]).is_empty());
        assert_eq!(
            watch.step(&mounts(&[("/d/a", SDB1)]), |_| true, &[]),
            vec![attach("/d/a")]
        );
    }

    #[test]
    fn a_different_file_system_in_the_same_place_is_a_different_disk() {
        let mut watch = DiskWatch::new();
        watch.step(&mounts(&[("/d/a", SDA1)]), |_| true, &[]);
        let changes = watch.step(&mounts(&[("/d/a", SDB1)]), |_| true, &[]);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(is_detach(&changes[0], "/d/a", "in its place"));
        assert_eq!(changes[1], attach("/d/a"));
    }

    #[test]
    fn a_mount_whose_device_is_already_gone_is_never_attached() {
        let mut watch = DiskWatch::new();
        assert!(
            watch
                .step(&mounts(&[("/d/a", SDA1)]), |_| false, &[])
                .is_empty()
        );
    }

    #[test]
    fn virtual_file_systems_have_no_device_to_lose() {
        assert!(!Device(42).is_block());
        assert!(block_device_present(Device(42)));
        assert!(Device(SDA1).is_block());
    }

    #[test]
    fn scan_sees_mounts_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("empty-mountpoint")).unwrap();
        std::fs::write(dir.path().join("a-file"), b"x").unwrap();
        assert!(scan(dir.path()).unwrap().is_empty());
        assert!(scan(&dir.path().join("missing")).unwrap().is_empty());
        // /proc and /sys are other file systems than / on any Linux box.
        let root = scan(Path::new("/")).unwrap();
        assert!(root.contains_key(Path::new("/proc")), "{root:?}");
    }
}

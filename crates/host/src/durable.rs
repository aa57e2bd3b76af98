//! Replacing a small file so that a crash leaves either the old or the new
//! contents, never a torn or empty file: write a temporary file beside it,
//! fsync it, rename it over the target, fsync the directory. Used for every
//! small state file (keys, ownership, membership, root records, the
//! steward table, the client's settings).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Durably replaces `path` with `bytes`, created with permission `mode`.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = synced_beside(path, ".tmp", bytes, mode)?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Durably creates `path` with `bytes` (permission `mode`) unless it exists:
/// `Ok(false)` then, and the file already there is left as it is. The
/// contents appear whole or not at all, and of two processes creating the
/// same file at once exactly one wins (a hard link cannot replace a file),
/// so both go on to read the same contents.
pub fn create_file_once(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    // Per creator (process and call): two creators must not share, or
    // remove, each other's temporary file. A crashed creator's leftover
    // stays as a small stray file beside the target.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let suffix = format!(".new.{}.{call}", std::process::id());
    let tmp = synced_beside(path, &suffix, bytes, mode)?;
    let linked = std::fs::hard_link(&tmp, path);
    let removed = std::fs::remove_file(&tmp);
    let created = match linked {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    removed?;
    sync_parent(path)?;
    Ok(created)
}

/// Writes `bytes` to a fresh `<name><suffix>` beside `path` (permission
/// `mode`) and fsyncs it; a stale one, left by a crash, is replaced.
fn synced_beside(path: &Path, suffix: &str, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?;
    let mut tmp_name = name.to_owned();
    tmp_name.push(suffix);
    let tmp = path.with_file_name(tmp_name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Makes a new or renamed entry in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_with_the_mode_and_clears_a_stale_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        std::fs::write(dir.path().join("state.toml.tmp"), "torn").unwrap();
        replace_file(&path, b"one", 0o600).unwrap();
        replace_file(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("state.toml.tmp").exists());
    }

    #[test]
    fn creates_once_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        assert!(create_file_once(&path, b"first", 0o600).unwrap());
        assert!(!create_file_once(&path, b"second", 0o600).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["node.key"], "no temporary file is left");
    }

    #[test]
    fn of_creators_racing_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let winners: usize = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || create_file_once(&path, &[i; 32], 0o600))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap().unwrap_or(false)))
            .sum();
        assert_eq!(winners, 1);
        let key = std::fs::read(&path).unwrap();
        assert!(
            key.len() == 32 && key.iter().all(|&b| b == key[0]),
            "torn: {key:?}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

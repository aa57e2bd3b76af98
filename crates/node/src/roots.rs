//! Owners' root records kept by this node: one file per owner in the state
//! directory, replaced atomically (write, fsync, rename, fsync the
//! directory) and only by a validly signed, newer record.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_proto::ids::OwnerId;
use cairn_proto::root::{RootError, RootRecord};

/// Why a root record could not be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum RootStoreError {
    /// The record was refused.
    #[error(transparent)]
    Refused(#[from] RootError),
    /// The state directory failed.
    #[error("cannot keep root records in {path}: {source}; check the state directory")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The node keeps records for as many owners as it takes.
    #[error(
        "this node keeps root records for {MAX_OWNERS} owners already; keep yours on your other nodes"
    )]
    Full,
    /// A stored record no longer decodes or verifies.
    #[error("the stored root record {path} is damaged; it will be replaced by the next valid one")]
    Damaged {
        /// The file.
        path: PathBuf,
    },
}

/// Owners whose root records one node keeps: each is a file in `/var`, and
/// a stranger can make up owner keys, so their number is bounded.
pub const MAX_OWNERS: usize = 4096;

/// The root records this node keeps.
pub struct RootStore {
    dir: PathBuf,
    max_owners: usize,
    /// Serialises compare-and-replace.
    writing: Mutex<()>,
}

impl RootStore {
    /// Opens (creating) `state_dir/roots`.
    pub fn open(state_dir: &Path) -> Result<Self, RootStoreError> {
        let dir = state_dir.join("roots");
        std::fs::create_dir_all(&dir).map_err(|source| RootStoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            max_owners: MAX_OWNERS,
            writing: Mutex::new(()),
        })
    }

    /// The same store keeping records for at most `max_owners` owners (for
    /// tests of the bound).
    pub fn with_max_owners(self, max_owners: usize) -> Self {
        Self { max_owners, ..self }
    }

    fn path(&self, owner: &OwnerId) -> PathBuf {
        self.dir.join(owner.to_hex())
    }

    /// The newest record held for `owner`.
    pub fn get(&self, owner: &OwnerId) -> Result<Option<RootRecord>, RootStoreError> {
        let path = self.path(owner);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RootStoreError::Io { path, source }),
        };
        let record: RootRecord = postcard::from_bytes(&bytes)
            .map_err(|_| RootStoreError::Damaged { path: path.clone() })?;
        if record.verify().is_err() || record.owner != cairn_proto::OwnerId(owner.0) {
            return Err(RootStoreError::Damaged { path });
        }
        Ok(Some(record))
    }

    /// How many owners' records are kept.
    fn owners(&self) -> Result<usize, RootStoreError> {
        let io = |source| RootStoreError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut count = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            // A replace in flight writes `<owner>.tmp` first.
            if !entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Keeps `record` if it is valid and newer than the one held.
    pub fn put(&self, record: &RootRecord) -> Result<(), RootStoreError> {
        record.verify()?;
        let _writing = cairn_host::lock(&self.writing);
        let owner = record.owner_id();
        let held = match self.get(&owner) {
            Ok(held) => held,
            // A damaged file is replaced by any valid record.
            Err(RootStoreError::Damaged { .. }) => None,
            Err(e) => return Err(e),
        };
        if !record.supersedes(held.as_ref())? {
            return Ok(());
        }
        if held.is_none() && self.owners()? >= self.max_owners {
            return Err(RootStoreError::Full);
        }
        let path = self.path(&owner);
        let bytes = postcard::to_stdvec(record).map_err(|e| RootStoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        cairn_host::durable::replace_file(&path, &bytes, 0o644)
            .map_err(|source| RootStoreError::Io { path, source })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    /// A stranger making up owner keys fills the bound, not the disk; an
    /// owner already kept still renews its record.
    #[test]
    fn records_are_kept_for_a_bounded_number_of_owners() {
        let dir = tempfile::tempdir().unwrap();
        let store = RootStore::open(dir.path()).unwrap().with_max_owners(3);
        let keys: Vec<SigningKey> = (0..4).map(|n| SigningKey::from_bytes(&[n; 32])).collect();
        for key in &keys[..3] {
            store.put(&RootRecord::sign(key, 1, b"r".to_vec())).unwrap();
        }
        assert!(matches!(
            store.put(&RootRecord::sign(&keys[3], 1, b"r".to_vec())),
            Err(RootStoreError::Full)
        ));
        store
            .put(&RootRecord::sign(&keys[0], 2, b"s".to_vec()))
            .unwrap();
    }

    #[test]
    fn keeps_the_newest_valid_record_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = RootStore::open(dir.path()).unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        let owner = OwnerId(key.verifying_key().to_bytes());
        assert_eq!(store.get(&owner).unwrap(), None);
        let one = RootRecord::sign(&key, 1, b"a".to_vec());
        let two = RootRecord::sign(&key, 2, b"b".to_vec());
        store.put(&two).unwrap();
        assert!(matches!(
            store.put(&one),
            Err(RootStoreError::Refused(RootError::Stale {
                held: 2,
                offered: 1
            }))
        ));
        store.put(&two).unwrap();
        let mut forged = RootRecord::sign(&key, 3, b"c".to_vec());
        forged.payload = b"d".to_vec();
        assert!(store.put(&forged).is_err());
        let reopened = RootStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&owner).unwrap(), Some(two));
    }
}

//! The node's long-term key pair. Its public half is the node id; it is the
//! static key of every Noise handshake the node makes. Created on first
//! start, kept in the state directory with mode 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

use cairn_proto::ids::NodeId;

/// File name of the key in the state directory.
pub const KEY_FILE: &str = "node.key";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading, creating or syncing the key file failed.
    #[error(
        "cannot use the node key {path}: {source}; check that the state directory exists and is writable by cairnd"
    )]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a key this program wrote.
    #[error(
        "the node key {path} is damaged ({len} bytes, expected 32); restore it from a backup, or remove it to give this box a new identity"
    )]
    Damaged {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Others can read the key.
    #[error(
        "the node key {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// A node's (or client's) X25519 static key pair.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    /// The public key: the node id.
    pub id: NodeId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A key pair from its private half.
    pub fn from_private(private: [u8; 32]) -> Self {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("the default resolver has X25519");
        dh.set(&private);
        let mut public = [0u8; 32];
        public.copy_from_slice(dh.pubkey());
        Self {
            private,
            id: NodeId(public),
        }
    }

    /// A fresh random key pair.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut private = [0u8; 32];
        getrandom::fill(&mut private).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Self::from_private(private))
    }

    /// The private key, for the Noise handshake.
    pub fn private(&self) -> &[u8; 32] {
        &self.private
    }

    /// Loads the key from `state_dir` if there is one (creating none).
    pub fn load_existing(state_dir: &Path) -> Result<Option<Self>, IdentityError> {
        Self::load(&state_dir.join(KEY_FILE))
    }

    /// Loads the key from `state_dir`, creating it (mode 0600, durably) on
    /// first start. Two processes starting at once (`cairnd --print-id`
    /// beside a first start) get the same key: it is created only if absent.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        if let Some(identity) = Self::load(&state_dir.join(KEY_FILE))? {
            return Ok(identity);
        }
        let identity = Self::generate()?;
        let path = state_dir.join(KEY_FILE);
        let created = cairn_host::durable::create_file_once(&path, &identity.private, 0o600)
            .map_err(|source| IdentityError::Io {
                path: path.clone(),
                source,
            })?;
        if created {
            return Ok(identity);
        }
        Self::load(&path)?.ok_or_else(|| IdentityError::Io {
            path,
            source: std::io::Error::other("the key created by another process vanished"),
        })
    }

    /// Starts a factory reset: a new key is kept beside the current one
    /// until [`Identity::finish_reset`] puts it in place, so a crash in
    /// between resumes the same reset ([`Identity::pending_reset`]).
    pub fn begin_reset(state_dir: &Path) -> Result<Self, IdentityError> {
        if let Some(pending) = Self::pending_reset(state_dir)? {
            return Ok(pending);
        }
        let identity = Self::generate()?;
        write_key(state_dir, PENDING_KEY_FILE, &identity.private)?;
        Ok(identity)
    }

    /// The new key of a reset that has begun and not finished.
    pub fn pending_reset(state_dir: &Path) -> Result<Option<Self>, IdentityError> {
        Self::load(&state_dir.join(PENDING_KEY_FILE))
    }

    /// Makes the pending key the node's key.
    pub fn finish_reset(state_dir: &Path) -> Result<(), IdentityError> {
        let path = state_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        std::fs::rename(state_dir.join(PENDING_KEY_FILE), &path).map_err(io)?;
        std::fs::File::open(state_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io)
    }

    fn load(path: &Path) -> Result<Option<Self>, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let private: [u8; 32] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::Damaged {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
        Ok(Some(Self::from_private(private)))
    }
}

/// The new key of a factory reset in progress.
const PENDING_KEY_FILE: &str = "node.key.new";

/// Writes a key file durably, readable by its owner only.
fn write_key(state_dir: &Path, name: &str, private: &[u8; 32]) -> Result<(), IdentityError> {
    let path = state_dir.join(name);
    cairn_host::durable::replace_file(&path, private, 0o600)
        .map_err(|source| IdentityError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.id, again.id);
        assert_ne!(first.id, Identity::generate().unwrap().id);

        std::fs::set_permissions(
            dir.path().join(KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");

        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        std::fs::set_permissions(
            dir.path().join(KEY_FILE),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Damaged { len: 5, .. })
        ));
    }

    #[test]
    fn a_reset_gets_a_new_key_and_survives_a_crash_midway() {
        let dir = tempfile::tempdir().unwrap();
        let old = Identity::load_or_create(dir.path()).unwrap();
        assert!(Identity::pending_reset(dir.path()).unwrap().is_none());
        let new = Identity::begin_reset(dir.path()).unwrap();
        assert_ne!(new.id, old.id);
        // Crash here: the old key is still the node's, the reset resumes with the same new key.
        assert_eq!(Identity::load_or_create(dir.path()).unwrap().id, old.id);
        let resumed = Identity::begin_reset(dir.path()).unwrap();
        assert_eq!(resumed.id, new.id);
        Identity::finish_reset(dir.path()).unwrap();
        assert_eq!(Identity::load_or_create(dir.path()).unwrap().id, new.id);
        assert!(Identity::pending_reset(dir.path()).unwrap().is_none());
    }
}

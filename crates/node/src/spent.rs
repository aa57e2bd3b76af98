//! Owner-signed commands are accepted once: a replay is refused.
//!
//! A signed delete, drain, transfer, eviction or untrack is valid until its
//! `not_after` (at most 24 hours ahead). Without memory of what it already
//! did, a node would take the same signed command again within that time:
//! a delete replayed after its owner stored the shard again, a drain
//! replayed after the owner stopped it. So the node keeps the BLAKE3 hash of
//! each command message it accepted (not of the signature: an Ed25519
//! signature can be re-encoded, a message cannot) until the command's
//! `not_after` has passed, in `spent.redb` in its state directory, durably
//! before it acts on it.
//!
//! Only commands whose signature verified are kept, so only owners can
//! fill the table, each entry is forgotten once its `not_after` passes, and
//! the table holds at most [`MAX_SPENT`] entries.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const SPENT: TableDefinition<[u8; 32], u64> = TableDefinition::new("spent");
const BY_EXPIRY: TableDefinition<(u64, [u8; 32]), ()> = TableDefinition::new("by_expiry");
const FILE: &str = "spent.redb";

/// Most commands remembered at once (about 100 bytes each on disk).
pub const MAX_SPENT: u64 = 500_000;
/// Expired entries forgotten per accepted command, so the table shrinks as
/// fast as it can grow.
const PRUNE_PER_SPEND: usize = 4;

/// Why a command is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SpentError {
    /// The same signed command was accepted before.
    #[error(
        "this signed command was already carried out (a replay); sign a new one if you mean it again"
    )]
    Replayed,
    /// Too many commands are remembered.
    #[error(
        "this node remembers {MAX_SPENT} signed commands already (each for up to 24 hours); retry later"
    )]
    Full,
    /// The table could not be read or written.
    #[error(
        "the record of signed commands ({path}) failed: {message}; check the state directory's disk"
    )]
    Table {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The commands this node accepted that are still within their validity.
pub struct Spent {
    db: redb::Database,
    path: PathBuf,
}

impl Spent {
    /// Opens (or creates) the record in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, SpentError> {
        let path = state_dir.join(FILE);
        let table_error = |e: redb::Error| SpentError::Table {
            path: path.clone(),
            message: e.to_string(),
        };
        let db = redb::Database::create(&path).map_err(|e| table_error(e.into()))?;
        let txn = db.begin_write().map_err(|e| table_error(e.into()))?;
        {
            txn.open_table(SPENT).map_err(|e| table_error(e.into()))?;
            txn.open_table(BY_EXPIRY)
                .map_err(|e| table_error(e.into()))?;
        }
        txn.commit().map_err(|e| table_error(e.into()))?;
        Ok(Self { db, path })
    }

    fn error(&self, e: impl Into<redb::Error>) -> SpentError {
        SpentError::Table {
            path: self.path.clone(),
            message: e.into().to_string(),
        }
    }

    /// Records `message` (a verified command valid until `not_after`) as
    /// carried out, durably; refuses one recorded before. Call it after the
    /// signature verified and before acting on the command.
    pub fn spend(&self, message: &[u8], not_after: u64, now: u64) -> Result<(), SpentError> {
        let key: [u8; 32] = *blake3::hash(message).as_bytes();
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut spent = txn.open_table(SPENT).map_err(|e| self.error(e))?;
            let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(|e| self.error(e))?;
            if spent.get(&key).map_err(|e| self.error(e))?.is_some() {
                return Err(SpentError::Replayed);
            }
            let expired: Vec<(u64, [u8; 32])> = by_expiry
                .range(..(now, [0u8; 32]))
                .map_err(|e| self.error(e))?
                .take(PRUNE_PER_SPEND)
                .map(|entry| entry.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(|e| self.error(e))?;
            for (at, old) in expired {
                by_expiry.remove(&(at, old)).map_err(|e| self.error(e))?;
                spent.remove(&old).map_err(|e| self.error(e))?;
            }
            if spent.len().map_err(|e| self.error(e))? >= MAX_SPENT {
                return Err(SpentError::Full);
            }
            spent.insert(&key, not_after).map_err(|e| self.error(e))?;
            by_expiry
                .insert(&(not_after, key), ())
                .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))?;
        Ok(())
    }

    /// How many commands are remembered.
    pub fn len(&self) -> Result<u64, SpentError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(SPENT).map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> Result<bool, SpentError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_taken_once_until_it_expires_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spent = Spent::open(dir.path()).unwrap();
            spent.spend(b"delete 1", 1000, 10).unwrap();
            assert!(matches!(
                spent.spend(b"delete 1", 1000, 20),
                Err(SpentError::Replayed)
            ));
            spent.spend(b"delete 2", 50, 20).unwrap();
        }
        let spent = Spent::open(dir.path()).unwrap();
        assert!(matches!(
            spent.spend(b"delete 1", 1000, 30),
            Err(SpentError::Replayed)
        ));
        assert_eq!(spent.len().unwrap(), 2);
        // Past its not_after the entry is forgotten (the command itself is
        // refused as expired by its signature check).
        spent.spend(b"delete 3", 2000, 100).unwrap();
        assert_eq!(spent.len().unwrap(), 2, "delete 2 was pruned");
    }
}

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

use cairn_proto::ids::NodeId;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

const SPENT: TableDefinition<[u8; 32], u64> = TableDefinition::new("spent");
/// (not_after, command hash) → the peer key that sent it.
const BY_EXPIRY: TableDefinition<(u64, [u8; 32]), [u8; 32]> = TableDefinition::new("by_expiry");
/// Peer key → commands it sent that are remembered now.
const BY_PEER: TableDefinition<[u8; 32], u64> = TableDefinition::new("by_peer");
const FILE: &str = "spent.redb";
/// (not_after, command hash).
type ExpiryKey = (u64, [u8; 32]);

/// Most commands remembered at once (some 150 bytes each on disk, so the
/// record stays a few MiB of the small `/var`).
pub const MAX_SPENT: u64 = 100_000;
/// Most commands remembered from one peer key. A command is signed by an
/// owner, but anyone can make up owners and sign for them (an untrack of
/// nothing, say): counting per sender keeps one member from filling the
/// record that everyone's commands need. An owner's client signs commands
/// valid for 10 minutes, so even a large prune stays far below this.
pub const MAX_SPENT_PER_PEER: u64 = 20_000;
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
    /// Too many commands from this peer are remembered.
    #[error(
        "this node remembers {MAX_SPENT_PER_PEER} signed commands sent through this key already (each until it expires, at most 24 hours); retry later, or sign commands that expire sooner"
    )]
    FullForPeer,
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
    per_peer: u64,
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
            txn.open_table(BY_PEER).map_err(|e| table_error(e.into()))?;
        }
        txn.commit().map_err(|e| table_error(e.into()))?;
        Ok(Self {
            db,
            path,
            per_peer: MAX_SPENT_PER_PEER,
        })
    }

    fn error(&self, e: impl Into<redb::Error>) -> SpentError {
        SpentError::Table {
            path: self.path.clone(),
            message: e.into().to_string(),
        }
    }

    /// Records `message` (a verified command valid until `not_after`) as
    /// carried out, durably; refuses one recorded before. Call it after the
    /// signature verified and before acting on the command. `peer` is the
    /// key that sent it.
    pub fn spend(
        &self,
        message: &[u8],
        not_after: u64,
        now: u64,
        peer: &NodeId,
    ) -> Result<(), SpentError> {
        let key: [u8; 32] = *blake3::hash(message).as_bytes();
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut spent = txn.open_table(SPENT).map_err(|e| self.error(e))?;
            let mut by_expiry = txn.open_table(BY_EXPIRY).map_err(|e| self.error(e))?;
            let mut by_peer = txn.open_table(BY_PEER).map_err(|e| self.error(e))?;
            if spent.get(&key).map_err(|e| self.error(e))?.is_some() {
                return Err(SpentError::Replayed);
            }
            let expired: Vec<(ExpiryKey, [u8; 32])> = by_expiry
                .range(..(now, [0u8; 32]))
                .map_err(|e| self.error(e))?
                .take(PRUNE_PER_SPEND)
                .map(|entry| entry.map(|(k, v)| (k.value(), v.value())))
                .collect::<Result<_, _>>()
                .map_err(|e| self.error(e))?;
            for ((at, old), sender) in expired {
                by_expiry.remove(&(at, old)).map_err(|e| self.error(e))?;
                spent.remove(&old).map_err(|e| self.error(e))?;
                let left = count(&by_peer, &sender).map_err(|e| self.error(e))?;
                if left <= 1 {
                    by_peer.remove(&sender).map_err(|e| self.error(e))?;
                } else {
                    by_peer
                        .insert(&sender, left - 1)
                        .map_err(|e| self.error(e))?;
                }
            }
            let sent = count(&by_peer, &peer.0).map_err(|e| self.error(e))?;
            if sent >= self.per_peer {
                return Err(SpentError::FullForPeer);
            }
            if spent.len().map_err(|e| self.error(e))? >= MAX_SPENT {
                return Err(SpentError::Full);
            }
            spent.insert(&key, not_after).map_err(|e| self.error(e))?;
            by_expiry
                .insert(&(not_after, key), peer.0)
                .map_err(|e| self.error(e))?;
            by_peer
                .insert(&peer.0, sent + 1)
                .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The same record keeping at most `per_peer` commands of one key (for
    /// tests of the bound).
    pub fn with_per_peer_limit(self, per_peer: u64) -> Self {
        Self { per_peer, ..self }
    }

    /// How many commands are remembered.
    #[cfg(test)]
    fn remembered(&self) -> u64 {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read().unwrap();
        txn.open_table(SPENT).unwrap().len().unwrap()
    }
}

fn count(table: &redb::Table<[u8; 32], u64>, peer: &[u8; 32]) -> Result<u64, redb::StorageError> {
    Ok(table.get(peer)?.map(|v| v.value()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: NodeId = NodeId([7; 32]);

    #[test]
    fn a_command_is_taken_once_until_it_expires_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spent = Spent::open(dir.path()).unwrap();
            spent.spend(b"delete 1", 1000, 10, &PEER).unwrap();
            assert!(matches!(
                spent.spend(b"delete 1", 1000, 20, &PEER),
                Err(SpentError::Replayed)
            ));
            spent.spend(b"delete 2", 50, 20, &PEER).unwrap();
        }
        let spent = Spent::open(dir.path()).unwrap();
        assert!(matches!(
            spent.spend(b"delete 1", 1000, 30, &PEER),
            Err(SpentError::Replayed)
        ));
        assert_eq!(spent.remembered(), 2);
        // Past its not_after the entry is forgotten (the command itself is
        // refused as expired by its signature check).
        spent.spend(b"delete 3", 2000, 100, &PEER).unwrap();
        assert_eq!(spent.remembered(), 2, "delete 2 was pruned");
    }

    /// One key's commands fill its own share and no more; others still get
    /// theirs, and expired ones free the share.
    #[test]
    fn one_key_cannot_fill_the_record_for_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let spent = Spent::open(dir.path()).unwrap().with_per_peer_limit(5);
        let (mallory, alice) = (NodeId([1; 32]), NodeId([2; 32]));
        for n in 0..5u64 {
            spent.spend(&n.to_le_bytes(), 100, 10, &mallory).unwrap();
        }
        assert!(matches!(
            spent.spend(b"one more", 100, 10, &mallory),
            Err(SpentError::FullForPeer)
        ));
        spent.spend(b"alice's delete", 100, 10, &alice).unwrap();
        // Past their not_after, Mallory's entries are pruned as commands come.
        for n in 0..2u64 {
            spent
                .spend(&(1_000_000 + n).to_le_bytes(), 500, 200, &alice)
                .unwrap();
        }
        spent.spend(b"one more", 500, 200, &mallory).unwrap();
    }
}

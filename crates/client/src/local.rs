//! What the owner's machine keeps between commands, none of it needed for
//! recovery: tree nodes already read (content-addressed, so a later
//! command never downloads them again), and the journal of what a put
//! uploaded but has not committed yet (so a put killed half way and run
//! again does not send it again).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::swarm::{Swarm, SwarmError};
use crate::tree::{self, Located, TreeNode};

/// Tree nodes by id, as files under the client directory. A node is
/// checked against its id (a keyed hash) whenever it is read, so a damaged
/// or foreign file is fetched again, never believed.
#[derive(Debug, Clone)]
pub struct TreeCache {
    dir: PathBuf,
    convergence: [u8; 32],
}

impl TreeCache {
    /// The cache at `dir` for the owner whose convergence key is given.
    pub fn new(dir: PathBuf, convergence: [u8; 32]) -> Self {
        Self { dir, convergence }
    }

    fn path(&self, id: &[u8; 32]) -> PathBuf {
        let hex = blake3::Hash::from_bytes(*id).to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    /// The id of a node's encoding.
    pub fn id_of(&self, bytes: &[u8]) -> [u8; 32] {
        crate::segment::chunk_key(&self.convergence, bytes)
    }

    /// The node, if cached and intact.
    pub fn get(&self, id: &[u8; 32]) -> Option<TreeNode> {
        let bytes = std::fs::read(self.path(id)).ok()?;
        if self.id_of(&bytes) != *id {
            return None;
        }
        tree::decode(&bytes, "a cached tree node").ok()
    }

    /// Keeps a node's encoding. A cache that cannot be written only costs
    /// a download later.
    pub fn put(&self, id: &[u8; 32], bytes: &[u8]) {
        let path = self.path(id);
        if path.exists() {
            return;
        }
        let tmp = path.with_extension("tmp");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!("tree cache {}: {e}", path.display());
        }
    }

    /// The node `id` stored at `pieces`: from the cache, else from the
    /// swarm (checked against its id, then cached).
    pub async fn node(
        &self,
        swarm: &Arc<Swarm>,
        id: &[u8; 32],
        pieces: &[Located],
    ) -> Result<TreeNode, SwarmError> {
        if let Some(node) = self.get(id) {
            return Ok(node);
        }
        let (_, bytes) = swarm.read_pieces(pieces, Vec::new(), &|_| {}).await?;
        if self.id_of(&bytes) != *id {
            return Err(SwarmError::Decode(
                "a tree node read back does not match its id".into(),
            ));
        }
        let node =
            tree::decode(&bytes, "a tree node").map_err(|e| SwarmError::Decode(e.to_string()))?;
        self.put(id, &bytes);
        Ok(node)
    }
}

/// Uploaded pieces not yet in a committed snapshot, by chunk key: an
/// append-only file of length-prefixed records, synced after each append.
/// A torn last record (the put was killed while writing it) is ignored.
pub struct Journal {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl Journal {
    /// The journal at `path` (created on the first append).
    pub fn at(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            file: Mutex::new(None),
        }
    }

    /// Everything recorded so far; nothing if the journal was last
    /// written longer ago than `max_age` (its shards' leases, never
    /// renewed, may be running out: reusing them could lose data).
    pub fn load(&self, max_age: std::time::Duration) -> HashMap<[u8; 32], Located> {
        let mut out = HashMap::new();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return out;
        };
        let fresh = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|written| written.elapsed().ok())
            .is_some_and(|age| age <= max_age);
        if !fresh {
            return out;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return out;
        }
        let mut rest = &bytes[..];
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            let Some(record) = tail.get(..len) else { break };
            match tree::decode::<([u8; 32], Located)>(record, "a journal record") {
                Ok((key, located)) => {
                    out.insert(key, located);
                }
                Err(_) => break,
            }
            rest = &tail[len..];
        }
        out
    }

    /// Records pieces durably.
    pub fn append(&self, records: &[([u8; 32], Located)]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for record in records {
            let encoded = tree::encode(record);
            buf.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
            buf.extend_from_slice(&encoded);
        }
        let mut file = cairn_host::lock(&self.file);
        if file.is_none() {
            *file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let Some(open) = file.as_mut() else {
            unreachable!("opened just above")
        };
        open.write_all(&buf)?;
        open.sync_data()
    }

    /// Forgets everything (the pieces are in a committed snapshot now).
    pub fn clear(&self) -> std::io::Result<()> {
        *cairn_host::lock(&self.file) = None;
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SegmentRef;

    #[test]
    fn the_journal_keeps_what_was_synced_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::at(&path);
        let piece = |n: u8| {
            Located::Segment(SegmentRef {
                key: [n; 32],
                plain_len: u64::from(n),
                k: 4,
                shards: Vec::new(),
            })
        };
        journal
            .append(&[([1; 32], piece(1)), ([2; 32], piece(2))])
            .unwrap();
        journal.append(&[([3; 32], piece(3))]).unwrap();
        // A record cut short by a kill.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(&[2, 0, 1]);
        std::fs::write(&path, &bytes).unwrap();
        let loaded = Journal::at(&path).load(std::time::Duration::from_secs(60));
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded[&[2; 32]], piece(2));
        journal.clear().unwrap();
        assert!(
            Journal::at(&path)
                .load(std::time::Duration::from_secs(60))
                .is_empty()
        );
    }

    #[test]
    fn a_cached_node_is_checked_against_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TreeCache::new(dir.path().to_owned(), [5; 32]);
        let bytes = tree::encode(&TreeNode::default());
        let id = cache.id_of(&bytes);
        cache.put(&id, &bytes);
        assert_eq!(cache.get(&id), Some(TreeNode::default()));
        std::fs::write(cache.path(&id), b"tampered").unwrap();
        assert_eq!(cache.get(&id), None);
        assert_eq!(cache.get(&[0; 32]), None);
    }
}

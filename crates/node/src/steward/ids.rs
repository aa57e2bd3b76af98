//! Segment id → seq, kept in memory as 8-byte id prefixes (16 bytes a
//! segment: 16 MiB for a million).
//!
//! A durable index keyed by segment id takes one random B-tree insert per
//! tracked segment: each dirties its own page, and that was more than half
//! of Track's cost at a household's size. Here the durable part is the
//! `id_prefixes` table (seq → prefix), which Track appends to, and the
//! sorted index is built from it when the table opens. A prefix only
//! names candidates: callers confirm each against the segment's row, so a
//! colliding prefix (made on purpose or not) costs a row read, never a
//! wrong answer.

use std::collections::BTreeSet;

/// Fresh entries kept apart before they are merged into the sorted base.
const FRESH_MAX: usize = 1 << 16;
/// A seq that marks a removed base entry until the next merge.
const REMOVED: u64 = u64::MAX;

/// The first 8 bytes of a segment id, as the index keys it.
pub fn prefix(id: &[u8; 32]) -> u64 {
    u64::from_le_bytes(id[..8].try_into().unwrap_or_default())
}

/// Segment id prefixes → seqs.
#[derive(Debug, Default)]
pub struct IdIndex {
    /// Sorted by prefix (entries of one prefix in any order).
    base: Vec<(u64, u64)>,
    /// Removed entries still in `base`.
    removed: usize,
    /// Added since the last merge.
    fresh: BTreeSet<(u64, u64)>,
}

impl IdIndex {
    /// An index of `entries` (prefix, seq), in any order.
    pub fn from_entries(mut entries: Vec<(u64, u64)>) -> Self {
        entries.sort_unstable();
        Self {
            base: entries,
            removed: 0,
            fresh: BTreeSet::new(),
        }
    }

    /// Segments indexed.
    pub fn len(&self) -> usize {
        self.base.len() - self.removed + self.fresh.len()
    }

    /// The seqs whose segment id starts like `id`'s: the caller checks
    /// each one's row.
    pub fn candidates(&self, id: &[u8; 32]) -> Vec<u64> {
        let p = prefix(id);
        let start = self.base.partition_point(|&(q, _)| q < p);
        let mut out: Vec<u64> = self.base[start..]
            .iter()
            .take_while(|&&(q, _)| q == p)
            .map(|&(_, seq)| seq)
            .filter(|&seq| seq != REMOVED)
            .collect();
        out.extend(
            self.fresh
                .range((p, 0)..=(p, u64::MAX))
                .map(|&(_, seq)| seq),
        );
        out
    }

    /// Adds a segment.
    pub fn insert(&mut self, id: &[u8; 32], seq: u64) {
        self.fresh.insert((prefix(id), seq));
        if self.fresh.len() >= FRESH_MAX {
            self.merge();
        }
    }

    /// Removes a segment (a no-op if it is not indexed).
    pub fn remove(&mut self, id: &[u8; 32], seq: u64) {
        let p = prefix(id);
        if self.fresh.remove(&(p, seq)) {
            return;
        }
        let start = self.base.partition_point(|&(q, _)| q < p);
        if let Some(entry) = self.base[start..]
            .iter_mut()
            .take_while(|e| e.0 == p)
            .find(|e| e.1 == seq)
        {
            entry.1 = REMOVED;
            self.removed += 1;
            if self.removed > self.base.len() / 8 + FRESH_MAX {
                self.merge();
            }
        }
    }

    /// Folds the fresh entries into the base and drops removed ones, in
    /// place: merged from the back, so the base never exists twice.
    fn merge(&mut self) {
        self.base.retain(|&(_, seq)| seq != REMOVED);
        self.removed = 0;
        let fresh = std::mem::take(&mut self.fresh);
        let mut read = self.base.len();
        self.base.reserve_exact(fresh.len());
        self.base.resize(read + fresh.len(), (0, 0));
        let mut write = self.base.len();
        for &entry in fresh.iter().rev() {
            while read > 0 && self.base[read - 1].0 > entry.0 {
                write -= 1;
                read -= 1;
                self.base[write] = self.base[read];
            }
            write -= 1;
            self.base[write] = entry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(n: u64, collide: bool) -> [u8; 32] {
        let mut id = *blake3::hash(&n.to_le_bytes()).as_bytes();
        if collide {
            // Same prefix as segment 0's, different id.
            id[..8].copy_from_slice(&blake3::hash(&0u64.to_le_bytes()).as_bytes()[..8]);
        }
        id
    }

    /// Many inserts and removals, past several merges, against a plain
    /// map: every id finds its seq among its candidates, a removed one
    /// never, and colliding prefixes all stay findable.
    #[test]
    fn the_index_agrees_with_a_map_across_merges_and_collisions() {
        let mut index = IdIndex::from_entries(
            (0..1000u64)
                .map(|n| (prefix(&id(n, n % 97 == 5)), n))
                .collect(),
        );
        let mut model: BTreeMap<u64, [u8; 32]> =
            (0..1000u64).map(|n| (n, id(n, n % 97 == 5))).collect();
        let mut next = 1000u64;
        for step in 0..(3 * FRESH_MAX as u64) {
            if step % 3 == 2 {
                // Remove some old and some fresh entries.
                let victim = (step * 7919) % next;
                if let Some(id) = model.remove(&victim) {
                    index.remove(&id, victim);
                }
            } else {
                let new = id(next, next.is_multiple_of(1013));
                index.insert(&new, next);
                model.insert(next, new);
                next += 1;
            }
        }
        assert_eq!(index.len(), model.len());
        for (&seq, id) in &model {
            assert!(index.candidates(id).contains(&seq), "seq {seq}");
        }
        for seq in (0..next).filter(|s| !model.contains_key(s)).take(2000) {
            let gone = id(seq, seq % 97 == 5 || seq.is_multiple_of(1013));
            assert!(!index.candidates(&gone).contains(&seq), "removed {seq}");
        }
        // Every colliding id sees the others as candidates (checked by row).
        let colliding = index.candidates(&id(0, false));
        assert!(colliding.len() > 10, "{}", colliding.len());
        assert!(index.base.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
    }
}

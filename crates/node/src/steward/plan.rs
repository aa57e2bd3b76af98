//! What to do about one segment, given its row, its holders' states and
//! the time: nothing, rebuild some shards, or move one off a draining
//! holder. Pure: no table, no network.

use super::table::{HolderRow, SegmentRow, SlotRow, SlotState};

/// The holders' states, by holder number.
pub struct Holders<'a> {
    /// Every holder the table names, by number.
    pub rows: &'a [HolderRow],
    /// Seconds a holder (or a disk) may be away before its shards count as lost.
    pub grace_s: u64,
    /// Now.
    pub now: u64,
}

impl Holders<'_> {
    fn row(&self, holder: u32) -> Option<&HolderRow> {
        self.rows.get(holder as usize)
    }

    /// Up, and not marked bad.
    pub fn usable(&self, holder: u32) -> bool {
        self.row(holder)
            .is_some_and(|h| h.down_since.is_none() && !self.is_bad(h))
    }

    /// Marked bad now.
    pub fn is_bad(&self, holder: &HolderRow) -> bool {
        holder.bad_until.is_some_and(|until| self.now < until)
    }

    /// Draining (and usable, so its shards can still be read there).
    pub fn draining(&self, holder: u32) -> bool {
        self.usable(holder) && self.row(holder).is_some_and(|h| h.draining)
    }

    /// The shard can be counted on now.
    pub fn healthy(&self, slot: &SlotRow) -> bool {
        matches!(slot.state, SlotState::Ok | SlotState::New) && self.usable(slot.holder)
    }

    /// The shard is gone for good: failed, gone with a disk, offline or
    /// down past the grace, or at a bad holder. (A holder that is merely
    /// rebooting is neither healthy nor lost.)
    pub fn lost(&self, slot: &SlotRow) -> bool {
        let past_grace = |since: u64| self.now.saturating_sub(since) >= self.grace_s;
        match slot.state {
            SlotState::Failed | SlotState::Gone => return true,
            SlotState::Offline(since) if past_grace(since) => return true,
            _ => {}
        }
        match self.row(slot.holder) {
            Some(h) if self.is_bad(h) => true,
            Some(h) => h.down_since.is_some_and(past_grace),
            None => true,
        }
    }
}

/// What one segment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing (full, or only waiting out reboots, or beyond repair).
    Nothing,
    /// Fewer than k healthy now, but some holders are only down: look
    /// again soon (a holder that comes back is no event of its own).
    Later,
    /// Rebuild the shards at `lost` (indices) from k of `sources` (indices
    /// of healthy shards, the preferred first); `keep` are the healthy
    /// shards' indices.
    Repair {
        /// Shards to rebuild.
        lost: Vec<usize>,
        /// Healthy shards to read from, data shards first, rotated by
        /// `attempt` so a retry starts elsewhere.
        sources: Vec<usize>,
        /// Healthy shards (they stay).
        keep: Vec<usize>,
    },
    /// Move the shard at this index off its draining holder.
    Move {
        /// The shard.
        index: usize,
        /// The other healthy shards (they stay).
        keep: Vec<usize>,
    },
}

/// Decides for one segment. `margin`: healthy shards wanted above k (m
/// when unset: any lost shard is rebuilt). `attempt`: how many times a
/// repair of it failed, to rotate the sources.
pub fn plan(row: &SegmentRow, holders: &Holders, margin: Option<u8>, attempt: u32) -> Plan {
    let k = usize::from(row.k);
    let margin = usize::from(margin.unwrap_or(row.m));
    let healthy: Vec<usize> = (0..row.slots.len())
        .filter(|&i| holders.healthy(&row.slots[i]))
        .collect();
    if healthy.len() < k {
        let waiting = row
            .slots
            .iter()
            .any(|slot| !holders.healthy(slot) && !holders.lost(slot));
        // Beyond repair from here unless a holder comes back; the owner's
        // `cairn status` says so.
        return if waiting { Plan::Later } else { Plan::Nothing };
    }
    if healthy.len() < k + margin {
        let lost: Vec<usize> = (0..row.slots.len())
            .filter(|&i| holders.lost(&row.slots[i]))
            .collect();
        if !lost.is_empty() {
            // At the edge (k healthy), shards whose holders are merely down
            // are rebuilt too, for the same k reads.
            let lost = if healthy.len() <= k {
                (0..row.slots.len())
                    .filter(|i| !healthy.contains(i))
                    .collect()
            } else {
                lost
            };
            let mut sources = healthy.clone();
            if !sources.is_empty() {
                let turn = attempt as usize % sources.len();
                sources.rotate_left(turn);
            }
            return Plan::Repair {
                lost,
                sources,
                keep: healthy,
            };
        }
    }
    if let Some(index) = healthy
        .iter()
        .copied()
        .find(|&i| holders.draining(row.slots[i].holder))
    {
        return Plan::Move {
            index,
            keep: healthy.into_iter().filter(|&i| i != index).collect(),
        };
    }
    Plan::Nothing
}

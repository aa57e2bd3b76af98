//! The steward table's layout in `redb` (format 1, written down in
//! `docs/STEWARD.md`). Every key that grows with the table is chosen so
//! that tracking appends: segments are numbered in the order they were
//! tracked (`seq`), and the holder index, the audit queue and the lease
//! queue are keyed by that number or by a time that moves forward, so a
//! `Track` of 64 segments touches a few pages at the end of each table,
//! not 64 random ones. The segment-id index, whose inserts would be
//! random, is kept in memory (`ids.rs`), built from `id_prefixes`.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use cairn_proto::ids::{NodeId, OwnerId, ShardId};

/// The table format this code reads and writes (format 1, with a
/// durable id → seq index, is migrated when opened).
pub const FORMAT: u64 = 2;

/// Names → numbers: `format`, `next_seq`, `segments`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// seq → segment row.
pub const SEGMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("segments");
/// seq → the first 8 bytes of its segment id (little-endian), from which
/// the in-memory id index is built when the table opens.
pub const ID_PREFIXES: TableDefinition<u64, u64> = TableDefinition::new("id_prefixes");
/// Format 1's segment id → seq index, read once to migrate.
pub const SEGMENT_IDS_V1: TableDefinition<[u8; 32], u64> = TableDefinition::new("segment_ids");
/// (holder number, seq, shard index) → shard id: what each holder holds.
pub const HOLDER_SHARDS: TableDefinition<(u32, u64, u8), [u8; 32]> =
    TableDefinition::new("holder_shards");
/// (last audit time, seq) → (): the oldest audited first.
pub const AUDIT_QUEUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("audit_queue");
/// (lease end, seq) → (): the soonest to end first.
pub const LEASE_QUEUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("lease_queue");
/// (not before, seq) → (): segments to look at for repair or moves.
pub const REPAIR_QUEUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("repair_queue");
/// seq → its key time in `repair_queue`, so a segment is queued once.
pub const REPAIR_PENDING: TableDefinition<u64, u64> = TableDefinition::new("repair_pending");
/// Holder number → holder row.
pub const HOLDERS: TableDefinition<u32, &[u8]> = TableDefinition::new("holders");
/// Owner → segments tracked for it.
pub const OWNERS: TableDefinition<[u8; 32], u64> = TableDefinition::new("owners");

const ROW_VERSION: u8 = 1;
const SLOT_LEN: usize = 32 + 4 + 1 + 8;
const HEAD_LEN: usize = 1 + 32 + 32 + 1 + 1 + 8 + 8 + 8 + 1;

/// How one shard of a segment stands, as far as the steward knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Named by the owner's client and not yet proven by its holder: a
    /// failure here is no strike against the holder (the client's word
    /// is not the holder's).
    New,
    /// Proven by its holder (an audit passed, or the steward stored it).
    Ok,
    /// It failed an audit or its holder refused to read it: lost there.
    Failed,
    /// Its holder said it went with a disk that failed: lost, no blame.
    Gone,
    /// Its holder said its disk is offline since then: lost after the
    /// grace unless the disk comes back.
    Offline(u64),
}

/// One shard: its id, its holder's number and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRow {
    /// The shard.
    pub shard: ShardId,
    /// Its holder (a number in `holders`).
    pub holder: u32,
    /// How it stands.
    pub state: SlotState,
}

/// A segment as the table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRow {
    /// Its id (BLAKE3 over its shard ids in order).
    pub id: [u8; 32],
    /// Whose.
    pub owner: OwnerId,
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Bytes per shard.
    pub shard_len: u64,
    /// Unix time its leases run to.
    pub lease_until: u64,
    /// Its key time in the audit queue (the last audit, or when tracked).
    pub audited: u64,
    /// Its k + m shards in index order.
    pub slots: Vec<SlotRow>,
}

impl SegmentRow {
    /// `[version][id][owner][k][m][shard_len][lease_until][audited][n]` then
    /// n × `[shard][holder u32][state u8][since u64]`, integers little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_LEN + self.slots.len() * SLOT_LEN);
        out.push(ROW_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.owner.0);
        out.push(self.k);
        out.push(self.m);
        out.extend_from_slice(&self.shard_len.to_le_bytes());
        out.extend_from_slice(&self.lease_until.to_le_bytes());
        out.extend_from_slice(&self.audited.to_le_bytes());
        out.push(self.slots.len() as u8);
        for slot in &self.slots {
            out.extend_from_slice(&slot.shard.0);
            out.extend_from_slice(&slot.holder.to_le_bytes());
            let (tag, since) = match slot.state {
                SlotState::Ok => (0u8, 0u64),
                SlotState::Failed => (1, 0),
                SlotState::Gone => (2, 0),
                SlotState::Offline(since) => (3, since),
                SlotState::New => (4, 0),
            };
            out.push(tag);
            out.extend_from_slice(&since.to_le_bytes());
        }
        out
    }

    /// Reads a row; `None` if it is not one this code wrote.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEAD_LEN || bytes[0] != ROW_VERSION {
            return None;
        }
        let n = usize::from(bytes[HEAD_LEN - 1]);
        if bytes.len() != HEAD_LEN + n * SLOT_LEN {
            return None;
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let id: [u8; 32] = bytes[1..33].try_into().ok()?;
        let owner = OwnerId(bytes[33..65].try_into().ok()?);
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let at = HEAD_LEN + i * SLOT_LEN;
            let shard = ShardId(bytes[at..at + 32].try_into().ok()?);
            let holder = u32::from_le_bytes(bytes[at + 32..at + 36].try_into().ok()?);
            let since = u64_at(at + 37);
            let state = match bytes[at + 36] {
                0 => SlotState::Ok,
                1 => SlotState::Failed,
                2 => SlotState::Gone,
                3 => SlotState::Offline(since),
                4 => SlotState::New,
                _ => return None,
            };
            slots.push(SlotRow {
                shard,
                holder,
                state,
            });
        }
        Some(Self {
            id,
            owner,
            k: bytes[65],
            m: bytes[66],
            shard_len: u64_at(67),
            lease_until: u64_at(75),
            audited: u64_at(83),
            slots,
        })
    }
}

/// A holder as the table keeps it: liveness, trust and work in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRow {
    /// Its node id.
    pub node: NodeId,
    /// Down (by gossip or a failed dial) since then.
    pub down_since: Option<u64>,
    /// The down spell its shards were last swept for (so one spell past
    /// the grace is swept once).
    pub swept_down: Option<u64>,
    /// Up by gossip, but the steward's own requests went unanswered since
    /// then: past the grace, that counts against it.
    pub silent_since: Option<u64>,
    /// Requests unanswered since `silent_since`.
    pub silent_asks: u32,
    /// Failed audits in a row (a passed one resets it).
    pub failures_in_a_row: u32,
    /// Refused reads in a row: only a served read resets it, so proving
    /// possession is no way out of serving.
    pub read_refusals: u32,
    /// Marked bad: its shards are lost, and it gets none until then.
    pub bad_until: Option<u64>,
    /// Times it was marked bad (each doubles the next spell).
    pub strikes: u32,
    /// Audits it must still pass after a bad spell before it is trusted.
    pub probation_left: u32,
    /// Its owner is taking it out: its shards move elsewhere.
    pub draining: bool,
    /// A sweep of its shards in progress: the next seq to look at.
    pub sweep: Option<u64>,
    /// How far its report of missing shards has been read.
    pub missing_read: u64,
}

impl HolderRow {
    /// A holder first named now.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            down_since: None,
            swept_down: None,
            silent_since: None,
            silent_asks: 0,
            failures_in_a_row: 0,
            read_refusals: 0,
            bad_until: None,
            strikes: 0,
            probation_left: 0,
            draining: false,
            sweep: None,
            missing_read: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_back_as_written_and_a_damaged_one_is_refused() {
        let row = SegmentRow {
            id: [7; 32],
            owner: OwnerId([9; 32]),
            k: 4,
            m: 2,
            shard_len: 1 << 20,
            lease_until: 123,
            audited: 45,
            slots: (0..6)
                .map(|i| SlotRow {
                    shard: ShardId([i; 32]),
                    holder: u32::from(i) * 1000,
                    state: match i {
                        0 => SlotState::Failed,
                        1 => SlotState::Gone,
                        2 => SlotState::Offline(99),
                        3 => SlotState::New,
                        _ => SlotState::Ok,
                    },
                })
                .collect(),
        };
        let bytes = row.encode();
        assert_eq!(SegmentRow::decode(&bytes), Some(row));
        assert_eq!(SegmentRow::decode(&bytes[..bytes.len() - 1]), None);
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(SegmentRow::decode(&other), None, "a later row version");
    }
}

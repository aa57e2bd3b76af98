//! The steward table as cairnd wrote it before the table moved to `redb`
//! (one postcard file, `steward.bin`, rewritten whole): read once, its
//! segments handed to the new table, and the file renamed aside, so an
//! update keeps every segment stewarded.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::{Steward, StewardError, TrackedSegment};
use cairn_client::segment::Coding;
use cairn_proto::ids::{NodeId, OwnerId, ShardId};

/// The old file's name in the state directory.
pub const FILE: &str = "steward.bin";

#[derive(Deserialize)]
struct State {
    steward: Table,
    #[allow(
        dead_code,
        reason = "in the old layout; addresses now come from membership"
    )]
    directory: BTreeMap<NodeId, (String, Option<String>)>,
}

#[derive(Deserialize)]
struct Table {
    #[allow(dead_code, reason = "in the old layout; the configured policy applies")]
    policy: Policy,
    segments: BTreeMap<[u8; 32], Segment>,
    #[allow(
        dead_code,
        reason = "in the old layout; holders' states are learnt again"
    )]
    holders: HashMap<NodeId, Holder>,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "read only to get past it")]
struct Policy {
    grace_s: u64,
    repair_margin: Option<u8>,
    audit_every_s: u64,
    audits_per_holder: usize,
    bad_after: u32,
    lease_s: u64,
    renew_before_s: u64,
}

#[derive(Deserialize)]
struct Segment {
    owner: OwnerId,
    coding: Coding,
    shard_len: u64,
    slots: Vec<Slot>,
    lease_until: u64,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "read only to get past it")]
struct Slot {
    shard: ShardId,
    holder: NodeId,
    audited: u64,
    failed: bool,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "read only to get past it")]
struct Holder {
    down_since: Option<u64>,
    failures_in_a_row: u32,
    bad: bool,
    draining: bool,
}

/// Moves the old table in `state_dir`, if there is one, into `steward`;
/// returns how many segments it held. The old file is renamed to
/// `steward.bin.imported` once its segments are in.
pub fn import(
    state_dir: &Path,
    steward: &mut Steward,
    now: u64,
) -> Result<Option<u64>, StewardError> {
    let path = state_dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StewardError::Damaged {
                path,
                reason: e.to_string(),
            });
        }
    };
    let state: State = postcard::from_bytes(&bytes).map_err(|e| StewardError::Damaged {
        path: path.clone(),
        reason: format!("the old table does not decode: {e}"),
    })?;
    let mut by_owner: BTreeMap<OwnerId, Vec<TrackedSegment>> = BTreeMap::new();
    for segment in state.steward.segments.into_values() {
        by_owner
            .entry(segment.owner)
            .or_default()
            .push(TrackedSegment {
                coding: segment.coding,
                shard_len: segment.shard_len,
                shards: segment.slots.iter().map(|s| (s.shard, s.holder)).collect(),
                lease_until: segment.lease_until,
            });
    }
    let mut total = 0;
    for (owner, segments) in by_owner {
        for batch in segments.chunks(1024) {
            steward.track(&owner, batch, now)?;
        }
        total += segments.len() as u64;
    }
    let aside = state_dir.join(format!("{FILE}.imported"));
    std::fs::rename(&path, &aside).map_err(|e| StewardError::Damaged {
        path,
        reason: format!("imported, but cannot be renamed aside: {e}"),
    })?;
    Ok(Some(total))
}

//! The steward: the owner's box keeps, for the owner's data, every shard's
//! id, size, segment and holder, and decides who to audit, which segments
//! need repair and which leases to renew. It never holds a decryption key:
//! repair rebuilds shards from any k others with Reed–Solomon alone.
//!
//! Plain code, driven by events (a node came or went, an audit's outcome, a
//! repair done) and a given time (Unix seconds); it returns tasks, and the
//! daemon's steward loop carries them out over the network. Tested with
//! simulated nodes and time over many seeds (`tests/steward_sim.rs`).
//!
//! Rules:
//! - A shard is **healthy** when its holder is up, not marked bad, and the
//!   shard has not failed an audit.
//! - A shard is **lost** when its holder has been down for the grace period
//!   (a box that reboots comes back well within it), when it failed an audit
//!   (the holder lied or lost it: no grace), or when its holder is bad
//!   (`bad_after` audit failures in a row).
//! - A segment is **repaired** when its healthy shards fall below
//!   k + `repair_margin` and some are lost; reboots alone never trigger it.
//!   A repair reads exactly k shards and rebuilds every lost shard of the
//!   segment at once; at the edge (only k healthy), it also rebuilds the
//!   shards of holders that are merely down, for the same k reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use cairn_client::segment::Coding;
use cairn_proto::ids::{NodeId, OwnerId, ShardId};

/// The steward's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StewardPolicy {
    /// Seconds a holder may be unreachable before its shards count as lost.
    pub grace_s: u64,
    /// Healthy shards kept above k; a segment with fewer is repaired.
    /// `m` (the default) repairs any lost shard.
    pub repair_margin: Option<u8>,
    /// Each shard is audited about this often (seconds).
    pub audit_every_s: u64,
    /// At most this many audits of one holder per round, so audits cost
    /// every holder little at a time.
    pub audits_per_holder: usize,
    /// Failed audits in a row that mark a holder bad.
    pub bad_after: u32,
    /// Seconds a lease is granted for.
    pub lease_s: u64,
    /// Leases are renewed when they end within this many seconds.
    pub renew_before_s: u64,
}

impl Default for StewardPolicy {
    fn default() -> Self {
        Self {
            grace_s: 30 * 60,
            repair_margin: None,
            audit_every_s: 24 * 3600,
            audits_per_holder: 4,
            bad_after: 3,
            lease_s: 90 * 24 * 3600,
            renew_before_s: 30 * 24 * 3600,
        }
    }
}

/// A segment as the owner's client reports it after storing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedSegment {
    /// Whose data (shards are stored and renewed under this owner).
    pub owner: OwnerId,
    /// Its coding.
    pub coding: Coding,
    /// Bytes per shard.
    pub shard_len: u64,
    /// Its k + m shards in index order, and their holders.
    pub shards: Vec<(ShardId, NodeId)>,
    /// Unix time its leases run to.
    pub lease_until: u64,
}

impl TrackedSegment {
    /// The segment's name: BLAKE3 over its shard ids in order.
    pub fn id(&self) -> SegmentId {
        let mut hasher = blake3::Hasher::new();
        for (shard, _) in &self.shards {
            hasher.update(&shard.0);
        }
        SegmentId(*hasher.finalize().as_bytes())
    }
}

/// A segment's name in the steward table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub [u8; 32]);

/// How an audit went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// The proof checked out against the shard id.
    Passed,
    /// The holder answered without a valid proof, or said it has no such
    /// shard: the shard is lost there.
    Failed,
    /// No answer (down, slow, unreachable): not an accusation.
    Unreachable,
}

/// Audit one shard at its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditTask {
    /// The segment.
    pub segment: SegmentId,
    /// The shard.
    pub shard: ShardId,
    /// Its length (to draw challenge ranges).
    pub shard_len: u64,
    /// Who should hold it.
    pub holder: NodeId,
}

/// Rebuild a segment's lost shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairTask {
    /// The segment.
    pub segment: SegmentId,
    /// Whose.
    pub owner: OwnerId,
    /// Its coding.
    pub coding: Coding,
    /// Bytes per shard.
    pub shard_len: u64,
    /// Exactly k healthy shards to read: (index, id, holder).
    pub sources: Vec<(usize, ShardId, NodeId)>,
    /// Shards to rebuild: (index, id).
    pub lost: Vec<(usize, ShardId)>,
    /// Holders of the segment's healthy shards: new holders must differ,
    /// and together they must pass the placement check.
    pub keep: Vec<(usize, NodeId)>,
    /// Nodes not to place on: bad, down or draining.
    pub avoid: Vec<NodeId>,
    /// The lease to give rebuilt shards.
    pub lease_until: u64,
}

/// Move one shard off a draining holder: read it there (one shard, not
/// k: the holder still has it), store it on a new node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    /// The segment.
    pub segment: SegmentId,
    /// Whose.
    pub owner: OwnerId,
    /// Its coding.
    pub coding: Coding,
    /// Bytes per shard.
    pub shard_len: u64,
    /// The shard's index and id.
    pub shard: (usize, ShardId),
    /// The draining holder.
    pub from: NodeId,
    /// Holders of the segment's other shards: the new holder must differ.
    pub keep: Vec<(usize, NodeId)>,
    /// Nodes not to place on: bad, down or draining.
    pub avoid: Vec<NodeId>,
    /// The lease to give the moved shard.
    pub lease_until: u64,
}

/// Renew a segment's leases at its holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewTask {
    /// The segment.
    pub segment: SegmentId,
    /// (shard, holder) for every healthy shard.
    pub shards: Vec<(ShardId, NodeId)>,
    /// The new end.
    pub until: u64,
}

/// How one segment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redundancy {
    /// Healthy shards.
    pub healthy: usize,
    /// k + m.
    pub total: usize,
    /// k.
    pub needed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Segment {
    owner: OwnerId,
    coding: Coding,
    shard_len: u64,
    slots: Vec<Slot>,
    lease_until: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot {
    shard: ShardId,
    holder: NodeId,
    /// Unix time of the last passed audit (or of placement).
    audited: u64,
    /// The shard failed an audit at its holder.
    failed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Holder {
    /// Unreachable since then; `None` when up.
    down_since: Option<u64>,
    failures_in_a_row: u32,
    bad: bool,
    /// Its owner is taking it out: move its shards elsewhere.
    #[serde(default)]
    draining: bool,
}

/// The steward table and its decisions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Steward {
    policy: StewardPolicy,
    segments: BTreeMap<SegmentId, Segment>,
    holders: HashMap<NodeId, Holder>,
    /// Repairs handed out and not yet reported back.
    #[serde(skip)]
    repairing: HashSet<SegmentId>,
}

impl Steward {
    /// An empty table.
    pub fn new(policy: StewardPolicy) -> Self {
        Self {
            policy,
            segments: BTreeMap::new(),
            holders: HashMap::new(),
            repairing: HashSet::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &StewardPolicy {
        &self.policy
    }

    /// Changes the policy (a table loaded from disk takes the configured one).
    pub fn set_policy(&mut self, policy: StewardPolicy) {
        self.policy = policy;
    }

    /// Segments tracked for `owner`.
    pub fn count(&self, owner: &OwnerId) -> usize {
        self.segments.values().filter(|s| s.owner == *owner).count()
    }

    /// Starts (or keeps) tracking a segment the owner stored at `now`. A
    /// segment already tracked keeps its known holders (the client's view
    /// may be older than a repair) and takes the later lease.
    pub fn track(&mut self, segment: TrackedSegment, now: u64) -> SegmentId {
        let id = segment.id();
        if let Some(known) = self.segments.get_mut(&id) {
            known.lease_until = known.lease_until.max(segment.lease_until);
            return id;
        }
        for (_, holder) in &segment.shards {
            self.holders.entry(*holder).or_default();
        }
        self.segments.insert(
            id,
            Segment {
                owner: segment.owner,
                coding: segment.coding,
                shard_len: segment.shard_len,
                lease_until: segment.lease_until,
                slots: segment
                    .shards
                    .iter()
                    .map(|(shard, holder)| Slot {
                        shard: *shard,
                        holder: *holder,
                        audited: now,
                        failed: false,
                    })
                    .collect(),
            },
        );
        id
    }

    /// Stops tracking a segment (the owner deleted it): its leases are no
    /// longer renewed and its holders collect it when they run out.
    pub fn untrack(&mut self, segment: SegmentId) {
        self.segments.remove(&segment);
        self.repairing.remove(&segment);
    }

    /// Stops tracking `segment` if it is `owner`'s; another owner's
    /// segment of that id is left alone.
    pub fn untrack_owned(&mut self, owner: &OwnerId, segment: SegmentId) {
        if self
            .segments
            .get(&segment)
            .is_some_and(|tracked| tracked.owner == *owner)
        {
            self.untrack(segment);
        }
    }

    /// Segments tracked.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Every holder the table names.
    pub fn holders(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.holders.keys().copied().collect();
        nodes.sort();
        nodes
    }

    /// A holder answered.
    pub fn node_up(&mut self, node: NodeId) {
        self.holders.entry(node).or_default().down_since = None;
    }

    /// A holder did not answer at `now` (the first time counts).
    pub fn node_down(&mut self, node: NodeId, now: u64) {
        let holder = self.holders.entry(node).or_default();
        holder.down_since.get_or_insert(now);
    }

    /// Whether a holder is known to be down now.
    pub fn is_down(&self, node: &NodeId) -> bool {
        self.holders
            .get(node)
            .is_some_and(|h| h.down_since.is_some())
    }

    /// A holder's owner started (or stopped) draining it.
    pub fn node_draining(&mut self, node: NodeId, draining: bool) {
        self.holders.entry(node).or_default().draining = draining;
    }

    /// Shards still held by a draining node.
    pub fn held_by(&self, node: &NodeId) -> usize {
        self.segments
            .values()
            .flat_map(|s| &s.slots)
            .filter(|slot| slot.holder == *node)
            .count()
    }

    /// Whether a holder is marked bad (it failed audits repeatedly).
    pub fn is_bad(&self, node: &NodeId) -> bool {
        self.holders.get(node).is_some_and(|h| h.bad)
    }

    /// Records an audit's outcome.
    pub fn audited(&mut self, task: &AuditTask, outcome: AuditOutcome, now: u64) {
        let bad_after = self.policy.bad_after;
        match outcome {
            AuditOutcome::Unreachable => self.node_down(task.holder, now),
            AuditOutcome::Passed | AuditOutcome::Failed => {
                let holder = self.holders.entry(task.holder).or_default();
                holder.down_since = None;
                if outcome == AuditOutcome::Passed {
                    holder.failures_in_a_row = 0;
                } else {
                    holder.failures_in_a_row += 1;
                    if holder.failures_in_a_row >= bad_after {
                        holder.bad = true;
                    }
                }
                if let Some(slot) = self.slot_mut(task.segment, task.shard, task.holder) {
                    slot.audited = now;
                    slot.failed = outcome == AuditOutcome::Failed;
                }
            }
        }
    }

    /// Records a finished repair: each rebuilt shard (by index) and its new
    /// holder. Rebuilt shards are byte-identical, so their ids stay.
    pub fn repaired(&mut self, segment: SegmentId, moved: &[(usize, NodeId)], now: u64) {
        self.repairing.remove(&segment);
        let Some(entry) = self.segments.get_mut(&segment) else {
            return;
        };
        for &(index, holder) in moved {
            if let Some(slot) = entry.slots.get_mut(index) {
                slot.holder = holder;
                slot.failed = false;
                slot.audited = now;
            }
            self.holders.entry(holder).or_default();
        }
    }

    /// A repair could not be finished; it will be handed out again.
    pub fn repair_failed(&mut self, segment: SegmentId) {
        self.repairing.remove(&segment);
    }

    /// Records renewed leases.
    pub fn renewed(&mut self, segment: SegmentId, until: u64) {
        if let Some(entry) = self.segments.get_mut(&segment) {
            entry.lease_until = entry.lease_until.max(until);
        }
    }

    /// Audits due at `now`, oldest first, at most `audits_per_holder` per
    /// holder and `max` in all.
    pub fn audits(&self, now: u64, max: usize) -> Vec<AuditTask> {
        let mut due: Vec<(u64, AuditTask)> = Vec::new();
        for (id, segment) in &self.segments {
            for slot in &segment.slots {
                if slot.failed
                    || !self.holder_usable(&slot.holder)
                    || now.saturating_sub(slot.audited) < self.policy.audit_every_s
                {
                    continue;
                }
                due.push((
                    slot.audited,
                    AuditTask {
                        segment: *id,
                        shard: slot.shard,
                        shard_len: segment.shard_len,
                        holder: slot.holder,
                    },
                ));
            }
        }
        due.sort_by_key(|(audited, task)| (*audited, task.shard));
        let mut per_holder: HashMap<NodeId, usize> = HashMap::new();
        due.into_iter()
            .filter(|(_, task)| {
                let count = per_holder.entry(task.holder).or_default();
                *count += 1;
                *count <= self.policy.audits_per_holder
            })
            .map(|(_, task)| task)
            .take(max)
            .collect()
    }

    /// Repairs due at `now`; each is handed out once until it is reported
    /// back ([`Steward::repaired`] or [`Steward::repair_failed`]).
    pub fn repairs(&mut self, now: u64) -> Vec<RepairTask> {
        let mut tasks = Vec::new();
        for (id, segment) in &self.segments {
            if self.repairing.contains(id) {
                continue;
            }
            if let Some(task) = self.plan_repair(*id, segment, now) {
                tasks.push(task);
            }
        }
        for task in &tasks {
            self.repairing.insert(task.segment);
        }
        tasks
    }

    /// Shards to move off draining holders, at most one task per segment at
    /// a time (a segment being repaired waits). Each is handed out once
    /// until reported back ([`Steward::repaired`] or [`Steward::repair_failed`]).
    pub fn moves(&mut self, now: u64) -> Vec<MoveTask> {
        let mut tasks = Vec::new();
        for (id, segment) in &self.segments {
            if self.repairing.contains(id) {
                continue;
            }
            let draining = segment.slots.iter().enumerate().find(|(_, slot)| {
                self.healthy(slot) && self.holders.get(&slot.holder).is_some_and(|h| h.draining)
            });
            let Some((index, slot)) = draining else {
                continue;
            };
            tasks.push(MoveTask {
                segment: *id,
                owner: segment.owner,
                coding: segment.coding,
                shard_len: segment.shard_len,
                shard: (index, slot.shard),
                from: slot.holder,
                keep: segment
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| *i != index && self.healthy(s))
                    .map(|(i, s)| (i, s.holder))
                    .collect(),
                avoid: self.unplaceable(),
                lease_until: segment.lease_until.max(now + self.policy.lease_s),
            });
        }
        for task in &tasks {
            self.repairing.insert(task.segment);
        }
        tasks
    }

    /// Leases to renew at `now`.
    pub fn renewals(&self, now: u64) -> Vec<RenewTask> {
        let until = now + self.policy.lease_s;
        self.segments
            .iter()
            .filter(|(_, s)| s.lease_until.saturating_sub(now) < self.policy.renew_before_s)
            .map(|(id, s)| RenewTask {
                segment: *id,
                shards: s
                    .slots
                    .iter()
                    .filter(|slot| !slot.failed && self.holder_usable(&slot.holder))
                    .map(|slot| (slot.shard, slot.holder))
                    .collect(),
                until,
            })
            .collect()
    }

    /// How a segment stands at `now`.
    pub fn redundancy(&self, segment: SegmentId, now: u64) -> Option<Redundancy> {
        self.segments
            .get(&segment)
            .map(|s| self.redundancy_of(s, now))
    }

    /// Where a shard is now, as far as the table knows.
    pub fn holder_of(&self, shard: &ShardId) -> Option<NodeId> {
        self.segments
            .values()
            .flat_map(|s| &s.slots)
            .find(|slot| slot.shard == *shard)
            .map(|slot| slot.holder)
    }

    /// Every (shard, holder) of an owner: what a client overlays on its
    /// catalog, whose holders were right when it stored the data.
    pub fn locations(&self, owner: &OwnerId) -> Vec<(ShardId, NodeId)> {
        self.segments
            .values()
            .filter(|s| s.owner == *owner)
            .flat_map(|s| s.slots.iter().map(|slot| (slot.shard, slot.holder)))
            .collect()
    }

    fn slot_mut(
        &mut self,
        segment: SegmentId,
        shard: ShardId,
        holder: NodeId,
    ) -> Option<&mut Slot> {
        self.segments
            .get_mut(&segment)?
            .slots
            .iter_mut()
            .find(|slot| slot.shard == shard && slot.holder == holder)
    }

    fn holder_usable(&self, node: &NodeId) -> bool {
        self.holders
            .get(node)
            .is_none_or(|h| h.down_since.is_none() && !h.bad)
    }

    fn healthy(&self, slot: &Slot) -> bool {
        !slot.failed && self.holder_usable(&slot.holder)
    }

    /// Lost for good: failed, held by a bad node, or down past the grace.
    fn lost(&self, slot: &Slot, now: u64) -> bool {
        if slot.failed {
            return true;
        }
        match self.holders.get(&slot.holder) {
            Some(h) if h.bad => true,
            Some(Holder {
                down_since: Some(since),
                ..
            }) => now.saturating_sub(*since) >= self.policy.grace_s,
            _ => false,
        }
    }

    fn redundancy_of(&self, segment: &Segment, _now: u64) -> Redundancy {
        Redundancy {
            healthy: segment.slots.iter().filter(|s| self.healthy(s)).count(),
            total: segment.coding.total(),
            needed: usize::from(segment.coding.k),
        }
    }

    /// Nodes no shard should go to now: bad, down or draining.
    fn unplaceable(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .holders
            .iter()
            .filter(|(_, h)| h.bad || h.down_since.is_some() || h.draining)
            .map(|(node, _)| *node)
            .collect();
        nodes.sort();
        nodes
    }

    fn plan_repair(&self, id: SegmentId, segment: &Segment, now: u64) -> Option<RepairTask> {
        let k = usize::from(segment.coding.k);
        let margin = usize::from(self.policy.repair_margin.unwrap_or(segment.coding.m));
        let healthy: Vec<(usize, &Slot)> = segment
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| self.healthy(s))
            .collect();
        if healthy.len() >= k + margin || healthy.len() < k {
            return None;
        }
        let lost: Vec<(usize, ShardId)> = segment
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| self.lost(s, now))
            .map(|(i, s)| (i, s.shard))
            .collect();
        if lost.is_empty() {
            // Only reboots: wait them out.
            return None;
        }
        // A repair is running anyway; at the edge (k healthy), shards whose
        // holders are merely down are rebuilt too, for the same k reads.
        let lost = if healthy.len() <= k {
            segment
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !self.healthy(s))
                .map(|(i, s)| (i, s.shard))
                .collect()
        } else {
            lost
        };
        // Data shards first: decoding from originals is cheapest.
        let sources = healthy
            .iter()
            .take(k)
            .map(|(i, s)| (*i, s.shard, s.holder))
            .collect();
        Some(RepairTask {
            segment: id,
            owner: segment.owner,
            coding: segment.coding,
            shard_len: segment.shard_len,
            sources,
            lost,
            keep: healthy.iter().map(|(i, s)| (*i, s.holder)).collect(),
            avoid: self.unplaceable(),
            lease_until: segment.lease_until.max(now + self.policy.lease_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4M2: Coding = Coding { k: 4, m: 2 };

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn segment(seed: u8) -> TrackedSegment {
        TrackedSegment {
            owner: OwnerId([9; 32]),
            coding: K4M2,
            shard_len: 1024,
            shards: (0..6)
                .map(|i| (ShardId([seed.wrapping_mul(16) + i; 32]), node(i + 1)))
                .collect(),
            lease_until: 100_000_000,
        }
    }

    fn policy() -> StewardPolicy {
        StewardPolicy {
            grace_s: 600,
            ..StewardPolicy::default()
        }
    }

    #[test]
    fn a_reboot_within_the_grace_repairs_nothing_a_loss_after_it_does() {
        let mut steward = Steward::new(policy());
        let id = steward.track(segment(1), 0);
        steward.node_down(node(3), 100);
        assert!(steward.repairs(699).is_empty(), "within the grace");
        steward.node_up(node(3));
        assert!(steward.repairs(5_000).is_empty(), "back in time");
        steward.node_down(node(3), 6_000);
        let tasks = steward.repairs(6_600);
        assert_eq!(tasks.len(), 1);
        let task = &tasks[0];
        assert_eq!(task.lost, vec![(2, ShardId([18; 32]))]);
        assert_eq!(task.sources.len(), 4, "exactly k sources");
        assert!(task.sources.iter().all(|(_, _, holder)| *holder != node(3)));
        assert!(steward.repairs(6_601).is_empty(), "handed out once");
        steward.repaired(id, &[(2, node(9))], 6_700);
        assert_eq!(steward.holder_of(&ShardId([18; 32])), Some(node(9)));
        assert_eq!(
            steward.redundancy(id, 6_700).unwrap().healthy,
            6,
            "full again"
        );
    }

    #[test]
    fn at_the_edge_a_down_holder_is_rebuilt_along_with_a_lost_one() {
        let mut steward = Steward::new(policy());
        steward.track(segment(1), 0);
        steward.node_down(node(1), 100);
        steward.node_down(node(2), 100);
        assert!(steward.repairs(101).is_empty(), "two reboots: wait");
        steward.node_up(node(2));
        steward.node_down(node(2), 750);
        // Node 1 is past the grace, node 2 only rebooting; k healthy remain.
        let tasks = steward.repairs(800);
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            tasks[0].lost.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1],
            "both, for the same k reads"
        );
    }

    #[test]
    fn a_lying_holder_loses_its_shard_at_once_and_is_marked_bad() {
        let mut steward = Steward::new(policy());
        for seed in 1..=4 {
            steward.track(segment(seed), 0);
        }
        let now = policy().audit_every_s;
        let audits = steward.audits(now, 100);
        assert_eq!(audits.len(), 24, "every shard is due");
        let lies: Vec<AuditTask> = audits
            .iter()
            .filter(|t| t.holder == node(5))
            .copied()
            .collect();
        assert_eq!(lies.len(), 4);
        steward.audited(&lies[0], AuditOutcome::Failed, now);
        steward.audited(&lies[1], AuditOutcome::Failed, now);
        assert!(!steward.is_bad(&node(5)));
        assert_eq!(steward.repairs(now).len(), 2, "no grace for a failed audit");
        steward.audited(&lies[2], AuditOutcome::Failed, now);
        assert!(steward.is_bad(&node(5)));
        assert_eq!(
            steward.repairs(now).len(),
            2,
            "a bad holder's other shards are lost too"
        );
        assert!(steward.audits(now, 100).iter().all(|t| t.holder != node(5)));
    }

    #[test]
    fn a_draining_holder_is_emptied_one_shard_per_segment_at_a_time() {
        let mut steward = Steward::new(policy());
        let ids: Vec<SegmentId> = (1..=3)
            .map(|seed| steward.track(segment(seed), 0))
            .collect();
        assert!(steward.moves(10).is_empty());
        steward.node_draining(node(2), true);
        assert_eq!(steward.held_by(&node(2)), 3);
        let moves = steward.moves(10);
        assert_eq!(moves.len(), 3, "one per segment");
        for task in &moves {
            assert_eq!(task.from, node(2));
            assert!(task.avoid.contains(&node(2)), "never back onto it");
            assert_eq!(task.keep.len(), 5);
        }
        assert!(steward.moves(11).is_empty(), "handed out once");
        assert!(steward.repairs(11).is_empty(), "draining is not a loss");
        for task in &moves {
            steward.repaired(task.segment, &[(task.shard.0, node(9))], 12);
        }
        assert_eq!(steward.held_by(&node(2)), 0);
        assert!(steward.moves(13).is_empty());
        for id in ids {
            assert_eq!(steward.redundancy(id, 13).unwrap().healthy, 6);
        }
    }

    #[test]
    fn audits_spread_over_holders_and_time() {
        let mut steward = Steward::new(StewardPolicy {
            audits_per_holder: 2,
            ..policy()
        });
        for seed in 1..=4 {
            steward.track(segment(seed), 0);
        }
        let every = policy().audit_every_s;
        assert!(steward.audits(every - 1, 100).is_empty(), "not due yet");
        let round = steward.audits(every, 100);
        assert_eq!(round.len(), 12, "2 per holder");
        for task in &round {
            steward.audited(task, AuditOutcome::Passed, every);
        }
        let next = steward.audits(every, 100);
        assert_eq!(next.len(), 12, "the others, not the ones just audited");
        assert!(next.iter().all(|t| !round.contains(t)));
        assert_eq!(steward.audits(every, 5).len(), 5, "at most max");
    }

    #[test]
    fn unreachable_is_no_accusation_and_leases_are_renewed_in_time() {
        let mut steward = Steward::new(policy());
        let id = steward.track(segment(1), 0);
        let task = steward.audits(policy().audit_every_s, 1)[0];
        for _ in 0..10 {
            steward.audited(&task, AuditOutcome::Unreachable, 100_000);
        }
        assert!(!steward.is_bad(&task.holder));
        steward.node_up(task.holder);
        assert!(steward.renewals(0).is_empty());
        let renew_at = 100_000_000 - policy().renew_before_s + 1;
        let renewals = steward.renewals(renew_at);
        assert_eq!(renewals.len(), 1);
        assert_eq!(renewals[0].shards.len(), 6);
        steward.renewed(id, renewals[0].until);
        assert!(steward.renewals(renew_at).is_empty());
        steward.untrack(id);
        assert!(steward.is_empty());
    }
}

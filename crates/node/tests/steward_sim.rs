//! The steward against a simulated household swarm: 50 nodes on 25 sites,
//! 20 owners, simulated time, over several seeds. Plain code and a seeded
//! generator: every run of a seed is the same run. The table is the real
//! one (`redb`, in memory), driven only through the steward's own API.
//!
//! What happens, in order:
//! 1. Every owner tracks its segments; one more owner (any member may be
//!    one) tracks segments naming honest holders that never received them.
//! 2. Churn: short reboots only, while audits prove every shard once.
//!    Nothing is repaired.
//! 3. One node loses one of its two disks and reports the shards that
//!    went with it: exactly those segments are repaired, and the node is
//!    not blamed.
//! 4. A liar drops every shard and answers audits with errors; a refuser
//!    keeps its shards and passes proofs but will not serve a read. Both
//!    are found and their shards rebuilt elsewhere.
//! 5. Up to m whole sites die at once; everything is rebuilt.
//!
//! Checked for every seed: no segment ever has fewer than k shards left;
//! no honest node (the slow one, the disk loser, those the fake segments
//! name) is marked bad; repair reads at most 1.05 × the lower bound (k
//! shards per damaged segment per incident); at the end every segment is
//! back to k + m healthy shards.
//!
//! `CAIRN_SIM_SEGMENTS` sets the table's size (default 6,000 per seed over
//! 4 seeds; `CAIRN_SIM_SEGMENTS=1000000` runs the household's million
//! segments on one seed).

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_client::placement::{self, Candidate};
use cairn_client::segment::Coding;
use cairn_node::steward::{
    AuditOutcome, Missing, RenewOutcome, SegmentId, Steward, StewardPolicy, TrackedSegment,
};
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

const CODING: Coding = Coding { k: 4, m: 2 };
const SITES: usize = 25;
const NODES_PER_SITE: usize = 2;
const OWNERS: u64 = 20;
const SHARD_LEN: u64 = 1 << 20;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const AUDIT_PERIOD: u64 = 2 * DAY;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Life {
    Up,
    /// Rebooting until then.
    Rebooting(u64),
    /// Gone for good, with its disks.
    Dead,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Conduct {
    Honest,
    /// Stores nothing; answers audits and reads with errors.
    Liar,
    /// Keeps its shards, passes proofs, refuses whole reads.
    Refuser,
}

struct Node {
    id: NodeId,
    site: usize,
    life: Life,
    conduct: Conduct,
}

/// Where one segment's shards physically are.
#[derive(Clone, Copy)]
struct Placed {
    holders: [u16; 6],
    /// Bit i: shard i is on its holder.
    present: u8,
}

struct World {
    seed: u64,
    rng: StdRng,
    nodes: Vec<Node>,
    by_id: HashMap<NodeId, usize>,
    segments: Vec<Placed>,
    ids: HashMap<SegmentId, u32>,
    slow: usize,
    repair_bytes: u64,
    /// The lower bound: k shards per damaged segment per incident.
    lower_bound: u64,
    repaired: HashSet<u32>,
}

fn shard_id(seed: u64, segment: u32, index: u8) -> ShardId {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&segment.to_le_bytes());
    id[4] = index;
    id[5..13].copy_from_slice(&seed.to_le_bytes());
    ShardId(id)
}

/// Which of a node's two disks holds a shard.
fn disk_of(segment: u32, index: u8) -> u8 {
    (blake3::hash(&[segment.to_le_bytes().as_slice(), &[index]].concat()).as_bytes()[0]) & 1
}

impl World {
    fn new(seed: u64, count: u32) -> (Self, Steward) {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes: Vec<Node> = (0..SITES * NODES_PER_SITE)
            .map(|i| Node {
                id: NodeId(
                    *blake3::hash(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat())
                        .as_bytes(),
                ),
                site: i / NODES_PER_SITE,
                life: Life::Up,
                conduct: Conduct::Honest,
            })
            .collect();
        let by_id = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let slow = rng.random_range(0..nodes.len() as u64) as usize;
        let mut world = Self {
            seed,
            rng,
            nodes,
            by_id,
            segments: Vec::with_capacity(count as usize),
            ids: HashMap::with_capacity(count as usize),
            slow,
            repair_bytes: 0,
            lower_bound: 0,
            repaired: HashSet::new(),
        };
        let mut steward = Steward::in_memory(StewardPolicy {
            grace_s: 30 * 60,
            audit_period_s: AUDIT_PERIOD,
            audits_per_round: 4096,
            repairs_in_flight: 512,
            sweep_per_round: 65_536,
            max_segments_per_owner: u64::from(count),
            ..StewardPolicy::default()
        });
        let candidates = world.candidates(&[], &[]);
        let mut batches: BTreeMap<u64, Vec<TrackedSegment>> = BTreeMap::new();
        for s in 0..count {
            let mut placement_seed = [0u8; 32];
            placement_seed[..8].copy_from_slice(&world.rng.next_u64().to_le_bytes());
            let holders =
                placement::place(&candidates, CODING, SHARD_LEN, placement_seed, &[]).unwrap();
            let shards: Vec<(ShardId, NodeId)> = holders
                .iter()
                .enumerate()
                .map(|(i, h)| (shard_id(seed, s, i as u8), *h))
                .collect();
            let tracked = TrackedSegment {
                coding: CODING,
                shard_len: SHARD_LEN,
                shards,
                lease_until: 90 * DAY,
            };
            world.ids.insert(tracked.id(), s);
            let mut placed = Placed {
                holders: [0; 6],
                present: 0b11_1111,
            };
            for (i, h) in holders.iter().enumerate() {
                placed.holders[i] = world.by_id[h] as u16;
            }
            world.segments.push(placed);
            let owner = u64::from(s) % OWNERS;
            let batch = batches.entry(owner).or_default();
            batch.push(tracked);
            if batch.len() == cairn_proto::MAX_TRACK {
                steward.track(&owner_id(owner), batch, 0).unwrap();
                batch.clear();
            }
        }
        for (owner, batch) in batches {
            steward.track(&owner_id(owner), &batch, 0).unwrap();
        }
        (world, steward)
    }

    fn candidates(&self, exclude_sites: &[usize], exclude: &[NodeId]) -> Vec<Candidate> {
        self.nodes
            .iter()
            .filter(|n| {
                n.life == Life::Up && !exclude_sites.contains(&n.site) && !exclude.contains(&n.id)
            })
            .map(|n| Candidate {
                node: n.id,
                site: Some(format!("site-{}", n.site)),
                free: 1 << 40,
            })
            .collect()
    }

    /// What the swarm's gossip reports each step.
    fn report_liveness(&self, steward: &mut Steward, now: u64) {
        for node in &self.nodes {
            match node.life {
                Life::Up => steward.node_up(node.id),
                _ => steward.node_down(node.id, now),
            }
        }
    }

    fn churn(&mut self, now: u64) {
        for node in &mut self.nodes {
            if let Life::Rebooting(until) = node.life
                && now >= until
            {
                node.life = Life::Up;
            }
        }
        if self.rng.random_range(0..20) == 0 {
            let i = self.rng.random_range(0..self.nodes.len() as u64) as usize;
            if self.nodes[i].life == Life::Up {
                let minutes = 1 + self.rng.random_range(0..20);
                self.nodes[i].life = Life::Rebooting(now + minutes * 60);
            }
        }
    }

    /// The segment index and shard index of a shard of ours (`None` for
    /// the fake segments, whose shards exist nowhere).
    fn locate(&self, shard: &ShardId) -> Option<(u32, u8)> {
        let seed = u64::from_le_bytes(shard.0[5..13].try_into().unwrap());
        let segment = u32::from_le_bytes(shard.0[..4].try_into().unwrap());
        (seed == self.seed && (segment as usize) < self.segments.len())
            .then_some((segment, shard.0[4]))
    }

    fn holds(&self, node: usize, shard: &ShardId) -> bool {
        self.locate(shard).is_some_and(|(s, i)| {
            let placed = self.segments[s as usize];
            placed.holders[usize::from(i)] as usize == node && placed.present & (1 << i) != 0
        })
    }

    fn audit(&mut self, holder: NodeId, shard: &ShardId, read: bool) -> AuditOutcome {
        let n = self.by_id[&holder];
        if self.nodes[n].life != Life::Up {
            return AuditOutcome::Unanswered;
        }
        // The flaky node misses one request in five.
        if n == self.slow && self.rng.random_range(0..5) == 0 {
            return AuditOutcome::Unanswered;
        }
        match self.nodes[n].conduct {
            Conduct::Liar => AuditOutcome::Failed,
            Conduct::Refuser if read => AuditOutcome::Failed,
            _ if self.holds(n, shard) => AuditOutcome::Passed,
            _ => AuditOutcome::NotFound,
        }
    }

    /// One step: liveness, a round, and the round's work carried out.
    fn step(&mut self, steward: &mut Steward, now: u64) -> usize {
        self.churn(now);
        self.report_liveness(steward, now);
        let round = steward.round(now).unwrap();
        let audits: Vec<_> = round
            .audits
            .iter()
            .map(|t| (*t, self.audit(t.holder, &t.shard, t.read)))
            .collect();
        steward.audited(&audits, now).unwrap();
        let mut outcomes = HashMap::new();
        for (holder, shards) in &round.renewals.holders {
            for shard in shards {
                let n = self.by_id[holder];
                let outcome = if self.nodes[n].life != Life::Up {
                    RenewOutcome::Unanswered
                } else if self.holds(n, shard) {
                    RenewOutcome::Renewed
                } else {
                    RenewOutcome::NotFound
                };
                outcomes.insert((*holder, *shard), outcome);
            }
        }
        steward.renewed(&round.renewals, &outcomes, now).unwrap();
        assert!(round.moves.is_empty(), "nothing drains here");
        for task in &round.repairs {
            self.repair(steward, task, now);
        }
        round.repairs.len()
    }

    fn repair(&mut self, steward: &mut Steward, task: &cairn_node::steward::RepairTask, now: u64) {
        let k = usize::from(CODING.k);
        let mut read = 0;
        let (mut refused, mut unreachable) = (Vec::new(), Vec::new());
        for (index, shard, holder) in &task.sources {
            if read == k {
                break;
            }
            let n = self.by_id[holder];
            if self.nodes[n].life != Life::Up {
                unreachable.push(*holder);
            } else if self.nodes[n].conduct != Conduct::Honest || !self.holds(n, shard) {
                refused.push((*index, *holder));
            } else {
                read += 1;
                self.repair_bytes += task.shard_len;
            }
        }
        if read < k {
            steward
                .repair_failed(task.segment, &refused, &unreachable, now)
                .unwrap();
            return;
        }
        let keep: Vec<NodeId> = task.keep.iter().map(|(_, n)| *n).collect();
        let exclude: Vec<NodeId> = keep.iter().chain(&task.avoid).copied().collect();
        let keep_sites: Vec<usize> = keep
            .iter()
            .map(|n| self.nodes[self.by_id[n]].site)
            .collect();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let count = task.lost.len();
        let new = placement::place_n(
            &self.candidates(&keep_sites, &exclude),
            CODING,
            count,
            SHARD_LEN,
            seed,
            &[],
        )
        .or_else(|_| {
            placement::place_n(
                &self.candidates(&[], &exclude),
                CODING,
                count,
                SHARD_LEN,
                seed,
                &[],
            )
        })
        .expect("enough live nodes to place repaired shards");
        let s = self.ids[&task.segment];
        let placed = &mut self.segments[s as usize];
        let mut moved = Vec::new();
        for ((index, _), node) in task.lost.iter().zip(&new) {
            let n = self.by_id[node];
            placed.holders[*index] = n as u16;
            // A liar takes the shard and drops it.
            if self.nodes[n].conduct == Conduct::Liar {
                placed.present &= !(1 << index);
            } else {
                placed.present |= 1 << index;
            }
            moved.push((*index, *node));
        }
        let holders: Vec<NodeId> = placed
            .holders
            .iter()
            .map(|&h| self.nodes[h as usize].id)
            .collect();
        placement::check(&holders, CODING).unwrap();
        self.repaired.insert(s);
        steward.repaired(task.segment, &moved, now).unwrap();
    }

    /// Shards of `segment` on nodes that are not dead.
    fn surviving(&self, placed: &Placed) -> usize {
        (0..6)
            .filter(|&i| {
                placed.present & (1 << i) != 0
                    && self.nodes[placed.holders[i] as usize].life != Life::Dead
            })
            .count()
    }

    fn assert_no_loss(&self, now: u64) {
        let fewest = self
            .segments
            .iter()
            .map(|p| self.surviving(p))
            .min()
            .unwrap();
        assert!(
            fewest >= usize::from(CODING.k),
            "seed {}: data lost at {now} s: a segment has {fewest} shards left",
            self.seed
        );
    }

    /// Every shard present at an up, honest holder.
    fn all_full(&self) -> bool {
        self.segments.iter().all(|p| {
            (0..6).all(|i| {
                let node = &self.nodes[p.holders[i] as usize];
                p.present & (1 << i) != 0
                    && node.life != Life::Dead
                    && node.conduct == Conduct::Honest
            })
        })
    }

    /// Adds an incident's lower bound: k reads per segment it damaged.
    fn damage(&mut self, hit: impl Fn(u32, usize, &Placed) -> bool) -> HashSet<u32> {
        let mut damaged = HashSet::new();
        for (s, placed) in self.segments.iter().enumerate() {
            if (0..6).any(|i| hit(s as u32, i, placed)) {
                damaged.insert(s as u32);
            }
        }
        self.lower_bound += damaged.len() as u64 * u64::from(CODING.k) * SHARD_LEN;
        damaged
    }

    fn until_full(&mut self, steward: &mut Steward, now: &mut u64, what: &str) {
        let deadline = *now + 3 * DAY;
        let mut steps = 0u64;
        while !steps.is_multiple_of(10) || !self.all_full() {
            if *now >= deadline {
                let short: Vec<_> = self
                    .segments
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        (0..6).any(|i| {
                            let node = &self.nodes[p.holders[i] as usize];
                            p.present & (1 << i) == 0
                                || node.life == Life::Dead
                                || node.conduct != Conduct::Honest
                        })
                    })
                    .take(3)
                    .map(|(s, p)| {
                        let id =
                            SegmentId(self.ids.iter().find(|(_, v)| **v == s as u32).unwrap().0.0);
                        (
                            s,
                            p.present,
                            p.holders.map(|h| {
                                (
                                    h,
                                    self.nodes[h as usize].life,
                                    self.nodes[h as usize].conduct,
                                )
                            }),
                            steward.redundancy(id, *now).unwrap(),
                            steward
                                .shard_states(id)
                                .unwrap()
                                .unwrap()
                                .iter()
                                .map(|(n, st)| {
                                    (
                                        self.by_id[n],
                                        *st,
                                        steward.is_bad(n, *now),
                                        steward.is_down(n),
                                    )
                                })
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect();
                let dead: Vec<_> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.life == Life::Dead)
                    .map(|(i, n)| (i, steward.held_by(&n.id).unwrap(), steward.is_down(&n.id)))
                    .collect();
                panic!(
                    "seed {}: {what}: no full redundancy within 3 days: {short:?}; queued {}; dead {dead:?}",
                    self.seed,
                    steward.queued_repairs().unwrap()
                );
            }
            *now += 60;
            steps += 1;
            self.step(steward, *now);
        }
        self.assert_no_loss(*now);
    }
}

fn owner_id(owner: u64) -> OwnerId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&owner.to_le_bytes());
    OwnerId(id)
}

fn run(seed: u64, count: u32) {
    let (mut world, mut steward) = World::new(seed, count);

    // A member's own table naming honest holders for shards they never got.
    let named: Vec<usize> = (0..6)
        .map(|i| (i * 7 + seed as usize) % world.nodes.len())
        .collect();
    let fake: Vec<TrackedSegment> = (0..100u32)
        .map(|f| TrackedSegment {
            coding: CODING,
            shard_len: SHARD_LEN,
            shards: (0..6)
                .map(|i| {
                    let mut id = [0xee; 32];
                    id[..4].copy_from_slice(&f.to_le_bytes());
                    id[4] = i as u8;
                    (ShardId(id), world.nodes[named[i]].id)
                })
                .collect(),
            lease_until: 90 * DAY,
        })
        .collect();
    steward.track(&owner_id(99), &fake, 0).unwrap();

    // Churn while audits prove every shard once: nothing is repaired.
    let mut now = 0;
    let mut repairs = 0;
    while now < AUDIT_PERIOD + 6 * HOUR {
        now += 60;
        repairs += world.step(&mut steward, now);
    }
    assert!(
        world.repaired.is_empty(),
        "seed {seed}: short reboots triggered {} repair(s) of {repairs} handed out: {:?}",
        world.repaired.len(),
        world
            .repaired
            .iter()
            .take(3)
            .map(|s| {
                let p = world.segments[*s as usize];
                (
                    p.holders,
                    p.present,
                    p.holders.map(|h| {
                        (
                            world.nodes[h as usize].life,
                            steward.is_bad(&world.nodes[h as usize].id, now),
                        )
                    }),
                )
            })
            .collect::<Vec<_>>()
    );

    // A disk lost inside one node: it reports what went with it.
    let loser = (world.slow + 1) % world.nodes.len();
    let lost_disk =
        world.damage(|s, i, p| p.holders[i] as usize == loser && disk_of(s, i as u8) == 1);
    let mut report = Vec::new();
    for &s in &lost_disk {
        let placed = &mut world.segments[s as usize];
        for i in 0..6u8 {
            if placed.holders[usize::from(i)] as usize == loser && disk_of(s, i) == 1 {
                placed.present &= !(1 << i);
                report.push((shard_id(seed, s, i), Missing::Gone));
            }
        }
    }
    steward.missing(world.nodes[loser].id, report, 1);
    world.assert_no_loss(now);
    world.until_full(&mut steward, &mut now, "disk loss");
    assert_eq!(
        world.repaired, lost_disk,
        "seed {seed}: exactly the lost disk's segments are repaired"
    );
    assert!(
        !steward.is_bad(&world.nodes[loser].id, now),
        "seed {seed}: an honest loss was blamed"
    );

    // A liar and a refuser, away from the slow node and the disk loser.
    let mut pick = || loop {
        let i = world.rng.random_range(0..world.nodes.len() as u64) as usize;
        if i != world.slow && i != loser && world.nodes[i].conduct == Conduct::Honest {
            break i;
        }
    };
    let (liar, refuser) = (pick(), pick());
    eprintln!(
        "roles: slow {} loser {loser} liar {liar} refuser {refuser} named {named:?}",
        world.slow
    );
    world.damage(|_, i, p| p.holders[i] as usize == liar);
    world.damage(|_, i, p| p.holders[i] as usize == refuser);
    world.nodes[liar].conduct = Conduct::Liar;
    world.nodes[refuser].conduct = Conduct::Refuser;
    for placed in &mut world.segments {
        for i in 0..6 {
            if placed.holders[i] as usize == liar {
                placed.present &= !(1 << i);
            }
        }
    }
    world.assert_no_loss(now);
    world.until_full(&mut steward, &mut now, "liar and refuser");
    assert!(
        steward.is_bad(&world.nodes[liar].id, now),
        "seed {seed}: the liar was not marked bad"
    );
    assert!(
        steward.is_bad(&world.nodes[refuser].id, now),
        "seed {seed}: the refuser was not marked bad"
    );

    // Up to m whole sites die at once.
    let lose = 1 + world.rng.random_range(0..u64::from(CODING.m)) as usize;
    let mut sites = Vec::new();
    while sites.len() < lose {
        let site = world.rng.random_range(0..SITES as u64) as usize;
        let spared = [world.slow, loser, liar, refuser].map(|n| world.nodes[n].site);
        if !sites.contains(&site) && !spared.contains(&site) {
            sites.push(site);
        }
    }
    let dying: Vec<usize> = (0..world.nodes.len())
        .filter(|i| sites.contains(&world.nodes[*i].site))
        .collect();
    world.damage(|_, i, p| dying.contains(&(p.holders[i] as usize)));
    for &i in &dying {
        world.nodes[i].life = Life::Dead;
    }
    world.assert_no_loss(now);
    world.until_full(&mut steward, &mut now, "sites lost");

    // Nobody honest was blamed, not even the holders the fake segments name.
    for (i, node) in world.nodes.iter().enumerate() {
        if i != liar && i != refuser && node.life != Life::Dead {
            assert!(
                !steward.is_bad(&node.id, now),
                "seed {seed}: honest node {i} was marked bad (slow: {}, named by fakes: {})",
                i == world.slow,
                named.contains(&i)
            );
        }
    }
    let ratio = world.repair_bytes as f64 / world.lower_bound as f64;
    eprintln!(
        "seed {seed}: {count} segments; {} repaired; repair read {ratio:.3} × the lower bound; {} site(s) lost",
        world.repaired.len(),
        sites.len()
    );
    assert!(
        ratio <= 1.05,
        "seed {seed}: repair read {ratio:.3} × the lower bound"
    );
}

#[test]
fn the_steward_keeps_every_segment_through_churn_losses_and_adversaries() {
    let count: u32 = std::env::var("CAIRN_SIM_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    let seeds = if count > 100_000 { 1 } else { 4 };
    for seed in 0..seeds {
        run(seed, count);
    }
}

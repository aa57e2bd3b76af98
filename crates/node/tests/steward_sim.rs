//! The steward against a simulated swarm: dozens of nodes on a dozen sites,
//! simulated time, reboots, whole sites lost for good, a slow node and a
//! holder that lies, over many seeds. Plain code and a seeded generator:
//! every run of a seed is the same run.
//!
//! Checked, for every seed:
//! - no segment ever has fewer than k shards left anywhere while at most m
//!   sites are lost between repairs (data loss);
//! - while only short reboots happen, nothing is repaired;
//! - the lying holder is marked bad, the slow one is not;
//! - repair reads at most 1.1 × k shard-sizes per repaired segment;
//! - at the end every segment is back to k + m healthy shards.

use std::collections::{HashMap, HashSet};

use cairn_client::placement::{self, Candidate};
use cairn_client::segment::Coding;
use cairn_node::steward::{AuditOutcome, Steward, StewardPolicy, TrackedSegment};
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

const CODING: Coding = Coding { k: 4, m: 2 };
const SITES: usize = 12;
const NODES_PER_SITE: usize = 3;
const SEGMENTS: usize = 150;
const SHARD_LEN: u64 = 1 << 20;
const STEP_S: u64 = 60;
const HOUR: u64 = 3600;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Life {
    Up,
    /// Rebooting until then.
    Rebooting(u64),
    /// Gone for good, with its disks.
    Dead,
}

struct Node {
    id: NodeId,
    site: usize,
    life: Life,
    shards: HashSet<ShardId>,
}

struct World {
    rng: StdRng,
    nodes: Vec<Node>,
    liar: usize,
    slow: usize,
    /// Segment index → its shard ids.
    segments: Vec<Vec<ShardId>>,
    repair_bytes: u64,
    repaired_segments: u64,
    /// Segments that lost at least one shard, summed over incidents: each
    /// needs at least one repair of k reads.
    damaged_segments: u64,
}

impl World {
    fn new(seed: u64) -> (Self, Steward) {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes: Vec<Node> = (0..SITES * NODES_PER_SITE)
            .map(|i| Node {
                id: NodeId(
                    *blake3::hash(&[seed.to_le_bytes(), (i as u64).to_le_bytes()].concat())
                        .as_bytes(),
                ),
                site: i / NODES_PER_SITE,
                life: Life::Up,
                shards: HashSet::new(),
            })
            .collect();
        let liar = rng.random_range(0..nodes.len() as u64) as usize;
        let slow = (liar + 1 + rng.random_range(0..nodes.len() as u64 - 1) as usize) % nodes.len();
        let mut world = Self {
            rng,
            nodes,
            liar,
            slow,
            segments: Vec::new(),
            repair_bytes: 0,
            repaired_segments: 0,
            damaged_segments: 0,
        };
        let mut steward = Steward::new(StewardPolicy {
            grace_s: 30 * 60,
            audit_every_s: 6 * HOUR,
            audits_per_holder: 8,
            ..StewardPolicy::default()
        });
        for s in 0..SEGMENTS {
            let shards: Vec<ShardId> = (0..CODING.total())
                .map(|i| {
                    ShardId(
                        *blake3::hash(
                            &[seed.to_le_bytes(), (s as u64 * 16 + i as u64).to_le_bytes()]
                                .concat(),
                        )
                        .as_bytes(),
                    )
                })
                .collect();
            let candidates = world.candidates(&[]);
            let mut placement_seed = [0u8; 32];
            placement_seed[..8].copy_from_slice(&world.rng.next_u64().to_le_bytes());
            let holders =
                placement::place(&candidates, CODING, SHARD_LEN, placement_seed, &[]).unwrap();
            placement::check(&holders, CODING).unwrap();
            for (shard, holder) in shards.iter().zip(&holders) {
                world.node_mut(*holder).shards.insert(*shard);
            }
            steward.track(
                TrackedSegment {
                    owner: OwnerId([1; 32]),
                    coding: CODING,
                    shard_len: SHARD_LEN,
                    shards: shards.iter().copied().zip(holders).collect(),
                    lease_until: 90 * 24 * HOUR,
                },
                0,
            );
            world.segments.push(shards);
        }
        (world, steward)
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    fn candidates(&self, exclude_sites: &[usize]) -> Vec<Candidate> {
        self.nodes
            .iter()
            .filter(|n| n.life == Life::Up && !exclude_sites.contains(&n.site))
            .map(|n| Candidate {
                node: n.id,
                site: Some(format!("site-{}", n.site)),
                free: 1 << 40,
            })
            .collect()
    }

    /// What a failure detector reports each step.
    fn report_liveness(&self, steward: &mut Steward, now: u64) {
        for node in &self.nodes {
            match node.life {
                Life::Up => steward.node_up(node.id),
                _ => steward.node_down(node.id, now),
            }
        }
    }

    fn reboots_end(&mut self, now: u64) {
        for node in &mut self.nodes {
            if let Life::Rebooting(until) = node.life
                && now >= until
            {
                node.life = Life::Up;
            }
        }
    }

    /// Whether the holder can serve the shard right now.
    fn serves(&self, holder: NodeId, shard: &ShardId) -> Result<(), AuditOutcome> {
        let node = self.node(holder);
        if node.life != Life::Up {
            return Err(AuditOutcome::Unreachable);
        }
        if node.shards.contains(shard) {
            Ok(())
        } else {
            Err(AuditOutcome::Failed)
        }
    }

    fn run_audits(&mut self, steward: &mut Steward, now: u64) {
        for task in steward.audits(now, 400) {
            let slow_miss =
                task.holder == self.nodes[self.slow].id && self.rng.random_range(0..10) < 3;
            let outcome = if slow_miss {
                AuditOutcome::Unreachable
            } else {
                match self.serves(task.holder, &task.shard) {
                    Ok(()) => AuditOutcome::Passed,
                    Err(outcome) => outcome,
                }
            };
            steward.audited(&task, outcome, now);
        }
    }

    /// Runs the steward's repairs; returns how many were handed out.
    fn run_repairs(&mut self, steward: &mut Steward, now: u64) -> usize {
        let tasks = steward.repairs(now);
        for task in &tasks {
            assert_eq!(task.sources.len(), usize::from(CODING.k));
            // Read the k sources; a source that fails ends the attempt
            // (what was read so far still counts as traffic).
            let mut ok = true;
            for (_, shard, holder) in &task.sources {
                if self.serves(*holder, shard).is_err() {
                    ok = false;
                    break;
                }
                self.repair_bytes += task.shard_len;
            }
            if !ok {
                steward.repair_failed(task.segment);
                continue;
            }
            let keep: Vec<NodeId> = task.keep.iter().map(|(_, n)| *n).collect();
            let exclude: Vec<NodeId> = keep.iter().chain(&task.avoid).copied().collect();
            let keep_sites: Vec<usize> = keep.iter().map(|n| self.node(*n).site).collect();
            // Prefer sites the segment does not use; fall back to any node.
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
            let new = placement::place_n(
                &self.candidates(&keep_sites),
                CODING,
                task.lost.len(),
                SHARD_LEN,
                seed,
                &exclude,
            )
            .or_else(|_| {
                placement::place_n(
                    &self.candidates(&[]),
                    CODING,
                    task.lost.len(),
                    SHARD_LEN,
                    seed,
                    &keep,
                )
            })
            .expect("enough live nodes to place repaired shards");
            let mut holders = vec![NodeId([0; 32]); CODING.total()];
            for (index, node) in &task.keep {
                holders[*index] = *node;
            }
            let mut moved = Vec::new();
            for ((index, shard), node) in task.lost.iter().zip(&new) {
                holders[*index] = *node;
                moved.push((*index, *node));
                self.node_mut(*node).shards.insert(*shard);
            }
            // Every shard of the segment has a holder again, none with k.
            placement::check(&holders, CODING).unwrap();
            steward.repaired(task.segment, &moved, now);
            self.repaired_segments += 1;
        }
        tasks.len()
    }

    /// The fewest shards of any segment that still exist on nodes that are
    /// not dead (rebooting nodes keep theirs).
    fn fewest_surviving(&self) -> usize {
        let holding: HashMap<ShardId, usize> = self
            .nodes
            .iter()
            .filter(|n| n.life != Life::Dead)
            .flat_map(|n| n.shards.iter().map(|s| (*s, 1)))
            .fold(HashMap::new(), |mut m, (s, c)| {
                *m.entry(s).or_default() += c;
                m
            });
        self.segments
            .iter()
            .map(|shards| shards.iter().filter(|s| holding.contains_key(s)).count())
            .min()
            .unwrap_or(0)
    }

    /// Whether every shard is where the steward thinks, and served there.
    fn all_full(&self, steward: &Steward) -> bool {
        let holders: HashMap<ShardId, NodeId> =
            steward.locations(&OwnerId([1; 32])).into_iter().collect();
        self.segments
            .iter()
            .flatten()
            .all(|s| holders.get(s).is_some_and(|h| self.serves(*h, s).is_ok()))
    }

    /// One simulated step: world events, then the steward's work.
    fn step(&mut self, steward: &mut Steward, now: u64) -> usize {
        self.reboots_end(now);
        self.report_liveness(steward, now);
        self.run_audits(steward, now);
        self.run_repairs(steward, now)
    }

    /// Counts the segments with a shard on these nodes, before they lose them.
    fn note_damage(&mut self, nodes: &[usize]) {
        let doomed: HashSet<ShardId> = nodes
            .iter()
            .flat_map(|i| self.nodes[*i].shards.iter().copied())
            .collect();
        self.damaged_segments += self
            .segments
            .iter()
            .filter(|shards| shards.iter().any(|s| doomed.contains(s)))
            .count() as u64;
    }

    /// Shards only vanish when a node dies or drops them: check then.
    fn assert_no_loss(&self, seed: u64, now: u64) {
        let fewest = self.fewest_surviving();
        assert!(
            fewest >= usize::from(CODING.k),
            "seed {seed}: data lost at {now} s: a segment has {fewest} shards left"
        );
    }

    /// Steps until every segment is full again (checked every 10 minutes).
    fn until_full(&mut self, steward: &mut Steward, now: &mut u64, seed: u64, reboots: bool) {
        let deadline = *now + 12 * HOUR;
        let mut steps = 0u64;
        while !steps.is_multiple_of(10) || !self.all_full(steward) {
            assert!(
                *now < deadline,
                "seed {seed}: no full redundancy within 12 h"
            );
            *now += STEP_S;
            steps += 1;
            if reboots && self.rng.random_range(0..30) == 0 {
                let i = self.rng.random_range(0..self.nodes.len() as u64) as usize;
                if self.nodes[i].life == Life::Up {
                    self.nodes[i].life =
                        Life::Rebooting(*now + 60 * (1 + self.rng.random_range(0..10)));
                }
            }
            self.step(steward, *now);
        }
    }
}

fn run(seed: u64) {
    let (mut world, mut steward) = World::new(seed);
    let mut now = 0;

    // Half a day of short reboots only (up to 20 minutes, sometimes several
    // at once).
    let mut repairs = 0;
    while now < 12 * HOUR {
        now += STEP_S;
        if world.rng.random_range(0..20) == 0 {
            let i = world.rng.random_range(0..world.nodes.len() as u64) as usize;
            if world.nodes[i].life == Life::Up {
                let minutes = 1 + world.rng.random_range(0..20);
                world.nodes[i].life = Life::Rebooting(now + minutes * 60);
            }
        }
        repairs += world.step(&mut steward, now);
    }
    assert_eq!(repairs, 0, "seed {seed}: short reboots triggered repair");

    // The liar drops everything and keeps answering: a failure domain of
    // its own, found by audits and repaired before any site is lost.
    let liar = world.liar;
    world.note_damage(&[liar]);
    world.nodes[liar].shards.clear();
    let deadline = now + 12 * HOUR;
    while !world.all_full(&steward) {
        assert!(
            now < deadline,
            "seed {seed}: the lie was not repaired within 12 h"
        );
        now += STEP_S;
        world.step(&mut steward, now);
    }
    assert!(
        steward.is_bad(&world.nodes[liar].id),
        "seed {seed}: the lying holder was not marked bad"
    );

    // Three rounds: lose up to m whole sites for good, wait for full
    // redundancy, repeat. Reboots go on meanwhile.
    let mut dead_sites: Vec<usize> = Vec::new();
    for _round in 0..3 {
        let lose = 1 + world.rng.random_range(0..u64::from(CODING.m)) as usize;
        let mut sites = Vec::new();
        while sites.len() < lose {
            let site = world.rng.random_range(0..SITES as u64) as usize;
            if !dead_sites.contains(&site)
                && !sites.contains(&site)
                && world.nodes[world.slow].site != site
            {
                sites.push(site);
            }
        }
        let dying: Vec<usize> = (0..world.nodes.len())
            .filter(|i| sites.contains(&world.nodes[*i].site))
            .collect();
        world.note_damage(&dying);
        for i in dying {
            world.nodes[i].life = Life::Dead;
        }
        dead_sites.extend(sites);
        world.assert_no_loss(seed, now);
        world.until_full(&mut steward, &mut now, seed, true);
    }

    // Let a full audit cycle pass, so every shard has been looked at.
    let end = now + 7 * HOUR;
    while now < end {
        now += STEP_S;
        world.step(&mut steward, now);
    }
    let liar_id = world.nodes[liar].id;
    let slow_id = world.nodes[world.slow].id;
    assert!(
        steward.is_bad(&liar_id),
        "seed {seed}: the lying holder is no longer marked bad"
    );
    assert!(
        !steward.is_bad(&slow_id),
        "seed {seed}: the slow holder was marked bad"
    );
    assert!(
        world.all_full(&steward),
        "seed {seed}: not every segment is at full redundancy"
    );
    // The lower bound: every damaged segment read k shards once.
    let lower_bound = world.damaged_segments * u64::from(CODING.k) * SHARD_LEN;
    assert!(
        world.repaired_segments > 0,
        "seed {seed}: nothing was repaired"
    );
    let ratio = world.repair_bytes as f64 / lower_bound as f64;
    eprintln!(
        "seed {seed}: {} segments repaired, repair read {ratio:.3} × the lower bound, liar marked bad, {} sites lost",
        world.repaired_segments,
        dead_sites.len()
    );
    assert!(
        ratio <= 1.1,
        "seed {seed}: repair read {ratio:.3} × the lower bound"
    );
}

#[test]
fn the_steward_keeps_every_segment_through_churn_over_many_seeds() {
    for seed in 0..24 {
        run(seed);
    }
}

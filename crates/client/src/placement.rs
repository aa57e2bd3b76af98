//! Where a segment's shards go. Plain code: given the nodes the owner can
//! use (their free space and site), pick k+m distinct nodes, spread over as
//! many sites as possible, favouring free space, and deterministic in a
//! seed so that many segments spread their load.
//!
//! The invariant that protects privacy — no node ever receives k or more
//! shards of one segment — is checked by [`check`], which every upload and
//! every repair runs before a shard leaves the owner's machine.

use std::collections::{BTreeMap, HashMap};

use cairn_proto::ids::NodeId;

use super::segment::Coding;

/// A node shards may be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Its failure domain (household, region); nodes without one are each their own.
    pub site: Option<String>,
    /// Bytes it can still take.
    pub free: u64,
}

/// Why shards cannot be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// Too few nodes have room.
    #[error(
        "only {usable} nodes have room for a {shard_len}-byte shard, and {coding_total} distinct nodes are needed; add nodes or free space"
    )]
    NotEnoughNodes {
        /// Nodes with room.
        usable: usize,
        /// k + m.
        coding_total: usize,
        /// The shard length.
        shard_len: u64,
    },
    /// A placement would give one node k or more shards of a segment.
    #[error("node {node} would hold {count} shards of one segment; at most {limit} are allowed")]
    TooManyOnOneNode {
        /// The node.
        node: NodeId,
        /// How many it would hold.
        count: usize,
        /// k − 1.
        limit: usize,
    },
    /// A placement names the wrong number of holders.
    #[error("a placement must name {expected} holders, not {got}")]
    WrongCount {
        /// k + m.
        expected: usize,
        /// Named.
        got: usize,
    },
}

/// Picks a holder for each of a segment's k+m shards (index = shard index):
/// distinct nodes with room; each next pick comes from the site holding the
/// fewest shards so far; within that, a weighted draw by free space seeded
/// by `seed` (Efraimidis–Spirakis keys), so fuller nodes get less.
/// `exclude` are nodes that must not be used (e.g. holders of this segment's
/// other shards during repair).
pub fn place(
    candidates: &[Candidate],
    coding: Coding,
    shard_len: u64,
    seed: [u8; 32],
    exclude: &[NodeId],
) -> Result<Vec<NodeId>, PlacementError> {
    place_n(candidates, coding, coding.total(), shard_len, seed, exclude)
}

/// Like [`place`], for `count` shards (repair places only the lost ones).
pub fn place_n(
    candidates: &[Candidate],
    coding: Coding,
    count: usize,
    shard_len: u64,
    seed: [u8; 32],
    exclude: &[NodeId],
) -> Result<Vec<NodeId>, PlacementError> {
    let mut seen = std::collections::HashSet::new();
    let usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.free >= shard_len && !exclude.contains(&c.node) && seen.insert(c.node))
        .collect();
    if usable.len() < count {
        return Err(PlacementError::NotEnoughNodes {
            usable: usable.len(),
            coding_total: coding.total(),
            shard_len,
        });
    }
    // Efraimidis–Spirakis: key = u^(1/w); compare ln(u)/w, larger wins.
    let score = |c: &Candidate| {
        let mut hasher = blake3::Hasher::new_keyed(&seed);
        hasher.update(&c.node.0);
        let word = u64::from_le_bytes(
            hasher.finalize().as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        // u in (0, 1]: never 0, so ln(u) is finite.
        let u = ((word >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        u.ln() / (c.free as f64).max(1.0)
    };
    let mut by_site: BTreeMap<String, Vec<(f64, &Candidate)>> = BTreeMap::new();
    for c in usable {
        // A node with no site is a site of its own.
        let site = c.site.clone().unwrap_or_else(|| format!("node:{}", c.node));
        by_site.entry(site).or_default().push((score(c), c));
    }
    for nodes in by_site.values_mut() {
        // Best last, so `pop` takes it.
        nodes.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.node.cmp(&a.1.node)));
    }
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut picks = Vec::with_capacity(count);
    while picks.len() < count {
        let site = by_site
            .iter()
            .filter(|(_, nodes)| !nodes.is_empty())
            .min_by(|(a_site, a), (b_site, b)| {
                let (ua, ub) = (used.get(*a_site), used.get(*b_site));
                ua.cmp(&ub)
                    .then(b.last().map(|x| x.0).total_cmp_opt(a.last().map(|x| x.0)))
            })
            .map(|(site, _)| site.clone())
            .ok_or(PlacementError::NotEnoughNodes {
                usable: picks.len(),
                coding_total: coding.total(),
                shard_len,
            })?;
        let (_, chosen) =
            by_site
                .get_mut(&site)
                .and_then(Vec::pop)
                .ok_or(PlacementError::NotEnoughNodes {
                    usable: picks.len(),
                    coding_total: coding.total(),
                    shard_len,
                })?;
        *used.entry(site).or_default() += 1;
        picks.push(chosen.node);
    }
    Ok(picks)
}

trait TotalCmpOpt {
    fn total_cmp_opt(self, other: Self) -> std::cmp::Ordering;
}

impl TotalCmpOpt for Option<f64> {
    fn total_cmp_opt(self, other: Self) -> std::cmp::Ordering {
        match (self, other) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
}

/// Checks a segment's holders (index = shard index) before any shard is
/// sent: k+m of them, and no node with k or more.
pub fn check(holders: &[NodeId], coding: Coding) -> Result<(), PlacementError> {
    if holders.len() != coding.total() {
        return Err(PlacementError::WrongCount {
            expected: coding.total(),
            got: holders.len(),
        });
    }
    let mut counts: HashMap<NodeId, usize> = HashMap::new();
    for node in holders {
        *counts.entry(*node).or_default() += 1;
    }
    let limit = usize::from(coding.k) - 1;
    match counts.into_iter().find(|(_, count)| *count > limit) {
        Some((node, count)) => Err(PlacementError::TooManyOnOneNode { node, count, limit }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn candidates(n: u8, sites: u8) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                node: node(i),
                site: (sites > 0).then(|| format!("site-{}", i % sites)),
                free: 1 << 30,
            })
            .collect()
    }

    proptest! {
        #[test]
        fn holders_are_distinct_and_sites_spread(n in 6u8..40, sites in 0u8..8, seed in any::<[u8; 32]>()) {
            let coding = Coding::default();
            let holders = place(&candidates(n, sites), coding, 1 << 20, seed, &[]).unwrap();
            check(&holders, coding).unwrap();
            let distinct: std::collections::HashSet<_> = holders.iter().collect();
            prop_assert_eq!(distinct.len(), coding.total());
            if sites > 0 {
                // As many sites as there are (up to k+m) hold a shard.
                let used: std::collections::HashSet<u8> = holders.iter().map(|h| h.0[0] % sites).collect();
                prop_assert_eq!(used.len(), (sites as usize).min(n as usize).min(coding.total()));
            }
        }
    }

    #[test]
    fn too_few_nodes_is_an_error_not_a_doubling_up() {
        let err = place(&candidates(5, 0), Coding::default(), 1 << 20, [0; 32], &[]).unwrap_err();
        assert!(matches!(
            err,
            PlacementError::NotEnoughNodes { usable: 5, .. }
        ));
        // Nodes without room do not count.
        let mut full = candidates(6, 0);
        full[0].free = 100;
        assert!(place(&full, Coding::default(), 1 << 20, [0; 32], &[]).is_err());
        // Excluded nodes do not count either.
        assert!(
            place(
                &candidates(6, 0),
                Coding::default(),
                1 << 20,
                [0; 32],
                &[node(1)]
            )
            .is_err()
        );
    }

    #[test]
    fn the_check_refuses_k_shards_on_one_node() {
        let coding = Coding::default();
        let mut holders: Vec<NodeId> = (0..6).map(node).collect();
        check(&holders, coding).unwrap();
        holders[1] = node(0);
        holders[2] = node(0);
        check(&holders, coding).unwrap(); // 3 < k = 4
        holders[3] = node(0);
        assert_eq!(
            check(&holders, coding),
            Err(PlacementError::TooManyOnOneNode {
                node: node(0),
                count: 4,
                limit: 3
            })
        );
        assert!(check(&holders[..5], coding).is_err());
    }

    #[test]
    fn emptier_nodes_get_more_shards_over_many_segments() {
        let mut nodes = candidates(12, 0);
        for (i, c) in nodes.iter_mut().enumerate() {
            c.free = if i < 6 { 10 << 30 } else { 1 << 30 };
        }
        let mut counts = [0usize; 12];
        for s in 0..2000u32 {
            let seed = *blake3::hash(&s.to_le_bytes()).as_bytes();
            for h in place(&nodes, Coding::default(), 1 << 20, seed, &[]).unwrap() {
                counts[h.0[0] as usize] += 1;
            }
        }
        let roomy: usize = counts[..6].iter().sum();
        let tight: usize = counts[6..].iter().sum();
        assert!(roomy > 2 * tight, "roomy {roomy} vs tight {tight}");
        assert!(
            counts.iter().all(|&c| c > 0),
            "every node gets some: {counts:?}"
        );
    }
}

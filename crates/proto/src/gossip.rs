//! Gossip: the swarm's membership and failure detection run SWIM (the
//! `foca` implementation) between members, its packets carried in
//! `Gossip` requests over the authenticated transport, never in the clear.
//! A member's SWIM identity is its node id, where to reach it, and what it
//! advertises: site, capacity, free space, software.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// A member as SWIM knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipMember {
    /// The node id.
    pub node: NodeId,
    /// HOST:PORT where it listens.
    pub addr: String,
    /// Bumped when the node rejoins after being declared down (or
    /// restarts), so the newer identity wins.
    pub bump: u32,
    /// What it offers.
    pub advert: Advert,
}

/// What a member advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// Its site (failure domain), if configured.
    pub site: Option<String>,
    /// Bytes its disks may hold.
    pub capacity: u64,
    /// Bytes still free for shards.
    pub free: u64,
    /// Its software version.
    pub software: String,
    /// Its owner is taking it out of the swarm: place nothing new on it.
    pub draining: bool,
    /// How to reach it from outside its LAN.
    pub reach: crate::reach::Reach,
}

impl Advert {
    /// Whether `self` differs enough from what the swarm was last told
    /// (`told`) to tell it again: any change but free space, or free space
    /// moved by more than 1% of capacity. Telling costs every member a
    /// gossip update, so a disk filling shard by shard must not cause one
    /// per shard.
    pub fn worth_telling(&self, told: &Advert) -> bool {
        let threshold = (self.capacity / 100).max(1);
        self.site != told.site
            || self.capacity != told.capacity
            || self.software != told.software
            || self.draining != told.draining
            || self.reach != told.reach
            || self.free.abs_diff(told.free) >= threshold
    }
}

impl GossipMember {
    /// A member known only by its id and where it was said to be (a seed,
    /// a LAN hint, a member heard of through others): bump 0 and an empty
    /// advert, which any word of the member's own replaces.
    pub fn placeholder(node: NodeId, addr: String, site: Option<String>) -> Self {
        Self {
            node,
            addr,
            bump: 0,
            advert: Advert {
                site,
                capacity: 0,
                free: 0,
                software: String::new(),
                draining: false,
                reach: crate::reach::Reach::default(),
            },
        }
    }
}

impl foca::Identity for GossipMember {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // A plain comparison, so that bump 0 (what a node shows for a
        // member it has heard of only through others) loses to any word of
        // the member's own. Bumps start at the Unix time of a start, so
        // they do not wrap before 2106.
        self.bump > adversary.bump
    }
}

/// One member as a node reports it to `Members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    /// The member.
    pub member: GossipMember,
    /// Up (true) or declared down by the swarm.
    pub up: bool,
    /// How the answering node reached it last, if it did.
    pub path: Option<crate::reach::PathKind>,
}

impl MemberState {
    /// A member as gossip heard of it, before any path to it is known.
    pub fn heard(member: GossipMember, up: bool) -> Self {
        Self {
            member,
            up,
            path: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_renewed_identity_wins_and_bump_0_loses_to_any() {
        let member = GossipMember {
            node: NodeId([1; 32]),
            addr: "127.0.0.1:1".into(),
            bump: 1_800_000_000,
            advert: Advert {
                site: None,
                capacity: 1,
                free: 1,
                software: "t".into(),
                draining: false,
                reach: Default::default(),
            },
        };
        let renewed = member.renew().unwrap();
        assert_eq!(renewed.bump, 1_800_000_001);
        assert!(renewed.win_addr_conflict(&member));
        assert!(!member.win_addr_conflict(&renewed));
        assert_eq!(renewed.addr(), member.addr());
        let placeholder = GossipMember {
            bump: 0,
            ..member.clone()
        };
        assert!(member.win_addr_conflict(&placeholder));
        assert!(!placeholder.win_addr_conflict(&member));
    }

    #[test]
    fn an_advert_is_retold_on_drain_or_a_percent_of_free_space_not_per_shard() {
        let told = Advert {
            site: Some("home".into()),
            capacity: 1_000_000,
            free: 500_000,
            software: "1".into(),
            draining: false,
            reach: Default::default(),
        };
        let mut now = told.clone();
        now.free -= 9_999;
        assert!(!now.worth_telling(&told));
        now.free -= 1;
        assert!(now.worth_telling(&told));
        let drained = Advert {
            draining: true,
            ..told.clone()
        };
        assert!(drained.worth_telling(&told));
        let moved = Advert {
            site: None,
            ..told.clone()
        };
        assert!(moved.worth_telling(&told));
        assert!(!told.worth_telling(&told));
    }
}

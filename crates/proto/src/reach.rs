//! Reaching members across home routers, as plain code: what a node learns
//! of its own address from members outside its LAN ([`Observation`],
//! [`classify`]), what it tells the swarm about how to reach it
//! ([`Reach`], its own word in its gossip advert), and the order in which
//! a dialler tries the ways to a member ([`plan`]). No STUN server: members
//! that dial each other tell each other the address they see.
//!
//! A home router (NAT) gives a box's packets its own public address and a
//! port. A "punchable" router keeps that port whatever the destination
//! (endpoint-independent mapping), so a member that learned it from one
//! observer can reach the box once the box has sent a packet its way (the
//! punch). A "symmetric" router picks a new port per destination, so no
//! member can predict it: only a relay helps.
//!
//! IPv6 needs no NAT: a box's address is its own, and at most a stateful
//! firewall in the router drops what nobody inside asked for. Where both
//! ends have IPv6 it comes first: a box whose firewall lets strangers in
//! is dialled directly, one whose firewall filters is reached by a punch
//! (no port to guess, so it works even where IPv4 needs a relay).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// Longest a node holds an `AwaitCalls` before answering with no calls.
pub const CALL_HOLD_S: u64 = 20;
/// Most calls in one `Calls` answer (and waiting for one member).
pub const MAX_CALLS: usize = 8;

/// A member's call for a node waiting at its rendezvous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `from` is dialling: send a few packets to `at` (where the
    /// rendezvous sees it) so that this node's router lets its dial in.
    Punch {
        /// The member dialling.
        from: NodeId,
        /// HOST:PORT its packets come from.
        at: String,
        /// `[ADDR]:PORT`, its IPv6 address, to punch as well (its own
        /// word: at most a few small datagrams go there).
        ipv6: Option<String>,
    },
    /// `from` will dial through the rendezvous's relay: send `token`,
    /// alone in one UDP datagram, to `at` from this node's socket, so the
    /// relay knows where to forward.
    Relay {
        /// The member dialling.
        from: NodeId,
        /// HOST:PORT of the relay's port for this node.
        at: String,
        /// Binds this node's address to its side of the relay.
        token: [u8; 16],
    },
}

/// What a node knows of how it can be reached from outside its LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Nat {
    /// Not learned yet (no member outside the LAN observed it): dial its
    /// address as given, as on a LAN.
    #[default]
    Unknown,
    /// It has a public address of its own and a member dialled back to it
    /// there: anyone can dial it.
    Open,
    /// Its router maps a public port to it (UPnP-IGD, PCP, NAT-PMP) and a
    /// member dialled back to it there: anyone can dial it.
    Mapped,
    /// Behind a NAT that keeps one public port for all destinations: a
    /// member reaches it by a punch through its rendezvous.
    Punchable,
    /// Behind a NAT that picks a port per destination: reached by a punch
    /// only from a member anyone can dial, otherwise through a relay.
    Symmetric,
}

impl Nat {
    /// Whether anyone can dial the node at its public address.
    pub fn dialable(self) -> bool {
        matches!(self, Self::Open | Self::Mapped)
    }
}

/// How a node can be reached: its own word, in its gossip advert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Reach {
    /// What it learned of its NAT.
    pub nat: Nat,
    /// HOST:PORT to dial from outside its LAN: its own address when
    /// `Open`, the mapped one when `Mapped`, the one observers see when
    /// behind a NAT (useful to members only through a punch).
    pub public: Option<String>,
    /// The member it keeps a connection to for calls (punches, relays);
    /// `None` when dialable or when it has found none.
    pub rendezvous: Option<NodeId>,
    /// Whether it relays packets between members (it is dialable and its
    /// owner allows it).
    pub relays: bool,
    /// Its global IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Reach>,
}

/// A node's global IPv6 address and what members learned of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Reach {
    /// `[ADDR]:PORT`.
    pub addr: String,
    /// What is known of the way in.
    pub state: Ipv6State,
}

/// How far a node's IPv6 address is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ipv6State {
    /// An address of its own that no member has seen it use yet: members
    /// with IPv6 only observe it there (which proves their own IPv6).
    Candidate,
    /// A member saw its packets come from it over IPv6 but could not dial
    /// back: a firewall filters, and a punch opens it.
    Filtered,
    /// A member dialled back to it: anyone with IPv6 can dial it.
    Open,
}

impl Reach {
    /// Its IPv6 address, once a member saw it used (not a mere
    /// candidate), and whether anyone can dial it there.
    pub fn ipv6_working(&self) -> Option<(&str, bool)> {
        self.ipv6
            .as_ref()
            .filter(|v6| v6.state != Ipv6State::Candidate)
            .map(|v6| (v6.addr.as_str(), v6.state == Ipv6State::Open))
    }
}

/// How a connection to a member was made, as `cairn nodes` and `cairn
/// members` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathKind {
    /// Its address as given, on a LAN or with no NAT learned.
    Lan,
    /// Its public address of its own.
    Direct,
    /// The port its router maps to it.
    Mapped,
    /// Through both NATs after a punch.
    Punched,
    /// Through this member's relay.
    Relayed(NodeId),
    /// Its IPv6 address, which anyone can dial.
    Direct6,
    /// Its IPv6 address, after a punch through its firewall.
    Punched6,
}

impl PathKind {
    /// Whether the connection runs over IPv6.
    pub fn ipv6(self) -> bool {
        matches!(self, Self::Direct6 | Self::Punched6)
    }
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lan => f.write_str("lan"),
            Self::Direct => f.write_str("direct"),
            Self::Mapped => f.write_str("mapped"),
            Self::Punched => f.write_str("punched"),
            Self::Relayed(via) => write!(f, "relayed via {}", via.to_human()),
            Self::Direct6 => f.write_str("direct ipv6"),
            Self::Punched6 => f.write_str("punched ipv6"),
        }
    }
}

/// One way to try, in a dialler's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Dial this address.
    Dial {
        /// HOST:PORT.
        addr: String,
        /// What it is.
        kind: PathKind,
    },
    /// Ask this member (the target's rendezvous) for the target's address
    /// and a punch, then dial it.
    Punch {
        /// The rendezvous.
        via: NodeId,
        /// Dial the target's IPv6 address, `[ADDR]:PORT`, rather than
        /// where the rendezvous sees it.
        ipv6: Option<String>,
    },
    /// Ask this member to relay, then dial the target through it.
    Relay {
        /// The relay (the target's rendezvous).
        via: NodeId,
    },
}

impl Step {
    /// The path a connection made by this step has.
    pub fn path(&self) -> PathKind {
        match self {
            Self::Dial { kind, .. } => *kind,
            Self::Punch { ipv6: Some(_), .. } => PathKind::Punched6,
            Self::Punch { ipv6: None, .. } => PathKind::Punched,
            Self::Relay { via } => PathKind::Relayed(*via),
        }
    }
}

/// The ways to reach a member whose gossip address is `addr` and whose
/// advert says `them`, from a node (or client) `own` whose own state is
/// `me`, best first. Empty only when the member is known to be behind a
/// NAT and keeps no rendezvous: no path can exist until it finds one.
pub fn plan(me: &Reach, own: NodeId, them: &Reach, addr: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    // A member heard of only through others has not told this node how
    // to reach it (gossip keeps only a member's own word): it most likely
    // waits at the same rendezvous as this node, which every node behind
    // a NAT picks the same way. A wrong guess costs one refused call.
    let via = match (them.nat, them.rendezvous) {
        (_, Some(via)) => Some(via),
        (Nat::Unknown, None) => me.rendezvous,
        _ => None,
    };
    // IPv6 first where both ends have it working: no NAT, so no port to
    // guess and no relay needed; IPv4 follows should it fail.
    if let (Some(_), Some((their_v6, open))) = (me.ipv6_working(), them.ipv6_working()) {
        if open {
            steps.push(Step::Dial {
                addr: their_v6.to_owned(),
                kind: PathKind::Direct6,
            });
        } else if let Some(via) = via {
            steps.push(Step::Punch {
                via,
                ipv6: Some(their_v6.to_owned()),
            });
        }
    }
    let same_public_ip = match (public_ip(me), public_ip(them)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if them.nat.dialable() {
        // Both in one house, behind one router: the LAN address avoids
        // the router's hairpin, which many routers lack.
        if same_public_ip && addr != them.public.as_deref().unwrap_or_default() {
            steps.push(Step::Dial {
                addr: addr.to_owned(),
                kind: PathKind::Lan,
            });
        }
        let kind = if them.nat == Nat::Mapped {
            PathKind::Mapped
        } else {
            PathKind::Direct
        };
        steps.push(Step::Dial {
            addr: them.public.clone().unwrap_or_else(|| addr.to_owned()),
            kind,
        });
        return steps;
    }
    // Where this side's public address is unknown (an owner's computer
    // that found no observer), the other may be on its LAN: a LAN dial
    // fails within a second when it is not.
    if them.nat == Nat::Unknown || same_public_ip || me.public.is_none() {
        // An address outside every LAN is dialled directly.
        let global = addr.parse().is_ok_and(observer_counts);
        steps.push(Step::Dial {
            addr: addr.to_owned(),
            kind: if global && !same_public_ip {
                PathKind::Direct
            } else {
                PathKind::Lan
            },
        });
    }
    if let Some(via) = via {
        // A punch needs one side whose port the other can know: it fails
        // between two symmetric NATs, and from a symmetric NAT to any NAT
        // that filters by destination (which home routers do). Into a
        // symmetric NAT only its rendezvous can punch: the port it sees
        // is the one the callee's NAT keeps for it alone.
        let hopeless = (me.nat == Nat::Symmetric && !them.nat.dialable())
            || (them.nat == Nat::Symmetric && !(me.nat.dialable() && via == own));
        if !hopeless {
            steps.push(Step::Punch { via, ipv6: None });
        }
        steps.push(Step::Relay { via });
    }
    steps
}

fn public_ip(reach: &Reach) -> Option<IpAddr> {
    reach
        .public
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
}

/// `ip`, with an IPv4-mapped IPv6 address (as a dual-stack socket gives
/// an IPv4 peer) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What one member outside the LAN saw of this node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The member that saw it.
    pub observer: NodeId,
    /// The address this node dialled the observer at.
    pub observer_addr: SocketAddr,
    /// The address the observer saw this node's packets come from.
    pub seen: SocketAddr,
}

/// What a node makes of its observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// Its public address as most observers see it.
    pub public: SocketAddr,
    /// No NAT: observers see one of the node's own addresses and its port.
    pub own_address: bool,
    /// Observers at different addresses saw different ports: the NAT maps
    /// per destination. `None` when only one observer address was heard.
    pub per_destination: Option<bool>,
}

/// Whether an observer at `addr` sees this node's packets as the internet
/// does. A member on the same LAN, or behind the same carrier NAT, sees a
/// private address and would make a node behind a router believe it has
/// a public one; only observers at global addresses count.
pub fn observer_counts(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // Carrier-grade NAT's shared space, 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Classifies the IPv4 observations that count (see [`observer_counts`]),
/// given the node's own addresses and its bound port; `None` when none
/// counts yet.
pub fn classify(
    observations: &[Observation],
    own_ips: &[IpAddr],
    own_port: u16,
) -> Option<Classified> {
    // IPv6 has no NAT to learn of (see `Ipv6Reach`): only IPv4 counts.
    let counted: Vec<&Observation> = observations
        .iter()
        .filter(|o| o.observer_addr.is_ipv4() && o.seen.is_ipv4())
        .filter(|o| observer_counts(o.observer_addr))
        .collect();
    // The most common address seen is the public one; ties go to the
    // first heard, so the answer does not flap.
    let mut best: Option<(SocketAddr, usize)> = None;
    for o in &counted {
        let votes = counted.iter().filter(|p| p.seen == o.seen).count();
        if best.is_none_or(|(_, most)| votes > most) {
            best = Some((o.seen, votes));
        }
    }
    let (public, _) = best?;
    let own_address = own_ips.contains(&public.ip()) && public.port() == own_port;
    // Mapping behaviour needs observers at two addresses: one observer's
    // two ports share its address and so prove nothing of a NAT that maps
    // per destination address.
    let same_ip: Vec<&&Observation> = counted
        .iter()
        .filter(|o| o.seen.ip() == public.ip())
        .collect();
    let observer_ips: std::collections::BTreeSet<IpAddr> =
        same_ip.iter().map(|o| o.observer_addr.ip()).collect();
    let per_destination =
        (observer_ips.len() >= 2).then(|| same_ip.iter().any(|o| o.seen.port() != public.port()));
    Some(Classified {
        public,
        own_address,
        per_destination,
    })
}

/// The node's [`Nat`] from what it observed and what dial-backs proved:
/// `dialled_back` is whether a member reached it at its public address;
/// `mapped` whether that address is a port its router maps to it.
pub fn nat_of(classified: Option<&Classified>, dialled_back: bool, mapped: bool) -> Nat {
    let Some(seen) = classified else {
        return if mapped && dialled_back {
            Nat::Mapped
        } else {
            Nat::Unknown
        };
    };
    match (dialled_back, mapped, seen.own_address, seen.per_destination) {
        (true, true, _, _) => Nat::Mapped,
        (true, false, true, _) => Nat::Open,
        // A firewall in front of an own address filters like a NAT that
        // keeps ports: a punch passes it.
        (false, _, true, _) => Nat::Punchable,
        (_, _, false, Some(true)) => Nat::Symmetric,
        (_, _, false, Some(false)) => Nat::Punchable,
        // One observer: assume the common case; a failed punch falls back
        // to the relay.
        (_, _, false, None) => Nat::Punchable,
    }
}

/// How to believe a member is reached: by its own word, unless that word
/// predates its learning it (`Nat::Unknown`, from before it was declared
/// down, say) and a hint knows better; by a hint where it has not spoken.
/// A hint is another member's view, fit for dialling only: Noise proves
/// who answers. Each word comes with what goes with it (the address it
/// gives, say).
pub fn believed<A>(own: Option<(A, Reach)>, hint: Option<(A, Reach)>) -> Option<(A, Reach)> {
    match (own, hint) {
        (Some(own), Some(hint)) if own.1.nat == Nat::Unknown && hint.1.nat != Nat::Unknown => {
            Some(hint)
        }
        (Some(own), _) => Some(own),
        (None, hint) => hint,
    }
}

/// The rendezvous to wait for calls at, among the members up and how each
/// is believed reached ([`believed`]): a dialable one, relaying ones
/// first (a relayed dial into this node goes through its rendezvous, and
/// into a symmetric NAT only the rendezvous can punch), the lowest id
/// among equals, so that every node picks the same one and a member not
/// yet heard from can be guessed to wait at the dialler's own.
pub fn choose_rendezvous(members: impl IntoIterator<Item = (NodeId, Reach)>) -> Option<NodeId> {
    members
        .into_iter()
        .filter(|(_, reach)| reach.nat.dialable())
        .map(|(node, reach)| (!reach.relays, node))
        .min()
        .map(|(_, node)| node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    /// A member anyone can dial at `public`, with no rendezvous or IPv6.
    fn dialable(nat: Nat, public: &str, relays: bool) -> Reach {
        Reach {
            nat,
            public: Some(public.into()),
            rendezvous: None,
            relays,
            ipv6: None,
        }
    }

    fn obs(observer: u8, observer_addr: &str, seen: &str) -> Observation {
        Observation {
            observer: node(observer),
            observer_addr: observer_addr.parse().unwrap(),
            seen: seen.parse().unwrap(),
        }
    }

    #[test]
    fn two_observers_tell_a_port_keeping_nat_from_a_symmetric_one() {
        let own = ["192.168.1.10".parse().unwrap()];
        let keeping = [
            obs(1, "11.77.0.2:7447", "11.77.0.10:7447"),
            obs(2, "11.77.0.3:7447", "11.77.0.10:7447"),
        ];
        let c = classify(&keeping, &own, 7447).unwrap();
        assert_eq!(c.per_destination, Some(false));
        assert!(!c.own_address);
        assert_eq!(nat_of(Some(&c), false, false), Nat::Punchable);
        let symmetric = [
            obs(1, "11.77.0.2:7447", "11.77.0.10:40001"),
            obs(2, "11.77.0.3:7447", "11.77.0.10:52999"),
        ];
        let c = classify(&symmetric, &own, 7447).unwrap();
        assert_eq!(c.per_destination, Some(true));
        assert_eq!(nat_of(Some(&c), false, false), Nat::Symmetric);
    }

    #[test]
    fn only_observers_at_global_addresses_count() {
        let own = ["192.168.1.10".parse().unwrap()];
        // A box on the same LAN sees the LAN address: it proves nothing.
        let lan = [obs(1, "192.168.1.11:7447", "192.168.1.10:7447")];
        assert_eq!(classify(&lan, &own, 7447), None);
        assert_eq!(nat_of(None, false, false), Nat::Unknown);
        let cgn = [obs(1, "100.64.3.1:7447", "100.64.3.9:7447")];
        assert_eq!(classify(&cgn, &own, 7447), None);
        // One observer at one address: its mapping behaviour is unknown.
        let one = [
            obs(1, "11.77.0.2:7447", "11.77.0.10:7447"),
            obs(1, "11.77.0.2:7447", "11.77.0.10:7447"),
        ];
        let c = classify(&one, &own, 7447).unwrap();
        assert_eq!(c.per_destination, None);
        // What an observer saw over IPv6 says nothing of the IPv4 NAT.
        let v6 = [obs(1, "[2001:db8:77::2]:7447", "[2001:db8:110::10]:7447")];
        assert_eq!(classify(&v6, &own, 7447), None);
    }

    /// A node behind a NAT that first heard only of a member that does not
    /// relay moves to one that does once any member's view tells of it:
    /// the relaying member may be unable to speak to it before it waits
    /// there.
    #[test]
    fn the_rendezvous_is_a_relaying_member_even_one_known_by_hint_only() {
        let mapped = dialable(Nat::Mapped, "11.77.0.26:7447", false);
        let open = dialable(Nat::Open, "11.77.0.2:7447", true);
        let unknown = Reach::default();
        // Known by its own word only as a placeholder: not a rendezvous.
        assert_eq!(
            choose_rendezvous([(node(1), mapped.clone()), (node(5), unknown.clone())]),
            Some(node(1))
        );
        // A hint tells it relays: it wins over the lower id that does not.
        let (said, five) =
            believed(Some(("own", unknown.clone())), Some(("hint", open.clone()))).unwrap();
        assert_eq!((said, &five), ("hint", &open));
        assert_eq!(
            choose_rendezvous([(node(1), mapped.clone()), (node(5), five)]),
            Some(node(5))
        );
        // A member it has not heard at all, by hint alone.
        assert_eq!(
            believed(None, Some(("hint", open.clone()))),
            Some(("hint", open.clone()))
        );
        // Its own word, once it knows its reach, beats any hint.
        assert_eq!(
            believed(Some(("own", mapped.clone())), Some(("hint", open.clone()))),
            Some(("own", mapped.clone()))
        );
        // Among relaying members, the lowest id; none dialable, none.
        assert_eq!(
            choose_rendezvous([(node(7), open.clone()), (node(3), open.clone())]),
            Some(node(3))
        );
        assert_eq!(choose_rendezvous([(node(2), unknown)]), None);
    }

    #[test]
    fn an_own_public_address_is_open_only_after_a_dial_back() {
        let own = ["11.77.0.2".parse().unwrap()];
        let seen = [obs(1, "11.77.0.3:7447", "11.77.0.2:7447")];
        let c = classify(&seen, &own, 7447).unwrap();
        assert!(c.own_address);
        assert_eq!(nat_of(Some(&c), true, false), Nat::Open);
        assert_eq!(nat_of(Some(&c), false, false), Nat::Punchable);
        assert_eq!(nat_of(Some(&c), true, true), Nat::Mapped);
        // A mapping the router claims but that no member could dial is
        // not advertised.
        assert_eq!(nat_of(None, false, true), Nat::Unknown);
    }

    #[test]
    fn the_plan_goes_direct_punches_or_relays_as_the_nats_allow() {
        let (r, me) = (node(9), node(1));
        let open = dialable(Nat::Open, "11.77.0.2:7447", true);
        let punchable = |ip: &str| Reach {
            nat: Nat::Punchable,
            public: Some(format!("{ip}:7447")),
            rendezvous: Some(r),
            relays: false,
            ipv6: None,
        };
        let symmetric = Reach {
            nat: Nat::Symmetric,
            public: Some("11.77.0.30:40000".into()),
            rendezvous: Some(r),
            relays: false,
            ipv6: None,
        };
        let lan_addr = "192.168.1.10:7447";
        assert_eq!(
            plan(&punchable("11.77.0.20"), me, &open, "11.77.0.2:7447"),
            vec![Step::Dial {
                addr: "11.77.0.2:7447".into(),
                kind: PathKind::Direct
            }]
        );
        assert_eq!(
            plan(
                &punchable("11.77.0.20"),
                me,
                &punchable("11.77.0.21"),
                lan_addr
            ),
            vec![Step::Punch { via: r, ipv6: None }, Step::Relay { via: r }]
        );
        assert_eq!(
            plan(
                &symmetric,
                me,
                &Reach {
                    public: Some("11.77.0.31:40000".into()),
                    ..symmetric.clone()
                },
                lan_addr
            ),
            vec![Step::Relay { via: r }]
        );
        assert_eq!(
            plan(&symmetric, me, &punchable("11.77.0.21"), lan_addr),
            vec![Step::Relay { via: r }]
        );
        // Only the rendezvous itself may punch into a symmetric NAT: the
        // port it sees is kept for it alone. Another dialable member
        // relays, like everyone else.
        assert_eq!(
            plan(&open, r, &symmetric, lan_addr),
            vec![Step::Punch { via: r, ipv6: None }, Step::Relay { via: r }]
        );
        assert_eq!(
            plan(&open, me, &symmetric, lan_addr),
            vec![Step::Relay { via: r }]
        );
        // Two boxes behind one router use the LAN.
        assert_eq!(
            plan(
                &punchable("11.77.0.21"),
                me,
                &punchable("11.77.0.21"),
                lan_addr
            )[0],
            Step::Dial {
                addr: lan_addr.into(),
                kind: PathKind::Lan
            }
        );
        // Nothing learned: the address as given, as before any of this.
        assert_eq!(
            plan(&Reach::default(), me, &Reach::default(), "127.0.0.1:7447"),
            vec![Step::Dial {
                addr: "127.0.0.1:7447".into(),
                kind: PathKind::Lan
            }]
        );
        // Not heard from yet: its address, then this node's rendezvous.
        let waiting = Reach {
            rendezvous: Some(r),
            ..punchable("11.77.0.20")
        };
        assert_eq!(
            plan(&waiting, me, &Reach::default(), lan_addr),
            vec![
                Step::Dial {
                    addr: lan_addr.into(),
                    kind: PathKind::Lan
                },
                Step::Punch { via: r, ipv6: None },
                Step::Relay { via: r }
            ]
        );
        // Behind a NAT with no rendezvous: no path.
        let stranded = Reach {
            rendezvous: None,
            ..punchable("11.77.0.22")
        };
        assert!(plan(&open, me, &stranded, lan_addr).is_empty());
    }

    #[test]
    fn ipv6_comes_first_where_both_ends_have_it_working() {
        let (r, me) = (node(9), node(1));
        let v6 = |host: &str, state| {
            Some(Ipv6Reach {
                addr: format!("[2001:db8:77::{host}]:7447"),
                state,
            })
        };
        // Behind symmetric IPv4 NATs both: IPv4 could only relay.
        let symmetric = |host: &str, state| Reach {
            nat: Nat::Symmetric,
            public: Some(format!("11.77.0.{host}:40000")),
            rendezvous: Some(r),
            relays: false,
            ipv6: v6(host, state),
        };
        let lan_addr = "192.168.1.10:7447";
        let filtered = symmetric("20", Ipv6State::Filtered);
        assert_eq!(
            plan(
                &filtered,
                me,
                &symmetric("21", Ipv6State::Filtered),
                lan_addr
            ),
            vec![
                Step::Punch {
                    via: r,
                    ipv6: Some("[2001:db8:77::21]:7447".into())
                },
                Step::Relay { via: r }
            ]
        );
        assert_eq!(
            plan(&filtered, me, &symmetric("21", Ipv6State::Open), lan_addr)[0],
            Step::Dial {
                addr: "[2001:db8:77::21]:7447".into(),
                kind: PathKind::Direct6
            }
        );
        // A candidate no member has seen used proves nothing: IPv4 only.
        assert_eq!(
            plan(
                &filtered,
                me,
                &symmetric("21", Ipv6State::Candidate),
                lan_addr
            ),
            vec![Step::Relay { via: r }]
        );
        assert_eq!(
            plan(
                &symmetric("20", Ipv6State::Candidate),
                me,
                &symmetric("21", Ipv6State::Open),
                lan_addr
            ),
            vec![Step::Relay { via: r }]
        );
        // A dialable IPv4 member with open IPv6: IPv6, then IPv4.
        let open = Reach {
            ipv6: v6("2", Ipv6State::Open),
            ..dialable(Nat::Open, "11.77.0.2:7447", true)
        };
        assert_eq!(
            plan(&filtered, me, &open, "11.77.0.2:7447")
                .iter()
                .map(Step::path)
                .collect::<Vec<_>>(),
            vec![PathKind::Direct6, PathKind::Direct]
        );
    }
}

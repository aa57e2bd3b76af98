//! The node's reachability across routers, as I/O around the plain code of
//! `cairn_proto::reach`: it asks members outside its LAN what address they
//! see (and one of them to dial back), keeps a call waiting at a
//! rendezvous when it is behind a NAT, answers members' calls (a punch, a
//! relay token) from its own QUIC socket, and tells the swarm through its
//! gossip advert. It is also the node's [`Routes`]: how its pool reaches
//! members behind routers.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_host::lock;
use cairn_net::pool::{Pool, Routes};
use cairn_proto::ids::NodeId;
use cairn_proto::reach::{self, Call, Ipv6Reach, Ipv6State, Nat, Observation, Reach};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::gossip::GossipService;
use super::portmap::PortMapper;
use crate::daemon_config::ReachSection;
use crate::membership::Membership;
use crate::rendezvous::{Rendezvous, canonical};

/// Members asked for the address they see, per look.
const OBSERVERS: usize = 3;
/// A look at the start, and again this often until one observer answered.
const FIRST_LOOKS: Duration = Duration::from_secs(2);
/// Punch packets sent toward a member dialling in, and their spacing: a
/// few, as any may be lost, over about the time its dial takes to arrive.
const PUNCHES: u32 = 6;
const PUNCH_SPACING: Duration = Duration::from_millis(150);
/// What a punch packet says: short enough that quinn drops it without a
/// stateless reset (see `cairn_net::tls::RAW_DATAGRAM_MAX`).
const PUNCH: &[u8] = b"cairn punch";
/// Calls answered per window, however many the rendezvous passes on.
const CALLS_PER_WINDOW: u32 = 64;
const CALL_WINDOW: Duration = Duration::from_secs(10);

/// The node's reachability and its part in traversal.
pub struct ReachService {
    node: NodeId,
    gossip: Arc<GossipService>,
    membership: Arc<Membership>,
    rendezvous: Arc<Rendezvous>,
    /// The QUIC endpoint's own socket, for punches and relay tokens.
    raw: Arc<std::net::UdpSocket>,
    /// The port the endpoint is bound to.
    port: u16,
    observe_every: Duration,
    relay_allowed: bool,
    /// The port the home router maps to the node, if it offers one.
    mapper: Option<tokio::sync::Mutex<PortMapper>>,
    reach: Mutex<Reach>,
    /// The rendezvous chosen, watched by the task that waits there: it
    /// moves at once, not when its held ask ends.
    chosen: watch::Sender<Option<NodeId>>,
    /// How members this node has not heard from itself say they are
    /// reached, as a member anyone can dial lists them: a hint for
    /// dialling only (Noise proves who answers), never their identity.
    /// Each with whether the member that listed it holds it up.
    hints: Mutex<std::collections::BTreeMap<NodeId, (String, Reach, bool)>>,
    /// Calls answered in the current window, and when it began.
    answered: Mutex<(std::time::Instant, u32)>,
    /// Whether the NAT maps per destination, as last learned from two
    /// observer addresses, at this public IP.
    mapping_learned: Mutex<Option<(IpAddr, bool)>>,
    /// The public address a member last dialled back to, and when: asked
    /// again only when the address changes or the proof is old.
    proven: Mutex<Option<(SocketAddr, std::time::Instant)>>,
    /// What a member last saw of the node's IPv6 address, and when: kept
    /// through a look where no member with IPv6 answered.
    ipv6_seen: Mutex<Option<(Ipv6Reach, std::time::Instant)>>,
}

/// How long a dial-back stays proof that the node is reachable.
const PROOF_KEPT: Duration = Duration::from_secs(600);
/// Longest a look spends moving connections to better paths.
const UPGRADE_LIMIT: Duration = Duration::from_secs(30);
/// How often members are asked again what they see of the node's IPv6
/// address (the address itself is checked at every look).
const IPV6_LOOK_EVERY: Duration = Duration::from_secs(300);

impl ReachService {
    /// The service for `node`, listening on `port`, sending raw datagrams
    /// from `raw` (the endpoint's socket), as `config` says.
    pub fn new(
        node: NodeId,
        gossip: Arc<GossipService>,
        membership: Arc<Membership>,
        rendezvous: Arc<Rendezvous>,
        raw: Arc<std::net::UdpSocket>,
        port: u16,
        config: &ReachSection,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            gossip,
            membership,
            rendezvous,
            raw,
            port,
            observe_every: Duration::from_secs(config.observe_every_s.max(1)),
            relay_allowed: config.relay,
            mapper: config
                .port_mapping
                .then(|| PortMapper::new(port))
                .flatten()
                .map(tokio::sync::Mutex::new),
            reach: Mutex::new(Reach::default()),
            chosen: watch::Sender::new(None),
            hints: Mutex::new(std::collections::BTreeMap::new()),
            proven: Mutex::new(None),
            ipv6_seen: Mutex::new(None),
            mapping_learned: Mutex::new(None),
            answered: Mutex::new((std::time::Instant::now(), 0)),
        })
    }

    /// What the node knows of its own reach now.
    pub fn reach(&self) -> Reach {
        lock(&self.reach).clone()
    }

    /// Looks at the node's address now and then, and keeps a call
    /// waiting at its rendezvous, until `stop`.
    pub async fn run(self: Arc<Self>, pool: Arc<Pool>, mut stop: watch::Receiver<bool>) {
        let calls = tokio::spawn(Arc::clone(&self).wait_for_calls(Arc::clone(&pool), stop.clone()));
        let mut wait = FIRST_LOOKS;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            // A stop does not wait for a look: each of its steps is
            // bounded, but together they may take half a minute.
            let heard = tokio::select! {
                heard = self.look(&pool) => heard,
                _ = stop.wait_for(|s| *s) => break,
            };
            wait = if heard {
                self.observe_every
            } else {
                FIRST_LOOKS.max(self.observe_every.min(Duration::from_secs(10)) / 2)
            };
        }
        let _ = calls.await;
        if let Some(mapper) = &self.mapper {
            mapper.lock().await.remove().await;
        }
    }

    /// One look: asks members outside the LAN what they see, classifies,
    /// picks a rendezvous, tells the swarm if anything changed. Whether
    /// any observer answered.
    async fn look(&self, pool: &Arc<Pool>) -> bool {
        let observers = self.observers();
        let mut observations = Vec::new();
        let mut answered = Vec::new();
        for (node, addr) in observers.into_iter().take(OBSERVERS) {
            let ask = async {
                let mut peer = pool.peer(node, &addr).await?;
                // The IPv4 NAT is learned over IPv4: a kept connection
                // that moved to IPv6 is left alone for a connection aside.
                let aside = canonical(peer.remote_address().ip()).is_ipv6();
                if aside {
                    peer = pool
                        .dial_aside(node, &addr, cairn_net::pool::PROBE_TIMEOUT)
                        .await?;
                }
                let seen = peer.observe().await;
                if seen.is_err() && aside {
                    peer.close();
                }
                Ok::<_, cairn_net::NetError>((peer, seen?, aside))
            };
            match tokio::time::timeout(cairn_net::pool::PROBE_TIMEOUT, ask).await {
                Ok(Ok((peer, seen, aside))) => {
                    let at = peer.remote_address();
                    observations.push(Observation {
                        observer: node,
                        observer_addr: SocketAddr::new(canonical(at.ip()), at.port()),
                        seen: SocketAddr::new(canonical(seen.ip()), seen.port()),
                    });
                    answered.push((peer, aside));
                }
                Ok(Err(e)) => debug!(observer = %node.to_human(), "reach: no observation: {e}"),
                Err(_) => debug!(observer = %node.to_human(), "reach: observer silent"),
            }
        }
        let mut classified = reach::classify(&observations, &own_ips(), self.port);
        // A look where only one observer address answered says nothing of
        // the NAT's mapping: what an earlier look learned at the same
        // public IP still holds (else a busy observer would flip the node
        // between symmetric and punchable).
        if let Some(seen) = classified.as_mut() {
            let mut learned = lock(&self.mapping_learned);
            match (seen.per_destination, *learned) {
                (Some(per_destination), _) => *learned = Some((seen.public.ip(), per_destination)),
                (None, Some((ip, per_destination))) if ip == seen.public.ip() => {
                    seen.per_destination = Some(per_destination);
                }
                (None, _) => {}
            }
        }
        // Where strangers might reach the node: its own address, or (behind
        // a NAT) a port its router maps, at the public address observed.
        let mut mapped = false;
        let candidate = match classified {
            Some(seen) if seen.own_address => Some(seen.public),
            Some(seen) => match &self.mapper {
                Some(mapper) => mapper.lock().await.ensure().await.map(|port| {
                    mapped = true;
                    SocketAddr::new(seen.public.ip(), port)
                }),
                None => None,
            },
            None => None,
        };
        let mut dialled_back = false;
        if let Some(candidate) = candidate {
            let proven = *lock(&self.proven);
            dialled_back =
                proven.is_some_and(|(at, when)| at == candidate && when.elapsed() < PROOF_KEPT);
            // A host firewall would let the observers' answers back in
            // but not a stranger's dial, and a router may claim a mapping
            // it does not make: only a dial back proves it.
            for (peer, _) in answered
                .iter()
                .take(if dialled_back { 0 } else { OBSERVERS })
            {
                if let Ok(true) = peer.dial_back(candidate.port()).await {
                    dialled_back = true;
                    *lock(&self.proven) = Some((candidate, std::time::Instant::now()));
                    break;
                }
            }
        }
        for (peer, aside) in &answered {
            if *aside {
                peer.close();
            }
        }
        let nat = reach::nat_of(classified.as_ref(), dialled_back, mapped);
        let rendezvous = if nat.dialable() || classified.is_none() {
            None
        } else {
            self.choose_rendezvous(pool)
        };
        let public = match (nat, candidate) {
            (Nat::Mapped, Some(mapped_at)) => Some(mapped_at),
            _ => classified.map(|c| c.public),
        };
        let ipv6 = self.look_ipv6(pool).await;
        let next = Reach {
            nat,
            public: public.map(|p| p.to_string()),
            rendezvous,
            relays: nat == Nat::Open && self.relay_allowed,
            ipv6,
        };
        self.rendezvous.set_relaying(next.relays);
        self.chosen.send_if_modified(|chosen| {
            let moved = *chosen != next.rendezvous;
            *chosen = next.rendezvous;
            moved
        });
        let changed = {
            let mut reach = lock(&self.reach);
            let changed = *reach != next;
            reach.clone_from(&next);
            changed
        };
        if changed {
            info!(
                nat = ?next.nat,
                public = next.public.as_deref().unwrap_or("unknown"),
                rendezvous = %next.rendezvous.map_or("none".into(), |r| r.to_human()),
                relays = next.relays,
                ipv6 = %next.ipv6.as_ref().map_or("none".into(), |v6| format!("{} {:?}", v6.addr, v6.state)),
                "reach: telling the swarm how this node is reached"
            );
            self.gossip.set_reach(next);
        }
        self.learn_hints(pool).await;
        // Each try is bounded, but a look must end whatever a dial does.
        let upgraded = tokio::time::timeout(UPGRADE_LIMIT, pool.upgrade())
            .await
            .unwrap_or(0);
        if upgraded > 0 {
            info!(
                upgraded,
                "reach: members reached through a relay are now reached directly"
            );
        }
        !observations.is_empty()
    }

    /// The node's IPv6 reach: a member with IPv6 is asked, over IPv6, what
    /// address it sees (which proves the way out) and to dial back there
    /// (which proves the way in, through any firewall). With no such
    /// member yet, the node's own global address is a mere candidate,
    /// where members may observe it. `None` without a global IPv6
    /// address, or where the address seen is not the node's own (a
    /// translating router: IPv4's ways serve).
    async fn look_ipv6(&self, pool: &Arc<Pool>) -> Option<Ipv6Reach> {
        let own = cairn_net::pool::global_ipv6_addresses();
        let first = *own.first()?;
        // Members that may answer over IPv6: those anyone can dial there,
        // then those nobody has seen use it yet (a filtering firewall
        // would drop the dial).
        let mut observers: Vec<(bool, NodeId, String)> = self
            .others_up()
            .filter_map(|m| {
                let v6 = m.member.advert.reach.ipv6?;
                (v6.state != Ipv6State::Filtered).then_some((
                    v6.state != Ipv6State::Open,
                    m.member.node,
                    v6.addr,
                ))
            })
            .collect();
        observers.sort();
        // What a member saw lately, while the address is still this
        // node's.
        let kept = lock(&self.ipv6_seen).clone().filter(|(v6, when)| {
            when.elapsed() < PROOF_KEPT
                && v6
                    .addr
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| own.contains(&a.ip()))
        });
        // It still holds: IPv6 addresses change rarely, and each look over
        // it costs a handshake (and, behind a filtering firewall, a
        // dial-back that waits out its timeout).
        if let Some((v6, when)) = &kept
            && when.elapsed() < IPV6_LOOK_EVERY
        {
            return Some(v6.clone());
        }
        for (_, node, addr) in observers.into_iter().take(2) {
            let peer = match tokio::time::timeout(
                cairn_net::pool::PROBE_TIMEOUT,
                pool.dial_aside(node, &addr, cairn_net::pool::PROBE_TIMEOUT),
            )
            .await
            {
                Ok(Ok(peer)) => peer,
                Ok(Err(e)) => {
                    debug!(observer = %node.to_human(), %addr, "reach: no IPv6 observation: {e}");
                    continue;
                }
                Err(_) => {
                    debug!(observer = %node.to_human(), %addr, "reach: IPv6 observer silent");
                    continue;
                }
            };
            let seen = tokio::time::timeout(cairn_net::pool::PROBE_TIMEOUT, peer.observe()).await;
            let Ok(Ok(seen)) = seen else {
                peer.close();
                continue;
            };
            if !own.contains(&seen.ip()) || seen.port() != self.port {
                peer.close();
                debug!(%seen, "reach: members see another IPv6 address than this node's own; IPv6 is not advertised");
                return None;
            }
            let addr = seen.to_string();
            let proven = kept
                .as_ref()
                .is_some_and(|(v6, _)| v6.addr == addr && v6.state == Ipv6State::Open);
            let open = proven
                || matches!(
                    tokio::time::timeout(
                        cairn_net::pool::PROBE_TIMEOUT * 2,
                        peer.dial_back(self.port)
                    )
                    .await,
                    Ok(Ok(true))
                );
            peer.close();
            let v6 = Ipv6Reach {
                addr,
                state: if open {
                    Ipv6State::Open
                } else {
                    Ipv6State::Filtered
                },
            };
            *lock(&self.ipv6_seen) = Some((v6.clone(), std::time::Instant::now()));
            return Some(v6);
        }
        // No member answered over IPv6 this time: what one saw lately
        // holds.
        if let Some((v6, _)) = kept {
            return Some(v6);
        }
        Some(Ipv6Reach {
            addr: SocketAddr::new(first, self.port).to_string(),
            state: Ipv6State::Candidate,
        })
    }

    /// Asks a member anyone can dial (the rendezvous first) how each
    /// member is reached: gossip keeps only a member's own word, so a
    /// member this node has not heard from yet would be dialled at its
    /// LAN address, and one that needs no rendezvous could not be found.
    async fn learn_hints(&self, pool: &Arc<Pool>) {
        let rendezvous = lock(&self.reach).rendezvous;
        let mut asked: Vec<NodeId> = rendezvous.into_iter().collect();
        asked.extend(
            self.others_up()
                .filter(|m| m.member.advert.reach.nat.dialable())
                .map(|m| m.member.node),
        );
        for node in asked.into_iter().take(2) {
            let Some(addr) = self.address_of(node) else {
                continue;
            };
            let ask = async { pool.peer(node, &addr).await?.members().await };
            let Ok(Ok(members)) = tokio::time::timeout(cairn_net::pool::PROBE_TIMEOUT, ask).await
            else {
                continue;
            };
            let mut hints = lock(&self.hints);
            hints.clear();
            // At most what a Members answer holds; a member's own list.
            for state in members.into_iter().filter(|m| m.member.node != self.node) {
                let m = state.member;
                hints.insert(m.node, (m.addr, m.advert.reach, state.up));
            }
            return;
        }
    }

    /// The other members up that spoke to this node, in their own words.
    fn others_up(&self) -> impl Iterator<Item = cairn_proto::gossip::MemberState> + use<'_> {
        self.gossip
            .members()
            .into_iter()
            .filter(|m| m.up && m.member.node != self.node)
    }

    /// Members worth asking: up, at an address that counts (outside every
    /// LAN), those anyone can dial first; the seeds when gossip knows none.
    fn observers(&self) -> Vec<(NodeId, String)> {
        let mut found: Vec<(bool, NodeId, String)> = self
            .others_up()
            .filter_map(|m| {
                let reach = &m.member.advert.reach;
                let addr = if reach.nat.dialable() {
                    reach.public.clone().unwrap_or(m.member.addr.clone())
                } else {
                    m.member.addr.clone()
                };
                let counts = addr.parse().is_ok_and(reach::observer_counts);
                counts.then_some((!reach.nat.dialable(), m.member.node, addr))
            })
            .collect();
        if found.is_empty() {
            found = self
                .membership
                .seeds()
                .into_iter()
                .filter(|s| s.node != self.node)
                .filter(|s| s.addr.parse().is_ok_and(reach::observer_counts))
                .map(|s| (false, s.node, s.addr))
                .collect();
        }
        found.sort();
        found
            .into_iter()
            .map(|(_, node, addr)| (node, addr))
            .collect()
    }

    /// The member to wait for calls at: of the up and dialable members,
    /// one that relays (a relayed dial goes through the rendezvous) with
    /// the lowest id. Every node behind a NAT picks the same one, so a
    /// member that has not heard from another yet can guess where it
    /// waits: its own rendezvous (see `reach::plan`).
    ///
    /// A member is judged by its own word, or by a hint where its own
    /// word has not come yet, and counts as up where SWIM or the hint's
    /// giver holds it up: a member that can reach this node only through
    /// a relay never speaks to it before this node waits at a relay, so
    /// judging by own words alone would keep this node at a member that
    /// does not relay, unreachable from most of the swarm.
    ///
    /// A member known only by others' word that this node failed to
    /// reach lately is passed over: a member's hint could otherwise keep
    /// it waiting at a member it cannot reach, unreachable itself.
    fn choose_rendezvous(&self, pool: &Pool) -> Option<NodeId> {
        let mut up = self.gossip.up();
        up.extend(
            lock(&self.hints)
                .iter()
                .filter(|(_, (_, _, up))| *up)
                .map(|(node, _)| *node),
        );
        up.remove(&self.node);
        up.retain(|node| self.gossip.route_of(node).is_some() || !pool.latency(*node).0);
        let dialable = reach::choose_rendezvous(
            up.into_iter()
                .filter_map(|node| Some((node, self.member(node)?.1))),
        );
        dialable.or_else(|| {
            // Before gossip knows who is dialable: a seed outside the
            // LAN, by the same rule, so the choice does not move once it does.
            self.membership
                .seeds()
                .into_iter()
                .filter(|s| s.node != self.node && s.addr.parse().is_ok_and(reach::observer_counts))
                .map(|s| s.node)
                .min()
        })
    }

    /// Keeps one `AwaitCalls` waiting at the rendezvous and answers the
    /// calls that come, until `stop`.
    async fn wait_for_calls(self: Arc<Self>, pool: Arc<Pool>, mut stop: watch::Receiver<bool>) {
        let mut chosen = self.chosen.subscribe();
        loop {
            let rendezvous = *chosen.borrow_and_update();
            let mut moved = chosen.clone();
            let waited = async {
                let Some(via) = rendezvous else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return;
                };
                let Some(addr) = self.address_of(via) else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return;
                };
                let calls = match pool.peer(via, &addr).await {
                    // An ask held at a rendezvous given up is dropped: the
                    // new one is asked at once (the old one sees it stop
                    // asking, and refuses calls for it soon after).
                    Ok(peer) => tokio::select! {
                        calls = peer.await_calls() => calls,
                        _ = moved.changed() => Ok(Vec::new()),
                    },
                    Err(e) => Err(e),
                };
                match calls {
                    Ok(calls) => {
                        for call in calls {
                            self.answer(call);
                        }
                    }
                    Err(e) => {
                        debug!(rendezvous = %via.to_human(), "reach: waiting for calls failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            tokio::select! {
                _ = waited => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn address_of(&self, node: NodeId) -> Option<String> {
        if let Some((addr, reach)) = self.member(node) {
            return Some(
                reach
                    .public
                    .filter(|_| reach.nat.dialable())
                    .unwrap_or(addr),
            );
        }
        self.membership
            .seeds()
            .into_iter()
            .find(|s| s.node == node)
            .map(|s| s.addr)
    }

    /// Answers a member's call from the endpoint's own socket: a few
    /// punch packets, or a few copies of the relay token. The calls come
    /// from the rendezvous this node chose, but what they name is only its
    /// word: at most [`CALLS_PER_WINDOW`] are answered per
    /// [`CALL_WINDOW`], so no rendezvous can make the node spray datagrams.
    fn answer(&self, call: Call) {
        {
            let mut window = lock(&self.answered);
            if window.0.elapsed() >= CALL_WINDOW {
                *window = (std::time::Instant::now(), 0);
            }
            if window.1 >= CALLS_PER_WINDOW {
                debug!("reach: too many calls lately; this one is left unanswered");
                return;
            }
            window.1 += 1;
        }
        let (from, at, ipv6, payload, copies, spacing) = match call {
            Call::Punch { from, at, ipv6 } => {
                (from, at, ipv6, PUNCH.to_vec(), PUNCHES, PUNCH_SPACING)
            }
            Call::Relay { from, at, token } => {
                (from, at, None, token.to_vec(), 3, Duration::from_millis(20))
            }
        };
        let Ok(at) = at.parse::<SocketAddr>() else {
            return;
        };
        // The dialler's IPv6 address too, when both have IPv6 working: the
        // dial may come that way, and this node's firewall must expect it.
        let ipv6 = ipv6
            .filter(|_| self.reach().ipv6_working().is_some())
            .and_then(|v6| v6.parse::<SocketAddr>().ok())
            .filter(|v6| v6.is_ipv6() && reach::observer_counts(*v6));
        debug!(from = %from.to_human(), %at, ?ipv6, "reach: answering a member's call");
        let raw = Arc::clone(&self.raw);
        tokio::spawn(async move {
            for _ in 0..copies {
                cairn_net::tls::send_raw(&raw, &payload, at);
                if let Some(v6) = ipv6 {
                    cairn_net::tls::send_raw(&raw, &payload, v6);
                }
                tokio::time::sleep(spacing).await;
            }
        });
    }
}

impl Routes for ReachService {
    fn me(&self) -> Reach {
        self.reach()
    }

    fn member(&self, node: NodeId) -> Option<(String, Reach)> {
        let hint = lock(&self.hints)
            .get(&node)
            .map(|(addr, reach, _)| (addr.clone(), reach.clone()));
        reach::believed(self.gossip.route_of(&node), hint)
    }

    fn punch_here(&self, node: NodeId) -> Option<SocketAddr> {
        let reach = self.reach();
        let ipv6 = reach.ipv6_working().map(|(addr, _)| addr.to_owned());
        let at = reach.public.filter(|_| reach.nat.dialable())?;
        self.rendezvous
            .call(
                node,
                Call::Punch {
                    from: self.node,
                    at,
                    ipv6,
                },
            )
            .ok()
    }
}

/// This host's addresses, to tell whether observers see one of them.
fn own_ips() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(|i| i.ip()).collect(),
        Err(e) => {
            warn!("reach: cannot list the network interfaces: {e}");
            Vec::new()
        }
    }
}

//! Gossip's I/O: runs the node's SWIM instance (`foca`, plain code driven
//! by packets and timers) on a task, carries its packets to members in
//! `Gossip` requests over the authenticated transport, turns its timers
//! into sleeps, and keeps the member list its notifications describe.
//!
//! Two things ride on SWIM besides membership: the node's advert (changed
//! as a new identity, so the swarm sees fresh free space and draining),
//! and the founder's signed removals (custom broadcasts, each verified
//! against the swarm before it is kept or passed on).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification, Timer};
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::gossip_codec::{BoundCodec, Heard};
use crate::membership::{JoinError, Membership};
use cairn_host::lock;
use cairn_net::pool::Pool;
use cairn_proto::NodeAddr;
use cairn_proto::gossip::{Advert, GossipMember, MemberState};
use cairn_proto::ids::NodeId;
use cairn_proto::membership::Removal;
use cairn_proto::reach::Reach;

/// Deadline for handing one packet to a member.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// While no member is up, the seeds are announced to this often.
const REANNOUNCE: Duration = Duration::from_secs(10);
/// Removals are retold (to members that missed them) at most this often.
const RETELL_REMOVALS: Duration = Duration::from_secs(60);
/// A removal is a few hundred bytes; anything larger is not one.
const MAX_REMOVAL_BYTES: usize = 512;

/// Packets from members waiting for SWIM. Members send them at will, so
/// the queue has a bound: a packet that finds it full is dropped, which
/// SWIM takes as ordinary loss (and a node whose gossip never runs, having
/// no address to advertise, keeps none).
const PACKET_QUEUE: usize = 256;

/// A SWIM packet and the authenticated member that sent it.
type Packet = (NodeId, Vec<u8>);

enum Event {
    /// This node's own probe of a member the swarm said is down.
    Probed {
        member: GossipMember,
        answered: bool,
    },
    Timer(Timer<GossipMember>),
    Announce(Vec<NodeAddr>),
    Advert(Advert),
    Removal(Removal),
    /// The node left its swarm: tell the members, forget them.
    Leave,
}

type Swim = Foca<GossipMember, BoundCodec, rand::rngs::StdRng, RemovalGossip>;

/// How long this node's own probe of a member the swarm says is down waits
/// for an answer.
const DOWN_PROBE: Duration = Duration::from_secs(5);
/// A member down that did not answer this node is probed again for this
/// long after it went down: SWIM no longer pings it, and it may not know
/// this node (a peer speaks only for itself), so without this the two
/// could stay apart after a moment of loss.
const LOST_PROBED_FOR: Duration = Duration::from_secs(15 * 60);
/// Lost members probed again per [`REANNOUNCE`] tick, the longest
/// unprobed first.
const LOST_PER_TICK: usize = 4;

/// The node's gossip: its SWIM instance and the members it knows.
pub struct GossipService {
    me: Mutex<GossipMember>,
    membership: Arc<Membership>,
    events: mpsc::UnboundedSender<Event>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    packets: mpsc::Sender<Packet>,
    packet_receiver: Mutex<Option<mpsc::Receiver<Packet>>>,
    members: Mutex<BTreeMap<NodeId, MemberState>>,
    seeds: Mutex<Vec<NodeAddr>>,
    /// SWIM runs (events are taken); until then adverts are only kept.
    running: AtomicBool,
    /// What members said of themselves, and who is speaking now.
    heard: Arc<Mutex<Heard>>,
    /// Members SWIM holds down that answered this node's own probe.
    disputed: Mutex<BTreeMap<NodeId, GossipMember>>,
    /// Members down that did not answer this node: when they went down
    /// and when they were last probed (see [`LOST_PROBED_FOR`]).
    lost: Mutex<BTreeMap<NodeId, (GossipMember, Instant, Instant)>>,
    /// How this node can be reached, as it learned (see `net::reach`):
    /// part of every advert it tells.
    reach: Mutex<Reach>,
    /// The pool SWIM dials with, for how each member was reached. Weak:
    /// the pool's routes hold this service, and a cycle would keep the
    /// endpoint's socket bound after the node stops (a factory reset
    /// restarts the node on the same port).
    pool: std::sync::OnceLock<std::sync::Weak<Pool>>,
}

impl GossipService {
    /// Gossip for this node, advertising `me`, in the swarm `membership`
    /// describes.
    pub fn new(me: GossipMember, membership: Arc<Membership>) -> Arc<Self> {
        let (events, receiver) = mpsc::unbounded_channel();
        let (packets, packet_receiver) = mpsc::channel(PACKET_QUEUE);
        let heard = Heard::shared(me.node);
        Arc::new(Self {
            me: Mutex::new(me),
            membership,
            events,
            receiver: Mutex::new(Some(receiver)),
            packets,
            packet_receiver: Mutex::new(Some(packet_receiver)),
            members: Mutex::new(BTreeMap::new()),
            seeds: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
            heard,
            disputed: Mutex::new(BTreeMap::new()),
            lost: Mutex::new(BTreeMap::new()),
            reach: Mutex::new(Reach::default()),
            pool: std::sync::OnceLock::new(),
        })
    }

    /// A packet the authenticated member `from` sent: it may speak only
    /// for itself (see [`crate::gossip_codec`]).
    pub fn take_packet(&self, from: NodeId, packet: Vec<u8>) {
        if self.running.load(Ordering::Acquire) {
            let _ = self.packets.try_send((from, packet));
        }
    }

    /// Joins the swarm's gossip through these members (and keeps them, to
    /// try again while no member answers).
    pub fn announce_to(&self, seeds: Vec<NodeAddr>) {
        let seeds = self.others(seeds);
        lock(&self.seeds).clone_from(&seeds);
        let _ = self.events.send(Event::Announce(seeds));
    }

    /// Introduces members found some other way (mDNS on the LAN) that SWIM
    /// does not know as up; the seeds stay as they are. SWIM's answer
    /// carries the member's real identity, so a wrong hint costs one
    /// refused connection.
    pub fn introduce(&self, found: Vec<NodeAddr>) {
        // Hints come from anyone on the LAN; with no SWIM to take them
        // (yet, or ever) they are not kept: discovery tells them again.
        if !self.running.load(Ordering::Acquire) {
            return;
        }
        let members = lock(&self.members);
        let unknown: Vec<NodeAddr> = self
            .others(found)
            .into_iter()
            .filter(|f| !members.get(&f.node).is_some_and(|m| m.up))
            .collect();
        drop(members);
        if !unknown.is_empty() {
            let _ = self.events.send(Event::Announce(unknown));
        }
    }

    /// Tells the swarm this node's advert when it changed enough to matter
    /// (see [`Advert::worth_telling`]). Before gossip runs (or when it
    /// never will) the advert is only kept, so nothing queues up.
    pub fn set_advert(&self, mut advert: Advert) {
        advert.reach = lock(&self.reach).clone();
        let mut me = lock(&self.me);
        if !self.running.load(Ordering::Acquire) {
            me.advert = advert;
        } else if advert.worth_telling(&me.advert) {
            let _ = self.events.send(Event::Advert(advert));
        }
    }

    /// Tells the swarm how this node can be reached now (a new NAT state,
    /// a new public address, another rendezvous).
    pub fn set_reach(&self, reach: Reach) {
        *lock(&self.reach) = reach;
        let advert = lock(&self.me).advert.clone();
        self.set_advert(advert);
    }

    /// A member's address and reach in its own words, for dialling it.
    pub fn route_of(&self, node: &NodeId) -> Option<(String, Reach)> {
        let heard = lock(&self.heard);
        let own = heard.own_word(node)?;
        Some((own.addr.clone(), own.advert.reach.clone()))
    }

    /// Leaves the swarm's gossip (the node left its swarm): members are
    /// told and forgotten; a later join announces afresh.
    pub fn leave(&self) {
        lock(&self.seeds).clear();
        let _ = self.events.send(Event::Leave);
    }

    /// Spreads a removal this node has just kept to the other members.
    pub fn spread_removal(&self, removal: Removal) {
        let _ = self.events.send(Event::Removal(removal));
    }

    /// The members known: this node first, then the others, up or down,
    /// each as it described itself to this node (a member heard of only
    /// through others is left out until it speaks). Removed members are
    /// left out.
    pub fn members(&self) -> Vec<MemberState> {
        let mut all = vec![MemberState {
            member: lock(&self.me).clone(),
            up: true,
            path: None,
        }];
        let members = lock(&self.members);
        all.extend(
            members
                .values()
                .filter(|m| !self.membership.is_removed(&m.member.node))
                .filter_map(|m| self.in_own_words(m)),
        );
        all
    }

    /// The members SWIM holds up, whether or not they spoke to this node
    /// yet (what they said of themselves is in [`Self::members`]).
    pub fn up(&self) -> std::collections::BTreeSet<NodeId> {
        lock(&self.members)
            .values()
            .filter(|m| m.up && !self.membership.is_removed(&m.member.node))
            .map(|m| m.member.node)
            .collect()
    }

    /// What the swarm says of `node`: its own advert and whether it is up;
    /// `None` when it has not spoken to this node.
    pub fn view(&self, node: &NodeId) -> Option<MemberState> {
        lock(&self.members)
            .get(node)
            .and_then(|m| self.in_own_words(m))
    }

    fn in_own_words(&self, state: &MemberState) -> Option<MemberState> {
        let own = lock(&self.heard).own_word(&state.member.node)?.clone();
        let path = self
            .pool
            .get()
            .and_then(std::sync::Weak::upgrade)
            .and_then(|pool| pool.path(own.node));
        Some(MemberState {
            member: own,
            up: state.up,
            path,
        })
    }

    fn others(&self, addrs: Vec<NodeAddr>) -> Vec<NodeAddr> {
        let me = lock(&self.me).node;
        addrs.into_iter().filter(|s| s.node != me).collect()
    }

    /// Runs SWIM until `stop` turns true, then leaves the swarm's gossip.
    pub async fn run(self: Arc<Self>, pool: Arc<Pool>, mut stop: watch::Receiver<bool>) {
        let Some(mut receiver) = lock(&self.receiver).take() else {
            return;
        };
        let _ = self.pool.set(Arc::downgrade(&pool));
        let Some(mut packets) = lock(&self.packet_receiver).take() else {
            return;
        };
        self.running.store(true, Ordering::Release);
        let mut seed = [0u8; 32];
        let _ = getrandom::fill(&mut seed);
        let mut foca: Swim = Foca::with_custom_broadcast(
            lock(&self.me).clone(),
            foca::Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN)),
            rand::rngs::StdRng::from_seed(seed),
            BoundCodec::new(Arc::clone(&self.heard)),
            RemovalGossip {
                membership: Arc::clone(&self.membership),
            },
        );
        let mut runtime = AccumulatingRuntime::new();
        let mut reannounce = tokio::time::interval(REANNOUNCE);
        let mut last_retold: Option<Instant> = None;
        loop {
            let result = tokio::select! {
                Some((from, packet)) = packets.recv() => {
                    lock(&self.heard).set_sender(Some(from));
                    let handled = foca.handle_data(&packet, &mut runtime);
                    lock(&self.heard).set_sender(None);
                    handled
                }
                event = receiver.recv() => match event {
                    Some(Event::Probed { member, answered }) => {
                        self.probed(member, answered);
                        Ok(())
                    }
                    Some(Event::Timer(timer)) => foca.handle_timer(timer, &mut runtime),
                    Some(Event::Announce(seeds)) => announce(&mut foca, &seeds, &mut runtime),
                    Some(Event::Advert(advert)) => self.change_advert(&mut foca, advert, &mut runtime),
                    Some(Event::Removal(removal)) => add_removal(&mut foca, &removal),
                    Some(Event::Leave) => {
                        let left = foca.leave_cluster(&mut runtime);
                        self.flush(&mut runtime, &pool);
                        lock(&self.members).clear();
                        lock(&self.disputed).clear();
                        lock(&self.lost).clear();
                        // Rejoining later needs an identity SWIM has not
                        // seen leave.
                        let mut me = lock(&self.me);
                        let next = GossipMember {
                            bump: me.bump.wrapping_add(1),
                            ..me.clone()
                        };
                        *me = next.clone();
                        drop(me);
                        left.and_then(|()| foca.change_identity(next, &mut runtime))
                    }
                    None => break,
                },
                _ = reannounce.tick() => {
                    self.reprobe_disputed(&pool);
                    let alone = lock(&self.members).values().all(|m| !m.up);
                    let seeds = lock(&self.seeds).clone();
                    if alone && !seeds.is_empty() {
                        announce(&mut foca, &seeds, &mut runtime)
                    } else {
                        Ok(())
                    }
                }
                _ = stop.wait_for(|s| *s) => {
                    let _ = foca.leave_cluster(&mut runtime);
                    self.flush(&mut runtime, &pool);
                    break;
                }
            };
            if let Err(e) = result {
                debug!("gossip: {e}");
            }
            if self.flush(&mut runtime, &pool)
                && last_retold.is_none_or(|t| t.elapsed() >= RETELL_REMOVALS)
            {
                // A member came up: it may have been away when a removal
                // spread, so the removals are told again.
                last_retold = Some(Instant::now());
                for removal in self.membership.removals() {
                    if let Err(e) = add_removal(&mut foca, &removal) {
                        debug!("gossip: retelling a removal: {e}");
                    }
                }
            }
        }
    }

    fn change_advert(
        &self,
        foca: &mut Swim,
        advert: Advert,
        runtime: &mut AccumulatingRuntime<GossipMember>,
    ) -> Result<(), foca::Error> {
        let mut me = lock(&self.me);
        if !advert.worth_telling(&me.advert) {
            // Told already (the ticker may ask twice before this runs).
            return Ok(());
        }
        let next = GossipMember {
            advert,
            bump: me.bump.wrapping_add(1),
            ..me.clone()
        };
        foca.change_identity(next.clone(), &mut *runtime)?;
        debug!(
            free = next.advert.free,
            draining = next.advert.draining,
            "gossip: advert retold"
        );
        *me = next;
        Ok(())
    }

    /// Sends what SWIM wants sent, schedules its timers, applies its news.
    /// True when a member came up.
    fn flush(&self, runtime: &mut AccumulatingRuntime<GossipMember>, pool: &Arc<Pool>) -> bool {
        while let Some((to, packet)) = runtime.to_send() {
            let pool = Arc::clone(pool);
            // A member is reached where it said it is, not where another
            // member told SWIM it is.
            let addr = self.address_of(&to);
            tokio::spawn(async move {
                let node = to.node;
                // The dial is not cut short: a member behind a router may
                // take a punch or a relay to reach (each bounded by the
                // pool), and a dial given up halfway is made again from
                // scratch by the next packet.
                let sent = match pool.peer(node, &addr).await {
                    Ok(peer) => tokio::time::timeout(SEND_TIMEOUT, peer.gossip(packet.to_vec()))
                        .await
                        .map_err(|_| ()),
                    Err(_) => Err(()),
                };
                if !matches!(sent, Ok(Ok(()))) {
                    // SWIM itself notices a member that does not answer.
                    pool.mark_down(node);
                }
            });
        }
        while let Some((after, timer)) = runtime.to_schedule() {
            let events = self.events.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = events.send(Event::Timer(timer));
            });
        }
        let mut came_up = false;
        while let Some(notification) = runtime.to_notify() {
            let mut members = lock(&self.members);
            match notification {
                OwnedNotification::MemberUp(member) => {
                    info!(node = %member.node.to_human(), addr = %member.addr, "gossip: member up");
                    lock(&self.disputed).remove(&member.node);
                    lock(&self.lost).remove(&member.node);
                    came_up = true;
                    members.insert(member.node, MemberState::heard(member, true));
                }
                OwnedNotification::MemberDown(member) => {
                    // Down may be SWIM's own verdict or a claim another
                    // member relayed: either way this node probes the
                    // member itself before it believes it (a claim about
                    // another member leads to a probe, never by itself to
                    // a repair).
                    self.probe(member, pool);
                }
                OwnedNotification::Rename(_, member) => {
                    let up = members.get(&member.node).is_some_and(|m| m.up);
                    members.insert(member.node, MemberState::heard(member, up));
                }
                OwnedNotification::Defunct => {
                    warn!("gossip: the swarm declared this node down; it rejoins")
                }
                _ => {}
            }
        }
        came_up
    }
}

impl GossipService {
    /// Where to reach `member`: where it said it is, if it spoke to this
    /// node; else where it was announced (a seed, or a hint).
    fn address_of(&self, member: &GossipMember) -> String {
        lock(&self.heard)
            .own_word(&member.node)
            .map_or_else(|| member.addr.clone(), |own| own.addr.clone())
    }

    /// Probes `member` from this node; the outcome comes back as an event.
    fn probe(&self, member: GossipMember, pool: &Arc<Pool>) {
        let addr = self.address_of(&member);
        let pool = Arc::clone(pool);
        let events = self.events.clone();
        tokio::spawn(async move {
            let answered = match pool.peer(member.node, &addr).await {
                Ok(peer) => tokio::time::timeout(DOWN_PROBE, peer.stat())
                    .await
                    .is_ok_and(|r| r.is_ok()),
                Err(_) => false,
            };
            let _ = events.send(Event::Probed { member, answered });
        });
    }

    /// Probes again the members SWIM holds down but that answered this
    /// node: SWIM no longer watches them, so this node does, until SWIM
    /// takes them back (they renew their identity) or they stop answering.
    fn reprobe_disputed(&self, pool: &Arc<Pool>) {
        let disputed: Vec<GossipMember> = lock(&self.disputed).values().cloned().collect();
        for member in disputed {
            self.probe(member, pool);
        }
        // And a few of those that did not answer, while they may yet come
        // back: the ways to them may have changed since (a member that
        // had not learned its reach, a relay that went).
        let lost: Vec<GossipMember> = {
            let mut lost = lock(&self.lost);
            lost.retain(|_, (_, since, _)| since.elapsed() < LOST_PROBED_FOR);
            let mut due: Vec<(Instant, NodeId)> = lost
                .iter()
                .map(|(node, (_, _, probed))| (*probed, *node))
                .collect();
            due.sort();
            due.into_iter()
                .take(LOST_PER_TICK)
                .filter_map(|(_, node)| {
                    let entry = lost.get_mut(&node)?;
                    entry.2 = Instant::now();
                    Some(entry.0.clone())
                })
                .collect()
        };
        for member in lost {
            // Its last failure is not news: the ways to it are tried afresh.
            pool.forget_failure(member.node);
            self.probe(member, pool);
        }
    }

    /// The outcome of this node's own probe of a member SWIM declared down.
    fn probed(&self, member: GossipMember, answered: bool) {
        // Before the members' lock: `heard` is never taken under it.
        let addr = self.address_of(&member);
        let mut members = lock(&self.members);
        // A member that retold its advert has a newer identity already;
        // only the identity it goes by now counts.
        let current = members
            .get(&member.node)
            .is_none_or(|m| m.member.bump == member.bump);
        if !current {
            return;
        }
        let mut disputed = lock(&self.disputed);
        let mut lost = lock(&self.lost);
        if answered {
            lost.remove(&member.node);
            if disputed.insert(member.node, member.clone()).is_none() {
                info!(node = %member.node.to_human(), "gossip: a member said to be down answers this node; kept up");
                // SWIM takes it back once it hears it speak for itself:
                // an announce makes it answer with its identity as it is
                // now.
                let _ = self.events.send(Event::Announce(vec![NodeAddr {
                    node: member.node,
                    addr,
                    site: None,
                }]));
            }
            members.insert(member.node, MemberState::heard(member, true));
        } else {
            disputed.remove(&member.node);
            let now = Instant::now();
            if !lost.contains_key(&member.node) {
                warn!(node = %member.node.to_human(), "gossip: member down (the swarm said so, and it does not answer this node)");
            }
            let since = lost.get(&member.node).map_or(now, |(_, since, _)| *since);
            lost.insert(member.node, (member.clone(), since, now));
            members.insert(member.node, MemberState::heard(member, false));
        }
    }
}

fn announce(
    foca: &mut Swim,
    seeds: &[NodeAddr],
    runtime: &mut AccumulatingRuntime<GossipMember>,
) -> Result<(), foca::Error> {
    for seed in seeds {
        // Only the address matters: the seed's answer brings its identity.
        foca.announce(
            GossipMember::placeholder(seed.node, seed.addr.clone(), seed.site.clone()),
            &mut *runtime,
        )?;
    }
    Ok(())
}

fn add_removal(foca: &mut Swim, removal: &Removal) -> Result<(), foca::Error> {
    let bytes = postcard::to_allocvec(removal).map_err(|_| foca::Error::MalformedPacket)?;
    foca.add_broadcast(&bytes).map(|_| ())
}

/// Why a removal heard by gossip is not kept.
#[derive(Debug, thiserror::Error)]
pub enum RemovalGossipError {
    /// Too big or not a removal at all.
    #[error("a gossiped removal does not decode")]
    Malformed,
    /// Not signed by this swarm's founder, or this node is in no swarm.
    #[error("a gossiped removal is refused: {0}")]
    Refused(#[from] JoinError),
}

/// SWIM's handler of removals: keeps (and passes on) those signed by this
/// swarm's founder, once each.
struct RemovalGossip {
    membership: Arc<Membership>,
}

/// The member a removal removes: a newer telling of it replaces an older
/// one in SWIM's backlog.
struct RemovedMember(NodeId);

impl Invalidates for RemovedMember {
    fn invalidates(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl AsRef<[u8]> for RemovedMember {
    fn as_ref(&self) -> &[u8] {
        &self.0.0
    }
}

impl BroadcastHandler<GossipMember> for RemovalGossip {
    type Key = RemovedMember;
    type Error = RemovalGossipError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&GossipMember>,
    ) -> Result<Option<RemovedMember>, RemovalGossipError> {
        if data.len() > MAX_REMOVAL_BYTES {
            return Err(RemovalGossipError::Malformed);
        }
        let removal: Removal =
            postcard::from_bytes(data).map_err(|_| RemovalGossipError::Malformed)?;
        // Verified against the swarm and kept (a small file write, and
        // removals are rare) before it is passed on.
        let news = self.membership.remove(&removal)?;
        if news {
            info!(
                member = %removal.member.to_human(),
                "gossip: a member was removed from the swarm; refused from now on"
            );
        }
        // Added here (no sender): always spread; heard: only if news.
        Ok((news || sender.is_none()).then_some(RemovedMember(removal.member)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node whose gossip never runs (no address to advertise) keeps
    /// nothing members send it, however much they send.
    #[test]
    fn packets_are_not_kept_where_swim_does_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeId([1; 32]);
        let membership = Arc::new(Membership::open(dir.path(), node).unwrap());
        let gossip = GossipService::new(
            GossipMember::placeholder(node, String::new(), None),
            membership,
        );
        for _ in 0..10_000 {
            gossip.take_packet(NodeId([2; 32]), vec![0; 1000]);
        }
        assert_eq!(gossip.packets.capacity(), PACKET_QUEUE);
        // Running, the queue holds at most its bound.
        gossip.running.store(true, Ordering::Release);
        for _ in 0..10_000 {
            gossip.take_packet(NodeId([2; 32]), vec![0; 1000]);
        }
        assert_eq!(gossip.packets.capacity(), 0);
    }
}

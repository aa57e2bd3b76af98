//! Gossip's I/O: runs the node's SWIM instance (`foca`, plain code driven
//! by packets and timers) on a task, carries its packets to members in
//! `Gossip` requests over the authenticated transport, turns its timers
//! into sleeps, and keeps the member list its notifications describe.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::pool::Pool;
use crate::ids::NodeId;
use crate::proto::NodeAddr;
use crate::proto::gossip::{Advert, GossipMember, MemberState};

/// Deadline for handing one packet to a member.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// While no member is up, the seeds are announced to this often.
const REANNOUNCE: Duration = Duration::from_secs(10);

enum Event {
    Packet(Vec<u8>),
    Timer(Timer<GossipMember>),
    Announce(Vec<NodeAddr>),
}

/// The node's gossip: its SWIM instance and the members it knows.
pub struct GossipService {
    me: GossipMember,
    events: mpsc::UnboundedSender<Event>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    members: Mutex<BTreeMap<[u8; 32], MemberState>>,
    seeds: Mutex<Vec<NodeAddr>>,
}

impl GossipService {
    /// Gossip for this node, advertising `me`.
    pub fn new(me: GossipMember) -> Arc<Self> {
        let (events, receiver) = mpsc::unbounded_channel();
        Arc::new(Self {
            me,
            events,
            receiver: Mutex::new(Some(receiver)),
            members: Mutex::new(BTreeMap::new()),
            seeds: Mutex::new(Vec::new()),
        })
    }

    /// A packet another member sent.
    pub fn take_packet(&self, packet: Vec<u8>) {
        let _ = self.events.send(Event::Packet(packet));
    }

    /// Joins the swarm's gossip through these members (and keeps them, to
    /// try again while no member answers).
    pub fn announce_to(&self, seeds: Vec<NodeAddr>) {
        let seeds: Vec<NodeAddr> = seeds
            .into_iter()
            .filter(|s| s.node != self.me.node)
            .collect();
        lock(&self.seeds).clone_from(&seeds);
        let _ = self.events.send(Event::Announce(seeds));
    }

    /// The members known: this node first, then the others, up or down.
    pub fn members(&self) -> Vec<MemberState> {
        let mut all = vec![MemberState {
            member: self.me.clone(),
            up: true,
        }];
        all.extend(lock(&self.members).values().cloned());
        all
    }

    /// Runs SWIM until `stop` turns true, then leaves the swarm's gossip.
    pub async fn run(self: Arc<Self>, pool: Arc<Pool>, mut stop: watch::Receiver<bool>) {
        let Some(mut receiver) = lock(&self.receiver).take() else {
            return;
        };
        let mut seed = [0u8; 32];
        let _ = getrandom::fill(&mut seed);
        let mut foca = Foca::new(
            self.me.clone(),
            foca::Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN)),
            rand::rngs::StdRng::from_seed(seed),
            PostcardCodec,
        );
        let mut runtime = AccumulatingRuntime::new();
        let mut reannounce = tokio::time::interval(REANNOUNCE);
        loop {
            let result = tokio::select! {
                event = receiver.recv() => match event {
                    Some(Event::Packet(packet)) => foca.handle_data(&packet, &mut runtime),
                    Some(Event::Timer(timer)) => foca.handle_timer(timer, &mut runtime),
                    Some(Event::Announce(seeds)) => announce(&mut foca, &seeds, &mut runtime),
                    None => break,
                },
                _ = reannounce.tick() => {
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
            self.flush(&mut runtime, &pool);
        }
    }

    /// Sends what SWIM wants sent, schedules its timers, applies its news.
    fn flush(&self, runtime: &mut AccumulatingRuntime<GossipMember>, pool: &Arc<Pool>) {
        while let Some((to, packet)) = runtime.to_send() {
            let pool = Arc::clone(pool);
            tokio::spawn(async move {
                let node = NodeId(to.node);
                let sent = tokio::time::timeout(SEND_TIMEOUT, async {
                    let peer = pool.peer(node, &to.addr).await?;
                    peer.gossip(packet.to_vec()).await
                })
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    // SWIM itself notices a member that does not answer.
                    pool.forget(node).await;
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
        while let Some(notification) = runtime.to_notify() {
            let mut members = lock(&self.members);
            match notification {
                OwnedNotification::MemberUp(member) => {
                    info!(node = %NodeId(member.node).to_human(), addr = %member.addr, "gossip: member up");
                    members.insert(member.node, MemberState { member, up: true });
                }
                OwnedNotification::MemberDown(member) => {
                    warn!(node = %NodeId(member.node).to_human(), "gossip: member declared down by the swarm");
                    members.insert(member.node, MemberState { member, up: false });
                }
                OwnedNotification::Rename(_, member) => {
                    let up = members.get(&member.node).is_some_and(|m| m.up);
                    members.insert(member.node, MemberState { member, up });
                }
                OwnedNotification::Defunct => {
                    warn!("gossip: the swarm declared this node down; it rejoins")
                }
                _ => {}
            }
        }
    }
}

fn announce(
    foca: &mut Foca<GossipMember, PostcardCodec, rand::rngs::StdRng, foca::NoCustomBroadcast>,
    seeds: &[NodeAddr],
    runtime: &mut AccumulatingRuntime<GossipMember>,
) -> Result<(), foca::Error> {
    for seed in seeds {
        // Only the address matters: the seed's answer brings its identity.
        foca.announce(
            GossipMember {
                node: seed.node,
                addr: seed.addr.clone(),
                bump: 0,
                advert: Advert {
                    site: seed.site.clone(),
                    capacity: 0,
                    free: 0,
                    software: String::new(),
                },
            },
            &mut *runtime,
        )?;
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

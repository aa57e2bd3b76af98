//! The node as a rendezvous and a relay for members behind routers.
//!
//! A member behind a NAT keeps an `AwaitCalls` request waiting here (see
//! `net::reach`); a member that wants to reach it asks this node to pass
//! it a call: a punch (both then know each other's public address) or a
//! relay. A relay is two UDP ports of this node's: each side sends its
//! token to its port from its QUIC socket, and from then on the datagrams
//! each sends there go out of the other port to the other side. The relay
//! never terminates their QUIC or TLS: the Noise handshake bound to the TLS
//! exporter stays end to end, and the relay sees only ciphertext.
//!
//! Everything a member can make grow here has a bound: members waiting
//! ([`MAX_WAITING`]), calls queued per member ([`MAX_CALLS`]), relayed
//! connections, bytes per second and per day (the owner's `[reach]`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_host::lock;
use cairn_proto::ids::NodeId;
use cairn_proto::reach::{CALL_HOLD_S, Call, MAX_CALLS};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tracing::{debug, info};

/// Most members waiting for calls at once.
pub const MAX_WAITING: usize = 1024;
/// Most relayed connections one asking key holds at once. An owner's
/// `cairn` opens one per relayed box per command, and a relay outlives
/// its connection by up to [`RELAY_IDLE`]: a few commands in a minute to
/// a household with several such boxes must fit.
pub const MAX_RELAYS_PER_KEY: usize = 16;
/// A relay port that carried nothing for this long is closed.
const RELAY_IDLE: Duration = Duration::from_secs(60);
/// A relay whose two sides have not both sent their tokens by then is
/// closed: the dial through it failed or was never made.
const RELAY_UNBOUND: Duration = Duration::from_secs(10);
/// A member whose call was answered asks again at once: one that has
/// not within this long waits elsewhere (it moved to another rendezvous)
/// or is gone, and a call queued for it would wait unanswered while its
/// dialler times out.
const REASK_GRACE: Duration = Duration::from_secs(5);
/// A member that stopped asking for calls this long ago is forgotten when
/// room is needed for another.
const WAIT_FORGOTTEN: Duration = Duration::from_secs(CALL_HOLD_S * 2 + 10);

/// Why a call or relay was refused, in words for the asker.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// The target keeps no `AwaitCalls` here.
    #[error(
        "{0} does not wait for calls at this node; it may be offline or use another rendezvous"
    )]
    NotWaiting(String),
    /// Too many calls wait for the target already.
    #[error("too many calls wait for {0}; retry shortly")]
    Busy(String),
    /// Too many members wait here.
    #[error("this node holds calls for {MAX_WAITING} members already")]
    Full,
    /// The owner does not let this node relay (or it cannot be reached
    /// from anywhere, which a relay must be).
    #[error(
        "this node does not relay: it has no public address of its own, or its owner turned relaying off ([reach] relay); dial through another member"
    )]
    NoRelay,
    /// The relay's limits are reached.
    #[error("the relay is at its limit ({0}); retry later or through another member")]
    RelayLimit(&'static str),
    /// A relay port could not be opened.
    #[error("cannot open a relay port: {0}")]
    Socket(#[from] std::io::Error),
}

/// The owner's limits on relaying.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Relaying allowed at all.
    pub enabled: bool,
    /// Relayed connections at once.
    pub sessions: usize,
    /// Bytes per second, over all of them.
    pub bytes_per_s: u64,
    /// Bytes per day, over all of them.
    pub bytes_per_day: u64,
}

struct Waiting {
    /// Where its packets come from, as this node sees them.
    seen: SocketAddr,
    /// This node's address on its connection (the family it reaches this
    /// node by: its side of a relay is opened there).
    local: Option<IpAddr>,
    queue: VecDeque<Call>,
    notify: Arc<Notify>,
    /// When its latest ask began or ended.
    last_asked: Instant,
    /// Its latest ask, counted: an earlier one still held (its connection
    /// went, or the member dropped it to wait elsewhere) is superseded and
    /// never takes the calls.
    generation: u64,
    /// Whether its latest ask is held here now.
    pending: bool,
    /// Whether its latest ask was given up unanswered: it is not coming
    /// back to ask again at once.
    abandoned: bool,
}

impl Waiting {
    /// Whether calls for it reach it: an ask is held, or one just ended.
    fn waits(&self) -> bool {
        self.pending || (!self.abandoned && self.last_asked.elapsed() < REASK_GRACE)
    }

    fn ended(&mut self, generation: u64, abandoned: bool) {
        if self.generation == generation && self.pending {
            self.pending = false;
            self.abandoned = abandoned;
            self.last_asked = Instant::now();
        }
    }
}

/// Marks an ask abandoned when its future is dropped unanswered (its
/// asker stopped it, or its connection went).
struct AskHeld<'a> {
    waiting: &'a Mutex<HashMap<NodeId, Waiting>>,
    peer: NodeId,
    generation: u64,
}

impl Drop for AskHeld<'_> {
    fn drop(&mut self) {
        if let Some(entry) = lock(self.waiting).get_mut(&self.peer) {
            entry.ended(self.generation, true);
        }
    }
}

/// The members waiting here, and the relay.
pub struct Rendezvous {
    waiting: Mutex<HashMap<NodeId, Waiting>>,
    relay: Arc<RelayMeter>,
    /// Whether this node may relay now (it is reachable from anywhere).
    relaying: std::sync::atomic::AtomicBool,
}

/// Relayed bytes against the owner's limits: one token bucket for the
/// rate, one count per day, and the sessions open.
struct RelayMeter {
    limits: RelayLimits,
    state: Mutex<MeterState>,
}

struct MeterState {
    sessions: usize,
    /// Relayed connections each asking key holds open.
    by_key: std::collections::BTreeMap<NodeId, usize>,
    tokens: f64,
    refilled: Instant,
    day_started: Instant,
    today: u64,
    /// Relayed since start (what `Rendezvous::relayed` reports).
    total: u64,
}

impl RelayMeter {
    /// Counts a relayed connection `from` asks for, within the owner's
    /// limit and [`MAX_RELAYS_PER_KEY`] (one member must not take every
    /// relayed connection from the others).
    fn begin(&self, from: NodeId) -> Result<(), RendezvousError> {
        let mut state = lock(&self.state);
        if state.sessions >= self.limits.sessions {
            return Err(RendezvousError::RelayLimit("relayed connections"));
        }
        let held = state.by_key.entry(from).or_default();
        if *held >= MAX_RELAYS_PER_KEY {
            return Err(RendezvousError::RelayLimit(
                "relayed connections for one member",
            ));
        }
        *held += 1;
        state.sessions += 1;
        Ok(())
    }

    /// A relayed connection `from` asked for ended.
    fn end(&self, from: NodeId) {
        let mut state = lock(&self.state);
        state.sessions = state.sessions.saturating_sub(1);
        if let Some(held) = state.by_key.get_mut(&from) {
            *held -= 1;
            if *held == 0 {
                state.by_key.remove(&from);
            }
        }
    }

    /// Whether `len` more bytes may go now.
    fn take(&self, len: usize) -> bool {
        let mut state = lock(&self.state);
        let now = Instant::now();
        if now.duration_since(state.day_started) >= Duration::from_secs(86_400) {
            state.day_started = now;
            state.today = 0;
        }
        let rate = self.limits.bytes_per_s as f64;
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        // A bucket of one second's worth lets QUIC's bursts through.
        state.tokens = (state.tokens + elapsed * rate).min(rate.max(65_536.0));
        state.refilled = now;
        let len64 = len as u64;
        if state.tokens < len as f64 || state.today + len64 > self.limits.bytes_per_day {
            return false;
        }
        state.tokens -= len as f64;
        state.today += len64;
        state.total += len64;
        true
    }
}

impl Rendezvous {
    /// A rendezvous relaying within `limits`.
    pub fn new(limits: RelayLimits) -> Self {
        let now = Instant::now();
        Self {
            waiting: Mutex::new(HashMap::new()),
            relay: Arc::new(RelayMeter {
                limits,
                state: Mutex::new(MeterState {
                    sessions: 0,
                    by_key: std::collections::BTreeMap::new(),
                    tokens: limits.bytes_per_s as f64,
                    refilled: now,
                    day_started: now,
                    today: 0,
                    total: 0,
                }),
            }),
            relaying: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Lets this node relay (it was found reachable from anywhere) or not.
    pub fn set_relaying(&self, relaying: bool) {
        self.relaying
            .store(relaying, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this node relays now.
    pub fn relays(&self) -> bool {
        self.relay.limits.enabled && self.relaying.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes relayed since start, and relayed connections open.
    pub fn relayed(&self) -> (u64, usize) {
        let state = lock(&self.relay.state);
        (state.total, state.sessions)
    }

    /// `peer`, seen at `seen`, waits for calls: the calls queued for it,
    /// as soon as there are some, or none after `hold`. A newer ask from
    /// the same member supersedes this one, which then ends with none.
    pub async fn await_calls(
        &self,
        peer: NodeId,
        seen: SocketAddr,
        local: Option<IpAddr>,
        hold: Duration,
    ) -> Result<Vec<Call>, RendezvousError> {
        let (notified, held) = {
            let mut waiting = lock(&self.waiting);
            if !waiting.contains_key(&peer) {
                waiting.retain(|_, w| w.waits() || w.last_asked.elapsed() < WAIT_FORGOTTEN);
                if waiting.len() >= MAX_WAITING {
                    return Err(RendezvousError::Full);
                }
            }
            let entry = waiting.entry(peer).or_insert_with(|| Waiting {
                seen,
                local,
                queue: VecDeque::new(),
                notify: Arc::new(Notify::new()),
                last_asked: Instant::now(),
                generation: 0,
                pending: false,
                abandoned: false,
            });
            entry.seen = seen;
            entry.local = local;
            entry.last_asked = Instant::now();
            entry.generation += 1;
            entry.abandoned = false;
            if !entry.queue.is_empty() {
                entry.pending = false;
                return Ok(entry.queue.drain(..).collect());
            }
            entry.pending = true;
            // Earlier asks still held end now, with nothing.
            entry.notify.notify_waiters();
            // Registered before the lock is let go: a call queued after
            // it wakes this ask.
            let notified = Arc::clone(&entry.notify).notified_owned();
            let held = AskHeld {
                waiting: &self.waiting,
                peer,
                generation: entry.generation,
            };
            (notified, held)
        };
        let _ = tokio::time::timeout(hold, notified).await;
        let mut waiting = lock(&self.waiting);
        let calls = waiting.get_mut(&peer).map_or_else(Vec::new, |entry| {
            if entry.generation == held.generation {
                entry.ended(held.generation, false);
                entry.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        });
        // The guard takes the same lock as it drops (a no-op now that the
        // ask ended answered).
        drop(waiting);
        drop(held);
        Ok(calls)
    }

    /// Queues `call` for `target`; where `target` is seen.
    pub fn call(&self, target: NodeId, call: Call) -> Result<SocketAddr, RendezvousError> {
        let mut waiting = lock(&self.waiting);
        let entry = waiting
            .get_mut(&target)
            .filter(|w| w.waits())
            .ok_or_else(|| RendezvousError::NotWaiting(target.to_human()))?;
        if entry.queue.len() >= MAX_CALLS {
            return Err(RendezvousError::Busy(target.to_human()));
        }
        entry.queue.push_back(call);
        entry.notify.notify_waiters();
        Ok(entry.seen)
    }

    /// Whether `target` waits here.
    pub fn waits_here(&self, target: &NodeId) -> bool {
        lock(&self.waiting).get(target).is_some_and(Waiting::waits)
    }

    /// Opens a relay between `from` (seen at `from_seen`, on this node's
    /// address `local_ip`) and `target`: tells `target` its port and
    /// token, and returns the asker's. Each side's port is on the address
    /// its own connection reached (the two may differ in family: a member
    /// with IPv6 only on one side, IPv4 on the other).
    pub async fn open_relay(
        &self,
        from: NodeId,
        from_seen: SocketAddr,
        target: NodeId,
        local_ip: IpAddr,
    ) -> Result<(SocketAddr, [u8; 16]), RendezvousError> {
        if !self.relays() {
            return Err(RendezvousError::NoRelay);
        }
        let (target_seen, target_local) = {
            let waiting = lock(&self.waiting);
            waiting
                .get(&target)
                .filter(|w| w.waits())
                .map(|w| (w.seen, w.local.unwrap_or(local_ip)))
                .ok_or_else(|| RendezvousError::NotWaiting(target.to_human()))?
        };
        self.relay.begin(from)?;
        let session =
            Session::open((local_ip, from_seen.ip()), (target_local, target_seen.ip())).await;
        let session = match session {
            Ok(session) => session,
            Err(e) => {
                self.relay.end(from);
                return Err(e.into());
            }
        };
        let (asker_at, asker_token) = (session.a.at, session.a.token);
        let call = Call::Relay {
            from,
            at: session.b.at.to_string(),
            token: session.b.token,
        };
        if let Err(e) = self.call(target, call) {
            self.relay.end(from);
            return Err(e);
        }
        info!(
            from = %from.to_human(),
            to = %target.to_human(),
            "relay: opened {} <-> {}",
            asker_at,
            session.b.at
        );
        let meter = Arc::clone(&self.relay);
        tokio::spawn(async move {
            let relayed = session.run(Arc::clone(&meter)).await;
            meter.end(from);
            debug!("relay: closed after {relayed} bytes");
        });
        Ok((asker_at, asker_token))
    }
}

/// One relayed connection: a port per side, each bound to its side's
/// address by the token that side sent first.
struct Session {
    a: Side,
    b: Side,
}

/// One side of a relay: its port, its token, the IP it must send from.
struct Side {
    socket: Arc<UdpSocket>,
    state: Arc<quinn_udp::UdpSocketState>,
    at: SocketAddr,
    token: [u8; 16],
    ip: IpAddr,
}

/// Bytes one side's receive buffer holds: a whole GRO batch (the kernel
/// coalesces at most 64 KiB).
const BATCH_BYTES: usize = 64 * 1024;
/// Socket buffers of a relay port, as the node's own (see
/// `cairn_net::tls::bind_endpoint`): a relay not scheduled in time must
/// not drop what its members send.
const RELAY_SOCKET_BUFFER: usize = 4 << 20;

impl Session {
    /// A session whose sides are each (this node's address the side's
    /// connection reached, the side's own IP).
    async fn open(a: (IpAddr, IpAddr), b: (IpAddr, IpAddr)) -> std::io::Result<Self> {
        let side = |(local_ip, ip): (IpAddr, IpAddr)| -> std::io::Result<Side> {
            let bind = SocketAddr::new(local_ip, 0);
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(bind),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            let _ = socket.set_recv_buffer_size(RELAY_SOCKET_BUFFER);
            let _ = socket.set_send_buffer_size(RELAY_SOCKET_BUFFER);
            socket.bind(&bind.into())?;
            let socket: std::net::UdpSocket = socket.into();
            // Sets non-blocking mode and GRO, as quinn's own sockets.
            let state = quinn_udp::UdpSocketState::new((&socket).into())?;
            let socket = UdpSocket::from_std(socket)?;
            let mut token = [0u8; 16];
            getrandom::fill(&mut token).map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(Side {
                at: socket.local_addr()?,
                socket: Arc::new(socket),
                state: Arc::new(state),
                token,
                ip: canonical(ip),
            })
        };
        Ok(Self {
            a: side(a)?,
            b: side(b)?,
        })
    }

    /// Forwards both ways until the relay is idle for [`RELAY_IDLE`] (or
    /// never bound within [`RELAY_UNBOUND`]); the bytes relayed.
    async fn run(self, meter: Arc<RelayMeter>) -> u64 {
        let bound = Arc::new(Mutex::new([None, None]));
        let opened = Instant::now();
        let a_to_b = tokio::spawn(forward(
            [self.a.clone_io(), self.b.clone_io()],
            0,
            Arc::clone(&bound),
            Arc::clone(&meter),
            opened,
        ));
        let b_to_a = tokio::spawn(forward(
            [self.b.clone_io(), self.a.clone_io()],
            1,
            bound,
            meter,
            opened,
        ));
        a_to_b.await.unwrap_or(0) + b_to_a.await.unwrap_or(0)
    }
}

impl Side {
    fn clone_io(&self) -> Side {
        Side {
            socket: Arc::clone(&self.socket),
            state: Arc::clone(&self.state),
            at: self.at,
            token: self.token,
            ip: self.ip,
        }
    }
}

/// One direction of a relay: what `from` receives from its side goes out
/// of `to` to the other side. `me` is this side's slot in `bound`.
async fn forward(
    [from, to]: [Side; 2],
    me: usize,
    bound: Arc<Mutex<[Option<SocketAddr>; 2]>>,
    meter: Arc<RelayMeter>,
    opened: Instant,
) -> u64 {
    let mut buf = vec![0u8; BATCH_BYTES];
    let mut relayed = 0u64;
    loop {
        let both = {
            let b = lock(&bound);
            b[0].is_some() && b[1].is_some()
        };
        if !both && opened.elapsed() > RELAY_UNBOUND {
            return relayed;
        }
        let wait = if both { RELAY_IDLE } else { RELAY_UNBOUND };
        let mut meta = [quinn_udp::RecvMeta::default()];
        let got = tokio::time::timeout(wait, async {
            loop {
                from.socket.readable().await?;
                let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
                match from.socket.try_io(tokio::io::Interest::READABLE, || {
                    from.state
                        .recv((&*from.socket).into(), &mut bufs, &mut meta)
                }) {
                    Ok(n) => return Ok::<usize, std::io::Error>(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        // Silent for too long, or the socket failed: the relay ends.
        let Ok(Ok(count)) = got else {
            return relayed;
        };
        if count == 0 {
            continue;
        }
        let meta = meta[0];
        let datagrams = &buf[..meta.len];
        let source = SocketAddr::new(canonical(meta.addr.ip()), meta.addr.port());
        let to_addr = {
            let mut b = lock(&bound);
            if b[me].is_none() {
                // The side's first word binds its address; only from the
                // IP its authenticated connection came from.
                if datagrams == from.token && source.ip() == from.ip {
                    b[me] = Some(meta.addr);
                }
                continue;
            }
            if b[me] != Some(meta.addr) {
                continue;
            }
            b[1 - me]
        };
        let Some(to_addr) = to_addr else {
            continue;
        };
        if datagrams == from.token || !meter.take(datagrams.len()) {
            continue;
        }
        // A GRO batch leaves as it came: one GSO send of the same segments
        // where the kernel can, else one datagram at a time.
        let stride = meta.stride.max(1);
        let per_send = stride * to.state.max_gso_segments().max(1);
        for chunk in datagrams.chunks(per_send) {
            let transmit = quinn_udp::Transmit {
                destination: to_addr,
                ecn: None,
                contents: chunk,
                segment_size: (chunk.len() > stride).then_some(stride),
                src_ip: None,
            };
            loop {
                if to.socket.writable().await.is_err() {
                    return relayed;
                }
                match to.socket.try_io(tokio::io::Interest::WRITABLE, || {
                    to.state.send((&*to.socket).into(), &transmit)
                }) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    _ => break,
                }
            }
        }
        relayed += datagrams.len() as u64;
    }
}

pub use cairn_proto::reach::canonical;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RelayLimits {
        RelayLimits {
            enabled: true,
            sessions: 1,
            bytes_per_s: 1 << 20,
            bytes_per_day: 10 << 20,
        }
    }

    #[tokio::test]
    async fn a_call_reaches_the_member_waiting_and_only_it() {
        let rendezvous = Arc::new(Rendezvous::new(limits()));
        let (waiter, caller) = (NodeId([1; 32]), NodeId([2; 32]));
        let seen: SocketAddr = "11.77.0.10:7447".parse().unwrap();
        let waiting = {
            let r = Arc::clone(&rendezvous);
            tokio::spawn(async move {
                r.await_calls(waiter, seen, None, Duration::from_secs(5))
                    .await
            })
        };
        // Until the waiter has asked, it does not wait here.
        while !rendezvous.waits_here(&waiter) {
            tokio::task::yield_now().await;
        }
        let call = Call::Punch {
            from: caller,
            at: "11.77.0.20:7447".into(),
            ipv6: None,
        };
        assert_eq!(rendezvous.call(waiter, call.clone()).unwrap(), seen);
        assert_eq!(waiting.await.unwrap().unwrap(), vec![call.clone()]);
        assert!(matches!(
            rendezvous.call(caller, call.clone()),
            Err(RendezvousError::NotWaiting(_))
        ));
        // Calls queue while the waiter is between asks, up to a bound.
        for _ in 0..MAX_CALLS {
            rendezvous.call(waiter, call.clone()).unwrap();
        }
        assert!(matches!(
            rendezvous.call(waiter, call.clone()),
            Err(RendezvousError::Busy(_))
        ));
        let queued = rendezvous
            .await_calls(waiter, seen, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(queued.len(), MAX_CALLS);
    }

    /// A member that asks again (over a new connection, or back from
    /// another rendezvous) supersedes its earlier ask: the earlier one
    /// ends with nothing, and the calls go to the ask it holds now.
    #[tokio::test]
    async fn a_newer_ask_takes_the_calls_and_an_older_one_ends_empty() {
        let rendezvous = Arc::new(Rendezvous::new(limits()));
        let waiter = NodeId([1; 32]);
        let seen: SocketAddr = "11.77.0.10:7447".parse().unwrap();
        let ask = |hold: u64| {
            let r = Arc::clone(&rendezvous);
            tokio::spawn(async move {
                r.await_calls(waiter, seen, None, Duration::from_secs(hold))
                    .await
                    .unwrap()
            })
        };
        let older = ask(30);
        while !rendezvous.waits_here(&waiter) {
            tokio::task::yield_now().await;
        }
        let newer = ask(30);
        // The older ask ends long before its hold, with no call.
        let ended = tokio::time::timeout(Duration::from_secs(10), older)
            .await
            .expect("the superseded ask ends at once");
        assert_eq!(ended.unwrap(), vec![]);
        let call = Call::Punch {
            from: NodeId([2; 32]),
            at: "11.77.0.20:7447".into(),
            ipv6: None,
        };
        rendezvous.call(waiter, call.clone()).unwrap();
        assert_eq!(newer.await.unwrap(), vec![call.clone()]);
        // Between an answer and the next ask, calls queue for it.
        rendezvous.call(waiter, call.clone()).unwrap();
        assert_eq!(ask(30).await.unwrap(), vec![call.clone()]);
        // An ask given up unanswered (the member moved to another
        // rendezvous, or its connection went): calls are refused at once,
        // not queued for a member that will not come for them.
        let dropped = ask(30);
        while !lock(&rendezvous.waiting)[&waiter].pending {
            tokio::task::yield_now().await;
        }
        dropped.abort();
        let _ = dropped.await;
        assert!(!rendezvous.waits_here(&waiter));
        assert!(matches!(
            rendezvous.call(waiter, call.clone()),
            Err(RendezvousError::NotWaiting(_))
        ));
    }

    /// Two sockets on loopback stand for two members: each sends its token,
    /// then datagrams cross; a stranger's datagrams to a port go nowhere,
    /// and a second session is over the limit.
    #[tokio::test]
    async fn a_relay_forwards_between_the_two_token_holders_only() {
        let rendezvous = Rendezvous::new(limits());
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let (asker, target) = (NodeId([1; 32]), NodeId([2; 32]));
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(matches!(
            rendezvous
                .open_relay(asker, a.local_addr().unwrap(), target, loopback)
                .await,
            Err(RendezvousError::NoRelay)
        ));
        rendezvous.set_relaying(true);
        let waiting = rendezvous.await_calls(target, b.local_addr().unwrap(), None, Duration::ZERO);
        assert!(waiting.await.unwrap().is_empty());
        let (at_a, token_a) = rendezvous
            .open_relay(asker, a.local_addr().unwrap(), target, loopback)
            .await
            .unwrap();
        let calls = rendezvous
            .await_calls(target, b.local_addr().unwrap(), None, Duration::ZERO)
            .await
            .unwrap();
        let Call::Relay {
            at: at_b,
            token: token_b,
            from,
        } = &calls[0]
        else {
            panic!("a relay call, got {calls:?}");
        };
        assert_eq!(*from, asker);
        let at_b: SocketAddr = at_b.parse().unwrap();
        a.send_to(&token_a, at_a).await.unwrap();
        b.send_to(token_b, at_b).await.unwrap();
        // The stranger knows A's port but not its token: ignored.
        stranger.send_to(b"not from a", at_a).await.unwrap();
        // Each direction has its own task: a datagram that races ahead of
        // the other side's token is dropped, as a lost one would be, so
        // each side says hello until heard (at most 50 times).
        async fn heard(
            from: &UdpSocket,
            to: &UdpSocket,
            via: SocketAddr,
            said: &[u8],
        ) -> SocketAddr {
            let mut buf = [0u8; 64];
            for _ in 0..50 {
                from.send_to(said, via).await.unwrap();
                if let Ok(got) =
                    tokio::time::timeout(Duration::from_millis(100), to.recv_from(&mut buf)).await
                {
                    let (n, seen) = got.unwrap();
                    assert_eq!(&buf[..n], said);
                    return seen;
                }
            }
            panic!("{said:?} never crossed the relay");
        }
        let seen = heard(&a, &b, at_a, b"hello b").await;
        assert_eq!(seen, at_b, "B sees the relay's port, not A");
        heard(&b, &a, at_b, b"hello a").await;
        let (relayed, sessions) = rendezvous.relayed();
        assert!(relayed >= 14 && relayed % 7 == 0, "{relayed}");
        assert_eq!(sessions, 1);
        assert!(matches!(
            rendezvous
                .open_relay(asker, a.local_addr().unwrap(), target, loopback)
                .await,
            Err(RendezvousError::RelayLimit(_))
        ));
    }

    #[test]
    fn one_member_holds_a_bounded_share_of_the_relayed_connections() {
        let meter = Rendezvous::new(RelayLimits {
            sessions: 100,
            ..limits()
        })
        .relay;
        let (greedy, other) = (NodeId([1; 32]), NodeId([2; 32]));
        for _ in 0..MAX_RELAYS_PER_KEY {
            meter.begin(greedy).unwrap();
        }
        assert!(matches!(
            meter.begin(greedy),
            Err(RendezvousError::RelayLimit(_))
        ));
        meter.begin(other).unwrap();
        meter.end(greedy);
        meter.begin(greedy).unwrap();
        assert_eq!(lock(&meter.state).sessions, MAX_RELAYS_PER_KEY + 1);
    }

    #[test]
    fn the_meter_holds_the_rate_and_the_day() {
        let meter = RelayMeter {
            limits: RelayLimits {
                enabled: true,
                sessions: 1,
                bytes_per_s: 100_000,
                bytes_per_day: 150_000,
            },
            state: Mutex::new(MeterState {
                sessions: 0,
                by_key: std::collections::BTreeMap::new(),
                tokens: 100_000.0,
                refilled: Instant::now(),
                day_started: Instant::now(),
                today: 0,
                total: 0,
            }),
        };
        assert!(meter.take(60_000));
        assert!(!meter.take(60_000), "the second's tokens are spent");
        lock(&meter.state).tokens = 100_000.0;
        assert!(meter.take(60_000));
        lock(&meter.state).tokens = 100_000.0;
        assert!(!meter.take(60_000), "the day's budget is spent");
    }
}

//! The node's answer to one request, apart from QUIC: admission (by
//! [`crate::admission`]), validation, and the work against the store, the
//! root records, ownership, the steward and membership. The server reads a
//! frame and hands it here with a [`Body`] for the bytes that follow it, so
//! every refusal and its [`ErrorCode`] can be tested without a network.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::{debug, info, warn};

use super::gossip::GossipService;
use super::steward::StewardService;
use crate::admission::{self, Standing};
use crate::donation::{Donation, PutAsk, Refused};
use crate::membership::{JoinError, Membership};
use crate::missing::MissingLog;
use crate::ownership::{ClaimOffer, NodeControl, Ownership, OwnershipError};
use crate::roots::{RootStore, RootStoreError};
use crate::spent::{Spent, SpentError};
use crate::steward::StewardError;
use cairn_host::unix_now;
use cairn_net::Identity;
use cairn_net::tls::TransportLimits;
use cairn_proto::ids::{NodeId, OwnerId};
use cairn_proto::limits::{self, Limits, Refusal};
use cairn_proto::membership::MemberCert;
use cairn_proto::{
    DiskInfo, ErrorCode, Hello, MAX_EVICT, MAX_MISSING, MAX_USAGE, OwnerUse, PROTOCOL_VERSION,
    Request, Response, StatInfo, SteerGrant, audit, signed,
};
use cairn_store::{PutOutcome, ShardStore, StoreError};

/// How long a put waits for room in the body budget before the peer is
/// told to retry (RateLimited).
const BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Takes over the disks here whose markers name `old_node` and `owner`
/// (refused as foreign until now) and puts them into service; returns
/// them and the shards on them. Disks of anyone else are not touched.
fn adopt_disks(
    store: &ShardStore,
    old_node: &NodeId,
    owner: &OwnerId,
) -> Result<(Vec<cairn_proto::DiskId>, u64), Refusal> {
    use cairn_store::fs::RealMount;
    use cairn_store::{DiskProblem, DiskState};
    let mut adopted = Vec::new();
    let mut problems = Vec::new();
    for disk in store.disk_stats() {
        let DiskState::Refused(DiskProblem::ForeignMarker { owner: node, .. }) = &disk.state else {
            continue;
        };
        if node != old_node {
            continue;
        }
        let mount = RealMount::new(&disk.path);
        let result = ShardStore::adopt_disk_of(store.config(), &mount, Some((old_node, owner)))
            .and_then(|id| {
                store
                    .attach(Box::new(RealMount::new(&disk.path)))
                    .map(|state| (id, state))
            });
        match result {
            Ok((id, _)) => adopted.push((id, disk.path.clone())),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if adopted.is_empty() {
        return Err(Refusal {
            code: ErrorCode::NotFound,
            message: if problems.is_empty() {
                format!(
                    "no disk of node {} is plugged into this box; plug it in and ask again",
                    old_node.to_human()
                )
            } else {
                problems.join("; ")
            },
        });
    }
    let stats = store.disk_stats();
    let shards = stats
        .iter()
        .filter(|d| adopted.iter().any(|(_, path)| *path == d.path))
        .map(|d| d.shards)
        .sum();
    Ok((adopted.into_iter().map(|(id, _)| id).collect(), shards))
}

/// What a request produces: a response frame and a raw body (empty for
/// most answers).
pub type Answer = (Response, Vec<u8>);

/// The bytes that follow a request frame on its stream (a put's shard).
pub trait Body: Send {
    /// Reads exactly `len` bytes; an error says why they did not come.
    fn read(&mut self, len: usize) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
}

impl Body for &[u8] {
    async fn read(&mut self, len: usize) -> Result<Vec<u8>, String> {
        if self.len() < len {
            return Err(format!("{} of {len} bytes", self.len()));
        }
        let (body, rest) = self.split_at(len);
        *self = rest;
        Ok(body.to_vec())
    }
}

/// Who may use this node.
#[derive(Debug, Clone)]
pub enum AllowList {
    /// Any authenticated peer.
    Any,
    /// Only these keys.
    Only(HashSet<NodeId>),
}

impl AllowList {
    /// Whether the configuration allows `peer`.
    pub fn admits(&self, peer: &NodeId) -> bool {
        match self {
            Self::Any => true,
            Self::Only(keys) => keys.contains(peer),
        }
    }
}

/// How the node serves peers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The node's key pair.
    pub identity: Identity,
    /// Request limits.
    pub limits: Limits,
    /// QUIC limits.
    pub transport: TransportLimits,
    /// Who may connect.
    pub allow: AllowList,
    /// Deadline for the handshake.
    pub handshake_timeout: Duration,
    /// Deadline for one request, body included.
    pub request_timeout: Duration,
    /// How long a stop waits for requests in flight.
    pub drain_timeout: Duration,
    /// Bytes of shard bodies buffered at once over all peers.
    pub body_budget: u64,
}

/// What the server serves and consults, shared with the rest of the daemon.
pub struct Services {
    /// The shard store.
    pub store: Arc<ShardStore>,
    /// Owners' root records.
    pub roots: Arc<RootStore>,
    /// Ownership, pairing window, health.
    pub control: Arc<NodeControl>,
    /// The steward, if this node stewards.
    pub steward: Option<Arc<StewardService>>,
    /// This node's swarm membership.
    pub membership: Arc<Membership>,
    /// The swarm's gossip.
    pub gossip: Arc<GossipService>,
    /// Shards this node lost or has back, for stewards.
    pub missing: Arc<MissingLog>,
    /// What the box gives other owners, and whom it evicted.
    pub donation: Arc<Donation>,
    /// Owner-signed commands already carried out (replays are refused).
    pub spent: Arc<Spent>,
    /// Members behind routers waiting for calls here, and the relay.
    pub rendezvous: Arc<crate::rendezvous::Rendezvous>,
    /// The owner's settings that stick (`None`: this node keeps none, as
    /// in tests without a configuration file).
    pub settings: Option<Arc<crate::settings::Settings>>,
    /// The inbox for system update bundles (`None`: this node takes none).
    pub updates: Option<Arc<crate::updates::UpdateInbox>>,
}

/// Answers requests: the services a request may touch, and the limits.
pub struct Handler {
    pub(crate) config: ServerConfig,
    services: Services,
    hello: Hello,
    /// Permits are KiB of body memory; a put holds its share until stored.
    body_budget: Semaphore,
    /// Dial-backs in flight.
    dial_backs: Semaphore,
    /// Requests answered, by kind and outcome, for `/metrics`.
    counters: crate::face::metrics::RequestCounters,
}

/// Most dial-backs a node makes at once for members.
pub const DIAL_BACKS: usize = 4;
/// How long a dial-back waits for the member's answer.
const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(3);

impl Handler {
    /// A handler for `config` over `services`.
    pub fn new(config: ServerConfig, services: Services) -> Self {
        let hello = Hello {
            versions: vec![PROTOCOL_VERSION],
            software: cairn_net::software(),
            max_shard: config.limits.max_shard,
            refused: None,
            member: None,
        };
        // Never below one largest shard, or such a put would wait forever.
        let budget_kib = config
            .body_budget
            .max(config.limits.max_shard)
            .div_ceil(1024);
        let body_budget = Semaphore::new(
            usize::try_from(budget_kib)
                .unwrap_or(Semaphore::MAX_PERMITS)
                .min(Semaphore::MAX_PERMITS),
        );
        Self {
            config,
            services,
            hello,
            body_budget,
            dial_backs: Semaphore::new(DIAL_BACKS),
            counters: crate::face::metrics::RequestCounters::new(),
        }
    }

    /// Requests answered so far, by kind and outcome.
    pub fn counters(&self) -> &crate::face::metrics::RequestCounters {
        &self.counters
    }

    /// What the node knows of `peer`, showing `cert`, now; the decisions
    /// are [`crate::admission`]'s.
    pub fn standing(&self, peer: &NodeId, cert: Option<&MemberCert>) -> Standing {
        Standing {
            configured: self.config.allow.admits(peer),
            owner_client: self.services.control.is_owner_client(peer),
            member: self.services.membership.admits(peer, cert, unix_now()),
            removed: self.services.membership.is_removed(peer),
        }
    }

    /// Whether the handshake with `peer`, who says `hello`, goes on.
    pub fn admit_handshake(&self, peer: &NodeId, hello: &Hello) -> Result<(), String> {
        admission::at_handshake(
            peer,
            self.standing(peer, hello.member.as_ref()),
            &hello.versions,
            self.services.control.pairing_open(Instant::now()),
        )
    }

    /// This node's hello, with its current membership certificate.
    pub fn hello(&self) -> Hello {
        Hello {
            member: self.services.membership.own_cert(),
            ..self.hello.clone()
        }
    }

    /// Answers `request` from `peer` (showing `cert` at its handshake):
    /// checks that the peer may ask it, that it is within the limits, then
    /// does it, reading a put's shard from `body`.
    pub async fn answer<B: Body>(
        &self,
        peer: NodeId,
        cert: Option<&MemberCert>,
        request: Request,
        body: &mut B,
    ) -> Result<Answer, Refusal> {
        Ok(self.answer_held(peer, cert, request, body).await?.0)
    }

    /// Like [`Handler::answer`], with the share of the body budget the
    /// answer's bytes hold: a shard read for a `Get` or an `Audit` is in
    /// memory until it is written out, so the caller keeps the share until
    /// then. Every shard body a peer can make the node hold, coming or
    /// going, is inside the one budget.
    pub async fn answer_held<B: Body>(
        &self,
        peer: NodeId,
        cert: Option<&MemberCert>,
        request: Request,
        body: &mut B,
    ) -> Result<(Answer, Option<SemaphorePermit<'_>>), Refusal> {
        admission::for_request(&peer, self.standing(&peer, cert), &request)?;
        limits::validate(&request, &self.config.limits)?;
        let held = match self.answer_bytes(&request).await? {
            0 => None,
            bytes => Some(self.reserve(bytes).await?),
        };
        Ok((handle(self, peer, request, body).await?, held))
    }

    /// Answers the requests that need to know the connection they came on
    /// (`Observe`, `DialBack`, `AwaitCalls`, `Connect`, `RelayOpen`):
    /// `remote` is where its packets come from, `local_ip` the node's
    /// address they reached. `None` for any other request.
    pub async fn answer_reach(
        &self,
        peer: NodeId,
        cert: Option<&MemberCert>,
        request: &Request,
        remote: std::net::SocketAddr,
        local_ip: Option<std::net::IpAddr>,
    ) -> Option<Result<Answer, Refusal>> {
        use crate::rendezvous::{RendezvousError, canonical};
        use cairn_proto::reach::{CALL_HOLD_S, Call};
        let remote = std::net::SocketAddr::new(canonical(remote.ip()), remote.port());
        let reach_request = matches!(
            request,
            Request::Observe
                | Request::DialBack { .. }
                | Request::AwaitCalls
                | Request::Connect { .. }
                | Request::RelayOpen { .. }
        );
        if !reach_request {
            return None;
        }
        if let Err(refusal) = admission::for_request(&peer, self.standing(&peer, cert), request) {
            return Some(Err(refusal));
        }
        let rendezvous = &self.services.rendezvous;
        let refused = |e: RendezvousError| {
            let code = match e {
                RendezvousError::NotWaiting(_) => ErrorCode::NotFound,
                RendezvousError::Busy(_) | RendezvousError::RelayLimit(_) => ErrorCode::RateLimited,
                RendezvousError::NoRelay => ErrorCode::Forbidden,
                RendezvousError::Full | RendezvousError::Socket(_) => ErrorCode::Internal,
            };
            Refusal {
                code,
                message: e.to_string(),
            }
        };
        let answer = match request {
            Request::Observe => Ok(Response::Observed {
                addr: remote.to_string(),
            }),
            Request::DialBack { port } => {
                let target = std::net::SocketAddr::new(remote.ip(), *port);
                Ok(Response::DialedBack {
                    reached: self.dial_back(peer, target).await,
                })
            }
            Request::AwaitCalls => rendezvous
                .await_calls(
                    peer,
                    remote,
                    local_ip.map(canonical),
                    Duration::from_secs(CALL_HOLD_S),
                )
                .await
                .map(Response::Calls)
                .map_err(refused),
            Request::Connect { target, ipv6 } => rendezvous
                .call(
                    *target,
                    Call::Punch {
                        from: peer,
                        at: remote.to_string(),
                        // Only a global IPv6 address is passed on: the
                        // target punches it, and nothing on its own LAN
                        // should be a member's to name.
                        ipv6: ipv6.as_deref().and_then(global_ipv6).map(|a| a.to_string()),
                    },
                )
                .map(|at| Response::Rendezvous { at: at.to_string() })
                .map_err(refused),
            Request::RelayOpen { target } => match local_ip {
                None => Err(Refusal {
                    code: ErrorCode::Internal,
                    message: "this node cannot tell its own address on this connection".into(),
                }),
                Some(ip) => rendezvous
                    .open_relay(peer, remote, *target, canonical(ip))
                    .await
                    .map(|(at, token)| Response::Relayed {
                        at: at.to_string(),
                        token,
                    })
                    .map_err(refused),
            },
            _ => unreachable!("matched above"),
        };
        Some(answer.map(|response| (response, Vec::new())))
    }

    /// Dials `peer` at `target` from a socket of its own (not the one the
    /// peer's connection reached), as a stranger would: whether `peer`
    /// answered there. At most [`DIAL_BACKS`] at once; only to the
    /// address the request came from, so no member can aim it elsewhere.
    async fn dial_back(&self, peer: NodeId, target: std::net::SocketAddr) -> bool {
        let Ok(_permit) = self.dial_backs.try_acquire() else {
            return false;
        };
        let bind = if target.is_ipv6() {
            std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            std::net::SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let Ok(endpoint) = cairn_net::Peer::client_endpoint(bind) else {
            return false;
        };
        let dialled = cairn_net::Peer::connect_as(
            &endpoint,
            target,
            peer,
            &self.config.identity,
            self.services.membership.own_cert(),
            DIAL_BACK_TIMEOUT,
        )
        .await;
        let reached = dialled.is_ok();
        if let Ok(peer) = dialled {
            peer.close();
        }
        endpoint.close(0u32.into(), b"dialled back");
        // The close must leave before the endpoint goes, or the member
        // keeps counting the connection against this node's key until
        // its idle timeout.
        let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
        reached
    }

    /// Bytes of shard the answer to `request` holds in memory.
    async fn answer_bytes(&self, request: &Request) -> Result<u64, Refusal> {
        match request {
            Request::Get {
                range: Some((_, len)),
                ..
            }
            | Request::UpdateGet { len, .. } => Ok(*len),
            Request::Get { id, range: None } | Request::Audit { id, .. } => {
                let store = Arc::clone(&self.services.store);
                let id = *id;
                Ok(blocking(move || store.record(id).map_or(0, |(_, r)| r.len)).await?)
            }
            _ => Ok(0),
        }
    }

    /// Waits for `bytes` of room in the body budget; a peer that waits too
    /// long is told to come back (the node is busy, not gone).
    async fn reserve(&self, bytes: u64) -> Result<SemaphorePermit<'_>, Refusal> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        tokio::time::timeout(BUDGET_WAIT, self.body_budget.acquire_many(kib))
            .await
            .map_err(|_| Refusal {
                code: ErrorCode::RateLimited,
                message: format!(
                    "busy moving other shards for {} s; retry shortly",
                    BUDGET_WAIT.as_secs()
                ),
            })?
            .map_err(|_| Refusal {
                code: ErrorCode::Internal,
                message: "the node is stopping".into(),
            })
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Refusal {
            code: ErrorCode::Internal,
            message: format!("the node failed while serving this: {e}"),
        })
}

fn store_refusal(error: StoreError) -> Refusal {
    let code = match &error {
        StoreError::HashMismatch { .. } => ErrorCode::HashMismatch,
        StoreError::TooLarge { .. } => ErrorCode::TooLarge,
        StoreError::NoSpace { .. }
        | StoreError::QuotaExceeded { .. }
        | StoreError::NoDisks { .. } => ErrorCode::NoSpace,
        StoreError::NotFound { .. } => ErrorCode::NotFound,
        StoreError::RangeOutOfBounds { .. } => ErrorCode::BadRequest,
        StoreError::ClaimsFull { .. } => ErrorCode::NoSpace,
        _ => ErrorCode::Internal,
    };
    Refusal {
        code,
        message: error.to_string(),
    }
}

async fn handle<B: Body>(
    shared: &Handler,
    peer: NodeId,
    request: Request,
    body: &mut B,
) -> Result<Answer, Refusal> {
    let store = Arc::clone(&shared.services.store);
    match request {
        Request::Stat => {
            let stats = blocking(move || store.disk_stats()).await?;
            let disks = stats
                .into_iter()
                .map(|disk| DiskInfo {
                    state: disk.state.to_string(),
                    capacity: disk.capacity,
                    used: disk.used,
                    free: disk.free,
                    shards: disk.shards,
                })
                .collect();
            let health = shared.services.control.health();
            Ok((
                Response::Stat(StatInfo {
                    software: cairn_net::software(),
                    max_shard: shared.config.limits.max_shard,
                    disks,
                    state: health.state.into(),
                    reasons: health.reasons,
                    temperature_mc: health.temperature_mc,
                    ownership: shared.services.control.ownership().info(),
                }),
                Vec::new(),
            ))
        }
        Request::Put {
            id,
            len,
            owner,
            lease_expires,
        } => {
            if shared.services.control.ownership().draining {
                return Err(Refusal {
                    code: ErrorCode::Draining,
                    message: "this node is draining (its owner is taking it out of the swarm); store the shard on another node".into(),
                });
            }
            // The box owner's policy, before a byte of the body is read: a
            // stranger may name any owner and any lease.
            {
                let store = Arc::clone(&store);
                let donation = Arc::clone(&shared.services.donation);
                let box_owner = shared.services.control.ownership().info().owner;
                blocking(move || {
                    let used = if box_owner == Some(owner) {
                        0
                    } else {
                        store.owner_usage(&owner).map_err(store_refusal)?.bytes
                    };
                    donation
                        .check_put(
                            &owner,
                            box_owner.as_ref(),
                            PutAsk {
                                lease_expires,
                                used,
                                len,
                            },
                            unix_now(),
                        )
                        .map_err(donation_refusal)
                })
                .await??;
            }
            // `validate` bounded `len` by the shard limit; the budget bounds all
            // bodies together, so many peers cannot exhaust memory.
            let _budget = shared.reserve(len).await?;
            let bytes = body.read(len as usize).await.map_err(|e| Refusal {
                code: ErrorCode::BadRequest,
                message: format!("the shard body ended early: {e}"),
            })?;
            let outcome = blocking(move || store.put(id, &bytes, owner, lease_expires))
                .await?
                .map_err(store_refusal)?;
            debug!(peer = %peer.to_human(), shard = %id, "stored");
            Ok((
                Response::Stored {
                    already: matches!(outcome, PutOutcome::AlreadyStored(_)),
                },
                Vec::new(),
            ))
        }
        Request::Get { id, range } => {
            let bytes = blocking(move || match range {
                None => store.get(id),
                Some((offset, len)) => store.get_range(id, offset, len),
            })
            .await?
            .map_err(store_refusal)?;
            Ok((
                Response::Shard {
                    len: bytes.len() as u64,
                },
                bytes,
            ))
        }
        Request::Audit { id, ranges } => {
            let slices = blocking(move || {
                let shard = store.get(id).map_err(store_refusal)?;
                audit::validate(&ranges, shard.len() as u64).map_err(|e| Refusal {
                    code: ErrorCode::BadRequest,
                    message: e.to_string(),
                })?;
                audit::prove(&shard, &ranges).map_err(|e| Refusal {
                    code: ErrorCode::Internal,
                    message: format!("building the proof failed: {e}"),
                })
            })
            .await??;
            let slice_lens = slices.iter().map(|s| s.len() as u64).collect();
            Ok((Response::AuditProof { slice_lens }, slices.concat()))
        }
        Request::Renew { id, lease_expires } => {
            let lease_expires = shared
                .services
                .donation
                .policy
                .renewal_until(lease_expires, unix_now());
            let found = blocking(move || store.renew_lease(id, lease_expires))
                .await?
                .map_err(store_refusal)?;
            Ok((Response::Renewed { found }, Vec::new()))
        }
        Request::Delete {
            id,
            not_after,
            signature,
        } => {
            let node = shared.config.identity.id;
            let spent = Arc::clone(&shared.services.spent);
            let found = blocking(move || {
                let Some((_, record)) = store.record(id) else {
                    return Ok(false);
                };
                // The signature says whose claim goes: each owner's delete
                // drops only its own, and the shard stays for the others.
                let now = unix_now();
                let mut refusal = None;
                for claim in record.claims.iter() {
                    match signed::verify_delete(
                        &claim.owner,
                        &node,
                        &id,
                        not_after,
                        &signature,
                        now,
                    ) {
                        Ok(()) => {
                            spent
                                .spend(
                                    &signed::delete_message(&node, &id, not_after),
                                    not_after,
                                    now,
                                    &peer,
                                )
                                .map_err(spent_refusal)?;
                            return store.release(id, claim.owner).map_err(store_refusal);
                        }
                        Err(e) => refusal = Some(e),
                    }
                }
                let Some(e) = refusal else {
                    return Ok(false);
                };
                Err(Refusal {
                    code: match e {
                        signed::OwnerAuthError::Expired { .. } => ErrorCode::Expired,
                        _ => ErrorCode::Forbidden,
                    },
                    message: format!(
                        "{e} (only an owner holding a claim on this shard may delete it)"
                    ),
                })
            })
            .await??;
            Ok((Response::Deleted { found }, Vec::new()))
        }
        Request::PutRoot(record) => {
            // Only the owners the box serves keep records here (the box's
            // owner always; an evicted or unlisted owner never).
            let box_owner = shared.services.control.ownership().info().owner;
            shared
                .services
                .donation
                .serves(&record.owner_id(), box_owner.as_ref())
                .map_err(donation_refusal)?;
            let roots = Arc::clone(&shared.services.roots);
            blocking(move || roots.put(&record))
                .await?
                .map_err(root_refusal)?;
            Ok((Response::RootStored, Vec::new()))
        }
        Request::GetRoot { owner } => {
            let roots = Arc::clone(&shared.services.roots);
            let record = blocking(move || roots.get(&owner)).await?;
            // A damaged record is as good as none: the owner's next put replaces it.
            let record = match record {
                Ok(record) => record,
                Err(RootStoreError::Damaged { .. }) => None,
                Err(e) => return Err(root_refusal(e)),
            };
            Ok((Response::Root(record), Vec::new()))
        }
        Request::Claim { owner, signature } => {
            let control = &shared.services.control;
            let pairing_open = control.pairing_open(Instant::now());
            // Checked first (window, a free box, the signature), so that
            // only a claim that could be made waits for the press.
            control
                .ownership()
                .claim(
                    &shared.config.identity.id,
                    &peer,
                    &owner,
                    &signature,
                    pairing_open,
                    unix_now(),
                )
                .map_err(ownership_refusal)?;
            match control.offer_claim(owner, peer) {
                ClaimOffer::Waiting => {
                    info!(
                        owner = %owner.to_hex(),
                        client = %peer.to_human(),
                        "a claim by owner {} waits for a short press of the button (the LED blips twice a second); if you did not just run `cairn claim`, do not press: hold 5 s to start over",
                        owner.to_hex()
                    );
                    return Ok((
                        Response::ClaimPending {
                            confirm_within_s: control.pairing_left(Instant::now()),
                        },
                        Vec::new(),
                    ));
                }
                ClaimOffer::Contested => {
                    warn!(
                        owner = %owner.to_hex(),
                        client = %peer.to_human(),
                        "two different claims reached this box in one pairing window: neither is made"
                    );
                    return Err(Refusal {
                        code: ErrorCode::Forbidden,
                        message: "another claim reached this box in the same pairing window, so neither can be confirmed: someone else on your network may be trying to take it. Nothing was claimed. Hold the button about 5 seconds to start over, then claim again (if it keeps happening, claim with the box on a cable of its own)".into(),
                    });
                }
                ClaimOffer::Confirmed => {}
            }
            let ownership = update_ownership(shared, move |current, node, now, _| {
                current.claim(&node, &peer, &owner, &signature, pairing_open, now)
            })
            .await?;
            shared.services.control.close_pairing();
            info!(
                owner = %owner.to_hex(),
                client = %peer.to_human(),
                "claimed: this box now belongs to owner {}",
                owner.to_hex()
            );
            Ok((Response::Ownership(ownership.info()), Vec::new()))
        }
        Request::Transfer {
            to_owner,
            to_client,
            not_after,
            signature,
        } => {
            let message = signed::transfer_message(
                &shared.config.identity.id,
                &to_owner,
                &to_client,
                not_after,
            );
            let previous = shared.services.control.ownership().info().owner;
            let ownership = update_ownership(shared, move |current, node, now, spent| {
                let next =
                    current.transfer(&node, &to_owner, &to_client, not_after, &signature, now)?;
                spent.spend(&message, not_after, now, &peer)?;
                Ok(next)
            })
            .await?;
            info!(
                "transferred: this box now belongs to owner {}",
                to_owner.to_hex()
            );
            // The former owner's authority over the box goes with it: a
            // swarm it founded could admit keys here and remove the new
            // owner's members, so the box leaves it. (A swarm someone else
            // founded is the community's, and the box stays.)
            let membership = Arc::clone(&shared.services.membership);
            if previous.is_some() && membership.swarm() == previous {
                let left = blocking(move || membership.leave())
                    .await?
                    .map_err(|e| Refusal {
                        code: ErrorCode::Internal,
                        message: format!(
                            "the box changed hands but could not leave its former owner's swarm: {e}"
                        ),
                    })?;
                shared.services.gossip.leave();
                if let Some(swarm) = left {
                    info!(
                        "left swarm {}, founded by the former owner; the new owner joins it to theirs",
                        swarm.to_hex()
                    );
                }
            }
            Ok((Response::Ownership(ownership.info()), Vec::new()))
        }
        Request::Drain {
            draining,
            not_after,
            signature,
        } => {
            let message = signed::drain_message(&shared.config.identity.id, draining, not_after);
            let ownership = update_ownership(shared, move |current, node, now, spent| {
                let next = current.drain(&node, draining, not_after, &signature, now)?;
                spent.spend(&message, not_after, now, &peer)?;
                Ok(next)
            })
            .await?;
            if draining {
                info!(
                    "draining: no new shards are taken; the ones held leave as their owners move them or their leases end"
                );
            } else {
                info!("no longer draining: taking new shards again");
            }
            Ok((Response::Ownership(ownership.info()), Vec::new()))
        }
        Request::Track {
            owner,
            grant,
            segments,
        } => {
            let steward = steward_of(shared)?;
            check_grant(shared, &owner, &peer, &grant)?;
            let count = blocking(move || steward.track(owner, &segments))
                .await?
                .map_err(steward_refusal)?;
            Ok((Response::Tracked { segments: count }, Vec::new()))
        }
        Request::Join { cert, seeds } => {
            let membership = Arc::clone(&shared.services.membership);
            let gossip_seeds = seeds.clone();
            let swarm = blocking(move || membership.join(cert, &seeds, unix_now()))
                .await?
                .map_err(|e| Refusal {
                    code: match e {
                        JoinError::Save { .. } | JoinError::Load { .. } => ErrorCode::Internal,
                        _ => ErrorCode::Forbidden,
                    },
                    message: e.to_string(),
                })?;
            info!("joined swarm {}", swarm.to_hex());
            shared.services.gossip.announce_to(gossip_seeds);
            Ok((Response::Joined { swarm }, Vec::new()))
        }
        Request::Remove { removal } => {
            let membership = Arc::clone(&shared.services.membership);
            let member = removal.member;
            let kept = removal.clone();
            blocking(move || membership.remove(&kept))
                .await?
                .map_err(|e| Refusal {
                    code: ErrorCode::Forbidden,
                    message: e.to_string(),
                })?;
            info!(
                "{} was removed from the swarm; refused from now on",
                member.to_human()
            );
            shared.services.gossip.spread_removal(removal);
            Ok((Response::Removed, Vec::new()))
        }
        Request::Gossip { packet } => {
            shared.services.gossip.take_packet(peer, packet);
            Ok((Response::GossipTaken, Vec::new()))
        }
        Request::Members => Ok((
            Response::Members(shared.services.gossip.members()),
            Vec::new(),
        )),
        Request::Untrack {
            owner,
            segments,
            not_after,
            signature,
        } => {
            let steward = steward_of(shared)?;
            let message = signed::untrack_message(&shared.config.identity.id, &segments, not_after);
            owner_signed(
                &owner,
                &message,
                &signature,
                not_after,
                unix_now(),
                "untrack refused",
            )?;
            let spent = Arc::clone(&shared.services.spent);
            let count = blocking(move || {
                spent
                    .spend(&message, not_after, unix_now(), &peer)
                    .map_err(spent_refusal)?;
                steward.untrack(&owner, &segments).map_err(steward_refusal)
            })
            .await??;
            Ok((Response::Tracked { segments: count }, Vec::new()))
        }
        Request::Locate {
            owner,
            grant,
            segments,
        } => {
            let steward = steward_of(shared)?;
            check_grant(shared, &owner, &peer, &grant)?;
            let found = blocking(move || steward.locate(&owner, &segments))
                .await?
                .map_err(steward_refusal)?;
            Ok((Response::Locations(found), Vec::new()))
        }
        Request::RenewMany {
            shards,
            lease_expires,
        } => {
            let lease_expires = shared
                .services
                .donation
                .policy
                .renewal_until(lease_expires, unix_now());
            let found = blocking(move || store.renew_leases(&shards, lease_expires))
                .await?
                .map_err(store_refusal)?;
            Ok((Response::RenewedMany { found }, Vec::new()))
        }
        Request::Usage => {
            let donation = Arc::clone(&shared.services.donation);
            let rows = blocking(move || store.usage(MAX_USAGE))
                .await?
                .map_err(store_refusal)?;
            Ok((
                Response::Usage(
                    rows.into_iter()
                        .map(|u| OwnerUse {
                            owner: u.owner,
                            bytes: u.bytes,
                            shards: u.shards,
                            evicted: donation.is_evicted(&u.owner),
                        })
                        .collect(),
                ),
                Vec::new(),
            ))
        }
        Request::Evict {
            owner,
            evict,
            not_after,
            signature,
        } => {
            let box_owner = box_owner(
                shared,
                "this box has no owner to evict anyone; claim it first",
            )?;
            let message =
                signed::evict_message(&shared.config.identity.id, &owner, evict, not_after);
            owner_signed(
                &box_owner,
                &message,
                &signature,
                not_after,
                unix_now(),
                "only the box's owner may evict",
            )?;
            if owner == box_owner {
                return Err(Refusal {
                    code: ErrorCode::BadRequest,
                    message: "the box's owner cannot evict itself; drain the box instead".into(),
                });
            }
            let donation = Arc::clone(&shared.services.donation);
            let spent = Arc::clone(&shared.services.spent);
            let missing = Arc::clone(&shared.services.missing);
            let (claims, more) = blocking(move || {
                spent
                    .spend(&message, not_after, unix_now(), &peer)
                    .map_err(spent_refusal)?;
                donation.set_evicted(owner, evict).map_err(|e| Refusal {
                    code: ErrorCode::Internal,
                    message: e.to_string(),
                })?;
                if !evict {
                    return Ok((0, false));
                }
                let (claims, gone) = store
                    .evict(&owner, MAX_EVICT as usize)
                    .map_err(store_refusal)?;
                // The evicted owner's steward learns at once which shards
                // to rebuild elsewhere, rather than at their next audit.
                missing.record(&gone, cairn_proto::MissingState::Gone);
                let claims = claims as u64;
                let more = store.owner_usage(&owner).map_err(store_refusal)?.shards > 0;
                Ok((claims, more))
            })
            .await??;
            if evict {
                info!(
                    owner = %owner.to_hex(),
                    "evicted by the box's owner: {claims} claims dropped{}",
                    if more { ", more to go" } else { "" }
                );
            } else {
                info!(owner = %owner.to_hex(), "eviction lifted by the box's owner");
            }
            Ok((Response::Evicted { claims, more }, Vec::new()))
        }
        Request::Settings {
            change,
            not_after,
            signature,
        } => {
            let message = signed::settings_message(&shared.config.identity.id, &change, not_after);
            box_owner_signed(
                shared,
                "this box has no owner to change its settings; claim it first",
                &message,
                (&signature, not_after),
                "only the box's owner may change its settings",
            )?;
            let Some(settings) = shared.services.settings.clone() else {
                return Err(Refusal {
                    code: ErrorCode::Internal,
                    message: "this node keeps no settings (it runs without a configuration file)"
                        .into(),
                });
            };
            let spent = Arc::clone(&shared.services.spent);
            let info = blocking(move || {
                // A read changes nothing: replaying it is harmless, and
                // it need not fill the record of spent commands.
                if !change.is_empty() {
                    spent
                        .spend(&message, not_after, unix_now(), &peer)
                        .map_err(spent_refusal)?;
                }
                settings.change(&change).map_err(|e| Refusal {
                    code: match e {
                        crate::settings::SettingsError::Invalid(_) => ErrorCode::BadRequest,
                        crate::settings::SettingsError::Write { .. } => ErrorCode::Internal,
                    },
                    message: e.to_string(),
                })
            })
            .await??;
            if info.restarting {
                info!(
                    "settings changed by the box's owner: the node's services restart to take them"
                );
            }
            Ok((Response::Settings(info), Vec::new()))
        }
        Request::UpdateOffer {
            bundle,
            allow_downgrade,
            from,
            not_after,
            signature,
        } => {
            let me = shared.config.identity.id;
            let message =
                signed::update_message(&me, &bundle, allow_downgrade, from.as_ref(), not_after);
            box_owner_signed(
                shared,
                "this box has no owner to update it; claim it first",
                &message,
                (&signature, not_after),
                "only the box's owner may update it",
            )?;
            let inbox = update_inbox(shared)?;
            match &from {
                Some(member) => info!(
                    "the box's owner offers update bundle {} ({} MiB), to fetch from member {}",
                    bundle.version,
                    bundle.size >> 20,
                    member.to_human()
                ),
                None => info!(
                    "the box's owner offers update bundle {} ({} MiB)",
                    bundle.version,
                    bundle.size >> 20
                ),
            }
            let offer = crate::updates::SignedOffer {
                bundle,
                allow_downgrade,
                from,
                not_after,
                signature,
            };
            let info = blocking(move || inbox.take_offer(&offer, me))
                .await?
                .map_err(update_refusal)?;
            Ok((Response::Update(info), Vec::new()))
        }
        Request::UpdatePart { hash, offset, len } => {
            // Only the owner's client sends parts: the owner's admitted key.
            box_owner(shared, "this box has no owner to update it; claim it first")?;
            if !shared.services.control.is_owner_client(&peer) {
                return Err(Refusal {
                    code: ErrorCode::Forbidden,
                    message: "only the box owner's client may send update bundles".into(),
                });
            }
            let inbox = update_inbox(shared)?;
            let _budget = shared.reserve(len).await?;
            let bytes = body.read(len as usize).await.map_err(|e| Refusal {
                code: ErrorCode::BadRequest,
                message: format!("the update part ended early: {e}"),
            })?;
            let info = blocking(move || inbox.take_part(&hash, offset, &bytes))
                .await?
                .map_err(update_refusal)?;
            Ok((Response::Update(info), Vec::new()))
        }
        Request::UpdateStatus => {
            let inbox = update_inbox(shared)?;
            let info = blocking(move || inbox.info()).await?;
            Ok((Response::Update(info), Vec::new()))
        }
        Request::UpdateGet { hash, offset, len } => {
            // Any admitted member: a bundle is a signed release, and the
            // body budget (`answer_bytes`) bounds what many askers hold.
            let inbox = update_inbox(shared)?;
            let bytes = blocking(move || inbox.read_kept(&hash, offset, len))
                .await?
                .map_err(update_refusal)?;
            Ok((
                Response::Shard {
                    len: bytes.len() as u64,
                },
                bytes,
            ))
        }
        Request::AdoptDisks {
            old_node,
            not_after,
            signature,
        } => {
            let box_owner = box_owner(
                shared,
                "this box has no owner yet: claim it first, then adopt its disks",
            )?;
            let this = shared.config.identity.id;
            let message = signed::adopt_message(&old_node, &this, not_after);
            owner_signed(
                &box_owner,
                &message,
                &signature,
                not_after,
                unix_now(),
                "only the box's owner may make it adopt disks",
            )?;
            let spent = Arc::clone(&shared.services.spent);
            let (disks, shards) = blocking(move || {
                spent
                    .spend(&message, not_after, unix_now(), &peer)
                    .map_err(spent_refusal)?;
                adopt_disks(&store, &old_node, &box_owner)
            })
            .await??;
            info!(
                old = %old_node.to_human(),
                "adopted {} disk(s) of node {} for the box's owner: {shards} shards are this node's now",
                disks.len(),
                old_node.to_human()
            );
            Ok((Response::Adopted { disks, shards }, Vec::new()))
        }
        Request::Moved { moved } => {
            let steward = steward_of(shared)?;
            let message =
                signed::moved_message(&moved.owner, &moved.from, &moved.to, moved.not_after);
            owner_signed(
                &moved.owner,
                &message,
                &moved.signature,
                moved.not_after,
                unix_now(),
                "a moved record must be signed by the shards' owner",
            )?;
            // Re-pointing twice is re-pointing once: a replay changes
            // nothing, so the record is not spent (the client asks again
            // with it while `more`).
            let within = shared.config.request_timeout / 3;
            let (shards, more) =
                blocking(move || steward.moved(&moved.owner, moved.from, moved.to, within))
                    .await?
                    .map_err(steward_refusal)?;
            if shards > 0 {
                info!(
                    owner = %moved.owner.to_hex(),
                    "steward: {shards} shards re-pointed from node {} to node {}, whose disks they are on now",
                    moved.from.to_human(),
                    moved.to.to_human()
                );
            }
            Ok((Response::Repointed { shards, more }, Vec::new()))
        }
        Request::Missing { after } => {
            let (shards, first, next) = shared.services.missing.page(after, MAX_MISSING);
            Ok((
                Response::Missing {
                    shards,
                    first,
                    next,
                },
                Vec::new(),
            ))
        }
        // Answered by `Handler::answer_reach`, which knows the connection.
        Request::Observe
        | Request::DialBack { .. }
        | Request::AwaitCalls
        | Request::Connect { .. }
        | Request::RelayOpen { .. } => Err(Refusal {
            code: ErrorCode::BadRequest,
            message: "this request needs a connection".into(),
        }),
    }
}

/// The box's owner, or a refusal saying `unclaimed` (what cannot be done
/// without one, and to claim the box first).
fn update_inbox(shared: &Handler) -> Result<Arc<crate::updates::UpdateInbox>, Refusal> {
    shared.services.updates.clone().ok_or_else(|| Refusal {
        code: ErrorCode::BadRequest,
        message: "this node takes no system updates (its [update] is off)".into(),
    })
}

fn update_refusal(e: crate::updates::UpdateError) -> Refusal {
    use crate::updates::UpdateError as E;
    Refusal {
        code: match e {
            E::NoSpace { .. } => ErrorCode::NoSpace,
            E::HashMismatch => ErrorCode::HashMismatch,
            E::TooLong { .. } => ErrorCode::TooLarge,
            E::Io { .. } => ErrorCode::Internal,
            E::NotServing => ErrorCode::NotFound,
            E::Installing | E::NotOffered | E::WrongOffset { .. } | E::NotHeld => {
                ErrorCode::BadRequest
            }
        },
        message: e.to_string(),
    }
}

/// The box's owner, who must have signed `message` (a signature and its
/// expiry); refusals say `unclaimed` or `refused`.
fn box_owner_signed(
    shared: &Handler,
    unclaimed: &str,
    message: &[u8],
    (signature, not_after): (&[u8], u64),
    refused: &str,
) -> Result<OwnerId, Refusal> {
    let owner = box_owner(shared, unclaimed)?;
    owner_signed(&owner, message, signature, not_after, unix_now(), refused)?;
    Ok(owner)
}

fn box_owner(shared: &Handler, unclaimed: &str) -> Result<OwnerId, Refusal> {
    shared
        .services
        .control
        .ownership()
        .info()
        .owner
        .ok_or_else(|| Refusal {
            code: ErrorCode::Forbidden,
            message: unclaimed.to_owned(),
        })
}

/// Checks an owner's expiring signature over `message`; a refusal says
/// `refused` and why (expired: `Expired`, else `Forbidden`).
fn owner_signed(
    owner: &OwnerId,
    message: &[u8],
    signature: &[u8],
    not_after: u64,
    now: u64,
    refused: &str,
) -> Result<(), Refusal> {
    signed::verify_expiring(owner, message, signature, not_after, now).map_err(|e| Refusal {
        code: match e {
            signed::OwnerAuthError::Expired { .. } => ErrorCode::Expired,
            _ => ErrorCode::Forbidden,
        },
        message: format!("{refused}: {e}"),
    })
}

/// Checks that the owner lets this connection's key steer its table here:
/// nobody else can make a steward track, untrack or locate for an owner.
fn check_grant(
    shared: &Handler,
    owner: &OwnerId,
    peer: &NodeId,
    grant: &SteerGrant,
) -> Result<(), Refusal> {
    let message = signed::steer_message(&shared.config.identity.id, owner, peer, grant.not_after);
    owner_signed(
        owner,
        &message,
        &grant.signature,
        grant.not_after,
        unix_now(),
        "only the owner's own client may steer its table at this steward",
    )
}

/// A steward table's refusal: the owner's caps and bad segments are the
/// asker's to fix; a table that cannot be written is the node's failure.
fn steward_refusal(error: StewardError) -> Refusal {
    let code = match &error {
        StewardError::OwnerFull { .. } | StewardError::TooManyOwners { .. } => ErrorCode::NoSpace,
        StewardError::BadSegment { .. } => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    Refusal {
        code,
        message: error.to_string(),
    }
}

fn steward_of(shared: &Handler) -> Result<Arc<StewardService>, Refusal> {
    shared.services.steward.clone().ok_or_else(|| Refusal {
        code: ErrorCode::NoSteward,
        message: "this node is not a steward ([steward] enabled = false in its cairnd.toml); name another with `cairn add-node --steward`".into(),
    })
}

/// Decides an ownership change on a blocking thread (it fsyncs) and stores it.
async fn update_ownership(
    shared: &Handler,
    change: impl FnOnce(&Ownership, NodeId, u64, &Spent) -> Result<Ownership, OwnershipError>
    + Send
    + 'static,
) -> Result<Ownership, Refusal> {
    let node = shared.config.identity.id;
    let control = Arc::clone(&shared.services.control);
    let spent = Arc::clone(&shared.services.spent);
    blocking(move || control.update(|current| change(current, node, unix_now(), &spent)))
        .await?
        .map_err(ownership_refusal)
}

/// A replayed command is the asker's to fix; a full or failing record is
/// busy or broken.
fn spent_refusal(error: SpentError) -> Refusal {
    Refusal {
        code: spent_code(&error),
        message: error.to_string(),
    }
}

fn spent_code(error: &SpentError) -> ErrorCode {
    match error {
        SpentError::Replayed => ErrorCode::Forbidden,
        SpentError::Full | SpentError::FullForPeer => ErrorCode::RateLimited,
        SpentError::Table { .. } => ErrorCode::Internal,
    }
}

fn ownership_refusal(error: OwnershipError) -> Refusal {
    let code = match &error {
        OwnershipError::PairingClosed => ErrorCode::PairingClosed,
        OwnershipError::Auth(signed::OwnerAuthError::Expired { .. }) => ErrorCode::Expired,
        OwnershipError::AlreadyClaimed(_) | OwnershipError::Unclaimed | OwnershipError::Auth(_) => {
            ErrorCode::Forbidden
        }
        OwnershipError::Save { .. } | OwnershipError::Load { .. } => ErrorCode::Internal,
        OwnershipError::Spent(e) => spent_code(e),
    };
    Refusal {
        code,
        message: error.to_string(),
    }
}

fn donation_refusal(refused: Refused) -> Refusal {
    let code = match &refused {
        Refused::Evicted(_) | Refused::NotServed(_) => ErrorCode::Forbidden,
        Refused::ShareFull { .. } => ErrorCode::NoSpace,
        Refused::LeaseTooLong { .. } => ErrorCode::BadRequest,
    };
    Refusal {
        code,
        message: refused.to_string(),
    }
}

fn root_refusal(error: RootStoreError) -> Refusal {
    let code = match &error {
        RootStoreError::Refused(cairn_proto::root::RootError::Stale { .. }) => ErrorCode::Stale,
        RootStoreError::Refused(cairn_proto::root::RootError::TooLarge(_)) => ErrorCode::TooLarge,
        RootStoreError::Refused(_) => ErrorCode::Forbidden,
        RootStoreError::Full => ErrorCode::NoSpace,
        _ => ErrorCode::Internal,
    };
    Refusal {
        code,
        message: error.to_string(),
    }
}

/// `text` as a global IPv6 socket address, if it is one.
fn global_ipv6(text: &str) -> Option<std::net::SocketAddr> {
    let addr: std::net::SocketAddr = text.parse().ok()?;
    (addr.is_ipv6() && addr.port() != 0 && cairn_proto::reach::observer_counts(addr))
        .then_some(addr)
}

//! Serving peers: accept QUIC connections, authenticate them with Noise,
//! then serve one request per bidirectional stream against the shard store.
//! Store calls run on blocking threads; every read has a size limit and a
//! deadline, and a misbehaving peer only ever loses its own requests.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::gossip::GossipService;
use super::steward::StewardService;
use crate::membership::{JoinError, Membership};
use crate::ownership::{NodeControl, Ownership, OwnershipError};
use crate::roots::{RootStore, RootStoreError};
use cairn_net::identity::Identity;
use cairn_net::tls::{self, TransportLimits};
use cairn_net::{NetError, handshake, read_body, read_frame, write_frame};
use cairn_proto::ids::NodeId;
use cairn_proto::limits::{self, Limits, RateLimiter, Refusal};
use cairn_proto::membership::MemberCert;
use cairn_proto::{
    DiskInfo, ErrorCode, Hello, PROTOCOL_VERSION, Request, Response, StatInfo, audit, signed,
};
use cairn_store::{PutOutcome, ShardStore, StoreError};

/// Who may use this node.
#[derive(Debug, Clone)]
pub enum AllowList {
    /// Any authenticated peer.
    Any,
    /// Only these keys.
    Only(HashSet<NodeId>),
}

impl AllowList {
    fn admits(&self, peer: &NodeId) -> bool {
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
}

/// A bound endpoint serving the store.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

struct Shared {
    config: ServerConfig,
    store: Arc<ShardStore>,
    roots: Arc<RootStore>,
    control: Arc<NodeControl>,
    steward: Option<Arc<StewardService>>,
    membership: Arc<Membership>,
    gossip: Arc<GossipService>,
    peers: AtomicUsize,
    hello: Hello,
    /// Permits are KiB of body memory; a put holds its share until stored.
    body_budget: Semaphore,
}

impl Shared {
    /// Whether `peer` may administer the node: configured, or the owner's client.
    fn administers(&self, peer: &NodeId) -> bool {
        self.config.allow.admits(peer) || self.control.is_owner_client(peer)
    }

    /// Whether `peer`, showing `cert` in its handshake, may use the node:
    /// an administrator, or a member of this node's swarm (checked on
    /// every request, so a removal takes effect at once).
    fn admits(&self, peer: &NodeId, cert: Option<&MemberCert>) -> bool {
        self.administers(peer) || self.membership.admits(peer, cert, unix_now())
    }

    /// This node's hello, with its current membership certificate.
    fn hello(&self) -> Hello {
        Hello {
            member: self.membership.own_cert(),
            ..self.hello.clone()
        }
    }
}

/// The software version sent in hellos.
pub use cairn_net::software;

impl Server {
    /// Binds the UDP socket. Outgoing connections from this endpoint use the
    /// same socket.
    pub fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        services: Services,
    ) -> Result<Self, BindError> {
        let Services {
            store,
            roots,
            control,
            steward,
            membership,
            gossip,
        } = services;
        let server_config = tls::server_config(&config.transport)?;
        let mut endpoint = quinn::Endpoint::server(server_config, addr)
            .map_err(|source| BindError::Socket { addr, source })?;
        endpoint.set_default_client_config(tls::client_config(&config.transport)?);
        let hello = Hello {
            versions: vec![PROTOCOL_VERSION],
            software: software(),
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
        Ok(Self {
            endpoint,
            shared: Arc::new(Shared {
                config,
                store,
                roots,
                control,
                steward,
                membership,
                gossip,
                peers: AtomicUsize::new(0),
                body_budget,
                hello,
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The endpoint, for dialling other nodes from the same socket.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Peers connected and authenticated right now.
    pub fn peers(&self) -> usize {
        self.shared.peers.load(Ordering::Relaxed)
    }

    /// Serves until `stop` turns true, then stops accepting, lets requests in
    /// flight finish (up to the drain timeout) and closes.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let mut connections = JoinSet::new();
        let connection_stop = stop.clone();
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let shared = Arc::clone(&self.shared);
                    let stop = connection_stop.clone();
                    connections.spawn(async move {
                        let remote = incoming.remote_address();
                        if let Err(e) = serve_connection(shared, incoming, stop).await {
                            debug!(%remote, "connection ended: {e}");
                        }
                    });
                }
                _ = stop.wait_for(|stopping| *stopping) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        self.endpoint.set_server_config(None);
        let drain = self.shared.config.drain_timeout;
        let drained = tokio::time::timeout(drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("requests still running after {drain:?} were abandoned");
            connections.abort_all();
        }
        self.endpoint.close(0u32.into(), b"node stopping");
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The UDP socket could not be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another cairnd running, or is the address wrong?"
    )]
    Socket {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

async fn serve_connection(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    mut stop: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let connection = incoming.await?;
    let config = &shared.config;
    let (peer, their_hello) = match handshake::respond(
        &connection,
        &config.identity,
        &shared.hello(),
        config.handshake_timeout,
        |peer, hello| {
            if !hello.versions.contains(&PROTOCOL_VERSION) {
                Some(format!(
                    "no common protocol version (this node speaks {PROTOCOL_VERSION})"
                ))
            } else if shared.membership.is_removed(peer) {
                Some(format!(
                    "key {} was removed from this node's swarm",
                    peer.to_human()
                ))
            } else if !shared.admits(peer, hello.member.as_ref())
                && !shared.control.pairing_open(Instant::now())
            {
                Some(format!(
                    "key {} is not allowed on this node; ask its owner to add it, or, to claim an unclaimed box, open its pairing window first (hold its button about 5 seconds)",
                    peer.to_human()
                ))
            } else {
                None
            }
        },
    )
    .await
    {
        Ok(accepted) => accepted,
        Err(e) => {
            info!(remote = %connection.remote_address(), "handshake failed: {e}");
            connection.close(1u32.into(), b"refused");
            return Err(e);
        }
    };
    shared.peers.fetch_add(1, Ordering::Relaxed);
    debug!(peer = %peer.to_human(), "peer authenticated");
    let cert = their_hello.member.map(Arc::new);
    let started = Instant::now();
    let mut limiter = RateLimiter::new(&config.limits, Duration::ZERO);
    let mut requests = JoinSet::new();
    let result = loop {
        let stream = tokio::select! {
            stream = connection.accept_bi() => stream,
            _ = stop.wait_for(|stopping| *stopping) => break Ok(()),
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
        };
        let (mut send, recv) = match stream {
            Ok(stream) => stream,
            Err(quinn::ConnectionError::ApplicationClosed(_))
            | Err(quinn::ConnectionError::LocallyClosed) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        if let Err(wait) = limiter.try_acquire(started.elapsed()) {
            let message = format!("too many requests; retry in {} ms", wait.as_millis() + 1);
            requests.spawn(async move {
                let _ = respond_error(&mut send, ErrorCode::RateLimited, message).await;
            });
            continue;
        }
        let shared = Arc::clone(&shared);
        let cert = cert.clone();
        requests.spawn(async move {
            let timeout = shared.config.request_timeout;
            let outcome = tokio::time::timeout(
                timeout,
                serve_request(&shared, peer, cert.as_deref(), send, recv),
            )
            .await;
            match outcome {
                Ok(Err(e)) => debug!(peer = %peer.to_human(), "request failed: {e}"),
                Err(_) => debug!(peer = %peer.to_human(), "request timed out after {timeout:?}"),
                Ok(Ok(())) => {}
            }
        });
    };
    // In-flight requests finish (the server's drain bounds this).
    while requests.join_next().await.is_some() {}
    shared.peers.fetch_sub(1, Ordering::Relaxed);
    result
}

async fn respond_error(
    send: &mut quinn::SendStream,
    code: ErrorCode,
    message: String,
) -> Result<(), NetError> {
    write_frame(send, &Response::Error { code, message }).await?;
    let _ = send.finish();
    Ok(())
}

use cairn_host::unix_now;

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
        _ => ErrorCode::Internal,
    };
    Refusal {
        code,
        message: error.to_string(),
    }
}

/// What a request produces: a response frame and an optional raw body.
type Answer = (Response, Vec<u8>);

async fn serve_request(
    shared: &Arc<Shared>,
    peer: NodeId,
    cert: Option<&MemberCert>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), NetError> {
    let request: Request = match read_frame(&mut recv).await {
        Ok(request) => request,
        Err(NetError::Frame(e)) => {
            let code = match e {
                cairn_proto::FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                cairn_proto::FrameError::Malformed(_) => ErrorCode::BadRequest,
            };
            let _ = recv.stop(0u32.into());
            return respond_error(&mut send, code, e.to_string()).await;
        }
        Err(e) => return Err(e),
    };
    // A key admitted only by the open pairing window may look and claim,
    // nothing else; membership is checked per request, so a claim takes
    // effect at once and a transfer revokes the old owner's client at once.
    let answer = if !shared.admits(&peer, cert)
        && !matches!(request, Request::Stat | Request::Claim { .. })
    {
        Err(Refusal {
            code: ErrorCode::Forbidden,
            message: format!(
                "key {} may only claim this box (its pairing window is open); claim it first",
                peer.to_human()
            ),
        })
    } else {
        match limits::validate(&request, &shared.config.limits) {
            Err(refusal) => Err(refusal),
            Ok(()) => handle(shared, peer, request, &mut recv).await,
        }
    };
    match answer {
        Ok((response, body)) => {
            write_frame(&mut send, &response).await?;
            if !body.is_empty() {
                send.write_chunk(body.into())
                    .await
                    .map_err(|e| NetError::Write(e.to_string()))?;
            }
            let _ = send.finish();
            Ok(())
        }
        Err(refusal) => {
            let _ = recv.stop(0u32.into());
            respond_error(&mut send, refusal.code, refusal.message).await
        }
    }
}

async fn handle(
    shared: &Arc<Shared>,
    peer: NodeId,
    request: Request,
    recv: &mut quinn::RecvStream,
) -> Result<Answer, Refusal> {
    let store = Arc::clone(&shared.store);
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
            let health = shared.control.health();
            Ok((
                Response::Stat(StatInfo {
                    software: software(),
                    max_shard: shared.config.limits.max_shard,
                    disks,
                    state: health.state.into(),
                    reasons: health.reasons,
                    temperature_mc: health.temperature_mc,
                    ownership: shared.control.ownership().info(),
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
            if shared.control.ownership().draining {
                return Err(Refusal {
                    code: ErrorCode::Draining,
                    message: "this node is draining (its owner is taking it out of the swarm); store the shard on another node".into(),
                });
            }
            // `validate` bounded `len` by the shard limit; the budget bounds all
            // bodies together, so many peers cannot exhaust memory. Waiting here
            // is bounded by the request timeout.
            let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
            let _budget = shared
                .body_budget
                .acquire_many(kib)
                .await
                .map_err(|_| Refusal {
                    code: ErrorCode::Internal,
                    message: "the node is stopping".into(),
                })?;
            let bytes = read_body(recv, len as usize).await.map_err(|e| Refusal {
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
            let found = blocking(move || {
                let Some((_, record)) = store.record(id) else {
                    return Ok(false);
                };
                signed::verify_delete(&record.owner, &node, &id, not_after, &signature, unix_now())
                    .map_err(|e| Refusal {
                        code: match e {
                            signed::OwnerAuthError::Expired { .. } => ErrorCode::Expired,
                            _ => ErrorCode::Forbidden,
                        },
                        message: e.to_string(),
                    })?;
                store.delete(id).map_err(store_refusal)
            })
            .await??;
            Ok((Response::Deleted { found }, Vec::new()))
        }
        Request::PutRoot(record) => {
            let roots = Arc::clone(&shared.roots);
            blocking(move || roots.put(&record))
                .await?
                .map_err(root_refusal)?;
            Ok((Response::RootStored, Vec::new()))
        }
        Request::GetRoot { owner } => {
            let roots = Arc::clone(&shared.roots);
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
            let pairing_open = shared.control.pairing_open(Instant::now());
            let ownership = update_ownership(shared, move |current, node, now| {
                current.claim(&node, &peer, &owner, &signature, pairing_open, now)
            })
            .await?;
            shared.control.close_pairing();
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
            let ownership = update_ownership(shared, move |current, node, now| {
                current.transfer(&node, &to_owner, &to_client, not_after, &signature, now)
            })
            .await?;
            info!(
                "transferred: this box now belongs to owner {}",
                to_owner.to_hex()
            );
            Ok((Response::Ownership(ownership.info()), Vec::new()))
        }
        Request::Drain {
            draining,
            not_after,
            signature,
        } => {
            let ownership = update_ownership(shared, move |current, node, now| {
                current.drain(&node, draining, not_after, &signature, now)
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
            nodes,
            segments,
        } => {
            let steward = steward_of(shared)?;
            let count = blocking(move || steward.track(owner, &nodes, &segments))
                .await?
                .map_err(|e| Refusal {
                    code: ErrorCode::Internal,
                    message: e.to_string(),
                })?;
            Ok((Response::Tracked { segments: count }, Vec::new()))
        }
        Request::Join { cert, seeds } => {
            if !shared.administers(&peer) {
                return Err(Refusal {
                    code: ErrorCode::Forbidden,
                    message: "only the box's owner may make it join a swarm (claim it first)"
                        .into(),
                });
            }
            let membership = Arc::clone(&shared.membership);
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
            shared.gossip.announce_to(gossip_seeds);
            Ok((Response::Joined { swarm }, Vec::new()))
        }
        Request::Remove { removal } => {
            let membership = Arc::clone(&shared.membership);
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
            shared.gossip.spread_removal(removal);
            Ok((Response::Removed, Vec::new()))
        }
        Request::Gossip { packet } => {
            shared.gossip.take_packet(packet);
            Ok((Response::GossipTaken, Vec::new()))
        }
        Request::Members => Ok((Response::Members(shared.gossip.members()), Vec::new())),
        Request::Locate { owner, shards } => {
            let steward = steward_of(shared)?;
            let found = steward.locate(&owner, &shards);
            Ok((Response::Locations(found), Vec::new()))
        }
    }
}

fn steward_of(shared: &Shared) -> Result<Arc<StewardService>, Refusal> {
    shared.steward.clone().ok_or_else(|| Refusal {
        code: ErrorCode::NoSteward,
        message: "this node is not a steward ([steward] enabled = false in its cairnd.toml); name another with `cairn add-node --steward`".into(),
    })
}

/// Decides an ownership change on a blocking thread (it fsyncs) and stores it.
async fn update_ownership(
    shared: &Arc<Shared>,
    change: impl FnOnce(&Ownership, NodeId, u64) -> Result<Ownership, OwnershipError> + Send + 'static,
) -> Result<Ownership, Refusal> {
    let node = shared.config.identity.id;
    let control = Arc::clone(&shared.control);
    blocking(move || control.update(|current| change(current, node, unix_now())))
        .await?
        .map_err(ownership_refusal)
}

fn ownership_refusal(error: OwnershipError) -> Refusal {
    let code = match &error {
        OwnershipError::PairingClosed => ErrorCode::PairingClosed,
        OwnershipError::Auth(signed::OwnerAuthError::Expired { .. }) => ErrorCode::Expired,
        OwnershipError::AlreadyClaimed(_) | OwnershipError::Unclaimed | OwnershipError::Auth(_) => {
            ErrorCode::Forbidden
        }
        OwnershipError::Save { .. } | OwnershipError::Load { .. } => ErrorCode::Internal,
    };
    Refusal {
        code,
        message: error.to_string(),
    }
}

fn root_refusal(error: RootStoreError) -> Refusal {
    let code = match &error {
        RootStoreError::Refused(cairn_proto::root::RootError::Stale { .. }) => ErrorCode::Stale,
        RootStoreError::Refused(cairn_proto::root::RootError::TooLarge(_)) => ErrorCode::TooLarge,
        RootStoreError::Refused(_) => ErrorCode::Forbidden,
        _ => ErrorCode::Internal,
    };
    Refusal {
        code,
        message: error.to_string(),
    }
}

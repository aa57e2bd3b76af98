//! Serving peers: accept QUIC connections, authenticate them with Noise,
//! then serve one request per bidirectional stream. Every read has a size
//! limit and a deadline, and a misbehaving peer only ever loses its own
//! requests; what a request gets is [`super::handler`]'s to decide.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::handler::{Body, Handler, ServerConfig, Services};
use crate::peers::PeerTable;
use cairn_host::lock;
use cairn_net::tls;
use cairn_net::{NetError, handshake, read_body_within, read_frame, write_frame};
use cairn_proto::ids::NodeId;
use cairn_proto::membership::MemberCert;
use cairn_proto::{ErrorCode, Request, Response};

/// Handshakes (before a peer is authenticated) the node works on at once;
/// more are refused, and past half of them a client must first prove its
/// address (a QUIC retry), so that spoofed packets cost the node nothing.
const MAX_HANDSHAKES: usize = 32;
/// Handshakes one source address may have in flight: a peer that opens
/// connections and never finishes the handshake holds its own few, not the
/// node's (each is given up after the handshake timeout).
const MAX_HANDSHAKES_PER_ADDRESS: u32 = 4;

/// Handshakes in flight per source address; an entry leaves with its last.
#[derive(Default)]
struct HandshakesByAddress(Mutex<std::collections::HashMap<std::net::IpAddr, u32>>);

/// One handshake of one address, counted until dropped.
struct AddressHandshake {
    table: Arc<HandshakesByAddress>,
    ip: std::net::IpAddr,
}

impl HandshakesByAddress {
    fn begin(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<AddressHandshake> {
        let mut table = lock(&self.0);
        let count = table.entry(ip).or_insert(0);
        if *count >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(AddressHandshake {
            table: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddressHandshake {
    fn drop(&mut self) {
        let mut table = lock(&self.table.0);
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// A bound endpoint serving the store.
pub struct Server {
    endpoint: quinn::Endpoint,
    /// A second handle on the endpoint's socket (punches, relay tokens).
    raw: Arc<std::net::UdpSocket>,
    shared: Arc<Handler>,
    /// Peers connected and authenticated right now.
    peers: Arc<AtomicUsize>,
    /// Connections and request rates per key.
    table: Arc<Mutex<PeerTable>>,
    /// Authenticated connections by number.
    live: Arc<Mutex<std::collections::HashMap<u64, quinn::Connection>>>,
    /// Handshakes in flight.
    handshakes: Arc<Semaphore>,
    /// Handshakes in flight per source address.
    by_address: Arc<HandshakesByAddress>,
    /// The table's clock starts here.
    epoch: Instant,
}

impl Server {
    /// Binds the UDP socket. Outgoing connections from this endpoint use the
    /// same socket.
    pub fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        services: Services,
    ) -> Result<Self, BindError> {
        let server_config = tls::server_config(&config.transport)?;
        let (mut endpoint, raw) = tls::bind_endpoint_raw(addr, Some(server_config))
            .map_err(|source| BindError::Socket { addr, source })?;
        endpoint.set_default_client_config(tls::client_config(&config.transport)?);
        let table = Arc::new(Mutex::new(PeerTable::new(config.limits.clone())));
        Ok(Self {
            endpoint,
            raw,
            shared: Arc::new(Handler::new(config, services)),
            peers: Arc::new(AtomicUsize::new(0)),
            table,
            live: Arc::default(),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            by_address: Arc::default(),
            epoch: Instant::now(),
        })
    }

    /// Requests answered so far, by kind and outcome.
    pub fn counters(&self) -> crate::face::metrics::RequestCounters {
        self.shared.counters().clone()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The endpoint, for dialling other nodes from the same socket.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// A second handle on the endpoint's UDP socket, for the datagrams
    /// QUIC does not send (see `cairn_net::tls::bind_endpoint_raw`).
    pub fn raw_socket(&self) -> Arc<std::net::UdpSocket> {
        Arc::clone(&self.raw)
    }

    /// Peers connected and authenticated right now.
    pub fn peers(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
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
                    let busy = MAX_HANDSHAKES - self.handshakes.available_permits();
                    if busy >= MAX_HANDSHAKES / 2
                        && !incoming.remote_address_validated()
                        && incoming.may_retry()
                    {
                        // Under load, a client first proves it receives at
                        // its address; the retry costs the node no state.
                        let _ = incoming.retry();
                        continue;
                    }
                    let Some(of_address) = self.by_address.begin(incoming.remote_address().ip()) else {
                        debug!(remote = %incoming.remote_address(), "too many handshakes in flight from this address; refused");
                        incoming.refuse();
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&self.handshakes).try_acquire_owned() else {
                        debug!(remote = %incoming.remote_address(), "too many handshakes in flight; refused");
                        incoming.refuse();
                        continue;
                    };
                    let handshake = (permit, of_address);
                    let serving = Serving {
                        shared: Arc::clone(&self.shared),
                        peers: Arc::clone(&self.peers),
                        table: Arc::clone(&self.table),
                        live: Arc::clone(&self.live),
                        epoch: self.epoch,
                    };
                    let stop = connection_stop.clone();
                    connections.spawn(async move {
                        let remote = incoming.remote_address();
                        if let Err(e) = serving.connection(incoming, handshake, stop).await {
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

/// What one connection's task needs of the server.
struct Serving {
    shared: Arc<Handler>,
    peers: Arc<AtomicUsize>,
    table: Arc<Mutex<PeerTable>>,
    /// Authenticated connections by number, to close one a newer
    /// connection of its key replaces.
    live: Arc<Mutex<std::collections::HashMap<u64, quinn::Connection>>>,
    epoch: Instant,
}

impl Serving {
    async fn connection(
        self,
        incoming: quinn::Incoming,
        handshake: (OwnedSemaphorePermit, AddressHandshake),
        stop: watch::Receiver<bool>,
    ) -> Result<(), NetError> {
        let connection = incoming.await?;
        let config = &self.shared.config;
        let shared = &self.shared;
        let (peer, their_hello) = match handshake::respond(
            &connection,
            &config.identity,
            &shared.hello(),
            config.handshake_timeout,
            |peer, hello| shared.admit_handshake(peer, hello).err(),
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
        drop(handshake);
        let id = connection.stable_id() as u64;
        let counted = lock(&self.table).connect(peer, id, self.epoch.elapsed());
        match counted {
            Err(too_many) => {
                info!(peer = %peer.to_human(), "connection refused: {too_many}");
                connection.close(2u32.into(), too_many.to_string().as_bytes());
                return Ok(());
            }
            Ok(Some(replaced)) => {
                debug!(peer = %peer.to_human(), "a newer connection of this key replaces its oldest");
                if let Some(old) = lock(&self.live).remove(&replaced) {
                    old.close(3u32.into(), b"replaced by a newer connection of this key");
                }
            }
            Ok(None) => {}
        }
        lock(&self.live).insert(id, connection.clone());
        self.peers.fetch_add(1, Ordering::Relaxed);
        let result = serve_connection(&self, &connection, peer, their_hello, stop).await;
        self.peers.fetch_sub(1, Ordering::Relaxed);
        lock(&self.live).remove(&id);
        lock(&self.table).disconnect(&peer, id);
        result
    }
}

async fn serve_connection(
    serving: &Serving,
    connection: &quinn::Connection,
    peer: NodeId,
    their_hello: cairn_proto::Hello,
    mut stop: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let shared = &serving.shared;
    debug!(peer = %peer.to_human(), "peer authenticated");
    let cert = their_hello.member.map(Arc::new);
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
        let allowed = lock(&serving.table).request(&peer, serving.epoch.elapsed());
        if let Err(wait) = allowed {
            let message = format!("too many requests; retry in {} ms", wait.as_millis() + 1);
            requests.spawn(async move {
                let _ = respond_error(&mut send, ErrorCode::RateLimited, message).await;
            });
            continue;
        }
        let shared = Arc::clone(shared);
        let cert = cert.clone();
        // Read per request: a peer that moved (a new address from its
        // provider, a NAT that forgot it) is seen where it is now.
        let seen = (connection.remote_address(), connection.local_ip());
        requests.spawn(async move {
            let timeout = shared.config.request_timeout;
            let outcome = tokio::time::timeout(
                timeout,
                serve_request(&shared, peer, cert.as_deref(), seen, send, recv),
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
    result
}

async fn respond_error(
    send: &mut quinn::SendStream,
    code: ErrorCode,
    message: String,
) -> Result<(), NetError> {
    write_frame(send, &Response::Error { code, message }).await?;
    let _ = send.finish();
    // Delivered before the request counts as done (see `serve_request`).
    let _ = send.stopped().await;
    Ok(())
}

async fn serve_request(
    shared: &Handler,
    peer: NodeId,
    cert: Option<&MemberCert>,
    (remote, local_ip): (SocketAddr, Option<std::net::IpAddr>),
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
    // Admission is checked per request, so a claim takes effect at once
    // and a transfer revokes the old owner's client at once.
    let reach = tokio::select! {
        // Any other request is answered `None` at once: the stream's state
        // is not even looked at on the hot path.
        biased;
        reach = shared.answer_reach(peer, cert, &request, remote, local_ip) => reach,
        // A held ask whose asker gave it up (it waits for calls at another
        // rendezvous now, or its connection went) ends here: the
        // rendezvous then knows at once that calls no longer reach it.
        _ = send.stopped() => return Ok(()),
    };
    let kind = request.kind();
    let answer = match reach {
        Some(answer) => answer.map(|answer| (answer, None)),
        None => shared.answer_held(peer, cert, request, &mut recv).await,
    };
    shared
        .counters()
        .count(kind, answer.as_ref().err().map(|refusal| refusal.code));
    match answer {
        // The budget's share is held until the body is handed to QUIC.
        Ok(((response, body), held)) => {
            write_frame(&mut send, &response).await?;
            if !body.is_empty() {
                send.write_chunk(body.into())
                    .await
                    .map_err(|e| NetError::Write(e.to_string()))?;
            }
            let _ = send.finish();
            // The request ends when the peer has the whole answer: a stop
            // (SIGTERM, or a restart for new settings) waits for requests
            // in flight, and closing the endpoint would drop what QUIC has
            // not delivered yet. QUIC keeps a body's bytes until they are
            // acknowledged, so a peer that reads slowly holds its share of
            // the budget, not memory beyond it; the request's deadline
            // bounds the wait.
            let _ = send.stopped().await;
            drop(held);
            Ok(())
        }
        Err(refusal) => {
            let _ = recv.stop(0u32.into());
            respond_error(&mut send, refusal.code, refusal.message).await
        }
    }
}

/// A body that stops arriving for this long is given up on, so that a
/// client that died mid-upload (its connection lingers until the idle
/// timeout) does not hold the body budget meanwhile.
const BODY_STALL: Duration = Duration::from_secs(10);

impl Body for quinn::RecvStream {
    async fn read(&mut self, len: usize) -> Result<Vec<u8>, String> {
        read_body_within(self, len, BODY_STALL)
            .await
            .map_err(|e| e.to_string())
    }
}

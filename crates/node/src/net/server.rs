//! Serving peers: accept QUIC connections, authenticate them with Noise,
//! then serve one request per bidirectional stream. Every read has a size
//! limit and a deadline, and a misbehaving peer only ever loses its own
//! requests; what a request gets is [`super::handler`]'s to decide.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::handler::{Body, Handler, ServerConfig, Services};
use cairn_net::tls;
use cairn_net::{NetError, handshake, read_body_within, read_frame, write_frame};
use cairn_proto::ids::NodeId;
use cairn_proto::limits::RateLimiter;
use cairn_proto::membership::MemberCert;
use cairn_proto::{ErrorCode, Request, Response};

/// A bound endpoint serving the store.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Handler>,
    /// Peers connected and authenticated right now.
    peers: Arc<AtomicUsize>,
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
        let mut endpoint = tls::bind_endpoint(addr, Some(server_config))
            .map_err(|source| BindError::Socket { addr, source })?;
        endpoint.set_default_client_config(tls::client_config(&config.transport)?);
        Ok(Self {
            endpoint,
            shared: Arc::new(Handler::new(config, services)),
            peers: Arc::new(AtomicUsize::new(0)),
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
                    let shared = Arc::clone(&self.shared);
                    let peers = Arc::clone(&self.peers);
                    let stop = connection_stop.clone();
                    connections.spawn(async move {
                        let remote = incoming.remote_address();
                        if let Err(e) = serve_connection(shared, &peers, incoming, stop).await {
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
    shared: Arc<Handler>,
    peers: &AtomicUsize,
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
    peers.fetch_add(1, Ordering::Relaxed);
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
    peers.fetch_sub(1, Ordering::Relaxed);
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

async fn serve_request(
    shared: &Handler,
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
    // Admission is checked per request, so a claim takes effect at once
    // and a transfer revokes the old owner's client at once.
    let answer = shared.answer(peer, cert, request, &mut recv).await;
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

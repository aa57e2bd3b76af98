//! The tokio layer: QUIC endpoints, the Noise handshake that authenticates
//! peers and binds itself to the QUIC connection, and the request streams.
//! It moves bytes; the decisions live in `cairn-proto`. It knows nothing of
//! the shard store or the daemon: a node and an owner's client dial and
//! answer through the same types.
//!
//! TLS inside QUIC is used with throwaway self-signed certificates and no
//! certificate checks: peers authenticate with Noise, whose prologue holds a
//! TLS exporter secret of this very connection. A relay that terminates TLS
//! sees two different exporters, so the Noise handshake fails through it.

pub mod client;
pub mod handshake;
pub mod identity;
pub mod pool;
pub mod tls;

use std::time::Duration;

use cairn_proto::{ErrorCode, FrameError};

pub use client::{ClaimAnswer, Peer};
pub use identity::Identity;
pub use pool::{Pool, RouteTable, Routes};

/// This program's name and version as peers see it in the handshake.
pub fn software() -> String {
    format!("cairnd {}", env!("CARGO_PKG_VERSION"))
}

/// What went wrong talking to a peer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The QUIC connection could not be made.
    #[error("cannot reach {addr}: {reason}; check the address and that cairnd runs there")]
    Connect {
        /// Where we dialled.
        addr: std::net::SocketAddr,
        /// Why not.
        reason: String,
    },
    /// A node's address does not resolve.
    #[error("cannot resolve the address {0}; check the node's address in your settings")]
    Resolve(String),
    /// The connection broke.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading from a stream failed.
    #[error("reading from the peer failed: {0}")]
    Read(String),
    /// Writing to a stream failed.
    #[error("writing to the peer failed: {0}")]
    Write(String),
    /// The Noise handshake failed: a wrong key, a relayed connection, or garbage.
    #[error("the peer could not be authenticated ({0}); check its node id")]
    Handshake(String),
    /// The peer authenticated us and declined to serve us.
    #[error("the peer refused us: {0}")]
    Refused(String),
    /// A frame broke the protocol.
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    /// The peer answered with something that does not fit the request.
    #[error("unexpected answer from the peer: {0}")]
    Unexpected(String),
    /// The peer reported a failure.
    #[error("the peer says {code:?}: {message}")]
    Remote {
        /// Its code.
        code: ErrorCode,
        /// Its words.
        message: String,
    },
    /// Data from the peer failed verification.
    #[error("the peer sent data that fails verification: {0}")]
    Corrupt(String),
    /// The peer took too long.
    #[error("the peer did not answer within {0:?}")]
    Timeout(Duration),
    /// No way to the node is known or every way failed.
    #[error("no path to node {node}: {why}")]
    NoPath {
        /// The node, as people read it.
        node: String,
        /// What was tried, or why nothing could be.
        why: String,
    },
}

impl NetError {
    /// The error code, when the peer sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Reads exactly `buf.len()` bytes.
pub async fn read_exact(stream: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), NetError> {
    stream
        .read_exact(buf)
        .await
        .map_err(|e| NetError::Read(e.to_string()))
}

/// Reads a body of `len` bytes (bounded by the caller) straight from the
/// stream's chunks into a buffer of exactly that size: shard bodies are
/// large, so they are neither zero-filled first nor grown.
pub async fn read_body(stream: &mut quinn::RecvStream, len: usize) -> Result<Vec<u8>, NetError> {
    read_body_stalling(stream, len, None).await
}

/// [`read_body`], giving up when no byte comes for `stall` (a node does
/// not let a dead client hold its body budget until the idle timeout).
pub async fn read_body_within(
    stream: &mut quinn::RecvStream,
    len: usize,
    stall: Duration,
) -> Result<Vec<u8>, NetError> {
    read_body_stalling(stream, len, Some(stall)).await
}

async fn read_body_stalling(
    stream: &mut quinn::RecvStream,
    len: usize,
    stall: Option<Duration>,
) -> Result<Vec<u8>, NetError> {
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let next = stream.read_chunk(len - body.len(), true);
        let chunk = match stall {
            None => next.await,
            Some(stall) => tokio::time::timeout(stall, next).await.map_err(|_| {
                NetError::Read(format!(
                    "no byte came for {} s after {} of {len} bytes",
                    stall.as_secs(),
                    body.len()
                ))
            })?,
        };
        match chunk {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(NetError::Read(format!(
                    "the stream ended after {} of {len} bytes",
                    body.len()
                )));
            }
            Err(e) => return Err(NetError::Read(e.to_string())),
        }
    }
    Ok(body)
}

/// Reads one frame: prefix, limit check, payload, decode.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut quinn::RecvStream,
) -> Result<T, NetError> {
    let mut prefix = [0u8; cairn_proto::frame::PREFIX_LEN];
    read_exact(stream, &mut prefix).await?;
    let len = cairn_proto::frame::frame_len(prefix)?;
    let mut payload = vec![0u8; len];
    read_exact(stream, &mut payload).await?;
    Ok(cairn_proto::decode_frame(&payload)?)
}

/// Writes one frame.
pub async fn write_frame<T: serde::Serialize>(
    stream: &mut quinn::SendStream,
    message: &T,
) -> Result<(), NetError> {
    let frame = cairn_proto::encode_frame(message)?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| NetError::Write(e.to_string()))
}

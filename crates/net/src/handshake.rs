//! The Noise IK handshake on a connection's first bidirectional stream.
//! The dialler knows whom it dials (the node id is the responder's static
//! key); the responder learns the dialler's key from the first message and
//! decides whether to serve it. The prologue holds a TLS exporter secret of
//! the QUIC connection, binding the two. Messages are a 2-byte big-endian
//! length and the Noise message; each carries a [`Hello`] payload.

use std::time::Duration;

use snow::{Builder, HandshakeState};

use super::NetError;
use crate::identity::Identity;
use cairn_proto::ids::NodeId;
use cairn_proto::{Hello, MAX_HANDSHAKE_MESSAGE};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The TLS exporter label whose secret goes into the prologue.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-cairn-noise-v1";
/// Prefix of the prologue, before the exporter secret.
pub const PROLOGUE_PREFIX: &[u8] = b"cairn/4 noise\0";

fn prologue(connection: &quinn::Connection) -> Result<Vec<u8>, NetError> {
    let mut secret = [0u8; 32];
    connection
        .export_keying_material(&mut secret, EXPORTER_LABEL, b"")
        .map_err(|_| NetError::Handshake("the QUIC session has no TLS exporter".into()))?;
    let mut prologue = PROLOGUE_PREFIX.to_vec();
    prologue.extend_from_slice(&secret);
    Ok(prologue)
}

/// A Noise builder with this side's key and the connection-bound prologue.
fn builder<'a>(identity: &'a Identity, prologue: &'a [u8]) -> Result<Builder<'a>, NetError> {
    Builder::new(NOISE_PARAMS.parse().map_err(noise_error)?)
        .local_private_key(identity.private())
        .map_err(noise_error)?
        .prologue(prologue)
        .map_err(noise_error)
}

fn noise_error(e: snow::Error) -> NetError {
    NetError::Handshake(e.to_string())
}

async fn send(stream: &mut quinn::SendStream, message: &[u8]) -> Result<(), NetError> {
    let len = u16::try_from(message.len())
        .map_err(|_| NetError::Handshake("handshake message too long".into()))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    stream
        .write_all(&frame)
        .await
        .map_err(|e| NetError::Write(e.to_string()))
}

async fn receive(stream: &mut quinn::RecvStream) -> Result<Vec<u8>, NetError> {
    let mut prefix = [0u8; 2];
    super::read_exact(stream, &mut prefix).await?;
    let len = usize::from(u16::from_be_bytes(prefix));
    debug_assert!(len <= MAX_HANDSHAKE_MESSAGE);
    let mut message = vec![0u8; len];
    super::read_exact(stream, &mut message).await?;
    Ok(message)
}

fn write_hello(state: &mut HandshakeState, hello: &Hello) -> Result<Vec<u8>, NetError> {
    let payload = postcard::to_stdvec(hello).map_err(|e| NetError::Handshake(e.to_string()))?;
    let mut out = vec![0u8; MAX_HANDSHAKE_MESSAGE];
    let len = state
        .write_message(&payload, &mut out)
        .map_err(noise_error)?;
    out.truncate(len);
    Ok(out)
}

fn read_hello(state: &mut HandshakeState, message: &[u8]) -> Result<Hello, NetError> {
    let mut payload = vec![0u8; MAX_HANDSHAKE_MESSAGE];
    let len = state
        .read_message(message, &mut payload)
        .map_err(noise_error)?;
    // Only now, authenticated, is the payload parsed.
    cairn_proto::decode_frame(&payload[..len]).map_err(NetError::from)
}

/// The dialler's side. Returns the responder's hello once it has proven it
/// holds `expected`'s key.
pub async fn initiate(
    connection: &quinn::Connection,
    identity: &Identity,
    expected: &NodeId,
    hello: &Hello,
    timeout: Duration,
) -> Result<Hello, NetError> {
    let run = async {
        let prologue = prologue(connection)?;
        let mut state = builder(identity, &prologue)?
            .remote_public_key(&expected.0)
            .map_err(noise_error)?
            .build_initiator()
            .map_err(noise_error)?;
        let (mut send_stream, mut recv_stream) = connection.open_bi().await?;
        send(&mut send_stream, &write_hello(&mut state, hello)?).await?;
        let reply = receive(&mut recv_stream).await?;
        let theirs = read_hello(&mut state, &reply)?;
        let _ = send_stream.finish();
        if let Some(reason) = &theirs.refused {
            return Err(NetError::Refused(reason.clone()));
        }
        Ok(theirs)
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| NetError::Timeout(timeout))?
}

/// The responder's side. `decide` sees the authenticated peer and its hello
/// and returns a refusal reason, or `None` to serve it. Returns the peer.
pub async fn respond(
    connection: &quinn::Connection,
    identity: &Identity,
    hello: &Hello,
    timeout: Duration,
    decide: impl FnOnce(&NodeId, &Hello) -> Option<String>,
) -> Result<(NodeId, Hello), NetError> {
    let run = async {
        let prologue = prologue(connection)?;
        let mut state = builder(identity, &prologue)?
            .build_responder()
            .map_err(noise_error)?;
        let (mut send_stream, mut recv_stream) = connection.accept_bi().await?;
        let first = receive(&mut recv_stream).await?;
        let theirs = read_hello(&mut state, &first)?;
        let peer = state
            .get_remote_static()
            .and_then(|key| <[u8; 32]>::try_from(key).ok())
            .map(NodeId)
            .ok_or_else(|| NetError::Handshake("no static key from the peer".into()))?;
        let refused = decide(&peer, &theirs);
        let reply = Hello {
            refused: refused.clone(),
            ..hello.clone()
        };
        send(&mut send_stream, &write_hello(&mut state, &reply)?).await?;
        let _ = send_stream.finish();
        match refused {
            Some(reason) => {
                // The caller closes the connection next; first let the reason arrive.
                let _ = send_stream.stopped().await;
                Err(NetError::Refused(reason))
            }
            None => Ok((peer, theirs)),
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| NetError::Timeout(timeout))?
}

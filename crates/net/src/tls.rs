//! QUIC and TLS configuration. Certificates are self-signed and not checked
//! (Noise authenticates, see the module above); TLS 1.3 only, ring crypto,
//! ChaCha20-Poly1305 on CPUs without AES instructions (Pi 3/4), AES-GCM on
//! those with them.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use cairn_proto::ALPN;

/// Per-connection QUIC limits and windows.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Requests a peer may have open at once.
    pub max_streams_per_peer: u32,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_streams_per_peer: 32,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Whether this CPU has AES and carry-less multiply instructions, which
/// make AES-GCM several times faster than ChaCha20-Poly1305 (x86 since
/// ~2010, Raspberry Pi 5). Pi 3/4 lack them, and there ChaCha20 is faster.
pub fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// TLS 1.3 suites in the order that is fastest on this CPU. The server's
/// order decides (see `server_config`): a node is usually the weaker end.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let chacha_first = !hardware_aes();
    // AES-128-GCM stays in the list either way: QUIC's Initial packets use it.
    provider.cipher_suites.sort_by_key(|suite| {
        let chacha = suite.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256;
        let aes128 = suite.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
        match (chacha_first, chacha, aes128) {
            (true, true, _) | (false, _, true) => 0,
            (false, true, _) => 2,
            _ => 1,
        }
    });
    Arc::new(provider)
}

/// The largest UDP payload path MTU discovery tries: IPv4's largest
/// datagram less its IP and UDP headers.
const MTU_UPPER_BOUND: u16 = 65_535 - 20 - 8;

/// UDP socket buffers asked for, each way.
const SOCKET_BUFFER: usize = 4 << 20;

fn transport(limits: &TransportLimits) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_streams_per_peer.into())
        .max_concurrent_uni_streams(0u8.into())
        .max_idle_timeout(Some(
            limits
                .idle_timeout
                .try_into()
                .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(60_000))),
        ))
        // Windows sized for multi-MiB shards on a LAN: a 16 MiB stream window lets one
        // shard flow without waiting for window updates.
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20);
    // Path MTU discovery searches up to the largest UDP payload instead of
    // quinn's 1452: each packet costs a syscall's share, a header and an
    // AEAD call, so a path that carries more (a jumbo-frame LAN, a local
    // link) carries shards at a fraction of the CPU. Probes are padding,
    // never data: a path that drops big packets settles at what passes.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    transport.mtu_discovery_config(Some(mtu));
    Arc::new(transport)
}

/// Why the QUIC endpoint could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the throwaway certificate failed.
    #[error("cannot create a TLS certificate: {0}")]
    Certificate(String),
    /// rustls or quinn refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(String),
}

/// A QUIC endpoint on a UDP socket bound to `addr`, accepting connections
/// with `server` if given. Unlike quinn's own constructors it accepts UDP
/// payloads as large as path MTU discovery may find (quinn's default
/// stops at an Ethernet frame's, and tells peers so).
pub fn bind_endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    bind_endpoint_raw(addr, server).map(|(endpoint, _)| endpoint)
}

/// [`bind_endpoint`], with a second handle on its UDP socket for the few
/// datagrams QUIC cannot send: a punch toward a member dialling in, and a
/// relay token. Both must leave from the endpoint's own port, which is
/// what a router mapped. Punch packets must stay at most
/// [`RAW_DATAGRAM_MAX`] bytes: quinn answers longer packets it cannot
/// place with a stateless reset.
pub fn bind_endpoint_raw(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<(quinn::Endpoint, Arc<std::net::UdpSocket>)> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the system allows it, as quinn's own client does.
        let _ = socket.set_only_v6(false);
    }
    // Many shards arrive at once when a steward rebuilds a disk: with the
    // kernel's default buffer, datagrams are dropped whenever this process
    // is not scheduled in time, and QUIC takes each drop for congestion.
    // The kernel caps these at net.core.[rw]mem_max (the image raises it).
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MTU_UPPER_BOUND)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let socket: std::net::UdpSocket = socket.into();
    let raw = Arc::new(socket.try_clone()?);
    let endpoint = quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))?;
    Ok((endpoint, raw))
}

/// Sends one datagram from `raw` (see [`bind_endpoint_raw`]) to `to`,
/// as an IPv4-mapped address when the socket is dual-stack (Linux refuses
/// a plain IPv4 address on an IPv6 socket). Best effort: a lost punch or
/// token is covered by the copies sent after it.
pub fn send_raw(raw: &std::net::UdpSocket, bytes: &[u8], to: std::net::SocketAddr) {
    let to = match (raw.local_addr(), to) {
        (Ok(std::net::SocketAddr::V6(_)), std::net::SocketAddr::V4(v4)) => {
            std::net::SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => to,
    };
    let _ = raw.send_to(bytes, to);
}

/// Longest raw datagram sent to a QUIC endpoint (see
/// [`bind_endpoint_raw`]).
pub const RAW_DATAGRAM_MAX: usize = 21;

/// The server side: a fresh self-signed certificate per start.
pub fn server_config(limits: &TransportLimits) -> Result<quinn::ServerConfig, TlsError> {
    let certified = rcgen::generate_simple_self_signed(vec!["cairn".to_owned()])
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let cert = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    crypto.max_early_data_size = 0;
    // The node's own hardware picks the cipher: a Pi 4 serving a laptop
    // must not be made to run AES in software.
    crypto.ignore_client_order = true;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport(limits));
    Ok(config)
}

/// The client side: any certificate, signatures still checked so the TLS
/// handshake itself is sound.
pub fn client_config(limits: &TransportLimits) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoiseAuthenticates(provider)))
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    // Only the dialling side keeps a connection alive: a server pinging its
    // peers would keep every idle connection open past the idle timeout.
    let mut transport = transport(limits);
    Arc::get_mut(&mut transport)
        .expect("just created")
        .keep_alive_interval(Some(limits.idle_timeout / 3));
    config.transport_config(transport);
    Ok(config)
}

/// Accepts any certificate: the peer's identity is proven by Noise, bound to
/// this TLS session through the exporter.
#[derive(Debug)]
struct NoiseAuthenticates(Arc<CryptoProvider>);

impl ServerCertVerifier for NoiseAuthenticates {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

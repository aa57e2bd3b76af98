//! A port on the home router mapped to the node (PCP, then NAT-PMP, with
//! the `crab_nat` crate), renewed before it expires and removed when the
//! node stops. A mapping is only a claim of the router's: the node
//! advertises it only after a member dialled back to it there (see
//! `net::reach`), since routers that accept a mapping and forward nothing,
//! double NAT and carrier-grade NAT are common.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};
use tracing::{debug, info};

/// The lifetime asked for (the protocols' recommendation).
const LIFETIME_S: u32 = 7200;
/// After a router refused or did not answer, it is asked again this late.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// The node's mapping on its router, if it has one.
pub struct PortMapper {
    port: NonZeroU16,
    mapping: Option<PortMapping>,
    refused_at: Option<Instant>,
}

impl PortMapper {
    /// A mapper for the node's UDP `port`.
    pub fn new(port: u16) -> Option<Self> {
        Some(Self {
            port: NonZeroU16::new(port)?,
            mapping: None,
            refused_at: None,
        })
    }

    /// The external port mapped to the node now: the one kept, renewed
    /// when half its lifetime is gone, or a new one. `None` when the
    /// router offers no mapping (asked again after a while).
    pub async fn ensure(&mut self) -> Option<u16> {
        if let Some(mapping) = &mut self.mapping {
            let left = mapping
                .expiration()
                .saturating_duration_since(Instant::now());
            if left > Duration::from_secs(u64::from(mapping.lifetime()) / 2) {
                return Some(mapping.external_port().get());
            }
            match mapping.renew().await {
                Ok(()) => return Some(mapping.external_port().get()),
                Err(e) => {
                    debug!("port mapping: renewal refused ({e}); asking afresh");
                    self.mapping = None;
                }
            }
        }
        if self.refused_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return None;
        }
        let gateway = default_gateway()?;
        let client = local_ip_toward(gateway)?;
        let options = PortMappingOptions {
            external_port: Some(self.port),
            lifetime_seconds: Some(LIFETIME_S),
            timeout_config: Some(TimeoutConfig {
                initial_timeout: Duration::from_millis(250),
                max_retries: 2,
                max_retry_timeout: Some(Duration::from_secs(1)),
            }),
        };
        match PortMapping::new(
            IpAddr::V4(gateway).into(),
            client,
            InternetProtocol::Udp,
            self.port,
            options,
        )
        .await
        {
            Ok(mapping) => {
                let external = mapping.external_port().get();
                info!(
                    router = %gateway,
                    external,
                    protocol = ?mapping.mapping_type(),
                    "port mapping: the router maps a port to this node (advertised once a member reaches it there)"
                );
                self.mapping = Some(mapping);
                self.refused_at = None;
                Some(external)
            }
            Err(e) => {
                debug!(router = %gateway, "port mapping: none ({e})");
                self.refused_at = Some(Instant::now());
                None
            }
        }
    }

    /// Removes the mapping from the router (at a stop).
    pub async fn remove(&mut self) {
        if let Some(mapping) = self.mapping.take()
            && let Err((e, _)) = mapping.try_drop().await
        {
            debug!("port mapping: the router did not take the removal back ({e})");
        }
    }
}

/// The IPv4 default gateway, from the kernel's routing table.
fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    gateway_in(&table)
}

/// The gateway of the default route in `/proc/net/route`'s text.
fn gateway_in(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"00000000") {
            return None;
        }
        let raw = u32::from_str_radix(fields.get(2)?, 16).ok()?;
        // The kernel writes the address in host order (little-endian).
        let gateway = Ipv4Addr::from(raw.to_le_bytes());
        (!gateway.is_unspecified()).then_some(gateway)
    })
}

/// The node's address toward `gateway` (what PCP must name).
fn local_ip_toward(gateway: Ipv4Addr) -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket
        .connect(SocketAddr::new(gateway.into(), crab_nat::GATEWAY_PORT))
        .ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_names_the_router() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(gateway_in(table), Some(Ipv4Addr::new(192, 168, 2, 1)));
        assert_eq!(gateway_in("Iface\tDestination\n"), None);
    }
}

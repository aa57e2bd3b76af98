//! A port on the home router mapped to the node (PCP, then NAT-PMP, with
//! the `crab_nat` crate; then UPnP-IGD, with `igd-next`), renewed before
//! it expires and removed when the node stops. A mapping is only a claim of the router's: the node
//! advertises it only after a member dialled back to it there (see
//! `net::reach`), since routers that accept a mapping and forward nothing,
//! double NAT and carrier-grade NAT are common.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};
use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use tracing::{debug, info};

/// The lifetime asked for (the protocols' recommendation).
const LIFETIME_S: u32 = 7200;
/// After a router refused or did not answer, it is asked again this late.
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long the search for a UPnP router, and each request to it, may
/// take: `igd-next` does not bound all of its waits itself.
const UPNP_WAIT: Duration = Duration::from_secs(2);
/// What the router's table says the mapping is for.
const UPNP_DESCRIPTION: &str = "cairn node";

/// A mapping the router made, by the protocol it answered.
enum Mapping {
    /// PCP or NAT-PMP.
    Pcp(PortMapping),
    /// UPnP-IGD: the router, the external port and when the lease ends
    /// (`None`: the router grants only permanent leases).
    Upnp {
        gateway: Box<Gateway<Tokio>>,
        external: u16,
        expires: Option<Instant>,
    },
}

/// The node's mapping on its router, if it has one.
pub struct PortMapper {
    port: NonZeroU16,
    mapping: Option<Mapping>,
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
        match self.mapping.as_mut() {
            Some(Mapping::Pcp(mapping)) => {
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
            Some(Mapping::Upnp {
                gateway,
                external,
                expires,
            }) => {
                let half = Duration::from_secs(u64::from(LIFETIME_S) / 2);
                let due =
                    expires.is_some_and(|at| at.saturating_duration_since(Instant::now()) < half);
                if !due {
                    return Some(*external);
                }
                // UPnP renews a lease by adding the same mapping again.
                let client = SocketAddr::new(gateway_local_ip(gateway)?, self.port.get());
                match upnp_add(gateway, *external, client).await {
                    Ok(lease) => {
                        *expires = lease;
                        return Some(*external);
                    }
                    Err(e) => {
                        debug!("port mapping: UPnP renewal refused ({e}); asking afresh");
                        self.mapping = None;
                    }
                }
            }
            None => {}
        }
        if self.refused_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return None;
        }
        let gateway = default_gateway()?;
        let client = local_ip_toward(gateway)?;
        let external = match self.pcp(gateway, client).await {
            Some(external) => Some(external),
            None => self.upnp(gateway, client).await,
        };
        self.refused_at = external.is_none().then(Instant::now);
        external
    }

    /// A mapping by PCP, else NAT-PMP.
    async fn pcp(&mut self, gateway: Ipv4Addr, client: IpAddr) -> Option<u16> {
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
                self.mapping = Some(Mapping::Pcp(mapping));
                Some(external)
            }
            Err(e) => {
                debug!(router = %gateway, "port mapping: no PCP or NAT-PMP ({e})");
                None
            }
        }
    }

    /// A mapping by UPnP-IGD, from the default gateway only: any box on
    /// the LAN can answer the search, and one that is not the router
    /// cannot map the router's ports (it could only mislead the node).
    async fn upnp(&mut self, gateway: Ipv4Addr, client: IpAddr) -> Option<u16> {
        let mut options = igd_next::SearchOptions::default();
        options.bind_addr = SocketAddr::new(client, 0);
        options.timeout = Some(UPNP_WAIT);
        options.single_search_timeout = Some(UPNP_WAIT);
        let found = tokio::time::timeout(
            UPNP_WAIT + Duration::from_millis(500),
            igd_next::aio::tokio::search_gateway(options),
        )
        .await;
        let found = match found {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                debug!(router = %gateway, "port mapping: no UPnP router ({e})");
                return None;
            }
            Err(_) => {
                debug!(router = %gateway, "port mapping: no UPnP router answered in time");
                return None;
            }
        };
        if found.addr.ip() != IpAddr::V4(gateway) {
            debug!(
                answered = %found.addr,
                router = %gateway,
                "port mapping: a UPnP device that is not the router answered; ignored"
            );
            return None;
        }
        let local = SocketAddr::new(client, self.port.get());
        // The node's own port outside too, as PCP asks; another if that
        // one is taken (another box of the house holds it).
        let mut external = self.port.get();
        let mut lease = upnp_add(&found, external, local).await;
        if lease.is_err() {
            let any = tokio::time::timeout(
                UPNP_WAIT,
                found.add_any_port(
                    PortMappingProtocol::UDP,
                    local,
                    LIFETIME_S,
                    UPNP_DESCRIPTION,
                ),
            )
            .await;
            match any {
                Ok(Ok(port)) => {
                    external = port;
                    lease = Ok(Some(
                        Instant::now() + Duration::from_secs(u64::from(LIFETIME_S)),
                    ));
                }
                Ok(Err(e)) => lease = Err(e.to_string()),
                Err(_) => lease = Err("no answer in time".into()),
            }
        }
        match lease {
            Ok(expires) => {
                info!(
                    router = %gateway,
                    external,
                    protocol = "UPnP-IGD",
                    "port mapping: the router maps a port to this node (advertised once a member reaches it there)"
                );
                self.mapping = Some(Mapping::Upnp {
                    gateway: Box::new(found),
                    external,
                    expires,
                });
                Some(external)
            }
            Err(e) => {
                debug!(router = %gateway, "port mapping: the UPnP router refused ({e})");
                None
            }
        }
    }

    /// Removes the mapping from the router (at a stop).
    pub async fn remove(&mut self) {
        match self.mapping.take() {
            Some(Mapping::Pcp(mapping)) => {
                if let Err((e, _)) = mapping.try_drop().await {
                    debug!("port mapping: the router did not take the removal back ({e})");
                }
            }
            Some(Mapping::Upnp {
                gateway, external, ..
            }) => {
                let removed = tokio::time::timeout(
                    UPNP_WAIT,
                    gateway.remove_port(PortMappingProtocol::UDP, external),
                )
                .await;
                if !matches!(removed, Ok(Ok(()))) {
                    debug!("port mapping: the UPnP router did not take the removal back");
                }
            }
            None => {}
        }
    }
}

/// Adds (or renews) the UDP mapping of `external` to `local` for
/// [`LIFETIME_S`], or forever where the router grants only permanent
/// leases (old IGD v1 routers; the node removes it at a stop). When the
/// lease ends.
async fn upnp_add(
    gateway: &Gateway<Tokio>,
    external: u16,
    local: SocketAddr,
) -> Result<Option<Instant>, String> {
    let add = |lease| async move {
        match tokio::time::timeout(
            UPNP_WAIT,
            gateway.add_port(
                PortMappingProtocol::UDP,
                external,
                local,
                lease,
                UPNP_DESCRIPTION,
            ),
        )
        .await
        {
            Ok(result) => result.map_err(|e| {
                (
                    matches!(e, igd_next::AddPortError::OnlyPermanentLeasesSupported),
                    e.to_string(),
                )
            }),
            Err(_) => Err((false, "no answer in time".to_owned())),
        }
    };
    match add(LIFETIME_S).await {
        Ok(()) => Ok(Some(
            Instant::now() + Duration::from_secs(u64::from(LIFETIME_S)),
        )),
        Err((true, _)) => add(0).await.map(|()| None).map_err(|(_, e)| e),
        Err((false, e)) => Err(e),
    }
}

/// The node's address toward the UPnP router `gateway` answered from.
fn gateway_local_ip(gateway: &Gateway<Tokio>) -> Option<IpAddr> {
    match gateway.addr.ip() {
        IpAddr::V4(router) => local_ip_toward(router),
        IpAddr::V6(_) => None,
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

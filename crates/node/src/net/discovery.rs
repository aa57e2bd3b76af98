//! LAN discovery's I/O: an mDNS responder (`mdns-sd`) that announces this
//! box and listens for others, on the interfaces it is told (never on
//! loopback). `cairnd` introduces the members of its swarm it hears of to
//! gossip; `cairn discover` lists every box that answers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::gossip::GossipService;
use crate::daemon_config::DaemonConfig;
use crate::discovery::{DiscoveryError, LanNode, SERVICE_TYPE};
use crate::membership::Membership;
use cairn_proto::ids::{NodeId, OwnerId};

/// How often the daemon checks whether its record must change (it joined
/// a swarm, say).
const RECHECK: Duration = Duration::from_secs(10);
/// Boxes remembered (to log each once); anyone on the LAN can announce
/// records, so the memory is bounded.
const MAX_HEARD: usize = 1024;

/// A running mDNS responder.
pub struct LanDiscovery {
    daemon: ServiceDaemon,
}

impl LanDiscovery {
    /// Starts the responder on the named interfaces (empty: every
    /// interface but loopback).
    pub fn start(interfaces: &[String]) -> Result<Self, DiscoveryError> {
        let failed = |e: mdns_sd::Error| DiscoveryError::Responder(e.to_string());
        let daemon = ServiceDaemon::new().map_err(failed)?;
        if interfaces.is_empty() {
            daemon
                .disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                .map_err(failed)?;
        } else {
            daemon.disable_interface(IfKind::All).map_err(failed)?;
            daemon
                .enable_interface(
                    interfaces
                        .iter()
                        .map(|name| IfKind::Name(name.clone()))
                        .collect::<Vec<_>>(),
                )
                .map_err(failed)?;
        }
        Ok(Self { daemon })
    }

    /// Announces `me` (replacing what was announced before). Its host part
    /// is used when it is an IP address; otherwise the interfaces' own
    /// addresses are.
    pub fn announce(&self, me: &LanNode) -> Result<(), DiscoveryError> {
        let (host, port) = me
            .at
            .addr
            .rsplit_once(':')
            .ok_or(DiscoveryError::NoAddress)?;
        let port: u16 = port.parse().map_err(|_| DiscoveryError::NoAddress)?;
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified());
        let name = me.instance_name();
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &name,
            &format!("{name}.local."),
            ip.map(|ip| ip.to_string()).unwrap_or_default(),
            port,
            me.txt(),
        )
        .map_err(|e| DiscoveryError::Responder(e.to_string()))?;
        let info = if ip.is_none() {
            info.enable_addr_auto()
        } else {
            info
        };
        self.daemon
            .register(info)
            .map_err(|e| DiscoveryError::Responder(e.to_string()))
    }

    /// Listens for `window`, and returns every box heard (by node id).
    pub async fn browse_for(&self, window: Duration) -> Result<Vec<LanNode>, DiscoveryError> {
        let events = self
            .daemon
            .browse(SERVICE_TYPE)
            .map_err(|e| DiscoveryError::Responder(e.to_string()))?;
        let mut found = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv_async()).await {
            if let Some(node) = read_event(event) {
                found.insert(node.at.node, node);
            }
        }
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        Ok(found.into_values().collect())
    }

    /// Stops the responder (its records are withdrawn).
    pub fn shutdown(&self) {
        let _ = self.daemon.shutdown();
    }
}

fn read_event(event: ServiceEvent) -> Option<LanNode> {
    let ServiceEvent::ServiceResolved(service) = event else {
        return None;
    };
    let addresses: Vec<IpAddr> = service.addresses.iter().map(|a| a.to_ip_addr()).collect();
    match LanNode::from_record(
        |key| service.get_property_val_str(key),
        &addresses,
        service.port,
    ) {
        Ok(node) => Some(node),
        Err(e) => {
            debug!(name = %service.fullname, "mDNS: {e}");
            None
        }
    }
}

/// The daemon's side: announces this node (`me`, its swarm kept current
/// from `membership`) and introduces members of its swarm heard on the
/// LAN to `gossip`, until `stop` turns true.
pub async fn serve(
    discovery: LanDiscovery,
    mut me: LanNode,
    membership: Arc<Membership>,
    gossip: Arc<GossipService>,
    mut stop: watch::Receiver<bool>,
) {
    me.swarm = membership.swarm();
    if let Err(e) = discovery.announce(&me) {
        warn!("{e}");
    }
    let events = match discovery.daemon.browse(SERVICE_TYPE) {
        Ok(events) => events,
        Err(e) => {
            warn!("{}", DiscoveryError::Responder(e.to_string()));
            discovery.shutdown();
            return;
        }
    };
    info!(addr = %me.at.addr, "mDNS: announcing this node on the LAN and listening for others");
    let mut recheck = tokio::time::interval(RECHECK);
    let mut heard: BTreeMap<NodeId, Option<OwnerId>> = BTreeMap::new();
    loop {
        tokio::select! {
            event = events.recv_async() => {
                let Ok(event) = event else { break };
                let Some(node) = read_event(event) else { continue };
                if node.at.node == me.at.node {
                    continue;
                }
                if heard.len() >= MAX_HEARD {
                    heard.clear();
                }
                if heard.insert(node.at.node, node.swarm) != Some(node.swarm) {
                    info!(node = %node.at.node.to_human(), addr = %node.at.addr, "mDNS: heard a box on the LAN");
                }
                if me.swarm.is_some() && node.swarm == me.swarm {
                    gossip.introduce(vec![node.at]);
                }
            }
            _ = recheck.tick() => {
                let swarm = membership.swarm();
                if swarm != me.swarm {
                    me.swarm = swarm;
                    if let Err(e) = discovery.announce(&me) {
                        warn!("{e}");
                    }
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    discovery.shutdown();
}

/// A box told only to listen on every address advertises its LAN address,
/// so that it gossips with its swarm without anyone writing its address down
/// (the appliance's configuration). Chosen once at start: cairnd.service
/// starts after the network is online.
pub fn advertise_lan_address(config: &mut DaemonConfig) {
    if config.swarm.advertise.is_some() || !config.listen.ip().is_unspecified() {
        return;
    }
    let addresses: Vec<std::net::IpAddr> = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(|i| i.ip()).collect(),
        Err(e) => {
            warn!("cannot list the network interfaces to find this box's LAN address: {e}");
            return;
        }
    };
    match crate::discovery::lan_address(&addresses, config.listen.is_ipv4()) {
        Some(ip) => {
            let addr = std::net::SocketAddr::new(ip, config.listen.port()).to_string();
            info!(
                "advertising {addr} to the swarm, this box's LAN address ([swarm] advertise sets another)"
            );
            config.swarm.advertise = Some(addr);
        }
        None => warn!(
            "no LAN address found to advertise (is the network cable in?); set [swarm] advertise"
        ),
    }
}

//! LAN discovery's plain part: what a box says of itself in its mDNS
//! service record (`_cairn._udp.local.`), and how a record heard on the LAN
//! is read back. A record is a hint, never trusted: the node id in it is
//! proved by the Noise handshake when anyone connects, and its swarm by the
//! certificate shown there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use cairn_proto::NodeAddr;
use cairn_proto::ids::{NodeId, OwnerId};

/// The DNS-SD service type Cairn boxes announce.
pub const SERVICE_TYPE: &str = "_cairn._udp.local.";

/// TXT keys.
const KEY_ID: &str = "id";
const KEY_SWARM: &str = "swarm";
const KEY_SITE: &str = "site";
const KEY_VERSION: &str = "v";

/// A box as its mDNS record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanNode {
    /// The node (its id to be proved by the handshake), where it answers
    /// and its site.
    pub at: NodeAddr,
    /// The swarm it says it is in.
    pub swarm: Option<OwnerId>,
    /// Its software version.
    pub software: String,
}

/// Why a record heard on the LAN is not a Cairn box's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The record has no usable node id.
    #[error("an mDNS record without a valid node id ({0})")]
    BadId(String),
    /// The record names a swarm id that does not parse.
    #[error("an mDNS record with a malformed swarm id")]
    BadSwarm,
    /// The record resolved to no address.
    #[error("an mDNS record without an address")]
    NoAddress,
    /// The host's mDNS responder could not start or was refused a record.
    #[error(
        "mDNS: {0}; LAN discovery is off (nodes still find each other through their seeds); set [swarm] mdns = \"off\" to silence this"
    )]
    Responder(String),
}

impl LanNode {
    /// The instance name in the record: short, and unique per node.
    pub fn instance_name(&self) -> String {
        format!("cairn-{}", &self.at.node.to_hex()[..16])
    }

    /// The TXT properties of this box's record.
    pub fn txt(&self) -> HashMap<String, String> {
        let mut txt = HashMap::from([
            (KEY_ID.to_owned(), self.at.node.to_hex()),
            (KEY_VERSION.to_owned(), self.software.clone()),
        ]);
        if let Some(swarm) = &self.swarm {
            txt.insert(KEY_SWARM.to_owned(), swarm.to_hex());
        }
        if let Some(site) = &self.at.site {
            txt.insert(KEY_SITE.to_owned(), site.clone());
        }
        txt
    }

    /// Reads a resolved record: its TXT properties (through `property`),
    /// addresses and port. Of several addresses it picks, in this order, a
    /// private or public IPv4, a routable IPv6, then anything else; link-
    /// local IPv6 needs a scope a `HOST:PORT` string cannot carry, so it is
    /// left out.
    pub fn from_record<'a>(
        property: impl Fn(&str) -> Option<&'a str>,
        addresses: &[IpAddr],
        port: u16,
    ) -> Result<Self, DiscoveryError> {
        let id = property(KEY_ID).unwrap_or_default();
        let node = NodeId::from_hex(id)
            .map_err(|_| DiscoveryError::BadId(id.chars().take(80).collect::<String>()))?;
        let swarm = match property(KEY_SWARM) {
            Some(text) if !text.is_empty() => {
                Some(OwnerId::from_hex(text).map_err(|_| DiscoveryError::BadSwarm)?)
            }
            _ => None,
        };
        let rank = |ip: &IpAddr| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => 0,
            IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unicast_link_local() => 1,
            IpAddr::V4(_) => 2,
            IpAddr::V6(v6) if v6.is_unicast_link_local() => 9,
            IpAddr::V6(_) => 3,
        };
        let ip = addresses
            .iter()
            .filter(|ip| rank(ip) < 9)
            .min_by_key(|ip| (rank(ip), **ip))
            .ok_or(DiscoveryError::NoAddress)?;
        Ok(Self {
            at: NodeAddr {
                node,
                addr: SocketAddr::new(*ip, port).to_string(),
                site: property(KEY_SITE)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            },
            swarm,
            software: property(KEY_VERSION).unwrap_or_default().to_owned(),
        })
    }
}

/// The address a box on a home LAN advertises when its configuration says
/// only "listen on every address": a private or global IPv4 address first
/// (what the other boxes on the router's LAN share), else a routable IPv6
/// one. Loopback and link-local addresses cannot be dialled by a `HOST:PORT`
/// from another box, so they never qualify. `listen_v4_only` keeps IPv6 out
/// when the socket only listens on IPv4.
pub fn lan_address(addresses: &[IpAddr], listen_v4_only: bool) -> Option<IpAddr> {
    let rank = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) if v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() => None,
        IpAddr::V4(v4) if v4.is_private() => Some(0),
        IpAddr::V4(_) => Some(1),
        _ if listen_v4_only => None,
        IpAddr::V6(v6) if v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified() => {
            None
        }
        IpAddr::V6(_) => Some(2),
    };
    addresses
        .iter()
        .filter_map(|ip| Some((rank(ip)?, *ip)))
        .min()
        .map(|(_, ip)| ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> LanNode {
        LanNode {
            at: NodeAddr {
                node: NodeId([7; 32]),
                addr: "192.168.1.20:7420".into(),
                site: Some("attic".into()),
            },
            swarm: Some(OwnerId([9; 32])),
            software: "0.1.0".into(),
        }
    }

    #[test]
    fn a_record_reads_back_as_the_box_that_wrote_it() {
        let me = node();
        let txt = me.txt();
        let back = LanNode::from_record(
            |k| txt.get(k).map(String::as_str),
            &["fe80::1".parse().unwrap(), "192.168.1.20".parse().unwrap()],
            7420,
        )
        .unwrap();
        assert_eq!(back, me);
        assert!(me.instance_name().len() <= 63, "a DNS label");
    }

    #[test]
    fn a_box_outside_any_swarm_says_so() {
        let mut me = LanNode {
            swarm: None,
            ..node()
        };
        me.at.site = None;
        let txt = me.txt();
        assert!(!txt.contains_key("swarm"));
        let back = LanNode::from_record(
            |k| txt.get(k).map(String::as_str),
            &["10.0.0.2".parse().unwrap()],
            1,
        )
        .unwrap();
        assert_eq!((back.swarm, back.at.site), (None, None));
    }

    #[test]
    fn addresses_are_picked_ipv4_first_and_never_link_local() {
        let txt = node().txt();
        let property = |k: &str| txt.get(k).map(String::as_str);
        let pick = |addrs: &[&str]| {
            let ips: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
            LanNode::from_record(property, &ips, 7420).map(|n| n.at.addr)
        };
        assert_eq!(
            pick(&["2001:db8::5", "10.1.2.3", "169.254.0.9"]).unwrap(),
            "10.1.2.3:7420"
        );
        assert_eq!(pick(&["2001:db8::5"]).unwrap(), "[2001:db8::5]:7420");
        assert_eq!(pick(&["fe80::1"]), Err(DiscoveryError::NoAddress));
        assert_eq!(pick(&[]), Err(DiscoveryError::NoAddress));
    }

    #[test]
    fn garbage_records_are_refused() {
        let refuse = |pairs: &[(&str, &str)]| {
            let txt: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LanNode::from_record(
                |k| txt.get(k).map(String::as_str),
                &["10.0.0.1".parse().unwrap()],
                1,
            )
        };
        assert!(matches!(refuse(&[]), Err(DiscoveryError::BadId(_))));
        assert!(matches!(
            refuse(&[("id", "zz")]),
            Err(DiscoveryError::BadId(_))
        ));
        let id = NodeId([1; 32]).to_hex();
        assert_eq!(
            refuse(&[("id", &id), ("swarm", "nothex")]),
            Err(DiscoveryError::BadSwarm)
        );
        assert!(refuse(&[("id", &id)]).is_ok());
    }

    #[test]
    fn the_lan_address_is_a_private_ipv4_one_before_anything_else() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let all = [
            ip("127.0.0.1"),
            ip("::1"),
            ip("fe80::1"),
            ip("169.254.3.4"),
            ip("2001:db8::7"),
            ip("203.0.113.9"),
            ip("192.168.1.20"),
        ];
        assert_eq!(lan_address(&all, false), Some(ip("192.168.1.20")));
        assert_eq!(lan_address(&all[..6], false), Some(ip("203.0.113.9")));
        assert_eq!(lan_address(&all[..5], false), Some(ip("2001:db8::7")));
        assert_eq!(lan_address(&all[..5], true), None);
        assert_eq!(lan_address(&all[..4], false), None);
    }
}

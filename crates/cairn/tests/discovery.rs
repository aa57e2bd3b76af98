//! LAN discovery by mDNS, end to end, on a LAN of its own: the test makes a
//! network namespace with one Ethernet-like interface, moves itself into
//! it (so every daemon and `cairn` it starts is there too, and no packet
//! reaches the host's network), and checks that:
//! - `cairn discover` finds every box, with its id and address, and adds
//!   them to the owner's nodes;
//! - boxes that join a swarm with no seeds at all find each other on the
//!   LAN and gossip (every member up in every member's view);
//! - a removal told to one member spreads by gossip: the others refuse the
//!   removed node too.
//!
//! It needs root (network namespaces); without it, it says so and checks
//! nothing.

mod common;

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_net::identity::Identity;
use cairn_net::{NetError, Peer};
use cairn_proto::ErrorCode;
use cairn_proto::ids::{NodeId, ShardId};
use cairn_proto::membership::{MemberCert, Removal};
use common::daemon::{Daemon, cert_of};
use common::owner::{Owner, ok};

/// A network namespace with a LAN interface `lan0`, deleted on drop.
struct Lan {
    name: String,
}

impl Lan {
    fn create(addresses: &[&str]) -> Result<Self, String> {
        let name = format!("cairn-lan-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        let lan = Self { name };
        let n = lan.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        // A veth pair: lan0 is the LAN everyone uses, lan1 its far end.
        ip(&[
            "-n", n, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
        ])?;
        ip(&["-n", n, "link", "set", "lan1", "up"])?;
        for address in addresses {
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "lan0",
            ])?;
        }
        ip(&["-n", n, "link", "set", "lan0", "multicast", "on", "up"])?;
        Ok(lan)
    }

    /// Moves the calling thread (and every thread and process it starts
    /// from now on) into the namespace.
    fn enter(&self) {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Polls `check` every 250 ms until it holds, or fails after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => {
                eprintln!("{what}: after {:?}", started.elapsed());
                return;
            }
            Err(last) if started.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[test]
fn boxes_find_each_other_and_the_owner_on_the_lan() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: LAN discovery needs root for a network namespace");
        return;
    }
    let ips = ["10.77.0.1", "10.77.0.2", "10.77.0.3"];
    let lan = Lan::create(&ips).expect("root, yet no network namespace");
    lan.enter();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(on_the_lan(&ips));
    drop(lan);
}

async fn on_the_lan(ips: &[&str]) {
    let alice = Owner::new();
    let init = alice.json(&["init"]);
    let alice_client = NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
    let mdns = "[swarm]\nmdns = 'on'\nmdns_interfaces = ['lan0']\n";
    let nodes: Vec<Daemon> = ips
        .iter()
        .map(|ip| {
            Daemon::start_on(
                ip.parse::<IpAddr>().unwrap(),
                &[alice_client],
                &[],
                mdns,
                &[],
            )
        })
        .collect();

    // The owner's `cairn` finds every box, and adds them.
    let found = alice.json(&["discover", "--interface", "lan0", "--seconds", "4", "--add"]);
    for node in &nodes {
        let heard = found
            .iter()
            .find(|f| f["id"] == node.id.to_human())
            .unwrap_or_else(|| panic!("{} not discovered: {found:?}", node.id));
        assert_eq!(heard["addr"], node.addr.to_string());
        assert!(heard["swarm"].is_null(), "in no swarm yet: {heard}");
    }
    assert_eq!(found.len(), nodes.len(), "{found:?}");
    let listed = alice.json(&["nodes"]);
    assert_eq!(listed.len(), nodes.len());
    assert!(listed.iter().all(|n| n["up"] == true), "{listed:?}");

    // The boxes join with no seeds at all: they must find each other.
    ok(alice.run(&["swarm", "create"], None));
    let alice_identity = Identity::from_private(alice.secret().client_key());
    let endpoint = Peer::client_endpoint("10.77.0.1:0".parse().unwrap()).unwrap();
    let mut peers = Vec::new();
    for node in &nodes {
        let ticket = ok(alice.run(&["swarm", "invite", &node.id.to_human()], None));
        let cert = MemberCert::from_ticket(ticket.trim()).unwrap();
        let peer = Peer::connect(
            &endpoint,
            node.addr,
            node.id,
            &alice_identity,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        peer.join(cert, Vec::new()).await.unwrap();
        peers.push(peer);
    }
    eventually(
        Duration::from_secs(60),
        "every member up in every view",
        || async {
            for (node, peer) in nodes.iter().zip(&peers) {
                let members = peer.members().await.map_err(|e| e.to_string())?;
                let up = members.iter().filter(|m| m.up).count();
                if up != nodes.len() {
                    return Err(format!("{} sees {up} up: {members:?}", node.id));
                }
            }
            Ok(())
        },
    )
    .await;
    for node in &nodes {
        assert!(
            node.log().contains("mDNS: heard a box on the LAN"),
            "{}",
            node.log()
        );
    }

    // A removal told to one member reaches the others by gossip.
    let (a, c) = (&nodes[0], &nodes[2]);
    let removal = Removal::issue(&alice.secret().keys().signing, &a.id);
    peers[1].remove(removal).await.unwrap();
    let a_identity = Identity::load_or_create(&a.dir().join("state")).unwrap();
    let a_cert = cert_of(a);
    let a_endpoint = Peer::client_endpoint("10.77.0.1:0".parse().unwrap()).unwrap();
    eventually(
        Duration::from_secs(30),
        "the removal reached C by gossip",
        || async {
            match Peer::connect_as(
                &a_endpoint,
                c.addr,
                c.id,
                &a_identity,
                Some(a_cert.clone()),
                Duration::from_secs(5),
            )
            .await
            {
                Ok(peer) => match peer.get(ShardId([0; 32])).await {
                    Err(NetError::Refused(_)) => Ok(()),
                    Err(NetError::Remote {
                        code: ErrorCode::NotFound,
                        ..
                    }) => Err("C still admits A".into()),
                    other => Err(format!("{:?}", other.map(|_| ()))),
                },
                Err(NetError::Refused(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    assert!(
        c.log().contains("gossip: a member was removed"),
        "{}",
        c.log()
    );
    // And the removed node is gone from the members B reports.
    let members = peers[1].members().await.unwrap();
    assert!(members.iter().all(|m| m.member.node != a.id), "{members:?}");
}

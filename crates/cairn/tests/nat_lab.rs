//! Boxes behind home routers, in a lab of network namespaces (see
//! `common/lab.rs`): two public members (IPv4 and IPv6), two typical
//! home NATs, two symmetric NATs, a home behind carrier-grade NAT, a
//! router with miniupnpd (PCP, NAT-PMP, UPnP), one with UPnP-IGD alone, one
//! whose miniupnpd lies, a home whose router blocks UDP, and two homes
//! with IPv6 behind a firewall (one of them behind a symmetric IPv4 NAT).
//! Every box runs the real `cairnd`; the owner's `cairn` runs in the first
//! home. The test checks:
//! - for every ordered pair of boxes, the path the first uses to the
//!   second is the one the routers allow (IPv6 where both have it, direct
//!   to public members, mapped where the router maps, punched between
//!   port-keeping NATs, relayed into and out of symmetric ones), and the
//!   boxes that cannot exist on the swarm (UDP blocked) fail with a clear
//!   error;
//! - a file stored from the first home is spread over every home and
//!   reads back bit-exact, and a capture on the relays holds none of its
//!   plaintext;
//! - a router forgetting its connections in the middle of a transfer
//!   (conntrack flushed) does not fail it;
//! - a home whose provider gives it a new address is re-advertised with it,
//!   without a restart.
//!
//! It prints the lab's matrix as `nat pairs=N direct=D mapped=M
//! punched=P relayed=R failed=F` (failed: pairs the lab makes impossible),
//! after `nat ipv6 direct=D punched=P` (the pairs among those over IPv6).
//! It needs root, `nft` and `conntrack` (`scripts/setup` installs them);
//! without root it says so and checks nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::Daemon;
use common::lab::{LabSwarm, PLACES, Router, eventually};
use common::owner::Owner;
use common::random_bytes;

#[test]
fn homes_behind_routers_reach_each_other() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the NAT lab needs root for network namespaces");
        return;
    }
    let mut swarm = LabSwarm::start(PLACES, &|_| String::new());
    let keep = swarm.keep_logs_on_failure();
    let matrix = swarm.wait_for_paths(Duration::from_secs(240));
    println!("{}", matrix.ipv6_line());
    println!("{}", matrix.line());
    assert!(
        matrix.wrong.is_empty(),
        "paths not as the routers allow:\n{}",
        matrix.wrong.join("\n")
    );
    stored_across_homes(&swarm);
    drop(keep);
    renumbered(&mut swarm);
}

/// A file from the first home, over every home, read back; the relays
/// capture what crosses them; the first home's router forgets its
/// connections in the middle of a transfer.
fn stored_across_homes(swarm: &LabSwarm) {
    let (lab, alice, boxes) = (&swarm.lab, &swarm.alice, &swarm.boxes);
    let home1 = lab.site("home1").netns.clone();
    let captures: Vec<(std::process::Child, std::path::PathBuf)> = ["pub1", "pub2"]
        .iter()
        .map(|name| {
            let file = alice.home.path().join(format!("{name}.pcap"));
            let child = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.site(name).netns,
                    "tcpdump",
                    "-i",
                    "eth0",
                    "-U",
                    "-s",
                    "0",
                    "-w",
                ])
                .arg(&file)
                .arg("udp")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            (child, file)
        })
        .collect();
    // tcpdump writes its file header once it is capturing.
    eventually(Duration::from_secs(10), "captures running", || {
        captures
            .iter()
            .all(|(_, file)| std::fs::metadata(file).is_ok_and(|m| m.len() >= 24))
            .then_some(())
            .ok_or_else(|| "no capture file yet".to_owned())
    });
    let marker = b"CAIRN-LAB-PLAINTEXT-MARKER ";
    let mut plain = Vec::new();
    while plain.len() < 3 << 20 {
        plain.extend_from_slice(marker);
        plain.extend_from_slice(&random_bytes(101, plain.len() as u64));
    }
    let source = alice.home.path().join("lab.bin");
    std::fs::write(&source, &plain).unwrap();
    put_and_read_back(alice, &home1, &source, &plain);
    for (mut child, file) in captures {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        );
        let _ = child.wait();
        let captured = std::fs::read(&file).unwrap();
        eprintln!("{}: {} bytes captured", file.display(), captured.len());
        assert!(
            !captured.windows(marker.len()).any(|w| w == marker),
            "the plaintext marker crossed {}",
            file.display()
        );
    }
    let nodes = swarm.json_in(&home1, &["nodes"]);
    let mut holding = 0;
    for (site, node) in lab.sites.iter().zip(boxes) {
        let report = nodes
            .iter()
            .find(|n| n["id"] == node.id.to_human().as_str())
            .unwrap();
        if site.router == Router::UdpBlocked {
            assert_eq!(report["up"], false, "{report}");
            let error = report["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("no path"),
                "a clear error for {}: {report}",
                site.name
            );
            continue;
        }
        assert_eq!(report["up"], true, "{}: {report}", site.name);
        if report["shards"].as_u64().unwrap_or(0) > 0 {
            holding += 1;
        }
        eprintln!("from home1 to {}: {}", site.name, report["path"]);
    }
    assert!(
        holding >= 6,
        "the file's shards are spread over {holding} boxes: {nodes:?}"
    );
    let relays: Vec<&Daemon> = boxes
        .iter()
        .filter(|b| b.log().contains("relay: opened"))
        .collect();
    assert!(!relays.is_empty(), "no relay was used");

    // The first home's router forgets its connections mid-transfer.
    let big: Vec<u8> = random_bytes(12 << 20, 7);
    let big_source = alice.home.path().join("big.bin");
    std::fs::write(&big_source, &big).unwrap();
    let flushed_while_running = std::thread::scope(|scope| {
        let put = scope
            .spawn(|| alice.run_in(Some(&home1), &["put", big_source.to_str().unwrap()], None));
        let mut flushed = 0;
        // Flush once the transfer has begun (the router tracks it), and
        // again while it runs.
        while !put.is_finished() && flushed < 5 {
            lab.flush_conntrack("home1").unwrap();
            flushed += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        let out = put.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        flushed
    });
    assert!(flushed_while_running > 0, "the put ended before any flush");
    eprintln!("conntrack flushed {flushed_while_running} times during the put");
    read_back(alice, &home1, &big_source, &big);
}

/// `cairn put SOURCE` in `netns`, then [`read_back`].
fn put_and_read_back(alice: &Owner, netns: &str, source: &Path, want: &[u8]) {
    let put = alice.run_in(Some(netns), &["put", source.to_str().unwrap()], None);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    read_back(alice, netns, source, want);
}

/// `cairn get SOURCE` in `netns`: the bytes must be `want`'s.
fn read_back(alice: &Owner, netns: &str, source: &Path, want: &[u8]) {
    let back = alice.home.path().join("read-back");
    let get = alice.run_in(
        Some(netns),
        &[
            "get",
            source.to_str().unwrap(),
            "-o",
            back.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(
        std::fs::read(&back).unwrap() == want,
        "{} read back differs",
        source.display()
    );
}

/// The second home gets a new address from its provider: the swarm hears
/// of it without a restart.
fn renumbered(swarm: &mut LabSwarm) {
    let home2 = swarm
        .lab
        .sites
        .iter()
        .position(|s| s.name == "home2")
        .unwrap();
    swarm.lab.renumber("home2", "11.77.0.122").unwrap();
    let pub1 = swarm.lab.site("pub1").netns.clone();
    let pub1_id = swarm.boxes[0].id.to_human();
    let home2_id = swarm.boxes[home2].id.to_human();
    eventually(
        Duration::from_secs(60),
        "home2's new address re-advertised",
        || {
            let members = swarm.try_json_in(&pub1, &["members", "--node", &pub1_id])?;
            let seen = members
                .iter()
                .find(|m| m["id"] == home2_id.as_str())
                .ok_or("home2 gone")?;
            let public = seen["public"].as_str().unwrap_or_default();
            if public.starts_with("11.77.0.122:") && seen["up"] == true {
                Ok(())
            } else {
                Err(format!("pub1 sees home2 as {seen}"))
            }
        },
    );
}

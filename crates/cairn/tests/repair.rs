//! Repair with real processes: 9 `cairnd` on loopback, node 1 the owner's
//! steward (a 10-second grace, a 1-second round). Store files; drain the
//! owner's node 9 and wait until the steward has moved every shard off it,
//! then stop it (nothing is lost); stop 2 nodes for good, wait until
//! `cairn status` reports full redundancy again, stop 2 more, and read
//! every file back bit-exact.

mod common;

use std::time::{Duration, Instant};

use cairn_proto::ids::NodeId;
use common::daemon::Daemon;
use common::owner::Owner;

const NODES: usize = 9;

/// The fewest healthy shards of any segment of any file, per `cairn status`.
fn weakest(owner: &Owner) -> u64 {
    owner
        .json(&["status"])
        .iter()
        .map(|f| f["healthy_shards_min"].as_u64().unwrap())
        .min()
        .unwrap()
}

#[test]
fn lost_nodes_are_repaired_and_files_survive_more_losses() {
    let owner = Owner::new();
    let init = owner.json(&["init"]);
    let client = NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
    // The owner founds a swarm and invites every node: members admit each
    // other (the steward dials holders with its own key).
    owner.json(&["swarm", "create"]);
    // The grace is longer than one `cairn status` with nodes down (about
    // 3 s each), so status can see the loss before the repair.
    let steward_config = "[steward]\ngrace_s = 10\ntick_s = 1\n";
    // The last node is the owner's (claimed), so the owner may drain it.
    let owned = owner.ownership_toml();
    let mut nodes: Vec<Option<Daemon>> = (0..NODES)
        .map(|i| {
            let files = if i == NODES - 1 {
                vec![("state/ownership.toml", owned.clone())]
            } else {
                Vec::new()
            };
            Some(Daemon::start_with_files(
                &[client],
                &[],
                steward_config,
                &files,
            ))
        })
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let node = node.as_ref().unwrap();
        let site = format!("house-{i}");
        let mut args = vec![
            "add-node".to_owned(),
            node.id.to_human(),
            node.addr.to_string(),
            "--site".into(),
            site,
        ];
        if i == 0 {
            args.push("--steward".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(owner.run(&args, None).status.success());
        let id = node.id.to_human();
        let invite = owner.run(&["swarm", "invite", &id], None);
        let ticket = String::from_utf8(invite.stdout).unwrap();
        owner.json(&["join", &id, "--invite", ticket.trim()]);
    }

    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, len) in [("big", 3 << 20), ("small", 1000), ("odd", 123_457)] {
        let path = dir.path().join(name);
        let mut bytes = vec![0u8; len];
        let mut hasher = blake3::Hasher::new();
        hasher.update(name.as_bytes());
        hasher.finalize_xof().fill(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        owner.json(&["put", path.to_str().unwrap()]);
        files.push((path, bytes));
    }
    assert_eq!(weakest(&owner), 6, "full redundancy after the put");

    // Drain the last node: the steward moves its shards away; then it can go.
    let last = nodes[NODES - 1].as_ref().unwrap();
    let drained = owner.json(&["drain", &last.id.to_human()]);
    assert_eq!(drained[0]["draining"], true);
    let held = drained[0]["shards"].as_u64().unwrap();
    assert!(held > 0, "the last node held some shards");
    let started = Instant::now();
    while !nodes[0].as_ref().unwrap().log().contains(&format!(
        "node {} holds none of the shards",
        last.id.to_human()
    )) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the steward did not empty the draining node within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("drained {held} shards in {:?}", started.elapsed());
    nodes[NODES - 1].take().unwrap().stop();
    assert_eq!(weakest(&owner), 6, "nothing was left on the drained node");

    // Two nodes gone for good (not the steward).
    for i in [2, 3] {
        nodes[i].take().unwrap().stop();
    }
    let lost = weakest(&owner);
    assert!(lost < 6, "status sees the loss ({lost})");
    let started = Instant::now();
    while weakest(&owner) < 6 {
        if started.elapsed() > Duration::from_secs(90) {
            let log = nodes[0].as_ref().unwrap().log();
            let steward_lines: Vec<&str> = log.lines().filter(|l| l.contains("steward")).collect();
            panic!(
                "no full redundancy 90 s after losing 2 nodes; the steward said:\n{}",
                steward_lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("full redundancy again after {:?}", started.elapsed());
    assert!(
        nodes[0]
            .as_ref()
            .unwrap()
            .log()
            .contains("steward: repaired a segment"),
        "the steward repaired"
    );
    // It knew the holders were down from the swarm's gossip.
    assert!(
        nodes[0]
            .as_ref()
            .unwrap()
            .log()
            .contains("steward: holder down, by the swarm's gossip"),
        "the steward took gossip's verdict"
    );

    // Two more gone: every file still reads back.
    for i in [4, 5] {
        nodes[i].take().unwrap().stop();
    }
    assert!(weakest(&owner) >= 4);
    for (path, bytes) in &files {
        let out = dir.path().join("back");
        owner.json(&["get", path.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_eq!(&std::fs::read(&out).unwrap(), bytes, "{}", path.display());
    }
    for node in nodes.into_iter().flatten() {
        node.stop();
    }
}

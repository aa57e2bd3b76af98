//! Swarm membership end to end: real `cairnd` processes and the `cairn`
//! binary. The founder invites nodes, which join; members admit each other
//! by certificate; strangers, members of another swarm and removed members
//! are refused; another owner joins as a client with an invite.

mod common;

use std::time::Duration;

use cairn_net::identity::Identity;
use cairn_net::{NetError, Peer};
use cairn_proto::ids::NodeId;
use cairn_proto::membership::MemberCert;
use common::daemon::{Daemon, cert_of};
use common::owner::{Owner, ok};

/// Connects to `to` as `identity`, showing `cert`, and asks for `Stat`.
async fn stat_as(
    identity: &Identity,
    cert: Option<MemberCert>,
    to: &Daemon,
) -> Result<(), NetError> {
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = Peer::connect_as(
        &endpoint,
        to.addr,
        to.id,
        identity,
        cert,
        Duration::from_secs(5),
    )
    .await?;
    peer.get(cairn_proto::ids::ShardId([0; 32]))
        .await
        .map(|_| ())
        .or_else(|e| match e {
            // Admitted: asking for a shard it does not have is answered, not refused.
            NetError::Remote {
                code: cairn_proto::ErrorCode::NotFound,
                ..
            } => Ok(()),
            other => Err(other),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_admit_members_and_nobody_else() {
    let alice = Owner::new();
    let init = alice.json(&["init"]);
    let alice_client = NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
    // The nodes admit Alice's client as their administrator, nobody else.
    let nodes: Vec<Daemon> = (0..3).map(|_| Daemon::start(&[alice_client])).collect();
    for node in &nodes {
        ok(alice.run(
            &["add-node", &node.id.to_human(), &node.addr.to_string()],
            None,
        ));
    }
    let founded = alice.json(&["swarm", "create"]);
    assert_eq!(founded[0]["swarm"], init[0]["owner"]);
    for node in &nodes {
        let ticket = ok(alice.run(&["swarm", "invite", &node.id.to_human()], None));
        let joined = alice.json(&["join", &node.id.to_human(), "--invite", ticket.trim()]);
        assert_eq!(joined[0]["swarm"], init[0]["owner"]);
    }
    // Gossip: each node learns of the others (its join named them as seeds).
    let started = std::time::Instant::now();
    loop {
        let members = alice.json(&["members"]);
        if members.len() == 3 && members.iter().all(|m| m["up"] == true) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gossip did not find all 3 members within 30 s: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let a_identity = Identity::load_or_create(&a.dir().join("state")).unwrap();

    // A member shows its certificate and is admitted; without it, not.
    stat_as(&a_identity, Some(cert_of(a)), b).await.unwrap();
    assert!(stat_as(&a_identity, None, b).await.is_err());
    // Another node's certificate does not admit this key.
    assert!(
        stat_as(&a_identity, Some(cert_of(&nodes[2])), b)
            .await
            .is_err()
    );
    // A stranger with a certificate of another swarm is refused.
    let bob = Owner::new();
    let bob_init = bob.json(&["init"]);
    let bob_client = NodeId::from_human(bob_init[0]["client_key"].as_str().unwrap()).unwrap();
    bob.json(&["swarm", "create"]);
    let stranger = Identity::generate().unwrap();
    let bobs_ticket = ok(bob.run(&["swarm", "invite", &stranger.id.to_human()], None));
    let foreign = MemberCert::from_ticket(bobs_ticket.trim()).unwrap();
    let refused = stat_as(&stranger, Some(foreign), b).await;
    assert!(matches!(refused, Err(NetError::Refused(_))), "{refused:?}");

    // Carol's client joins Alice's swarm with an invite and may use her nodes.
    let carol = Owner::new();
    let carol_init = carol.json(&["init"]);
    let carol_client = NodeId::from_human(carol_init[0]["client_key"].as_str().unwrap()).unwrap();
    for node in &nodes {
        ok(carol.run(
            &["add-node", &node.id.to_human(), &node.addr.to_string()],
            None,
        ));
    }
    assert!(carol.json(&["nodes"]).iter().all(|n| n["up"] == false));
    let for_carol = ok(alice.run(
        &["swarm", "invite", &carol_client.to_human(), "--client"],
        None,
    ));
    ok(carol.run(&["swarm", "accept", for_carol.trim()], None));
    assert!(carol.json(&["nodes"]).iter().all(|n| n["up"] == true));
    // A member that is not the node's owner cannot make it join anything.
    let for_node = ok(bob.run(&["swarm", "invite", &b.id.to_human()], None));
    let hijack = carol.run(
        &["join", &b.id.to_human(), "--invite", for_node.trim()],
        None,
    );
    assert!(!hijack.status.success());
    assert!(String::from_utf8_lossy(&hijack.stderr).contains("owner"));
    // Only the founder invites.
    assert!(
        !carol
            .run(&["swarm", "invite", &bob_client.to_human()], None)
            .status
            .success()
    );

    // Alice removes node A: every node she knows refuses it from now on.
    let removed = alice.json(&["swarm", "remove", &a.id.to_human()]);
    assert_eq!(removed[0]["nodes_told"], 2);
    let after = stat_as(&a_identity, Some(cert_of(a)), b).await;
    assert!(matches!(after, Err(NetError::Refused(_))), "{after:?}");
    assert!(
        stat_as(&a_identity, Some(cert_of(a)), &nodes[2])
            .await
            .is_err()
    );
    // The others still admit each other.
    let c_identity = Identity::load_or_create(&nodes[2].dir().join("state")).unwrap();
    stat_as(&c_identity, Some(cert_of(&nodes[2])), b)
        .await
        .unwrap();

    // Failure detection spreads by gossip: node C stops, B's view has it down.
    let mut nodes = nodes;
    let c = nodes.pop().unwrap();
    let c_id = c.id;
    c.stop();
    let alice_identity = Identity::from_private(alice.secret().client_key());
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let b_peer = Peer::connect(
        &endpoint,
        nodes[1].addr,
        nodes[1].id,
        &alice_identity,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    loop {
        let members = b_peer.members().await.unwrap();
        if members.iter().any(|m| m.member.node == c_id && !m.up) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gossip did not declare the stopped node down within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "stopped node declared down by gossip after {:?}",
        started.elapsed()
    );
    for node in nodes {
        node.stop();
    }
}

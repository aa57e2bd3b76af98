//! Owning a box, end to end: a real `cairnd` with a simulated board (value
//! files for the button and the LED), the real `cairn` binary, and the
//! button pressed by writing the file.
//!
//! - Claiming with the pairing window closed is refused, and says how to open it.
//! - A 5-second hold opens the window; `cairn claim` then waits for a short
//!   press at the box, succeeds, and the box admits the owner's client from
//!   then on.
//! - Another owner cannot claim it; the owner can transfer it to them.
//! - The new owner drains it: puts are refused with `Draining`.
//! - A 15-second hold and a confirming press reset identity and ownership.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_net::identity::Identity;
use cairn_net::{NetError, Peer};
use cairn_proto::ErrorCode;
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use common::daemon::{Daemon, print_id};
use common::owner::Owner;

/// Holds the simulated button down for `held`, then lets go. The hold is the
/// gesture itself (the daemon samples the line every 10 ms), not a guess at
/// how long something takes.
async fn press(board: &Path, held: Duration) {
    std::fs::write(board.join("button"), "1").unwrap();
    tokio::time::sleep(held).await;
    std::fs::write(board.join("button"), "0").unwrap();
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn connect(daemon_id: NodeId, daemon: &Daemon, owner: &Owner) -> Result<Peer, NetError> {
    let client = Identity::from_private(owner.secret().client_key());
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    Peer::connect(
        &endpoint,
        daemon.addr,
        daemon_id,
        &client,
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_claim_transfer_drain_and_factory_reset() {
    let mut daemon = Daemon::start_with_board(&[]);
    let alice = Owner::new();
    alice.json(&["init"]);
    let bob = Owner::new();
    bob.json(&["init"]);

    // The LED: steady on once the node is healthy (booting blinks before).
    let led = || std::fs::read_to_string(daemon.board().join("led")).unwrap_or_default();
    // Steady means on for 2 s without a break: longer than any on-step of
    // a blinking pattern (the longest, repairing's, is 1.6 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lit_since: Option<Instant> = None;
    while lit_since.is_none_or(|since| since.elapsed() < Duration::from_millis(2_000)) {
        // The store's disk is a directory on the host's file system, so a
        // host with under 5 % free makes the node rightly "degraded".
        assert!(
            Instant::now() < deadline,
            "the LED was not steady on within 10 s; the node's log:\n{}",
            daemon.log()
        );
        lit_since = if led() == "100" {
            lit_since.or(Some(Instant::now()))
        } else {
            None
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // No window: the box does not even admit the key, and says what to do.
    let refused = alice.run(
        &["claim", &daemon.id.to_human(), &daemon.addr.to_string()],
        None,
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("pairing window"),
        "{}",
        stderr(&refused)
    );
    assert!(connect(daemon.id, &daemon, &alice).await.is_err());

    // Hold 5.5 s: the window opens; Alice claims, and presses to confirm.
    press(&daemon.board(), Duration::from_millis(5_500)).await;
    // The window opens within a few samples of the release.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claimed = alice.claim_at_the_box(&daemon, &["--site", "hall"]);
    assert!(claimed.status.success(), "{}", stderr(&claimed));
    assert!(
        stderr(&claimed).contains("press its button"),
        "{}",
        stderr(&claimed)
    );
    let nodes = alice.json(&["nodes"]);
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["owner"], alice.json(&["id"])[0]["owner"]);
    assert_eq!(nodes[0]["site"], "hall");
    // The claim closed the window: Bob's key is refused at the handshake.
    let bob_refused = bob.run(
        &["claim", &daemon.id.to_human(), &daemon.addr.to_string()],
        None,
    );
    assert!(!bob_refused.status.success());
    assert!(connect(daemon.id, &daemon, &bob).await.is_err());
    // Alice's client is admitted now: it may store.
    let peer = connect(daemon.id, &daemon, &alice).await.unwrap();
    let bytes = vec![7u8; 1000];
    let owner = OwnerId(alice.secret().keys().owner_id().0);
    peer.put(ShardId::of(&bytes), bytes.clone(), owner, u64::MAX / 2)
        .await
        .unwrap();

    // With a window open again, Bob still cannot take Alice's box.
    press(&daemon.board(), Duration::from_millis(5_500)).await;
    // The window opens within a few samples of the release.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = bob.run(
        &["claim", &daemon.id.to_human(), &daemon.addr.to_string()],
        None,
    );
    assert!(!taken.status.success());
    assert!(
        stderr(&taken).contains("already claimed"),
        "{}",
        stderr(&taken)
    );

    // Alice hands it to Bob with his transfer card.
    let card = bob.transfer_card();
    let handed = alice.run(&["transfer", &daemon.id.to_human(), "--to", &card], None);
    assert!(handed.status.success(), "{}", stderr(&handed));
    bob.run(
        &["add-node", &daemon.id.to_human(), &daemon.addr.to_string()],
        None,
    );
    assert_eq!(
        bob.json(&["nodes"])[0]["owner"],
        bob.json(&["id"])[0]["owner"]
    );
    // Alice's open connection is refused from the next request on.
    let after = peer.get(ShardId::of(&bytes)).await;
    assert!(
        matches!(
            after,
            Err(NetError::Remote {
                code: ErrorCode::Forbidden,
                ..
            })
        ),
        "{after:?}"
    );

    // Bob drains it: no more shards are taken, and `cairn nodes` says so.
    let drained = bob.json(&["drain", &daemon.id.to_human()]);
    assert_eq!(drained[0]["draining"], true);
    assert_eq!(drained[0]["shards"], 1);
    assert_eq!(bob.json(&["nodes"])[0]["draining"], true);
    let bob_peer = connect(daemon.id, &daemon, &bob).await.unwrap();
    let more = vec![8u8; 1000];
    let refused = bob_peer
        .put(
            ShardId::of(&more),
            more.clone(),
            OwnerId([1; 32]),
            u64::MAX / 2,
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(NetError::Remote {
                code: ErrorCode::Draining,
                ..
            })
        ),
        "{refused:?}"
    );
    // Reads still work while draining: the shards wait to be moved.
    assert_eq!(bob_peer.get(ShardId::of(&bytes)).await.unwrap(), bytes);

    // A swarm membership the reset must forget (its certificate names the old key).
    std::fs::write(daemon.dir().join("state/swarm.toml"), "removed = []\n").unwrap();

    // Factory reset: hold 15.5 s, release, confirm with a short press.
    let old_id = daemon.id;
    press(&daemon.board(), Duration::from_millis(15_500)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    press(&daemon.board(), Duration::from_millis(200)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_id = loop {
        let id = print_id(&daemon.config());
        if id != old_id || Instant::now() > deadline {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(new_id, old_id, "no reset within 20 s");
    // The box is unclaimed again: nobody's key is admitted without the window,
    // and the old identity is gone.
    let mut reset_peer = None;
    for _ in 0..100 {
        // The node restarts in the same process; give its socket a moment.
        daemon.assert_running();
        let attempt = connect(new_id, &daemon, &bob).await;
        if let Err(NetError::Connect { .. } | NetError::Timeout(_)) = attempt {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        reset_peer = Some(attempt);
        break;
    }
    let reset_peer = reset_peer.expect("the reset node answers");
    assert!(reset_peer.is_err(), "Bob is still admitted after the reset");
    assert!(connect(old_id, &daemon, &bob).await.is_err());
    assert!(
        !daemon.dir().join("state/swarm.toml").exists(),
        "the reset left the swarm"
    );
    // The data disk carries the new node id and kept its shard.
    let marker = std::fs::read_to_string(daemon.disk().join("cairn/marker.toml")).unwrap();
    assert!(marker.contains(&new_id.to_hex()), "marker: {marker}");
    let shard_files = walk(&daemon.disk().join("cairn"));
    assert!(
        shard_files
            .iter()
            .any(|f| f.ends_with(&ShardId::of(&bytes).to_hex())),
        "the stored shard was kept"
    );
    daemon.stop();
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

//! `cairn update` against a real `cairnd` on loopback, over the Cairn
//! protocol (the VM test in `tests/vm-boot` installs what arrives):
//!
//! - the owner's bundle arrives whole, checked against its BLAKE3, in the
//!   node's update inbox, where root's `cairn-update.path` takes it;
//! - a transfer cut off resumes where the box's copy ends;
//! - nobody but the box's owner may offer or send a bundle;
//! - `cairn system` tells the release the box runs and how its last
//!   update ended;
//! - a box told to fetch the bundle from another member that keeps it
//!   does so itself, box to box, and then serves it in turn.

mod common;

use std::time::Duration;

use cairn_net::Peer;
use cairn_net::identity::Identity;
use cairn_proto::ErrorCode;
use common::daemon::Daemon;
use common::owner::{Owner, ok};

async fn connect(daemon: &Daemon, owner: &Owner) -> Peer {
    let client = Identity::from_private(owner.secret().client_key());
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    Peer::connect(
        &endpoint,
        daemon.addr,
        daemon.id,
        &client,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_bundle_arrives_whole_resumes_and_strangers_are_refused() {
    let alice = Owner::new();
    alice.json(&["init"]);
    let mallory = Owner::new();
    mallory.json(&["init"]);
    let admitted = [&alice, &mallory].map(|o| Identity::from_private(o.secret().client_key()).id);
    let status = "format = 1\nslot = \"a\"\nversion = \"1.0.0\"\n\n[last]\nversion = \"0.9.0\"\nresult = \"rolled-back\"\nreason = \"cairnd failed to start (3 restarts)\"\nat = 1800000000\n";
    let daemon = Daemon::start_with_files(
        &admitted,
        &[],
        "[update]\nrelease_file = '{dir}/release'\nstatus_dir = '{dir}/update-status'\n",
        &[
            ("state/ownership.toml", alice.ownership_toml()),
            ("release", "1.0.0\n".into()),
            ("update-status/status.toml", status.into()),
        ],
    );
    let node = daemon.id.to_human();
    ok(alice.run(&["add-node", &node, &daemon.addr.to_string()], None));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn-amd64-2.0.0.raucb");
    let bytes: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    let bundle = cairn_proto::BundleRef {
        hash: *blake3::hash(&bytes).as_bytes(),
        size: bytes.len() as u64,
        version: "2.0.0".into(),
    };
    let not_after = cairn_host::unix_now() + 600;

    // A stranger admitted to the box may neither offer nor send a bundle.
    let stranger = connect(&daemon, &mallory).await;
    let refused = stranger
        .update_offer(
            &mallory.secret().keys().signing,
            bundle.clone(),
            false,
            None,
            not_after,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    let refused = stranger
        .update_part(bundle.hash, 0, bytes[..1024].to_vec())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");

    // The owner's transfer is cut after 8 MiB...
    let owners = connect(&daemon, &alice).await;
    let info = owners
        .update_offer(
            &alice.secret().keys().signing,
            bundle.clone(),
            false,
            None,
            not_after,
        )
        .await
        .unwrap();
    assert_eq!(info.version, "1.0.0");
    assert_eq!(info.receiving, Some((bundle.clone(), 0)));
    // (in parts no larger than the node's largest shard)
    for part in bytes[..8 << 20].chunks(1 << 20) {
        let have = owners.update_status().await.unwrap().receiving.unwrap().1;
        owners
            .update_part(bundle.hash, have, part.to_vec())
            .await
            .unwrap();
    }
    // ...a part that skips ahead is refused and changes nothing...
    let skipped = owners
        .update_part(
            bundle.hash,
            9 << 20,
            bytes[9 << 20..(9 << 20) + 1024].to_vec(),
        )
        .await
        .unwrap_err();
    assert!(
        skipped.to_string().contains("has 8388608 bytes"),
        "{skipped}"
    );
    drop(owners);

    // ...and `cairn update` resumes there.
    let sent = alice.json(&["update", &node, path.to_str().unwrap()]);
    assert_eq!(sent[0]["resumed_from"], 8 << 20, "{sent:?}");
    assert_eq!(sent[0]["sent"], 12 << 20, "{sent:?}");
    assert_eq!(sent[0]["running"], "1.0.0");
    let inbox = daemon.dir().join("state/updates");
    assert_eq!(std::fs::read(inbox.join("ready.raucb")).unwrap(), bytes);
    assert_eq!(
        std::fs::read_to_string(inbox.join("ready.version")).unwrap(),
        "2.0.0"
    );
    assert!(!inbox.join("offer.toml").exists());

    // The box says what it runs, that it is installing, and how the last
    // update went; while it installs it takes no other bundle.
    let system = alice.json(&["system", &node]);
    let said = &system[0]["system"];
    assert_eq!(said["version"], "1.0.0", "{system:?}");
    assert_eq!(said["slot"], "a", "{system:?}");
    assert_eq!(said["installing"], true, "{system:?}");
    assert_eq!(said["last"]["result"], "rolled-back", "{system:?}");
    let again = alice.run(&["update", &node, path.to_str().unwrap()], None);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("installing an update now")
            || String::from_utf8_lossy(&again.stderr).contains("installing an update now"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A box that stops in the middle of a transfer (restarted, or too busy to
/// read for a while) does not end `cairn update`: the part is sent again
/// from what the box kept whole, and the bundle arrives whole.
#[test]
fn cairn_update_goes_on_when_the_box_restarts_mid_transfer() {
    let alice = Owner::new();
    let init = alice.json(&["init"]);
    let alice_client =
        cairn_proto::ids::NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
    let mut daemon = Daemon::start_with_files(
        &[alice_client],
        &[],
        "[update]\nrelease_file = '{dir}/release'\nstatus_dir = '{dir}/update-status'\n",
        &[
            ("state/ownership.toml", alice.ownership_toml()),
            ("release", "1.0.0\n".into()),
        ],
    );
    let node = daemon.id.to_human();
    ok(alice.run(&["add-node", &node, &daemon.addr.to_string()], None));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn-amd64-2.0.0.raucb");
    let bytes = common::random_bytes(64 << 20, 31);
    std::fs::write(&path, &bytes).unwrap();
    let part = daemon.dir().join(format!(
        "state/updates/{}.part",
        blake3::hash(&bytes).to_hex()
    ));

    let sent = std::thread::scope(|scope| {
        let sending = scope.spawn(|| alice.json(&["update", &node, path.to_str().unwrap()]));
        // The box restarts once it holds a few parts, long before the end.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&part).map_or(0, |m| m.len()) < 4 << 20 {
            assert!(
                !sending.is_finished(),
                "the transfer ended before the restart"
            );
            assert!(std::time::Instant::now() < deadline, "no 4 MiB in 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        daemon.restart();
        sending.join().unwrap()
    });
    assert!(sent[0]["error"].is_null(), "{sent:?}");
    assert!(
        sent[0]["interruptions"].as_u64().unwrap() >= 1,
        "no part was sent again: {sent:?}"
    );
    // Nothing is sent twice but the failed part (2 MiB, the box's largest
    // shard); one the box took as its answer was lost is not sent again.
    let bytes_sent = sent[0]["sent"].as_u64().unwrap();
    assert!(((62 << 20)..=(64 << 20)).contains(&bytes_sent), "{sent:?}");
    let inbox = daemon.dir().join("state/updates");
    assert!(std::fs::read(inbox.join("ready.raucb")).unwrap() == bytes);
}

/// A box that has the bundle keeps it and serves it: another box of the
/// owner's, told to fetch it from there, does so itself over the swarm
/// (nothing is sent from the owner's computer), checks it the same way,
/// and a member asking for a bundle a box does not keep is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_fetches_the_bundle_from_a_member_that_keeps_it() {
    let alice = Owner::new();
    let init = alice.json(&["init"]);
    let alice_client =
        cairn_proto::ids::NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
    let boxes: Vec<Daemon> = (0..2)
        .map(|_| {
            Daemon::start_with_files(
                &[alice_client],
                &[],
                "[update]\nrelease_file = '{dir}/release'\nstatus_dir = '{dir}/update-status'\n",
                &[
                    ("state/ownership.toml", alice.ownership_toml()),
                    ("release", "1.0.0\n".into()),
                ],
            )
        })
        .collect();
    let names: Vec<String> = boxes.iter().map(|b| b.id.to_human()).collect();
    for daemon in &boxes {
        ok(alice.run(
            &["add-node", &daemon.id.to_human(), &daemon.addr.to_string()],
            None,
        ));
    }
    alice.json(&["swarm", "create"]);
    for name in &names {
        let ticket = ok(alice.run(&["swarm", "invite", name], None));
        alice.json(&["join", name, "--invite", ticket.trim()]);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn-amd64-2.0.0.raucb");
    let bytes = common::random_bytes(5 << 20, 23);
    std::fs::write(&path, &bytes).unwrap();

    // The first box gets it from the owner; root's installer takes its
    // ready.raucb away (as cairn-slot does), and the box keeps a copy.
    let sent = alice.json(&["update", &names[0], path.to_str().unwrap()]);
    assert_eq!(sent[0]["sent"], 5 << 20, "{sent:?}");
    let first = boxes[0].dir().join("state/updates");
    std::fs::remove_file(first.join("ready.raucb")).unwrap();
    let said = alice.json(&["system", &names[0]]);
    assert_eq!(said[0]["system"]["serving"]["version"], "2.0.0", "{said:?}");

    // The second box fetches it from the first, the owner sending nothing.
    let fetched = alice.json(&[
        "update",
        &names[1],
        path.to_str().unwrap(),
        "--from",
        &names[0],
        "--wait",
        "60",
    ]);
    assert_eq!(fetched[0]["sent"], 0, "{fetched:?}");
    assert_eq!(fetched[0]["from"], names[0].as_str(), "{fetched:?}");
    assert!(fetched[0]["error"].is_null(), "{fetched:?}");
    let second = boxes[1].dir().join("state/updates");
    assert_eq!(std::fs::read(second.join("ready.raucb")).unwrap(), bytes);
    assert!(
        boxes[1].log().contains("fetched whole from member"),
        "{}",
        boxes[1].log()
    );

    // A bundle the member does not keep: the box says why it cannot
    // fetch it, and the owner hears it.
    std::fs::remove_file(second.join("ready.raucb")).unwrap();
    let other = dir.path().join("cairn-amd64-3.0.0.raucb");
    std::fs::write(&other, common::random_bytes(1 << 20, 24)).unwrap();
    let refused = alice.run(
        &[
            "update",
            &names[1],
            other.to_str().unwrap(),
            "--from",
            &names[0],
            "--wait",
            "3",
        ],
        None,
    );
    assert!(!refused.status.success());
    let asked = std::time::Instant::now();
    loop {
        let said = alice.json(&["system", &names[1]]);
        let trouble = said[0]["system"]["fetch_trouble"]
            .as_str()
            .unwrap_or_default();
        if trouble.contains("does not keep that update bundle") {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "the box does not say why it cannot fetch: {said:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A member asks the first box for bytes of a bundle it does not keep.
    let peer = connect(&boxes[0], &alice).await;
    let missing = peer.update_get([7; 32], 0, 1024).await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound), "{missing}");
    let beyond = peer
        .update_get(*blake3::hash(&bytes).as_bytes(), 5 << 20, 1)
        .await
        .unwrap_err();
    assert!(beyond.to_string().contains("beyond"), "{beyond}");
}

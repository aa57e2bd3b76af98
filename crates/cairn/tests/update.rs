//! `cairn update` against a real `cairnd` on loopback, over the Cairn
//! protocol (the VM test in `tests/vm-boot` installs what arrives):
//!
//! - the owner's bundle arrives whole, checked against its BLAKE3, in the
//!   node's update inbox, where root's `cairn-update.path` takes it;
//! - a transfer cut off resumes where the box's copy ends;
//! - nobody but the box's owner may offer or send a bundle;
//! - `cairn system` tells the release the box runs and how its last
//!   update ended.

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
    let said = &system[0]["system"]["Ok"];
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

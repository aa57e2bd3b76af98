//! The `cairn-client` example (`crates/client/examples/store-and-read.rs`)
//! against real `cairnd` processes set up as `scripts/local-swarm` sets
//! them up: an owner made by `cairn init`, nodes that admit its client,
//! listed with `cairn add-node`. The example's own function does the work.

mod common;

#[path = "../../client/examples/store-and-read.rs"]
mod example;

use cairn_proto::ids::NodeId;
use common::daemon::Daemon;
use common::owner::Owner;

#[tokio::test(flavor = "multi_thread")]
async fn the_library_example_stores_a_file_and_reads_it_back_from_local_nodes() {
    let owner = Owner::new();
    let init = owner.json(&["init"]);
    let client = NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
    let nodes: Vec<Daemon> = (0..6).map(|_| Daemon::start(&[client])).collect();
    for node in &nodes {
        owner.json(&["add-node", &node.id.to_human(), &node.addr.to_string()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.bin");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();

    let trip = example::store_and_read(owner.home.path(), &file)
        .await
        .expect("the example's round trip");
    assert!(trip.same, "read back different bytes: {trip:?}");
    assert_eq!(trip.size, bytes.len() as u64);
    assert_eq!(trip.version, 1);
    // 4+2 coding: at least the data's size in shards went out.
    assert!(trip.uploaded >= trip.size, "{trip:?}");

    // The CLI sees what the library stored, under the same path.
    let listed = owner.json(&["ls"]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["path"], trip.stored.as_str());
    for node in nodes {
        node.stop();
    }
}

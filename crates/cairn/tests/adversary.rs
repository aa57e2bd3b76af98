//! The adversary suite: a hostile member, a hostile LAN host and a hostile
//! disk, built from the project's own libraries and aimed at the real code
//! paths. Each test opens with the story of the attack and ends with the
//! figure that shows it refused or contained. The threat model these tests
//! stand for is in `docs/PROTOCOL.md` ("Who is trusted with what").

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_store::shard_path;
use cairn_store::{ShardStore, StoreConfig};

const NODE: NodeId = NodeId([0x4e; 32]);
const OWNER: OwnerId = OwnerId([0x0a; 32]);
const FAR_FUTURE: u64 = 4_000_000_000;
/// What the node must never serve: it stands for `/var/lib/cairn/node.key`.
const SECRET: &[u8] = b"NODE-KEY-SECRET-NODE-KEY-SECRET!";

fn store_config(node: NodeId, state: &Path, disk: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(node, state, vec![disk.to_path_buf()]);
    config.reserve_bytes = 0;
    config
}

/// Runs `work` on a thread and fails the test if it has not returned within
/// `limit`: an open of a FIFO that blocks forever is the attack's success.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(limit)
        .expect("the node hung on a file the disk's author put there")
}

/// **The story.** A neighbour lends the box a USB disk labelled `CAIRN-2`.
/// They built it on their own machine with Cairn's own store, so its marker
/// names this node (a node id is public: the box announces it over mDNS),
/// and its index lists shards of exactly the node key's length. Then they
/// replaced the shard files: one with a symbolic link to
/// `/var/lib/cairn/node.key`, one fan-out directory with a link to a
/// directory of theirs, one with a FIFO that would hang a reader, and the
/// disk's `tmp/` with a link to the node's state directory, so that writes
/// land there. Any member may then ask for a byte range of a shard by id.
///
/// **Refused:** every open below the disk's `cairn/` is resolved by the
/// kernel without following a link or leaving the disk. No read returns a
/// byte of the secret, the FIFO is refused at once, and a put through the
/// linked `tmp/` writes nothing into the state directory.
#[test]
fn a_crafted_disk_serves_no_byte_outside_its_shards() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let key_file = state.join("node.key");
    std::fs::write(&key_file, SECRET).unwrap();
    let disk = root.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();

    // Four shards the size of the key, each in its own fan-out directory.
    let mut shards = Vec::new();
    let mut seed = 0u8;
    while shards.len() < 4 {
        let bytes = vec![seed; SECRET.len()];
        seed += 1;
        let id = ShardId::of(&bytes);
        if shards
            .iter()
            .all(|(other, _): &(ShardId, _)| other.0[0] != id.0[0])
        {
            shards.push((id, bytes));
        }
    }
    {
        let author = root.path().join("author-state");
        let store = ShardStore::open(store_config(NODE, &author, &disk)).unwrap();
        for (id, bytes) in &shards {
            store.put(*id, bytes, OWNER, FAR_FUTURE).unwrap();
        }
    }
    let cairn = disk.join("cairn");
    let file_of = |id: &ShardId| cairn.join(shard_path(id));
    // 1. The shard file is a link to the key.
    std::fs::remove_file(file_of(&shards[0].0)).unwrap();
    std::os::unix::fs::symlink(&key_file, file_of(&shards[0].0)).unwrap();
    // 2. The fan-out directory is a link to a directory of the author's
    //    choosing, holding a file under the shard's name that links to the key.
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&key_file, elsewhere.join(shards[1].0.to_hex())).unwrap();
    let fan_out = file_of(&shards[1].0).parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&fan_out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &fan_out).unwrap();
    // 3. A FIFO: opening it for reading would wait for a writer forever.
    std::fs::remove_file(file_of(&shards[2].0)).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(file_of(&shards[2].0))
        .status()
        .unwrap();
    assert!(made.success());
    // The box takes the disk in: its marker names this node.
    let node_state = root.path().join("node-state");
    let store = ShardStore::open(store_config(NODE, &node_state, &disk)).unwrap();
    let store = std::sync::Arc::new(store);
    // The untouched shard reads: the checks refuse the links, not the disk.
    assert_eq!(store.get(shards[3].0).unwrap(), shards[3].1);
    let mut served = 0usize;
    let mut refused = 0usize;
    for (id, _) in shards.iter().take(3) {
        for ranged in [false, true] {
            let store = std::sync::Arc::clone(&store);
            let id = *id;
            let answer = within(Duration::from_secs(10), move || {
                if ranged {
                    store.get_range(id, 0, SECRET.len() as u64)
                } else {
                    store.get(id)
                }
            });
            match answer {
                Ok(bytes) => {
                    assert!(
                        !bytes.windows(8).any(|w| SECRET.windows(8).any(|s| s == w)),
                        "shard {id} served bytes of the node key"
                    );
                    served += 1;
                }
                Err(_) => refused += 1,
            }
        }
    }
    println!("crafted disk: crafted shards served={served} refused={refused} of 6 reads");
    drop(store);

    // 4. tmp/ is a link to the node's state directory: a put's file would
    //    be written there, and a rename could replace the node key.
    std::fs::remove_dir_all(cairn.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&state, cairn.join("tmp")).unwrap();
    let before = std::fs::read_dir(&state).unwrap().count();
    let store = ShardStore::open(store_config(NODE, &node_state, &disk));
    let new_bytes = vec![0xEEu8; 4096];
    let new_id = ShardId::of(&new_bytes);
    let put = store.as_ref().map_err(|e| e.to_string()).and_then(|store| {
        store
            .put(new_id, &new_bytes, OWNER, FAR_FUTURE)
            .map_err(|e| e.to_string())
    });
    let after = std::fs::read_dir(&state).unwrap().count();
    println!(
        "crafted disk with a linked tmp/: put {put:?}; entries in the state directory {before} -> {after}"
    );
    assert_eq!(served, 0, "no read of a crafted shard may succeed");
    assert_eq!(refused, 6);
    assert!(put.is_err(), "a put through a linked tmp/ must fail");
    assert_eq!(
        before, after,
        "nothing was written into the state directory"
    );
    assert_eq!(std::fs::read(&key_file).unwrap(), SECRET);
}

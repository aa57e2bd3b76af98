//! The owner's tool against a real local swarm: 8 `cairnd` processes on
//! loopback, driven through the `cairn` binary. Round trips of empty, tiny,
//! odd-sized and multi-segment files; reads with m nodes down; versions and
//! `--at`; recovery from the phrase into an empty client directory; and what
//! the nodes can see (packed small files included): no plaintext, no file
//! names, fewer than k shards of any segment on any node.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_client::catalog::SegmentRef;
use cairn_client::keys::OwnerSecret;
use cairn_client::local::TreeCache;
use cairn_client::segment::Coding;
use cairn_client::swarm::Swarm;
use cairn_client::tree::{self, EntryKind, History, StoredRef};
use cairn_proto::ids::{NodeId, ShardId};
use common::daemon::Daemon;
use common::owner::Owner;
use common::random_bytes;

const NODES: usize = 8;

struct Swarmlet {
    nodes: Vec<Option<Daemon>>,
}

impl Swarmlet {
    /// An owner with a fresh identity and `NODES` nodes that allow its client.
    fn start() -> (Owner, Self) {
        Self::start_as(None)
    }

    /// Like [`Self::start`]; with `Some(secret)` the owner is that one, so
    /// that chunk boundaries (keyed by the owner) are the same every run.
    fn start_as(secret: Option<OwnerSecret>) -> (Owner, Self) {
        let owner = Owner::new();
        let client = match &secret {
            None => {
                let init = owner.json(&["init"]);
                NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap()
            }
            Some(secret) => secret.client_id(),
        };
        let nodes: Vec<Option<Daemon>> =
            (0..NODES).map(|_| Some(Daemon::start(&[client]))).collect();
        if let Some(secret) = &secret {
            let first = nodes[0].as_ref().unwrap();
            let spec = format!("{}@{}", first.id.to_human(), first.addr);
            owner.json_in(&["recover", "--node", &spec], Some(&secret.phrase()));
        }
        for (i, node) in nodes.iter().flatten().enumerate() {
            owner.json(&[
                "add-node",
                &node.id.to_human(),
                &node.addr.to_string(),
                "--site",
                &format!("house-{}", i % 4),
            ]);
        }
        (owner, Self { nodes })
    }

    fn stop(&mut self, index: usize) {
        if let Some(node) = self.nodes[index].take() {
            node.stop();
        }
    }

    fn running(&self) -> impl Iterator<Item = &Daemon> {
        self.nodes.iter().flatten()
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// Reads `stored` back into a fresh file and returns its bytes and the report.
fn get(owner: &Owner, stored: &str, extra: &[&str]) -> (Vec<u8>, serde_json::Value) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out");
    let mut args = vec!["get", stored, "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let report = owner.json(&args).remove(0);
    (std::fs::read(&out).unwrap(), report)
}

#[test]
fn files_round_trip_with_m_nodes_down_and_every_version_stays_readable() {
    let (owner, mut swarm) = Swarmlet::start();
    let data = tempfile::tempdir().unwrap();
    let files: Vec<(PathBuf, Vec<u8>)> = [
        ("empty", 0usize),
        ("tiny", 1),
        ("odd", 1_234_567),
        ("several-segments", 6 << 20),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, len))| {
        let path = data.path().join(name);
        let bytes = random_bytes(*len, i as u64);
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    })
    .collect();
    let stored = owner.json(&["put", &path_str(data.path())]).remove(0);
    assert_eq!(stored["files_new"], files.len());
    for (path, bytes) in &files {
        let (back, report) = get(&owner, &path_str(path), &[]);
        assert_eq!(&back, bytes, "{}", path.display());
        assert_eq!(report["transfer"]["decoded_segments"], 0);
    }
    let big = path_str(&files[3].0);
    let status = owner.json(&["status", &big]).remove(0);
    assert_eq!(status["healthy_shards_min"], 6, "{status}");
    assert_eq!(status["survives_node_losses"], 2, "{status}");

    // `-o DIR` writes DIR/NAME; `-o FIFO` writes through the pipe and
    // leaves it a pipe (a temporary file renamed over it would replace it).
    let (odd_path, odd_bytes) = &files[2];
    let into = tempfile::tempdir().unwrap();
    owner.json(&["get", &path_str(odd_path), "-o", &path_str(into.path())]);
    assert_eq!(&std::fs::read(into.path().join("odd")).unwrap(), odd_bytes);
    let fifo = into.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success());
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::read(fifo).unwrap()
    });
    owner.json(&["get", &path_str(odd_path), "-o", &path_str(&fifo)]);
    // Checked before joining: a reader of a replaced pipe would wait forever.
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::metadata(&fifo).unwrap().file_type()
    ));
    assert_eq!(&reader.join().unwrap(), odd_bytes);

    // A rotten shard on node 1 (stopped for good later, so at most m shards
    // of a segment are ever missing): every file still reads back right.
    let rotten = walk(&swarm.nodes[1].as_ref().unwrap().disk())
        .into_iter()
        .find(|f| {
            f.parent()
                .and_then(|p| p.parent())
                .and_then(|p| p.file_name())
                == Some("shards".as_ref())
        })
        .unwrap();
    let mut shard = std::fs::read(&rotten).unwrap();
    let middle = shard.len() / 2;
    shard[middle] ^= 0x40;
    std::fs::write(&rotten, &shard).unwrap();
    for (path, bytes) in &files {
        assert_eq!(
            &get(&owner, &path_str(path), &[]).0,
            bytes,
            "{}",
            path.display()
        );
    }

    // A second version of one file; the first stays readable by number and time.
    let (tiny_path, tiny_v1) = &files[1];
    let tiny = path_str(tiny_path);
    let tiny_v2 = b"the second version".to_vec();
    std::fs::write(tiny_path, &tiny_v2).unwrap();
    owner.json(&["put", &tiny]);
    let versions = owner.json(&["versions", &tiny]);
    assert_eq!(versions.len(), 2);
    assert_eq!(&get(&owner, &tiny, &[]).0, &tiny_v2);
    assert_eq!(&get(&owner, &tiny, &["--version", "1"]).0, tiny_v1);
    let v1_time = versions[0]["time"].as_u64().unwrap();
    // Whatever the clock did, --at gives the newest version not after that time.
    let expected = if versions[1]["time"].as_u64().unwrap() <= v1_time {
        &tiny_v2
    } else {
        tiny_v1
    };
    assert_eq!(
        &get(&owner, &tiny, &["--at", &v1_time.to_string()]).0,
        expected
    );
    assert!(
        !owner
            .run(&["get", &tiny, "--at", &(v1_time - 1).to_string()], None)
            .status
            .success(),
        "no version existed before the first"
    );

    // m = 2 nodes go away: everything still reads, rebuilt from parity.
    swarm.stop(1);
    swarm.stop(6);
    let mut decoded = 0;
    for (path, bytes) in files.iter().skip(2) {
        let (back, report) = get(&owner, &path_str(path), &[]);
        assert_eq!(&back, bytes, "{} with 2 nodes down", path.display());
        decoded += report["transfer"]["decoded_segments"].as_u64().unwrap();
    }
    assert!(
        decoded > 0,
        "with 2 of 8 nodes down some segment needs parity"
    );
    assert_eq!(&get(&owner, &tiny, &["--version", "1"]).0, tiny_v1);

    // Removing a path hides it; its versions stay readable.
    owner.json(&["rm", &tiny]);
    assert!(!owner.run(&["get", &tiny], None).status.success());
    assert_eq!(&get(&owner, &tiny, &["--version", "2"]).0, &tiny_v2);
}

#[test]
fn an_edit_in_the_middle_uploads_only_a_few_mib() {
    // A fixed owner: the cut points, and so the figures below, are the same every run.
    let (owner, _swarm) = Swarmlet::start_as(Some(OwnerSecret::from_bytes([42; 32])));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let mut bytes = random_bytes(32 << 20, 9);
    std::fs::write(&path, &bytes).unwrap();
    let first = owner.json(&["put", &path_str(&path)]).remove(0);
    let first_upload = first["shard_bytes"].as_u64().unwrap();
    let segments = first["segments_uploaded"].as_u64().unwrap();
    assert!(
        first_upload >= 48 << 20,
        "4+2 coding stores 1.5x: {first_upload}"
    );
    let middle = bytes.len() / 2;
    bytes[middle..middle + (1 << 20)].copy_from_slice(&random_bytes(1 << 20, 10));
    std::fs::write(&path, &bytes).unwrap();
    let second = owner.json(&["put", &path_str(&path)]).remove(0);
    let upload = second["shard_bytes"].as_u64().unwrap();
    // The changed MiB and the chunks around it (chunks are at most 4 MiB), times 1.5.
    assert!(
        upload <= 12 << 20,
        "re-putting after a 1 MiB edit uploaded {upload} bytes of shards"
    );
    let reused = second["chunks_reused"].as_u64().unwrap();
    // The first put's segments also hold the tree nodes on the path to the
    // file (one small pack per level) and the history.
    assert!(
        reused + 4 + 8 >= segments,
        "{reused} chunks of {segments} segments reused"
    );
    eprintln!(
        "1 MiB edit: {upload} bytes of shards re-uploaded, {reused} of {segments} segments reused"
    );
    assert_eq!(get(&owner, &path_str(&path), &[]).0, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_no_plaintext_no_names_and_fewer_than_k_shards_and_the_phrase_recovers_all() {
    let (owner, swarm) = Swarmlet::start();
    let dir = tempfile::tempdir().unwrap();
    let name = "secret-plans-NAMECANARY.txt";
    let path = dir.path().join(name);
    // Random data with the canary every 64 KiB: several distinct segments.
    let mut canary = random_bytes(6 << 20, 11);
    for at in (0..canary.len() - 64).step_by(64 << 10) {
        canary[at..at + 19].copy_from_slice(b"CAIRN-CANARY-7f3a9c");
    }
    std::fs::write(&path, &canary).unwrap();
    // Small files go into packs with others: each holds the canary too,
    // and so do their names.
    let small = dir.path().join("small-NAMECANARY");
    std::fs::create_dir(&small).unwrap();
    for i in 0..200 {
        let mut bytes = random_bytes(3000 + i * 37, 100 + i as u64);
        bytes[100..119].copy_from_slice(b"CAIRN-CANARY-7f3a9c");
        std::fs::write(small.join(format!("note-{i}-NAMECANARY.txt")), bytes).unwrap();
    }
    owner.json(&["put", &path_str(dir.path())]);

    // No node's directory (data disk, index, state) holds the canary or the name.
    for node in swarm.running() {
        for file in walk(node.dir()) {
            let bytes = std::fs::read(&file).unwrap();
            for needle in [&b"CAIRN-CANARY-7f3a9c"[..], b"NAMECANARY"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds {:?}",
                    file.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }

    // Every segment — file content, manifest, catalog — has fewer than k
    // shards on any one node, as the nodes' own disks show.
    let held: HashMap<ShardId, Vec<NodeId>> = {
        let mut held: HashMap<ShardId, Vec<NodeId>> = HashMap::new();
        for node in swarm.running() {
            for file in walk(&node.disk()) {
                if file
                    .parent()
                    .and_then(|p| p.parent())
                    .and_then(|p| p.file_name())
                    == Some("shards".as_ref())
                {
                    let id =
                        ShardId::from_hex(file.file_name().unwrap().to_str().unwrap()).unwrap();
                    held.entry(id).or_default().push(node.id);
                }
            }
        }
        held
    };
    let secret = owner.secret();
    let nodes = swarm
        .running()
        .map(|d| cairn_proto::NodeAddr {
            node: d.id,
            addr: d.addr.to_string(),
            site: None,
        })
        .collect();
    let client = Swarm::new(
        secret.keys(),
        secret.client_key(),
        nodes,
        Coding::default(),
        Duration::from_secs(20),
        None,
    )
    .unwrap();
    let (_, pointer) = client.latest_root().await.unwrap().unwrap();
    // Every segment the snapshot uses: the history, every tree node's
    // storage and pack table, and every file's content.
    let cache_dir = tempfile::tempdir().unwrap();
    let trees = TreeCache::new(cache_dir.path().to_owned(), secret.keys().convergence);
    let (_, bytes) = client
        .read_pieces(&pointer.history.pieces, Vec::new(), &|_| {})
        .await
        .unwrap();
    let history: History = tree::decode(&bytes, "the history").unwrap();
    let mut used: HashMap<[u8; 32], SegmentRef> = HashMap::new();
    for piece in &pointer.history.pieces {
        used.insert(piece.segment().key, piece.segment().clone());
    }
    let mut stack: Vec<StoredRef> = history.snapshots.iter().map(|s| s.root.clone()).collect();
    let mut packed_files = 0;
    while let Some(stored) = stack.pop() {
        for piece in &stored.pieces {
            used.insert(piece.segment().key, piece.segment().clone());
        }
        let node = trees
            .node(&client, &stored.id, &stored.pieces)
            .await
            .unwrap();
        for pack in &node.packs {
            used.insert(pack.key, pack.clone());
        }
        for entry in &node.entries {
            match &entry.kind {
                EntryKind::File { content, .. } => {
                    for piece in node.locate_all(content).unwrap() {
                        packed_files += usize::from(matches!(piece, tree::Located::Packed { .. }));
                        used.insert(piece.segment().key, piece.segment().clone());
                    }
                }
                EntryKind::Dir { id, node: pieces } => stack.push(StoredRef {
                    id: *id,
                    pieces: node.locate_all(pieces).unwrap(),
                }),
                EntryKind::Symlink { .. } => {}
            }
        }
    }
    assert!(
        packed_files >= 200,
        "the small files are packed: {packed_files}"
    );
    let mut segments = 0;
    for segment in used.values() {
        let mut per_node: HashMap<NodeId, usize> = HashMap::new();
        for shard in &segment.shards {
            let holders = held.get(&shard.id).cloned().unwrap_or_default();
            assert!(
                holders.contains(&shard.holder),
                "shard {} not where the tree says",
                shard.id
            );
            for holder in holders {
                *per_node.entry(holder).or_default() += 1;
            }
        }
        assert!(
            per_node.values().all(|&n| n < 4),
            "a node holds k shards: {per_node:?}"
        );
        segments += 1;
    }
    assert!(segments >= 5, "the canary file spans several segments");
    client.close().await;

    // A fresh machine: the phrase and one node bring everything back.
    let phrase = {
        let secret = owner.secret();
        secret.phrase()
    };
    let fresh = Owner::new();
    let first = swarm.running().next().unwrap();
    let spec = format!("{}@{}", first.id.to_human(), first.addr);
    let recovered = fresh.json_in(&["recover", "--node", &spec], Some(&phrase));
    assert_eq!(recovered[0]["snapshots"], 1);
    assert_eq!(recovered[0]["nodes"], NODES);
    assert_eq!(get(&fresh, &path_str(&path), &[]).0, canary);
    let note = small.join("note-7-NAMECANARY.txt");
    assert_eq!(
        get(&fresh, &path_str(&note), &[]).0,
        std::fs::read(&note).unwrap()
    );
    assert!(
        !Owner::new()
            .run(&["recover", "--node", &spec], Some("not the phrase"))
            .status
            .success()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

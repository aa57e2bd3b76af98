//! A household's home directory against a real local swarm (6 `cairnd` on
//! loopback, one the owner's steward), driven through the `cairn` binary: a
//! generated tree of files of mixed sizes, with symbolic links (one to a
//! directory, a dangling one, a loop), empty directories, an unreadable
//! file and excluded files, is put, changed a little, put again, and
//! restored from each snapshot into empty directories, compared bit-exact
//! with modes and mtimes. A put with nothing changed reads no file and
//! makes no snapshot. Forget + prune gives the nodes' space back (as their
//! own counts show) and the kept snapshot still restores. A put killed
//! with SIGKILL and run again sends only what was missing. Recovery on a
//! fresh client directory restores the latest tree. A running `cairnd`
//! collects shards whose lease ran out.
//!
//! Files are read by an unprivileged user when the tests run as root, so
//! that a file with mode 000 is really unreadable.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_net::Peer;
use cairn_net::identity::Identity;
use cairn_proto::ids::{NodeId, ShardId};
use cairn_proto::signed;
use common::daemon::Daemon;
use common::owner::{CAIRN, Owner};
use common::random_bytes;

const NODES: usize = 6;
/// The user the owner's tool runs as when the tests run as root.
const NOBODY: u32 = 65534;

/// Files in the generated tree (`CAIRN_TEST_FILES` to change).
fn file_count() -> usize {
    std::env::var("CAIRN_TEST_FILES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(600)
}

fn root() -> bool {
    let probe = tempfile::tempfile().unwrap();
    probe.metadata().unwrap().uid() == 0
}

/// Gives `path` (recursively) to the unprivileged user, when running as root.
fn give(path: &Path) {
    if !root() {
        return;
    }
    let status = Command::new("chown")
        .args(["-R", "-h", &format!("{NOBODY}:{NOBODY}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A directory the unprivileged user may use.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    give(dir.path());
    dir
}

/// The owner's tool, run as the unprivileged user when we are root.
fn owner() -> Owner {
    if root() {
        Owner::running_as(NOBODY)
    } else {
        Owner::new()
    }
}

/// The one JSON line `cairn ARGS` prints.
fn one(cli: &Owner, args: &[&str]) -> serde_json::Value {
    cli.json(args).remove(0)
}

/// An owner with `NODES` nodes in its own swarm, node 0 its steward.
struct Household {
    cli: Owner,
    nodes: Vec<Daemon>,
}

impl Household {
    fn start() -> Self {
        let cli = owner();
        let init = one(&cli, &["init"]);
        let client = NodeId::from_human(init["client_key"].as_str().unwrap()).unwrap();
        cli.json(&["swarm", "create"]);
        let nodes: Vec<Daemon> = (0..NODES).map(|_| Daemon::start(&[client])).collect();
        for (i, node) in nodes.iter().enumerate() {
            let id = node.id.to_human();
            let site = format!("house-{}", i % 3);
            let mut args = vec!["add-node", &id, "--site", &site];
            let addr = node.addr.to_string();
            args.insert(2, &addr);
            if i == 0 {
                args.push("--steward");
            }
            cli.json(&args);
            let invite = one(&cli, &["swarm", "invite", &id]);
            let ticket = invite["ticket"].as_str().unwrap();
            cli.json(&["join", &id, "--invite", ticket]);
        }
        Self { cli, nodes }
    }

    /// Shard bytes the nodes hold, by their own counts.
    fn used(&self) -> u64 {
        self.cli
            .json(&["nodes"])
            .iter()
            .map(|n| n["used"].as_u64().unwrap())
            .sum()
    }
}

/// Numbers below `n` that depend only on the seed and how many came before.
struct Draws {
    seed: u64,
    drawn: u64,
}

impl Draws {
    fn below(&mut self, n: u64) -> u64 {
        self.drawn += 1;
        let bytes = random_bytes(8, self.seed.wrapping_mul(1 << 32) ^ self.drawn);
        u64::from_le_bytes(bytes.try_into().unwrap()) % n
    }
}

/// Writes a household tree under `root`: `files` files in nested
/// directories (mostly small, some of a few hundred KiB, a few of MiBs),
/// plus links, empty directories, excluded files and an unreadable file.
fn generate(root: &Path, files: usize, seed: u64) {
    let mut rng = Draws { seed, drawn: 0 };
    let dirs = [
        "docs",
        "docs/letters",
        "docs/taxes/2024",
        "docs/taxes/2025",
        "photos/2023",
        "photos/2024/summer",
        "projects/garden/notes",
        "projects/cairn/src/deep/er",
        "music",
        "old-project",
    ];
    for dir in dirs {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for i in 0..files {
        let dir = dirs[rng.below(dirs.len() as u64) as usize];
        let size = match rng.below(100) {
            0..85 => 1 + rng.below(48 << 10),
            85..99 => (64 << 10) + rng.below(320 << 10),
            _ => (1 << 20) + rng.below(2 << 20),
        } as usize;
        let path = root.join(dir).join(format!("file-{i:05}.dat"));
        std::fs::write(&path, random_bytes(size, seed ^ i as u64)).unwrap();
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(if i % 7 == 0 { 0o600 } else { 0o644 }),
        )
        .unwrap();
    }
    // A large file of its own in the directory that goes away later.
    std::fs::write(
        root.join("old-project/video.bin"),
        random_bytes(3 << 20, seed ^ 77),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("empty/and-empty-inside")).unwrap();
    std::os::unix::fs::symlink("docs", root.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    std::fs::write(root.join("scratch.tmp"), b"excluded by pattern").unwrap();
    std::fs::create_dir_all(root.join("cache/big")).unwrap();
    std::fs::write(root.join("cache/big/blob"), b"excluded by the ignore file").unwrap();
    std::fs::write(root.join("secret.bin"), b"nobody may read this").unwrap();
    std::fs::set_permissions(
        root.join("secret.bin"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
}

/// What a tree holds, as a restore must bring it back.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    File {
        hash: [u8; 32],
        mode: u32,
        mtime_ns: i64,
    },
    Dir {
        mode: u32,
        mtime_ns: i64,
    },
    Link {
        target: PathBuf,
    },
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

/// The tree at `root` (relative paths), leaving out `skip` names.
fn state(root: &Path, skip: &[&str]) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if skip
                .iter()
                .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let item = if meta.file_type().is_symlink() {
                Item::Link {
                    target: std::fs::read_link(&path).unwrap(),
                }
            } else if meta.is_dir() {
                stack.push(path.clone());
                Item::Dir {
                    mode: meta.mode() & 0o7777,
                    mtime_ns: mtime_ns(&meta),
                }
            } else {
                Item::File {
                    hash: *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes(),
                    mode: meta.mode() & 0o7777,
                    mtime_ns: mtime_ns(&meta),
                }
            };
            out.insert(rel, item);
        }
    }
    out
}

fn assert_same(expected: &BTreeMap<String, Item>, restored: &BTreeMap<String, Item>, what: &str) {
    for (path, item) in expected {
        assert_eq!(restored.get(path), Some(item), "{what}: {path}");
    }
    for path in restored.keys() {
        assert!(
            expected.contains_key(path),
            "{what}: {path} should not be there"
        );
    }
}

/// Names left out of every snapshot of the generated tree.
const NOT_STORED: [&str; 3] = ["scratch.tmp", "cache", "secret.bin"];

fn restore(cli: &Owner, path: &str, extra: &[&str]) -> (tempfile::TempDir, serde_json::Value) {
    let target = open_dir();
    let target_str = target.path().to_str().unwrap().to_owned();
    let mut args = vec!["restore", path, "--target", &target_str];
    args.extend_from_slice(extra);
    let report = one(cli, &args);
    (target, report)
}

#[test]
fn a_home_directory_is_put_changed_restored_forgotten_pruned_and_recovered() {
    let house = Household::start();
    let cli = &house.cli;
    let data = open_dir();
    let home = data.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let files = file_count();
    generate(&home, files, 1);
    let ignore = data.path().join("ignore");
    std::fs::write(&ignore, "# caches are not worth keeping\ncache\n").unwrap();
    give(data.path());
    // Unreadable for the (unprivileged) tool.
    std::fs::set_permissions(
        home.join("secret.bin"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let home_str = home.to_str().unwrap();
    let ignore_str = ignore.to_str().unwrap();
    let put = |extra: &[&str], status: i32| {
        let mut args = vec![
            "put",
            home_str,
            "--exclude",
            "*.tmp",
            "--exclude-file",
            ignore_str,
        ];
        args.extend_from_slice(extra);
        cli.json_status(&args, None, status).remove(0)
    };

    // First put: everything readable is new; the unreadable file is warned
    // about and the exit status says the put was partial.
    let first = put(&[], 3);
    let stored_files = files as u64 + 1;
    assert_eq!(first["files_new"], stored_files, "{first}");
    assert_eq!(first["partial"], true);
    let warnings = first["warnings"].to_string();
    assert!(warnings.contains("secret.bin"), "{warnings}");
    let state1 = state(&home, &NOT_STORED);
    let used1 = house.used();
    let source_bytes: u64 = walk_files(&home, &NOT_STORED)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    eprintln!("first put: {first}; nodes hold {used1} bytes for {source_bytes} source bytes");
    // 4+2 coding stores 1.5x; packing keeps small files from costing more.
    assert!(
        used1 < source_bytes * 17 / 10,
        "expansion: {used1} for {source_bytes}"
    );

    // A few changes: three files rewritten, one appended to, one only
    // chmod'ed, two new, a directory removed, an empty directory added.
    let listed = walk_files(&home.join("docs"), &[]);
    for (i, path) in listed.iter().take(3).enumerate() {
        std::fs::write(path, random_bytes(5000 + i, 900 + i as u64)).unwrap();
    }
    let mut appended = std::fs::read(&listed[3]).unwrap();
    appended.extend_from_slice(b"one more line");
    std::fs::write(&listed[3], &appended).unwrap();
    std::fs::set_permissions(&listed[4], std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(home.join("music/new-1.dat"), random_bytes(10_000, 5)).unwrap();
    std::fs::write(home.join("photos/new-2.dat"), random_bytes(2 << 20, 6)).unwrap();
    std::fs::remove_dir_all(home.join("old-project")).unwrap();
    std::fs::create_dir(home.join("new-empty")).unwrap();
    // (Made by this process, readable by all: a chown would change every
    // file's ctime, and a changed ctime means read again.)
    let second = put(&[], 3);
    assert_eq!(second["files_new"], 2, "{second}");
    assert_eq!(second["files_changed"], 5, "{second}");
    // Only the changes (and the tree nodes on their paths) went out.
    assert!(
        second["shard_bytes"].as_u64().unwrap() < 6 << 20,
        "{second}"
    );
    let state2 = state(&home, &NOT_STORED);

    // Nothing changed: no file is read, no snapshot is made.
    let third = put(&[], 3);
    assert_eq!(third["snapshot"], serde_json::Value::Null, "{third}");
    assert_eq!(third["bytes_read"], 0, "{third}");
    assert_eq!(third["segments_uploaded"], 0, "{third}");

    // Each snapshot restores into an empty directory, bit-exact, with
    // modes, mtimes, links and empty directories.
    let snapshots = cli.json(&["snapshots"]);
    assert_eq!(snapshots.len(), 2);
    for (snapshot, expected) in snapshots.iter().zip([&state1, &state2]) {
        let id = snapshot["id"].as_str().unwrap();
        let (target, report) = restore(cli, home_str, &["--snapshot", id]);
        eprintln!("restore {id}: {report}");
        assert_same(expected, &state(&target.path().join("home"), &[]), id);
    }
    // One file, and a time before the second snapshot.
    let one = listed[3].to_str().unwrap();
    let (target, _) = restore(cli, one, &[]);
    assert_eq!(
        std::fs::read(target.path().join(listed[3].file_name().unwrap())).unwrap(),
        appended
    );
    let before_second = snapshots[1]["time"].as_u64().unwrap() - 1;
    if snapshots[0]["time"].as_u64().unwrap() <= before_second {
        let (target, _) = restore(cli, home_str, &["--at", &before_second.to_string()]);
        assert_same(&state1, &state(&target.path().join("home"), &[]), "--at");
    }

    // Forget the first snapshot and prune: what only it used (the removed
    // directory, the old versions) is deleted at the nodes.
    let used_before = house.used();
    let forget = cli.json(&["forget", "--keep-last", "1", "--prune"]);
    let pruned = &forget[1];
    eprintln!("forget: {}; prune: {pruned}", forget[0]);
    assert_eq!(forget[0]["forgotten"].as_array().unwrap().len(), 1);
    assert_eq!(pruned["shards_left_to_expire"], 0, "{pruned}");
    let freed = pruned["shard_bytes_freed"].as_u64().unwrap();
    // At least the removed 3 MiB video, as 1.5x in shards.
    assert!(freed >= (3 << 20) * 3 / 2, "{pruned}");
    let used_after = house.used();
    // The nodes' own counts agree with the prune (less the two small
    // histories that forget and prune committed).
    let given_back = used_before - used_after;
    assert!(
        given_back <= freed && given_back + (64 << 10) >= freed,
        "the nodes gave back {given_back}, the prune says {freed}"
    );
    // The kept snapshot is whole.
    let (target, _) = restore(cli, home_str, &[]);
    assert_same(
        &state2,
        &state(&target.path().join("home"), &[]),
        "after prune",
    );
    // A second prune has only the history the first one replaced to delete.
    let again = cli.json(&["prune"]).remove(0);
    assert_eq!(again["snapshots_pruned"], 0, "{again}");
    assert_eq!(again["segments_deleted"], 1, "{again}");

    // A fresh machine: the phrase and one node bring the latest tree back.
    let phrase = cli.secret().phrase();
    let fresh = owner();
    let first_node = &house.nodes[0];
    let spec = format!("{}@{}", first_node.id.to_human(), first_node.addr);
    let recovered = fresh.json_status(&["recover", "--node", &spec], Some(&phrase), 0);
    assert_eq!(recovered[0]["snapshots"], 1);
    let (target, _) = restore(&fresh, home_str, &[]);
    assert_same(
        &state2,
        &state(&target.path().join("home"), &[]),
        "recovered",
    );
}

fn walk_files(root: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = state(root, skip)
        .into_iter()
        .filter(|(_, item)| matches!(item, Item::File { .. }))
        .map(|(rel, _)| root.join(rel))
        .collect();
    out.sort();
    out
}

#[test]
fn a_put_killed_half_way_sends_only_what_was_missing_when_run_again() {
    let house = Household::start();
    let cli = &house.cli;
    let data = open_dir();
    let tree = data.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..40u64 {
        std::fs::write(
            tree.join(format!("part-{i:02}")),
            random_bytes(1 << 20, 40 + i),
        )
        .unwrap();
    }
    give(data.path());
    let tree_str = tree.to_str().unwrap();

    // Killed once the journal shows some uploads done.
    let mut command = Command::new(CAIRN);
    command
        .args(["--json", "put", tree_str])
        .env("CAIRN_HOME", cli.home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if root() {
        command.uid(NOBODY).gid(NOBODY);
    }
    let mut child = command.spawn().unwrap();
    let journal = cli.home.path().join("put.journal");
    let deadline = Instant::now() + Duration::from_secs(60);
    // About a third of the segments (a record is ~400 bytes).
    while std::fs::metadata(&journal).map_or(0, |m| m.len()) < 8000 {
        assert!(
            Instant::now() < deadline,
            "the put journalled nothing within 60 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the put ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let used_killed = house.used();
    assert!(used_killed > 0);
    assert!(
        cli.json(&["snapshots"]).is_empty(),
        "a killed put commits nothing"
    );

    let rerun = one(cli, &["put", tree_str]);
    let used_done = house.used();
    let sent = rerun["shard_bytes"].as_u64().unwrap();
    eprintln!(
        "killed with {used_killed} bytes on the nodes; the rerun sent {sent}, the nodes hold {used_done}"
    );
    assert!(rerun["chunks_reused"].as_u64().unwrap() > 0, "{rerun}");
    // The rerun sent what the nodes did not have, plus at most the
    // segments that were in flight when the put was killed (stored, but
    // not yet journalled): 8 uploads at once, each at most 1.5 x a 1-2 MiB
    // chunk here.
    let resent = sent.saturating_sub(used_done - used_killed);
    eprintln!("re-sent {resent} bytes the nodes already had");
    assert!(resent <= (8 * 3) << 20, "{rerun}");
    // A rerun that sent everything again would have sent all of it.
    assert!(sent < used_done * 80 / 100, "{rerun}");
    let (target, _) = restore(cli, tree_str, &[]);
    assert_same(
        &state(&tree, &[]),
        &state(&target.path().join("tree"), &[]),
        "after the rerun",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cairnd_collects_shards_whose_lease_ran_out() {
    let me = Identity::generate().unwrap();
    let node = Daemon::start(&[me.id]);
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = Peer::connect(&endpoint, node.addr, node.id, &me, Duration::from_secs(20))
        .await
        .unwrap();
    let owner = signed::owner_id(&ed25519_dalek::SigningKey::from_bytes(&[7; 32]));
    let now = cairn_host::unix_now();
    let short = random_bytes(10_000, 1);
    let long = random_bytes(10_000, 2);
    peer.put(ShardId::of(&short), short.clone(), owner, now + 2)
        .await
        .unwrap();
    peer.put(ShardId::of(&long), long.clone(), owner, now + 3600)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shards: u64 = peer
            .stat()
            .await
            .unwrap()
            .disks
            .iter()
            .map(|d| d.shards)
            .sum();
        if shards == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired shard was not collected within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(peer.get(ShardId::of(&short)).await.is_err());
    assert_eq!(peer.get(ShardId::of(&long)).await.unwrap(), long);
    assert!(node.log().contains("lease ran out"), "{}", node.log());
}

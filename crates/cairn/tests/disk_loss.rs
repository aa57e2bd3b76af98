//! A node loses one of its two disks: real `cairnd` processes on loopback,
//! node 0 the owner's steward. One node keeps its shards on two disks of
//! its own (two file systems mounted for it); one of them goes away while
//! it runs. The node reports the shards that went with it, and the steward
//! rebuilds exactly those — not the node's other disk's shards, and without
//! blaming the node. Needs root (it mounts the disks); skipped otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_proto::ids::NodeId;
use common::daemon::Daemon;
use common::owner::Owner;

const NODES: usize = 7;

/// File systems mounted for the test, unmounted however it ends.
struct Mounts(Vec<PathBuf>);

/// Mounts a fresh file system of its own at `at`.
fn mount(at: &Path) {
    std::fs::create_dir_all(at).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=20g", "cairn-test"])
        .arg(at)
        .status()
        .unwrap();
    assert!(status.success(), "mount {}", at.display());
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.drain(..).rev() {
            let _ = Command::new("umount").arg("-l").arg(&at).status();
        }
    }
}

fn shards_on(disk: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let dir = disk.join("cairn/shards");
    for fan in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for shard in std::fs::read_dir(fan.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push(shard.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    found
}

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
fn a_node_that_loses_one_of_two_disks_has_only_that_disk_s_shards_rebuilt() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting the test's disks needs root");
        return;
    }
    let owner = Owner::new();
    let init = owner.json(&["init"]);
    let client = NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
    owner.json(&["swarm", "create"]);
    let steward_config = "[steward]\ngrace_s = 10\ntick_s = 1\n";
    let mounted: std::cell::RefCell<Vec<PathBuf>> = std::cell::RefCell::new(Vec::new());
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let node = if i == NODES - 1 {
            // Two disks of its own, each its own file system: `disk1`, and
            // one found in its disks directory.
            let extra = format!("disks_dir = '{{dir}}/disks'\n{steward_config}");
            Daemon::start_prepared(&[client], &extra, &|dir: &Path| {
                for at in [dir.join("disk1"), dir.join("disks/second")] {
                    mount(&at);
                    mounted.borrow_mut().push(at);
                }
            })
        } else {
            Daemon::start_configured(&[client], &[], steward_config)
        };
        nodes.push(node);
    }
    let mut mounts = Mounts(mounted.into_inner());
    for (i, node) in nodes.iter().enumerate() {
        let mut args = vec![
            "add-node".to_owned(),
            node.id.to_human(),
            node.addr.to_string(),
            "--site".into(),
            format!("house-{i}"),
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

    // Enough segments that both of the node's disks hold some.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let bytes = common::random_bytes(40 << 20, 7);
    std::fs::write(&path, &bytes).unwrap();
    owner.json(&["put", path.to_str().unwrap()]);
    assert_eq!(weakest(&owner), 6, "full redundancy after the put");

    let two = &nodes[NODES - 1];
    let (kept_disk, lost_disk) = (two.dir().join("disk1"), two.dir().join("disks/second"));
    let kept = shards_on(&kept_disk);
    let lost = shards_on(&lost_disk);
    assert!(
        !kept.is_empty() && !lost.is_empty(),
        "both disks hold shards: {} and {}",
        kept.len(),
        lost.len()
    );
    let steward_log = || nodes[0].log();
    let before = steward_log().matches("steward: repaired a segment").count();

    // The second disk goes away (unplugged: its file system unmounted).
    let status = Command::new("umount")
        .arg("-l")
        .arg(&lost_disk)
        .status()
        .unwrap();
    assert!(status.success());
    mounts.0.retain(|at| *at != lost_disk);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let repaired = steward_log().matches("steward: repaired a segment").count() - before;
        if repaired >= lost.len() && weakest(&owner) == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lost disk's {} shards were not rebuilt within 120 s ({repaired} repairs); the steward said:\n{}",
            lost.len(),
            steward_log()
                .lines()
                .filter(|l| l.contains("steward"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A few more rounds: nothing else is rebuilt.
    std::thread::sleep(Duration::from_secs(5));
    let log = steward_log();
    let repaired = log.matches("steward: repaired a segment").count() - before;
    assert_eq!(
        repaired,
        lost.len(),
        "exactly the lost disk's shards were rebuilt"
    );
    assert!(
        log.contains("the holder reports"),
        "the node reported its missing shards"
    );
    assert!(
        !log.contains("audit failed"),
        "the node was not taken for a liar:\n{log}"
    );
    assert!(
        two.log().contains("shards are offline with the disk"),
        "the node said what went with the disk"
    );
    // (It may hold more now: the node is a fine home for rebuilt shards.)
    let now_kept = shards_on(&kept_disk);
    assert!(
        kept.iter().all(|shard| now_kept.contains(shard)),
        "the other disk kept its shards"
    );
    let out = dir.path().join("back");
    owner.json(&["get", path.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes, "the file reads back");
}

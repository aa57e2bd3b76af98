//! The owner's side of end-to-end tests: the `cairn` binary run against
//! its own home directory.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::daemon::Daemon;

use cairn_client::keys::OwnerSecret;

/// The owner's tool.
pub const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// An owner: a `cairn` home directory and the binary run against it.
pub struct Owner {
    /// The `CAIRN_HOME`.
    pub home: tempfile::TempDir,
    /// The user (and group) the tool runs as, when not this process's.
    pub uid: Option<u32>,
}

impl Owner {
    /// A fresh, empty home.
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
            uid: None,
        }
    }

    /// A fresh home whose tool runs as `uid` (group `uid` too): the home
    /// is made theirs. Only root may do this.
    pub fn running_as(uid: u32) -> Self {
        let owner = Self {
            uid: Some(uid),
            ..Self::new()
        };
        std::os::unix::fs::chown(owner.home.path(), Some(uid), Some(uid)).unwrap();
        owner
    }

    /// Runs `cairn ARGS` (with `stdin`), logging how long it took.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_in(None, args, stdin)
    }

    /// Runs `cairn ARGS` in the network namespace `netns` (if any): the
    /// owner's computer in one home of a lab.
    pub fn run_in(&self, netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
        let started = std::time::Instant::now();
        let out = self.run_inner(netns, args, stdin);
        eprintln!("cairn {args:?} took {:?}", started.elapsed());
        out
    }

    fn run_inner(&self, netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = match netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, CAIRN]);
                command
            }
            None => Command::new(CAIRN),
        };
        command
            .args(args)
            .env("CAIRN_HOME", self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs `cairn --json ARGS`, expects success, returns one value per line.
    pub fn json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        self.json_in(args, None)
    }

    /// Like [`Owner::json`], with standard input.
    pub fn json_in(&self, args: &[&str], stdin: Option<&str>) -> Vec<serde_json::Value> {
        self.json_status(args, stdin, 0)
    }

    /// Like [`Owner::json_in`], expecting the exit status `status`.
    pub fn json_status(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        status: i32,
    ) -> Vec<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all, stdin);
        assert_eq!(
            out.status.code(),
            Some(status),
            "cairn {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The owner secret from the home.
    pub fn secret(&self) -> OwnerSecret {
        let bytes = std::fs::read(self.home.path().join("secret")).unwrap();
        OwnerSecret::from_bytes(bytes.try_into().unwrap())
    }

    /// A box's `ownership.toml` naming this owner and its client key: the
    /// box as if this owner had claimed it.
    pub fn ownership_toml(&self) -> String {
        let secret = self.secret();
        let client = cairn_net::identity::Identity::from_private(secret.client_key()).id;
        format!(
            "[owner]\nowner = '{}'\nclient = '{}'\nsince = 0\n",
            secret.keys().owner_id().to_hex(),
            client.to_hex()
        )
    }

    /// The owner's transfer card (`OWNER:CLIENT_KEY`), as `cairn id` shows it.
    pub fn transfer_card(&self) -> String {
        let out = self.run(&["id"], None);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("transfer card: "))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }

    /// Claims the box the way its owner does: `cairn claim` (with `extra`
    /// arguments) from the owner's computer, which waits for the box's
    /// button; the box logs that a claim waits, and the simulated button is
    /// pressed once to confirm it. The press is the confirmation itself,
    /// not a guess at how long anything takes.
    pub fn claim_at_the_box(&self, daemon: &Daemon, extra: &[&str]) -> Output {
        let (id, addr) = (daemon.id.to_human(), daemon.addr.to_string());
        let mut args = vec!["claim", id.as_str(), addr.as_str()];
        args.extend_from_slice(extra);
        let waits = || daemon.log().matches("waits for a short press").count();
        let waits_before = waits();
        std::thread::scope(|scope| {
            let claim = scope.spawn(|| self.run(&args, None));
            let deadline = Instant::now() + Duration::from_secs(10);
            while waits() == waits_before {
                if claim.is_finished() || Instant::now() > deadline {
                    return claim.join().unwrap();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::write(daemon.board().join("button"), "1").unwrap();
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(daemon.board().join("button"), "0").unwrap();
            claim.join().unwrap()
        })
    }
}

/// The standard output of a command that must have succeeded (else its
/// standard error is the failure).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

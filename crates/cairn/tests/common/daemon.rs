//! Real `cairnd` processes for the tests that need them.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::ids::NodeId;

/// The daemon binary.
pub const CAIRND: &str = env!("CARGO_BIN_EXE_cairnd");

/// A running `cairnd` with its own directory (removed when dropped).
pub struct Daemon {
    child: Child,
    /// Its node id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    notify: UnixDatagram,
    watchdog: bool,
    /// How it was started, to start it again: its network namespace and
    /// extra environment.
    netns: Option<String>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon that allows `allow`, and waits for its READY=1.
    pub fn start(allow: &[NodeId]) -> Self {
        Self::start_with(allow, &[])
    }

    /// Like [`Self::start`], with extra environment (systemd's variables).
    pub fn start_with(allow: &[NodeId], env: &[(&str, &str)]) -> Self {
        Self::start_configured(allow, env, "")
    }

    /// Like [`Self::start`], with a simulated board: value files in
    /// [`Daemon::board`] stand in for the LED and the button.
    pub fn start_with_board(allow: &[NodeId]) -> Self {
        Self::start_configured(
            allow,
            &[],
            "[board]\nprofile = 'simulated'\nsimulated_dir = '{dir}/board'\npairing_minutes = 1\n",
        )
    }

    /// Starts a daemon with `extra` appended to its configuration (`{dir}`
    /// is its directory). Every test daemon collects expired leases each
    /// second, so that tests see expiry promptly.
    pub fn start_configured(allow: &[NodeId], env: &[(&str, &str)], extra: &str) -> Self {
        Self::start_with_files(allow, env, extra, &[])
    }

    /// Like [`Self::start_configured`], with files written (relative to its
    /// directory) before it starts: say, `state/ownership.toml`.
    pub fn start_with_files(
        allow: &[NodeId],
        env: &[(&str, &str)],
        extra: &str,
        files: &[(&str, String)],
    ) -> Self {
        Self::start_on(IpAddr::from([127, 0, 0, 1]), allow, env, extra, files)
    }

    /// Like [`Self::start_with_files`], listening on `ip` (a free port).
    pub fn start_on(
        ip: IpAddr,
        allow: &[NodeId],
        env: &[(&str, &str)],
        extra: &str,
        files: &[(&str, String)],
    ) -> Self {
        Self::launch(None, ip, allow, env, extra, files, &|_| {})
    }

    /// Starts a daemon in the network namespace `netns`, listening on
    /// `ip` at the default port (each namespace has its own ports).
    pub fn start_in(netns: &str, ip: IpAddr, allow: &[NodeId], extra: &str) -> Self {
        Self::launch(Some(netns), ip, allow, &[], extra, &[], &|_| {})
    }

    /// Like [`Self::start_configured`], with `prepare` run on its
    /// directory before it starts (to mount its disks, say). Lines of
    /// `extra` before its first `[section]` go at the top of the file.
    pub fn start_prepared(allow: &[NodeId], extra: &str, prepare: &dyn Fn(&Path)) -> Self {
        Self::launch(
            None,
            IpAddr::from([127, 0, 0, 1]),
            allow,
            &[],
            extra,
            &[],
            prepare,
        )
    }

    fn launch(
        netns: Option<&str>,
        ip: IpAddr,
        allow: &[NodeId],
        env: &[(&str, &str)],
        extra: &str,
        files: &[(&str, String)],
        prepare: &dyn Fn(&Path),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir(dir.path().join("board")).unwrap();
        std::fs::write(dir.path().join("board/button"), "0").unwrap();
        let disk = dir.path().join("disk1");
        std::fs::create_dir(&disk).unwrap();
        prepare(dir.path());
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        let first_section = if extra.starts_with('[') {
            0
        } else {
            extra.find("\n[").map_or(extra.len(), |at| at + 1)
        };
        let (top, sections) = extra.split_at(first_section);
        // A free port: bind, note, release.
        let port = match netns {
            Some(_) => 7447,
            None => UdpSocket::bind(SocketAddr::new(ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        };
        let addr = SocketAddr::new(ip, port);
        // In a namespace of its own, a box listens on both families, as
        // it does by default, and tells members its IPv4 address.
        let (listen, advertise) = match netns {
            Some(_) => (
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).to_string(),
                format!("advertise = '{addr}'\n"),
            ),
            None => (addr.to_string(), String::new()),
        };
        let sections = if advertise.is_empty() {
            sections.to_owned()
        } else if sections.contains("[swarm]\n") {
            sections.replacen("[swarm]\n", &format!("[swarm]\n{advertise}"), 1)
        } else {
            format!("{sections}[swarm]\n{advertise}")
        };
        let allow: Vec<String> = allow
            .iter()
            .map(|id| format!("'{}'", id.to_human()))
            .collect();
        let config = dir.path().join("cairnd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = '{}'\nlisten = '{listen}'\ndisks = ['{}']\n{top}[store]\nreserve_mib = 0\nmax_shard_mib = 2\nlease_gc_every_s = 1\n[network]\nmax_buffered_mib = 2\nallow = [{}]\n{sections}",
                dir.path().join("state").display(),
                disk.display(),
                allow.join(", "),
            ),
        )
        .unwrap();
        let id = print_id(&config);
        let socket_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&socket_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let netns = netns.map(str::to_owned);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = Self::spawn(dir.path(), netns.as_deref(), &env);
        let daemon = Self {
            child,
            id,
            addr,
            notify,
            watchdog: env.iter().any(|(key, _)| key == "WATCHDOG_USEC"),
            netns,
            env,
            dir,
        };
        let first = daemon.next_notification();
        assert!(first.contains("READY=1"), "first notification: {first}");
        assert!(first.contains(", 0 shards"), "first notification: {first}");
        daemon
    }

    /// cairnd on the configuration in `dir`, telling `dir/notify.sock`,
    /// logging (appending) to `dir/cairnd.log`.
    fn spawn(dir: &Path, netns: Option<&str>, env: &[(String, String)]) -> Child {
        let mut command = match netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, CAIRND]);
                command
            }
            None => Command::new(CAIRND),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("cairnd.log"))
            .unwrap();
        command
            .arg("--config")
            .arg(dir.join("cairnd.toml"))
            .env("NOTIFY_SOCKET", dir.join("notify.sock"))
            .env("CAIRN_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Stops the daemon as systemd would (SIGTERM, clean exit) and starts
    /// it again on the same directory and address; waits for its READY=1.
    pub fn restart(&mut self) {
        self.terminate();
        self.child = Self::spawn(self.dir.path(), self.netns.as_deref(), &self.env);
        loop {
            let said = self.next_notification();
            if said.contains("READY=1") {
                break;
            }
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's resident memory now and at its peak, in KiB
    /// (`VmRSS`, `VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The next message the daemon sent to its NOTIFY_SOCKET.
    pub fn next_notification(&self) -> String {
        let mut buf = [0u8; 4096];
        let len = self
            .notify
            .recv(&mut buf)
            .expect("cairnd sent nothing to NOTIFY_SOCKET within 30 s");
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }

    /// SIGTERM, then STOPPING=1 and a clean exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stopping = false;
        while !stopping && Instant::now() < deadline {
            let notification = self.next_notification();
            assert!(
                self.watchdog || !notification.contains("WATCHDOG=1"),
                "watchdog ping without WATCHDOG_USEC: {notification}"
            );
            stopping = notification.contains("STOPPING=1");
        }
        assert!(stopping, "no STOPPING=1 after SIGTERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cairnd exited with {status}");
    }
}

impl Daemon {
    /// Its directory (state and data disk).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its data disk.
    pub fn disk(&self) -> PathBuf {
        self.dir.path().join("disk1")
    }

    /// Its simulated board's value files (`button`, `led`).
    pub fn board(&self) -> PathBuf {
        self.dir.path().join("board")
    }

    /// Panics, with the end of its log, if the daemon has exited: a test
    /// waiting for it to answer then fails at once and says why.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "cairnd exited ({status}); its log ends:\n{}",
                tail.join("\n")
            );
        }
    }

    /// What it logged so far (at debug level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cairnd.log")).unwrap_or_default()
    }

    /// Its configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("cairnd.toml")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id `cairnd --print-id` gives for a config.
pub fn print_id(config: &Path) -> NodeId {
    let out = Command::new(CAIRND)
        .arg("--config")
        .arg(config)
        .arg("--print-id")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    NodeId::from_human(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

/// A node's own swarm certificate, as it keeps it in `swarm.toml`.
pub fn cert_of(daemon: &Daemon) -> cairn_proto::membership::MemberCert {
    let text = std::fs::read_to_string(daemon.dir().join("state/swarm.toml")).unwrap();
    let ticket = text
        .lines()
        .find_map(|l| l.strip_prefix("cert = "))
        .unwrap()
        .trim_matches('"');
    cairn_proto::membership::MemberCert::from_ticket(ticket).unwrap()
}

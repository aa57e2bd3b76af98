//! `cairnd`: the Cairn node daemon. Opens the data disks, serves the wire
//! protocol over QUIC, runs the board (LED, button, sensors) and talks to
//! systemd (readiness, status, watchdog).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use cairn_board::board::Board;
use cairn_board::health::{HealthInputs, HealthMonitor, HealthPolicy};
use cairn_board::panel::{FrontPanel, PanelAction, PanelTiming};
use cairn_net::identity::Identity;
use cairn_net::tls::TransportLimits;
use cairn_node::daemon_config::{DEFAULT_PATH, DaemonConfig};
use cairn_node::discovery::LanNode;
use cairn_node::disk_watch::{self, DiskChange, DiskWatch};
use cairn_node::membership::Membership;
use cairn_node::net::discovery::{self, LanDiscovery};
use cairn_node::net::gossip::GossipService;
use cairn_node::net::server::Services;
use cairn_node::net::steward::{StewardConfig, StewardService};
use cairn_node::net::{AllowList, Server, ServerConfig};
use cairn_node::ownership::{HealthSnapshot, NodeControl};
use cairn_node::roots::RootStore;
use cairn_node::steward::StewardPolicy;
use cairn_proto::gossip::{Advert, GossipMember};
use cairn_proto::limits::Limits;
use cairn_store::fs::RealMount;
use cairn_store::{DiskState, ScrubHandle, ShardStore, StoreConfig, StoreError};

/// The Cairn storage node daemon.
#[derive(Parser, Debug)]
#[command(name = "cairnd", version, about, long_about = None)]
struct Args {
    /// Configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Print this node's id (creating its key on first use) and exit.
    #[arg(long)]
    print_id: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a Cairn disk from another box this node's (its shards stay for
    /// their owners), then exit. Run it with cairnd stopped.
    AdoptDisk {
        /// The disk's mountpoint.
        path: PathBuf,
    },
}

/// Why `serve` returned.
enum Outcome {
    /// SIGTERM or SIGINT: exit.
    Stopped,
    /// The button confirmed a factory reset: reset, then start afresh.
    FactoryReset,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging();
    let result = (|| {
        if let Some(Command::AdoptDisk { path }) = &args.command {
            return adopt_disk(&args, path);
        }
        // A factory reset restarts the node in this process, with its new key.
        while let Outcome::FactoryReset = run(&args)? {}
        Ok(())
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // To the journal under systemd, to stderr by hand (see init_logging).
            error!("{}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn adopt_disk(args: &Args, path: &std::path::Path) -> anyhow::Result<()> {
    let config = DaemonConfig::load(&args.config)?;
    let identity = Identity::load_or_create(&config.state_dir)?;
    let store_config = StoreConfig::new(identity.id, &config.state_dir, config.disks.clone());
    let disk = ShardStore::adopt_disk(&store_config, &RealMount::new(path))?;
    let in_disks_dir = config
        .disks_dir
        .as_deref()
        .is_some_and(|dir| path.parent() == Some(dir));
    if !in_disks_dir && !config.disks.iter().any(|d| d == path) {
        warn!(
            "{} is neither in `disks` nor mounted in `disks_dir` of {}; add it there, or cairnd will not use it",
            path.display(),
            args.config.display()
        );
    }
    println!(
        "adopted disk {disk} at {} for node {}",
        path.display(),
        identity.id.to_human()
    );
    Ok(())
}

/// The error and its causes, each cause once: the library's errors already
/// name their cause in their own message (with advice after it).
fn describe(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // systemd sets JOURNAL_STREAM for services whose output goes to the journal.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald.with_syslog_identifier("cairnd".into()))
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn run(args: &Args) -> anyhow::Result<Outcome> {
    let mut config = DaemonConfig::load(&args.config)?;
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            config.state_dir.display()
        )
    })?;
    let control = Arc::new(NodeControl::open(&config.state_dir)?);
    if Identity::pending_reset(&config.state_dir)?.is_some() {
        warn!("a factory reset was interrupted; finishing it");
        factory_reset(&config, &control)?;
    }
    let identity = Identity::load_or_create(&config.state_dir)?;
    if args.print_id {
        println!("{}", identity.id.to_human());
        return Ok(Outcome::Stopped);
    }
    advertise_lan_address(&mut config);
    info!(node = %identity.id.to_human(), "starting {}", cairn_net::software());
    let node_name = identity.id.to_human();

    let mut store_config = StoreConfig::new(identity.id, &config.state_dir, disks_now(&config));
    store_config.reserve_bytes = config.store.reserve_mib << 20;
    store_config.quota_bytes = config.store.quota_gib.map(|gib| gib << 30);
    store_config.max_shard_bytes = config.store.max_shard_mib << 20;
    let store = Arc::new(ShardStore::open(store_config)?);
    // The same words as the disk watch's: a disk mounted just before start
    // and one mounted just after read alike in the journal.
    for disk in store.disk_stats() {
        match disk.state {
            DiskState::Online => info!(
                path = %disk.path.display(),
                "data disk taken into service: {} shards, {} MiB free",
                disk.shards,
                disk.free >> 20
            ),
            ref state => warn!(path = %disk.path.display(), "data disk not in service: {state}"),
        }
    }
    let scrubber = store.spawn_scrubber(config.store.scrub_mib_per_s << 20, 4 << 20);

    let allow = if config.network.allow_any {
        AllowList::Any
    } else {
        AllowList::Only(
            config
                .allowed_keys()
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .collect::<HashSet<_>>(),
        )
    };
    let server_config = ServerConfig {
        identity,
        limits: Limits {
            max_shard: config.store.max_shard_mib << 20,
            max_get_range: config.store.max_shard_mib << 20,
            burst: config.network.request_burst,
            per_second: config.network.requests_per_second,
        },
        transport: TransportLimits {
            max_streams_per_peer: config.network.max_streams_per_peer,
            idle_timeout: Duration::from_secs(config.network.idle_timeout_s),
        },
        allow,
        handshake_timeout: Duration::from_secs(10),
        request_timeout: config.request_timeout(),
        drain_timeout: Duration::from_secs(config.network.drain_timeout_s),
        body_budget: config.network.max_buffered_mib << 20,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairnd")
        .build()
        .context("cannot start the async runtime")?;
    let (reset_tx, reset_rx) = tokio::sync::mpsc::channel(1);
    let serving = Arc::new(AtomicBool::new(false));
    let board = BoardLoop {
        board: Board::open(&config.board.to_board_config().map_err(anyhow::Error::msg)?),
        timing: PanelTiming {
            pairing: config.board.pairing_window(),
            ..PanelTiming::default()
        },
        node_name,
        control: Arc::clone(&control),
        store: Arc::clone(&store),
        scrubber,
        serving: Arc::clone(&serving),
        reset: reset_tx,
    }
    .spawn();
    if let Some(dir) = &config.disks_dir {
        runtime.spawn(watch_disks(dir.clone(), Arc::clone(&store)));
    }
    let result = runtime.block_on(serve(
        config.clone(),
        server_config,
        Arc::clone(&store),
        control.clone(),
        serving,
        reset_rx,
    ));
    board.stop();
    store.flush().context("flushing the store at exit")?;
    drop(store);
    drop(runtime);
    let outcome = result?;
    if let Outcome::FactoryReset = outcome {
        factory_reset(&config, &control)?;
    } else {
        info!("stopped");
    }
    Ok(outcome)
}

/// A box told only to listen on every address advertises its LAN address,
/// so that it gossips with its swarm without anyone writing its address down
/// (the appliance's configuration). Chosen once at start: cairnd.service
/// starts after the network is online.
fn advertise_lan_address(config: &mut DaemonConfig) {
    if config.swarm.advertise.is_some() || !config.listen.ip().is_unspecified() {
        return;
    }
    let addresses: Vec<std::net::IpAddr> = match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(|i| i.ip()).collect(),
        Err(e) => {
            warn!("cannot list the network interfaces to find this box's LAN address: {e}");
            return;
        }
    };
    match cairn_node::discovery::lan_address(&addresses, config.listen.is_ipv4()) {
        Some(ip) => {
            let addr = std::net::SocketAddr::new(ip, config.listen.port()).to_string();
            info!(
                "advertising {addr} to the swarm, this box's LAN address ([swarm] advertise sets another)"
            );
            config.swarm.advertise = Some(addr);
        }
        None => warn!(
            "no LAN address found to advertise (is the network cable in?); set [swarm] advertise"
        ),
    }
}

/// The data disks there are now: those named in `disks`, and the file
/// systems mounted in `disks_dir` (whose devices are still there).
fn disks_now(config: &DaemonConfig) -> Vec<PathBuf> {
    let mut disks = config.disks.clone();
    if let Some(dir) = &config.disks_dir {
        match disk_watch::scan(dir) {
            Ok(mounted) => {
                for (path, device) in mounted {
                    if !disks.contains(&path) && disk_watch::block_device_present(device) {
                        disks.push(path);
                    }
                }
            }
            Err(e) => warn!(dir = %dir.display(), "cannot look for data disks in disks_dir: {e}"),
        }
    }
    disks
}

/// How often `disks_dir` is looked at: a disk plugged in is serving, and one
/// pulled out is out of service, within this.
const DISK_WATCH_PERIOD: Duration = Duration::from_secs(3);

/// Takes disks mounted in `dir` into service and out of it as they come and go.
async fn watch_disks(dir: PathBuf, store: Arc<ShardStore>) {
    struct Watching {
        watch: DiskWatch,
        retry: Vec<PathBuf>,
        told: std::collections::HashMap<PathBuf, String>,
    }
    impl Watching {
        /// Remembers what was said about `path`; true when it differs from last time,
        /// so a disk that stays refused is not logged every few seconds.
        fn is_news(&mut self, path: &std::path::Path, said: &str) -> bool {
            self.told
                .insert(path.to_owned(), said.to_owned())
                .as_deref()
                != Some(said)
        }
    }
    let state = Arc::new(std::sync::Mutex::new(Watching {
        watch: DiskWatch::new(),
        retry: Vec::new(),
        told: Default::default(),
    }));
    let mut ticker = tokio::time::interval(DISK_WATCH_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (dir, store, state) = (dir.clone(), Arc::clone(&store), Arc::clone(&state));
        let step = tokio::task::spawn_blocking(move || {
            let mut state = cairn_host::lock(&state);
            let mounted = match disk_watch::scan(&dir) {
                Ok(mounted) => mounted,
                Err(e) => {
                    let said = format!("cannot look for data disks: {e}");
                    if state.is_news(&dir, &said) {
                        warn!(dir = %dir.display(), "{said}");
                    }
                    return;
                }
            };
            let retry = std::mem::take(&mut state.retry);
            for change in state
                .watch
                .step(&mounted, disk_watch::block_device_present, &retry)
            {
                match change {
                    DiskChange::Attach(path) => {
                        match store.attach(Box::new(RealMount::new(&path))) {
                            Ok(None) => {}
                            Ok(Some(DiskState::Online)) => {
                                state.is_news(&path, "online");
                                info!(path = %path.display(), "data disk taken into service");
                            }
                            Ok(Some(not_serving)) => {
                                let said = not_serving.to_string();
                                if state.is_news(&path, &said) {
                                    warn!(path = %path.display(), "data disk not in service: {said}");
                                }
                                state.retry.push(path);
                            }
                            Err(e) => {
                                warn!(path = %path.display(), "cannot take the data disk into service: {e}");
                                state.retry.push(path);
                            }
                        }
                    }
                    DiskChange::Detach { path, reason } => {
                        state.told.remove(&path);
                        if store.detach(&path, &reason) {
                            warn!(path = %path.display(), "data disk out of service: {reason}");
                        }
                    }
                }
            }
        });
        if step.await.is_err() {
            error!(
                "the data disk watch failed; disks mounted from now on need a restart of cairnd"
            );
            return;
        }
    }
}

/// Resets identity and ownership: a new node key, the data disks re-marked
/// for it (their shards stay for their owners, until drained or expired),
/// and no owner. Crash-safe: the new key waits beside the old one until
/// every disk carries it, and an interrupted reset is finished at start.
fn factory_reset(config: &DaemonConfig, control: &NodeControl) -> anyhow::Result<()> {
    let old = Identity::load_or_create(&config.state_dir)?;
    let new = Identity::begin_reset(&config.state_dir)?;
    control.clear()?;
    // The swarm certificate names the old key: with a new identity the box
    // must be invited again, by whoever owns it next.
    Membership::forget(&config.state_dir).with_context(|| {
        format!(
            "factory reset: leaving the swarm (removing swarm.toml in {})",
            config.state_dir.display()
        )
    })?;
    let disks = disks_now(config);
    let store_config = StoreConfig::new(new.id, &config.state_dir, disks.clone());
    let mut kept = 0;
    for path in &disks {
        match ShardStore::adopt_disk(&store_config, &RealMount::new(path)) {
            Ok(_) => kept += 1,
            // An empty or missing disk has nothing to keep; it is initialised
            // (or stays offline) at start as usual.
            Err(StoreError::Adopt { reason, .. }) => {
                info!("factory reset: {} left as it is: {reason}", path.display())
            }
            Err(e) => return Err(e).context("factory reset: re-marking a data disk"),
        }
    }
    Identity::finish_reset(&config.state_dir)?;
    warn!(
        old = %old.id.to_human(),
        new = %new.id.to_human(),
        "factory reset done: node {} is now {}; ownership and swarm membership cleared; the shards on {kept} disk(s) are kept for their owners until drained or expired",
        old.id.to_human(),
        new.id.to_human()
    );
    Ok(())
}

async fn serve(
    config: DaemonConfig,
    server_config: ServerConfig,
    store: Arc<ShardStore>,
    control: Arc<NodeControl>,
    serving: Arc<AtomicBool>,
    mut reset: tokio::sync::mpsc::Receiver<()>,
) -> anyhow::Result<Outcome> {
    let roots = Arc::new(RootStore::open(&config.state_dir)?);
    let steward = if config.steward.enabled {
        Some(Arc::new(StewardService::open(
            &config.state_dir,
            StewardConfig {
                policy: StewardPolicy {
                    grace_s: config.steward.grace_s,
                    audit_every_s: config.steward.audit_every_s,
                    ..StewardPolicy::default()
                },
                tick: Duration::from_secs(config.steward.tick_s),
                audits_per_tick: config.steward.audits_per_tick,
                request_timeout: config.request_timeout(),
            },
        )?))
    } else {
        None
    };
    let identity = server_config.identity.clone();
    let gossip_identity = identity.clone();
    let gossip_identity_id = identity.id;
    let membership = Arc::new(Membership::open(&config.state_dir, identity.id)?);
    let gossip_membership = Arc::clone(&membership);
    if let Some(swarm) = membership.swarm() {
        info!("member of swarm {}", swarm.to_hex());
    }
    let gossip = GossipService::new(
        GossipMember {
            node: identity.id.0,
            addr: config.advertised_address().unwrap_or_default(),
            // Seconds since the epoch: a restarted node's identity wins.
            bump: u32::try_from(unix_now() % u64::from(u32::MAX)).unwrap_or(0),
            advert: advert(&config, &store, &control),
        },
        Arc::clone(&membership),
    );
    let request_timeout = server_config.request_timeout;
    let server = Server::bind(
        config.listen,
        server_config,
        Services {
            store: Arc::clone(&store),
            roots,
            control: Arc::clone(&control),
            steward: steward.clone(),
            membership: Arc::clone(&membership),
            gossip: Arc::clone(&gossip),
        },
    )?;
    let addr = server.local_addr()?;
    serving.store(true, Ordering::Relaxed);
    info!(%addr, "listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = Arc::new(server);
    let steward_task = steward.map(|steward| {
        tokio::spawn(steward.run(
            server.endpoint().clone(),
            identity,
            membership,
            Arc::clone(&gossip),
            stop_rx.clone(),
        ))
    });
    let gossip_task = match config.advertised_address() {
        Some(_) => {
            if gossip_membership.swarm().is_some() {
                gossip.announce_to(gossip_membership.seeds());
            }
            let pool = Arc::new(gossip_membership.pool(
                server.endpoint().clone(),
                gossip_identity,
                request_timeout,
            ));
            Some(tokio::spawn(Arc::clone(&gossip).run(pool, stop_rx.clone())))
        }
        None => {
            warn!(
                "no gossip: `listen` is a wildcard address and [swarm] advertise is not set, so other members could not reach this node"
            );
            None
        }
    };
    let discovery_task = if config.mdns_enabled() {
        match LanDiscovery::start(&config.swarm.mdns_interfaces) {
            Ok(discovery) => {
                let me = LanNode {
                    node: gossip_identity_id,
                    addr: config
                        .advertised_address()
                        .unwrap_or_else(|| addr.to_string()),
                    swarm: None,
                    site: config.swarm.site.clone(),
                    software: cairn_net::software(),
                };
                Some(tokio::spawn(discovery::serve(
                    discovery,
                    me,
                    Arc::clone(&gossip_membership),
                    Arc::clone(&gossip),
                    stop_rx.clone(),
                )))
            }
            Err(e) => {
                warn!("{e}");
                None
            }
        }
    } else {
        None
    };
    let serving_task = tokio::spawn({
        let server = Arc::clone(&server);
        async move { server.run(stop_rx).await }
    });
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(&store, &server, &control)),
    ]);

    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let watchdog = sd_notify::watchdog_enabled();
    // Half the watchdog interval, as systemd recommends; a status line every 10 s anyway.
    let tick = watchdog.map_or(Duration::from_secs(10), |w| {
        (w / 2).min(Duration::from_secs(10))
    });
    let mut ticker = tokio::time::interval(tick);
    let status_every =
        (Duration::from_secs(10).as_millis() / tick.as_millis().max(1)).max(1) as u64;
    let mut ticks = 0u64;
    let outcome = loop {
        tokio::select! {
            _ = terminate.recv() => break Outcome::Stopped,
            _ = interrupt.recv() => break Outcome::Stopped,
            Some(()) = reset.recv() => break Outcome::FactoryReset,
            _ = ticker.tick() => {
                ticks += 1;
                if watchdog.is_some() {
                    notify(&[NotifyState::Watchdog]);
                }
                gossip.set_advert(advert(&config, &store, &control));
                if ticks.is_multiple_of(status_every) {
                    let store_for_flush = Arc::clone(&store);
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store_for_flush.flush()).await {
                        warn!("flushing the store: {e}");
                    }
                    notify(&[NotifyState::Status(&status_line(&store, &server, &control))]);
                }
            }
        }
    };
    info!("stopping: letting requests in flight finish");
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    let _ = stop_tx.send(true);
    let _ = serving_task.await;
    if let Some(task) = steward_task {
        let _ = task.await;
    }
    if let Some(task) = gossip_task {
        let _ = task.await;
    }
    if let Some(task) = discovery_task {
        let _ = task.await;
    }
    Ok(outcome)
}

/// What this node tells the swarm about itself.
fn advert(config: &DaemonConfig, store: &ShardStore, control: &NodeControl) -> Advert {
    let disks = store.disk_stats();
    Advert {
        site: config.swarm.site.clone(),
        capacity: disks.iter().map(|d| d.capacity).sum(),
        free: disks.iter().map(|d| d.free).sum(),
        software: cairn_net::software(),
        draining: control.ownership().draining,
    }
}

fn status_line(store: &ShardStore, server: &Server, control: &NodeControl) -> String {
    let disks = store.disk_stats();
    let online = disks
        .iter()
        .filter(|d| d.state == DiskState::Online)
        .count();
    let shards: u64 = disks.iter().map(|d| d.shards).sum();
    let free: u64 = disks.iter().map(|d| d.free).sum();
    let ownership = control.ownership();
    format!(
        "{}{}, {shards} shards, {} free, {online}/{} disks online, {} peers",
        control.health().state,
        if ownership.draining {
            ", draining"
        } else if ownership.owner.is_none() {
            ", unclaimed"
        } else {
            ""
        },
        human_bytes(free),
        disks.len(),
        server.peers()
    )
}

use cairn_host::unix_now;

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify systemd: {e}");
    }
}

/// The board's I/O shell: samples the button, shows the LED, reads the
/// sensors, and turns the front panel's decisions into actions. The
/// decisions themselves are `cairn_board`'s plain state machines.
struct BoardLoop {
    board: Board,
    timing: PanelTiming,
    node_name: String,
    control: Arc<NodeControl>,
    store: Arc<ShardStore>,
    scrubber: ScrubHandle,
    serving: Arc<AtomicBool>,
    reset: tokio::sync::mpsc::Sender<()>,
}

/// A running board loop.
struct BoardThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl BoardThread {
    /// Stops the loop (the LED goes dark) and the scrub it paces.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// How often the button is sampled while there is one (a press lasts at
/// least the 30 ms debounce, so this sees every press).
const BUTTON_POLL: Duration = Duration::from_millis(10);
/// How often health is assessed.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

impl BoardLoop {
    fn spawn(self) -> BoardThread {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("cairn-board".into())
            .spawn(move || self.run(&thread_stop))
            .expect("spawning the board thread");
        BoardThread { stop, thread }
    }

    fn run(mut self, stop: &AtomicBool) {
        let start = Instant::now();
        let mut panel = FrontPanel::new(self.timing, Duration::ZERO);
        let mut monitor = HealthMonitor::new(HealthPolicy::default());
        let mut health = monitor.assess(&HealthInputs {
            starting: true,
            ..HealthInputs::default()
        });
        let mut last_assessed: Option<Duration> = None;
        let mut was_serving = false;
        while !stop.load(Ordering::Relaxed) {
            let now = start.elapsed();
            // Assess at once when serving starts, so READY and the LED agree.
            let serving = self.serving.load(Ordering::Relaxed);
            if last_assessed.is_none_or(|at| now >= at + HEALTH_EVERY) || serving != was_serving {
                last_assessed = Some(now);
                was_serving = serving;
                let inputs = self.inputs();
                let next = monitor.assess(&inputs);
                if next.state != health.state || next.reasons != health.reasons {
                    if next.reasons.is_empty() {
                        info!("node state: {}", next.state.as_str());
                    } else {
                        warn!(
                            "node state: {}: {}",
                            next.state.as_str(),
                            next.reasons.join("; ")
                        );
                    }
                }
                if next.background != health.background {
                    info!(
                        "background work (scrub) at {}% of its configured rate",
                        next.background.percent()
                    );
                }
                self.scrubber.set_share(next.background.percent());
                health = next;
                self.control.set_health(HealthSnapshot {
                    state: health.state.as_str(),
                    reasons: health.reasons.clone(),
                    temperature_mc: inputs.temperature_mc,
                });
            }
            // A claim closes the window from the network side.
            if panel.pairing_open(now) && !self.control.pairing_open(Instant::now()) {
                panel.close_pairing();
            }
            let pressed = self.board.button_pressed();
            if let Some(action) = panel.step(now, pressed, health.state) {
                self.act(action, &health);
            }
            self.board.set_led(panel.led_level(now));
            let wait = if pressed.is_some() {
                BUTTON_POLL
            } else {
                panel
                    .next_deadline(now)
                    .map_or(HEALTH_EVERY, |at| at.saturating_sub(now))
                    .clamp(BUTTON_POLL, HEALTH_EVERY)
            };
            std::thread::sleep(wait);
        }
        self.board.set_led(0);
    }

    fn inputs(&mut self) -> HealthInputs {
        let readings = self.board.read();
        let disks = self.store.disk_stats();
        let online = disks.iter().filter(|d| d.state == DiskState::Online);
        HealthInputs {
            starting: !self.serving.load(Ordering::Relaxed),
            fatal: None,
            disks: disks.len(),
            disks_online: online.clone().count(),
            disks_failed: disks
                .iter()
                .filter(|d| matches!(d.state, DiskState::Failed(_)))
                .count(),
            free_bytes: online.clone().map(|d| d.free).sum(),
            capacity_bytes: online.map(|d| d.capacity).sum(),
            temperature_mc: readings.temperature_mc,
            undervoltage: readings.power.is_some_and(|p| p.undervoltage),
            repairing: false,
        }
    }

    fn act(&mut self, action: PanelAction, health: &cairn_board::health::Health) {
        match action {
            PanelAction::Identify => {
                let owner = self
                    .control
                    .ownership()
                    .owner_keys()
                    .map_or("unclaimed".to_owned(), |(owner, _)| {
                        format!("owner {}", owner.to_hex())
                    });
                info!(
                    "identify: node {}, {}, {}{}",
                    self.node_name,
                    health.state.as_str(),
                    owner,
                    if health.reasons.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", health.reasons.join("; "))
                    }
                );
            }
            PanelAction::PairingOpened(open_for) => {
                self.control.open_pairing(Instant::now() + open_for);
                info!(
                    "pairing window open for {} s: from the owner's computer run `cairn claim {} <this box's address>`",
                    open_for.as_secs(),
                    self.node_name
                );
            }
            PanelAction::PairingExpired => {
                self.control.close_pairing();
                info!("pairing window closed; nobody claimed the box");
            }
            PanelAction::ResetArmed => warn!(
                "factory reset armed: press the button once within 10 s to reset this box's identity and ownership; do nothing to cancel"
            ),
            PanelAction::ResetCancelled => info!("factory reset cancelled"),
            PanelAction::FactoryReset => {
                warn!("factory reset confirmed with the button: stopping to reset");
                let _ = self.reset.try_send(());
            }
            PanelAction::Unrecognised => {
                info!("button: a short press identifies the box; hold 5 s to pair, 15 s to reset")
            }
        }
    }
}

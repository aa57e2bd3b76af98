//! `cairnd`: the Cairn node daemon. Opens the data disks, serves the wire
//! protocol over QUIC, runs the board (LED, button, sensors) and talks to
//! systemd (readiness, status, watchdog).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use cairn_board::board::Board;
use cairn_board::panel::PanelTiming;
use cairn_net::identity::Identity;
use cairn_net::tls::TransportLimits;
use cairn_node::board_loop::BoardLoop;
use cairn_node::daemon_config::{DEFAULT_PATH, DaemonConfig};
use cairn_node::disks;
use cairn_node::membership::Membership;
use cairn_node::net::discovery::{self};
use cairn_node::net::steward::{StewardConfig, StewardService};
use cairn_node::net::{AllowList, ServerConfig};
use cairn_node::ownership::NodeControl;
use cairn_node::service::RunningNode;
use cairn_node::settings::Settings;
use cairn_proto::limits::Limits;
use cairn_store::fs::RealMount;
use cairn_store::{DiskState, ShardStore, StoreConfig, StoreError};

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
    /// The owner changed the settings: start afresh with them.
    Reload,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging();
    let result = (|| {
        // Only a question reads the state beside a running node.
        let _sole_user = if args.print_id {
            None
        } else {
            Some(lock_state_dir(&DaemonConfig::load(&args.config)?)?)
        };
        if let Some(Command::AdoptDisk { path }) = &args.command {
            return adopt_disk(&args, path);
        }
        // The page's port, handed over by systemd once (cairnd.socket);
        // every start of the node in this process serves it.
        let page_socket = if args.print_id {
            None
        } else {
            page_socket(&DaemonConfig::load(&args.config)?)?
        };
        // A factory reset restarts the node in this process, with its new
        // key; a change of settings, with the new settings.
        while let Outcome::FactoryReset | Outcome::Reload = run(&args, page_socket.as_ref())? {}
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

/// Holds the state directory for this process (the lock goes with the
/// returned handle): a second cairnd on it would share the node's key, its
/// tables and its data disks, and a disk adopted beside a running node
/// would be re-marked under it.
fn lock_state_dir(config: &DaemonConfig) -> anyhow::Result<std::fs::File> {
    let dir = &config.state_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    // A lock on the directory itself: no lock file that root (adopt-disk)
    // could leave behind unwritable for the cairn user.
    let handle = std::fs::File::open(dir)
        .with_context(|| format!("cannot open the state directory {}", dir.display()))?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another cairnd is running with the state directory {}; stop it first (systemctl stop cairnd)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock the state directory {}", dir.display()))
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

/// The page's socket, for every start of the node in this process (so a
/// restart for new settings drops no connection waiting in its backlog):
/// systemd's (`cairnd.socket`), else `[web] listen`, else none.
fn page_socket(config: &DaemonConfig) -> anyhow::Result<Option<std::net::TcpListener>> {
    let from_systemd = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context("reading the page's socket from systemd (cairnd.socket)")?;
    if from_systemd.is_some() || !config.web.enabled {
        return Ok(from_systemd);
    }
    match config.web.listen {
        Some(at) => Ok(Some(std::net::TcpListener::bind(at).with_context(
            || {
                format!(
                    "cannot listen for the box's page on {at} ([web] listen); choose another port"
                )
            },
        )?)),
        None => {
            info!("no page: systemd handed over no socket and [web] listen is not set");
            Ok(None)
        }
    }
}

fn run(args: &Args, page_socket: Option<&std::net::TcpListener>) -> anyhow::Result<Outcome> {
    let (settings, mut config) = Settings::load(&args.config)?;
    let settings = Arc::new(settings);
    let page = match page_socket {
        Some(socket) if config.web.enabled => Some(
            socket
                .try_clone()
                .context("sharing the page's socket with the node's services")?,
        ),
        _ => None,
    };
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            config.state_dir.display()
        )
    })?;
    if args.print_id {
        // A reset under way is the running node's to finish: finishing it here
        // too raced the node's own last rename, and the node exited. Its new
        // key is the id the node is becoming, whoever finishes the reset.
        let identity = match Identity::pending_reset(&config.state_dir)? {
            Some(becoming) => becoming,
            None => Identity::load_or_create(&config.state_dir)?,
        };
        println!("{}", identity.id.to_human());
        return Ok(Outcome::Stopped);
    }
    let control = Arc::new(NodeControl::open(&config.state_dir)?);
    if Identity::pending_reset(&config.state_dir)?.is_some() {
        warn!("a factory reset was interrupted; finishing it");
        factory_reset(&config, &control)?;
    }
    let identity = Identity::load_or_create(&config.state_dir)?;
    discovery::advertise_lan_address(&mut config);
    info!(node = %identity.id.to_human(), "starting {}", cairn_net::software());
    let node_name = identity.id.to_human();

    let mut store_config =
        StoreConfig::new(identity.id, &config.state_dir, disks::disks_now(&config));
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

    let steward = if config.steward.enabled {
        Some(Arc::new(StewardService::open(
            &config.state_dir,
            StewardConfig {
                policy: config.steward.policy(),
                tick: Duration::from_secs(config.steward.tick_s),
            },
        )?))
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Well under the unit's TasksMax=256, so a flood of requests waits
        // for a thread instead of failing to start one.
        .max_blocking_threads(128)
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
        steward: steward.clone(),
    }
    .spawn();
    if let Some(dir) = &config.disks_dir {
        runtime.spawn(disks::watch(dir.clone(), Arc::clone(&store)));
    }
    let result = runtime.block_on(serve(
        config.clone(),
        server_config,
        Arc::clone(&store),
        control.clone(),
        steward,
        (settings, page),
        serving,
        reset_rx,
    ));
    board.stop();
    store.flush().context("flushing the store at exit")?;
    drop(store);
    drop(runtime);
    let outcome = result?;
    match outcome {
        Outcome::FactoryReset => factory_reset(&config, &control)?,
        Outcome::Reload => info!("starting again with the owner's new settings"),
        Outcome::Stopped => info!("stopped"),
    }
    Ok(outcome)
}

/// Resets identity and ownership: a new node key, the data disks re-marked
/// for it (their shards stay for their owners, until drained or expired),
/// no owner and no owner's settings. Crash-safe: the new key waits beside the old one until
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
    // The settings were the former owner's choices (whom to donate to).
    match std::fs::remove_file(config.state_dir.join(cairn_node::settings::FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).context("factory reset: removing the owner's settings");
        }
        _ => {}
    }
    let disks = disks::disks_now(config);
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

// Each is a service `run` opened and hands over whole.
#[allow(clippy::too_many_arguments)]
async fn serve(
    config: DaemonConfig,
    server_config: ServerConfig,
    store: Arc<ShardStore>,
    control: Arc<NodeControl>,
    steward: Option<Arc<StewardService>>,
    (settings, page): (Arc<Settings>, Option<std::net::TcpListener>),
    serving: Arc<AtomicBool>,
    mut reset: tokio::sync::mpsc::Receiver<()>,
) -> anyhow::Result<Outcome> {
    let mut settings_changed = settings.watch();
    let node = RunningNode::start(
        config,
        server_config,
        store,
        control,
        steward,
        settings,
        page,
        &serving,
    )?;
    node.stamp_owner().await;
    notify(&[NotifyState::Ready, NotifyState::Status(&node.status_line())]);

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
            Ok(()) = settings_changed.changed() => break Outcome::Reload,
            _ = ticker.tick() => {
                ticks += 1;
                if watchdog.is_some() {
                    notify(&[NotifyState::Watchdog]);
                }
                node.refresh_advert();
                if ticks.is_multiple_of(status_every) {
                    node.flush_store().await;
                    node.stamp_owner().await;
                    notify(&[NotifyState::Status(&node.status_line())]);
                }
            }
        }
    };
    info!("stopping: letting requests in flight finish");
    // A restart with the owner's new settings is a reload to systemd
    // (READY=1 follows when the services are back): STOPPING=1 would have
    // it kill the process once TimeoutStopSec ran out, long after the
    // node was serving again.
    match outcome {
        Outcome::Reload => notify(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
        Outcome::Stopped | Outcome::FactoryReset => {
            notify(&[NotifyState::Stopping, NotifyState::Status("stopping")])
        }
    }
    node.stop().await;
    Ok(outcome)
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify systemd: {e}");
    }
}

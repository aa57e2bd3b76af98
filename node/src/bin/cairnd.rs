//! `cairnd`: the Cairn node daemon. Opens the data disks, serves the wire
//! protocol over QUIC, and talks to systemd (readiness, status, watchdog).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use cairn_node::daemon_config::{DEFAULT_PATH, DaemonConfig};
use cairn_node::identity::Identity;
use cairn_node::net::tls::TransportLimits;
use cairn_node::net::{AllowList, Server, ServerConfig};
use cairn_node::proto::limits::Limits;
use cairn_node::roots::RootStore;
use cairn_node::store::{DiskState, ShardStore, StoreConfig};

/// The Cairn storage node daemon.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Print this node's id (creating its key on first use) and exit.
    #[arg(long)]
    print_id: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // To the journal under systemd, to stderr by hand (see init_logging).
            error!("{}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
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

fn run(args: Args) -> anyhow::Result<()> {
    let config = DaemonConfig::load(&args.config)?;
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            config.state_dir.display()
        )
    })?;
    let identity = Identity::load_or_create(&config.state_dir)?;
    if args.print_id {
        println!("{}", identity.id.to_human());
        return Ok(());
    }
    info!(node = %identity.id.to_human(), "starting {}", cairn_node::net::server::software());

    let mut store_config = StoreConfig::new(identity.id, &config.state_dir, config.disks.clone());
    store_config.reserve_bytes = config.store.reserve_mib << 20;
    store_config.quota_bytes = config.store.quota_gib.map(|gib| gib << 30);
    store_config.max_shard_bytes = config.store.max_shard_mib << 20;
    let store = Arc::new(ShardStore::open(store_config)?);
    for disk in store.disk_stats() {
        match disk.state {
            DiskState::Online => {
                info!(path = %disk.path.display(), "disk online: {} shards, {} MiB free", disk.shards, disk.free >> 20)
            }
            ref state => warn!(path = %disk.path.display(), "disk not in service: {state}"),
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
    let result = runtime.block_on(serve(config, server_config, Arc::clone(&store)));
    scrubber.stop();
    store.flush().context("flushing the store at exit")?;
    info!("stopped");
    result
}

async fn serve(
    config: DaemonConfig,
    server_config: ServerConfig,
    store: Arc<ShardStore>,
) -> anyhow::Result<()> {
    let roots = Arc::new(RootStore::open(&config.state_dir)?);
    let server = Server::bind(config.listen, server_config, Arc::clone(&store), roots)?;
    let addr = server.local_addr()?;
    info!(%addr, "listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = Arc::new(server);
    let serving = tokio::spawn({
        let server = Arc::clone(&server);
        async move { server.run(stop_rx).await }
    });
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(&store, &server)),
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
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = ticker.tick() => {
                ticks += 1;
                if watchdog.is_some() {
                    notify(&[NotifyState::Watchdog]);
                }
                if ticks.is_multiple_of(status_every) {
                    let store_for_flush = Arc::clone(&store);
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store_for_flush.flush()).await {
                        warn!("flushing the store: {e}");
                    }
                    notify(&[NotifyState::Status(&status_line(&store, &server))]);
                }
            }
        }
    }
    info!("stopping: letting requests in flight finish");
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    let _ = stop_tx.send(true);
    let _ = serving.await;
    Ok(())
}

fn status_line(store: &ShardStore, server: &Server) -> String {
    let disks = store.disk_stats();
    let online = disks
        .iter()
        .filter(|d| d.state == DiskState::Online)
        .count();
    let shards: u64 = disks.iter().map(|d| d.shards).sum();
    let free: u64 = disks.iter().map(|d| d.free).sum();
    format!(
        "{shards} shards, {} free, {online}/{} disks online, {} peers",
        human_bytes(free),
        disks.len(),
        server.peers()
    )
}

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

//! The node's services started together on the tokio runtime: the request
//! server, gossip, the LAN responder and the steward's round, sharing one
//! endpoint; and stopped together, letting requests in flight finish.
//! `cairnd` adds only signals and systemd notifications around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_proto::MissingState;
use cairn_proto::NodeAddr;
use cairn_proto::gossip::GossipMember;
use cairn_store::{ShardStore, StoreEvent};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::daemon_config::DaemonConfig;
use crate::discovery::LanNode;
use crate::donation::{Donation, EvictedError};
use crate::membership::{JoinError, Membership};
use crate::missing::MissingLog;
use crate::net::discovery::{self, LanDiscovery};
use crate::net::gossip::GossipService;
use crate::net::reach::ReachService;
use crate::net::server::BindError;
use crate::net::steward::StewardService;
use crate::net::web::WebSources;
use crate::net::{Server, ServerConfig, Services};
use crate::ownership::NodeControl;
use crate::rendezvous::{RelayLimits, Rendezvous};
use crate::roots::{RootStore, RootStoreError};
use crate::settings::Settings;
use crate::spent::{Spent, SpentError};

/// Why the node's services could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The owners' root records could not be opened.
    #[error(transparent)]
    Roots(#[from] RootStoreError),
    /// The node's swarm membership could not be read.
    #[error(transparent)]
    Membership(#[from] JoinError),
    /// The listening socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The page's TCP socket could not be used.
    #[error("cannot serve the box's page on its socket: {0}")]
    Web(std::io::Error),
    /// The `[donation]` policy does not parse.
    #[error("[donation] in the configuration: {0}")]
    Donation(String),
    /// The record of signed commands could not be opened.
    #[error(transparent)]
    Spent(#[from] SpentError),
    /// The evicted owners could not be read.
    #[error(transparent)]
    Evicted(#[from] EvictedError),
    /// The bound socket's address could not be read.
    #[error("cannot read the listening socket's address: {0}")]
    Address(#[from] std::io::Error),
}

/// The running services.
pub struct RunningNode {
    /// The request server.
    pub server: Arc<Server>,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    gossip: Arc<GossipService>,
    config: DaemonConfig,
    store: Arc<ShardStore>,
    control: Arc<NodeControl>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    serving_task: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
}

/// Deletes shards whose lease ran out (nobody renews them: their owner
/// pruned them or is gone), a bounded number per round, until `stop`.
async fn collect_expired_leases(
    store: Arc<ShardStore>,
    every: Duration,
    per_round: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        let store = Arc::clone(&store);
        let now = cairn_host::unix_now();
        match tokio::task::spawn_blocking(move || store.collect_expired(now, per_round)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(collected)) => info!("collected {collected} shards whose lease ran out"),
            Ok(Err(e)) => warn!("collecting expired shards: {e}"),
            Err(e) => warn!("collecting expired shards: {e}"),
        }
    }
}

/// Takes the store's events every few seconds: says what happened, and
/// lists shards that went with a failed or offline disk (or came back)
/// in the report stewards read, until `stop`.
async fn report_store_events(
    store: Arc<ShardStore>,
    missing: Arc<MissingLog>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        for event in store.take_events() {
            match event {
                StoreEvent::DiskFailed {
                    path, reason, lost, ..
                } => {
                    warn!(path = %path.display(), "data disk failed ({reason}); its shards are reported lost to the stewards");
                    if let Some(lost) = lost {
                        missing.record(&lost, MissingState::Gone);
                    }
                }
                StoreEvent::DiskOffline { path, shards, .. } => {
                    if let Some(shards) = shards {
                        info!(path = %path.display(), "{} shards are offline with the disk; reported to the stewards", shards.len());
                        missing.record(&shards, MissingState::Offline(cairn_host::unix_now()));
                    }
                }
                StoreEvent::DiskBack { path, shards, .. } => {
                    if let Some(shards) = shards {
                        info!(path = %path.display(), "{} shards are back with the disk; reported to the stewards", shards.len());
                        missing.record(&shards, MissingState::Back);
                    }
                }
                StoreEvent::ShardCorrupt { shard, .. } => {
                    warn!(%shard, "a shard failed verification and was quarantined");
                    missing.record(&[shard], MissingState::Gone);
                }
                StoreEvent::ShardMissing { shard, .. } => {
                    warn!(%shard, "a shard's file was missing; quarantined");
                    missing.record(&[shard], MissingState::Gone);
                }
            }
        }
    }
}

impl RunningNode {
    /// Binds the server and starts every service; `serving` turns true
    /// once the server listens. Call it on the tokio runtime.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: DaemonConfig,
        server_config: ServerConfig,
        store: Arc<ShardStore>,
        control: Arc<NodeControl>,
        steward: Option<Arc<StewardService>>,
        settings: Arc<Settings>,
        web: Option<std::net::TcpListener>,
        serving: &AtomicBool,
    ) -> Result<Self, StartError> {
        let started = std::time::Instant::now();
        let roots = Arc::new(RootStore::open(&config.state_dir)?);
        let identity = server_config.identity.clone();
        let membership = Arc::new(Membership::open(&config.state_dir, identity.id)?);
        if let Some(swarm) = membership.swarm() {
            info!("member of swarm {}", swarm.to_hex());
        }
        let gossip = GossipService::new(
            GossipMember {
                node: identity.id,
                addr: config.advertised_address().unwrap_or_default(),
                // Seconds since the epoch: a restarted node's identity wins.
                bump: u32::try_from(cairn_host::unix_now() % u64::from(u32::MAX)).unwrap_or(0),
                advert: crate::node_status::advert(&config, &store, &control),
            },
            Arc::clone(&membership),
        );
        let request_timeout = server_config.request_timeout;
        let missing = Arc::new(MissingLog::new());
        let policy = config.donation.policy().map_err(StartError::Donation)?;
        let donation = Arc::new(Donation::open(policy, &config.state_dir)?);
        let spent = Arc::new(Spent::open(&config.state_dir)?);
        let donation_for_page = Arc::clone(&donation);
        let rendezvous = Arc::new(Rendezvous::new(RelayLimits {
            enabled: config.reach.relay,
            sessions: config.reach.relay_sessions,
            bytes_per_s: config.reach.relay_mib_per_s.saturating_mul(1 << 20),
            bytes_per_day: config.reach.relay_gib_per_day.saturating_mul(1 << 30),
        }));
        let updates = config.update.enabled.then(|| {
            Arc::new(crate::updates::UpdateInbox::new(
                &config.state_dir,
                config.update.clone(),
            ))
        });
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
                missing: Arc::clone(&missing),
                donation,
                spent,
                rendezvous: Arc::clone(&rendezvous),
                settings: Some(Arc::clone(&settings)),
                updates: updates.clone(),
            },
        )?;
        let addr = server.local_addr()?;
        serving.store(true, Ordering::Relaxed);
        info!(%addr, "listening");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = Arc::new(server);
        // One pool for everything this node dials: the steward's holders and
        // gossip's members are often the same nodes.
        let mut pool =
            membership.pool(server.endpoint().clone(), identity.clone(), request_timeout);
        let reach = config.reach.traversal.then(|| {
            ReachService::new(
                identity.id,
                Arc::clone(&gossip),
                Arc::clone(&membership),
                Arc::clone(&rendezvous),
                server.raw_socket(),
                addr.port(),
                &config.reach,
            )
        });
        if let Some(reach) = &reach {
            pool = pool.with_routes(
                Arc::clone(reach) as Arc<dyn cairn_net::Routes>,
                Some(server.raw_socket()),
            );
        }
        let pool = Arc::new(pool);
        let fetch_task = updates.clone().map(|inbox| {
            tokio::spawn(crate::net::update_fetch::run(
                inbox,
                Arc::clone(&pool),
                Arc::clone(&gossip),
                stop_rx.clone(),
            ))
        });
        let reach_task =
            reach.map(|reach| tokio::spawn(reach.run(Arc::clone(&pool), stop_rx.clone())));
        let web_task = match web {
            Some(listener) if config.web.enabled => {
                let listener = listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener))
                    .map_err(StartError::Web)?;
                if let Ok(at) = listener.local_addr() {
                    info!(%at, "the box's page is served at http://{at}/");
                }
                let sources = Arc::new(WebSources {
                    node: identity.id,
                    store: Arc::clone(&store),
                    control: Arc::clone(&control),
                    gossip: Arc::clone(&gossip),
                    steward: steward.clone(),
                    server: Arc::clone(&server),
                    settings,
                    donation: donation_for_page,
                    updates,
                    counters: server.counters(),
                    started,
                    link_longest_s: config.web.owner_link_minutes.saturating_mul(60),
                });
                Some(tokio::spawn(crate::net::web::serve(
                    listener,
                    sources,
                    stop_rx.clone(),
                )))
            }
            _ => None,
        };
        let steward_task = steward.map(|steward| {
            tokio::spawn(steward.run(Arc::clone(&pool), Arc::clone(&gossip), stop_rx.clone()))
        });
        let gossip_task = match config.advertised_address() {
            Some(_) => {
                if membership.swarm().is_some() {
                    gossip.announce_to(membership.seeds());
                }
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
                        at: NodeAddr {
                            node: identity.id,
                            addr: config
                                .advertised_address()
                                .unwrap_or_else(|| addr.to_string()),
                            site: config.swarm.site.clone(),
                        },
                        swarm: None,
                        software: cairn_net::software(),
                    };
                    Some(tokio::spawn(discovery::serve(
                        discovery,
                        me,
                        Arc::clone(&membership),
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
        let leases_task = Some(tokio::spawn(collect_expired_leases(
            Arc::clone(&store),
            Duration::from_secs(config.store.lease_gc_every_s.max(1)),
            config.store.lease_gc_per_round.max(1),
            stop_rx.clone(),
        )));
        let events_task = Some(tokio::spawn(report_store_events(
            Arc::clone(&store),
            missing,
            stop_rx.clone(),
        )));
        let serving_task = tokio::spawn({
            let server = Arc::clone(&server);
            async move { server.run(stop_rx).await }
        });
        let others = [
            web_task,
            reach_task,
            steward_task,
            gossip_task,
            discovery_task,
            leases_task,
            events_task,
            fetch_task,
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(Self {
            server,
            addr,
            gossip,
            config,
            store,
            control,
            stop_tx,
            serving_task,
            others,
        })
    }

    /// Tells gossip what the node offers now (space, draining).
    pub fn refresh_advert(&self) {
        self.gossip.set_advert(crate::node_status::advert(
            &self.config,
            &self.store,
            &self.control,
        ));
    }

    /// Writes the box's owner into its data disks' markers where it is not
    /// there yet, so that the owner can have them adopted after a re-image.
    pub async fn stamp_owner(&self) {
        let Some(owner) = self.control.ownership().info().owner else {
            return;
        };
        let store = Arc::clone(&self.store);
        if let Ok(written) = tokio::task::spawn_blocking(move || store.stamp_owner(&owner)).await
            && written > 0
        {
            info!("the owner is recorded on {written} data disk(s)");
        }
    }

    /// Makes what the store has acknowledged durable in its index (a
    /// failure is logged: the next flush tries again).
    pub async fn flush_store(&self) {
        let store = Arc::clone(&self.store);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
            warn!("flushing the store: {e}");
        }
    }

    /// The one-line status systemd shows for the unit.
    pub fn status_line(&self) -> String {
        crate::node_status::status_line(&self.store, &self.server, &self.control)
    }

    /// Stops every service: the server lets requests in flight finish
    /// (within its drain timeout), then the others end their rounds.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.serving_task.await;
        for task in self.others {
            let _ = task.await;
        }
    }
}

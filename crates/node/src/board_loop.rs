//! The board's I/O shell as a thread: samples the button every 10 ms,
//! shows the LED, reads the sensors every 2 s, and turns the front panel's
//! and health monitor's decisions (`cairn-board`'s plain state machines)
//! into log lines, the pairing window, scrub throttling and a factory
//! reset request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_board::board::Board;
use cairn_board::health::{HealthInputs, HealthMonitor, HealthPolicy};
use cairn_board::panel::{FrontPanel, PanelAction, PanelTiming};
use cairn_store::{DiskState, DiskStats, ScrubHandle, ShardStore};
use tracing::{info, warn};

use crate::net::steward::StewardService;
use crate::ownership::{HealthSnapshot, NodeControl};

/// The board's I/O shell: samples the button, shows the LED, reads the
/// sensors, and turns the front panel's decisions into actions. The
/// decisions themselves are `cairn_board`'s plain state machines.
pub struct BoardLoop {
    /// The box's LED, button and sensors.
    pub board: Board,
    /// How long the button's gestures and the pairing window last.
    pub timing: PanelTiming,
    /// The node id as people read it, for log lines.
    pub node_name: String,
    /// Ownership, the pairing window and the health the server reports.
    pub control: Arc<NodeControl>,
    /// The store, for the disks' health and space.
    pub store: Arc<ShardStore>,
    /// The scrub, throttled when the box is hot or busy.
    pub scrubber: ScrubHandle,
    /// Set once the server listens.
    pub serving: Arc<AtomicBool>,
    /// Told when the button confirms a factory reset.
    pub reset: tokio::sync::mpsc::Sender<()>,
    /// The node's steward, if it runs one: the LED shows "repairing" while
    /// it rebuilds or moves shards.
    pub steward: Option<Arc<StewardService>>,
}

/// A running board loop.
pub struct BoardThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl BoardThread {
    /// Stops the loop (the LED goes dark) and the scrub it paces.
    pub fn stop(self) {
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
    /// Runs the loop on a thread of its own.
    pub fn spawn(self) -> BoardThread {
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
                let (inputs, power) = self.inputs();
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
                    power,
                });
            }
            // A claim closes the window from the network side.
            if panel.pairing_open(now) && !self.control.pairing_open(Instant::now()) {
                panel.close_pairing();
            }
            panel.set_claim_pending(self.control.claim_waiting());
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

    fn inputs(&mut self) -> (HealthInputs, Option<cairn_board::sensors::PowerFlags>) {
        let readings = self.board.read();
        let disks = self.store.disk_stats();
        let online = disks.iter().filter(|d| d.state == DiskState::Online);
        let inputs = HealthInputs {
            starting: !self.serving.load(Ordering::Relaxed),
            fatal: None,
            disks: disks.len(),
            disks_online: online.clone().count(),
            disks_failed: disks
                .iter()
                .filter(|d| matches!(d.state, DiskState::Failed(_)))
                .count(),
            free_bytes: DiskStats::free_of(&disks),
            capacity_bytes: online.map(|d| d.capacity).sum(),
            temperature_mc: readings.temperature_mc,
            undervoltage: readings.power.is_some_and(|p| p.undervoltage),
            repairing: self
                .steward
                .as_ref()
                .is_some_and(|steward| steward.repairing()),
        };
        (inputs, readings.power)
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
            PanelAction::ClaimConfirmed => {
                if self.control.confirm_claim() {
                    info!(
                        "claim confirmed with the button: the box is claimed when the owner's `cairn claim` next asks"
                    );
                }
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

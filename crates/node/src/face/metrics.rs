//! `/metrics`: the node's figures in the Prometheus text format (0.0.4),
//! through the `prometheus` crate's encoder. Names follow Prometheus'
//! conventions: a `cairn_` prefix, base units (`_bytes`, `_seconds`,
//! `_celsius`) and `_total` on counters. The list, with what each means,
//! is in the README. Owners' ids are not exported: who uses the box is
//! the owner's view's, behind the owner's link.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::{PATHS, STATES, Snapshot};

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Requests served since start, by kind and outcome: shared by the
/// server, which counts, and `/metrics`, which shows them.
#[derive(Debug, Clone)]
pub struct RequestCounters {
    requests: IntCounterVec,
    errors: IntCounterVec,
}

impl Default for RequestCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestCounters {
    /// Counters at zero.
    pub fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "cairn_requests_total",
                "Requests answered since start, by kind.",
            ),
            &["kind"],
        )
        .expect("a valid metric name");
        let errors = IntCounterVec::new(
            Opts::new(
                "cairn_request_errors_total",
                "Requests refused or failed since start, by kind and error code.",
            ),
            &["kind", "code"],
        )
        .expect("a valid metric name");
        Self { requests, errors }
    }

    /// Counts one request of `kind`, refused with `error` if it was.
    pub fn count(&self, kind: &str, error: Option<cairn_proto::ErrorCode>) {
        self.requests.with_label_values(&[kind]).inc();
        if let Some(code) = error {
            let code = format!("{code:?}");
            self.errors.with_label_values(&[kind, &code]).inc();
        }
    }

    /// Requests of `kind` counted so far.
    #[cfg(test)]
    pub fn requests(&self, kind: &str) -> u64 {
        self.requests.with_label_values(&[kind]).get()
    }
}

fn gauge(registry: &Registry, name: &str, help: &str, value: i64) {
    let gauge = IntGauge::new(name, help).expect("a valid metric name");
    gauge.set(value);
    registry
        .register(Box::new(gauge))
        .expect("each name registered once");
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric name");
    registry
        .register(Box::new(gauge.clone()))
        .expect("each name registered once");
    gauge
}

/// A counter family from figures counted elsewhere (the steward's), at
/// `values` for each label value.
fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    let counter = IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid metric name");
    for (value, count) in values {
        counter.with_label_values(&[value]).inc_by(*count);
    }
    registry
        .register(Box::new(counter))
        .expect("each name registered once");
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The text `/metrics` answers with.
pub fn render(snapshot: &Snapshot, counters: &RequestCounters) -> String {
    let registry = Registry::new();
    let info = gauge_vec(
        &registry,
        "cairn_node_info",
        "The node and its software (always 1).",
        &["node", "software"],
    );
    info.with_label_values(&[&snapshot.node, &snapshot.software])
        .set(1);
    if let Some(system) = &snapshot.system {
        gauge_vec(
            &registry,
            "cairn_system_info",
            "The release the box runs and its system slot (always 1).",
            &["version", "slot"],
        )
        .with_label_values(&[
            system.version.as_str(),
            system.slot.as_deref().unwrap_or(""),
        ])
        .set(1);
        if let Some(last) = &system.last {
            gauge_vec(
                &registry,
                "cairn_update_last",
                "How the last system update ended: kept, rolled-back, interrupted or refused (always 1).",
                &["result", "version"],
            )
            .with_label_values(&[last.result.as_str(), last.version.as_str()])
            .set(1);
            gauge(
                &registry,
                "cairn_update_last_timestamp_seconds",
                "When the last system update ended, Unix seconds.",
                int(last.at),
            );
        }
    }
    let state = gauge_vec(
        &registry,
        "cairn_node_state",
        "1 for the state the node is in (the LED shows it), 0 for the others.",
        &["state"],
    );
    for name in STATES {
        state
            .with_label_values(&[name])
            .set(i64::from(snapshot.state == name));
    }
    gauge(
        &registry,
        "cairn_node_claimed",
        "1 when an owner has claimed the box.",
        i64::from(snapshot.claimed),
    );
    gauge(
        &registry,
        "cairn_node_draining",
        "1 while the box takes no new shards (draining).",
        i64::from(snapshot.draining),
    );
    gauge(
        &registry,
        "cairn_uptime_seconds",
        "Seconds since cairnd started the node.",
        int(snapshot.uptime_s),
    );
    let disks = &snapshot.disks;
    let sum = |f: fn(&super::DiskRow) -> u64| int(disks.iter().map(f).sum());
    gauge(
        &registry,
        "cairn_store_capacity_bytes",
        "Size of the data disks' file systems.",
        sum(|d| d.capacity),
    );
    gauge(
        &registry,
        "cairn_store_used_bytes",
        "Bytes of shards on the data disks.",
        sum(|d| d.used),
    );
    gauge(
        &registry,
        "cairn_store_free_bytes",
        "Bytes new shards may still take (after the reserve and the quota).",
        sum(|d| d.free),
    );
    gauge(
        &registry,
        "cairn_store_shards",
        "Shards the node serves.",
        sum(|d| d.shards),
    );
    let per_disk = [
        (
            "cairn_disk_capacity_bytes",
            "Size of the disk's file system.",
        ),
        ("cairn_disk_used_bytes", "Bytes of shards on the disk."),
        (
            "cairn_disk_free_bytes",
            "Bytes new shards may still take on the disk.",
        ),
        ("cairn_disk_shards", "Shards the disk serves."),
        (
            "cairn_disk_quarantined_shards",
            "Shards that failed verification and were set aside.",
        ),
    ]
    .map(|(name, help)| gauge_vec(&registry, name, help, &["disk"]));
    let disk_state = gauge_vec(
        &registry,
        "cairn_disk_state",
        "1 for the state each data disk is in (online, failed, offline, refused).",
        &["disk", "state"],
    );
    for disk in disks {
        let label = [disk.path.as_str()];
        for (gauge, value) in per_disk.iter().zip([
            disk.capacity,
            disk.used,
            disk.free,
            disk.shards,
            disk.quarantined,
        ]) {
            gauge.with_label_values(&label).set(int(value));
        }
        for name in ["online", "failed", "offline", "refused"] {
            disk_state
                .with_label_values(&[disk.path.as_str(), name])
                .set(i64::from(disk.state == name));
        }
    }
    gauge(
        &registry,
        "cairn_peer_connections",
        "Connections from peers now.",
        int(snapshot.peers as u64),
    );
    let members = gauge_vec(
        &registry,
        "cairn_swarm_members",
        "Members of the swarm this node knows, by state and by how it reaches them.",
        &["state", "path"],
    );
    for path in PATHS {
        for (state, up) in [("up", true), ("down", false)] {
            let count = snapshot
                .members
                .iter()
                .filter(|m| m.path == path && m.up == up)
                .count();
            members
                .with_label_values(&[state, path])
                .set(int(count as u64));
        }
    }
    if let Some(mc) = snapshot.temperature_mc {
        let celsius = prometheus::Gauge::new(
            "cairn_temperature_celsius",
            "The hottest temperature the board measures.",
        )
        .expect("a valid metric name");
        celsius.set(f64::from(mc) / 1000.0);
        registry
            .register(Box::new(celsius))
            .expect("each name registered once");
    }
    if let Some(power) = &snapshot.power {
        gauge(
            &registry,
            "cairn_power_undervoltage",
            "1 while the power supply's voltage is too low.",
            i64::from(power.undervoltage),
        );
        gauge(
            &registry,
            "cairn_power_throttled",
            "1 while the SoC is throttled.",
            i64::from(power.throttled),
        );
    }
    if let Some(steward) = &snapshot.steward {
        gauge(
            &registry,
            "cairn_steward_segments",
            "Segments the steward watches.",
            int(steward.segments),
        );
        gauge(
            &registry,
            "cairn_steward_repairs_queued",
            "Segments waiting for a repair.",
            int(steward.repairs_queued),
        );
        gauge(
            &registry,
            "cairn_steward_repairing",
            "1 while the steward rebuilds or moves shards.",
            i64::from(steward.repairing),
        );
        counter_vec(
            &registry,
            "cairn_steward_audits_total",
            "Audits since start, by outcome.",
            "outcome",
            &[
                ("passed", steward.audits_passed),
                ("failed", steward.audits_failed),
                ("unanswered", steward.audits_unanswered),
            ],
        );
        counter_vec(
            &registry,
            "cairn_steward_shards_total",
            "Shards since start: rebuilt onto new holders, or moved off draining ones.",
            "action",
            &[
                ("rebuilt", steward.shards_rebuilt),
                ("moved", steward.shards_moved),
            ],
        );
        let failed = prometheus::IntCounter::new(
            "cairn_steward_repairs_failed_total",
            "Repairs or moves that failed since start (each is tried again).",
        )
        .expect("a valid metric name");
        failed.inc_by(steward.repairs_failed);
        registry
            .register(Box::new(failed))
            .expect("each name registered once");
    }
    registry
        .register(Box::new(counters.requests.clone()))
        .expect("each name registered once");
    registry
        .register(Box::new(counters.errors.clone()))
        .expect("each name registered once");
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encoding to memory does not fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::DiskRow;

    #[test]
    fn the_figures_are_there_with_their_types() {
        let counters = RequestCounters::new();
        counters.count("put", None);
        counters.count("put", Some(cairn_proto::ErrorCode::NoSpace));
        let snapshot = Snapshot {
            node: "cnabc".into(),
            software: "cairn 0.1.0".into(),
            state: "healthy".into(),
            temperature_mc: Some(48_500),
            disks: vec![DiskRow {
                path: "/srv/cairn/disks/a".into(),
                state: "online",
                problem: None,
                capacity: 1000,
                used: 300,
                free: 600,
                shards: 4,
                quarantined: 0,
            }],
            ..Snapshot::default()
        };
        let text = render(&snapshot, &counters);
        for line in [
            "# TYPE cairn_requests_total counter",
            r#"cairn_requests_total{kind="put"} 2"#,
            r#"cairn_request_errors_total{code="NoSpace",kind="put"} 1"#,
            r#"cairn_node_state{state="healthy"} 1"#,
            r#"cairn_node_state{state="error"} 0"#,
            "cairn_store_used_bytes 300",
            "cairn_store_free_bytes 600",
            "cairn_store_shards 4",
            r#"cairn_disk_state{disk="/srv/cairn/disks/a",state="online"} 1"#,
            "cairn_temperature_celsius 48.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert_eq!(counters.requests("put"), 2);
    }

    #[test]
    fn the_system_and_the_last_update_are_there() {
        let snapshot = Snapshot {
            system: Some(cairn_proto::UpdateInfo {
                version: "2.0.0".into(),
                slot: Some("b".into()),
                receiving: None,
                installing: false,
                last: Some(cairn_proto::UpdateOutcome {
                    version: "3.0.0".into(),
                    result: "rolled-back".into(),
                    reason: "cairnd failed to start (3 restarts)".into(),
                    at: 1_800_000_000,
                }),
                fetching_from: None,
                fetch_trouble: None,
                serving: None,
            }),
            ..Snapshot::default()
        };
        let text = render(&snapshot, &RequestCounters::new());
        for line in [
            r#"cairn_system_info{slot="b",version="2.0.0"} 1"#,
            r#"cairn_update_last{result="rolled-back",version="3.0.0"} 1"#,
            "cairn_update_last_timestamp_seconds 1800000000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        let page = crate::face::page::render(&snapshot, None);
        assert!(page.contains("Cairn 2.0.0 (slot B)"), "{page}");
        assert!(
            page.contains(
                "rolled back (the box went back to the release before). cairnd failed to start"
            ),
            "{page}"
        );
    }
}

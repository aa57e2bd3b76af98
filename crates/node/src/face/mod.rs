//! The box's face on the LAN, as plain code: what the node is and does at
//! one moment ([`Snapshot`], gathered by `net::web`), the page made from it
//! ([`page`]) and `/metrics` ([`metrics`]). Nothing here does I/O or
//! reads a clock.

pub mod metrics;
pub mod page;

use cairn_board::sensors::PowerFlags;
use cairn_proto::SettingsInfo;

/// Everything the page and `/metrics` show, taken at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// This node (`cn…`).
    pub node: String,
    /// The software and its version.
    pub software: String,
    /// `booting`, `healthy`, `degraded`, `repairing` or `error`.
    pub state: String,
    /// Why it is not healthy.
    pub reasons: Vec<String>,
    /// Whether an owner claimed the box.
    pub claimed: bool,
    /// Whether it is draining.
    pub draining: bool,
    /// Whether its pairing window is open.
    pub pairing: bool,
    /// The hottest temperature measured, millidegrees Celsius.
    pub temperature_mc: Option<i32>,
    /// The power supply's flags, where the board reports them.
    pub power: Option<PowerFlags>,
    /// Its data disks.
    pub disks: Vec<DiskRow>,
    /// The swarm's members this node knows.
    pub members: Vec<MemberRow>,
    /// Connections from peers now.
    pub peers: usize,
    /// The steward's work, on a steward.
    pub steward: Option<crate::net::steward::StewardProgress>,
    /// Seconds since cairnd started the node.
    pub uptime_s: u64,
    /// The settings in force.
    pub settings: Option<SettingsInfo>,
    /// The system it runs and how its last update went.
    pub system: Option<cairn_proto::UpdateInfo>,
}

/// One data disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRow {
    /// Its mountpoint.
    pub path: String,
    /// `online`, `failed`, `offline` or `refused`.
    pub state: &'static str,
    /// Why it is not online, in words.
    pub problem: Option<String>,
    /// Size of its file system, bytes.
    pub capacity: u64,
    /// Bytes of shards on it.
    pub used: u64,
    /// Bytes new shards may still take.
    pub free: u64,
    /// Shards it serves.
    pub shards: u64,
    /// Shards it quarantined (failed verification).
    pub quarantined: u64,
}

impl DiskRow {
    /// From the store's figures.
    pub fn of(disk: &cairn_store::DiskStats) -> Self {
        use cairn_store::DiskState;
        let (state, problem) = match &disk.state {
            DiskState::Online => ("online", None),
            DiskState::Failed(why) => ("failed", Some(why.clone())),
            DiskState::Offline(why) => ("offline", Some(why.to_string())),
            DiskState::Refused(why) => ("refused", Some(why.to_string())),
        };
        Self {
            path: disk.path.display().to_string(),
            state,
            problem,
            capacity: disk.capacity,
            used: disk.used,
            free: disk.free,
            shards: disk.shards,
            quarantined: disk.quarantined,
        }
    }

    /// What the person at the box should do about it.
    pub fn advice(&self) -> &'static str {
        match self.state {
            "online" if self.quarantined > 0 => {
                "Serving. Some shards failed verification and were set aside; their owners' stewards rebuild them. If this repeats, the disk is wearing out: replace it."
            }
            "online" => "Serving. Nothing to do.",
            "failed" => {
                "Out of service after an error. Check its cable and power, then unplug it and plug it back in. If it fails again, replace it: its shards are rebuilt elsewhere."
            }
            "offline" => {
                "Not there. Plug it back in: its shards are kept for it for a while before they are rebuilt elsewhere."
            }
            _ => {
                "Not used: it belongs to another node. If it is yours from before a re-image, adopt it with cairn adopt-disks and this box's node id."
            }
        }
    }
}

/// One member of the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// The member (`cn…`).
    pub node: String,
    /// Its site, as it says (a stranger's words: escaped on the page).
    pub site: Option<String>,
    /// Up, or declared down by the swarm.
    pub up: bool,
    /// How this node reaches it: `lan`, `direct`, `mapped`, `punched`,
    /// `relayed`, `direct6`, `punched6`, or `unknown`.
    pub path: &'static str,
    /// Bytes it says it offers.
    pub free: u64,
    /// Bytes it says it has.
    pub capacity: u64,
}

impl MemberRow {
    /// From gossip's view of a member.
    pub fn of(member: &cairn_proto::gossip::MemberState) -> Self {
        use cairn_proto::reach::PathKind;
        let path = match member.path {
            None => "unknown",
            Some(PathKind::Lan) => "lan",
            Some(PathKind::Direct) => "direct",
            Some(PathKind::Mapped) => "mapped",
            Some(PathKind::Punched) => "punched",
            Some(PathKind::Relayed(_)) => "relayed",
            Some(PathKind::Direct6) => "direct6",
            Some(PathKind::Punched6) => "punched6",
        };
        Self {
            node: member.member.node.to_human(),
            site: member.member.advert.site.clone(),
            up: member.up,
            path,
            free: member.member.advert.free,
            capacity: member.member.advert.capacity,
        }
    }
}

/// The states a node can be in, in the order the page and `/metrics` list them.
pub const STATES: [&str; 5] = ["booting", "healthy", "degraded", "repairing", "error"];

/// What the LED shows in `state`, in words.
pub fn led_meaning(state: &str) -> &'static str {
    match state {
        "booting" => "blinks evenly, once a second: starting up",
        "healthy" => "is steadily on: serving, nothing wrong",
        "degraded" => "flashes twice, then pauses: serving, but something needs you",
        "repairing" => "is long on, short off: rebuilding or moving data",
        _ => "flashes three times, then pauses: not serving",
    }
}

/// The paths a member can be reached by, in the order `/metrics` lists them.
pub const PATHS: [&str; 8] = [
    "lan", "direct", "mapped", "punched", "relayed", "direct6", "punched6", "unknown",
];

/// Bytes for a person: `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
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

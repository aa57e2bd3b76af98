//! `cairnd`'s configuration file (TOML). Everything but the data disks has a
//! default; unknown keys are errors, so a typo is caught, with its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_board::board::{BoardConfig, ButtonWiring, Chip, LedWiring, Profile, SensorWiring};
use cairn_board::sensors::SensorKind;
use serde::Deserialize;

use cairn_proto::ids::NodeId;

/// Where `cairnd` looks without `--config`.
pub const DEFAULT_PATH: &str = "/etc/cairn/cairnd.toml";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Node key and the list of known disks live here (not on a data disk).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// UDP address for QUIC.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Mountpoints of the data disks.
    #[serde(default)]
    pub disks: Vec<PathBuf>,
    /// A directory whose mounts are data disks, taken into service when
    /// mounted and out of it when unmounted or unplugged, while the node runs
    /// (the appliance's `/srv/cairn/disks`).
    pub disks_dir: Option<PathBuf>,
    /// Store tuning.
    #[serde(default)]
    pub store: StoreSection,
    /// Who may connect and how much they may ask.
    #[serde(default)]
    pub network: NetworkSection,
    /// The LED, the button and the sensors.
    #[serde(default)]
    pub board: BoardSection,
    /// Stewarding owners' data: audits, repair, leases.
    #[serde(default)]
    pub steward: StewardSection,
    /// How this node shows itself to its swarm.
    #[serde(default)]
    pub swarm: SwarmSection,
    /// What this box gives others, and to whom.
    #[serde(default)]
    pub donation: DonationSection,
    /// Reaching members across home routers, and relaying for them.
    #[serde(default)]
    pub reach: ReachSection,
    /// The box's page and `/metrics` on the LAN.
    #[serde(default)]
    pub web: WebSection,
    /// System updates: where the running release and the last update's
    /// outcome are written (by the image and `cairn-slot`).
    #[serde(default)]
    pub update: UpdateSection,
}

/// `[update]`: where cairnd reads what system it runs and how its last
/// update went. Bundles it receives go to `state_dir/updates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateSection {
    /// Take update bundles from the box's owner.
    pub enabled: bool,
    /// The running release's version (one line).
    pub release_file: PathBuf,
    /// `cairn-slot`'s state directory (`status.toml`).
    pub status_dir: PathBuf,
}

impl Default for UpdateSection {
    fn default() -> Self {
        Self {
            enabled: true,
            release_file: PathBuf::from("/usr/lib/cairn/release"),
            status_dir: PathBuf::from(cairn_update::state::DEFAULT_DIR),
        }
    }
}

/// `[web]`: the page on the LAN. Under systemd the port comes from
/// `cairnd.socket` (socket activation, so the daemon needs no capability
/// to bind port 80); `listen` is for a node started by hand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Serve the page and `/metrics`.
    pub enabled: bool,
    /// TCP address to listen on when systemd hands over no socket.
    pub listen: Option<SocketAddr>,
    /// Minutes a link `cairn panel` signs stays valid, at most.
    pub owner_link_minutes: u64,
}

impl Default for WebSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            owner_link_minutes: 60,
        }
    }
}

/// `[reach]`: how the node learns its public address, reaches members
/// behind routers, and what it relays for them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReachSection {
    /// Learn this node's public address and NAT from members outside the
    /// LAN, keep a rendezvous, punch and relay.
    pub traversal: bool,
    /// Seconds between looks at this node's public address (a new one,
    /// from DHCP or the provider, is re-advertised at the next look).
    pub observe_every_s: u64,
    /// Ask the home router to map a port to the node (PCP, NAT-PMP),
    /// advertised once a member reached it there.
    pub port_mapping: bool,
    /// Relay packets between members when this node is reachable from
    /// anywhere (it sees only their encrypted QUIC packets).
    pub relay: bool,
    /// Relayed connections at once.
    pub relay_sessions: usize,
    /// MiB per second relayed, over all connections.
    pub relay_mib_per_s: u64,
    /// GiB relayed per day, over all connections.
    pub relay_gib_per_day: u64,
}

impl Default for ReachSection {
    fn default() -> Self {
        Self {
            traversal: true,
            observe_every_s: 60,
            port_mapping: true,
            relay: true,
            relay_sessions: 128,
            relay_mib_per_s: 4,
            relay_gib_per_day: 20,
        }
    }
}

/// `[donation]`: the box owner's rules for what other owners may store here
/// (the box's own owner is not held to them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DonationSection {
    /// Owner ids (hex) that may store here; empty: any owner a member of
    /// the swarm stores for.
    pub owners: Vec<String>,
    /// MiB each owner's shards may take here; absent: no share beyond the
    /// node's quota.
    pub per_owner_mib: Option<u64>,
    /// The longest lease a put may ask for, in days.
    pub longest_lease_days: u64,
}

impl Default for DonationSection {
    fn default() -> Self {
        Self {
            owners: Vec::new(),
            per_owner_mib: None,
            longest_lease_days: 400,
        }
    }
}

impl DonationSection {
    /// The policy it describes; an error names the bad owner id.
    pub fn policy(&self) -> Result<crate::donation::Policy, String> {
        let owners = if self.owners.is_empty() {
            None
        } else {
            Some(
                self.owners
                    .iter()
                    .map(|hex| {
                        cairn_proto::ids::OwnerId::from_hex(hex)
                            .map_err(|e| format!("{hex:?} is not an owner id: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(crate::donation::Policy {
            owners,
            per_owner_bytes: self.per_owner_mib.map(|mib| mib << 20),
            longest_lease_s: self.longest_lease_days.saturating_mul(86_400),
        })
    }
}

/// `[swarm]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmSection {
    /// HOST:PORT other members reach this node at (default: `listen`, when
    /// that names an address).
    pub advertise: Option<String>,
    /// This node's site (household, region), advertised to the swarm.
    pub site: Option<String>,
    /// Announce the box and find others on the LAN by mDNS.
    pub mdns: MdnsMode,
    /// The interfaces mDNS uses (empty: every one but loopback).
    pub mdns_interfaces: Vec<String>,
}

/// When the box speaks mDNS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MdnsMode {
    /// On unless the node is reached at a loopback address (a local test
    /// swarm has no LAN to speak to).
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl DaemonConfig {
    /// Whether to run mDNS: `auto` means unless the node's address is a
    /// loopback one.
    pub fn mdns_enabled(&self) -> bool {
        match self.swarm.mdns {
            MdnsMode::On => true,
            MdnsMode::Off => false,
            MdnsMode::Auto => {
                let advertised = self.advertised_address().and_then(|a| {
                    a.rsplit_once(':').and_then(|(host, _)| {
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<std::net::IpAddr>()
                            .ok()
                    })
                });
                !advertised.unwrap_or(self.listen.ip()).is_loopback()
            }
        }
    }

    /// Where other members reach this node, if known.
    pub fn advertised_address(&self) -> Option<String> {
        self.swarm
            .advertise
            .clone()
            .or_else(|| (!self.listen.ip().is_unspecified()).then(|| self.listen.to_string()))
    }
}

/// `[steward]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StewardSection {
    /// Keep owners' steward tables (owners' clients name their steward).
    pub enabled: bool,
    /// Seconds a holder may be unreachable before its shards are rebuilt
    /// elsewhere (a reboot must fit in it).
    pub grace_s: u64,
    /// Every shard is audited at least this often, seconds.
    pub audit_period_s: u64,
    /// Seconds between the steward's rounds.
    pub tick_s: u64,
    /// Segments one owner may have tracked here.
    pub max_segments_per_owner: u64,
    /// Owners this steward keeps tables for.
    pub max_owners: u64,
    /// Repairs running at once, at most.
    pub repairs_in_flight: usize,
}

impl StewardSection {
    /// The steward's policy from these settings.
    pub fn policy(&self) -> crate::steward::StewardPolicy {
        crate::steward::StewardPolicy {
            grace_s: self.grace_s,
            audit_period_s: self.audit_period_s,
            max_segments_per_owner: self.max_segments_per_owner,
            max_owners: self.max_owners,
            repairs_in_flight: self.repairs_in_flight,
            ..crate::steward::StewardPolicy::default()
        }
    }
}

impl Default for StewardSection {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_s: 30 * 60,
            audit_period_s: 30 * 24 * 3600,
            tick_s: 30,
            max_segments_per_owner: 8_000_000,
            max_owners: 64,
            repairs_in_flight: 96,
        }
    }
}

/// `[board]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BoardSection {
    /// `auto`, `rpi4`, `rpi5`, `generic`, `simulated` or `none`.
    pub profile: String,
    /// For `simulated`: the directory of value files.
    pub simulated_dir: Option<PathBuf>,
    /// An LED class device for the status LED.
    pub led_class: Option<PathBuf>,
    /// The status LED's GPIO chip (a `/dev` path or a label).
    pub led_chip: Option<String>,
    /// The status LED's line.
    pub led_line: Option<u32>,
    /// The LED lights when its line is low.
    pub led_active_low: bool,
    /// The button's GPIO chip (a `/dev` path or a label).
    pub button_chip: Option<String>,
    /// The button's line.
    pub button_line: Option<u32>,
    /// The button reads low when pressed.
    pub button_active_low: bool,
    /// An I2C temperature sensor: `lm75`, `lm75b` or `tmp102`.
    pub sensor: Option<String>,
    /// Its bus.
    pub sensor_bus: PathBuf,
    /// Its 7-bit address.
    pub sensor_address: u8,
    /// The SoC's thermal zone `temp` file.
    pub thermal_zone: Option<PathBuf>,
    /// Minutes the pairing window stays open.
    pub pairing_minutes: u64,
}

impl Default for BoardSection {
    fn default() -> Self {
        Self {
            profile: "auto".into(),
            simulated_dir: None,
            led_class: None,
            led_chip: None,
            led_line: None,
            led_active_low: false,
            button_chip: None,
            button_line: None,
            button_active_low: true,
            sensor: None,
            sensor_bus: "/dev/i2c-1".into(),
            sensor_address: 0x48,
            thermal_zone: None,
            pairing_minutes: 5,
        }
    }
}

impl BoardSection {
    /// The board support's view of this section.
    pub fn to_board_config(&self) -> Result<BoardConfig, String> {
        let profile = match self.profile.as_str() {
            "auto" => Profile::Auto,
            "rpi4" => Profile::RaspberryPi4,
            "rpi5" => Profile::RaspberryPi5,
            "generic" => Profile::Generic,
            "none" => Profile::None,
            "simulated" => Profile::Simulated(self.simulated_dir.clone().ok_or(
                "profile \"simulated\" needs simulated_dir, the directory of value files",
            )?),
            other => {
                return Err(format!(
                    "unknown board profile {other:?}; use auto, rpi4, rpi5, generic, simulated or none"
                ));
            }
        };
        let chip = |name: &str| {
            if name.starts_with('/') {
                Chip::Path(name.into())
            } else {
                Chip::Label(name.into())
            }
        };
        let line_pair =
            |what: &str, chip_name: &Option<String>, line: Option<u32>| match (chip_name, line) {
                (Some(c), Some(l)) => Ok(Some((chip(c), l))),
                (None, None) => Ok(None),
                _ => Err(format!(
                    "{what}_chip and {what}_line go together; give both or neither"
                )),
            };
        let led = match (
            &self.led_class,
            line_pair("led", &self.led_chip, self.led_line)?,
        ) {
            (Some(_), Some(_)) => {
                return Err("give led_class or led_chip/led_line, not both".into());
            }
            (Some(class), None) => Some(LedWiring::Class(vec![class.clone()])),
            (None, Some((chip, line))) => Some(LedWiring::Gpio {
                chip,
                line,
                active_low: self.led_active_low,
            }),
            (None, None) => None,
        };
        let button =
            line_pair("button", &self.button_chip, self.button_line)?.map(|(chip, line)| {
                ButtonWiring::Gpio {
                    chip,
                    line,
                    active_low: self.button_active_low,
                }
            });
        let sensor = match &self.sensor {
            None => None,
            Some(name) => Some(SensorWiring {
                bus: self.sensor_bus.clone(),
                address: self.sensor_address,
                kind: SensorKind::parse(name)
                    .ok_or_else(|| format!("unknown sensor {name:?}; use lm75, lm75b or tmp102"))?,
            }),
        };
        Ok(BoardConfig {
            profile,
            led,
            button,
            sensor,
            thermal_zone: self.thermal_zone.clone(),
        })
    }

    /// How long the pairing window stays open.
    pub fn pairing_window(&self) -> Duration {
        Duration::from_secs(self.pairing_minutes * 60)
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// MiB left free on every disk.
    pub reserve_mib: u64,
    /// GiB this node donates in all; absent: all free space.
    pub quota_gib: Option<u64>,
    /// Largest shard accepted, MiB.
    pub max_shard_mib: u64,
    /// Bytes per second scrub may read, MiB.
    pub scrub_mib_per_s: u64,
    /// Seconds between rounds that delete shards whose lease ran out.
    pub lease_gc_every_s: u64,
    /// Most shards one such round deletes (the rest wait for the next).
    pub lease_gc_per_round: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            reserve_mib: 256,
            quota_gib: None,
            max_shard_mib: 16,
            scrub_mib_per_s: 8,
            lease_gc_every_s: 600,
            lease_gc_per_round: 1024,
        }
    }
}

/// `[network]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Serve any authenticated key (a lab setting; swarm membership comes later).
    pub allow_any: bool,
    /// Keys (node ids, `cn…` or hex) allowed to connect.
    pub allow: Vec<String>,
    /// Requests a peer may have open at once.
    pub max_streams_per_peer: u32,
    /// Requests per second a peer may sustain.
    pub requests_per_second: u32,
    /// Requests a peer may make in a burst.
    pub request_burst: u32,
    /// Seconds one request may take, body included.
    pub request_timeout_s: u64,
    /// Seconds of silence before a connection is closed.
    pub idle_timeout_s: u64,
    /// Seconds a stop waits for requests in flight.
    pub drain_timeout_s: u64,
    /// MiB of incoming shard bodies held in memory at once, over all peers;
    /// further puts wait for room (bounds memory on a small board).
    pub max_buffered_mib: u64,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            allow_any: false,
            allow: Vec::new(),
            max_streams_per_peer: 32,
            requests_per_second: 128,
            request_burst: 256,
            request_timeout_s: 60,
            idle_timeout_s: 60,
            drain_timeout_s: 10,
            max_buffered_mib: 256,
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cairn")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], 7447))
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {source}; pass another one with --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is invalid or has a wrong key or value (the message names the line and key).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// toml's description, with line, column and key.
        message: String,
    },
    /// A value parses but makes no sense.
    #[error("{path}: `{key}`: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl DaemonConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks configuration text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.check(path)?;
        Ok(config)
    }

    /// Checks that the values make sense together; `path` names the file
    /// that set them (the configuration, or the owner's settings over it).
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let config = self;
        let value_error = |key: &str, message: String| ConfigError::Value {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if config.disks.is_empty() && config.disks_dir.is_none() {
            return Err(value_error(
                "disks",
                "no data disks given; list at least one mountpoint, or set `disks_dir` to a \
                 directory where data disks are mounted"
                    .into(),
            ));
        }
        config
            .allowed_keys()
            .map_err(|e| value_error("network.allow", e))?;
        config
            .donation
            .policy()
            .map_err(|e| value_error("donation.owners", e))?;
        if config.donation.longest_lease_days == 0 {
            return Err(value_error(
                "donation.longest_lease_days",
                "must be at least 1 (owners' clients ask for 90-day leases)".into(),
            ));
        }
        if config.store.max_shard_mib == 0 || config.store.max_shard_mib > 64 {
            return Err(value_error(
                "store.max_shard_mib",
                "must be between 1 and 64".into(),
            ));
        }
        if config.network.max_buffered_mib < config.store.max_shard_mib {
            return Err(value_error(
                "network.max_buffered_mib",
                format!(
                    "must be at least store.max_shard_mib ({}), or no shard could be received",
                    config.store.max_shard_mib
                ),
            ));
        }
        config
            .board
            .to_board_config()
            .map_err(|e| value_error("board", e))?;
        if config.board.pairing_minutes == 0 || config.board.pairing_minutes > 60 {
            return Err(value_error(
                "board.pairing_minutes",
                "must be between 1 and 60".into(),
            ));
        }
        if config.steward.tick_s == 0
            || config.steward.audit_period_s == 0
            || config.steward.repairs_in_flight == 0
        {
            return Err(value_error(
                "steward",
                "tick_s, audit_period_s and repairs_in_flight must be at least 1".into(),
            ));
        }
        if config.network.request_timeout_s == 0 || config.network.idle_timeout_s == 0 {
            return Err(value_error(
                "network",
                "timeouts must be at least 1 second".into(),
            ));
        }
        if let Some(site) = &config.swarm.site
            && (site.is_empty()
                || site.len() > cairn_proto::MAX_SITE
                || site.chars().any(char::is_control))
        {
            return Err(value_error(
                "swarm.site",
                format!(
                    "a site is 1 to {} bytes of printable text",
                    cairn_proto::MAX_SITE
                ),
            ));
        }
        if config.donation.owners.len() > cairn_proto::MAX_DONATION_OWNERS {
            return Err(value_error(
                "donation.owners",
                format!("at most {} owners", cairn_proto::MAX_DONATION_OWNERS),
            ));
        }
        Ok(())
    }

    /// The allow list as node ids.
    pub fn allowed_keys(&self) -> Result<Vec<NodeId>, String> {
        self.network
            .allow
            .iter()
            .map(|text| NodeId::from_human(text).map_err(|e| e.to_string()))
            .collect()
    }

    /// One request's deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.network.request_timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::parse(text, Path::new("/etc/cairn/cairnd.toml"))
    }

    #[test]
    fn only_the_disks_are_required() {
        let config = parse("disks = ['/srv/cairn/disks/a']\n").unwrap();
        assert_eq!(config.listen.port(), 7447);
        assert_eq!(config.store.max_shard_mib, 16);
        assert!(!config.network.allow_any);
        let example = include_str!("../../../systemd/cairnd.toml");
        parse(example).unwrap();
    }

    #[test]
    fn mdns_stays_off_the_lan_for_a_loopback_swarm_unless_asked() {
        let enabled = |extra: &str| {
            parse(&format!("disks = ['/d']\n{extra}"))
                .unwrap()
                .mdns_enabled()
        };
        assert!(
            enabled(""),
            "the appliance default: listen on every address"
        );
        assert!(!enabled("listen = '127.0.0.1:7000'\n"));
        assert!(!enabled("listen = '[::1]:7000'\n"));
        assert!(enabled("listen = '192.168.1.5:7000'\n"));
        assert!(!enabled("[swarm]\nadvertise = '127.0.0.2:7000'\n"));
        assert!(enabled("[swarm]\nadvertise = 'box.example:7000'\n"));
        assert!(enabled("listen = '127.0.0.1:7000'\n[swarm]\nmdns = 'on'\n"));
        assert!(!enabled("[swarm]\nmdns = 'off'\n"));
        assert!(parse("disks = ['/d']\n[swarm]\nmdns = 'maybe'\n").is_err());
    }

    #[test]
    fn mistakes_name_the_key_and_the_line() {
        let err = parse("disks = ['/d']\n[store]\nreserve_mb = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("reserve_mb"),
            "{err}"
        );
        let err = parse("disks = ['/d']\nlisten = 'nowhere'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("listen"), "{err}");
        let err = parse("disks = []\n").unwrap_err().to_string();
        assert!(err.contains("`disks`"), "{err}");
        let err = parse("disks = ['/d']\n[board]\nprofile = 'pi9'\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pi9") && err.contains("rpi4"), "{err}");
        let err = parse("disks = ['/d']\n[board]\nled_line = 17\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("led_chip"), "{err}");
        let err = parse("disks = ['/d']\n[network]\nallow = ['cnzz']\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("network.allow") && err.contains("cnzz"),
            "{err}"
        );
    }
}

//! `cairnd`'s configuration file (TOML). Everything but the data disks has a
//! default; unknown keys are errors, so a typo is caught, with its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ids::NodeId;

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
    pub disks: Vec<PathBuf>,
    /// Store tuning.
    #[serde(default)]
    pub store: StoreSection,
    /// Who may connect and how much they may ask.
    #[serde(default)]
    pub network: NetworkSection,
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
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            reserve_mib: 256,
            quota_gib: None,
            max_shard_mib: 16,
            scrub_mib_per_s: 8,
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
        let value_error = |key: &str, message: String| ConfigError::Value {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if config.disks.is_empty() {
            return Err(value_error(
                "disks",
                "no data disks given; list at least one mountpoint".into(),
            ));
        }
        config
            .allowed_keys()
            .map_err(|e| value_error("network.allow", e))?;
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
        if config.network.request_timeout_s == 0 || config.network.idle_timeout_s == 0 {
            return Err(value_error(
                "network",
                "timeouts must be at least 1 second".into(),
            ));
        }
        Ok(config)
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
        let example = include_str!("../../systemd/cairnd.toml");
        parse(example).unwrap();
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
        let err = parse("disks = ['/d']\n[network]\nallow = ['cnzz']\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("network.allow") && err.contains("cnzz"),
            "{err}"
        );
    }
}

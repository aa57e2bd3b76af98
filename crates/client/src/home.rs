//! The owner's client directory (`~/.config/cairn` by default): the owner
//! secret (`secret`, 32 bytes, mode 0600), the settings (`client.toml`: the
//! coding, the nodes, the steward, the swarm ticket), a cache of the
//! snapshot history (`history.cache`) and of tree nodes (`trees/`) so that
//! a command need not fetch them from the swarm again, and the journal of
//! a put in progress (`put.journal`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use cairn_proto::NodeAddr;
use cairn_proto::ids::NodeId;
use cairn_proto::membership::MemberCert;

use crate::ClientError;
use crate::keys::OwnerSecret;
use crate::local::{Journal, TreeCache};
use crate::segment::Coding;
use crate::swarm::Swarm;
use crate::tree::{History, StoredRef};

/// The client's settings, `client.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Data shards per segment.
    pub k: u8,
    /// Parity shards per segment.
    pub m: u8,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// This client's swarm membership certificate (a ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The node that stewards this owner's data (audits, repairs, renews).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steward: Option<NodeId>,
    /// The nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeAddr>,
}

fn default_timeout() -> u64 {
    30
}

impl Default for ClientConfig {
    fn default() -> Self {
        let coding = Coding::default();
        Self {
            k: coding.k,
            m: coding.m,
            timeout_s: default_timeout(),
            steward: None,
            member: None,
            nodes: Vec::new(),
        }
    }
}

impl ClientConfig {
    /// Whether `node` is listed.
    pub fn knows(&self, node: NodeId) -> bool {
        self.nodes.iter().any(|n| n.node == node)
    }

    /// Adds `entry` unless a node with its id is listed; whether it did.
    pub fn add_node(&mut self, entry: &NodeAddr) -> bool {
        let known = self.knows(entry.node);
        if !known {
            self.nodes.push(entry.clone());
        }
        !known
    }

    /// Lists `entry`, replacing a node of the same id.
    pub fn replace_node(&mut self, entry: &NodeAddr) {
        self.nodes.retain(|n| n.node != entry.node);
        self.nodes.push(entry.clone());
    }

    /// The swarm certificate, if the client is in a swarm.
    pub fn member(&self) -> Result<Option<MemberCert>, ClientError> {
        self.member
            .as_deref()
            .map(MemberCert::from_ticket)
            .transpose()
            .map_err(|e| ClientError::Ticket {
                what: "client.toml: member".into(),
                reason: e.to_string(),
            })
    }

    /// The erasure coding of new data, checked.
    pub fn coding(&self) -> Result<Coding, ClientError> {
        let coding = Coding {
            k: self.k,
            m: self.m,
        };
        coding.validate()?;
        Ok(coding)
    }
}

/// Reads a node id as people write it, naming `what` on failure.
pub fn parse_node(text: &str, what: &str) -> Result<NodeId, ClientError> {
    NodeId::from_human(text).map_err(|source| ClientError::BadId {
        what: what.to_owned(),
        source,
    })
}

/// The cached history, with the reference it was stored under: it is used
/// only when the newest root names exactly that reference (so neither
/// another identity's cache nor a rival write with the same number is
/// mistaken for it).
#[derive(Serialize, Deserialize)]
pub(crate) struct CachedHistory {
    pub(crate) stored_as: StoredRef,
    pub(crate) history: History,
}

/// The owner's client directory.
#[derive(Debug, Clone)]
pub struct ClientHome {
    dir: PathBuf,
}

impl ClientHome {
    /// The directory `explicit`, else `$CAIRN_HOME`, else `~/.config/cairn`.
    pub fn locate(explicit: Option<PathBuf>) -> Result<Self, ClientError> {
        let dir = match explicit.or_else(|| std::env::var_os("CAIRN_HOME").map(PathBuf::from)) {
            Some(dir) => dir,
            None => PathBuf::from(std::env::var_os("HOME").ok_or(ClientError::NoHome)?)
                .join(".config/cairn"),
        };
        Ok(Self { dir })
    }

    /// A client directory at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn secret_path(&self) -> PathBuf {
        self.dir.join("secret")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    fn cache_path(&self) -> PathBuf {
        self.dir.join("history.cache")
    }

    /// Whether an owner secret is kept here.
    pub fn has_secret(&self) -> bool {
        self.secret_path().exists()
    }

    /// The owner secret.
    pub fn secret(&self) -> Result<OwnerSecret, ClientError> {
        let path = self.secret_path();
        let bytes = std::fs::read(&path).map_err(|source| ClientError::NoIdentity {
            dir: self.dir.clone(),
            source,
        })?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ClientError::DamagedSecret { path })?;
        Ok(OwnerSecret::from_bytes(bytes))
    }

    /// Keeps `secret` as the owner secret (durably, mode 0600).
    pub fn save_secret(&self, secret: &OwnerSecret) -> Result<(), ClientError> {
        self.write_private(&self.secret_path(), &secret.to_bytes())
    }

    /// The settings; the defaults if there is no settings file yet.
    pub fn config(&self) -> Result<ClientConfig, ClientError> {
        let path = self.config_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ClientError::Settings {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(source) => Err(ClientError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Whether a settings file exists.
    pub fn has_config(&self) -> bool {
        self.config_path().exists()
    }

    /// Replaces the settings.
    pub fn save_config(&self, config: &ClientConfig) -> Result<(), ClientError> {
        let text = toml::to_string(config).map_err(|e| ClientError::Settings {
            path: self.config_path(),
            reason: e.to_string(),
        })?;
        self.write_private(&self.config_path(), text.as_bytes())
    }

    /// A swarm handle from the settings, without the catalog (the
    /// commands about nodes need no more); `extra` is a node not (yet)
    /// listed. Close it when done.
    pub fn swarm(&self, extra: Option<NodeAddr>) -> Result<(Arc<Swarm>, OwnerSecret), ClientError> {
        let secret = self.secret()?;
        let config = self.config()?;
        let mut nodes = config.nodes.clone();
        if let Some(extra) = extra {
            nodes.retain(|n| n.node != extra.node);
            nodes.push(extra);
        }
        if nodes.is_empty() {
            return Err(ClientError::NoNodes);
        }
        let swarm = Swarm::new(
            secret.keys(),
            secret.client_key(),
            nodes,
            config.coding()?,
            Duration::from_secs(config.timeout_s),
            config.member()?,
        )
        .map_err(ClientError::swarm("opening the client's endpoint"))?;
        Ok((swarm, secret))
    }

    pub(crate) fn cache(&self) -> Option<CachedHistory> {
        crate::tree::decode(&std::fs::read(self.cache_path()).ok()?, "the history cache").ok()
    }

    pub(crate) fn save_cache(&self, cache: &CachedHistory) -> Result<(), ClientError> {
        self.write_private(&self.cache_path(), &crate::tree::encode(cache))
    }

    /// The cache of tree nodes read or written by this client.
    pub fn trees(&self, convergence: [u8; 32]) -> TreeCache {
        TreeCache::new(self.dir.join("trees"), convergence)
    }

    /// The journal of a put in progress.
    pub(crate) fn journal(&self) -> Journal {
        Journal::at(&self.dir.join("put.journal"))
    }

    fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("protect", &self.dir))?;
        cairn_host::durable::replace_file(path, bytes, 0o600).map_err(io("write", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_toml_keeps_nodes_in_the_form_people_type_and_reads_the_old_one() {
        let node = NodeId([0x5a; 32]);
        // As `cairn` wrote it before nodes had one shape: `id`, cn form.
        let old = format!(
            "k = 4\nm = 2\nsteward = \"{}\"\n\n[[node]]\nid = \"{}\"\naddr = \"192.0.2.7:7447\"\nsite = \"home\"\n\n[[node]]\nid = \"{}\"\naddr = \"192.0.2.9:7447\"\n",
            node.to_human(),
            node.to_human(),
            node.to_hex()
        );
        let config: ClientConfig = toml::from_str(&old).unwrap();
        assert_eq!(config.steward, Some(node));
        assert_eq!(config.nodes.len(), 2);
        assert_eq!(config.nodes[0].node, node);
        assert_eq!(config.nodes[0].site.as_deref(), Some("home"));
        assert_eq!(config.nodes[1].node, node);
        assert_eq!(config.nodes[1].site, None);
        let written = toml::to_string(&config).unwrap();
        assert!(
            written.contains(&format!("node = \"{}\"", node.to_human())),
            "{written}"
        );
        assert!(!written.contains("site = \"\""), "{written}");
        assert_eq!(toml::from_str::<ClientConfig>(&written).unwrap(), config);
        let bad = old.replace(&node.to_hex(), "nonsense");
        assert!(toml::from_str::<ClientConfig>(&bad).is_err());
    }
}

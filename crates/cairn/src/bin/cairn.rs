//! `cairn`: the owner's tool. Files are chunked, encrypted and erasure-coded
//! here, on the owner's machine; nodes only ever see shards.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use cairn_client::catalog::{
    BlobRef, Catalog, Manifest, NodeEntry, SegmentRef, Selector, VersionEntry,
};
use cairn_client::keys::OwnerSecret;
use cairn_client::segment::{Coding, TAG_LEN};
use cairn_client::swarm::{Swarm, TransferStats};
use cairn_net::Peer;
use cairn_node::net::discovery::LanDiscovery;
use cairn_proto::NodeAddr;
use cairn_proto::ids::{NodeId, OwnerId};
use cairn_proto::membership::{MemberCert, Removal, Role};

/// The owner's tool: store files in your Cairn swarm and get them back.
#[derive(Parser)]
#[command(name = "cairn", version, about, long_about = None)]
struct Cli {
    /// Where the owner's key and settings live (default: $CAIRN_HOME, else ~/.config/cairn).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Print results as JSON, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create your owner identity and show its recovery phrase.
    Init {
        /// Replace an existing identity (its files stay readable only with its phrase).
        #[arg(long)]
        force: bool,
    },
    /// Rebuild your identity from its recovery phrase (read from standard input).
    Recover {
        /// A node that holds your data, as ID@HOST:PORT.
        #[arg(long)]
        node: Vec<String>,
    },
    /// Show your owner id and the key your nodes must allow.
    Id,
    /// Add a node to use: its id (`cairnd --print-id`) and address.
    AddNode {
        /// The node id (cn…).
        id: String,
        /// HOST:PORT.
        addr: String,
        /// Its site (household, region): shards of one segment spread over sites.
        #[arg(long)]
        site: Option<String>,
        /// Make it your steward: it audits your shards, rebuilds lost ones
        /// elsewhere and renews their leases (your own box, ideally).
        #[arg(long)]
        steward: bool,
    },
    /// List your nodes, whether they answer, and their state.
    Nodes,
    /// Find Cairn boxes on this LAN by mDNS.
    Discover {
        /// How long to listen.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Listen on this interface only (repeatable; default: all but loopback).
        #[arg(long = "interface")]
        interfaces: Vec<String>,
        /// Add the boxes found to your nodes (as `add-node` does).
        #[arg(long)]
        add: bool,
    },
    /// Claim a box whose pairing window is open (hold its button about 5 s
    /// until the LED blips once a second): it becomes yours and is added to
    /// your nodes.
    Claim {
        /// The box's node id (cn…), as its log shows when the window opens.
        id: String,
        /// HOST:PORT.
        addr: String,
        /// Its site (household, region).
        #[arg(long)]
        site: Option<String>,
    },
    /// Hand one of your boxes to another owner (lending it to a neighbour,
    /// say). They give you the transfer card that their `cairn id` shows.
    Transfer {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// The new owner's transfer card (OWNER:CLIENT_KEY).
        #[arg(long)]
        to: String,
    },
    /// Stop one of your boxes taking new shards, so that it can be emptied
    /// before it leaves; `--undo` makes it take shards again.
    Drain {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// Take shards again.
        #[arg(long)]
        undo: bool,
    },
    /// Store files and directories (each put is a new version).
    Put {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Read a file back.
    Get {
        /// The path as stored (see `cairn ls`).
        path: String,
        /// Where to write it (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The version current at this time (RFC 3339, or Unix seconds).
        #[arg(long, conflicts_with = "version")]
        at: Option<String>,
        /// This version number.
        #[arg(long)]
        version: Option<u32>,
    },
    /// List stored files.
    Ls {
        /// Only paths starting with this.
        prefix: Option<String>,
    },
    /// List the versions of a file.
    Versions {
        /// The path as stored.
        path: String,
    },
    /// Remove a file (earlier versions stay readable by --version or --at).
    Rm {
        /// The path as stored.
        path: String,
    },
    /// Check that the shards of files are held, and which losses they survive.
    Status {
        /// Only paths starting with this.
        prefix: Option<String>,
    },
    /// Found a swarm, invite to it, accept an invite, remove a member.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// The swarm's members as gossip knows them (asked of your first node
    /// that answers): up or down, site, space, software.
    Members,
    /// Make one of your nodes join your swarm with its invite ticket.
    Join {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// The node's invite ticket (cairn-invite:…), from the swarm's founder.
        #[arg(long)]
        invite: String,
    },
}

#[derive(Subcommand, Debug)]
enum SwarmCommand {
    /// Found a swarm: your owner key becomes its authority, its public key
    /// the swarm id; your client becomes its first member.
    Create,
    /// Invite a node (its node id) or another owner (their client key,
    /// with --client) into your swarm: prints the ticket to hand over.
    Invite {
        /// The node id or client key (cn…).
        key: String,
        /// Invite an owner's client, not a node.
        #[arg(long)]
        client: bool,
        /// Days the membership lasts (renew by inviting again).
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Accept an invite for your client (from a swarm's founder).
    Accept {
        /// The ticket (cairn-invite:…).
        ticket: String,
    },
    /// Remove a member (node id or client key) from your swarm: every node
    /// you know is told, and refuses it from then on.
    Remove {
        /// The member's key (cn…).
        key: String,
    },
}

/// The client's settings file, `client.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    /// Data shards per segment.
    k: u8,
    /// Parity shards per segment.
    m: u8,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    timeout_s: u64,
    /// This client's swarm membership certificate (a ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<String>,
    /// The node that stewards this owner's data (audits, repairs, renews).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    steward: Option<String>,
    /// The nodes.
    #[serde(default, rename = "node")]
    nodes: Vec<NodeConfig>,
}

fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeConfig {
    id: String,
    addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site: Option<String>,
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

struct Home {
    dir: PathBuf,
}

/// The cached catalog, with the reference it was stored under: it is used
/// only when the newest root names exactly that reference (so neither
/// another identity's cache nor a rival write with the same number is
/// mistaken for it).
#[derive(Serialize, Deserialize)]
struct CachedCatalog {
    stored_as: BlobRef,
    catalog: Catalog,
}

impl Home {
    fn new(explicit: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match explicit.or_else(|| std::env::var_os("CAIRN_HOME").map(PathBuf::from)) {
            Some(dir) => dir,
            None => PathBuf::from(
                std::env::var_os("HOME").context("neither --home, CAIRN_HOME nor HOME is set")?,
            )
            .join(".config/cairn"),
        };
        Ok(Self { dir })
    }

    fn secret_path(&self) -> PathBuf {
        self.dir.join("secret")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("client.toml")
    }

    fn cache_path(&self) -> PathBuf {
        self.dir.join("catalog.cache")
    }

    fn secret(&self) -> anyhow::Result<OwnerSecret> {
        let path = self.secret_path();
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "no owner identity in {}; run `cairn init` (or `cairn recover`)",
                self.dir.display()
            )
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            anyhow::anyhow!(
                "{} is damaged; run `cairn recover` with your phrase",
                path.display()
            )
        })?;
        Ok(OwnerSecret::from_bytes(bytes))
    }

    fn write_private(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        cairn_host::durable::replace_file(path, bytes, 0o600)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    fn config(&self) -> anyhow::Result<ClientConfig> {
        let path = self.config_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save_config(&self, config: &ClientConfig) -> anyhow::Result<()> {
        let text = toml::to_string(config)?;
        self.write_private(&self.config_path(), text.as_bytes())
    }

    fn cache(&self) -> Option<CachedCatalog> {
        postcard::from_bytes(&std::fs::read(self.cache_path()).ok()?).ok()
    }

    fn save_cache(&self, cache: &CachedCatalog) -> anyhow::Result<()> {
        self.write_private(&self.cache_path(), &postcard::to_stdvec(cache)?)
    }
}

use cairn_host::unix_now;

fn node_entries(config: &ClientConfig) -> anyhow::Result<Vec<NodeEntry>> {
    config
        .nodes
        .iter()
        .map(|n| {
            Ok(NodeEntry {
                id: NodeId::from_human(&n.id)
                    .with_context(|| format!("client.toml: node id {}", n.id))?,
                addr: n.addr.clone(),
                site: n.site.clone(),
            })
        })
        .collect()
}

/// A swarm handle from the client's settings, without the catalog (the
/// commands about nodes need no more); `extra` is a node not (yet) listed.
fn bare_swarm(home: &Home, extra: Option<NodeEntry>) -> anyhow::Result<(Arc<Swarm>, OwnerSecret)> {
    let secret = home.secret()?;
    let config = home.config()?;
    let mut nodes = node_entries(&config)?;
    if let Some(extra) = extra {
        nodes.retain(|n| n.id != extra.id);
        nodes.push(extra);
    }
    if nodes.is_empty() {
        bail!("no nodes known; add one with `cairn add-node ID HOST:PORT`");
    }
    let coding = Coding {
        k: config.k,
        m: config.m,
    };
    coding.validate()?;
    let member = config
        .member
        .as_deref()
        .map(MemberCert::from_ticket)
        .transpose()
        .context("client.toml: member")?;
    let swarm = Swarm::new(
        secret.keys(),
        secret.client_key(),
        nodes,
        coding,
        Duration::from_secs(config.timeout_s),
        member,
    )?;
    Ok((swarm, secret))
}

/// A connection to one of your nodes, named by its id: the swarm handle
/// (close it when done), your secret, the node's id, and the peer.
async fn your_node(
    home: &Home,
    node: &str,
) -> anyhow::Result<(Arc<Swarm>, OwnerSecret, NodeId, Arc<Peer>)> {
    let id = NodeId::from_human(node).with_context(|| format!("node id {node}"))?;
    let (swarm, secret) = bare_swarm(home, None)?;
    let peer = swarm.peer(id).await.with_context(|| {
        format!("reaching {node} (is it in your node list, `cairn nodes`, and running?)")
    })?;
    Ok((swarm, secret, id, peer))
}

/// An open session: keys, nodes, and the catalog as the swarm has it.
struct Session {
    home: Home,
    swarm: Arc<Swarm>,
    steward: Option<NodeId>,
    seq: u64,
    catalog: Catalog,
    json: bool,
}

impl Session {
    async fn open(home: Home, json: bool) -> anyhow::Result<Self> {
        let (swarm, _) = bare_swarm(&home, None)?;
        let steward = home
            .config()?
            .steward
            .map(|id| NodeId::from_human(&id).with_context(|| format!("client.toml: steward {id}")))
            .transpose()?;
        let (seq, catalog) = match swarm.latest_root().await? {
            None => (0, Catalog::default()),
            Some((seq, pointer)) => match home.cache() {
                Some(cache) if cache.stored_as == pointer.catalog => (seq, cache.catalog),
                _ => {
                    let catalog_ref = located(&swarm, steward, &pointer.catalog).await;
                    let (_, bytes) = swarm
                        .get_blob(&catalog_ref, Vec::new(), &|_| {})
                        .await
                        .context("reading the catalog from the swarm")?;
                    let catalog: Catalog = postcard::from_bytes(&bytes)
                        .context("the stored catalog does not decode")?;
                    (seq, catalog)
                }
            },
        };
        Ok(Self {
            home,
            swarm,
            steward,
            seq,
            catalog,
            json,
        })
    }

    /// `blob` with its holders as the steward knows them now.
    async fn located(&self, blob: &BlobRef) -> BlobRef {
        located(&self.swarm, self.steward, blob).await
    }

    /// Hands what was just stored to the steward. The data is stored
    /// either way; without a steward nothing repairs or renews it.
    async fn track(&self, blobs: &[&BlobRef]) {
        let Some(steward) = self.steward else {
            return;
        };
        if let Err(e) = self.swarm.track(steward, blobs).await {
            eprintln!(
                "cairn: warning: stored, but {e}; until the steward is told, nothing audits, repairs or renews this data: once it answers, put the same files again (unchanged data is not uploaded twice, and the steward is told)"
            );
        }
    }

    /// Stores the catalog and points a new root record at it; returns the
    /// catalog's reference.
    async fn commit(&mut self) -> anyhow::Result<BlobRef> {
        let bytes = postcard::to_stdvec(&self.catalog)?;
        let (blob, _) = self
            .swarm
            .put_blob(std::io::Cursor::new(bytes), &HashMap::new(), &|_| {})
            .await
            .context("storing the catalog")?;
        let seq = self.seq + 1;
        self.swarm.put_root(seq, &blob).await.context(
            "publishing the new root record (another cairn may have changed your files at the same time; run the command again)",
        )?;
        self.seq = seq;
        self.home.save_cache(&CachedCatalog {
            stored_as: blob.clone(),
            catalog: self.catalog.clone(),
        })?;
        Ok(blob)
    }

    /// A version's manifest, its content's holders as the steward knows them.
    async fn manifest(&self, entry: &VersionEntry) -> anyhow::Result<Manifest> {
        let manifest_ref = self.located(&entry.manifest).await;
        let (_, bytes) = self
            .swarm
            .get_blob(&manifest_ref, Vec::new(), &|_| {})
            .await
            .context("reading the file's manifest")?;
        let mut manifest: Manifest =
            postcard::from_bytes(&bytes).context("the manifest does not decode")?;
        manifest.content = self.located(&manifest.content).await;
        Ok(manifest)
    }
}

/// `blob` with holders from the steward where it knows better (shards it
/// repaired onto other nodes); as stored when there is no steward or it
/// cannot be asked.
async fn located(swarm: &Swarm, steward: Option<NodeId>, blob: &BlobRef) -> BlobRef {
    let mut blob = blob.clone();
    if let Some(steward) = steward
        && let Err(e) = swarm.relocate(steward, &mut blob).await
    {
        eprintln!("cairn: note: {e}; reading from the holders as stored");
    }
    blob
}

fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

fn when(time: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(time)).to_string()
}

fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let time = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("--at {text}: give a time like 2026-11-22T10:00:00Z or Unix seconds")
    })?;
    Ok(time.duration_since(UNIX_EPOCH)?.as_secs())
}

/// Files under `path` (itself if it is a file), sorted.
fn files_under(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            files_under(&entry, out)?;
        }
    } else if meta.is_file() {
        out.push(path.to_owned());
    }
    Ok(())
}

fn stats_json(stats: &TransferStats) -> serde_json::Value {
    serde_json::json!({
        "bytes": stats.bytes,
        "segments": stats.segments,
        "reused_segments": stats.reused,
        "shard_bytes": stats.shard_bytes,
        "decoded_segments": stats.decoded,
        "bad_shards": stats.bad_shards.iter().map(|(s, n)| serde_json::json!({"shard": s.to_hex(), "holder": n.to_human()})).collect::<Vec<_>>(),
        "unreachable_nodes": stats.unreachable.iter().map(|n| n.to_human()).collect::<Vec<_>>(),
    })
}

async fn put(session: &mut Session, paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in paths {
        files_under(path, &mut files)?;
    }
    let mut results = Vec::new();
    let mut stored: Vec<BlobRef> = Vec::new();
    for file in files {
        let absolute = std::path::absolute(&file)?;
        let key = absolute.to_string_lossy().into_owned();
        let meta = std::fs::metadata(&file)?;
        // The previous version's segments are reused where the data is unchanged.
        let mut known: HashMap<[u8; 32], SegmentRef> = HashMap::new();
        if let Ok(previous) = session.catalog.select(&key, Selector::Latest) {
            let previous = previous.clone();
            if let Ok(manifest) = session.manifest(&previous).await {
                for segment in manifest.content.segments {
                    known.insert(segment.key, segment);
                }
            }
        }
        let reader = std::fs::File::open(&file)
            .with_context(|| format!("cannot open {}", file.display()))?;
        let bar = progress_bar(meta.len(), &key);
        let (content, stats) = session
            .swarm
            .put_blob(reader, &known, &|n| bar.inc(n))
            .await
            .with_context(|| format!("storing {key}"))?;
        bar.finish_and_clear();
        let size = content.len();
        let manifest = Manifest {
            content,
            mode: meta.permissions().mode() & 0o7777,
        };
        let (manifest_ref, _) = session
            .swarm
            .put_blob(
                std::io::Cursor::new(postcard::to_stdvec(&manifest)?),
                &HashMap::new(),
                &|_| {},
            )
            .await
            .context("storing the manifest")?;
        let version = session
            .catalog
            .add_version(&key, unix_now(), size, manifest_ref.clone());
        stored.push(manifest.content);
        stored.push(manifest_ref);
        results.push((key, version, size, stats));
    }
    let catalog_ref = session.commit().await?;
    stored.push(catalog_ref);
    session.track(&stored.iter().collect::<Vec<_>>()).await;
    for (key, version, bytes, stats) in &results {
        if session.json {
            println!(
                "{}",
                serde_json::json!({"stored": key, "version": version, "size": bytes, "transfer": stats_json(stats)})
            );
        } else {
            println!(
                "stored {key} ({}, version {version}): {} segments, {} already stored, {} of shards uploaded",
                size(*bytes),
                stats.segments,
                stats.reused,
                size(stats.shard_bytes)
            );
        }
    }
    Ok(())
}

async fn get(
    session: &Session,
    path: &str,
    output: Option<PathBuf>,
    selector: Selector,
) -> anyhow::Result<()> {
    let entry = session.catalog.select(path, selector)?.clone();
    let manifest = session.manifest(&entry).await?;
    let bar = progress_bar(entry.size, path);
    // `-o DIR` puts the file inside DIR under its own name, as cp does.
    let output = output.map(|out| {
        if out.is_dir() {
            out.join(Path::new(path).file_name().unwrap_or(path.as_ref()))
        } else {
            out
        }
    });
    // A device or pipe (`-o /dev/null`, a FIFO) is written as it is: a
    // temporary file renamed over it would replace the device itself.
    let special = output
        .as_deref()
        .and_then(|out| std::fs::metadata(out).ok())
        .is_some_and(|meta| !meta.is_file());
    let stats = match &output {
        Some(out) if special => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let (stats, _) = session
                .swarm
                .get_blob(&manifest.content, file, &|n| bar.inc(n))
                .await
                .with_context(|| format!("reading {path}"))?;
            whole(path, &stats, entry.size)?;
            stats
        }
        Some(out) => {
            // Written beside the target and renamed only when complete and verified.
            let tmp = out.with_file_name(format!(
                ".{}.cairn-partial",
                out.file_name()
                    .map_or("out".into(), |n| n.to_string_lossy())
            ));
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let result = session
                .swarm
                .get_blob(&manifest.content, EarlyWriteback::new(file)?, &|n| {
                    bar.inc(n)
                })
                .await
                .map(|(stats, out)| (stats, out.finish()));
            let (stats, file) = match result {
                Ok((stats, file)) => match whole(path, &stats, entry.size) {
                    Ok(()) => (stats, file?),
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                },
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e).with_context(|| format!("reading {path}"));
                }
            };
            drop(file);
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(manifest.mode))?;
            std::fs::rename(&tmp, out)?;
            stats
        }
        None => {
            let (stats, _) = session
                .swarm
                .get_blob(&manifest.content, std::io::stdout(), &|n| bar.inc(n))
                .await
                .with_context(|| format!("reading {path}"))?;
            // Too late to take the bytes back, but never a silent short read.
            whole(path, &stats, entry.size)?;
            stats
        }
    };
    bar.finish_and_clear();
    let report = if session.json {
        serde_json::json!({"read": path, "version": entry.version, "transfer": stats_json(&stats)})
            .to_string()
    } else {
        let mut line = format!(
            "read {path} (version {}, {})",
            entry.version,
            size(stats.bytes)
        );
        if stats.decoded > 0 {
            line += &format!(
                "; {} segments rebuilt from parity because holders were missing",
                stats.decoded
            );
        }
        if !stats.unreachable.is_empty() {
            line += &format!("; {} nodes did not answer", stats.unreachable.len());
        }
        if !stats.bad_shards.is_empty() {
            line += &format!(
                "; {} shards failed verification and were not used",
                stats.bad_shards.len()
            );
        }
        line
    };
    // The report never mixes with file bytes on standard output.
    if output.is_some() {
        println!("{report}");
    } else {
        eprintln!("{report}");
    }
    Ok(())
}

/// Checks that a read delivered every byte the manifest names.
fn whole(path: &str, stats: &TransferStats, size: u64) -> anyhow::Result<()> {
    if stats.bytes != size {
        bail!(
            "{path}: read {} bytes, but its manifest says {size}: this version's record is damaged; try another (`cairn versions {path}`)",
            stats.bytes
        );
    }
    Ok(())
}

/// A file writer that starts writing back to disk while the download goes
/// on (a sync on a second thread every few MiB), so the final fsync has
/// little left to do. What a sync made durable leaves the page cache: a
/// restore of many GiB would otherwise push out everything the machine had
/// cached, and the freed pages serve the rest of the download.
struct EarlyWriteback {
    file: std::fs::File,
    since_sync: usize,
    syncs: std::sync::mpsc::SyncSender<()>,
    syncer: std::thread::JoinHandle<std::io::Result<()>>,
}

impl EarlyWriteback {
    const EVERY: usize = 16 << 20;

    fn new(file: std::fs::File) -> std::io::Result<Self> {
        let clone = file.try_clone()?;
        // One request may wait; more are dropped while a sync runs.
        let (syncs, requests) = std::sync::mpsc::sync_channel::<()>(1);
        let syncer = std::thread::spawn(move || {
            while requests.recv().is_ok() {
                clone.sync_data()?;
                // Only advice: drops the pages that are clean now.
                let _ = rustix::fs::fadvise(&clone, 0, None, rustix::fs::Advice::DontNeed);
            }
            Ok(())
        });
        Ok(Self {
            file,
            since_sync: 0,
            syncs,
            syncer,
        })
    }

    /// Stops the syncer and makes the whole file durable.
    fn finish(self) -> std::io::Result<std::fs::File> {
        drop(self.syncs);
        self.syncer
            .join()
            .map_err(|_| std::io::Error::other("the writeback thread failed"))??;
        self.file.sync_all()?;
        Ok(self.file)
    }
}

impl Write for EarlyWriteback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.since_sync += written;
        if self.since_sync >= Self::EVERY {
            self.since_sync = 0;
            let _ = self.syncs.try_send(());
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

async fn status(session: &Session, prefix: &str) -> anyhow::Result<()> {
    let entries: Vec<(String, VersionEntry)> = session
        .catalog
        .present(prefix)
        .map(|(p, e)| (p.to_owned(), e.clone()))
        .collect();
    for (path, entry) in entries {
        let manifest = session.manifest(&entry).await?;
        let (content_worst, total) = audit_blob(&session.swarm, &manifest.content).await;
        // The file is only as readable as its manifest, which has segments
        // (and holders) of its own.
        let manifest_ref = session.located(&entry.manifest).await;
        let (manifest_worst, _) = audit_blob(&session.swarm, &manifest_ref).await;
        let worst = content_worst.min(manifest_worst);
        let k = manifest.content.coding.map_or(0, |c| usize::from(c.k));
        let spare = worst.saturating_sub(k);
        if session.json {
            println!(
                "{}",
                serde_json::json!({"path": path, "version": entry.version, "healthy_shards_min": worst, "shards_per_segment": total, "k": k, "survives_node_losses": spare})
            );
        } else if worst < k && !manifest.content.is_empty() {
            println!(
                "{path}: UNREADABLE now: a segment has only {worst} of the {k} shards it needs reachable"
            );
        } else {
            println!(
                "{path} (version {}, {}): {worst}/{total} shards healthy in its weakest segment; survives the loss of any {spare} more node{}",
                entry.version,
                size(entry.size),
                if spare == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

/// The fewest healthy shards of any segment (each audited with a fresh
/// challenge), and shards per segment.
async fn audit_blob(swarm: &Arc<Swarm>, blob: &BlobRef) -> (usize, usize) {
    let coding = blob.coding.unwrap_or(swarm.coding);
    let mut worst = coding.total();
    for segment in &blob.segments {
        let shard_len = coding.shard_len(segment.plain_len as usize + TAG_LEN) as u64;
        let mut healthy = 0;
        for shard in &segment.shards {
            let mut seed = [0u8; 32];
            let _ = getrandom::fill(&mut seed);
            if swarm.audit(shard.holder, shard.id, shard_len, seed).await {
                healthy += 1;
            }
        }
        worst = worst.min(healthy);
    }
    (worst, coding.total())
}

const DAY_S: u64 = 24 * 3600;

async fn swarm_command(home: &Home, command: SwarmCommand, json: bool) -> anyhow::Result<()> {
    let secret = home.secret()?;
    let keys = secret.keys();
    let me = keys.owner_id();
    let mut config = home.config()?;
    let current = config
        .member
        .as_deref()
        .map(MemberCert::from_ticket)
        .transpose()
        .context("client.toml: member")?;
    let founded = current.as_ref().is_some_and(|c| c.swarm == me.0);
    let must_found = || -> anyhow::Result<()> {
        match &current {
            Some(c) if c.swarm != me.0 => bail!(
                "only the founder of swarm {} can do this; ask them",
                OwnerId(c.swarm).to_hex()
            ),
            None => bail!("you are in no swarm; found one with `cairn swarm create`"),
            _ => Ok(()),
        }
    };
    match command {
        SwarmCommand::Create => {
            if let Some(c) = &current {
                bail!(
                    "you are in swarm {} already{}",
                    OwnerId(c.swarm).to_hex(),
                    if founded { " (you founded it)" } else { "" }
                );
            }
            let cert = MemberCert::issue(
                &keys.signing,
                &secret.client_id(),
                Role::Client,
                unix_now() + 365 * DAY_S,
            );
            config.member = Some(cert.to_ticket());
            home.save_config(&config)?;
            if json {
                println!("{}", serde_json::json!({"swarm": me.to_hex()}));
            } else {
                println!(
                    "founded swarm {}; invite nodes with `cairn swarm invite <node id>`",
                    me.to_hex()
                );
            }
        }
        SwarmCommand::Invite { key, client, days } => {
            must_found()?;
            let member = NodeId::from_human(&key).with_context(|| format!("key {key}"))?;
            let role = if client { Role::Client } else { Role::Node };
            let cert = MemberCert::issue(&keys.signing, &member, role, unix_now() + days * DAY_S);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ticket": cert.to_ticket(), "not_after": cert.not_after})
                );
            } else {
                println!("{}", cert.to_ticket());
            }
        }
        SwarmCommand::Accept { ticket } => {
            let cert = MemberCert::from_ticket(&ticket)?;
            if cert.role != Role::Client {
                bail!("that ticket admits a node; give it to the node with `cairn join`");
            }
            cert.verify(&OwnerId(cert.swarm), &secret.client_id(), unix_now())
                .context("the ticket does not admit this client")?;
            config.member = Some(cert.to_ticket());
            home.save_config(&config)?;
            println!(
                "your client is a member of swarm {}",
                OwnerId(cert.swarm).to_hex()
            );
        }
        SwarmCommand::Remove { key } => {
            must_found()?;
            let member = NodeId::from_human(&key).with_context(|| format!("key {key}"))?;
            let removal = Removal::issue(&keys.signing, &member);
            let (swarm, _) = bare_swarm(home, None)?;
            let mut told = 0;
            for node in swarm.nodes() {
                if node.id == member {
                    continue;
                }
                match swarm.peer(node.id).await {
                    Ok(peer) => match peer.remove(removal.clone()).await {
                        Ok(()) => told += 1,
                        Err(e) => eprintln!("cairn: {} did not take it: {e}", node.id.to_human()),
                    },
                    Err(e) => eprintln!("cairn: {} unreachable: {e}", node.id.to_human()),
                }
            }
            swarm.close().await;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"removed": key, "nodes_told": told})
                );
            } else {
                println!("removed {key}: {told} nodes told; they refuse it from now on");
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  because: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::new(cli.home)?;
    let json = cli.json;
    match cli.command {
        Command::Init { force } => {
            if home.secret_path().exists() && !force {
                bail!(
                    "an owner identity already exists in {}; use --force to replace it (keep its phrase!)",
                    home.dir.display()
                );
            }
            let secret = OwnerSecret::generate()?;
            home.write_private(&home.secret_path(), &secret.to_bytes())?;
            if !home.config_path().exists() {
                home.save_config(&ClientConfig::default())?;
            }
            let keys = secret.keys();
            let client = secret.client_id();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"owner": keys.owner_id().to_hex(), "client_key": client.to_human(), "phrase": secret.phrase()})
                );
            } else {
                println!(
                    "Your recovery phrase (write it down; it is the only way back to your files):\n"
                );
                println!("    {}\n", secret.phrase());
                println!("Owner id:   {}", keys.owner_id());
                println!(
                    "Client key: {}  (add it to each node's [network] allow list)",
                    client.to_human()
                );
            }
        }
        Command::Recover { node } => {
            let mut phrase = String::new();
            std::io::stdin().read_to_string(&mut phrase)?;
            let secret = OwnerSecret::from_phrase(&phrase)?;
            let mut config = home.config()?;
            for spec in node {
                let (id, addr) = spec
                    .split_once('@')
                    .with_context(|| format!("--node {spec}: give ID@HOST:PORT"))?;
                NodeId::from_human(id).with_context(|| format!("--node {spec}"))?;
                if !config.nodes.iter().any(|n| n.id == id) {
                    config.nodes.push(NodeConfig {
                        id: id.to_owned(),
                        addr: addr.to_owned(),
                        site: None,
                    });
                }
            }
            home.write_private(&home.secret_path(), &secret.to_bytes())?;
            home.save_config(&config)?;
            let session = Session::open(home, json).await?;
            // The root record named every node the owner used: keep them all.
            let mut config = session.home.config()?;
            for known in &session.swarm.nodes() {
                let id = known.id.to_human();
                if !config.nodes.iter().any(|n| n.id == id) {
                    config.nodes.push(NodeConfig {
                        id,
                        addr: known.addr.clone(),
                        site: known.site.clone(),
                    });
                }
            }
            session.home.save_config(&config)?;
            let files = session.catalog.present("").count();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"owner": secret.keys().owner_id().to_hex(), "files": files, "nodes": config.nodes.len()})
                );
            } else {
                println!(
                    "recovered owner {}: {files} files, {} nodes",
                    secret.keys().owner_id(),
                    config.nodes.len()
                );
            }
        }
        Command::Id => {
            let secret = home.secret()?;
            let client = secret.client_id();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"owner": secret.keys().owner_id().to_hex(), "client_key": client.to_human()})
                );
            } else {
                println!("owner id:      {}", secret.keys().owner_id());
                println!("client key:    {}", client.to_human());
                println!(
                    "transfer card: {}:{}  (give this to someone handing you a box)",
                    secret.keys().owner_id().to_hex(),
                    client.to_human()
                );
            }
        }
        Command::AddNode {
            id,
            addr,
            site,
            steward,
        } => {
            NodeId::from_human(&id).with_context(|| format!("node id {id}"))?;
            let mut config = home.config()?;
            if steward {
                config.steward = Some(id.clone());
            }
            config.nodes.retain(|n| n.id != id);
            config.nodes.push(NodeConfig { id, addr, site });
            home.save_config(&config)?;
        }
        Command::Discover {
            seconds,
            interfaces,
            add,
        } => {
            let discovery = LanDiscovery::start(&interfaces)?;
            let found = discovery.browse_for(Duration::from_secs(seconds)).await;
            discovery.shutdown();
            let found = found?;
            let mut config = home.config()?;
            let yours = config
                .member
                .as_deref()
                .and_then(|t| MemberCert::from_ticket(t).ok())
                .map(|c| OwnerId(c.swarm))
                .or_else(|| home.secret().ok().map(|s| s.keys().owner_id()));
            let mut added = 0;
            for box_ in &found {
                let known = config
                    .nodes
                    .iter()
                    .any(|n| NodeId::from_human(&n.id).is_ok_and(|id| id == box_.node));
                let swarm = match box_.swarm {
                    None => "in no swarm".to_owned(),
                    Some(s) if Some(s) == yours => "in your swarm".to_owned(),
                    Some(s) => format!("in swarm {}", &s.to_hex()[..16]),
                };
                if add && !known {
                    config.nodes.push(NodeConfig {
                        id: box_.node.to_human(),
                        addr: box_.addr.clone(),
                        site: box_.site.clone(),
                    });
                    added += 1;
                }
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": box_.node.to_human(), "addr": box_.addr,
                            "swarm": box_.swarm.map(|s| s.to_hex()), "site": box_.site,
                            "software": box_.software, "known": known || add,
                        })
                    );
                } else {
                    println!(
                        "{} {} {swarm}{}{}",
                        box_.node.to_human(),
                        box_.addr,
                        box_.site
                            .as_ref()
                            .map(|s| format!(", site {s}"))
                            .unwrap_or_default(),
                        if known { ", one of your nodes" } else { "" }
                    );
                }
            }
            if added > 0 {
                home.save_config(&config)?;
            }
            if !json {
                match (found.len(), add) {
                    (0, _) => println!(
                        "no Cairn box answered in {seconds} s; is it plugged into this LAN and its LED steady or blinking?"
                    ),
                    (_, true) => println!("{added} added to your nodes"),
                    (_, false) => println!(
                        "(addresses come from the LAN and are checked when you connect; `cairn discover --add` adds them)"
                    ),
                }
            }
        }
        Command::Nodes => {
            let (swarm, _) = bare_swarm(&home, None)?;
            let mut asks = tokio::task::JoinSet::new();
            for node in swarm.nodes() {
                let swarm = Arc::clone(&swarm);
                asks.spawn(async move {
                    let stat = match swarm.peer(node.id).await {
                        Ok(peer) => peer.stat().await,
                        Err(e) => Err(e),
                    };
                    (node, stat)
                });
            }
            let mut answers = asks.join_all().await;
            let order: Vec<NodeId> = swarm.nodes().iter().map(|n| n.id).collect();
            answers.sort_by_key(|(node, _)| order.iter().position(|id| *id == node.id));
            let me = home.secret()?.keys().owner_id();
            for (node, stat) in answers {
                let free = stat
                    .as_ref()
                    .ok()
                    .map(|s| s.disks.iter().map(|d| d.free).sum::<u64>());
                let state = stat.as_ref().ok().map(|s| {
                    let mut words = vec![s.state.clone()];
                    if s.ownership.draining {
                        words.push("draining".into());
                    }
                    match s.ownership.owner {
                        None => words.push("unclaimed".into()),
                        Some(owner) if owner == me.0 => words.push("yours".into()),
                        Some(_) => {}
                    }
                    words.join(", ")
                });
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": node.id.to_human(), "addr": node.addr, "site": node.site,
                            "up": stat.is_ok(), "free": free,
                            "state": stat.as_ref().ok().map(|s| s.state.clone()),
                            "reasons": stat.as_ref().ok().map(|s| s.reasons.clone()),
                            "draining": stat.as_ref().ok().map(|s| s.ownership.draining),
                            "owner": stat.as_ref().ok().and_then(|s| s.ownership.owner).map(|o| OwnerId(o).to_hex()),
                        })
                    );
                } else {
                    println!(
                        "{} {} {}{}",
                        node.id.to_human(),
                        node.addr,
                        match (&state, free) {
                            (Some(state), Some(free)) =>
                                format!("up ({state}), {} free", size(free)),
                            _ => "DOWN".into(),
                        },
                        node.site
                            .as_ref()
                            .map(|s| format!(", site {s}"))
                            .unwrap_or_default()
                    );
                    if let Ok(stat) = &stat {
                        for reason in &stat.reasons {
                            println!("    {reason}");
                        }
                    }
                }
            }
            swarm.close().await;
        }
        Command::Claim { id, addr, site } => {
            let node = NodeId::from_human(&id).with_context(|| format!("node id {id}"))?;
            let entry = NodeEntry {
                id: node,
                addr: addr.clone(),
                site: site.clone(),
            };
            let (swarm, secret) = bare_swarm(&home, Some(entry))?;
            let peer = swarm.peer(node).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach the box {id} at {addr}: {e}\n(open its pairing window first: hold its button about 5 seconds, until the LED blips once a second)"
                )
            })?;
            let info = peer.claim(&secret.keys().signing).await?;
            swarm.close().await;
            let mut config = home.config()?;
            config.nodes.retain(|n| n.id != id);
            config.nodes.push(NodeConfig {
                id: id.clone(),
                addr,
                site,
            });
            home.save_config(&config)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"claimed": id, "draining": info.draining})
                );
            } else {
                println!("claimed {id}: the box is yours and is in your node list");
            }
        }
        Command::Transfer { node, to } => {
            let (to_owner, to_client) = to
                .split_once(':')
                .context("a transfer card is OWNER:CLIENT_KEY, as `cairn id` shows it")?;
            let to_owner = OwnerId::from_hex(to_owner)
                .context("the transfer card's owner part is not an owner id")?;
            let to_client = NodeId::from_human(to_client)
                .context("the transfer card's client key part is not a key")?;
            let (swarm, secret, _, peer) = your_node(&home, &node).await?;
            peer.transfer(
                &secret.keys().signing,
                to_owner,
                to_client,
                unix_now() + 600,
            )
            .await?;
            swarm.close().await;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"transferred": node, "to": to_owner.to_hex()})
                );
            } else {
                println!(
                    "{node} now belongs to owner {}. It admits your client key only as a member of its swarm, if you share one; without that, your shards on it stay until their leases end, and your steward repairs them elsewhere.",
                    to_owner.to_hex()
                );
            }
        }
        Command::Drain { node, undo } => {
            let (swarm, secret, _, peer) = your_node(&home, &node).await?;
            peer.drain(&secret.keys().signing, !undo, unix_now() + 600)
                .await?;
            let stat = peer.stat().await?;
            swarm.close().await;
            let shards: u64 = stat.disks.iter().map(|d| d.shards).sum();
            let used: u64 = stat.disks.iter().map(|d| d.used).sum();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"node": node, "draining": stat.ownership.draining, "shards": shards, "bytes": used})
                );
            } else if undo {
                println!("{node} takes new shards again");
            } else {
                println!(
                    "{node} is draining: it takes no new shards, and clients place new ones elsewhere.\nIt still holds {shards} shards ({}) for their owners; each owner's steward moves them to other nodes (shards nobody stewards stay until their leases end). When it holds none, it can leave.",
                    size(used)
                );
            }
        }
        Command::Put { paths } => {
            let mut session = Session::open(home, json).await?;
            put(&mut session, &paths).await?;
            session.swarm.close().await;
        }
        Command::Get {
            path,
            output,
            at,
            version,
        } => {
            let session = Session::open(home, json).await?;
            let selector = match (at, version) {
                (Some(at), _) => Selector::At(parse_time(&at)?),
                (None, Some(n)) => Selector::Version(n),
                (None, None) => Selector::Latest,
            };
            get(&session, &path, output, selector).await?;
            session.swarm.close().await;
        }
        Command::Ls { prefix } => {
            let session = Session::open(home, json).await?;
            for (path, entry) in session.catalog.present(prefix.as_deref().unwrap_or("")) {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"path": path, "size": entry.size, "version": entry.version, "time": entry.time})
                    );
                } else {
                    println!(
                        "{:>10}  {}  v{}  {path}",
                        size(entry.size),
                        when(entry.time),
                        entry.version
                    );
                }
            }
        }
        Command::Versions { path } => {
            let session = Session::open(home, json).await?;
            let versions = session
                .catalog
                .files
                .get(&path)
                .with_context(|| format!("{path} is not stored; `cairn ls` lists what is"))?;
            for v in versions {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"version": v.version, "time": v.time, "size": v.size, "removed": v.deleted})
                    );
                } else if v.deleted {
                    println!("v{}  {}  removed", v.version, when(v.time));
                } else {
                    println!("v{}  {}  {}", v.version, when(v.time), size(v.size));
                }
            }
        }
        Command::Rm { path } => {
            let mut session = Session::open(home, json).await?;
            let version = session.catalog.remove(&path, unix_now())?;
            let catalog_ref = session.commit().await?;
            session.track(&[&catalog_ref]).await;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"removed": path, "version": version})
                );
            } else {
                println!("removed {path} (earlier versions stay readable with --version or --at)");
            }
        }
        Command::Swarm(command) => swarm_command(&home, command, json).await?,
        Command::Members => {
            let (swarm, _) = bare_swarm(&home, None)?;
            let mut answer = None;
            for node in swarm.nodes() {
                if let Ok(peer) = swarm.peer(node.id).await
                    && let Ok(members) = peer.members().await
                {
                    answer = Some((node.id, members));
                    break;
                }
            }
            swarm.close().await;
            let (asked, members) =
                answer.context("none of your nodes answered; are they running?")?;
            for state in members {
                let m = &state.member;
                let id = NodeId(m.node).to_human();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": id, "addr": m.addr, "up": state.up, "site": m.advert.site, "capacity": m.advert.capacity, "free": m.advert.free, "software": m.advert.software})
                    );
                } else {
                    println!(
                        "{id} {} {}, {} free of {}{} ({})",
                        m.addr,
                        if state.up { "up" } else { "DOWN" },
                        size(m.advert.free),
                        size(m.advert.capacity),
                        m.advert
                            .site
                            .as_ref()
                            .map(|s| format!(", site {s}"))
                            .unwrap_or_default(),
                        m.advert.software
                    );
                }
            }
            if !json {
                println!("(as node {} sees the swarm)", asked.to_human());
            }
        }
        Command::Join { node, invite } => {
            let cert = MemberCert::from_ticket(&invite)?;
            let (swarm, _, id, peer) = your_node(&home, &node).await?;
            // The other nodes it knows of, to gossip with first.
            let seeds = swarm
                .nodes()
                .into_iter()
                .filter(|n| n.id != id)
                .map(NodeAddr::from)
                .collect();
            let joined = peer.join(cert, seeds).await?;
            swarm.close().await;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"node": node, "swarm": joined.to_hex()})
                );
            } else {
                println!("{node} joined swarm {}", joined.to_hex());
            }
        }
        Command::Status { prefix } => {
            let session = Session::open(home, json).await?;
            status(&session, prefix.as_deref().unwrap_or("")).await?;
        }
    }
    Ok(())
}

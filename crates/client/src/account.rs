//! The owner's identity, nodes and swarm, as operations on the client
//! directory that return report types: create or recover the identity,
//! list and claim nodes, hand a box on, drain it, join it to a swarm, and
//! found, invite to and remove from a swarm. Nothing here prints.

use std::sync::Arc;

use serde::Serialize;

use cairn_proto::ids::{NodeId, OwnerId};
use cairn_proto::membership::{MemberCert, Removal, Role};
use cairn_proto::{NodeAddr, StatInfo};

use crate::ClientError;
use crate::home::{ClientHome, parse_node};
use crate::keys::OwnerSecret;
use crate::session::Session;
use crate::swarm::Swarm;

const DAY_S: u64 = 24 * 3600;

/// A new owner identity, from [`init`].
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The owner id (hex).
    pub owner: String,
    /// The client's key (`cn…`), for nodes' allow lists.
    pub client_key: String,
    /// The recovery phrase: the only way back to the files.
    pub phrase: String,
}

/// The owner's identity, from [`identity`].
#[derive(Debug, Clone, Serialize)]
pub struct IdReport {
    /// The owner id (hex).
    pub owner: String,
    /// The client's key (`cn…`).
    pub client_key: String,
}

/// What [`recover`] brought back.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    /// The owner id (hex).
    pub owner: String,
    /// Snapshots in the history found.
    pub snapshots: usize,
    /// Nodes now in the settings.
    pub nodes: usize,
    /// Notes from reading the catalog back (see [`Session::take_notes`]).
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// One of the owner's nodes and how it answered, from [`nodes`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node (`cn…`).
    pub id: String,
    /// Where it is dialled.
    pub addr: String,
    /// Its site.
    pub site: Option<String>,
    /// Whether it answered.
    pub up: bool,
    /// Free bytes on its disks.
    pub free: Option<u64>,
    /// Bytes of shards it holds (its store's own count).
    pub used: Option<u64>,
    /// Shards it holds.
    pub shards: Option<u64>,
    /// `healthy`, `degraded`, …
    pub state: Option<String>,
    /// Why it is not healthy.
    pub reasons: Option<Vec<String>>,
    /// Whether it is draining.
    pub draining: Option<bool>,
    /// Its owner (hex), if claimed.
    pub owner: Option<String>,
    /// Whether the box is this owner's.
    #[serde(skip)]
    pub yours: bool,
    /// How this client reached it: `lan`, `direct`, `mapped`, `punched`,
    /// `relayed via cn…`.
    pub path: Option<String>,
    /// Why it could not be reached.
    pub error: Option<String>,
}

/// A box claimed by [`claim`].
#[derive(Debug, Clone, Serialize)]
pub struct ClaimReport {
    /// The node, as given.
    pub claimed: String,
    /// Whether it is draining.
    pub draining: bool,
}

/// A box handed on by [`transfer`].
#[derive(Debug, Clone, Serialize)]
pub struct TransferReport {
    /// The node, as given.
    pub transferred: String,
    /// The new owner (hex).
    pub to: String,
}

/// A drain started or stopped by [`drain`].
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    /// The node, as given.
    pub node: String,
    /// Whether it drains now.
    pub draining: bool,
    /// Shards it still holds.
    pub shards: u64,
    /// Bytes of shards it still holds.
    pub bytes: u64,
}

/// A node that joined a swarm, from [`join`].
#[derive(Debug, Clone, Serialize)]
pub struct JoinReport {
    /// The node, as given.
    pub node: String,
    /// The swarm (hex).
    pub swarm: String,
}

/// One member of the swarm as a node's gossip knows it, from [`members`].
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    /// The member (`cn…`).
    pub id: String,
    /// Where it listens.
    pub addr: String,
    /// Up, or declared down by the swarm.
    pub up: bool,
    /// Its site.
    pub site: Option<String>,
    /// Bytes its disks may hold.
    pub capacity: u64,
    /// Bytes free.
    pub free: u64,
    /// Its software.
    pub software: String,
    /// What it learned of its router (`Unknown`, `Open`, `Mapped`,
    /// `Punchable`, `Symmetric`).
    pub nat: String,
    /// Its public address, as members outside its LAN see it.
    pub public: Option<String>,
    /// The member it waits for calls at (punches, relays), if any.
    pub rendezvous: Option<String>,
    /// Its global IPv6 address and what members learned of it
    /// (`[ADDR]:PORT open`, `… filtered`, `… candidate`), if it has one.
    pub ipv6: Option<String>,
    /// How the answering node reaches it: `lan`, `direct`, `mapped`,
    /// `punched`, `relayed via cn…`, `direct ipv6`, `punched ipv6` (none
    /// for itself, or before it did).
    pub path: Option<String>,
}

/// A swarm ticket issued by [`swarm_invite`].
#[derive(Debug, Clone, Serialize)]
pub struct InviteReport {
    /// The ticket to hand over.
    pub ticket: String,
    /// Unix time it expires.
    pub not_after: u64,
}

/// A member removed by [`swarm_remove`].
#[derive(Debug, Clone, Serialize)]
pub struct RemovalReport {
    /// The member, as given.
    pub removed: String,
    /// How many nodes took the removal.
    pub nodes_told: usize,
    /// Nodes that did not, and why.
    #[serde(skip)]
    pub failures: Vec<String>,
}

/// Creates a new owner identity in `home` (refused if one exists, unless
/// `force`), with default settings if there are none.
pub fn init(home: &ClientHome, force: bool) -> Result<InitReport, ClientError> {
    if home.has_secret() && !force {
        return Err(ClientError::IdentityExists {
            dir: home.dir().to_owned(),
        });
    }
    let secret = OwnerSecret::generate()?;
    home.save_secret(&secret)?;
    if !home.has_config() {
        home.save_config(&Default::default())?;
    }
    Ok(InitReport {
        owner: secret.keys().owner_id().to_hex(),
        client_key: secret.client_id().to_human(),
        phrase: secret.phrase(),
    })
}

/// The owner's identity kept in `home`.
pub fn identity(home: &ClientHome) -> Result<IdReport, ClientError> {
    let secret = home.secret()?;
    Ok(IdReport {
        owner: secret.keys().owner_id().to_hex(),
        client_key: secret.client_id().to_human(),
    })
}

/// Brings the owner back from the recovery phrase: the identity, the
/// catalog through `nodes` (at least one node that holds the root record),
/// and every node the root record names.
pub async fn recover(
    home: ClientHome,
    phrase: &str,
    nodes: &[NodeAddr],
) -> Result<RecoverReport, ClientError> {
    let secret = OwnerSecret::from_phrase(phrase)?;
    let mut config = home.config()?;
    for node in nodes {
        config.add_node(node);
    }
    home.save_secret(&secret)?;
    home.save_config(&config)?;
    let session = Session::open(home).await?;
    let mut config = session.home().config()?;
    for known in &session.swarm().nodes() {
        config.add_node(known);
    }
    session.home().save_config(&config)?;
    let report = RecoverReport {
        owner: secret.keys().owner_id().to_hex(),
        snapshots: session.history().snapshots.len(),
        nodes: config.nodes.len(),
        notes: session.take_notes(),
    };
    session.close().await;
    Ok(report)
}

/// Adds (or updates) a node in the settings; `steward` makes it the
/// owner's steward.
pub fn add_node(home: &ClientHome, entry: &NodeAddr, steward: bool) -> Result<(), ClientError> {
    let mut config = home.config()?;
    if steward {
        config.steward = Some(entry.node);
    }
    config.replace_node(entry);
    home.save_config(&config)
}

/// Asks every node in the settings how it is.
pub async fn nodes(home: &ClientHome) -> Result<Vec<NodeReport>, ClientError> {
    let (swarm, secret) = home.swarm(None)?;
    let me = secret.keys().owner_id();
    let mut asks = tokio::task::JoinSet::new();
    for node in swarm.nodes() {
        let swarm = Arc::clone(&swarm);
        asks.spawn(async move {
            let (stat, error) = match swarm.peer(node.node).await {
                Ok(peer) => match peer.stat().await {
                    Ok(stat) => (Some(stat), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                Err(e) => (None, Some(e.to_string())),
            };
            let path = swarm.path(node.node).map(|p| p.to_string());
            (node, stat, path, error)
        });
    }
    let mut answers = asks.join_all().await;
    let order: Vec<NodeId> = swarm.nodes().iter().map(|n| n.node).collect();
    answers.sort_by_key(|(node, ..)| order.iter().position(|id| *id == node.node));
    swarm.close().await;
    Ok(answers
        .into_iter()
        .map(|(node, stat, path, error)| NodeReport {
            path,
            error,
            ..node_report(node, stat.as_ref(), me)
        })
        .collect())
}

fn node_report(node: NodeAddr, stat: Option<&StatInfo>, me: OwnerId) -> NodeReport {
    NodeReport {
        path: None,
        error: None,
        id: node.node.to_human(),
        addr: node.addr,
        site: node.site,
        up: stat.is_some(),
        free: stat.map(StatInfo::free),
        used: stat.map(|s| s.disks.iter().map(|d| d.used).sum()),
        shards: stat.map(|s| s.disks.iter().map(|d| d.shards).sum()),
        state: stat.map(|s| s.state.clone()),
        reasons: stat.map(|s| s.reasons.clone()),
        draining: stat.map(|s| s.ownership.draining),
        owner: stat.and_then(|s| s.ownership.owner).map(|o| o.to_hex()),
        yours: stat.is_some_and(|s| s.ownership.owner == Some(me)),
    }
}

/// How often a waiting claim asks whether the button was pressed.
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Claims the box `node` at `entry.addr` (its pairing window must be open)
/// and lists it in the settings.
///
/// The box takes the claim only once someone presses its button: the first
/// claim to arrive while its pairing window is open waits for that press
/// (its LED blips twice a second), and `on_waiting` is called once with the
/// seconds left, so the person can be told to press. The claim is asked
/// again until the press comes or the window closes.
pub async fn claim(
    home: &ClientHome,
    entry: &NodeAddr,
    mut on_waiting: impl FnMut(u64),
) -> Result<ClaimReport, ClientError> {
    let (swarm, secret) = home.swarm(Some(entry.clone()))?;
    let shown = entry.node.to_human();
    let peer = swarm.peer(entry.node).await.map_err(ClientError::node(format!(
        "cannot reach the box {shown} at {}\n(open its pairing window first: hold its button about 5 seconds, until the LED blips once a second)",
        entry.addr
    )))?;
    let result = async {
        let mut told = false;
        loop {
            match peer.claim(&secret.keys().signing).await? {
                cairn_net::ClaimAnswer::Claimed(info) => return Ok(info),
                cairn_net::ClaimAnswer::Pending { confirm_within_s } => {
                    if !told {
                        on_waiting(confirm_within_s);
                        told = true;
                    }
                    if confirm_within_s == 0 {
                        return Err(cairn_net::NetError::Remote {
                            code: cairn_proto::ErrorCode::PairingClosed,
                            message: "the pairing window closed before the button was pressed to confirm the claim; hold it 5 seconds and claim again".into(),
                        });
                    }
                    tokio::time::sleep(CLAIM_POLL).await;
                }
            }
        }
    }
    .await;
    swarm.close().await;
    let info = result.map_err(ClientError::node(format!("claiming {shown}")))?;
    let mut config = home.config()?;
    config.replace_node(entry);
    home.save_config(&config)?;
    Ok(ClaimReport {
        claimed: shown,
        draining: info.draining,
    })
}

/// Hands the box `node` to the owner of the transfer card `to`
/// (`OWNER:CLIENT_KEY`, as [`identity`] shows it).
pub async fn transfer(
    home: &ClientHome,
    node: &str,
    to: &str,
) -> Result<TransferReport, ClientError> {
    let (to_owner, to_client) = to.split_once(':').ok_or_else(|| {
        ClientError::Usage("a transfer card is OWNER:CLIENT_KEY, as `cairn id` shows it".into())
    })?;
    let to_owner = OwnerId::from_hex(to_owner).map_err(|source| ClientError::BadId {
        what: "the transfer card's owner part".into(),
        source,
    })?;
    let to_client = parse_node(to_client, "the transfer card's client key part")?;
    let (swarm, secret, id) = your_node(home, node)?;
    let result = async {
        let peer = reach(&swarm, id, node).await?;
        peer.transfer(
            &secret.keys().signing,
            to_owner,
            to_client,
            cairn_host::unix_now() + 600,
        )
        .await
        .map_err(ClientError::node(format!("transferring {node}")))
    }
    .await;
    swarm.close().await;
    result?;
    Ok(TransferReport {
        transferred: node.to_owned(),
        to: to_owner.to_hex(),
    })
}

/// Starts (or with `draining: false` stops) draining the box `node`.
pub async fn drain(
    home: &ClientHome,
    node: &str,
    draining: bool,
) -> Result<DrainReport, ClientError> {
    let (swarm, secret, id) = your_node(home, node)?;
    let result = async {
        let peer = reach(&swarm, id, node).await?;
        peer.drain(
            &secret.keys().signing,
            draining,
            cairn_host::unix_now() + 600,
        )
        .await
        .map_err(ClientError::node(format!("draining {node}")))?;
        peer.stat()
            .await
            .map_err(ClientError::node(format!("asking {node} how it is")))
    }
    .await;
    swarm.close().await;
    let stat = result?;
    Ok(DrainReport {
        node: node.to_owned(),
        draining: stat.ownership.draining,
        shards: stat.disks.iter().map(|d| d.shards).sum(),
        bytes: stat.disks.iter().map(|d| d.used).sum(),
    })
}

/// One owner's use of a box, from [`usage`].
#[derive(Debug, Clone, Serialize)]
pub struct UsageRow {
    /// The owner (hex); `you` says whether it is this client's owner.
    pub owner: String,
    /// Whether it is you.
    pub you: bool,
    /// Bytes of the shards it claims.
    pub bytes: u64,
    /// Shards it claims.
    pub shards: u64,
    /// Whether you evicted it.
    pub evicted: bool,
}

/// What each owner's shards take on your box `node`, largest first.
pub async fn usage(home: &ClientHome, node: &str) -> Result<Vec<UsageRow>, ClientError> {
    let (swarm, secret, id) = your_node(home, node)?;
    let me = secret.keys().owner_id();
    let result = async {
        let peer = reach(&swarm, id, node).await?;
        peer.usage()
            .await
            .map_err(ClientError::node(format!("asking {node} who uses it")))
    }
    .await;
    swarm.close().await;
    Ok(result?
        .into_iter()
        .map(|row| UsageRow {
            owner: row.owner.to_hex(),
            you: row.owner.0 == me.0,
            bytes: row.bytes,
            shards: row.shards,
            evicted: row.evicted,
        })
        .collect())
}

/// An eviction from [`evict`].
#[derive(Debug, Clone, Serialize)]
pub struct EvictReport {
    /// The node, as given.
    pub node: String,
    /// The owner (hex).
    pub owner: String,
    /// Whether it is evicted now.
    pub evicted: bool,
    /// Claims dropped.
    pub claims: u64,
}

/// Evicts `owner` (hex) from your box `node`: its claims there go (the
/// shards nobody else claims are deleted, and their stewards repair them
/// elsewhere) and its puts are refused from then on; `evict: false` lifts it.
pub async fn evict(
    home: &ClientHome,
    node: &str,
    owner: &str,
    evict: bool,
) -> Result<EvictReport, ClientError> {
    let evicted = cairn_proto::ids::OwnerId::from_hex(owner).map_err(|e| {
        ClientError::Usage(format!(
            "{owner:?} is not an owner id (64 hex digits, as `cairn usage` shows): {e}"
        ))
    })?;
    let (swarm, secret, id) = your_node(home, node)?;
    let result = async {
        let peer = reach(&swarm, id, node).await?;
        let mut claims = 0;
        loop {
            let (dropped, more) = peer
                .evict(
                    &secret.keys().signing,
                    evicted,
                    evict,
                    cairn_host::unix_now() + 600,
                )
                .await
                .map_err(ClientError::node(format!("evicting {owner} from {node}")))?;
            claims += dropped;
            if !more || dropped == 0 {
                return Ok::<_, ClientError>(claims);
            }
        }
    }
    .await;
    swarm.close().await;
    Ok(EvictReport {
        node: node.to_owned(),
        owner: evicted.to_hex(),
        evicted: evict,
        claims: result?,
    })
}

/// Joins the box `node` to the swarm of the ticket `invite`, with the
/// owner's other nodes as its first gossip partners.
pub async fn join(home: &ClientHome, node: &str, invite: &str) -> Result<JoinReport, ClientError> {
    let cert = ticket(invite, "the invite")?;
    let (swarm, _, id) = your_node(home, node)?;
    let seeds: Vec<NodeAddr> = swarm.nodes().into_iter().filter(|n| n.node != id).collect();
    let result = async {
        let peer = reach(&swarm, id, node).await?;
        peer.join(cert, seeds)
            .await
            .map_err(ClientError::node(format!("joining {node} to the swarm")))
    }
    .await;
    swarm.close().await;
    Ok(JoinReport {
        node: node.to_owned(),
        swarm: result?.to_hex(),
    })
}

/// The swarm's members as the first of the owner's nodes that answers
/// (or `only`, a node id) sees them, and which node that was.
pub async fn members(
    home: &ClientHome,
    only: Option<&str>,
) -> Result<(NodeId, Vec<MemberReport>), ClientError> {
    let (swarm, _) = home.swarm(None)?;
    let only = match only {
        Some(text) => Some(parse_node(text, &format!("node id {text}"))?),
        None => None,
    };
    let mut answer = None;
    for node in swarm
        .nodes()
        .into_iter()
        .filter(|n| only.is_none_or(|id| id == n.node))
    {
        if let Ok(peer) = swarm.peer(node.node).await
            && let Ok(members) = peer.members().await
        {
            answer = Some((node.node, members));
            break;
        }
    }
    swarm.close().await;
    let (asked, members) = answer.ok_or(ClientError::NoAnswer)?;
    let members = members
        .into_iter()
        .map(|state| {
            let m = state.member;
            MemberReport {
                id: m.node.to_human(),
                addr: m.addr,
                up: state.up,
                site: m.advert.site,
                capacity: m.advert.capacity,
                free: m.advert.free,
                software: m.advert.software,
                nat: format!("{:?}", m.advert.reach.nat),
                public: m.advert.reach.public,
                rendezvous: m.advert.reach.rendezvous.map(|r| r.to_human()),
                ipv6: m
                    .advert
                    .reach
                    .ipv6
                    .map(|v6| format!("{} {:?}", v6.addr, v6.state).to_lowercase()),
                path: state.path.map(|p| p.to_string()),
            }
        })
        .collect();
    Ok((asked, members))
}

/// Founds a swarm with this owner as its authority; the owner's client
/// becomes its first member. Returns the swarm id.
pub fn swarm_create(home: &ClientHome) -> Result<OwnerId, ClientError> {
    let (secret, mut config, current) = membership_of(home)?;
    let me = secret.keys().owner_id();
    if let Some(c) = current {
        return Err(ClientError::Membership(format!(
            "you are in swarm {} already{}",
            c.swarm.to_hex(),
            if c.swarm == me {
                " (you founded it)"
            } else {
                ""
            }
        )));
    }
    let cert = MemberCert::issue(
        &secret.keys().signing,
        &secret.client_id(),
        Role::Client,
        cairn_host::unix_now() + 365 * DAY_S,
    );
    config.member = Some(cert.to_ticket());
    home.save_config(&config)?;
    Ok(me)
}

/// A ticket admitting `key` (a node, or with `client` an owner's client)
/// to the owner's swarm for `days`.
pub fn swarm_invite(
    home: &ClientHome,
    key: &str,
    client: bool,
    days: u64,
) -> Result<InviteReport, ClientError> {
    let (secret, _, current) = membership_of(home)?;
    must_found(&secret, current.as_ref())?;
    let member = parse_node(key, &format!("key {key}"))?;
    let role = if client { Role::Client } else { Role::Node };
    let cert = MemberCert::issue(
        &secret.keys().signing,
        &member,
        role,
        cairn_host::unix_now() + days * DAY_S,
    );
    Ok(InviteReport {
        ticket: cert.to_ticket(),
        not_after: cert.not_after,
    })
}

/// Makes this client a member of the swarm of a client ticket; returns
/// the swarm id.
pub fn swarm_accept(home: &ClientHome, ticket_text: &str) -> Result<OwnerId, ClientError> {
    let (secret, mut config, _) = membership_of(home)?;
    let cert = ticket(ticket_text, "the ticket")?;
    if cert.role != Role::Client {
        return Err(ClientError::Membership(
            "that ticket admits a node; give it to the node with `cairn join`".into(),
        ));
    }
    cert.verify(&cert.swarm, &secret.client_id(), cairn_host::unix_now())
        .map_err(|e| ClientError::Ticket {
            what: "the ticket does not admit this client".into(),
            reason: e.to_string(),
        })?;
    config.member = Some(cert.to_ticket());
    home.save_config(&config)?;
    Ok(cert.swarm)
}

/// Removes `key` from the owner's swarm: every other node in the settings
/// is told, and refuses it from then on.
pub async fn swarm_remove(home: &ClientHome, key: &str) -> Result<RemovalReport, ClientError> {
    let (secret, _, current) = membership_of(home)?;
    must_found(&secret, current.as_ref())?;
    let member = parse_node(key, &format!("key {key}"))?;
    let removal = Removal::issue(&secret.keys().signing, &member);
    let (swarm, _) = home.swarm(None)?;
    let mut told = 0;
    let mut failures = Vec::new();
    for node in swarm.nodes() {
        if node.node == member {
            continue;
        }
        match swarm.peer(node.node).await {
            Ok(peer) => match peer.remove(removal.clone()).await {
                Ok(()) => told += 1,
                Err(e) => failures.push(format!("{} did not take it: {e}", node.node.to_human())),
            },
            Err(e) => failures.push(format!("{} unreachable: {e}", node.node.to_human())),
        }
    }
    swarm.close().await;
    Ok(RemovalReport {
        removed: key.to_owned(),
        nodes_told: told,
        failures,
    })
}

/// One of the owner's nodes by its id: the swarm handle (close it when
/// done), the secret and the id.
fn your_node(
    home: &ClientHome,
    node: &str,
) -> Result<(Arc<Swarm>, OwnerSecret, NodeId), ClientError> {
    let id = parse_node(node, &format!("node id {node}"))?;
    let (swarm, secret) = home.swarm(None)?;
    Ok((swarm, secret, id))
}

async fn reach(swarm: &Swarm, id: NodeId, node: &str) -> Result<Arc<cairn_net::Peer>, ClientError> {
    swarm.peer(id).await.map_err(ClientError::node(format!(
        "reaching {node} (is it in your node list, `cairn nodes`, and running?)"
    )))
}

fn ticket(text: &str, what: &str) -> Result<MemberCert, ClientError> {
    MemberCert::from_ticket(text).map_err(|e| ClientError::Ticket {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn membership_of(
    home: &ClientHome,
) -> Result<(OwnerSecret, crate::home::ClientConfig, Option<MemberCert>), ClientError> {
    let secret = home.secret()?;
    let config = home.config()?;
    let current = config.member()?;
    Ok((secret, config, current))
}

fn must_found(secret: &OwnerSecret, current: Option<&MemberCert>) -> Result<(), ClientError> {
    let me = secret.keys().owner_id();
    match current {
        Some(c) if c.swarm != me => Err(ClientError::Membership(format!(
            "only the founder of swarm {} can do this; ask them",
            c.swarm.to_hex()
        ))),
        None => Err(ClientError::Membership(
            "you are in no swarm; found one with `cairn swarm create`".into(),
        )),
        _ => Ok(()),
    }
}

/// The settings of one of your boxes, from [`settings`].
#[derive(Debug, Clone, Serialize)]
pub struct SettingsReport {
    /// The node.
    pub node: String,
    /// The site it advertises.
    pub site: Option<String>,
    /// GiB it gives in all; `None`: all free space.
    pub quota_gib: Option<u64>,
    /// Owners that may store there (hex; empty: any owner of the swarm).
    pub donation_owners: Vec<String>,
    /// MiB each other owner may use there; `None`: no share.
    pub per_owner_mib: Option<u64>,
    /// The longest lease a put may ask for, days.
    pub longest_lease_days: u64,
    /// Whether the change made the node restart its services.
    pub restarting: bool,
}

/// Changes a box's settings (an empty change only reads them); the box
/// keeps them on its writable partition, over its configuration file.
pub async fn settings(
    home: &ClientHome,
    node: &str,
    change: cairn_proto::SettingsChange,
) -> Result<SettingsReport, ClientError> {
    let (swarm, secret, id) = your_node(home, node)?;
    let result = async {
        let peer = reach(&swarm, id, node).await?;
        peer.settings(&secret.keys().signing, change, cairn_host::unix_now() + 600)
            .await
            .map_err(ClientError::node(format!(
                "changing the settings of {node}"
            )))
    }
    .await;
    swarm.close().await;
    let info = result?;
    Ok(SettingsReport {
        node: node.to_owned(),
        site: info.site,
        quota_gib: info.quota_gib,
        donation_owners: info.donation_owners.iter().map(OwnerId::to_hex).collect(),
        per_owner_mib: info.per_owner_mib,
        longest_lease_days: info.longest_lease_days,
        restarting: info.restarting,
    })
}

/// A link to the owner's view of a box's page, valid for `minutes`:
/// `base` (default `http://<the box's host>/`) + `owner?until=…&sig=…`.
/// Signed here, with nothing sent anywhere.
pub fn panel_link(
    home: &ClientHome,
    node: &str,
    minutes: u64,
    base: Option<&str>,
) -> Result<String, ClientError> {
    let id = parse_node(node, &format!("node id {node}"))?;
    let secret = home.secret()?;
    let base = match base {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => {
            let config = home.config()?;
            let at = config
                .nodes
                .iter()
                .find(|n| n.node == id)
                .ok_or_else(|| {
                    ClientError::Usage(format!(
                        "{node} is not in your node list (`cairn nodes`); give the page's address with --at"
                    ))
                })?;
            let host = at
                .addr
                .rsplit_once(':')
                .map_or(at.addr.as_str(), |(host, _)| host);
            format!("http://{host}")
        }
    };
    let link = cairn_proto::signed::PanelLink::sign(
        &secret.keys().signing,
        &id,
        cairn_host::unix_now() + minutes.max(1) * 60,
    );
    Ok(format!("{base}/owner?{}", link.to_query()))
}

/// What [`adopt_disks`] did.
#[derive(Debug, Clone, Serialize)]
pub struct AdoptReport {
    /// The box that took the disks over.
    pub node: String,
    /// The node whose disks they were.
    pub from: String,
    /// Disks taken over.
    pub disks: usize,
    /// Shards on them.
    pub shards: u64,
    /// Shards your steward re-pointed to the box (none are rebuilt).
    pub repointed: u64,
    /// Why the steward could not be told, if it could not.
    pub steward_error: Option<String>,
}

/// Has `node` take over the data disks another box of yours left in it
/// (`from`; by default each of your other nodes is tried), then tells your
/// steward that those shards now live at `node`, so it re-points them
/// instead of rebuilding them.
pub async fn adopt_disks(
    home: &ClientHome,
    node: &str,
    from: Option<&str>,
) -> Result<Vec<AdoptReport>, ClientError> {
    let (swarm, secret, id) = your_node(home, node)?;
    let config = home.config()?;
    let candidates: Vec<NodeId> = match from {
        Some(from) => vec![parse_node(from, &format!("node id {from}"))?],
        None => config
            .nodes
            .iter()
            .map(|n| n.node)
            .filter(|n| *n != id)
            .collect(),
    };
    let signing = secret.keys().signing;
    let owner = secret.keys().owner_id();
    let result = async {
        let peer = reach(&swarm, id, node).await?;
        let mut reports = Vec::new();
        let mut refusals = Vec::new();
        for old in candidates {
            let (disks, shards) = match peer
                .adopt_disks(&signing, old, cairn_host::unix_now() + 600)
                .await
            {
                Ok(done) => done,
                // Tried blindly: no disk of that node is here.
                Err(e) if from.is_none() && e.code() == Some(cairn_proto::ErrorCode::NotFound) => {
                    continue;
                }
                Err(e) => {
                    refusals.push(format!("{}: {e}", old.to_human()));
                    continue;
                }
            };
            let mut report = AdoptReport {
                node: node.to_owned(),
                from: old.to_human(),
                disks: disks.len(),
                shards,
                repointed: 0,
                steward_error: None,
            };
            if let Some(steward) = config.steward {
                let told = async {
                    let steward = swarm.peer(steward).await?;
                    let mut total = 0;
                    loop {
                        let not_after = cairn_host::unix_now() + 600;
                        let record = cairn_proto::MovedRecord {
                            owner,
                            from: old,
                            to: id,
                            not_after,
                            signature: cairn_proto::signed::sign(
                                &signing,
                                &cairn_proto::signed::moved_message(&owner, &old, &id, not_after),
                            ),
                        };
                        let (count, more) = steward.moved(record).await?;
                        total += count;
                        if !more {
                            return Ok::<_, cairn_net::NetError>(total);
                        }
                    }
                }
                .await;
                match told {
                    Ok(count) => report.repointed = count,
                    Err(e) => report.steward_error = Some(e.to_string()),
                }
            }
            reports.push(report);
        }
        if reports.is_empty() {
            return Err(ClientError::Usage(if refusals.is_empty() {
                format!(
                    "{node} holds no disk of another node of yours; plug the disks in, or name the old node with --from"
                )
            } else {
                format!("{node} adopted no disk: {}", refusals.join("; "))
            }));
        }
        Ok(reports)
    }
    .await;
    swarm.close().await;
    result
}

/// Bytes of a bundle sent per request (under the largest shard a node takes).
const UPDATE_PART: u64 = 8 << 20;
/// Tries of one update part in a row (waiting 2, 4, 8 s between them)
/// before `cairn update` gives up on a box.
const UPDATE_PART_TRIES: u32 = 4;

/// What `cairn update` did for one box.
#[derive(Debug, Serialize)]
pub struct UpdateReport {
    /// The box.
    pub node: String,
    /// The bundle's version.
    pub version: String,
    /// Bytes the box already had (a transfer resumed there).
    pub resumed_from: u64,
    /// Bytes the box took from this run (a part sent again counts once).
    pub sent: u64,
    /// Parts that failed and were sent again from what the box kept.
    pub interruptions: u32,
    /// Why the last of them failed.
    pub last_interruption: Option<String>,
    /// The member the box fetched the bundle from, if not sent from here.
    pub from: Option<String>,
    /// The release the box ran when the bundle was in.
    pub running: String,
    /// The box runs this version already, or is installing a bundle:
    /// nothing was sent.
    pub already: bool,
    /// Why this box did not take it, if it did not.
    pub error: Option<String>,
}

/// A bundle file as `cairn update` offers it: its BLAKE3, size and version
/// (from `--version`, else from a name like `cairn-amd64-0.2.0.raucb`).
pub fn bundle_ref(
    path: &std::path::Path,
    version: Option<&str>,
) -> Result<cairn_proto::BundleRef, ClientError> {
    let file_error = |source| ClientError::File {
        path: path.display().to_string(),
        source,
    };
    let version = match version {
        Some(v) => v.to_owned(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".raucb"))
            .and_then(|n| n.rsplit('-').next())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .map(str::to_owned)
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "{} does not say its version (name it like cairn-amd64-0.2.0.raucb, or give --version)",
                    path.display()
                ))
            })?,
    };
    let file = std::fs::File::open(path).map_err(file_error)?;
    let size = file.metadata().map_err(file_error)?.len();
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file).map_err(file_error)?;
    Ok(cairn_proto::BundleRef {
        hash: *hasher.finalize().as_bytes(),
        size,
        version,
    })
}

/// Sends an update bundle to each of `nodes` (ids): offered with the
/// owner's signature, then streamed in parts from what each box already
/// has, so an interrupted run resumes. Each box checks the bundle's hash,
/// installs it into its other system slot and reboots into it.
///
/// With `from` (a member that keeps the bundle whole, such as a box
/// updated before), nothing is sent from here: each box fetches the
/// bundle from that member itself, and this waits (at most `wait`) until
/// each has it whole or says why not.
pub async fn update(
    home: &ClientHome,
    nodes: &[String],
    path: &std::path::Path,
    bundle: cairn_proto::BundleRef,
    allow_downgrade: bool,
    from: Option<&str>,
    wait: std::time::Duration,
) -> Result<Vec<UpdateReport>, ClientError> {
    let (swarm, secret) = home.swarm(None)?;
    let signing = secret.keys().signing;
    let from = from
        .map(|f| parse_node(f, &format!("member id {f}")))
        .transpose()?;
    let mut reports = Vec::new();
    let mut fetching = Vec::new();
    for node in nodes {
        let mut report = UpdateReport {
            node: node.clone(),
            version: bundle.version.clone(),
            resumed_from: 0,
            sent: 0,
            interruptions: 0,
            last_interruption: None,
            from: from.map(|f| f.to_human()),
            running: String::new(),
            already: false,
            error: None,
        };
        let sent = async {
            let id = parse_node(node, &format!("node id {node}"))?;
            let mut peer = reach(&swarm, id, node).await?;
            let what = || ClientError::node(format!("sending the update to {node}"));
            let mut info = peer
                .update_offer(
                    &signing,
                    bundle.clone(),
                    allow_downgrade,
                    from,
                    cairn_host::unix_now() + 600,
                )
                .await
                .map_err(what())?;
            let mut have = info.receiving.as_ref().map_or(0, |(_, have)| *have);
            report.resumed_from = have;
            if (info.version == bundle.version && !allow_downgrade) || info.installing {
                report.already = true;
                return Ok::<_, ClientError>((info, None));
            }
            if from.is_some() {
                return Ok((info, Some(peer)));
            }
            let mut file = std::fs::File::open(path).map_err(|source| ClientError::File {
                path: path.display().to_string(),
                source,
            })?;
            let mut failed_in_a_row = 0;
            while have < bundle.size {
                use std::io::{Read, Seek};
                // Parts no larger than the largest shard the box takes.
                let part_len = UPDATE_PART.min(peer.hello.max_shard.max(64 << 10));
                let len = part_len.min(bundle.size - have) as usize;
                let mut part = vec![0u8; len];
                file.seek(std::io::SeekFrom::Start(have))
                    .and_then(|_| file.read_exact(&mut part))
                    .map_err(|source| ClientError::File {
                        path: path.display().to_string(),
                        source,
                    })?;
                match peer.update_part(bundle.hash, have, part).await {
                    Ok(answer) => {
                        info = answer;
                        have += len as u64;
                        report.sent += len as u64;
                        failed_in_a_row = 0;
                    }
                    Err(e) => {
                        // A stalled or dropped part (a busy box, a lossy
                        // link) is sent again from what the box kept whole;
                        // only failures in a row end the run.
                        failed_in_a_row += 1;
                        if failed_in_a_row >= UPDATE_PART_TRIES {
                            return Err(what()(e));
                        }
                        report.interruptions += 1;
                        report.last_interruption = Some(format!("at byte {have}: {e}"));
                        tokio::time::sleep(std::time::Duration::from_secs(1 << failed_in_a_row))
                            .await;
                        peer = reach(&swarm, id, node).await?;
                        let now = peer.update_status().await.map_err(what())?;
                        have = kept_whole(&now, &bundle).ok_or_else(|| what()(e))?;
                        info = now;
                    }
                }
            }
            Ok((info, None))
        }
        .await;
        match sent {
            Ok((info, peer)) => {
                report.running = info.version;
                if let Some(peer) = peer {
                    fetching.push((reports.len(), peer));
                }
            }
            Err(e) => report.error = Some(e.to_string()),
        }
        reports.push(report);
    }
    // The boxes fetch at once; each is asked how far it got until it has
    // the bundle whole, gave up, or the wait is over.
    let until = std::time::Instant::now() + wait;
    while !fetching.is_empty() {
        let mut still = Vec::new();
        for (at, peer) in fetching {
            let report = &mut reports[at];
            match peer.update_status().await {
                Ok(info)
                    if info.installing
                        || info.version == bundle.version
                        || info
                            .last
                            .as_ref()
                            .is_some_and(|last| last.version == bundle.version) =>
                {
                    report.running = info.version;
                }
                Ok(info) => match (&info.receiving, info.fetch_trouble) {
                    (Some((receiving, _)), _) if receiving.hash == bundle.hash => {
                        still.push((at, peer));
                    }
                    (_, trouble) => {
                        report.error = Some(trouble.unwrap_or_else(|| {
                            "it stopped fetching the bundle (another offer replaced it)".into()
                        }));
                    }
                },
                // It may be rebooting into the bundle: ask again.
                Err(_) => still.push((at, peer)),
            }
        }
        fetching = still;
        if fetching.is_empty() {
            break;
        }
        if std::time::Instant::now() >= until {
            for (at, _) in fetching {
                reports[at].error = Some(format!(
                    "it did not have the bundle whole within {} s; `cairn system {}` tells how far it got",
                    wait.as_secs(),
                    reports[at].node
                ));
            }
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    swarm.close().await;
    Ok(reports)
}

/// Where a transfer of `bundle` goes on, from what the box says after a
/// failed part: the bytes it kept, or the whole size if the lost answer was
/// to the last part (it installs the bundle now). `None` if the offer is
/// gone (replaced, or dropped by a restart): nothing to go on from.
fn kept_whole(now: &cairn_proto::UpdateInfo, bundle: &cairn_proto::BundleRef) -> Option<u64> {
    match &now.receiving {
        Some((receiving, kept)) if receiving.hash == bundle.hash => Some(*kept),
        None if now.installing => Some(bundle.size),
        _ => None,
    }
}

/// Each box's system and its last update.
#[derive(Debug, Serialize)]
pub struct SystemReport {
    /// The box.
    pub node: String,
    /// What it said.
    pub system: Option<cairn_proto::UpdateInfo>,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// Asks each of `nodes` what system it runs and how its last update went.
pub async fn systems(
    home: &ClientHome,
    nodes: &[String],
) -> Result<Vec<SystemReport>, ClientError> {
    let (swarm, _) = home.swarm(None)?;
    let mut reports = Vec::new();
    for node in nodes {
        let asked = async {
            let id = parse_node(node, &format!("node id {node}"))?;
            let peer = reach(&swarm, id, node).await?;
            peer.update_status()
                .await
                .map_err(ClientError::node(format!("asking {node} for its system")))
        }
        .await;
        let (system, error) = match asked {
            Ok(info) => (Some(info), None),
            Err(e) => (None, Some(e.to_string())),
        };
        reports.push(SystemReport {
            node: node.clone(),
            system,
            error,
        });
    }
    swarm.close().await;
    Ok(reports)
}

/// The node ids of `cairn nodes` (your boxes and the swarm's you know).
pub fn known_nodes(home: &ClientHome) -> Result<Vec<String>, ClientError> {
    Ok(home
        .config()?
        .nodes
        .iter()
        .map(|n| n.node.to_human())
        .collect())
}

//! The wire protocol between Cairn nodes (and owners' clients): typed ids,
//! message types, framing, limits, audits and owner signatures. Plain data
//! and plain code: no tokio, no sockets, no file system, no clock (every
//! check that needs the time takes it as an argument). `cairn-net` moves
//! these bytes over QUIC; `docs/PROTOCOL.md` is the specification another
//! implementation can follow, and `fuzz/` fuzzes the decoder on this crate
//! alone.

pub mod audit;
pub mod frame;
pub mod gossip;
pub mod ids;
pub mod limits;
pub mod membership;
pub mod reach;
pub mod root;
pub mod signed;

use serde::{Deserialize, Serialize};

pub use ids::{DiskId, NodeId, OwnerId, ShardId};

pub use frame::{FrameError, decode_frame, encode_frame};

/// The protocol version this code speaks. Peers exchange it in the handshake.
pub const PROTOCOL_VERSION: u16 = 4;
/// The QUIC ALPN identifier of protocol version 4.
pub const ALPN: &[u8] = b"cairn/4";
/// Largest request or response frame (the header, not a shard body).
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest handshake message (Noise's own limit).
pub const MAX_HANDSHAKE_MESSAGE: usize = 65_535;

/// What an authenticated peer may ask. Sent as the first frame of a fresh
/// bidirectional stream; `Put` is followed on that stream by exactly `len`
/// raw bytes of shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Capacity, disks and health.
    Stat,
    /// Store a shard: `len` bytes follow the frame.
    Put {
        /// The shard's id (BLAKE3 of its bytes).
        id: ShardId,
        /// How many bytes follow.
        len: u64,
        /// The owner's public key (Ed25519): only the owner may delete.
        owner: OwnerId,
        /// Unix time (seconds) until which the shard is kept.
        lease_expires: u64,
    },
    /// Read a whole shard (`range: None`) or `len` bytes from `offset`.
    Get {
        /// The shard.
        id: ShardId,
        /// `(offset, len)`, or the whole shard.
        range: Option<(u64, u64)>,
    },
    /// Prove possession: answer with these byte ranges of the shard and the
    /// BLAKE3 tree nodes that tie them to the shard id.
    Audit {
        /// The shard.
        id: ShardId,
        /// `(offset, len)` pairs.
        ranges: Vec<(u64, u64)>,
    },
    /// Move a shard's lease expiry.
    Renew {
        /// The shard.
        id: ShardId,
        /// New expiry, Unix seconds.
        lease_expires: u64,
    },
    /// Delete a shard; allowed only with its owner's signature.
    Delete {
        /// The shard.
        id: ShardId,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// Ed25519 signature by the shard's owner over [`signed::delete_message`].
        signature: Vec<u8>,
    },
    /// Keep this owner's root record if it is validly signed and newer.
    PutRoot(root::RootRecord),
    /// The newest root record the node holds for an owner.
    GetRoot {
        /// The owner's public key.
        owner: OwnerId,
    },
    /// Become the box's owner; only while its pairing window is open. The
    /// connecting client key becomes the owner's admitted key.
    Claim {
        /// The owner's public key (Ed25519).
        owner: OwnerId,
        /// The owner's signature over [`signed::claim_message`].
        signature: Vec<u8>,
    },
    /// Hand the box to another owner; signed by the current owner.
    Transfer {
        /// The new owner's public key.
        to_owner: OwnerId,
        /// The new owner's client key, admitted from now on.
        to_client: NodeId,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// The current owner's signature over [`signed::transfer_message`].
        signature: Vec<u8>,
    },
    /// Start (or stop) draining: the box takes no new shards, so that it can
    /// be emptied and leave; signed by the owner.
    Drain {
        /// Drain (`true`) or take shards again (`false`).
        draining: bool,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// The owner's signature over [`signed::drain_message`].
        signature: Vec<u8>,
    },
    /// Asks this node to steward segments the owner stored: audit their
    /// holders, repair them, renew their leases.
    Track {
        /// The owner.
        owner: OwnerId,
        /// The owner's leave for this connection's key to steer its table.
        grant: SteerGrant,
        /// The segments, at most [`MAX_TRACK`].
        segments: Vec<TrackSegment>,
    },
    /// Join a swarm: the node keeps this certificate (issued to it by the
    /// swarm's founder) and shows it to other members from now on. Only
    /// the box's owner (or a configured key) may ask.
    Join {
        /// The node's membership certificate.
        cert: membership::MemberCert,
        /// Members it may gossip with first.
        seeds: Vec<NodeAddr>,
    },
    /// A member is removed from the swarm: refuse it from now on.
    Remove {
        /// The removal, signed by the swarm's founder.
        removal: membership::Removal,
    },
    /// A SWIM packet from another member (see [`gossip`]); no answer but
    /// `GossipTaken`.
    Gossip {
        /// The packet, as `foca` encodes it.
        packet: Vec<u8>,
    },
    /// The swarm's members as this node's gossip knows them.
    Members,
    /// Where are the shards of these segments of the owner's now (after
    /// repairs)?
    Locate {
        /// The owner.
        owner: OwnerId,
        /// The owner's leave for this connection's key to steer its table.
        grant: SteerGrant,
        /// Segment ids (BLAKE3 over the segment's shard ids in order), at
        /// most [`MAX_LOCATE`].
        segments: Vec<[u8; 32]>,
    },
    /// Stop stewarding these segments of the owner's (they were pruned):
    /// signed by the owner, so nobody else can make a steward drop them.
    Untrack {
        /// The owner.
        owner: OwnerId,
        /// Segment ids (BLAKE3 over the segment's shard ids in order), at
        /// most [`MAX_UNTRACK`].
        segments: Vec<[u8; 32]>,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// The owner's signature over [`signed::untrack_message`].
        signature: Vec<u8>,
    },
    /// Move many shards' leases to one expiry, in one index commit per
    /// disk (a steward's renewals).
    RenewMany {
        /// The shards, at most [`MAX_RENEW`].
        shards: Vec<ShardId>,
        /// New expiry, Unix seconds.
        lease_expires: u64,
    },
    /// The node's report of shards it no longer has (a disk failed or
    /// went offline) or has again (the disk came back), from entry
    /// `after` on, so stewards rebuild only those shards.
    Missing {
        /// The first entry wanted (0 for all the node still keeps).
        after: u64,
    },
    /// What each owner's shards take on this node, largest first (at most
    /// [`MAX_USAGE`] owners). Only the box's owner may ask.
    Usage,
    /// The box's owner evicts an owner from this box: up to [`MAX_EVICT`]
    /// of its claims go per request (shards no other owner claims are
    /// deleted; their stewards repair elsewhere), and its puts are refused
    /// from then on; or, with `evict: false`, lifts that.
    Evict {
        /// The owner evicted.
        owner: OwnerId,
        /// Evict (`true`) or lift the eviction (`false`).
        evict: bool,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// The box owner's signature over [`signed::evict_message`].
        signature: Vec<u8>,
    },
    /// The address this connection comes from, as the node sees it (the
    /// asker's public address when the node is outside its NAT).
    Observe,
    /// Dial the asker back at the address this connection comes from, but
    /// at `port`, from another socket of the node's, and say whether it
    /// answered there as itself: proof that strangers can reach it there.
    DialBack {
        /// The port to dial (the asker's mapped or own port).
        port: u16,
    },
    /// Held by the node until a member calls for the asker (a punch or a
    /// relay), at most [`reach::CALL_HOLD_S`] seconds; a node behind a NAT
    /// keeps one waiting at its rendezvous, which also keeps its router's
    /// mapping alive.
    AwaitCalls,
    /// Tell `target`, which waits here, to punch toward the asker; the
    /// answer is the target's address as this node sees it.
    Connect {
        /// The member to reach.
        target: NodeId,
        /// The asker's own IPv6 address, `[ADDR]:PORT`, for the target
        /// to punch as well.
        ipv6: Option<String>,
    },
    /// Relay packets between the asker and `target`, which waits here.
    RelayOpen {
        /// The member to reach.
        target: NodeId,
    },
    /// The box's settings (site, donated space, donation policy): `change`
    /// applied first (an empty change only reads them), kept on the box's
    /// writable partition. Signed by the box's owner.
    Settings {
        /// What to change.
        change: SettingsChange,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// The box owner's signature over [`signed::settings_message`].
        signature: Vec<u8>,
    },
    /// Take over the data disks here that `old_node` (this box before it
    /// was re-imaged, or another box of the same owner) left, and tell the
    /// owner's stewards the shards on them now live here. Signed by the
    /// owner named in the disks' markers, who must also own this box.
    AdoptDisks {
        /// The node whose disks these were.
        old_node: NodeId,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// The owner's signature over [`signed::adopt_message`].
        signature: Vec<u8>,
    },
    /// A steward's owner says the shards that `moved.from` held now live
    /// at `moved.to` (the disks moved, nothing was lost): the steward
    /// re-points them instead of rebuilding. Only the owner's client may ask.
    Moved {
        /// The owner's signed record.
        moved: MovedRecord,
    },
    /// Offers the box a system update bundle: signed by the box's owner.
    /// The answer says how much of it the box has already (a transfer cut
    /// off resumes there); the sender sends the rest with `UpdatePart`.
    UpdateOffer {
        /// The bundle.
        bundle: BundleRef,
        /// The owner allows this bundle even if it is not newer than what
        /// the box runs (going back to an older release).
        allow_downgrade: bool,
        /// A member that holds the bundle whole: the box fetches it from
        /// there with `UpdateGet` itself (`None`: the sender sends it).
        from: Option<NodeId>,
        /// Unix time after which the signature is void.
        not_after: u64,
        /// The box owner's signature over [`signed::update_message`].
        signature: Vec<u8>,
    },
    /// The next part of the bundle offered: `len` bytes (at most the
    /// largest shard) follow the frame, to be written at `offset`, which
    /// must be what the box has. Only the box's owner may send.
    UpdatePart {
        /// The bundle's BLAKE3.
        hash: [u8; 32],
        /// Where the bytes go: the box's `have`.
        offset: u64,
        /// How many bytes follow.
        len: u64,
    },
    /// The box's system: the release it runs, its slot, the bundle it is
    /// receiving and how its last update ended.
    UpdateStatus,
    /// `len` bytes (at most the largest shard) at `offset` of the update
    /// bundle the node keeps whole, answered with `Shard` and the bytes.
    /// Bundles are signed releases, not secrets: any member may fetch.
    UpdateGet {
        /// The bundle's BLAKE3.
        hash: [u8; 32],
        /// Where the bytes start.
        offset: u64,
        /// How many.
        len: u64,
    },
}

impl Request {
    /// The request's name, as `/metrics` and logs count it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stat => "stat",
            Self::Put { .. } => "put",
            Self::Get { .. } => "get",
            Self::Audit { .. } => "audit",
            Self::Renew { .. } => "renew",
            Self::Delete { .. } => "delete",
            Self::PutRoot(_) => "put_root",
            Self::GetRoot { .. } => "get_root",
            Self::Claim { .. } => "claim",
            Self::Transfer { .. } => "transfer",
            Self::Drain { .. } => "drain",
            Self::Track { .. } => "track",
            Self::Join { .. } => "join",
            Self::Remove { .. } => "remove",
            Self::Gossip { .. } => "gossip",
            Self::Members => "members",
            Self::Locate { .. } => "locate",
            Self::Untrack { .. } => "untrack",
            Self::RenewMany { .. } => "renew_many",
            Self::Missing { .. } => "missing",
            Self::Usage => "usage",
            Self::Evict { .. } => "evict",
            Self::Observe => "observe",
            Self::DialBack { .. } => "dial_back",
            Self::AwaitCalls => "await_calls",
            Self::Connect { .. } => "connect",
            Self::RelayOpen { .. } => "relay_open",
            Self::Settings { .. } => "settings",
            Self::AdoptDisks { .. } => "adopt_disks",
            Self::Moved { .. } => "moved",
            Self::UpdateOffer { .. } => "update_offer",
            Self::UpdatePart { .. } => "update_part",
            Self::UpdateStatus => "update_status",
            Self::UpdateGet { .. } => "update_get",
        }
    }
}

/// Longest site name a box keeps, in bytes.
pub const MAX_SITE: usize = 64;
/// Most owners a donation policy names.
pub const MAX_DONATION_OWNERS: usize = 256;

/// A change to a box's settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    /// The site advertised to the swarm (`Some(None)` clears it).
    pub site: Option<Option<String>>,
    /// GiB donated in all (`Some(None)`: all free space).
    pub quota_gib: Option<Option<u64>>,
    /// Only these owners may store here (empty: any owner of the swarm).
    pub donation_owners: Option<Vec<OwnerId>>,
    /// MiB each other owner may use here (`Some(None)`: no share).
    pub per_owner_mib: Option<Option<u64>>,
    /// The longest lease a put may ask for, days.
    pub longest_lease_days: Option<u64>,
}

impl SettingsChange {
    /// Whether it changes nothing (a read).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A box's settings as they are in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsInfo {
    /// The site advertised to the swarm.
    pub site: Option<String>,
    /// GiB donated in all; `None`: all free space.
    pub quota_gib: Option<u64>,
    /// Only these owners may store here (empty: any owner of the swarm).
    pub donation_owners: Vec<OwnerId>,
    /// MiB each other owner may use here; `None`: no share beyond the quota.
    pub per_owner_mib: Option<u64>,
    /// The longest lease a put may ask for, days.
    pub longest_lease_days: u64,
    /// Whether the node restarts its services to take a change (its
    /// connections drop for a moment).
    pub restarting: bool,
}

/// An owner's word that the shards `from` held now live at `to`, because
/// `to` took over `from`'s disks (signed over [`signed::moved_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedRecord {
    /// The owner.
    pub owner: OwnerId,
    /// The node whose disks moved.
    pub from: NodeId,
    /// The node that holds them now.
    pub to: NodeId,
    /// Unix time after which the record is void.
    pub not_after: u64,
    /// The owner's signature.
    pub signature: Vec<u8>,
}

/// Most owners in a `Usage` answer.
pub const MAX_USAGE: usize = 1000;
/// Most claims one `Evict` drops (ask again for the rest).
pub const MAX_EVICT: u64 = 10_000;

/// One owner's use of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerUse {
    /// The owner.
    pub owner: OwnerId,
    /// Bytes of the shards it claims.
    pub bytes: u64,
    /// How many shards it claims.
    pub shards: u64,
    /// Whether the box's owner evicted it.
    pub evicted: bool,
}

/// An owner's leave for one client key to steer the owner's table at one
/// steward (`Track`, `Locate`) until `not_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerGrant {
    /// Unix time after which it is void.
    pub not_after: u64,
    /// The owner's signature over [`signed::steer_message`] for this
    /// steward, the owner and the connection's client key.
    pub signature: Vec<u8>,
}

/// Most shards in one `RenewMany`.
pub const MAX_RENEW: usize = 1024;
/// Most entries in one `Missing` answer.
pub const MAX_MISSING: usize = 1024;

/// One entry of a node's report of missing shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingShard {
    /// The entry's number in the node's report.
    pub seq: u64,
    /// The shard.
    pub shard: ShardId,
    /// What became of it.
    pub state: MissingState,
}

/// What became of a shard a node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissingState {
    /// Gone with a disk that failed.
    Gone,
    /// On a disk offline since then (Unix seconds); it may come back.
    Offline(u64),
    /// Its disk is back in service: the shard is served again.
    Back,
}

/// Most segments in one `Track`.
pub const MAX_TRACK: usize = 128;
/// Most segments in one `Locate`.
pub const MAX_LOCATE: usize = 256;
/// Most segments in one `Untrack`.
pub const MAX_UNTRACK: usize = 1024;

/// A node and where to reach it: the one shape for it everywhere (on the
/// wire, in the owner's root record, in `client.toml` and `swarm.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Its id. (`id` in `client.toml` files written before this shape.)
    #[serde(alias = "id")]
    pub node: NodeId,
    /// HOST:PORT.
    pub addr: String,
    /// Its site, if any.
    pub site: Option<String>,
}

/// A segment for the steward: coding, shard size, shards and holders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSegment {
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Bytes per shard.
    pub shard_len: u64,
    /// `(shard id, holder)` in index order, k + m of them.
    pub shards: Vec<(ShardId, NodeId)>,
    /// Unix time the leases run to.
    pub lease_until: u64,
}

/// A node's answer: the first frame on the response side of the request's
/// stream. `Shard` and `AuditProof` are followed by a raw body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request failed; nothing was changed unless the code says so.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// For people: what happened and what to do.
        message: String,
    },
    /// Answer to `Stat`.
    Stat(StatInfo),
    /// Answer to `Put`: durable on this node.
    Stored {
        /// It was already there (its lease was extended if later).
        already: bool,
    },
    /// Answer to `Get`: `len` bytes follow.
    Shard {
        /// How many bytes follow.
        len: u64,
    },
    /// Answer to `Audit`: one bao slice per range follows, back to back,
    /// with these lengths.
    AuditProof {
        /// Length of each slice in the body.
        slice_lens: Vec<u64>,
    },
    /// Answer to `Renew`.
    Renewed {
        /// Whether the node holds the shard.
        found: bool,
    },
    /// Answer to `Delete`.
    Deleted {
        /// Whether the node held the shard.
        found: bool,
    },
    /// Answer to `PutRoot`: the record is kept (or was already).
    RootStored,
    /// Answer to `GetRoot`.
    Root(Option<root::RootRecord>),
    /// Answer to `Claim`, `Transfer` and `Drain`: who owns the box now.
    Ownership(OwnershipInfo),
    /// Answer to `Track` and `Untrack`: how many segments the steward now
    /// keeps for the owner.
    Tracked {
        /// Segments tracked for this owner.
        segments: u64,
    },
    /// Answer to `Locate`: each segment's holders in shard order, or
    /// `None` if the steward keeps no such segment for the owner.
    Locations(Vec<Option<Vec<NodeId>>>),
    /// Answer to `Join`: the node is a member of this swarm now.
    Joined {
        /// The swarm id.
        swarm: OwnerId,
    },
    /// Answer to `Remove`: the removal is kept.
    Removed,
    /// Answer to `Gossip`.
    GossipTaken,
    /// Answer to `Members`.
    Members(Vec<gossip::MemberState>),
    /// Answer to `RenewMany`: whether the node holds each shard.
    RenewedMany {
        /// One per shard asked, in order.
        found: Vec<bool>,
    },
    /// Answer to `Missing`.
    Missing {
        /// Entries from `after` on, at most [`MAX_MISSING`].
        shards: Vec<MissingShard>,
        /// The first entry the node still keeps: a steward that asked for
        /// an earlier one missed some and must sweep the node's shards.
        first: u64,
        /// The number the next entry will get (ask from here next).
        next: u64,
    },
    /// Answer to `Usage`.
    Usage(Vec<OwnerUse>),
    /// Answer to `Evict`: how many claims went, and whether the owner
    /// still holds some here (ask again).
    Evicted {
        /// Claims dropped by this request.
        claims: u64,
        /// Whether more are left.
        more: bool,
    },
    /// Answer to `Claim`: the claim waits for a short press of the box's
    /// button (presence at the box); ask again to learn whether it came.
    ClaimPending {
        /// Seconds left to press before the pairing window closes.
        confirm_within_s: u64,
    },
    /// Answer to `Observe`.
    Observed {
        /// HOST:PORT the asker's packets come from.
        addr: String,
    },
    /// Answer to `DialBack`.
    DialedBack {
        /// Whether the asker answered, as itself, at that port.
        reached: bool,
    },
    /// Answer to `AwaitCalls`: the calls that came (none when the hold
    /// ran out), at most [`reach::MAX_CALLS`].
    Calls(Vec<reach::Call>),
    /// Answer to `Connect`: the target was told to punch toward the asker.
    Rendezvous {
        /// HOST:PORT of the target as this node sees it: dial it now.
        at: String,
    },
    /// Answer to `RelayOpen`: dial the target at `at` after sending
    /// `token` there, alone in one UDP datagram, from the socket that
    /// dials.
    Relayed {
        /// HOST:PORT of the relay's port for the asker.
        at: String,
        /// Binds the asker's address to its side of the relay.
        token: [u8; 16],
    },
    /// Answer to `Settings`: the settings in force (after the change).
    Settings(SettingsInfo),
    /// Answer to `AdoptDisks`.
    Adopted {
        /// The disks taken over.
        disks: Vec<DiskId>,
        /// Shards on them, now this node's.
        shards: u64,
    },
    /// Answer to `Moved`: how many shards of the owner's the steward
    /// re-pointed in this answer's time.
    Repointed {
        /// Shards re-pointed now.
        shards: u64,
        /// Whether more are left: ask again.
        more: bool,
    },
    /// Answer to `UpdateOffer`, `UpdatePart` and `UpdateStatus`.
    Update(UpdateInfo),
}

/// Largest update bundle a box takes.
pub const MAX_BUNDLE: u64 = 2 << 30;
/// Longest release version, in bytes.
pub const MAX_RELEASE_VERSION: usize = 32;

/// A system update bundle, as its owner names it to a box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    /// BLAKE3 of the whole bundle file.
    pub hash: [u8; 32],
    /// Its size in bytes, at most [`MAX_BUNDLE`].
    pub size: u64,
    /// The release version in its manifest (RAUC checks it again).
    pub version: String,
}

/// A box's system and updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateInfo {
    /// The release the box runs.
    pub version: String,
    /// The system slot it runs from (`a` or `b`), if it has slots.
    pub slot: Option<String>,
    /// The bundle it is receiving and how many bytes of it it has.
    pub receiving: Option<(BundleRef, u64)>,
    /// It has the whole bundle and is installing it (then reboots).
    pub installing: bool,
    /// How its last update ended.
    pub last: Option<UpdateOutcome>,
    /// The member it fetches the bundle it receives from, if it fetches.
    pub fetching_from: Option<NodeId>,
    /// Why its last try to fetch failed (it tries again), if it did.
    pub fetch_trouble: Option<String>,
    /// The bundle it keeps whole and serves to other members (`UpdateGet`).
    pub serving: Option<BundleRef>,
}

/// How a box's last update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOutcome {
    /// The bundle's version.
    pub version: String,
    /// `kept`, `rolled-back`, `interrupted` or `refused`.
    pub result: String,
    /// Why, in words.
    pub reason: String,
    /// When, Unix seconds.
    pub at: u64,
}

/// Why a request failed, as a number another implementation can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request could not be decoded or makes no sense.
    BadRequest,
    /// A frame, body, range or shard exceeds a limit.
    TooLarge,
    /// The body does not hash to the claimed id; nothing was stored.
    HashMismatch,
    /// The node does not hold that shard.
    NotFound,
    /// The node has no room for the shard.
    NoSpace,
    /// Too many requests from this peer; retry later.
    RateLimited,
    /// The signature or the peer's key does not allow this.
    Forbidden,
    /// The signed request has expired.
    Expired,
    /// The request took longer than the node allows.
    Timeout,
    /// Something failed on the node (a disk, say); try another node.
    Internal,
    /// The node holds a newer record than the one offered.
    Stale,
    /// A claim came while the box's pairing window was closed.
    PairingClosed,
    /// The node is draining and takes no new shards; store them elsewhere.
    Draining,
    /// This node is not a steward (its `[steward]` is off).
    NoSteward,
}

/// Who owns a box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipInfo {
    /// The owner's public key, or `None` for an unclaimed box.
    pub owner: Option<OwnerId>,
    /// Whether the box is draining.
    pub draining: bool,
}

/// A node's capacity and health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatInfo {
    /// The node's software version.
    pub software: String,
    /// Largest shard it accepts.
    pub max_shard: u64,
    /// Per disk.
    pub disks: Vec<DiskInfo>,
    /// `booting`, `healthy`, `degraded`, `repairing` or `error`.
    pub state: String,
    /// Why it is not healthy, in words.
    pub reasons: Vec<String>,
    /// The hottest temperature the board measures, millidegrees Celsius.
    pub temperature_mc: Option<i32>,
    /// Who owns the box.
    pub ownership: OwnershipInfo,
}

impl StatInfo {
    /// Bytes still free for shards, over all its disks.
    pub fn free(&self) -> u64 {
        self.disks.iter().map(|d| d.free).sum()
    }
}

/// One data disk as a peer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Online, offline, failed, … in words.
    pub state: String,
    /// Bytes the disk may use for shards.
    pub capacity: u64,
    /// Bytes of shards on it.
    pub used: u64,
    /// Bytes still available for shards.
    pub free: u64,
    /// Number of shards.
    pub shards: u64,
}

/// The payload of each handshake message: who the sender is and what it
/// accepts. The responder's answer says whether it accepts the initiator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the sender speaks.
    pub versions: Vec<u16>,
    /// The sender's software version, for logs.
    pub software: String,
    /// Largest shard the sender accepts (0 if it stores none).
    pub max_shard: u64,
    /// Set by a responder that refuses the initiator: why.
    pub refused: Option<String>,
    /// The sender's swarm membership certificate, if it is in a swarm.
    pub member: Option<membership::MemberCert>,
}

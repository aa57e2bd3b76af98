//! Talking to one node: dial, authenticate it as the node id we expect, then
//! one request per stream. Whole shards read back are verified against their
//! id before they are returned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{NetError, handshake, read_body, read_frame, write_frame};
use crate::identity::Identity;
use cairn_proto::gossip::MemberState;
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_proto::membership::{MemberCert, Removal};
use cairn_proto::root::RootRecord;
use cairn_proto::{
    Hello, MissingShard, NodeAddr, OwnershipInfo, PROTOCOL_VERSION, Request, Response, StatInfo,
    SteerGrant, TrackSegment, audit, signed,
};
use ed25519_dalek::SigningKey;

/// An authenticated connection to a node.
pub struct Peer {
    connection: quinn::Connection,
    /// The node, proven by the handshake.
    pub node: NodeId,
    /// What it told us about itself.
    pub hello: Hello,
    /// Our own key, as the node sees us.
    local: NodeId,
    timeout: Duration,
}

/// Largest response body we accept (a shard plus slack for audit proofs).
const MAX_BODY: u64 = 64 << 20;

/// Where a claim stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// The box is the owner's.
    Claimed(OwnershipInfo),
    /// The claim waits for a short press of the box's button; ask again.
    Pending {
        /// Seconds left to press.
        confirm_within_s: u64,
    },
}

impl Peer {
    /// Whether the connection has ended (closed by either end, timed out or
    /// reset): every request on it would fail.
    pub fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }

    /// Dials `addr` from `endpoint` and proves the far end holds `node`'s key.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        node: NodeId,
        identity: &Identity,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        Self::connect_as(endpoint, addr, node, identity, None, timeout).await
    }

    /// Like [`Peer::connect`], showing a swarm membership certificate, so
    /// that nodes of the swarm admit this key.
    pub async fn connect_as(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        node: NodeId,
        identity: &Identity,
        member: Option<MemberCert>,
        timeout: Duration,
    ) -> Result<Self, NetError> {
        let connect_error = |reason: String| NetError::Connect { addr, reason };
        let connecting = endpoint
            .connect(addr, "cairn")
            .map_err(|e| connect_error(e.to_string()))?;
        let connection = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| NetError::Timeout(timeout))?
            .map_err(|e| connect_error(e.to_string()))?;
        let mine = Hello {
            versions: vec![PROTOCOL_VERSION],
            software: crate::software(),
            max_shard: 0,
            refused: None,
            member,
        };
        let hello = handshake::initiate(&connection, identity, &node, &mine, timeout).await?;
        Ok(Self {
            connection,
            node,
            hello,
            local: identity.id,
            timeout,
        })
    }

    /// Uses `timeout` for each request from now on.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A client-side endpoint on an ephemeral port.
    pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, NetError> {
        let mut endpoint =
            super::tls::bind_endpoint(bind, None).map_err(|e| NetError::Connect {
                addr: bind,
                reason: e.to_string(),
            })?;
        let config =
            super::tls::client_config(&Default::default()).map_err(|e| NetError::Connect {
                addr: bind,
                reason: e.to_string(),
            })?;
        endpoint.set_default_client_config(config);
        Ok(endpoint)
    }

    /// [`Peer::client_endpoint`] with a second handle on its socket (see
    /// [`crate::tls::bind_endpoint_raw`]). Bound to `[::]:0` where the host
    /// has IPv6 (both families then), else to `0.0.0.0:0`.
    pub fn dual_stack_endpoint() -> Result<(quinn::Endpoint, Arc<std::net::UdpSocket>), NetError> {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        let v4 = SocketAddr::from(([0, 0, 0, 0], 0));
        let (mut endpoint, raw) = super::tls::bind_endpoint_raw(v6, None)
            .or_else(|_| super::tls::bind_endpoint_raw(v4, None))
            .map_err(|e| NetError::Connect {
                addr: v4,
                reason: e.to_string(),
            })?;
        let config =
            super::tls::client_config(&Default::default()).map_err(|e| NetError::Connect {
                addr: v4,
                reason: e.to_string(),
            })?;
        endpoint.set_default_client_config(config);
        Ok((endpoint, raw))
    }

    /// Sends a request (and body), returns the response and its body.
    /// The body is handed to the stream as it is, not copied.
    async fn call(&self, request: &Request, body: Bytes) -> Result<(Response, Vec<u8>), NetError> {
        let run = async {
            let (mut send, mut recv) = self.connection.open_bi().await?;
            let mut written = write_frame(&mut send, request).await;
            if written.is_ok() && !body.is_empty() {
                written = send
                    .write_chunk(body)
                    .await
                    .map_err(|e| NetError::Write(e.to_string()));
            }
            let _ = send.finish();
            // A node that refuses a request stops reading its body; its answer says why.
            let response: Response = match read_frame(&mut recv).await {
                Ok(response) => response,
                Err(read_error) => return Err(written.err().unwrap_or(read_error)),
            };
            let body_len = match &response {
                Response::Shard { len } => *len,
                // A peer's numbers: an overflowing sum is its error, not our panic.
                Response::AuditProof { slice_lens } => slice_lens
                    .iter()
                    .try_fold(0u64, |sum, len| sum.checked_add(*len))
                    .unwrap_or(u64::MAX),
                Response::Error { code, message } => {
                    return Err(NetError::Remote {
                        code: *code,
                        message: message.clone(),
                    });
                }
                _ => 0,
            };
            if body_len > MAX_BODY {
                return Err(NetError::Unexpected(format!(
                    "a body of {body_len} bytes exceeds {MAX_BODY}"
                )));
            }
            let response_body = read_body(&mut recv, body_len as usize).await?;
            Ok((response, response_body))
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| NetError::Timeout(self.timeout))?
    }

    /// The node's capacity and health.
    pub async fn stat(&self) -> Result<StatInfo, NetError> {
        match self.call(&Request::Stat, Bytes::new()).await? {
            (Response::Stat(info), _) => Ok(info),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Stores a shard; `Ok(true)` if it was already there.
    pub async fn put(
        &self,
        id: ShardId,
        bytes: impl Into<Bytes>,
        owner: cairn_proto::ids::OwnerId,
        lease_expires: u64,
    ) -> Result<bool, NetError> {
        let bytes = bytes.into();
        let request = Request::Put {
            id,
            len: bytes.len() as u64,
            owner,
            lease_expires,
        };
        match self.call(&request, bytes).await? {
            (Response::Stored { already }, _) => Ok(already),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Reads a whole shard, verified against its id.
    pub async fn get(&self, id: ShardId) -> Result<Vec<u8>, NetError> {
        let bytes = self.get_raw(id, None).await?;
        if ShardId::of(&bytes) != id {
            return Err(NetError::Corrupt(format!(
                "shard {id} from {} does not match its id",
                self.node.to_human()
            )));
        }
        Ok(bytes)
    }

    /// Reads bytes of a shard without verifying them (a range cannot be
    /// checked against the id alone; use [`Self::audit`] for proven ranges).
    pub async fn get_raw(
        &self,
        id: ShardId,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, NetError> {
        match self.call(&Request::Get { id, range }, Bytes::new()).await? {
            (Response::Shard { .. }, body) => Ok(body),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks for proofs of `ranges`; returns the raw slices (check them with
    /// [`audit::verify`]).
    pub async fn audit_raw(
        &self,
        id: ShardId,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<Vec<u8>>, NetError> {
        let request = Request::Audit {
            id,
            ranges: ranges.to_vec(),
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::AuditProof { slice_lens }, body) => {
                let mut slices = Vec::with_capacity(slice_lens.len());
                let mut rest = &body[..];
                for len in slice_lens {
                    let (slice, tail) = rest.split_at(len as usize);
                    slices.push(slice.to_vec());
                    rest = tail;
                }
                Ok(slices)
            }
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Audits a shard of known length: random ranges from `seed`, verified
    /// against the id. Returns the proven bytes.
    pub async fn audit(
        &self,
        id: ShardId,
        shard_len: u64,
        seed: [u8; 32],
    ) -> Result<Vec<Vec<u8>>, NetError> {
        let ranges = audit::challenge(seed, shard_len, 4, 4 * audit::CHUNK);
        let slices = self.audit_raw(id, &ranges).await?;
        audit::verify(&id, shard_len, &ranges, &slices).map_err(|e| {
            NetError::Corrupt(format!("audit of {id} on {}: {e}", self.node.to_human()))
        })
    }

    /// Moves a shard's lease; `Ok(false)` if the node does not hold it.
    pub async fn renew(&self, id: ShardId, lease_expires: u64) -> Result<bool, NetError> {
        match self
            .call(&Request::Renew { id, lease_expires }, Bytes::new())
            .await?
        {
            (Response::Renewed { found }, _) => Ok(found),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Deletes a shard with its owner's signature (see [`cairn_proto::signed`]).
    pub async fn delete(
        &self,
        id: ShardId,
        not_after: u64,
        signature: Vec<u8>,
    ) -> Result<bool, NetError> {
        let request = Request::Delete {
            id,
            not_after,
            signature,
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Deleted { found }, _) => Ok(found),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Offers the owner's root record; the node keeps it if it is newer.
    pub async fn put_root(&self, record: RootRecord) -> Result<(), NetError> {
        match self.call(&Request::PutRoot(record), Bytes::new()).await? {
            (Response::RootStored, _) => Ok(()),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The newest root record the node holds for `owner`, verified.
    pub async fn get_root(&self, owner: OwnerId) -> Result<Option<RootRecord>, NetError> {
        match self.call(&Request::GetRoot { owner }, Bytes::new()).await? {
            (Response::Root(None), _) => Ok(None),
            (Response::Root(Some(record)), _) => {
                if record.owner != owner {
                    return Err(NetError::Corrupt("a root record of another owner".into()));
                }
                record
                    .verify()
                    .map_err(|e| NetError::Corrupt(format!("root record: {e}")))?;
                Ok(Some(record))
            }
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Claims the node for `owner` (the node must have its pairing window
    /// open); this peer's key becomes the owner's admitted client key.
    pub async fn claim(&self, owner: &SigningKey) -> Result<ClaimAnswer, NetError> {
        let owner_id = signed::owner_id(owner);
        let signature = signed::sign(
            owner,
            &signed::claim_message(&self.node, &self.local, &owner_id),
        );
        let request = Request::Claim {
            owner: owner_id,
            signature,
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Ownership(info), _) => Ok(ClaimAnswer::Claimed(info)),
            (Response::ClaimPending { confirm_within_s }, _) => {
                Ok(ClaimAnswer::Pending { confirm_within_s })
            }
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Hands the node to another owner; `owner` must be its current owner.
    pub async fn transfer(
        &self,
        owner: &SigningKey,
        to_owner: OwnerId,
        to_client: NodeId,
        not_after: u64,
    ) -> Result<OwnershipInfo, NetError> {
        let signature = signed::sign(
            owner,
            &signed::transfer_message(&self.node, &to_owner, &to_client, not_after),
        );
        let request = Request::Transfer {
            to_owner,
            to_client,
            not_after,
            signature,
        };
        self.ownership_call(&request).await
    }

    /// Starts or stops draining the node; `owner` must be its owner.
    pub async fn drain(
        &self,
        owner: &SigningKey,
        draining: bool,
        not_after: u64,
    ) -> Result<OwnershipInfo, NetError> {
        let signature = signed::sign(
            owner,
            &signed::drain_message(&self.node, draining, not_after),
        );
        let request = Request::Drain {
            draining,
            not_after,
            signature,
        };
        self.ownership_call(&request).await
    }

    /// The box's settings after `change` (empty: only read them), signed
    /// by the box's owner.
    pub async fn settings(
        &self,
        owner: &SigningKey,
        change: cairn_proto::SettingsChange,
        not_after: u64,
    ) -> Result<cairn_proto::SettingsInfo, NetError> {
        let signature = signed::sign(
            owner,
            &signed::settings_message(&self.node, &change, not_after),
        );
        let request = Request::Settings {
            change,
            not_after,
            signature,
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Settings(info), _) => Ok(info),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Offers the box an update bundle, signed by its owner; the answer
    /// says how much of it the box has (send the rest from there), or,
    /// with `from`, the box fetches it from that member itself.
    pub async fn update_offer(
        &self,
        owner: &SigningKey,
        bundle: cairn_proto::BundleRef,
        allow_downgrade: bool,
        from: Option<NodeId>,
        not_after: u64,
    ) -> Result<cairn_proto::UpdateInfo, NetError> {
        let signature = signed::sign(
            owner,
            &signed::update_message(
                &self.node,
                &bundle,
                allow_downgrade,
                from.as_ref(),
                not_after,
            ),
        );
        let request = Request::UpdateOffer {
            bundle,
            allow_downgrade,
            from,
            not_after,
            signature,
        };
        self.update_call(&request, Bytes::new()).await
    }

    /// Sends the next part of the bundle offered, from `offset`.
    pub async fn update_part(
        &self,
        hash: [u8; 32],
        offset: u64,
        bytes: impl Into<Bytes>,
    ) -> Result<cairn_proto::UpdateInfo, NetError> {
        let bytes = bytes.into();
        let request = Request::UpdatePart {
            hash,
            offset,
            len: bytes.len() as u64,
        };
        self.update_call(&request, bytes).await
    }

    /// `len` bytes at `offset` of the update bundle `hash` the node keeps
    /// (unverified here: the fetcher hashes the whole bundle).
    pub async fn update_get(
        &self,
        hash: [u8; 32],
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, NetError> {
        let request = Request::UpdateGet { hash, offset, len };
        match self.call(&request, Bytes::new()).await? {
            (Response::Shard { .. }, body) if body.len() as u64 == len => Ok(body),
            (Response::Shard { .. }, body) => Err(NetError::Unexpected(format!(
                "{} bytes of the update bundle asked, {} sent",
                len,
                body.len()
            ))),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The box's system: release, slot, the bundle it receives, the last
    /// update's outcome.
    pub async fn update_status(&self) -> Result<cairn_proto::UpdateInfo, NetError> {
        self.update_call(&Request::UpdateStatus, Bytes::new()).await
    }

    async fn update_call(
        &self,
        request: &Request,
        body: Bytes,
    ) -> Result<cairn_proto::UpdateInfo, NetError> {
        match self.call(request, body).await? {
            (Response::Update(info), _) => Ok(info),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Has the node take over the disks `old_node` left in it, signed by
    /// the owner; returns the disks and the shards on them.
    pub async fn adopt_disks(
        &self,
        owner: &SigningKey,
        old_node: NodeId,
        not_after: u64,
    ) -> Result<(Vec<cairn_proto::DiskId>, u64), NetError> {
        let signature = signed::sign(
            owner,
            &signed::adopt_message(&old_node, &self.node, not_after),
        );
        let request = Request::AdoptDisks {
            old_node,
            not_after,
            signature,
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Adopted { disks, shards }, _) => Ok((disks, shards)),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Tells this steward that the owner's shards at `from` now live at
    /// `to`; returns how many it re-pointed and whether more are left.
    pub async fn moved(&self, moved: cairn_proto::MovedRecord) -> Result<(u64, bool), NetError> {
        match self.call(&Request::Moved { moved }, Bytes::new()).await? {
            (Response::Repointed { shards, more }, _) => Ok((shards, more)),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// What each owner's shards take on the node, largest first; only the
    /// box's owner may ask.
    pub async fn usage(&self) -> Result<Vec<cairn_proto::OwnerUse>, NetError> {
        match self.call(&Request::Usage, Bytes::new()).await? {
            (Response::Usage(rows), _) => Ok(rows),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Evicts `evicted` from the node (or lifts that, `evict: false`);
    /// `owner` must be the box's owner. Returns the claims dropped by this
    /// request and whether more are left.
    pub async fn evict(
        &self,
        owner: &SigningKey,
        evicted: OwnerId,
        evict: bool,
        not_after: u64,
    ) -> Result<(u64, bool), NetError> {
        let signature = signed::sign(
            owner,
            &signed::evict_message(&self.node, &evicted, evict, not_after),
        );
        let request = Request::Evict {
            owner: evicted,
            evict,
            not_after,
            signature,
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Evicted { claims, more }, _) => Ok((claims, more)),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the node (a steward) to track segments; returns how many it
    /// tracks for the owner. `grant`: the owner's leave for this client's
    /// key (see [`signed::steer_message`]).
    pub async fn track(
        &self,
        owner: OwnerId,
        grant: SteerGrant,
        segments: Vec<TrackSegment>,
    ) -> Result<u64, NetError> {
        let request = Request::Track {
            owner,
            grant,
            segments,
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Tracked { segments }, _) => Ok(segments),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Moves many shards' leases at once; says for each whether the node
    /// holds it.
    pub async fn renew_many(
        &self,
        shards: Vec<ShardId>,
        lease_expires: u64,
    ) -> Result<Vec<bool>, NetError> {
        let asked = shards.len();
        match self
            .call(
                &Request::RenewMany {
                    shards,
                    lease_expires,
                },
                Bytes::new(),
            )
            .await?
        {
            (Response::RenewedMany { found }, _) if found.len() == asked => Ok(found),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The node's report of missing shards from entry `after` on: the
    /// entries, the first it still keeps, and the next number.
    pub async fn missing(&self, after: u64) -> Result<(Vec<MissingShard>, u64, u64), NetError> {
        match self.call(&Request::Missing { after }, Bytes::new()).await? {
            (
                Response::Missing {
                    shards,
                    first,
                    next,
                },
                _,
            ) => Ok((shards, first, next)),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the steward to stop tracking segments; signed by their owner.
    pub async fn untrack(
        &self,
        owner: OwnerId,
        segments: Vec<[u8; 32]>,
        not_after: u64,
        signature: Vec<u8>,
    ) -> Result<u64, NetError> {
        let request = Request::Untrack {
            owner,
            segments,
            not_after,
            signature,
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Tracked { segments }, _) => Ok(segments),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Gives the node its swarm membership certificate (the node's owner
    /// or an administrator only).
    pub async fn join(&self, cert: MemberCert, seeds: Vec<NodeAddr>) -> Result<OwnerId, NetError> {
        match self
            .call(&Request::Join { cert, seeds }, Bytes::new())
            .await?
        {
            (Response::Joined { swarm }, _) => Ok(swarm),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Hands the node a SWIM packet.
    pub async fn gossip(&self, packet: Vec<u8>) -> Result<(), NetError> {
        match self.call(&Request::Gossip { packet }, Bytes::new()).await? {
            (Response::GossipTaken, _) => Ok(()),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The swarm's members as the node's gossip knows them.
    pub async fn members(&self) -> Result<Vec<MemberState>, NetError> {
        match self.call(&Request::Members, Bytes::new()).await? {
            (Response::Members(members), _) => Ok(members),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The address this connection comes from, as the node sees it.
    pub async fn observe(&self) -> Result<SocketAddr, NetError> {
        match self.call(&Request::Observe, Bytes::new()).await? {
            (Response::Observed { addr }, _) => addr
                .parse()
                .map_err(|_| NetError::Unexpected(format!("an observed address {addr:?}"))),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the node to dial this program back at `port` of the address it
    /// sees, from another socket; whether it got through.
    pub async fn dial_back(&self, port: u16) -> Result<bool, NetError> {
        match self.call(&Request::DialBack { port }, Bytes::new()).await? {
            (Response::DialedBack { reached }, _) => Ok(reached),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Waits at this node (the rendezvous) for members' calls, up to
    /// [`cairn_proto::reach::CALL_HOLD_S`] seconds.
    pub async fn await_calls(&self) -> Result<Vec<cairn_proto::reach::Call>, NetError> {
        let hold = Duration::from_secs(cairn_proto::reach::CALL_HOLD_S + 10);
        let waiting = Self {
            connection: self.connection.clone(),
            node: self.node,
            hello: self.hello.clone(),
            local: self.local,
            timeout: hold.max(self.timeout),
        };
        match waiting.call(&Request::AwaitCalls, Bytes::new()).await? {
            (Response::Calls(calls), _) => Ok(calls),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks this node (`target`'s rendezvous) to have `target` punch toward
    /// this program (and toward `ipv6`, this program's own IPv6 address,
    /// if it has one); `target`'s address as the rendezvous sees it.
    pub async fn connect_call(
        &self,
        target: NodeId,
        ipv6: Option<String>,
    ) -> Result<SocketAddr, NetError> {
        match self
            .call(&Request::Connect { target, ipv6 }, Bytes::new())
            .await?
        {
            (Response::Rendezvous { at }, _) => at
                .parse()
                .map_err(|_| NetError::Unexpected(format!("a rendezvous address {at:?}"))),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks this node to relay toward `target`: where to dial and the
    /// token to send there first.
    pub async fn relay_open(&self, target: NodeId) -> Result<(SocketAddr, [u8; 16]), NetError> {
        match self
            .call(&Request::RelayOpen { target }, Bytes::new())
            .await?
        {
            (Response::Relayed { at, token }, _) => at
                .parse()
                .map(|at| (at, token))
                .map_err(|_| NetError::Unexpected(format!("a relay address {at:?}"))),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Where the connection's packets go now.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// Tells the node a member was removed from its swarm.
    pub async fn remove(&self, removal: Removal) -> Result<(), NetError> {
        match self
            .call(&Request::Remove { removal }, Bytes::new())
            .await?
        {
            (Response::Removed, _) => Ok(()),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the node (a steward) where the owner's shards are now.
    pub async fn locate(
        &self,
        owner: OwnerId,
        grant: SteerGrant,
        segments: &[[u8; 32]],
    ) -> Result<Vec<Option<Vec<NodeId>>>, NetError> {
        let request = Request::Locate {
            owner,
            grant,
            segments: segments.to_vec(),
        };
        match self.call(&request, Bytes::new()).await? {
            (Response::Locations(found), _) if found.len() == segments.len() => Ok(found),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    async fn ownership_call(&self, request: &Request) -> Result<OwnershipInfo, NetError> {
        match self.call(request, Bytes::new()).await? {
            (Response::Ownership(info), _) => Ok(info),
            (other, _) => Err(NetError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The QUIC connection, for tests that play a peer which opens streams
    /// and never reads their answers.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Sends raw bytes as a request stream and returns the node's answer
    /// (for tests of how a node treats malformed or oversized frames).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<Response, NetError> {
        let (mut send, mut recv) = self.connection.open_bi().await?;
        send.write_all(bytes)
            .await
            .map_err(|e| NetError::Write(e.to_string()))?;
        let _ = send.finish();
        read_frame(&mut recv).await
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.connection.close(0u32.into(), b"done");
    }
}

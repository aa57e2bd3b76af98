//! The request handler without QUIC: every error code the handler itself
//! sends, from the request that earns it, against a real store, root
//! records, ownership and membership in a temporary directory. (The
//! connection loop adds `RateLimited`, from the token bucket tested in
//! `cairn-proto`'s `limits`, and answers an undecodable frame with
//! `BadRequest` or `TooLarge`; `crates/cairn/tests/daemon.rs` sends those
//! over a real connection.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_net::Identity;
use cairn_net::tls::TransportLimits;
use cairn_node::donation::Donation;
use cairn_node::membership::Membership;
use cairn_node::missing::MissingLog;
use cairn_node::net::gossip::GossipService;
use cairn_node::net::handler::{Answer, Handler};
use cairn_node::net::steward::{StewardConfig, StewardService};
use cairn_node::net::{AllowList, ServerConfig, Services};
use cairn_node::ownership::NodeControl;
use cairn_node::roots::RootStore;
use cairn_node::spent::Spent;
use cairn_proto::gossip::{Advert, GossipMember};
use cairn_proto::limits::{Limits, Refusal};
use cairn_proto::root::RootRecord;
use cairn_proto::{
    ErrorCode, NodeId, OwnerId, Request, Response, ShardId, SteerGrant, TrackSegment, signed,
};
use cairn_store::{ShardStore, StoreConfig};
use ed25519_dalek::SigningKey;

const ADMIN: NodeId = NodeId([0xad; 32]);
const STRANGER: NodeId = NodeId([0x55; 32]);
const MAX_SHARD: u64 = 64 * 1024;
const QUOTA: u64 = 256 * 1024;
const FAR: u64 = 4_000_000_000;

struct Node {
    handler: Handler,
    control: Arc<NodeControl>,
    id: NodeId,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(steward: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let disk = dir.path().join("disk");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&disk).unwrap();
        let identity = Identity::generate().unwrap();
        let id = identity.id;
        let mut store_config = StoreConfig::new(id, &state, vec![disk]);
        store_config.reserve_bytes = 0;
        store_config.quota_bytes = Some(QUOTA);
        store_config.max_shard_bytes = MAX_SHARD;
        let store = Arc::new(ShardStore::open(store_config).unwrap());
        let control = Arc::new(NodeControl::open(&state).unwrap());
        let membership = Arc::new(Membership::open(&state, id).unwrap());
        let gossip = GossipService::new(
            GossipMember {
                node: id,
                addr: "127.0.0.1:1".into(),
                bump: 0,
                advert: Advert {
                    site: None,
                    capacity: QUOTA,
                    free: QUOTA,
                    software: "test".into(),
                    draining: false,
                    reach: Default::default(),
                },
            },
            Arc::clone(&membership),
        );
        let steward = steward.then(|| {
            let config = StewardConfig {
                policy: Default::default(),
                tick: Duration::from_secs(60),
            };
            Arc::new(StewardService::open(&state, config).unwrap())
        });
        let config = ServerConfig {
            identity,
            limits: Limits {
                max_shard: MAX_SHARD,
                max_get_range: MAX_SHARD,
                ..Limits::default()
            },
            transport: TransportLimits::default(),
            allow: AllowList::Only(HashSet::from([ADMIN])),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(1),
            body_budget: 1 << 20,
        };
        let services = Services {
            store,
            roots: Arc::new(RootStore::open(&state).unwrap()),
            control: Arc::clone(&control),
            steward,
            membership,
            gossip,
            missing: Arc::new(MissingLog::new()),
            donation: Arc::new(
                Donation::open(
                    // The tests' leases run to a fixed far time (`FAR`).
                    cairn_node::donation::Policy {
                        owners: None,
                        per_owner_bytes: None,
                        longest_lease_s: u64::MAX,
                    },
                    &state,
                )
                .unwrap(),
            ),
            spent: Arc::new(Spent::open(&state).unwrap()),
            rendezvous: Arc::new(cairn_node::rendezvous::Rendezvous::new(
                cairn_node::rendezvous::RelayLimits {
                    enabled: false,
                    sessions: 0,
                    bytes_per_s: 0,
                    bytes_per_day: 0,
                },
            )),
            settings: None,
            updates: None,
        };
        Self {
            handler: Handler::new(config, services),
            control,
            id,
            _dir: dir,
        }
    }

    async fn ask(&self, peer: NodeId, request: Request, body: &[u8]) -> Result<Answer, Refusal> {
        let mut body = body;
        self.handler.answer(peer, None, request, &mut body).await
    }

    async fn refused(&self, peer: NodeId, request: Request, body: &[u8]) -> ErrorCode {
        match self.ask(peer, request, body).await {
            Err(refusal) => {
                assert!(!refusal.message.is_empty());
                refusal.code
            }
            Ok((response, _)) => panic!("expected a refusal, got {response:?}"),
        }
    }
}

fn put(bytes: &[u8], owner: OwnerId) -> Request {
    Request::Put {
        id: ShardId::of(bytes),
        len: bytes.len() as u64,
        owner,
        lease_expires: FAR,
    }
}

fn now() -> u64 {
    cairn_host::unix_now()
}

/// The owner's leave for `client` to steer its table at `steward`.
fn grant(owner_key: &SigningKey, steward: &NodeId, client: &NodeId) -> SteerGrant {
    let not_after = now() + 600;
    let owner = signed::owner_id(owner_key);
    SteerGrant {
        not_after,
        signature: signed::sign(
            owner_key,
            &signed::steer_message(steward, &owner, client, not_after),
        ),
    }
}

#[tokio::test]
async fn each_refusal_has_its_code() {
    let node = Node::start(false);
    let owner_key = SigningKey::from_bytes(&[1; 32]);
    let owner = signed::owner_id(&owner_key);
    let shard = vec![7u8; 4096];

    // Stored, then served back.
    let (stored, _) = node.ask(ADMIN, put(&shard, owner), &shard).await.unwrap();
    assert_eq!(stored, Response::Stored { already: false });
    let get = Request::Get {
        id: ShardId::of(&shard),
        range: None,
    };
    let (answer, body) = node.ask(ADMIN, get.clone(), &[]).await.unwrap();
    assert_eq!(answer, Response::Shard { len: 4096 });
    assert_eq!(body, shard);

    // Forbidden: a key the node does not admit (only Stat and Claim are open to it).
    assert_eq!(
        node.refused(STRANGER, get.clone(), &[]).await,
        ErrorCode::Forbidden
    );
    assert!(node.ask(STRANGER, Request::Stat, &[]).await.is_ok());

    // TooLarge: over the node's shard limit, refused before any body is read.
    let big = Request::Put {
        id: ShardId([1; 32]),
        len: MAX_SHARD + 1,
        owner,
        lease_expires: FAR,
    };
    assert_eq!(node.refused(ADMIN, big, &[]).await, ErrorCode::TooLarge);

    // HashMismatch: the bytes are not the id's.
    let lie = Request::Put {
        id: ShardId([2; 32]),
        len: 10,
        owner,
        lease_expires: FAR,
    };
    assert_eq!(
        node.refused(ADMIN, lie, &[0; 10]).await,
        ErrorCode::HashMismatch
    );

    // BadRequest: the body ends before its announced length.
    let short = vec![3u8; 100];
    assert_eq!(
        node.refused(ADMIN, put(&short, owner), &short[..50]).await,
        ErrorCode::BadRequest
    );

    // NotFound.
    let missing = Request::Get {
        id: ShardId([4; 32]),
        range: None,
    };
    assert_eq!(node.refused(ADMIN, missing, &[]).await, ErrorCode::NotFound);

    // NoSpace: past the donated quota.
    let mut filled = 0;
    let code = loop {
        let bytes: Vec<u8> = (0..MAX_SHARD).map(|i| (i as u8) ^ (filled as u8)).collect();
        match node.ask(ADMIN, put(&bytes, owner), &bytes).await {
            Ok(_) => filled += 1,
            Err(refusal) => break refusal.code,
        }
        assert!(filled < 16, "the quota of {QUOTA} bytes never ran out");
    };
    assert_eq!(code, ErrorCode::NoSpace);

    // Deletes: only the owner's signature, only before it expires.
    let id = ShardId::of(&shard);
    let stranger_key = SigningKey::from_bytes(&[2; 32]);
    let forged = Request::Delete {
        id,
        not_after: now() + 60,
        signature: signed::sign_delete(&stranger_key, &node.id, &id, now() + 60),
    };
    assert_eq!(node.refused(ADMIN, forged, &[]).await, ErrorCode::Forbidden);
    let expired = Request::Delete {
        id,
        not_after: now() - 1,
        signature: signed::sign_delete(&owner_key, &node.id, &id, now() - 1),
    };
    assert_eq!(node.refused(ADMIN, expired, &[]).await, ErrorCode::Expired);
    let good = Request::Delete {
        id,
        not_after: now() + 60,
        signature: signed::sign_delete(&owner_key, &node.id, &id, now() + 60),
    };
    let (deleted, _) = node.ask(ADMIN, good, &[]).await.unwrap();
    assert_eq!(deleted, Response::Deleted { found: true });

    // Stale: an older root record than the one held.
    let newer = RootRecord::sign(&owner_key, 2, vec![1; 16]);
    let older = RootRecord::sign(&owner_key, 1, vec![2; 16]);
    node.ask(ADMIN, Request::PutRoot(newer), &[]).await.unwrap();
    assert_eq!(
        node.refused(ADMIN, Request::PutRoot(older), &[]).await,
        ErrorCode::Stale
    );

    // NoSteward: this node does not steward.
    let locate = Request::Locate {
        owner,
        grant: grant(&owner_key, &node.id, &ADMIN),
        segments: vec![[1; 32]],
    };
    assert_eq!(node.refused(ADMIN, locate, &[]).await, ErrorCode::NoSteward);
}

#[tokio::test]
async fn claims_need_the_window_and_a_draining_box_takes_no_shards() {
    let node = Node::start(true);
    let owner_key = SigningKey::from_bytes(&[1; 32]);
    let owner = signed::owner_id(&owner_key);
    let client = NodeId([0xc1; 32]);
    let claim = Request::Claim {
        owner,
        signature: signed::sign(
            &owner_key,
            &signed::claim_message(&node.id, &client, &owner),
        ),
    };
    // PairingClosed: the button was not held.
    assert_eq!(
        node.refused(client, claim.clone(), &[]).await,
        ErrorCode::PairingClosed
    );
    node.control
        .open_pairing(Instant::now() + Duration::from_secs(60));
    // The claim waits for a press at the box; asked again after it, it is made.
    let (waiting, _) = node.ask(client, claim.clone(), &[]).await.unwrap();
    assert!(
        matches!(waiting, Response::ClaimPending { confirm_within_s } if confirm_within_s > 50)
    );
    assert!(node.control.confirm_claim());
    let (claimed, _) = node.ask(client, claim, &[]).await.unwrap();
    assert!(matches!(claimed, Response::Ownership(info) if info.owner == Some(owner)));

    // The owner's client drains the box: Draining for new shards.
    let drain = Request::Drain {
        draining: true,
        not_after: now() + 60,
        signature: signed::sign(
            &owner_key,
            &signed::drain_message(&node.id, true, now() + 60),
        ),
    };
    node.ask(client, drain, &[]).await.unwrap();
    let shard = vec![9u8; 1000];
    assert_eq!(
        node.refused(client, put(&shard, owner), &shard).await,
        ErrorCode::Draining
    );

    // A steward answers Track and Locate for the owner's own client only.
    let segment = TrackSegment {
        k: 1,
        m: 1,
        shard_len: 64,
        shards: vec![(ShardId([1; 32]), node.id), (ShardId([2; 32]), ADMIN)],
        lease_until: now() + 86_400,
    };
    let segment_id = *blake3::hash(&[[1u8; 32], [2u8; 32]].concat()).as_bytes();
    let track = |grant: SteerGrant| Request::Track {
        owner,
        grant,
        segments: vec![segment.clone()],
    };
    // Forbidden: another member tracking under the owner's name, with no
    // grant of the owner's, or with one the owner gave another key.
    let forged = SteerGrant {
        not_after: now() + 600,
        signature: vec![7; 64],
    };
    assert_eq!(
        node.refused(ADMIN, track(forged), &[]).await,
        ErrorCode::Forbidden
    );
    let theirs = grant(&owner_key, &node.id, &client);
    assert_eq!(
        node.refused(ADMIN, track(theirs.clone()), &[]).await,
        ErrorCode::Forbidden
    );
    let elsewhere = grant(&owner_key, &NodeId([3; 32]), &client);
    assert_eq!(
        node.refused(client, track(elsewhere), &[]).await,
        ErrorCode::Forbidden
    );
    let (tracked, _) = node.ask(client, track(theirs.clone()), &[]).await.unwrap();
    assert_eq!(tracked, Response::Tracked { segments: 1 });
    let locate = |grant: SteerGrant| Request::Locate {
        owner,
        grant,
        segments: vec![segment_id],
    };
    assert_eq!(
        node.refused(ADMIN, locate(theirs.clone()), &[]).await,
        ErrorCode::Forbidden
    );
    let (located, _) = node.ask(client, locate(theirs), &[]).await.unwrap();
    assert_eq!(
        located,
        Response::Locations(vec![Some(vec![node.id, ADMIN])])
    );
}

#[tokio::test]
async fn renewals_come_in_batches_and_a_node_with_no_losses_reports_none() {
    let node = Node::start(false);
    let owner = OwnerId([4; 32]);
    let a = vec![1u8; 100];
    node.ask(ADMIN, put(&a, owner), &a).await.unwrap();
    let renew = Request::RenewMany {
        shards: vec![ShardId::of(&a), ShardId([9; 32]), ShardId::of(&a)],
        lease_expires: FAR + 1,
    };
    let (renewed, _) = node.ask(ADMIN, renew, &[]).await.unwrap();
    assert_eq!(
        renewed,
        Response::RenewedMany {
            found: vec![true, false, true]
        }
    );
    let too_many = Request::RenewMany {
        shards: vec![ShardId([9; 32]); cairn_proto::MAX_RENEW + 1],
        lease_expires: FAR,
    };
    assert_eq!(
        node.refused(ADMIN, too_many, &[]).await,
        ErrorCode::TooLarge
    );
    let (report, _) = node
        .ask(ADMIN, Request::Missing { after: 0 }, &[])
        .await
        .unwrap();
    assert_eq!(
        report,
        Response::Missing {
            shards: vec![],
            first: 0,
            next: 0
        }
    );
}

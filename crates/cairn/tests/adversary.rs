//! The adversary suite: a hostile member, a hostile LAN host and a hostile
//! disk, built from the project's own libraries and aimed at the real code
//! paths. Each test opens with the story of the attack and ends with the
//! figure that shows it refused or contained. The threat model these tests
//! stand for is in `docs/PROTOCOL.md` ("Who is trusted with what").

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cairn_net::identity::Identity;
use cairn_net::{NetError, Peer};
use cairn_proto::ErrorCode;
use cairn_proto::gossip::{Advert, GossipMember};
use cairn_proto::ids::{NodeId, OwnerId, ShardId};
use cairn_proto::membership::{MemberCert, Removal, Role};
use cairn_proto::signed;
use cairn_store::shard_path;
use cairn_store::{ShardStore, StoreConfig};
use common::daemon::Daemon;
use common::owner::{Owner, ok};
use ed25519_dalek::SigningKey;

const NODE: NodeId = NodeId([0x4e; 32]);
const OWNER: OwnerId = OwnerId([0x0a; 32]);
const FAR_FUTURE: u64 = 4_000_000_000;
/// What the node must never serve: it stands for `/var/lib/cairn/node.key`.
const SECRET: &[u8] = b"NODE-KEY-SECRET-NODE-KEY-SECRET!";

fn store_config(node: NodeId, state: &Path, disk: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(node, state, vec![disk.to_path_buf()]);
    config.reserve_bytes = 0;
    config
}

/// Runs `work` on a thread and fails the test if it has not returned within
/// `limit`: an open of a FIFO that blocks forever is the attack's success.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(limit)
        .expect("the node hung on a file the disk's author put there")
}

/// **The story.** A neighbour lends the box a USB disk labelled `CAIRN-2`.
/// They built it on their own machine with Cairn's own store, so its marker
/// names this node (a node id is public: the box announces it over mDNS),
/// and its index lists shards of exactly the node key's length. Then they
/// replaced the shard files: one with a symbolic link to
/// `/var/lib/cairn/node.key`, one fan-out directory with a link to a
/// directory of theirs, one with a FIFO that would hang a reader, and the
/// disk's `tmp/` with a link to the node's state directory, so that writes
/// land there. Any member may then ask for a byte range of a shard by id.
///
/// **Refused:** every open below the disk's `cairn/` is resolved by the
/// kernel without following a link or leaving the disk. No read returns a
/// byte of the secret, the FIFO is refused at once, and a put through the
/// linked `tmp/` writes nothing into the state directory.
#[test]
fn a_crafted_disk_serves_no_byte_outside_its_shards() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let key_file = state.join("node.key");
    std::fs::write(&key_file, SECRET).unwrap();
    let disk = root.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();

    // Four shards the size of the key, each in its own fan-out directory.
    let mut shards = Vec::new();
    let mut seed = 0u8;
    while shards.len() < 4 {
        let bytes = vec![seed; SECRET.len()];
        seed += 1;
        let id = ShardId::of(&bytes);
        if shards
            .iter()
            .all(|(other, _): &(ShardId, _)| other.0[0] != id.0[0])
        {
            shards.push((id, bytes));
        }
    }
    {
        let author = root.path().join("author-state");
        let store = ShardStore::open(store_config(NODE, &author, &disk)).unwrap();
        for (id, bytes) in &shards {
            store.put(*id, bytes, OWNER, FAR_FUTURE).unwrap();
        }
    }
    let cairn = disk.join("cairn");
    let file_of = |id: &ShardId| cairn.join(shard_path(id));
    // 1. The shard file is a link to the key.
    std::fs::remove_file(file_of(&shards[0].0)).unwrap();
    std::os::unix::fs::symlink(&key_file, file_of(&shards[0].0)).unwrap();
    // 2. The fan-out directory is a link to a directory of the author's
    //    choosing, holding a file under the shard's name that links to the key.
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&key_file, elsewhere.join(shards[1].0.to_hex())).unwrap();
    let fan_out = file_of(&shards[1].0).parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&fan_out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &fan_out).unwrap();
    // 3. A FIFO: opening it for reading would wait for a writer forever.
    std::fs::remove_file(file_of(&shards[2].0)).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(file_of(&shards[2].0))
        .status()
        .unwrap();
    assert!(made.success());
    // The box takes the disk in: its marker names this node.
    let node_state = root.path().join("node-state");
    let store = ShardStore::open(store_config(NODE, &node_state, &disk)).unwrap();
    let store = std::sync::Arc::new(store);
    // The untouched shard reads: the checks refuse the links, not the disk.
    assert_eq!(store.get(shards[3].0).unwrap(), shards[3].1);
    let mut served = 0usize;
    let mut refused = 0usize;
    for (id, _) in shards.iter().take(3) {
        for ranged in [false, true] {
            let store = std::sync::Arc::clone(&store);
            let id = *id;
            let answer = within(Duration::from_secs(10), move || {
                if ranged {
                    store.get_range(id, 0, SECRET.len() as u64)
                } else {
                    store.get(id)
                }
            });
            match answer {
                Ok(bytes) => {
                    assert!(
                        !bytes.windows(8).any(|w| SECRET.windows(8).any(|s| s == w)),
                        "shard {id} served bytes of the node key"
                    );
                    served += 1;
                }
                Err(_) => refused += 1,
            }
        }
    }
    println!("crafted disk: crafted shards served={served} refused={refused} of 6 reads");
    drop(store);

    // 4. tmp/ is a link to the node's state directory: a put's file would
    //    be written there, and a rename could replace the node key.
    std::fs::remove_dir_all(cairn.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&state, cairn.join("tmp")).unwrap();
    let before = std::fs::read_dir(&state).unwrap().count();
    let store = ShardStore::open(store_config(NODE, &node_state, &disk));
    let new_bytes = vec![0xEEu8; 4096];
    let new_id = ShardId::of(&new_bytes);
    let put = store.as_ref().map_err(|e| e.to_string()).and_then(|store| {
        store
            .put(new_id, &new_bytes, OWNER, FAR_FUTURE)
            .map_err(|e| e.to_string())
    });
    let after = std::fs::read_dir(&state).unwrap().count();
    println!(
        "crafted disk with a linked tmp/: put {put:?}; entries in the state directory {before} -> {after}"
    );
    assert_eq!(served, 0, "no read of a crafted shard may succeed");
    assert_eq!(refused, 6);
    assert!(put.is_err(), "a put through a linked tmp/ must fail");
    assert_eq!(
        before, after,
        "nothing was written into the state directory"
    );
    assert_eq!(std::fs::read(&key_file).unwrap(), SECRET);
}

/// A hostile member: its own node key and the owner keys it makes up.
struct Mallory {
    key: Identity,
}

impl Mallory {
    fn new() -> Self {
        Self {
            key: Identity::from_private([0x66; 32]),
        }
    }

    /// An owner identity of Mallory's making (any number of them is free).
    fn owner(n: u8) -> (SigningKey, OwnerId) {
        let key = SigningKey::from_bytes(&[n; 32]);
        let id = signed::owner_id(&key);
        (key, id)
    }
}

async fn connect(daemon: &Daemon, key: &Identity) -> Peer {
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    Peer::connect(
        &endpoint,
        daemon.addr,
        daemon.id,
        key,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

/// A box owned by `alice`, admitting her client and Mallory's key (a
/// member like any other), with `extra` configuration.
fn alices_box(alice: &Owner, mallory: &Mallory, extra: &str) -> Daemon {
    let client = Identity::from_private(alice.secret().client_key()).id;
    let owned = alice.ownership_toml();
    let daemon = Daemon::start_with_files(
        &[client, mallory.key.id],
        // As cairnd.service sets it.
        &[("MALLOC_ARENA_MAX", "2")],
        extra,
        &[("state/ownership.toml", owned)],
    );
    ok(alice.run(
        &["add-node", &daemon.id.to_human(), &daemon.addr.to_string()],
        None,
    ));
    daemon
}

/// Alice, her box (claimed, admitting Mallory as a member), and her
/// client connected to it.
struct Household {
    alice: Owner,
    mallory: Mallory,
    daemon: Daemon,
    alice_owner: OwnerId,
    alice_peer: Peer,
}

impl Household {
    /// The box configured with `extra`.
    async fn new(extra: &str) -> Self {
        let alice = Owner::new();
        alice.json(&["init"]);
        let mallory = Mallory::new();
        let daemon = alices_box(&alice, &mallory, extra);
        let alice_owner = OwnerId(alice.secret().keys().owner_id().0);
        let alice_peer = connect(
            &daemon,
            &Identity::from_private(alice.secret().client_key()),
        )
        .await;
        Self {
            alice,
            mallory,
            daemon,
            alice_owner,
            alice_peer,
        }
    }
}

fn lease() -> u64 {
    cairn_host::unix_now() + 90 * 86_400
}

/// **The story.** Mallory, another household in the swarm, learns the id
/// of a shard Alice is about to store on a box (shard ids are what holders
/// and stewards pass around). Mallory stores the same bytes there first,
/// under an owner key of her own. Alice's put is acknowledged as "already
/// stored". Mallory then deletes "her" shard with her own valid signature:
/// before, the shard had one owner, the first writer, and the delete took
/// Alice's data with it.
///
/// **Contained:** each owner's put is its own claim with its own lease;
/// Mallory's delete drops only Mallory's claim. Alice's shard still reads
/// bit-exact, and Mallory cannot delete Alice's claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_put_then_delete_takes_only_the_squatters_claim() {
    let Household {
        alice: _alice,
        mallory,
        daemon,
        alice_owner,
        alice_peer,
    } = Household::new("").await;
    let mallory_peer = connect(&daemon, &mallory.key).await;
    let (m_key, m_owner) = Mallory::owner(1);

    let bytes = common::random_bytes(200_000, 7);
    let id = ShardId::of(&bytes);
    let already = mallory_peer
        .put(id, bytes.clone(), m_owner, lease())
        .await
        .unwrap();
    assert!(!already);
    let already = alice_peer
        .put(id, bytes.clone(), alice_owner, lease())
        .await
        .unwrap();
    assert!(already, "Alice's put finds the squatter's copy");

    let not_after = cairn_host::unix_now() + 600;
    let signature = signed::sign_delete(&m_key, &daemon.id, &id, not_after);
    let deleted = mallory_peer.delete(id, not_after, signature).await.unwrap();
    assert!(deleted, "Mallory's delete of her own claim is accepted");
    let read = alice_peer.get(id).await.unwrap();
    assert_eq!(read, bytes, "Alice's shard reads back bit-exact");
    // Mallory's signature does not reach Alice's claim.
    let signature = signed::sign_delete(&m_key, &daemon.id, &id, not_after);
    let again = mallory_peer.delete(id, not_after, signature).await;
    assert!(
        matches!(
            &again,
            Err(NetError::Remote {
                code: ErrorCode::Forbidden,
                ..
            })
        ),
        "{again:?}"
    );
    let stat = alice_peer.stat().await.unwrap();
    let shards: u64 = stat.disks.iter().map(|d| d.shards).sum();
    println!(
        "duplicate put then delete: Alice's shard read back {} of {} bytes bit-exact; shards on the box {shards}; Mallory's second delete refused",
        read.len(),
        bytes.len()
    );
    assert_eq!(shards, 1);
}

/// **The story.** Mallory fills Alice's box: she stores shards under owner
/// ids she makes up (`ff…ff` and fresh ones), with leases that never end
/// (`u64::MAX`), so that nobody, not even the box's owner, could ever
/// delete them, and the space Alice donates to the swarm is hers alone.
///
/// **Contained:** a lease past the box's longest is refused; each owner
/// gets at most its share (`[donation] per_owner_mib`); Alice sees every
/// owner's use with `cairn usage`, evicts Mallory's owners with `cairn
/// evict`, the space comes back, their next puts are refused, and Alice's
/// own shard still reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatter_is_held_to_its_share_and_evicted_by_the_box_owner() {
    let Household {
        alice,
        mallory,
        daemon,
        alice_owner,
        alice_peer,
    } = Household::new("[donation]\nper_owner_mib = 1\nlongest_lease_days = 120\n").await;
    let node = daemon.id.to_human();
    let mallory_peer = connect(&daemon, &mallory.key).await;
    let mine = common::random_bytes(300_000, 1);
    alice_peer
        .put(ShardId::of(&mine), mine.clone(), alice_owner, u64::MAX)
        .await
        .unwrap();

    // A lease that never ends.
    let forever = common::random_bytes(1000, 2);
    let refused = mallory_peer
        .put(
            ShardId::of(&forever),
            forever,
            OwnerId([0xff; 32]),
            u64::MAX,
        )
        .await;
    assert!(
        matches!(
            &refused,
            Err(NetError::Remote {
                code: ErrorCode::BadRequest,
                ..
            })
        ),
        "{refused:?}"
    );
    // Shards of 256 KiB under two made-up owners, until each is refused.
    let mut stored = [0u64; 2];
    let mut seed = 100;
    for (slot, n) in [2u8, 3].into_iter().enumerate() {
        let (_, owner) = Mallory::owner(n);
        loop {
            let bytes = common::random_bytes(256 << 10, seed);
            seed += 1;
            match mallory_peer
                .put(ShardId::of(&bytes), bytes, owner, lease())
                .await
            {
                Ok(_) => stored[slot] += 256 << 10,
                Err(NetError::Remote {
                    code: ErrorCode::NoSpace,
                    ..
                }) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(stored[slot] <= 2 << 20, "the share did not stop owner {n}");
        }
    }
    let used_before: u64 = alice_peer
        .stat()
        .await
        .unwrap()
        .disks
        .iter()
        .map(|d| d.used)
        .sum();

    // Alice looks, and evicts both.
    let usage = alice.json(&["usage", &node]);
    assert_eq!(usage.len(), 3, "{usage:?}");
    assert_eq!(usage.iter().filter(|r| r["you"] == true).count(), 1);
    for n in [2u8, 3] {
        let (_, owner) = Mallory::owner(n);
        let row = usage.iter().find(|r| r["owner"] == owner.to_hex()).unwrap();
        assert_eq!(row["bytes"].as_u64().unwrap(), stored[usize::from(n - 2)]);
        let report = alice.json(&["evict", &node, &owner.to_hex()]);
        assert_eq!(
            report[0]["claims"].as_u64().unwrap(),
            stored[usize::from(n - 2)] / (256 << 10)
        );
    }
    let used_after: u64 = alice_peer
        .stat()
        .await
        .unwrap()
        .disks
        .iter()
        .map(|d| d.used)
        .sum();
    let (_, owner) = Mallory::owner(2);
    let bytes = common::random_bytes(1000, 9999);
    let again = mallory_peer
        .put(ShardId::of(&bytes), bytes, owner, lease())
        .await;
    assert!(
        matches!(
            &again,
            Err(NetError::Remote {
                code: ErrorCode::Forbidden,
                ..
            })
        ),
        "{again:?}"
    );
    assert_eq!(alice_peer.get(ShardId::of(&mine)).await.unwrap(), mine);
    let usage = alice.json(&["usage", &node]);
    println!(
        "squatter: lease u64::MAX refused; shares stopped owners at {} and {} bytes (share 1 MiB); box used {used_before} -> {used_after} bytes after eviction; evicted owner's next put refused; owners left in `cairn usage`: {}",
        stored[0],
        stored[1],
        usage.len()
    );
    assert_eq!(used_after, mine.len() as u64, "the space came back");
    assert_eq!(usage.len(), 1);
    // The evicted owners' stewards learn which shards to rebuild elsewhere.
    let (reported, _, _) = alice_peer.missing(0).await.unwrap();
    let gone = reported
        .iter()
        .filter(|m| m.state == cairn_proto::MissingState::Gone)
        .count() as u64;
    assert_eq!(gone, (stored[0] + stored[1]) / (256 << 10));
}

/// Alice's two nodes in her swarm, gossiping, each admitting her client;
/// and a membership certificate for `stranger` (Mallory is a member).
async fn a_swarm_of_two(alice: &Owner, stranger: &Identity) -> (Vec<Daemon>, MemberCert) {
    let client = Identity::from_private(alice.secret().client_key()).id;
    let nodes: Vec<Daemon> = (0..2).map(|_| Daemon::start(&[client])).collect();
    for node in &nodes {
        ok(alice.run(
            &["add-node", &node.id.to_human(), &node.addr.to_string()],
            None,
        ));
    }
    alice.json(&["swarm", "create"]);
    for node in &nodes {
        let ticket = ok(alice.run(&["swarm", "invite", &node.id.to_human()], None));
        alice.json(&["join", &node.id.to_human(), "--invite", ticket.trim()]);
    }
    let started = std::time::Instant::now();
    while !alice
        .json(&["members"])
        .iter()
        .filter(|m| m["up"] == true)
        .count()
        .eq(&2)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gossip did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ticket = ok(alice.run(&["swarm", "invite", &stranger.id.to_human()], None));
    (nodes, MemberCert::from_ticket(ticket.trim()).unwrap())
}

fn swim_packet(
    src: &GossipMember,
    dst: &GossipMember,
    updates: &[foca::Member<GossipMember>],
) -> Vec<u8> {
    use bytes::BufMut;
    use foca::Codec;
    let mut buf = Vec::new();
    let header = foca::Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: dst.clone(),
        message: foca::Message::Ping(1),
    };
    foca::PostcardCodec
        .encode_header(&header, &mut buf)
        .unwrap();
    buf.put_u16(updates.len() as u16);
    for update in updates {
        foca::PostcardCodec.encode_member(update, &mut buf).unwrap();
    }
    buf
}

/// **The story.** Mallory is a member of Alice's swarm. She wants Bob's
/// box emptied (a draining box has its shards moved off it, with no owner
/// signature) or declared down (after the grace, every shard it holds is
/// rebuilt elsewhere). SWIM packets are not signed, and a member's identity
/// with a larger `bump` used to win: Mallory gossips to node A that B is
/// draining, at an address of hers, with a bump no real node would reach;
/// that B is down; and then sends a packet in B's own name.
///
/// **Contained:** a packet is bound to the authenticated peer that sent it
/// (the one in B's name is refused); what A shows of B is only what B said
/// of itself; and a claim that B is down leads A to probe B itself, which
/// answers, so B stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_neither_drains_nor_downs_another_member() {
    let alice = Owner::new();
    alice.json(&["init"]);
    let mallory = Identity::generate().unwrap();
    let (nodes, cert) = a_swarm_of_two(&alice, &mallory).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let alice_at_a = connect(a, &Identity::from_private(alice.secret().client_key())).await;
    let members = alice_at_a.members().await.unwrap();
    let a_me = members
        .iter()
        .find(|m| m.member.node == a.id)
        .unwrap()
        .member
        .clone();
    let b_told = members
        .iter()
        .find(|m| m.member.node == b.id)
        .unwrap()
        .member
        .clone();
    assert!(!b_told.advert.draining);

    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = Peer::connect_as(
        &endpoint,
        a.addr,
        a.id,
        &mallory,
        Some(cert),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mallory_me = GossipMember {
        node: mallory.id,
        addr: "127.0.0.1:9".into(),
        bump: 1,
        advert: b_told.advert.clone(),
    };
    let forged_b = GossipMember {
        addr: "127.0.0.1:9".into(),
        bump: u32::MAX,
        advert: Advert {
            draining: true,
            ..b_told.advert.clone()
        },
        ..b_told.clone()
    };
    // B draining, elsewhere, with the largest bump; and B down.
    peer.gossip(swim_packet(
        &mallory_me,
        &a_me,
        &[
            foca::Member::new(forged_b.clone(), 0, foca::State::Alive),
            foca::Member::new(b_told.clone(), 1000, foca::State::Down),
        ],
    ))
    .await
    .unwrap();
    // A packet in B's name.
    peer.gossip(swim_packet(&forged_b, &a_me, &[]))
        .await
        .unwrap();

    // Longer than A's own probe of B (5 s) and a few SWIM rounds.
    let watch_until = std::time::Instant::now() + Duration::from_secs(10);
    let mut looks = 0;
    while std::time::Instant::now() < watch_until {
        let members = alice_at_a.members().await.unwrap();
        let b_now = members.iter().find(|m| m.member.node == b.id).unwrap();
        assert!(!b_now.member.advert.draining, "B shown draining: {b_now:?}");
        assert_eq!(b_now.member.addr, b_told.addr, "B shown elsewhere");
        assert!(b_now.up, "B shown down after a claim by Mallory");
        looks += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = a.log();
    let refused = log.matches("claims to come from").count();
    let probed = log.matches("said to be down answers this node").count();
    println!(
        "forged gossip: B stayed up, not draining, at its own address over {looks} looks in 10 s; packets in B's name refused: {refused}; claims of B down disproved by A's own probe: {probed}"
    );
    assert!(
        refused >= 1,
        "A did not say it refused the packet in B's name"
    );
    assert!(
        probed >= 1,
        "the claim of B down never reached A's SWIM: the test did not attack"
    );
}

/// **The story.** Owner-signed commands are valid for up to 24 hours. Alice
/// deletes a shard from her box, and later the same day stores the same
/// bytes again (a file restored, then backed up); she drains her box and
/// stops the drain. Whoever kept a copy of her signed requests (they cross
/// the network, and pass through tools and logs) sends them again: the
/// delete would take the shard she stored again, the drain would drain the
/// box she had put back to work.
///
/// **Refused:** the node keeps each signed command it carried out until
/// the command expires, and refuses it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_owner_command_is_refused() {
    let alice = Owner::new();
    alice.json(&["init"]);
    let mallory = Mallory::new();
    let daemon = alices_box(&alice, &mallory, "");
    let alice_owner = OwnerId(alice.secret().keys().owner_id().0);
    let signing = alice.secret().keys().signing.clone();
    let peer = connect(
        &daemon,
        &Identity::from_private(alice.secret().client_key()),
    )
    .await;
    let not_after = cairn_host::unix_now() + 600;

    let bytes = common::random_bytes(50_000, 11);
    let id = ShardId::of(&bytes);
    peer.put(id, bytes.clone(), alice_owner, lease())
        .await
        .unwrap();
    let delete = signed::sign_delete(&signing, &daemon.id, &id, not_after);
    assert!(peer.delete(id, not_after, delete.clone()).await.unwrap());
    peer.put(id, bytes.clone(), alice_owner, lease())
        .await
        .unwrap();
    let replayed_delete = peer.delete(id, not_after, delete).await;

    let drained = peer.drain(&signing, true, not_after).await.unwrap();
    assert!(drained.draining);
    let undone = peer.drain(&signing, false, not_after).await.unwrap();
    assert!(!undone.draining);
    let replayed_drain = peer.drain(&signing, true, not_after).await;
    let draining_after = peer.stat().await.unwrap().ownership.draining;
    let read = peer.get(id).await;
    println!(
        "replay: delete replayed after a put again -> {replayed_delete:?}; drain replayed after its undo -> {}; box draining after: {draining_after}; shard reads: {}",
        match &replayed_drain {
            Ok(_) => "accepted".to_owned(),
            Err(e) => e.to_string(),
        },
        read.is_ok()
    );
    assert!(
        matches!(&replayed_delete, Err(NetError::Remote { code: ErrorCode::Forbidden, message }) if message.contains("replay")),
        "{replayed_delete:?}"
    );
    assert!(
        matches!(&replayed_drain, Err(NetError::Remote { code: ErrorCode::Forbidden, message }) if message.contains("replay")),
        "{replayed_drain:?}"
    );
    assert!(!draining_after);
    assert_eq!(read.unwrap(), bytes);
}

/// Holds the simulated button down for `held`, then lets go.
async fn hold(daemon: &Daemon, held: Duration) {
    std::fs::write(daemon.board().join("button"), "1").unwrap();
    tokio::time::sleep(held).await;
    std::fs::write(daemon.board().join("button"), "0").unwrap();
}

/// **The story.** Alice's new box sits on her home network. Mallory, on the
/// same network (a guest's laptop, a compromised TV), polls the box for its
/// pairing window: the moment Alice holds the button, Mallory's claim
/// arrives, before Alice has typed hers. Before, the first claim in the
/// window took the box.
///
/// **Contained:** a claim is made only after a press at the box, and only
/// if no other claim arrived in the same window. Mallory's claim waits;
/// Alice's contests it and she is told someone else is claiming; a press
/// then confirms nothing; Mallory never owns the box. Alice starts over
/// with a new hold and claims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_for_the_pairing_window_wins_nothing() {
    let daemon = Daemon::start_with_board(&[]);
    let alice = Owner::new();
    alice.json(&["init"]);
    let mallory = Identity::generate().unwrap();
    let mallory_owner = SigningKey::from_bytes(&[0x77; 32]);

    hold(&daemon, Duration::from_millis(5_500)).await;
    // Mallory is first: she polls until the window admits her.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let mallory_peer = loop {
        match Peer::connect(
            &endpoint,
            daemon.addr,
            daemon.id,
            &mallory,
            Duration::from_secs(2),
        )
        .await
        {
            Ok(peer) => break peer,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the window did not open: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = mallory_peer.claim(&mallory_owner).await.unwrap();
    assert!(
        matches!(first, cairn_net::ClaimAnswer::Pending { .. }),
        "{first:?}"
    );
    // Alice's claim contests Mallory's, and says so.
    let alices = alice.run(
        &["claim", &daemon.id.to_human(), &daemon.addr.to_string()],
        None,
    );
    let told = String::from_utf8_lossy(&alices.stderr).into_owned();
    assert!(!alices.status.success());
    assert!(told.contains("another claim"), "{told}");
    // Someone presses: nothing is confirmed.
    hold(&daemon, Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mallory_again = mallory_peer.claim(&mallory_owner).await;
    assert!(
        matches!(
            &mallory_again,
            Err(NetError::Remote {
                code: ErrorCode::Forbidden,
                ..
            })
        ),
        "{mallory_again:?}"
    );
    let owner_after_press = mallory_peer.stat().await.unwrap().ownership.owner;
    assert_eq!(owner_after_press, None);

    // Alice starts over: a new hold, her claim alone, her press.
    hold(&daemon, Duration::from_millis(5_500)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let claimed = alice.claim_at_the_box(&daemon, &[]);
    assert!(
        claimed.status.success(),
        "{}",
        String::from_utf8_lossy(&claimed.stderr)
    );
    let nodes = alice.json(&["nodes"]);
    println!(
        "claim race: Mallory first in the window; Alice told \"{}\"; after a press the box's owner was {:?}; after a new hold Alice's confirmed claim made her the owner: {}",
        told.lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(80)
            .collect::<String>(),
        owner_after_press,
        nodes[0]["owner"] == alice.json(&["id"])[0]["owner"]
    );
    assert_eq!(nodes[0]["owner"], alice.json(&["id"])[0]["owner"]);
}

/// **The story.** Alice sells her box to Bob. She had
/// founded the swarm the box is in, so after the transfer she could still
/// admit keys of her choosing to the box (a certificate of her swarm is a
/// member's pass there) and sign the removal of members, Bob's among them.
///
/// **Contained:** a transfer hands the box over completely: a box in a swarm
/// its former owner founded leaves it. Afterwards a key with Alice's
/// certificate is refused at the handshake, and her signed removal is
/// refused; Bob can join the box to his own swarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_transfer_the_former_owner_has_no_power_over_the_box() {
    let alice = Owner::new();
    alice.json(&["init"]);
    let bob = Owner::new();
    bob.json(&["init"]);
    let mallory = Mallory::new();
    let daemon = alices_box(&alice, &mallory, "");
    let node = daemon.id.to_human();
    alice.json(&["swarm", "create"]);
    let ticket = ok(alice.run(&["swarm", "invite", &node], None));
    alice.json(&["join", &node, "--invite", ticket.trim()]);
    // A key Alice admits to her swarm is a member at the box.
    let friend = Identity::generate().unwrap();
    let alice_key = alice.secret().keys().signing.clone();
    let far = cairn_host::unix_now() + 86_400;
    let pass = MemberCert::issue(&alice_key, &friend.id, Role::Node, far);
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let before = Peer::connect_as(
        &endpoint,
        daemon.addr,
        daemon.id,
        &friend,
        Some(pass.clone()),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        before.is_ok(),
        "a member of Alice's swarm is admitted before the transfer"
    );

    let card = bob.transfer_card();
    ok(alice.run(&["transfer", &node, "--to", &card], None));

    let after = Peer::connect_as(
        &endpoint,
        daemon.addr,
        daemon.id,
        &friend,
        Some(pass),
        Duration::from_secs(5),
    )
    .await;
    let bob_client = Identity::from_private(bob.secret().client_key());
    let bob_peer = connect(&daemon, &bob_client).await;
    let removal = Removal::issue(&alice_key, &bob_client.id);
    let removed = bob_peer.remove(removal).await;
    let log = daemon.log();
    println!(
        "transfer: Alice's member after the transfer -> {}; Alice's removal of Bob's client -> {}; box left Alice's swarm: {}",
        match &after {
            Ok(_) => "admitted".to_owned(),
            Err(e) => format!("refused ({e})"),
        },
        match &removed {
            Ok(()) => "accepted".to_owned(),
            Err(e) => format!("refused ({e})"),
        },
        log.contains("founded by the former owner")
    );
    assert!(
        after.is_err(),
        "Alice's swarm still admits keys at Bob's box"
    );
    assert!(
        removed.is_err(),
        "Alice's removal was accepted at Bob's box"
    );
    assert!(
        bob_peer.stat().await.is_ok(),
        "Bob's client is still admitted"
    );
    // Bob founds his own swarm and joins the box to it.
    ok(bob.run(&["add-node", &node, &daemon.addr.to_string()], None));
    bob.json(&["swarm", "create"]);
    let ticket = ok(bob.run(&["swarm", "invite", &node], None));
    let joined = bob.json(&["join", &node, "--invite", ticket.trim()]);
    assert_eq!(joined[0]["swarm"], bob.json(&["id"])[0]["owner"]);
}

/// **The story.** Mallory wants Alice's box down without touching its disk.
/// A `Get` makes the node read a whole shard into memory and hold it until
/// the reader takes it: she opens connection after connection, each with
/// all the streams it may have, asks each stream for the largest shard,
/// and never reads an answer. She also spreads requests over her
/// connections to multiply the per-connection rate limit.
///
/// **Contained:** a key holds at most 4 connections; its request rate is
/// one bucket across them; every shard a peer makes the node hold, coming
/// or going, is inside the one body budget (here 2 MiB) until the peer has
/// acknowledged it. The daemon's memory stays within a few MiB of where it
/// was, and Alice's shard still reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_exhaust_the_boxs_memory_or_multiply_its_rate() {
    let Household {
        alice: _alice,
        mallory,
        daemon,
        alice_owner,
        alice_peer,
    } = Household::new("").await;
    let shard = common::random_bytes(2 << 20, 21);
    let id = ShardId::of(&shard);
    alice_peer
        .put(id, shard.clone(), alice_owner, lease())
        .await
        .unwrap();
    assert_eq!(alice_peer.get(id).await.unwrap(), shard);
    let (rss_before, _) = daemon.rss_kib();

    // Connections: the key holds four at most; the fifth replaces the
    // first.
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut connections = Vec::new();
    for _ in 0..5 {
        let dialled = Peer::connect(
            &endpoint,
            daemon.addr,
            daemon.id,
            &mallory.key,
            Duration::from_secs(5),
        )
        .await;
        if let Ok(peer) = dialled {
            connections.push(peer);
        }
    }
    let mut served = 0;
    let mut live = Vec::new();
    for peer in connections {
        if peer.stat().await.is_ok() {
            served += 1;
            live.push(peer);
        }
    }
    let connections = live;
    // Streams that ask for the 2 MiB shard and never read the answer.
    let mut streams = Vec::new();
    for peer in connections.iter().take(4) {
        for _ in 0..30 {
            let Ok((mut send, recv)) = peer.connection().open_bi().await else {
                break;
            };
            let request = cairn_proto::Request::Get { id, range: None };
            if cairn_net::write_frame(&mut send, &request).await.is_ok() {
                let _ = send.finish();
                streams.push((send, recv));
            }
        }
    }
    // Time for every request to be read, served or left waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_during, peak) = daemon.rss_kib();
    // Alice is still served while Mallory's streams hang.
    let alice_reads = alice_peer.get(id).await.map(|b| b == shard);

    // The rate: requests as fast as they go, spread over four connections.
    let started = std::time::Instant::now();
    let asks = connections
        .iter()
        .take(4)
        .flat_map(|peer| (0..150).map(move |_| peer.stat()));
    let answers = join_all(asks).await;
    let elapsed = started.elapsed().as_secs_f64();
    let limited = answers
        .iter()
        .filter(|a| {
            matches!(
                a,
                Err(NetError::Remote {
                    code: ErrorCode::RateLimited,
                    ..
                })
            )
        })
        .count();
    let granted = answers.iter().filter(|a| a.is_ok()).count();
    println!(
        "exhaustion: connections served {served} of 5; {} Get streams left unread; RSS {} -> {} MiB (peak {} MiB; without the budget they would hold {} MiB); Alice's read meanwhile: {:?}; rate across 4 connections: {granted} of {} granted in {elapsed:.1} s (one key's burst 256 + 128/s)",
        streams.len(),
        rss_before / 1024,
        rss_during / 1024,
        peak / 1024,
        streams.len() * 2,
        alice_reads.as_ref().map_err(|e| e.to_string()),
        answers.len()
    );
    assert_eq!(served, 4);
    assert!(streams.len() >= 100, "the attack did not open its streams");
    assert!(
        rss_during < rss_before + 16 * 1024,
        "memory grew by {} MiB",
        (rss_during - rss_before) / 1024
    );
    assert!(matches!(alice_reads, Ok(true)));
    assert!(limited > 0);
    assert!(
        (granted as f64) <= 256.0 + 128.0 * elapsed + 8.0,
        "{granted} requests granted in {elapsed:.1} s"
    );
}

/// Runs every future to its end, all at once (they borrow the
/// connections, so they are polled here rather than spawned).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("polled to the end"))
        .collect()
}

/// **The story.** Before a peer is authenticated the node already works
/// for it: a QUIC handshake, then a Noise handshake it waits up to 10 s to
/// finish. Mallory opens dozens of connections that finish QUIC and never
/// start Noise, to take every slot the node keeps for handshakes and lock
/// out everyone else.
///
/// **Contained:** one source address may have 4 handshakes in flight (the
/// node 32 in all, with a QUIC retry past 16), so Mallory holds only her
/// own few; Alice, from another address, connects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_do_not_lock_others_out() {
    let alice = Owner::new();
    alice.json(&["init"]);
    let mallory = Mallory::new();
    let daemon = alices_box(&alice, &mallory, "");
    let flood = Peer::client_endpoint("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let attempt = flood.connect(daemon.addr, "cairn").unwrap();
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(connection)) => stalled.push(connection),
            _ => refused += 1,
        }
    }
    let endpoint = Peer::client_endpoint("127.0.0.2:0".parse().unwrap()).unwrap();
    let started = std::time::Instant::now();
    let alices = Peer::connect(
        &endpoint,
        daemon.addr,
        daemon.id,
        &Identity::from_private(alice.secret().client_key()),
        Duration::from_secs(5),
    )
    .await;
    let took = started.elapsed();
    println!(
        "handshake flood: Mallory's connections that never authenticate: {} held, {refused} refused of 40; Alice from another address connected in {} ms: {}",
        stalled.len(),
        took.as_millis(),
        alices.is_ok()
    );
    assert!(
        stalled.len() <= 4,
        "{} stalled handshakes held",
        stalled.len()
    );
    let alices = alices.unwrap();
    assert!(alices.stat().await.is_ok());
}

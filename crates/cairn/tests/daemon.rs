//! Real `cairnd` processes on loopback: readiness through a NOTIFY_SOCKET,
//! shards moved between two daemons, and every refusal the protocol
//! promises (wrong key, unknown key, corrupt upload, oversized frame,
//! forged audit proof, delete without the owner's signature).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_net::identity::Identity;
use cairn_net::{NetError, Peer};
use cairn_proto::ids::ShardId;
use cairn_proto::{ErrorCode, MAX_FRAME, Response, audit, signed};
use ed25519_dalek::SigningKey;

use common::daemon::Daemon;

fn shard(seed: u8, len: usize) -> (ShardId, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut bytes);
    (ShardId::of(&bytes), bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_exchange_shards_and_refuse_what_they_must() {
    let me = Identity::generate().unwrap();
    let a = Daemon::start(&[me.id]);
    let b = Daemon::start(&[me.id]);
    let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let owner_key = SigningKey::from_bytes(&[42; 32]);
    let owner_id = signed::owner_id(&owner_key);
    let lease = now() + 3600;

    let to_a = Peer::connect(&endpoint, a.addr, a.id, &me, TIMEOUT)
        .await
        .unwrap();
    let to_b = Peer::connect(&endpoint, b.addr, b.id, &me, TIMEOUT)
        .await
        .unwrap();

    // Shards go to A, come back verified, and move on to B.
    let shards: Vec<_> = (0..5u8)
        .map(|i| shard(i, 300_000 + i as usize * 7777))
        .collect();
    for (id, bytes) in &shards {
        assert!(!to_a.put(*id, bytes.clone(), owner_id, lease).await.unwrap());
    }
    assert!(
        to_a.put(shards[0].0, shards[0].1.clone(), owner_id, lease)
            .await
            .unwrap(),
        "duplicate put"
    );
    for (id, bytes) in &shards {
        let read = to_a.get(*id).await.unwrap();
        assert_eq!(&read, bytes);
        to_b.put(*id, read, owner_id, lease).await.unwrap();
        assert_eq!(&to_b.get(*id).await.unwrap(), bytes);
    }
    let stat = to_b.stat().await.unwrap();
    assert_eq!(stat.disks.iter().map(|d| d.shards).sum::<u64>(), 5);

    // A peer that is not who we dialled: handshake fails.
    let wrong = Peer::connect(&endpoint, b.addr, a.id, &me, TIMEOUT).await;
    assert!(
        matches!(
            wrong,
            Err(NetError::Handshake(_)) | Err(NetError::Read(_)) | Err(NetError::Connection(_))
        ),
        "{:?}",
        wrong.err()
    );
    // A key the node does not know: authenticated, then refused with a reason.
    let stranger = Identity::generate().unwrap();
    match Peer::connect(&endpoint, a.addr, a.id, &stranger, TIMEOUT).await {
        Err(NetError::Refused(reason)) => assert!(reason.contains("not allowed"), "{reason}"),
        other => panic!("unknown key not refused: {:?}", other.err()),
    }

    // A corrupted upload is refused and nothing is stored.
    let (id, mut bytes) = shard(99, 100_000);
    bytes[500] ^= 1;
    let err = to_a.put(id, bytes, owner_id, lease).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::HashMismatch), "{err}");
    assert_eq!(
        to_a.get(id).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    // A shard over the node's limit (2 MiB) is refused before its body is read.
    let (big_id, big) = shard(98, 3 << 20);
    let err = to_a.put(big_id, big, owner_id, lease).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    // An oversized frame is refused, and the connection keeps working.
    let mut huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    huge.extend(vec![0u8; 64]);
    match to_a.send_raw(&huge).await.unwrap() {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::TooLarge),
        other => panic!("oversized frame answered with {other:?}"),
    }
    match to_a
        .send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap()
    {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("garbage frame answered with {other:?}"),
    }
    assert_eq!(to_a.stat().await.unwrap().disks.len(), 1);

    // Audits: an honest answer verifies against the id; a forged one does not.
    let (id, bytes) = &shards[3];
    let proven = to_a.audit(*id, bytes.len() as u64, [7; 32]).await.unwrap();
    assert_eq!(proven.len(), 4);
    let ranges = audit::challenge([8; 32], bytes.len() as u64, 3, 2048);
    let mut slices = to_a.audit_raw(*id, &ranges).await.unwrap();
    audit::verify(id, bytes.len() as u64, &ranges, &slices).unwrap();
    let last = slices[2].len() - 1;
    slices[2][last] ^= 1;
    assert!(audit::verify(id, bytes.len() as u64, &ranges, &slices).is_err());

    // Delete needs the owner's signature for this node.
    let not_after = now() + 600;
    let stranger_key = SigningKey::from_bytes(&[7; 32]);
    let forged = signed::sign_delete(&stranger_key, &a.id, id, not_after);
    let err = to_a.delete(*id, not_after, forged).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
    let for_b = signed::sign_delete(&owner_key, &b.id, id, not_after);
    assert_eq!(
        to_a.delete(*id, not_after, for_b).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        &to_a.get(*id).await.unwrap(),
        bytes,
        "a refused delete changed nothing"
    );
    let signed = signed::sign_delete(&owner_key, &a.id, id, not_after);
    assert!(to_a.delete(*id, not_after, signed).await.unwrap());
    assert_eq!(
        to_a.get(*id).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert!(to_a.renew(shards[0].0, lease + 10).await.unwrap());

    to_a.close();
    to_b.close();
    a.stop();
    b.stop();
}

#[test]
fn watchdog_pings_come_only_when_systemd_asks_for_them() {
    // WatchdogSec=1 s: systemd sets WATCHDOG_USEC; the daemon must ping at
    // least every half interval, so several pings arrive within a few seconds.
    let daemon = Daemon::start_with(&[], &[("WATCHDOG_USEC", "1000000")]);
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let notification = daemon.next_notification();
        if notification.contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    // Three pings at ≤ 0.5 s spacing; the first may come at once.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "3 watchdog pings took {:?}, too slow for a 1 s WatchdogSec",
        started.elapsed()
    );
    daemon.stop();
}

/// `cairnd --print-id` is a question, not a second node: during a factory
/// reset it names the key the node is becoming and leaves the reset to the
/// node (finishing it too made the node's own last step fail, and the node
/// exit), and several asking at once on a fresh box all get one key.
#[test]
fn print_id_never_finishes_a_reset_and_creates_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("cairnd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = '{}'\nlisten = '127.0.0.1:0'\ndisks = ['{}']\n",
            state.display(),
            dir.path().join("disk1").display()
        ),
    )
    .unwrap();

    let asked: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || common::daemon::print_id(&config))
        })
        .collect();
    let ids: Vec<_> = asked.into_iter().map(|t| t.join().unwrap()).collect();
    let key = Identity::load_existing(&state).unwrap().unwrap();
    assert!(
        ids.iter().all(|id| *id == key.id),
        "{ids:?} vs {:?}",
        key.id
    );

    let becoming = Identity::begin_reset(&state).unwrap();
    assert_eq!(common::daemon::print_id(&config), becoming.id);
    assert_eq!(
        Identity::pending_reset(&state).unwrap().map(|i| i.id),
        Some(becoming.id),
        "--print-id finished the reset"
    );
    assert_eq!(
        Identity::load_existing(&state).unwrap().unwrap().id,
        key.id,
        "--print-id put the new key in place"
    );
}

/// A second cairnd on a running node's state directory, or a disk adopted
/// beside it, is refused with what to do, and the running node is untouched.
#[test]
fn a_second_cairnd_on_the_same_state_is_refused() {
    let daemon = Daemon::start(&[]);
    for extra in [
        &[][..],
        &["adopt-disk", daemon.disk().to_str().unwrap()][..],
    ] {
        let out = std::process::Command::new(common::daemon::CAIRND)
            .arg("--config")
            .arg(daemon.config())
            .args(extra)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: {said}");
        assert!(
            said.contains("another cairnd is running with the state directory")
                && said.contains("systemctl stop cairnd"),
            "{extra:?}: {said}"
        );
    }
    assert_eq!(common::daemon::print_id(&daemon.config()), daemon.id);
    daemon.stop();
}

//! Replays the frame fuzzer's corpus (crates/proto/fuzz/corpus/frame_decode) through
//! the same oracle the fuzzer uses, so every input it ever found interesting
//! stays checked on stable Rust, in every test run.

use std::path::PathBuf;

use cairn_proto::frame::{check_decoder, encode_frame};
use cairn_proto::membership::{MemberCert, Removal, Role};
use cairn_proto::reach::Call;
use cairn_proto::root::RootRecord;
use cairn_proto::{
    DiskInfo, ErrorCode, Hello, MissingShard, MissingState, NodeId, OwnerId, OwnershipInfo,
    Request, Response, ShardId, StatInfo, SteerGrant, TrackSegment,
};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame_decode")
}

/// One valid frame of every message kind: the corpus seeds.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let id = ShardId([7; 32]);
    let root = RootRecord {
        owner: OwnerId([9; 32]),
        seq: 3,
        payload: vec![2; 8],
        signature: vec![1; 64],
    };
    let cert = MemberCert {
        swarm: OwnerId([9; 32]),
        member: NodeId([7; 32]),
        role: Role::Node,
        not_after: 1_800_000_000,
        signature: vec![1; 64],
    };
    let requests = [
        ("request-stat", Request::Stat),
        (
            "request-put",
            Request::Put {
                id,
                len: 1 << 20,
                owner: OwnerId([9; 32]),
                lease_expires: 1_800_000_000,
            },
        ),
        (
            "request-get-range",
            Request::Get {
                id,
                range: Some((4096, 1024)),
            },
        ),
        (
            "request-audit",
            Request::Audit {
                id,
                ranges: vec![(0, 4096), (8192, 1024)],
            },
        ),
        (
            "request-renew",
            Request::Renew {
                id,
                lease_expires: 1_800_000_000,
            },
        ),
        (
            "request-delete",
            Request::Delete {
                id,
                not_after: 1_800_000_000,
                signature: vec![1; 64],
            },
        ),
        ("request-put-root", Request::PutRoot(root.clone())),
        (
            "request-get-root",
            Request::GetRoot {
                owner: OwnerId([9; 32]),
            },
        ),
        (
            "request-claim",
            Request::Claim {
                owner: OwnerId([9; 32]),
                signature: vec![1; 64],
            },
        ),
        (
            "request-transfer",
            Request::Transfer {
                to_owner: OwnerId([9; 32]),
                to_client: NodeId([7; 32]),
                not_after: 1_800_000_000,
                signature: vec![1; 64],
            },
        ),
        (
            "request-track",
            Request::Track {
                owner: OwnerId([9; 32]),
                grant: SteerGrant {
                    not_after: 1_800_000_000,
                    signature: vec![4; 64],
                },
                segments: vec![TrackSegment {
                    k: 1,
                    m: 1,
                    shard_len: 1 << 20,
                    shards: vec![
                        (ShardId([7; 32]), NodeId([9; 32])),
                        (ShardId([9; 32]), NodeId([7; 32])),
                    ],
                    lease_until: 1_800_000_000,
                }],
            },
        ),
        (
            "request-join",
            Request::Join {
                cert: cert.clone(),
                seeds: vec![],
            },
        ),
        ("request-members", Request::Members),
        ("request-observe", Request::Observe),
        ("request-dial-back", Request::DialBack { port: 7447 }),
        ("request-await-calls", Request::AwaitCalls),
        (
            "request-connect",
            Request::Connect {
                target: NodeId([7; 32]),
                ipv6: Some("[2001:db8:77::21]:7447".into()),
            },
        ),
        (
            "request-relay-open",
            Request::RelayOpen {
                target: NodeId([7; 32]),
            },
        ),
        ("request-gossip", Request::Gossip { packet: vec![2; 8] }),
        (
            "request-remove",
            Request::Remove {
                removal: Removal {
                    swarm: OwnerId([9; 32]),
                    member: NodeId([7; 32]),
                    signature: vec![1; 64],
                },
            },
        ),
        (
            "request-locate",
            Request::Locate {
                owner: OwnerId([9; 32]),
                grant: SteerGrant {
                    not_after: 1_800_000_000,
                    signature: vec![4; 64],
                },
                segments: vec![[5; 32]],
            },
        ),
        (
            "request-renew-many",
            Request::RenewMany {
                shards: vec![ShardId([7; 32]), ShardId([8; 32])],
                lease_expires: 1_800_000_000,
            },
        ),
        ("request-missing", Request::Missing { after: 12 }),
        (
            "request-untrack",
            Request::Untrack {
                owner: OwnerId([9; 32]),
                segments: vec![[5; 32]],
                not_after: 1_800_000_000,
                signature: vec![3; 64],
            },
        ),
        (
            "request-drain",
            Request::Drain {
                draining: true,
                not_after: 1_800_000_000,
                signature: vec![1; 64],
            },
        ),
    ];
    let responses = [
        (
            "response-error",
            Response::Error {
                code: ErrorCode::RateLimited,
                message: "too many requests; retry in 8 ms".into(),
            },
        ),
        ("response-stored", Response::Stored { already: false }),
        ("response-shard", Response::Shard { len: 1 << 20 }),
        (
            "response-audit",
            Response::AuditProof {
                slice_lens: vec![4424, 1480],
            },
        ),
        ("response-deleted", Response::Deleted { found: true }),
        ("response-root-stored", Response::RootStored),
        ("response-root", Response::Root(Some(root))),
        (
            "response-stat",
            Response::Stat(StatInfo {
                software: "cairnd 0.1.0".into(),
                max_shard: 1 << 20,
                disks: vec![DiskInfo {
                    state: "online".into(),
                    capacity: 1 << 20,
                    used: 0,
                    free: 1 << 20,
                    shards: 0,
                }],
                state: "healthy".into(),
                reasons: vec![],
                temperature_mc: Some(45_000),
                ownership: OwnershipInfo {
                    owner: None,
                    draining: false,
                },
            }),
        ),
        ("response-tracked", Response::Tracked { segments: 3 }),
        (
            "response-joined",
            Response::Joined {
                swarm: OwnerId([9; 32]),
            },
        ),
        ("response-removed", Response::Removed),
        ("response-gossip-taken", Response::GossipTaken),
        (
            "response-locations",
            Response::Locations(vec![Some(vec![NodeId([9; 32]), NodeId([7; 32])]), None]),
        ),
        (
            "response-renewed-many",
            Response::RenewedMany {
                found: vec![true, false],
            },
        ),
        (
            "response-missing",
            Response::Missing {
                shards: vec![
                    MissingShard {
                        seq: 12,
                        shard: ShardId([7; 32]),
                        state: MissingState::Gone,
                    },
                    MissingShard {
                        seq: 13,
                        shard: ShardId([8; 32]),
                        state: MissingState::Offline(1_800_000_000),
                    },
                ],
                first: 3,
                next: 14,
            },
        ),
        (
            "response-observed",
            Response::Observed {
                addr: "11.77.0.21:7447".into(),
            },
        ),
        (
            "response-dialed-back",
            Response::DialedBack { reached: true },
        ),
        (
            "response-calls",
            Response::Calls(vec![Call::Punch {
                from: NodeId([7; 32]),
                at: "11.77.0.22:7447".into(),
                ipv6: Some("[2001:db8:77::22]:7447".into()),
            }]),
        ),
        (
            "response-relayed",
            Response::Relayed {
                at: "11.77.0.2:40000".into(),
                token: [5; 16],
            },
        ),
        (
            "response-ownership",
            Response::Ownership(OwnershipInfo {
                owner: Some(OwnerId([9; 32])),
                draining: true,
            }),
        ),
    ];
    let hello = Hello {
        versions: vec![3],
        software: "cairnd 0.1.0".into(),
        max_shard: 16 << 20,
        refused: Some("key cn… is not allowed on this node".into()),
        member: None,
    };
    let mut out: Vec<_> = requests
        .into_iter()
        .map(|(name, m)| (name, encode_frame(&m).unwrap()))
        .collect();
    out.extend(
        responses
            .into_iter()
            .map(|(name, m)| (name, encode_frame(&m).unwrap())),
    );
    out.push(("hello", encode_frame(&hello).unwrap()));
    out
}

#[test]
fn seeds_are_in_the_corpus() {
    let dir = corpus_dir();
    if std::env::var_os("CAIRN_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, frame) in seeds() {
            std::fs::write(dir.join(name), frame).unwrap();
        }
    }
    for (name, frame) in seeds() {
        let stored = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!("seed {name} missing from the corpus ({e}); run with CAIRN_WRITE_CORPUS=1")
        });
        assert_eq!(
            stored, frame,
            "seed {name} no longer matches the encoding: the wire format changed \
             (bump PROTOCOL_VERSION and docs/PROTOCOL.md, then CAIRN_WRITE_CORPUS=1)"
        );
    }
}

#[test]
fn the_whole_corpus_passes_the_fuzz_oracle() {
    let mut checked = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        check_decoder(&bytes);
        // Every truncation, and the payload alone: a peer may stop anywhere.
        for cut in 0..bytes.len().min(256) {
            check_decoder(&bytes[..cut]);
            check_decoder(bytes.get(4..cut).unwrap_or_default());
        }
        checked += 1;
    }
    assert!(checked >= seeds().len(), "corpus has only {checked} inputs");
}

#[test]
fn protocol_doc_examples_are_the_real_encoding() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .unwrap();
    let section = doc
        .split("### Example frames")
        .nth(1)
        .expect("docs/PROTOCOL.md has an Example frames section");
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the examples are in a ```text block");
    let mut documented = std::collections::BTreeMap::new();
    for line in block.lines() {
        let (name, hex) = line.split_once(": ").expect("`name: hex` lines");
        let bytes: Vec<u8> = hex
            .split(' ')
            .map(|byte| u8::from_str_radix(byte, 16).unwrap())
            .collect();
        documented.insert(name.to_owned(), bytes);
    }
    let seeds = seeds();
    assert_eq!(documented.len(), seeds.len(), "one example per seed");
    for (name, frame) in seeds {
        assert_eq!(
            documented.get(name),
            Some(&frame),
            "docs/PROTOCOL.md example {name} differs from the encoding"
        );
    }
}

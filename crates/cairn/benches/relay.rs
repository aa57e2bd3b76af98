//! The same transfer direct and through a relay member, in the NAT lab of
//! `tests/nat_lab.rs`: from the owner's computer in a home behind a
//! typical router, shards go to a box behind another typical router (a
//! punched path, no relay) and to a box behind a symmetric NAT (relayed by
//! a public member), in alternating rounds of the same size; each box is a
//! real `cairnd` with the same disk. Prints the lab's matrix of paths, then
//! `relay direct_MBps=X relayed_MBps=Y ratio=R` (medians over the rounds).
//! Needs root; `scripts/bench-relay` runs it. Environment: CAIRN_BENCH_MIB
//! (MiB per round, default 64), CAIRN_BENCH_ROUNDS (default 3).

#[path = "../tests/common/mod.rs"]
mod tests_common;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_net::pool::PoolConfig;
use cairn_net::{Identity, Peer, Pool, RouteTable, Routes};
use cairn_proto::ids::{NodeId, ShardId};
use cairn_proto::reach::{PathKind, Reach};
use tests_common::lab::{LabSwarm, PLACES};

const SHARD: usize = 1 << 20;
const IN_FLIGHT: usize = 8;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("bench-relay needs root for the lab's network namespaces");
        std::process::exit(1);
    }
    let (mib, rounds) = (
        env_or("CAIRN_BENCH_MIB", 64),
        env_or("CAIRN_BENCH_ROUNDS", 3),
    );
    // The relay's own speed is measured, not its owner's limit.
    let swarm = LabSwarm::start(PLACES, &|_| "relay_mib_per_s = 100000\n".into());
    let matrix = swarm.wait_for_paths(Duration::from_secs(240));
    println!("{}", matrix.ipv6_line());
    println!("{}", matrix.line());
    assert!(matrix.wrong.is_empty(), "{}", matrix.wrong.join("\n"));

    let id_of = |name: &str| {
        let at = swarm.lab.sites.iter().position(|s| s.name == name).unwrap();
        (swarm.boxes[at].id, swarm.boxes[at].addr.to_string())
    };
    let (pub1, home2, sym1) = (id_of("pub1"), id_of("home2"), id_of("sym1"));
    let client_key = swarm.alice.secret().client_key();
    let owner = swarm.alice.secret().keys().owner_id();
    let home1 = swarm.lab.site("home1").netns.clone();
    // The owner's computer is in the first home: a thread in its
    // namespace (every socket it opens is there).
    let (direct, relayed) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(format!("/run/netns/{home1}")).unwrap();
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap();
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(transfers(client_key, owner, pub1, home2, sym1, mib, rounds))
            })
            .join()
            .unwrap()
    });
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (direct, relayed) = (median(direct), median(relayed));
    println!(
        "relay direct_MBps={direct:.1} relayed_MBps={relayed:.1} ratio={:.2}",
        relayed / direct
    );
}

/// Alternating rounds to the punched box and to the relayed one; MB/s of
/// each round, direct first.
async fn transfers(
    client_key: [u8; 32],
    owner: cairn_proto::ids::OwnerId,
    (pub1, pub1_addr): (NodeId, String),
    (home2, home2_addr): (NodeId, String),
    (sym1, sym1_addr): (NodeId, String),
    mib: usize,
    rounds: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (endpoint, raw) = Peer::dual_stack_endpoint().unwrap();
    let routes = Arc::new(RouteTable::default());
    let pool = Pool::new(
        endpoint,
        Identity::from_private(client_key),
        Box::new(|| None),
        PoolConfig {
            timeout: Duration::from_secs(60),
            down_for: Duration::ZERO,
        },
    )
    .with_routes(Arc::clone(&routes) as Arc<dyn Routes>, Some(raw));
    // What the owner's `cairn` learns first: the members, and its own
    // public address.
    let public = pool.peer(pub1, &pub1_addr).await.unwrap();
    for state in public.members().await.unwrap() {
        let m = state.member;
        routes.set_member(m.node, m.addr, m.advert.reach);
    }
    routes.set_me(Reach {
        public: Some(public.observe().await.unwrap().to_string()),
        ..Default::default()
    });
    let direct = pool.peer(home2, &home2_addr).await.unwrap();
    let relayed = pool.peer(sym1, &sym1_addr).await.unwrap();
    assert_eq!(pool.path(home2), Some(PathKind::Punched));
    assert!(
        matches!(pool.path(sym1), Some(PathKind::Relayed(_))),
        "{:?}",
        pool.path(sym1)
    );
    let lease = cairn_host::unix_now() + 86_400;
    let (mut direct_rates, mut relayed_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (peer, rates, seed) in [
            (&direct, &mut direct_rates, 2 * round),
            (&relayed, &mut relayed_rates, 2 * round + 1),
        ] {
            let shards: Vec<Vec<u8>> = (0..mib)
                .map(|i| tests_common::random_bytes(SHARD, (seed * 100_000 + i) as u64))
                .collect();
            let started = Instant::now();
            let mut puts = bounded_puts(peer, &shards, owner, lease);
            while let Some(done) = puts.join_next().await {
                done.unwrap().unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            rates.push((mib * SHARD) as f64 / secs / 1e6);
        }
    }
    pool.close().await;
    (direct_rates, relayed_rates)
}

/// The shards' puts, at most [`IN_FLIGHT`] at once.
fn bounded_puts(
    peer: &Arc<Peer>,
    shards: &[Vec<u8>],
    owner: cairn_proto::ids::OwnerId,
    lease: u64,
) -> tokio::task::JoinSet<Result<bool, cairn_net::NetError>> {
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    for shard in shards {
        let (peer, gate, shard) = (Arc::clone(peer), Arc::clone(&gate), shard.clone());
        set.spawn(async move {
            let _slot = gate.acquire_owned().await;
            peer.put(ShardId::of(&shard), shard, owner, lease).await
        });
    }
    set
}

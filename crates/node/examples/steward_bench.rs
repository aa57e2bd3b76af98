//! The steward table at a household's size, for `scripts/bench-steward`:
//! the real table (redb, on this machine's disk, every commit durable) and
//! the real decision code, driven by simulated holders that answer every
//! audit and renewal at once.
//!
//! 1. Track: 20 owners hand over `segments` segments of 6 shards on 50
//!    holders, `MAX_TRACK` per request and 8 requests in flight as a
//!    client does (8 threads through the service's group commit, each
//!    waiting for its answer before sending its next); segments/s.
//! 2. Rounds every 30 simulated seconds: the audits handed out are all
//!    passed back. CPU time per round (round plus recording its results),
//!    and the audit period that rate achieves.
//! 3. A holder goes down past the grace: the rounds sweep its shards and
//!    hand out repairs (reported back as done, to new holders); the
//!    slowest of those rounds.
//!
//! Prints figures, then `steward segments=N rss_mib=R round_ms=T
//! track_per_s=S audit_period_days=D` (round_ms: the slowest round of
//! both phases; rss: the process's peak).
//! Arguments: SEGMENTS (default 1000000) and DIR (default a temporary one).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_client::segment::Coding;
use cairn_node::steward::{AuditOutcome, Steward, StewardPolicy, TrackGroup, TrackedSegment};
use cairn_proto::ids::{NodeId, OwnerId, ShardId};

const HOLDERS: u64 = 50;
const OWNERS: u64 = 20;
const TICK_S: u64 = 30;
/// Track requests a client keeps in flight (as `Swarm::track` does).
const IN_FLIGHT: u64 = 8;

fn node(i: u64) -> NodeId {
    NodeId(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn owner(i: u64) -> OwnerId {
    OwnerId(*blake3::hash(&(1_000_000 + i).to_le_bytes()).as_bytes())
}

fn segment(s: u64, now: u64) -> TrackedSegment {
    TrackedSegment {
        coding: Coding { k: 4, m: 2 },
        shard_len: 4 << 20,
        shards: (0..6)
            .map(|i| {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&s.to_le_bytes());
                key[8] = i as u8;
                let id = ShardId(*blake3::hash(&key).as_bytes());
                // Spread like placement does: six distinct holders.
                (id, node((s * 7 + i * 11) % HOLDERS))
            })
            .collect(),
        lease_until: now + 80 * 24 * 3600,
    }
}

/// CPU time this process has used.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The process's peak resident memory, MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let segments: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_owned(), Into::into);
    std::fs::create_dir_all(&dir).expect("the table's directory");
    let path = dir.join("steward.redb");
    let _ = std::fs::remove_file(&path);
    let policy = StewardPolicy::default();
    let table = Mutex::new(Steward::open(&path, policy).expect("the table opens"));
    let start = 1_800_000_000;

    // 1. Track, as clients do: MAX_TRACK segments per request, one owner
    // each, IN_FLIGHT requests at once.
    let batch = cairn_proto::MAX_TRACK as u64;
    let requests = segments.div_ceil(batch);
    let group = TrackGroup::new();
    let began = Instant::now();
    let track_cpu = cpu_time();
    std::thread::scope(|scope| {
        for thread in 0..IN_FLIGHT {
            let (table, group) = (&table, &group);
            scope.spawn(move || {
                for r in (thread..requests).step_by(IN_FLIGHT as usize) {
                    let s = r * batch;
                    let end = (s + batch).min(segments);
                    let request: Vec<TrackedSegment> =
                        (s..end).map(|i| segment(i, start)).collect();
                    group
                        .track(table, owner(r % OWNERS), request, || start)
                        .expect("track");
                }
            });
        }
    });
    let mut steward = table.into_inner().expect("no thread panicked");
    assert_eq!(steward.len(), segments, "every segment tracked once");
    let commits = steward.commits();
    let track_s = began.elapsed().as_secs_f64();
    let track_cpu = (cpu_time() - track_cpu).as_secs_f64();
    let track_per_s = segments as f64 / track_s;
    let file_mib = std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
    println!(
        "  tracked {segments} segments in {track_s:.1} s ({track_per_s:.0}/s; {batch} per request, {IN_FLIGHT} in flight, {:.0} per durable commit; {track_cpu:.1} s of CPU); table file {file_mib:.0} MiB",
        segments as f64 / commits.max(1) as f64
    );

    // 2. Steady rounds: every audit passes. They start once the segments
    // tracked at the start are old enough to audit (an eighth of the
    // period), as in a table that has been running.
    let mut now = start + policy.audit_period_s / 8;
    let mut shard_audits = 0u64;
    let mut worst = Duration::ZERO;
    let mut total_cpu = Duration::ZERO;
    let rounds = 400;
    steward.round(now).expect("round");
    for _ in 0..rounds {
        now += TICK_S;
        let cpu = cpu_time();
        let round = steward.round(now).expect("round");
        let results: Vec<_> = round
            .audits
            .iter()
            .map(|t| (*t, AuditOutcome::Passed))
            .collect();
        steward.audited(&results, now).expect("audited");
        let took = cpu_time() - cpu;
        worst = worst.max(took);
        total_cpu += took;
        shard_audits += results.len() as u64;
    }
    let per_day = shard_audits as f64 / (rounds as f64 * TICK_S as f64) * 86_400.0;
    let period_days = (segments * 6) as f64 / per_day;
    let mean_ms = total_cpu.as_secs_f64() * 1000.0 / rounds as f64;
    println!(
        "  {rounds} rounds of {TICK_S} s: {:.1} shard audits per round, every shard audited every {period_days:.1} days; CPU per round {mean_ms:.1} ms mean, {:.1} ms at most",
        shard_audits as f64 / rounds as f64,
        worst.as_secs_f64() * 1000.0
    );

    // 3. A holder down past the grace: sweeps and repairs.
    let lost = node(0);
    steward.node_down(lost, now);
    now += policy.grace_s;
    let mut repaired = 0u64;
    let mut sweep_worst = Duration::ZERO;
    let mut sweep_rounds = 0;
    let held = steward.held_by(&lost).expect("held_by");
    for _ in 0..200 {
        now += TICK_S;
        let cpu = cpu_time();
        let round = steward.round(now).expect("round");
        let mut took = cpu_time() - cpu;
        // Each repair's commit is the network layer's, when that repair
        // ends: not part of the round.
        for task in &round.repairs {
            let to: Vec<(usize, NodeId)> = task
                .lost
                .iter()
                .map(|(i, _)| (*i, node(HOLDERS + repaired % 7)))
                .collect();
            steward.repaired(task.segment, &to, now).expect("repaired");
            repaired += 1;
        }
        let results: Vec<_> = round
            .audits
            .iter()
            .map(|t| (*t, AuditOutcome::Passed))
            .collect();
        let cpu = cpu_time();
        steward.audited(&results, now).expect("audited");
        took += cpu_time() - cpu;
        sweep_worst = sweep_worst.max(took);
        sweep_rounds += 1;
        if steward.queued_repairs().expect("queue") == 0 && repaired > 0 {
            break;
        }
    }
    println!(
        "  a holder of {held} shards down past the grace: {repaired} repairs handed out over {sweep_rounds} rounds ({} at a time); slowest round {:.1} ms",
        policy.repairs_in_flight,
        sweep_worst.as_secs_f64() * 1000.0
    );
    let round_ms = worst.max(sweep_worst).as_secs_f64() * 1000.0;
    let rss = peak_rss_mib();
    println!(
        "steward segments={segments} rss_mib={rss:.0} round_ms={round_ms:.0} track_per_s={track_per_s:.0} audit_period_days={period_days:.1}"
    );
}

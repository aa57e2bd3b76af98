//! The owner's pipeline in process, no network and no disk: chunk, seal
//! (encrypt + erasure-code + hash the shards) and open again, over the same
//! amount of random data as `scripts/bench-swarm` sends. Printed by
//! `scripts/bench-swarm` beside the swarm's figures, as the ceiling the CPU
//! sets for them on this machine.

#[path = "../../cairn/benches/common/mod.rs"]
mod common;

use std::time::Instant;

use cairn_client::chunk::{ChunkSizes, chunks};
use cairn_client::segment::{self, Coding};
use cairn_proto::ids::ShardId;

fn main() {
    let mib = common::env_or("CAIRN_BENCH_MIB", 256);
    let mut data = vec![0u8; mib << 20];
    blake3::Hasher::new()
        .update(b"bench-pipeline")
        .finalize_xof()
        .fill(&mut data);
    let convergence = [7u8; 32];
    let coding = Coding::default();

    // Kept for the open pass; not timed (holding 1.5x the data in memory
    // would time this VM's first touch of fresh pages, not the pipeline).
    let sealed: Vec<_> = chunks(&data[..], 1, ChunkSizes::default())
        .map(|chunk| segment::seal(&convergence, coding, &chunk.expect("in memory")).expect("seal"))
        .collect();
    // Timed as the client runs it: chunk, seal, hand the shards on, drop them.
    let started = Instant::now();
    let mut shard_bytes = 0usize;
    for chunk in chunks(&data[..], 1, ChunkSizes::default()) {
        let segment =
            segment::seal(&convergence, coding, &chunk.expect("in memory")).expect("seal");
        shard_bytes += segment.shards.iter().map(|(_, b)| b.len()).sum::<usize>();
    }
    let seal_s = started.elapsed().as_secs_f64();
    assert!(shard_bytes >= data.len() * 3 / 2);

    let started = Instant::now();
    let mut total = 0usize;
    for segment in &sealed {
        // As a reader does: verify each of k shards against its id, then open.
        let shards: Vec<(usize, &[u8])> = segment.shards[..usize::from(coding.k)]
            .iter()
            .enumerate()
            .map(|(i, (id, bytes))| {
                assert_eq!(ShardId::of(bytes), *id);
                (i, &bytes[..])
            })
            .collect();
        let plain = segment::open(
            &convergence,
            coding,
            &segment.key,
            segment.plain_len,
            &shards,
        )
        .expect("open");
        total += plain.len();
    }
    let open_s = started.elapsed().as_secs_f64();
    assert_eq!(total, data.len());
    let mb = data.len() as f64 / 1e6;
    println!(
        "pipeline in process ({mib} MiB, {} segments, 4+2): seal {:.0} MB/s, verify+open {:.0} MB/s",
        sealed.len(),
        mb / seal_s,
        mb / open_s
    );
    println!(
        "pipeline seal_MBps={:.0} open_MBps={:.0}",
        mb / seal_s,
        mb / open_s
    );
}

//! `scripts/bench-net`: shard puts and gets against a real `cairnd` process
//! on loopback, and in the same run the same bytes over raw quinn streams.
//!
//! - ours: this process dials the daemon with the library's own `Peer`
//!   (Noise-authenticated, the code one node uses to reach another) and puts
//!   1 MiB shards, 32 requests in flight on one connection (the
//!   default per-peer stream limit); the daemon
//!   verifies each, stores it through its shard store and acknowledges.
//!   The store's disk is `CAIRN_BENCH_DIR`, by default a directory in
//!   `/dev/shm`: this bench measures the network path and the store's CPU
//!   work, and `scripts/bench-store` measures the disk (on this machine's
//!   virtual disk, durable 1 MiB writes run slower than loopback QUIC, so a
//!   disk-backed run measures the disk). Then it gets them back, each verified against its id.
//! - raw: a child process serves plain quinn streams with the very same TLS
//!   and transport configuration; this process moves the same number of bytes
//!   with the same concurrency: a put is the bytes and a one-byte answer, a
//!   get is an 8-byte length and that many bytes back. No disk, no hashing.
//!
//! A warm-up round, then five rounds; the side that goes first alternates.
//! Throughputs printed are medians; each ratio is the geometric mean of the
//! per-round ratios. Every round puts fresh shards (a repeated put would be
//! answered without writing).

mod common;

use common::{env_or, median, paired_ratio, settle};

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_net::Peer;
use cairn_net::identity::Identity;
use cairn_net::tls::{TransportLimits, server_config};
use cairn_proto::ids::{NodeId, OwnerId, ShardId};

const SHARD: usize = 1 << 20;
const IN_FLIGHT: usize = 32;
const ROUNDS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(60);
const OWNER: OwnerId = OwnerId([9; 32]);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("raw-server") {
        raw_server();
        return;
    }
    let shards: usize = env_or("CAIRN_BENCH_SHARDS", 256);
    // The daemon's disk is memory unless told otherwise: this measures the network
    // path and the store's CPU work; scripts/bench-store measures the disk.
    let shm = Path::new("/dev/shm");
    let root = std::env::var_os("CAIRN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if shm.is_dir() {
                shm.join("cairn-bench-net")
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-net")
            }
        });
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench directory");
    println!(
        "bench-net: the daemon's disk is {}{} ({shards} x 1 MiB shards per round, \
         {IN_FLIGHT} in flight, loopback)",
        root.display(),
        if root.starts_with(shm) {
            " (memory: the network path, not the disk; set CAIRN_BENCH_DIR for a disk)"
        } else {
            ""
        }
    );
    prime_memory((ROUNDS + 2) * shards * SHARD);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let me = Identity::generate().expect("a client identity");
    let daemon = Daemon::start(&root, &me.id);
    let raw = RawServer::start();
    let mb = (shards * SHARD) as f64 / 1e6;

    let (mut put_ours, mut put_raw, mut get_ours, mut get_raw) = (vec![], vec![], vec![], vec![]);
    runtime.block_on(async {
        let endpoint = Peer::client_endpoint("127.0.0.1:0".parse().expect("address"))
            .expect("client endpoint");
        let peer = Arc::new(
            Peer::connect(&endpoint, daemon.addr, daemon.id, &me, TIMEOUT)
                .await
                .expect("connect to cairnd"),
        );
        let raw_connection = endpoint
            .connect(raw.addr, "cairn")
            .expect("dial the raw server")
            .await
            .expect("connect to the raw server");
        for round in 0..=ROUNDS {
            let data: Arc<Vec<(ShardId, bytes::Bytes)>> = Arc::new(
                (0..shards as u64)
                    .map(|i| shard(round as u64 * 1_000_000 + i))
                    .collect(),
            );
            let ours_first = round % 2 == 0;
            let (mut put, mut put_baseline, mut get, mut get_baseline) = (0.0, 0.0, 0.0, 0.0);
            for side in [ours_first, !ours_first] {
                if side {
                    settle(&root);
                    put = mb / time(run_ours_put(&peer, &data)).await;
                    get = mb / time(run_ours_get(&peer, &data)).await;
                } else {
                    put_baseline = mb / time(run_raw(&raw_connection, &data, b'P')).await;
                    get_baseline = mb / time(run_raw(&raw_connection, &data, b'G')).await;
                }
            }
            println!(
                "round {round}{}: put {put:.0} MB/s vs raw {put_baseline:.0} ({:.2}); \
                 get {get:.0} MB/s vs raw {get_baseline:.0} ({:.2})",
                if round == 0 { " (warm-up)" } else { "" },
                put / put_baseline,
                get / get_baseline
            );
            if round > 0 {
                put_ours.push(put);
                put_raw.push(put_baseline);
                get_ours.push(get);
                get_raw.push(get_baseline);
            }
        }
        peer.close();
        raw_connection.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
    });
    daemon.stop();
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "put: cairnd {:.0} MB/s, raw quinn {:.0} MB/s (medians); get: cairnd {:.0} MB/s, raw quinn {:.0} MB/s",
        median(&put_ours),
        median(&put_raw),
        median(&get_ours),
        median(&get_raw)
    );
    println!(
        "net put_ratio={:.2} get_ratio={:.2}",
        paired_ratio(&put_ours, &put_raw),
        paired_ratio(&get_ours, &get_raw)
    );
}

async fn time(work: impl std::future::Future<Output = ()>) -> f64 {
    let started = Instant::now();
    work.await;
    started.elapsed().as_secs_f64()
}

/// Runs `work(i)` for every shard index with `IN_FLIGHT` tasks.
async fn in_flight<F, Fut>(count: usize, work: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let next = Arc::clone(&next);
        let work = work.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                work(i).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a bench task panicked");
    }
}

async fn run_ours_put(peer: &Arc<Peer>, data: &Arc<Vec<(ShardId, bytes::Bytes)>>) {
    let (peer, data) = (Arc::clone(peer), Arc::clone(data));
    in_flight(data.len(), move |i| {
        let (peer, data) = (Arc::clone(&peer), Arc::clone(&data));
        async move {
            let (id, bytes) = &data[i];
            let already = peer
                // A lease inside the node's longest ([donation]).
                .put(
                    *id,
                    bytes.clone(),
                    OWNER,
                    cairn_host::unix_now() + 30 * 86_400,
                )
                .await
                .expect("put");
            assert!(!already, "every round puts fresh shards");
        }
    })
    .await;
}

async fn run_ours_get(peer: &Arc<Peer>, data: &Arc<Vec<(ShardId, bytes::Bytes)>>) {
    let (peer, data) = (Arc::clone(peer), Arc::clone(data));
    in_flight(data.len(), move |i| {
        let (peer, data) = (Arc::clone(&peer), Arc::clone(&data));
        async move {
            let (id, bytes) = &data[i];
            let got = peer.get(*id).await.expect("get");
            assert_eq!(got.len(), bytes.len());
        }
    })
    .await;
}

/// The baseline: `P` sends each shard's bytes and waits for one byte back;
/// `G` asks for as many bytes and reads them.
async fn run_raw(connection: &quinn::Connection, data: &Arc<Vec<(ShardId, bytes::Bytes)>>, op: u8) {
    let (connection, data) = (connection.clone(), Arc::clone(data));
    in_flight(data.len(), move |i| {
        let (connection, data) = (connection.clone(), Arc::clone(&data));
        async move {
            let bytes = &data[i].1;
            let (mut send, mut recv) = connection.open_bi().await.expect("raw stream");
            let mut header = vec![op];
            header.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            send.write_all(&header).await.expect("raw header");
            if op == b'P' {
                send.write_chunk(bytes.clone()).await.expect("raw body");
            }
            send.finish().expect("finish");
            let answer_len = if op == b'P' { 1 } else { bytes.len() };
            read_all(&mut recv, answer_len).await;
        }
    })
    .await;
}

/// Reads `len` bytes as cairn's own bodies are read: chunk by chunk into a
/// buffer of the final size.
async fn read_all(recv: &mut quinn::RecvStream, len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let chunk = recv.read_chunk(len - body.len(), true).await;
        body.extend_from_slice(
            &chunk
                .expect("raw read")
                .expect("raw stream ended early")
                .bytes,
        );
    }
    body
}

/// The raw quinn side, in its own process like the daemon.
fn raw_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let config = server_config(&TransportLimits::default()).expect("server config");
        let endpoint =
            quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("address")).expect("bind");
        println!("{}", endpoint.local_addr().expect("bound address"));
        let source = bytes::Bytes::from(vec![0x5au8; 64 << 20]);
        // One connection, then exit when it closes.
        let Some(incoming) = endpoint.accept().await else {
            return;
        };
        let connection = incoming.await.expect("raw connection");
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let source = source.clone();
            tokio::spawn(async move {
                let mut header = [0u8; 9];
                recv.read_exact(&mut header).await.expect("raw header");
                let len = u64::from_be_bytes(header[1..].try_into().expect("8 bytes")) as usize;
                if header[0] == b'P' {
                    // Buffered whole, as the daemon buffers a shard before storing it.
                    read_all(&mut recv, len).await;
                    send.write_all(&[1]).await.expect("raw ack");
                } else {
                    send.write_chunk(source.slice(..len))
                        .await
                        .expect("raw get");
                }
                let _ = send.finish();
            });
        }
    });
}

struct RawServer {
    child: Child,
    addr: SocketAddr,
}

impl RawServer {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("raw-server")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the raw server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("raw server address");
        let addr = line.trim().parse().expect("raw server address");
        Self { child, addr }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Daemon {
    child: Child,
    id: NodeId,
    addr: SocketAddr,
    notify: UnixDatagram,
}

impl Daemon {
    fn start(root: &Path, client: &NodeId) -> Self {
        let disk = root.join("disk1");
        std::fs::create_dir_all(&disk).expect("disk directory");
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let config = root.join("cairnd.toml");
        // The rate limit is raised: the bench is one trusted client at full speed.
        std::fs::write(
            &config,
            format!(
                "state_dir = '{}'\nlisten = '{addr}'\ndisks = ['{}']\n[store]\nreserve_mib = 0\n\
                 [network]\nallow = ['{}']\nrequests_per_second = 100000\nrequest_burst = 100000\n",
                root.join("state").display(),
                disk.display(),
                client.to_human()
            ),
        )
        .expect("write the config");
        let cairnd = env!("CARGO_BIN_EXE_cairnd");
        let out = Command::new(cairnd)
            .arg("--config")
            .arg(&config)
            .arg("--print-id")
            .output()
            .expect("run cairnd --print-id");
        let id = NodeId::from_human(String::from_utf8_lossy(&out.stdout).trim())
            .expect("cairnd prints its id");
        let socket = root.join("notify.sock");
        let notify = UnixDatagram::bind(&socket).expect("notify socket");
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let child = Command::new(cairnd)
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &socket)
            .env("CAIRN_LOG", "warn")
            .spawn()
            .expect("start cairnd");
        let daemon = Self {
            child,
            id,
            addr,
            notify,
        };
        daemon.wait_for("READY=1");
        daemon
    }

    fn wait_for(&self, what: &str) {
        let mut buf = [0u8; 4096];
        loop {
            let len = self
                .notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("cairnd did not send {what}: {e}"));
            if String::from_utf8_lossy(&buf[..len]).contains(what) {
                return;
            }
        }
    }

    fn stop(mut self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .expect("SIGTERM cairnd");
        let status = self.child.wait().expect("wait for cairnd");
        assert!(status.success(), "cairnd exited with {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shard(seed: u64) -> (ShardId, bytes::Bytes) {
    let mut bytes = vec![0u8; SHARD];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut bytes);
    (ShardId::of(&bytes), bytes.into())
}

/// Touches and frees `bytes` of memory before anything is measured. In a VM
/// whose host backs guest memory lazily, the first touch of a guest page is
/// slow (here ~260 MB/s against ~2.4 GB/s for a page the guest has used
/// before). Only the daemon's side keeps new pages (the page cache of the
/// shards it stores), so without this it alone would pay the host's cost; a
/// board with physical RAM has no such cost.
fn prime_memory(bytes: usize) {
    let started = Instant::now();
    let mut memory = vec![0u8; bytes];
    for page in memory.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&memory);
    drop(memory);
    println!(
        "primed {} MiB of memory in {:.1} s",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );
}

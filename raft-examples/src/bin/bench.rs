//! Benchmarks.
//!
//! `bench inproc --nodes 3 --clients N --duration SECS [--json]`: a cluster of real
//! `Raft` nodes in one process on tokio, with the in-memory store and network; N
//! clients propose empty commands in a loop. Prints writes/s and latency percentiles.
//!
//! `bench net --payload BYTES --duration SECS [--json]`: AppendEntries-shaped messages
//! with one entry of BYTES sent one way over loopback through `raft-net-tcp`, and in
//! the same run over a plain TCP socket with the same framing written in a tight loop.
//! Prints messages/s and MB/s of both and their ratio.
//!
//! `bench store --entry-size BYTES --batch N --duration SECS [--json]`: appends batches
//! of N entries to a fresh `raft-store-file` log in a temp dir, then runs a raw loop of
//! the same writes (one write and one fdatasync per batch on a plain file); prints
//! entries/s and MB/s of both, their ratio, and the time to open a log of 1,000,000
//! entries of that size.
//!
//! `bench cluster --target kv|etcd --clients N --duration SECS --value-size BYTES
//! --workload write|read|mixed [--json]`: a 3-node cluster of our `kv` app or of etcd on
//! loopback, driven over HTTP by N clients; prints throughput, latency percentiles and
//! each node's peak memory. `bench compare` runs both in alternating rounds and prints
//! the ratios; `bench failover --target kv|etcd --rounds N` times leader loss to the
//! next successful write; `bench report --out DIR` sweeps client counts for both and
//! draws SVG charts. See `raft_examples::bench`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use raft::runtime::TokioRuntime;
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{Config, LogIndex, Raft, Role, StateMachine};
use raft_examples::bench;

#[derive(Parser)]
#[command(about = "Benchmarks of the raft workspace")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// In-process cluster with in-memory store and network.
    Inproc {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Concurrent clients, each with one proposal outstanding.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Measured seconds (after a short warm-up).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Worker threads of the tokio runtime (default: number of CPUs).
        #[arg(long)]
        threads: Option<usize>,
        /// Print a JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// One-way message throughput of the TCP transport against a raw socket.
    Net {
        /// Bytes of the single entry's command in each message.
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        /// Measured seconds of each of the two runs.
        #[arg(long, default_value_t = 3.0)]
        duration: f64,
        /// Print a JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Append throughput of the file store against raw write+fdatasync on a plain file.
    Store {
        /// Bytes of command payload per entry.
        #[arg(long, default_value_t = 1024)]
        entry_size: usize,
        /// Entries per append call (one fdatasync each).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Measured seconds for each of the two loops.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Directory to create the temp dirs in (default: the system temp dir).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Skip the 1,000,000-entry open measurement.
        #[arg(long)]
        skip_open: bool,
        /// Print a JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// A 3-node cluster of kv or etcd on loopback, driven over HTTP.
    Cluster(bench::ClusterArgs),
    /// kv against etcd, alternating rounds; prints the ratios.
    Compare(bench::CompareArgs),
    /// Time from killing the leader to the next successful write.
    Failover(bench::failover::FailoverArgs),
    /// Sweep over client counts for both systems; markdown table and SVG charts.
    Report(bench::ReportArgs),
    /// The machine's floor under one replicated write: loopback round trips and
    /// concurrent fdatasync latency, without Raft.
    Floor(bench::floor::FloorArgs),
}

/// A state machine that does nothing: the benchmark measures the framework.
struct Noop(u64);

impl StateMachine for Noop {
    type Command = ();
    type Response = ();
    fn apply(&mut self, _index: LogIndex, _command: ()) {
        self.0 += 1;
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

fn main() {
    let cli = Cli::parse();
    let cluster_result = match &cli.cmd {
        Cmd::Cluster(args) => Some(bench::run_cluster(args)),
        Cmd::Compare(args) => Some(bench::run_compare(args)),
        Cmd::Failover(args) => Some(bench::failover::run_failover(args)),
        Cmd::Report(args) => Some(bench::run_report(args)),
        Cmd::Floor(args) => Some(bench::floor::run_floor(args)),
        _ => None,
    };
    if let Some(r) = cluster_result {
        if let Err(e) = r {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    match cli.cmd {
        Cmd::Cluster(_) | Cmd::Compare(_) | Cmd::Failover(_) | Cmd::Report(_) | Cmd::Floor(_) => {}
        Cmd::Net { payload, duration, json } => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start tokio: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = rt.block_on(net_bench::run(payload, Duration::from_secs_f64(duration), json)) {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Store { entry_size, batch, duration, dir, skip_open, json } => {
            if let Err(e) =
                store_bench(entry_size, batch.max(1), Duration::from_secs_f64(duration), dir, skip_open, json)
            {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Inproc { nodes, clients, duration, threads, json } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(t) = threads {
                b.worker_threads(t);
            }
            let rt = match b.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start tokio: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = rt.block_on(inproc(nodes, clients, Duration::from_secs_f64(duration), json)) {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

async fn inproc(nodes: u64, clients: usize, duration: Duration, json: bool) -> Result<(), String> {
    let runtime = TokioRuntime::new();
    let net = MemNetwork::new(runtime.clone(), 1);
    let mut rafts = Vec::new();
    for id in 1..=nodes {
        let config = Config::default();
        let raft = Raft::bootstrap(id, 1..=nodes, config, runtime.clone(), MemStore::new(), net.endpoint(id), Noop(0))
            .await
            .map_err(|e| e.to_string())?;
        let r2 = raft.clone();
        net.register(id, Arc::new(move |m| r2.receive(m)));
        rafts.push(raft);
    }
    let started = Instant::now();
    let leader = loop {
        if let Some(r) = rafts.iter().find(|r| r.with_status(|s| s.role == Role::Leader)) {
            break r.clone();
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no leader elected within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let leader = leader.clone();
        let measuring = measuring.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram precision");
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = leader.propose(()).await;
                if measuring.load(Ordering::Relaxed) {
                    match r {
                        Ok(()) => {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => errors += 1,
                    }
                }
            }
            (hist, errors)
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).expect("valid histogram precision");
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.map_err(|e| e.to_string())?;
        hist.add(&h).map_err(|e| e.to_string())?;
        errors += e;
    }
    for r in &rafts {
        r.shutdown().await;
    }
    let writes = hist.len();
    let wps = writes as f64 / elapsed;
    let (p50, p99, p999) = (hist.value_at_quantile(0.5), hist.value_at_quantile(0.99), hist.value_at_quantile(0.999));
    println!(
        "inproc: {nodes} nodes, {clients} clients, {elapsed:.1}s: {wps:.0} writes/s, latency p50 {p50} us, p99 {p99} us, p999 {p999} us, {errors} errors"
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "nodes": nodes, "clients": clients, "seconds": elapsed, "writes": writes,
                "writes_per_sec": wps, "p50_us": p50, "p99_us": p99, "p999_us": p999, "errors": errors,
            })
        );
    }
    Ok(())
}

/// `bench net`: the TCP transport against a raw socket with the same framing.
mod net_bench {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use raft::runtime::TokioRuntime;
    use raft::{Entry, EntryPayload, Message, MessageBody, Network};
    use raft_net_tcp::codec::{encode_frame, FrameDecoder};
    use raft_net_tcp::{TcpConfig, TcpTransport};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MAX_FRAME: u32 = 16 << 20;

    fn message(payload: usize) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendEntries {
                prev_log_index: 100,
                prev_log_term: 3,
                entries: vec![Entry {
                    term: 3,
                    index: 101,
                    payload: EntryPayload::Command(bytes::Bytes::from(vec![7u8; payload])),
                }],
                leader_commit: 100,
            },
        }
    }

    /// Counts messages received during the measured window.
    async fn measure(received: &AtomicU64, duration: Duration) -> (u64, f64) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start = received.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(duration).await;
        let n = received.load(Ordering::Relaxed) - start;
        (n, t0.elapsed().as_secs_f64())
    }

    async fn transport(msg: &Message, duration: Duration) -> Result<(u64, f64), String> {
        let rt = TokioRuntime::new();
        let local: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut c1 = TcpConfig::new(1, 1);
        c1.max_frame_size = MAX_FRAME;
        let mut c2 = TcpConfig::new(1, 2);
        c2.max_frame_size = MAX_FRAME;
        let a = TcpTransport::bind(rt.clone(), c1, local).await.map_err(|e| e.to_string())?;
        let b = TcpTransport::bind(rt.clone(), c2, local).await.map_err(|e| e.to_string())?;
        a.set_peer(2, b.local_addr());
        b.set_peer(1, a.local_addr());
        let received = Arc::new(AtomicU64::new(0));
        let r = received.clone();
        b.start(move |_m| {
            r.fetch_add(1, Ordering::Relaxed);
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (net, s, m, a2) = (a.network(), stop.clone(), msg.clone(), a.clone());
        let high_water = a.config().send_queue_len / 2;
        let sender = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                // Back off while the queue is half full so the benchmark measures
                // delivery, not drops.
                while a2.peer_stats(2).is_some_and(|st| st.queued >= high_water) {
                    tokio::task::yield_now().await;
                }
                let _ = net.send(2, m.clone()).await;
            }
        });
        let result = measure(&received, duration).await;
        stop.store(true, Ordering::Relaxed);
        let _ = sender.await;
        a.shutdown().await;
        b.shutdown().await;
        Ok(result)
    }

    async fn raw(msg: &Message, duration: Duration) -> Result<(u64, f64), String> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let r = received.clone();
        let reader = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let _ = s.set_nodelay(true);
            let mut dec = FrameDecoder::new(MAX_FRAME);
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                dec.extend(&buf[..n]);
                while let Ok(Some(_m)) = dec.next_message() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let (st, m) = (stop.clone(), msg.clone());
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while !st.load(Ordering::Relaxed) {
                batch.clear();
                while batch.len() < 64 * 1024 {
                    let _ = encode_frame(&m, MAX_FRAME, &mut batch);
                }
                if s.write_all(&batch).await.is_err() {
                    return;
                }
            }
        });
        let result = measure(&received, duration).await;
        stop.store(true, Ordering::Relaxed);
        let _ = writer.await;
        let _ = reader.await;
        Ok(result)
    }

    /// Runs both measurements and prints the comparison.
    pub async fn run(payload: usize, duration: Duration, json: bool) -> Result<(), String> {
        let msg = message(payload);
        let frame_bytes = 4 + msg.encode().len();
        let (n, secs) = transport(&msg, duration).await?;
        let (rn, rsecs) = raw(&msg, duration).await?;
        let mps = n as f64 / secs;
        let raw_mps = rn as f64 / rsecs;
        let ratio = if raw_mps > 0.0 { mps / raw_mps } else { 0.0 };
        let mb = |m: f64| m * frame_bytes as f64 / 1e6;
        println!(
            "net: payload {payload} B ({frame_bytes} B frames): transport {mps:.0} msgs/s ({:.1} MB/s), raw socket {raw_mps:.0} msgs/s ({:.1} MB/s), ratio {ratio:.2}",
            mb(mps),
            mb(raw_mps)
        );
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "payload": payload, "frame_bytes": frame_bytes,
                    "msgs_per_sec": mps, "mb_per_sec": mb(mps),
                    "raw_msgs_per_sec": raw_mps, "raw_mb_per_sec": mb(raw_mps),
                    "ratio_vs_raw": ratio,
                })
            );
        }
        Ok(())
    }
}

fn temp_dir(base: &Option<std::path::PathBuf>) -> Result<tempfile::TempDir, String> {
    match base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("cannot create a temp dir: {e}"))
}

fn store_entries(first: LogIndex, n: usize, size: usize) -> Vec<raft::Entry> {
    let payload = bytes::Bytes::from(vec![0x5au8; size]);
    (0..n as u64)
        .map(|i| raft::Entry { term: 1, index: first + i, payload: raft::EntryPayload::Command(payload.clone()) })
        .collect()
}

fn store_bench(
    entry_size: usize,
    batch: usize,
    duration: Duration,
    base: Option<std::path::PathBuf>,
    skip_open: bool,
    json: bool,
) -> Result<(), String> {
    use futures::executor::block_on;
    use raft::LogStore;
    use raft_store_file::{FileStore, FileStoreOptions};
    use std::io::Write;

    // The file store and the raw loop run alternately in short rounds, so that noise
    // from the machine hits both. The raw loop writes the same bytes per batch (8-byte
    // frame header + encoded entry) with one write and one fdatasync per batch.
    let one = store_entries(1, 1, entry_size);
    let encoded = 8 + postcard::to_allocvec(&one[0]).map_err(|e| e.to_string())?.len();
    let dir = temp_dir(&base)?;
    let mut store = FileStore::open(dir.path(), FileStoreOptions::default()).map_err(|e| e.to_string())?;
    let raw_dir = temp_dir(&base)?;
    let path = raw_dir.path().join("raw.log");
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; encoded * batch];
    let rounds = 10u32;
    let round = duration / rounds;
    let mut next: LogIndex = 1;
    let (mut store_secs, mut raw_secs, mut raw_n) = (0.0, 0.0, 0u64);
    for _ in 0..rounds {
        let t0 = Instant::now();
        while t0.elapsed() < round {
            let entries = store_entries(next, batch, entry_size);
            block_on(store.append(&entries)).map_err(|e| e.to_string())?;
            next += batch as u64;
        }
        store_secs += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        while t0.elapsed() < round {
            f.write_all(&buf).and_then(|()| f.sync_data()).map_err(|e| e.to_string())?;
            raw_n += batch as u64;
        }
        raw_secs += t0.elapsed().as_secs_f64();
    }
    let store_entries_n = next - 1;
    drop((store, dir, f, raw_dir));

    let eps = store_entries_n as f64 / store_secs;
    let raw_eps = raw_n as f64 / raw_secs;
    let mbps = eps * encoded as f64 / 1e6;
    let raw_mbps = raw_eps * encoded as f64 / 1e6;
    let ratio = eps / raw_eps;
    println!(
        "store: entry {entry_size} B, batch {batch}: file store {eps:.0} entries/s ({mbps:.1} MB/s), raw {raw_eps:.0} entries/s ({raw_mbps:.1} MB/s), ratio {ratio:.3}"
    );

    // Time to open a log of 1,000,000 entries.
    let open_ms = if skip_open {
        None
    } else {
        let dir = temp_dir(&base)?;
        let mut store = FileStore::open(dir.path(), FileStoreOptions::default()).map_err(|e| e.to_string())?;
        let total: u64 = 1_000_000;
        let chunk = 4096u64;
        let mut i = 1;
        while i <= total {
            let n = chunk.min(total - i + 1);
            block_on(store.append(&store_entries(i, n as usize, entry_size))).map_err(|e| e.to_string())?;
            i += n;
        }
        drop(store);
        let t = Instant::now();
        let mut store = FileStore::open(dir.path(), FileStoreOptions::default()).map_err(|e| e.to_string())?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let st = block_on(store.initial_state()).map_err(|e| e.to_string())?;
        if st.last.index != total {
            return Err(format!("reopened log ends at {}, want {total}", st.last.index));
        }
        println!("store: open of a log of {total} entries of {entry_size} B: {ms:.1} ms");
        Some(ms)
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "entry_size": entry_size, "batch": batch,
                "entries_per_sec": eps, "raw_entries_per_sec": raw_eps, "ratio_vs_raw": ratio,
                "mb_per_sec": mbps, "raw_mb_per_sec": raw_mbps, "open_ms_1m": open_ms,
            })
        );
    }
    Ok(())
}

//! `bench snapshot`: what snapshots buy and cost (paper §7), on the `kv` state machine.
//!
//! - Restart: one node in this process with a [`FileStore`] applies `--writes` puts of
//!   `--value-size` bytes with snapshots off, then restarts twice from that data: once
//!   replaying the whole log, once after a snapshot covering it all (the log purged to
//!   it). Prints the time from opening the store to the last write applied, for both.
//! - Install: three `kv` processes on loopback; one follower is killed at once, the
//!   others apply `--writes` puts and snapshot them; the follower then restarts and gets
//!   the snapshot by InstallSnapshot. Prints the transfer's MB/s (from its temp file
//!   appearing to the snapshot file being published) against raw loopback TCP measured
//!   in the same run, the restore time, and the receiver's peak memory beyond that of
//!   the replica that got the same state by the log.
//! - Learner: three `kv` processes apply `--writes` puts; a fourth, started empty with
//!   `--join`, is then added through `POST /cluster/learners`. Prints the time from the
//!   request to the learner having applied everything committed before it, and how it
//!   got there (a snapshot install and the log after it, or the log alone).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::runtime::TokioRuntime;
use raft::testing::mem_network::MemNetwork;
use raft::{Config, Raft, Role};
use raft_examples::apps::kv::{KvCommand, KvStore};
use raft_examples::launch::client::Connection;
use raft_examples::launch::{app_command_line, Data, LocalCluster, Member, Spec};
use raft_store_file::{FileStore, FileStoreOptions};

use crate::cluster::nodes::{default_kv_bin, parse_status_kib, peak_rss_kib};

/// `bench snapshot`'s command line.
#[derive(clap::Args, Clone, Debug)]
pub struct SnapshotArgs {
    /// Puts applied before the measurements.
    #[arg(long, default_value_t = 1_000_000)]
    pub writes: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Distinct keys (default: one per write, so the state holds every write).
    #[arg(long)]
    pub keys: Option<u64>,
    /// Directory for the data (default: the system's temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Which parts to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "restart,install")]
    pub parts: Vec<Part>,
    /// Concurrent writers while loading.
    #[arg(long, default_value_t = 128)]
    pub clients: usize,
    /// An extra argument for every `kv` node of the install part (repeatable), e.g.
    /// `--kv-arg=--snapshot-max-inflight-chunks=8`.
    #[arg(long = "kv-arg", allow_hyphen_values = true)]
    pub kv_args: Vec<String>,
    /// Print a JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// A part of `bench snapshot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Restart with a full log replay against restart from a snapshot.
    Restart,
    /// InstallSnapshot between processes against raw loopback TCP.
    Install,
    /// A learner added to a loaded cluster catching up.
    Learner,
}

/// The key of write `n`.
fn key(n: u64, keys: u64) -> String {
    format!("key{:010}", n % keys)
}

/// The value of write `n`: its number, then filler.
fn value(n: u64, size: usize) -> Bytes {
    let mut v = vec![b'v'; size.max(8)];
    v[..8].copy_from_slice(&n.to_le_bytes());
    Bytes::from(v)
}

/// Runs the parts asked for and prints their figures.
pub fn run_snapshot(args: &SnapshotArgs) -> Result<(), String> {
    let keys = args.keys.unwrap_or(args.writes).max(1);
    let mut json = serde_json::Map::new();
    json.insert("writes".into(), args.writes.into());
    json.insert("value_size".into(), args.value_size.into());
    json.insert("keys".into(), keys.into());
    if args.parts.contains(&Part::Restart) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
        let r = rt.block_on(restart(args, keys))?;
        json.insert("restart".into(), r);
    }
    if args.parts.contains(&Part::Install) {
        json.insert("install".into(), install(args, keys)?);
    }
    if args.parts.contains(&Part::Learner) {
        json.insert("learner".into(), learner(args, keys)?);
    }
    if args.json {
        println!("{}", serde_json::Value::Object(json));
    }
    Ok(())
}

/// A temp dir under `dir` (or the system's).
fn temp_dir(dir: Option<&Path>, prefix: &str) -> Result<tempfile::TempDir, String> {
    let b = tempfile::Builder::new().prefix(prefix).to_owned();
    match dir {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .map_err(|e| format!("cannot create a temp dir: {e}"))
}

/// Bytes in the files of `dir` whose names end with `suffix`.
fn bytes_of(dir: &Path, suffix: &str) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Polls `f` every 10 ms until it holds, failing after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

type Node = (MemNetwork<TokioRuntime>, Raft<KvStore>);

/// Starts (or restarts) the single node on the store in `dir`.
async fn start_node(rt: &TokioRuntime, dir: &Path, config: &Config, fresh: bool) -> Result<Node, String> {
    let net = MemNetwork::new(rt.clone(), 1);
    let store = FileStore::open(dir, FileStoreOptions { cluster_id: 0x6b76, ..Default::default() })
        .map_err(|e| e.to_string())?;
    let raft = if fresh {
        Raft::bootstrap(1, [1], config.clone(), rt.clone(), store, net.endpoint(1), KvStore::default()).await
    } else {
        Raft::restart(1, config.clone(), rt.clone(), store, net.endpoint(1), KvStore::default()).await
    }
    .map_err(|e| e.to_string())?;
    let r = raft.clone();
    net.register(1, Arc::new(move |m| r.receive(m)));
    Ok((net, raft))
}

/// Restarts the node on `dir` and times it until index `last` is applied; checks that
/// the state holds `keys` keys. Returns (seconds to `Raft::restart` returning, seconds
/// to `last` applied).
async fn timed_restart(
    rt: &TokioRuntime,
    dir: &Path,
    config: &Config,
    last: u64,
    keys: u64,
) -> Result<(f64, f64), String> {
    let t0 = Instant::now();
    let (_net, raft) = start_node(rt, dir, config, false).await?;
    let started = t0.elapsed().as_secs_f64();
    wait_for("the restarted node to apply its log", Duration::from_secs(600), || {
        raft.with_status(|s| s.applied_index >= last)
    })
    .await?;
    let applied = t0.elapsed().as_secs_f64();
    let held = raft.read_local_stale(|kv| kv.len()) as u64;
    raft.shutdown().await;
    if held != keys {
        return Err(format!("the restarted node holds {held} keys, want {keys}"));
    }
    Ok((started, applied))
}

/// Proposes `args.writes` puts on `raft` from `args.clients` tasks; returns the seconds
/// it took.
async fn load_in_process(raft: &Raft<KvStore>, args: &SnapshotArgs, keys: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.clients.max(1) {
        let (raft, next, writes, size) = (raft.clone(), next.clone(), args.writes, args.value_size);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= writes {
                    return Ok::<(), String>(());
                }
                let command = KvCommand::Put { key: key(n, keys), value: value(n, size) };
                raft.propose(command).await.map_err(|e| format!("write {n}: {e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

async fn restart(args: &SnapshotArgs, keys: u64) -> Result<serde_json::Value, String> {
    let rt = TokioRuntime::new();
    let tmp = temp_dir(args.dir.as_deref(), "bench-snapshot-restart-")?;
    let dir = tmp.path();
    // Snapshots off while loading, so the log holds every write.
    let config = Config { snapshot_after_entries: 0, snapshot_after_bytes: 0, ..Config::default() };
    let (net, raft) = start_node(&rt, dir, &config, true).await?;
    wait_for("the node to lead", Duration::from_secs(10), || raft.with_status(|s| s.role == Role::Leader)).await?;
    let load = load_in_process(&raft, args, keys).await?;
    let last = raft.status().last_log_index;
    raft.shutdown().await;
    drop(net);
    let log_bytes = bytes_of(dir, ".seg");
    println!(
        "loaded {} writes of {} B ({} keys) in {load:.1} s: {:.0} writes/s; log {:.0} MiB, last index {last}",
        args.writes,
        args.value_size,
        keys,
        args.writes as f64 / load,
        mib(log_bytes)
    );

    let (replay_start, replay) = timed_restart(&rt, dir, &config, last, keys).await?;
    println!("restart replaying the whole log: {replay:.2} s to the last write applied ({replay_start:.2} s to start)");

    // A snapshot of everything, and the log purged to it.
    let (net, raft) = start_node(&rt, dir, &config, false).await?;
    wait_for("the node to apply its log", Duration::from_secs(600), || raft.with_status(|s| s.applied_index >= last))
        .await?;
    let t0 = Instant::now();
    raft.trigger_snapshot().map_err(|e| e.to_string())?;
    wait_for("the snapshot", Duration::from_secs(600), || raft.with_status(|s| s.snapshot_index >= last)).await?;
    let taken = t0.elapsed().as_secs_f64();
    raft.purge_log(last).map_err(|e| e.to_string())?;
    wait_for("the purge", Duration::from_secs(60), || raft.with_status(|s| s.first_log_index > last)).await?;
    raft.shutdown().await;
    drop(net);
    let snap_bytes = bytes_of(dir, ".snap");
    println!(
        "snapshot of {} keys: {:.0} MiB, taken in {taken:.2} s ({:.0} MB/s); log after purge {:.1} MiB",
        keys,
        mib(snap_bytes),
        snap_bytes as f64 / 1e6 / taken,
        mib(bytes_of(dir, ".seg"))
    );
    let mut from_snapshot = Vec::new();
    for _ in 0..2 {
        from_snapshot.push(timed_restart(&rt, dir, &config, last, keys).await?);
    }
    let best = from_snapshot.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    for (i, (s, a)) in from_snapshot.iter().enumerate() {
        println!("restart from the snapshot, run {}: {a:.2} s to the last write applied ({s:.2} s to start)", i + 1);
    }
    println!("restart: from a snapshot {best:.2} s against {replay:.2} s replaying the log ({:.1}x)", replay / best);
    let floor = memory_floor(keys.min(args.writes), args.value_size)?;
    println!(
        "floor: allocating and filling {} fresh values of {} B takes {floor:.2} s on this machine",
        keys.min(args.writes),
        args.value_size
    );
    Ok(serde_json::json!({
        "load_seconds": load,
        "log_bytes": log_bytes,
        "snapshot_bytes": snap_bytes,
        "snapshot_seconds": taken,
        "replay_seconds": replay,
        "from_snapshot_seconds": from_snapshot.iter().map(|r| r.1).collect::<Vec<_>>(),
        "memory_floor_seconds": floor,
    }))
}

/// Seconds to allocate and fill `count` values of `size` bytes on a new thread (whose
/// allocator arena holds no memory yet): what any restore of such a state pays for its
/// memory alone, whatever the format.
fn memory_floor(count: u64, size: usize) -> Result<f64, String> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let values: Vec<Vec<u8>> = (0..count).map(|n| vec![n as u8; size]).collect();
        let secs = t0.elapsed().as_secs_f64();
        drop(std::hint::black_box(values));
        secs
    })
    .join()
    .map_err(|_| "the floor thread panicked".to_string())
}

/// Raw loopback TCP: `bytes` in 1 MiB writes from one thread to another; MB/s.
fn raw_tcp(bytes: u64) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    });
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let chunk = vec![7u8; 1 << 20];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).map_err(|e| e.to_string())?;
        sent += chunk.len() as u64;
    }
    drop(s);
    let got = reader.join().map_err(|_| "the reader panicked".to_string())?.map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    if got != sent {
        return Err(format!("raw TCP: sent {sent} bytes, received {got}"));
    }
    Ok(sent as f64 / 1e6 / secs)
}

/// Raw disk: `bytes` written in 1 MiB writes to a new file in `dir`, then one
/// `fdatasync`, as a received snapshot is; MB/s. The file is removed.
fn raw_disk(dir: &Path, bytes: u64) -> Result<f64, String> {
    let path = dir.join("raw-disk-probe");
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        f.write_all(&chunk).map_err(|e| e.to_string())?;
        written += chunk.len() as u64;
    }
    f.sync_data().map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(written as f64 / 1e6 / secs)
}

/// Resident memory (VmRSS) of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS")
}

fn status_u64(c: &LocalCluster, i: usize, field: &str) -> Option<u64> {
    c.status(i, Duration::from_secs(2)).ok()?.get(field)?.as_u64()
}

fn pid_of(c: &LocalCluster, i: usize) -> Result<u32, String> {
    c.pid(i).and_then(|p| u32::try_from(p.as_raw()).ok()).ok_or_else(|| format!("node {} is not running", i + 1))
}

/// Polls `f` every 5 ms until it returns `Some`, failing after `timeout`.
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Puts `args.writes` values through the node serving HTTP on `http`, from
/// `args.clients` threads with a connection each; returns the seconds it took.
fn load_over_http(http: &str, args: &SnapshotArgs, keys: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    let next = AtomicU64::new(0);
    std::thread::scope(|s| -> Result<(), String> {
        let writers: Vec<_> = (0..args.clients.max(1))
            .map(|_| {
                let next = &next;
                s.spawn(move || -> Result<(), String> {
                    let mut conn = Connection::new(http, Duration::from_secs(30))?;
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= args.writes {
                            return Ok(());
                        }
                        let body = value(n, args.value_size);
                        let r = conn.request("PUT", &format!("/kv/{}", key(n, keys)), Some(&body[..]));
                        if r.status != 200 {
                            return Err(format!("write {n}: {} {}", r.status, r.text()));
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().map_err(|_| "a writer panicked".to_string())??;
        }
        Ok(())
    })?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Three `kv` nodes that snapshot once `after` entries are applied and then purge
/// their whole log.
fn install_cluster(args: &SnapshotArgs, after: u64) -> Result<LocalCluster, String> {
    let program = default_kv_bin().ok_or(
        "no kv binary next to this executable: build it with `cargo build --release -p raft-examples -p raft-bench`",
    )?;
    let mut spec = Spec::app(program, 3);
    spec.data = Data::Temp { parent: args.dir.clone(), prefix: "bench-snapshot-install-".into() };
    if std::env::var_os("RUST_LOG").is_none() {
        spec.env.push(("RUST_LOG".into(), "warn".into()));
    }
    let extra = args.kv_args.clone();
    spec.extra_args = Arc::new(move |_| {
        let mut a = vec![
            format!("--snapshot-after-entries={after}"),
            "--snapshot-after-bytes=0".into(),
            "--snapshot-keep-entries=0".into(),
        ];
        a.extend(extra.iter().cloned());
        a
    });
    LocalCluster::start_serving(spec, Duration::from_secs(30))
}

/// When the receiver's install went through its steps: its temp file appeared, the
/// snapshot file was published, its status showed the snapshot.
struct InstallTimes {
    spawned: Instant,
    first_chunk: Instant,
    /// The temp file holds the whole data (written, not yet synced).
    received: Instant,
    published: Instant,
    restored: Instant,
}

/// Starts node `receiver` again and watches its install of the leader's snapshot
/// until it has caught up with `leader`.
fn watch_install(
    c: &mut LocalCluster,
    receiver: usize,
    leader: usize,
    size: u64,
) -> Result<(InstallTimes, u32), String> {
    let dir = c.nodes[receiver].data_dir.clone();
    // The head (a few hundred bytes) is written after the data.
    let whole = size.saturating_sub(4096);
    let has_temp = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    let spawned = Instant::now();
    c.spawn(receiver)?;
    let pid = pid_of(c, receiver)?;
    let first_chunk = poll("the snapshot's temp file on the receiver", Duration::from_secs(120), || {
        has_temp(&dir).then(Instant::now)
    })?;
    let received = poll("the whole snapshot in the receiver's temp file", Duration::from_secs(600), || {
        (bytes_of(&dir, ".tmp") >= whole || bytes_of(&dir, ".snap") > 0).then(Instant::now)
    })?;
    let published = poll("the snapshot file on the receiver", Duration::from_secs(600), || {
        (bytes_of(&dir, ".snap") > 0).then(Instant::now)
    })?;
    let restored = poll("the receiver's restore", Duration::from_secs(600), || {
        let snapshot = status_u64(c, receiver, "snapshot_index")?;
        (snapshot > 0 && status_u64(c, receiver, "applied_index")? >= snapshot).then(Instant::now)
    })?;
    let commit = status_u64(c, leader, "commit_index").ok_or("the leader's status")?;
    poll("the receiver to catch up", Duration::from_secs(120), || {
        (status_u64(c, receiver, "applied_index")? >= commit).then_some(())
    })?;
    Ok((InstallTimes { spawned, first_chunk, received, published, restored }, pid))
}

fn install(args: &SnapshotArgs, keys: u64) -> Result<serde_json::Value, String> {
    // One snapshot once every write is applied (the entries before the writes are the
    // configuration and the leader's no-op), then the log purged behind it.
    let after = args.writes + 2;
    let mut c = install_cluster(args, after)?;
    let leader = poll("a leader", Duration::from_secs(30), || c.leader())?;
    let receiver = (leader + 1) % 3;
    let replica = (leader + 2) % 3;
    c.kill(receiver);

    let load = load_over_http(&c.nodes[leader].http.to_string(), args, keys)?;
    println!(
        "loaded {} writes of {} B in {load:.1} s: {:.0} writes/s",
        args.writes,
        args.value_size,
        args.writes as f64 / load
    );
    for i in [leader, replica] {
        poll(&format!("node {}'s snapshot", i + 1), Duration::from_secs(600), || {
            (status_u64(&c, i, "first_log_index")? > after).then_some(())
        })?;
    }
    let snap_bytes = bytes_of(&c.nodes[leader].data_dir, ".snap");
    let replica_rss = rss_kib(pid_of(&c, replica)?).unwrap_or(0);

    let raw = raw_tcp(snap_bytes.max(1 << 30))?;
    let disk = raw_disk(&c.nodes[receiver].data_dir, snap_bytes.max(1 << 30))?;
    println!("raw loopback TCP: {raw:.0} MB/s; raw disk (write and fdatasync of as much): {disk:.0} MB/s");

    let (t, pid) = watch_install(&mut c, receiver, leader, snap_bytes)?;
    let peak = peak_rss_kib(pid).unwrap_or(0);
    let after_rss = rss_kib(pid).unwrap_or(0);
    let received = (t.received - t.first_chunk).as_secs_f64();
    let transfer = (t.published - t.first_chunk).as_secs_f64();
    let restore = (t.restored - t.published).as_secs_f64();
    let net_mbs = snap_bytes as f64 / 1e6 / received;
    let mbs = snap_bytes as f64 / 1e6 / transfer;
    let extra_mib = (peak as f64 - replica_rss as f64) / 1024.0;
    println!(
        "install of a {:.0} MiB snapshot: received in {received:.2} s ({net_mbs:.0} MB/s, {:.2} of raw TCP), \
         durable in {transfer:.2} s ({mbs:.0} MB/s, {:.2} of raw disk), restore {restore:.2} s; \
         {:.2} s from the receiver's start to its restore",
        mib(snap_bytes),
        net_mbs / raw,
        mbs / disk,
        (t.restored - t.spawned).as_secs_f64()
    );
    println!(
        "receiver memory: peak {:.0} MiB, {:.0} MiB after; the replica that got the same state by the log holds \
         {:.0} MiB: {extra_mib:.0} MiB extra at the peak",
        peak as f64 / 1024.0,
        after_rss as f64 / 1024.0,
        replica_rss as f64 / 1024.0
    );
    c.kill_all();
    Ok(serde_json::json!({
        "load_seconds": load,
        "snapshot_bytes": snap_bytes,
        "raw_tcp_mb_per_s": raw,
        "raw_disk_mb_per_s": disk,
        "received_seconds": received,
        "received_mb_per_s": net_mbs,
        "received_ratio_to_raw_tcp": net_mbs / raw,
        "durable_seconds": transfer,
        "durable_mb_per_s": mbs,
        "durable_ratio_to_raw_disk": mbs / disk,
        "restore_seconds": restore,
        "receiver_peak_kib": peak,
        "receiver_rss_after_kib": after_rss,
        "replica_rss_kib": replica_rss,
        "extra_peak_mib": extra_mib,
    }))
}

/// Nodes 1..=3 bootstrap; node 4 starts empty with `--join` through them.
fn learner_command_line(members: &[Member], i: usize) -> Vec<String> {
    let founders = &members[..3];
    if i < 3 {
        return app_command_line(founders, i);
    }
    let join = founders.iter().map(|m| format!("{}={}", m.id, m.raft)).collect::<Vec<_>>().join(",");
    let m = &members[i];
    vec![
        format!("--id={}", m.id),
        format!("--listen={}", m.raft),
        format!("--http={}", m.http),
        format!("--join={join}"),
        format!("--data-dir={}", m.data_dir.display()),
    ]
}

fn learner(args: &SnapshotArgs, keys: u64) -> Result<serde_json::Value, String> {
    let program = default_kv_bin().ok_or(
        "no kv binary next to this executable: build it with `cargo build --release -p raft-examples -p raft-bench`",
    )?;
    let mut spec = Spec::app(program, 4);
    spec.data = Data::Temp { parent: args.dir.clone(), prefix: "bench-snapshot-learner-".into() };
    if std::env::var_os("RUST_LOG").is_none() {
        spec.env.push(("RUST_LOG".into(), "warn".into()));
    }
    spec.command_line = Arc::new(learner_command_line);
    let extra = args.kv_args.clone();
    spec.extra_args = Arc::new(move |_| extra.clone());
    let mut c = LocalCluster::start_serving(spec, Duration::from_secs(30))?;
    let leader = poll("a leader", Duration::from_secs(30), || c.leader())?;
    let http = c.nodes[leader].http.to_string();
    let load = load_over_http(&http, args, keys)?;
    let state_mib = (args.writes.min(keys) * args.value_size as u64) as f64 / (1 << 20) as f64;
    println!(
        "loaded {} writes of {} B ({state_mib:.0} MiB of values) in {load:.1} s: {:.0} writes/s",
        args.writes,
        args.value_size,
        args.writes as f64 / load
    );
    let commit = status_u64(&c, leader, "commit_index").ok_or("the leader's status")?;
    let leader_snapshot = status_u64(&c, leader, "snapshot_index").unwrap_or(0);
    let new = &c.nodes[3];
    let body = format!(r#"{{"id": {}, "raft": "{}", "http": "{}"}}"#, new.id, new.raft, new.http);
    let t0 = Instant::now();
    let r = raft_examples::launch::client::request(
        &http,
        "POST",
        "/cluster/learners",
        Some(body.as_bytes()),
        Duration::from_secs(60),
    );
    if r.status != 200 {
        return Err(format!("adding the learner: {} {}", r.status, r.text()));
    }
    let added = t0.elapsed().as_secs_f64();
    poll("the learner to catch up", Duration::from_secs(1800), || {
        (status_u64(&c, 3, "applied_index")? >= commit).then_some(())
    })?;
    let caught_up = t0.elapsed().as_secs_f64();
    let by_snapshot = status_u64(&c, 3, "snapshot_index").unwrap_or(0);
    let dir_bytes = bytes_of(&c.nodes[3].data_dir, "");
    let how = if by_snapshot > 0 {
        format!("a snapshot at index {by_snapshot}, then the log")
    } else {
        "the log alone".to_string()
    };
    println!(
        "learner: added (committed) {added:.3} s after the request; applied all {commit} committed entries \
         {caught_up:.2} s after it ({:.0} MiB/s of values), by {how}; the leader's snapshot was at {leader_snapshot}; \
         the learner's data directory holds {:.0} MiB",
        state_mib / caught_up,
        mib(dir_bytes)
    );
    c.kill_all();
    Ok(serde_json::json!({
        "load_seconds": load,
        "state_mib": state_mib,
        "commit_index": commit,
        "added_seconds": added,
        "caught_up_seconds": caught_up,
        "learner_snapshot_index": by_snapshot,
        "leader_snapshot_index": leader_snapshot,
        "learner_dir_bytes": dir_bytes,
    }))
}

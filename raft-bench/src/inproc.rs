//! `bench inproc --nodes 3 --clients N --duration SECS [--sessions] [--json]`: a cluster
//! of real `Raft` nodes in one process on tokio, with the in-memory store and network; N
//! clients propose empty commands to the leader in a loop, with `Raft::propose` or, with
//! `--sessions`, each in a client session of its own (`Raft::propose_in_session`). Prints
//! writes/s and latency percentiles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raft::runtime::TokioRuntime;
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{Config, LogIndex, Raft, Role, StateMachine};

/// A state machine that does nothing: the benchmark measures the framework.
struct Noop(u64);

impl StateMachine for Noop {
    type Command = ();
    type Response = ();
    fn apply(&mut self, _index: LogIndex, _command: ()) {
        self.0 += 1;
    }
    type Snapshot = u64;
    fn snapshot(&self) -> u64 {
        self.0
    }
    fn write_snapshot(applied: u64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&applied.to_le_bytes())
    }
    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), String> {
        let mut bytes = [0; 8];
        input.read_exact(&mut bytes).map_err(|e| e.to_string())?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// A started in-process cluster: the network (kept for as long as the nodes run), the
/// nodes and the leader.
type Started = (MemNetwork<TokioRuntime>, Vec<Raft<Noop>>, Raft<Noop>);

/// Starts `nodes` nodes on the in-memory network and waits for a leader (10 s at most).
async fn start(runtime: &TokioRuntime, nodes: u64) -> Result<Started, String> {
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
    loop {
        if let Some(r) = rafts.iter().find(|r| r.with_status(|s| s.role == Role::Leader)) {
            let leader = r.clone();
            return Ok((net, rafts, leader));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no leader elected within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(nodes: u64, clients: usize, duration: Duration, sessions: bool, json: bool) -> Result<(), String> {
    let runtime = TokioRuntime::new();
    let (_net, rafts, leader) = start(&runtime, nodes).await?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..clients as u64 {
        let leader = leader.clone();
        let measuring = measuring.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram precision");
            let mut errors = 0u64;
            let session = raft::session::IMPLICIT | (client + 1);
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                seq += 1;
                let r = if sessions {
                    leader.propose_in_session(session, seq, seq - 1, ()).await
                } else {
                    leader.propose(()).await
                };
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
    let how = if sessions { "clients in sessions" } else { "clients" };
    println!(
        "inproc: {nodes} nodes, {clients} {how}, {elapsed:.1}s: {wps:.0} writes/s, latency p50 {p50} us, p99 {p99} us, p999 {p999} us, {errors} errors"
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "nodes": nodes, "clients": clients, "sessions": sessions, "seconds": elapsed, "writes": writes,
                "writes_per_sec": wps, "p50_us": p50, "p99_us": p99, "p999_us": p999, "errors": errors,
            })
        );
    }
    Ok(())
}

//! A local three-node cluster of the replicated counter, in one process.
//!
//! It elects a leader, commits increments, stops the leader, shows a new leader taking
//! over, restarts the old node from its store and shows it catching up, printing the
//! cluster's status table at each step.
//!
//!     cargo run --release -p raft-examples --example demo
//!     cargo run --release -p raft-examples --features smol --example demo -- --runtime smol

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
#[cfg(feature = "smol")]
use raft::runtime::SmolRuntime;
use raft::runtime::TokioRuntime;
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{Config, NodeId, Raft, Role, Runtime};
use raft_examples::apps::counter::Counter;

#[derive(Clone, Copy, ValueEnum)]
enum Rt {
    Tokio,
    /// Needs the `smol` feature (`--features smol`).
    #[cfg(feature = "smol")]
    Smol,
}

#[derive(Parser)]
#[command(about = "Runs a local three-node replicated counter and shows failover")]
struct Cli {
    /// The async runtime to run the nodes on.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: Rt,
    /// Increments to commit in each phase.
    #[arg(long, default_value_t = 1000)]
    increments: u64,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let result = match cli.runtime {
        Rt::Tokio => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(async { demo(TokioRuntime::new(), cli.increments).await }),
            Err(e) => Err(format!("cannot start tokio: {e}")),
        },
        #[cfg(feature = "smol")]
        Rt::Smol => smol::block_on(demo(SmolRuntime::new(), cli.increments)),
    };
    if let Err(e) = result {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn table(nodes: &[Option<Raft<Counter>>]) {
    println!(
        "  {:<4} {:<10} {:>5} {:>7} {:>8} {:>8} {:>8}",
        "node", "role", "term", "leader", "commit", "applied", "value"
    );
    for (i, n) in nodes.iter().enumerate() {
        match n {
            Some(n) => {
                let s = n.status();
                let leader = s.leader.map_or("-".to_string(), |l| l.to_string());
                let role = format!("{:?}", s.role).to_lowercase();
                let value = n.read_local_stale(|c| c.value());
                println!(
                    "  {:<4} {:<10} {:>5} {:>7} {:>8} {:>8} {:>8}",
                    s.id, role, s.term, leader, s.commit_index, s.applied_index, value
                );
            }
            None => println!("  {:<4} {:<10}", i + 1, "down"),
        }
    }
}

/// Waits until a running node reports itself leader, 10 s at most: races the nodes'
/// `Raft::wait_role`, which wake on each status change (no polling).
async fn wait_leader(nodes: &[Option<Raft<Counter>>]) -> Result<Raft<Counter>, String> {
    let mut waits: Vec<_> = nodes
        .iter()
        .flatten()
        .map(|n| Box::pin(async move { (n, n.wait_role(Role::Leader, Duration::from_secs(10)).await) }))
        .collect();
    let mut failures = Vec::new();
    while !waits.is_empty() {
        let ((node, result), _, rest) = futures::future::select_all(waits).await;
        match result {
            Ok(_) => return Ok(node.clone()),
            Err(e) => failures.push(format!("node {}: {e}", node.id())),
        }
        waits = rest;
    }
    Err(format!("no leader within 10 s: {}", failures.join("; ")))
}

async fn start<R: Runtime>(
    rt: &R,
    net: &MemNetwork<R>,
    id: NodeId,
    store: MemStore,
    fresh: bool,
) -> Result<Raft<Counter>, String> {
    let cfg = Config::default();
    let raft = if fresh {
        Raft::bootstrap(id, [1, 2, 3], cfg, rt.clone(), store, net.endpoint(id), Counter::default()).await
    } else {
        Raft::restart(id, cfg, rt.clone(), store, net.endpoint(id), Counter::default()).await
    }
    .map_err(|e| e.to_string())?;
    let r2 = raft.clone();
    net.register(id, Arc::new(move |m| r2.receive(m)));
    Ok(raft)
}

async fn commit_many(leader: &Raft<Counter>, n: u64) -> Result<(i64, Duration), String> {
    let t = Instant::now();
    let mut last = 0;
    let mut pending = Vec::new();
    for _ in 0..n {
        let l = leader.clone();
        pending.push(async move { l.propose(1).await });
    }
    for r in futures::future::join_all(pending).await {
        last = last.max(r.map_err(|e| e.to_string())?);
    }
    Ok((last, t.elapsed()))
}

async fn demo<R: Runtime>(rt: R, increments: u64) -> Result<(), String> {
    println!("starting a 3-node replicated counter (in-memory store and network)");
    let net = MemNetwork::new(rt.clone(), 42);
    let stores: Vec<MemStore> = (0..3).map(|_| MemStore::new()).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(start(&rt, &net, id, stores[id as usize - 1].clone(), true).await?));
    }
    let t = Instant::now();
    let leader = wait_leader(&nodes).await?;
    println!("\nnode {} elected leader after {:?}", leader.id(), t.elapsed());
    let (value, took) = commit_many(&leader, increments).await?;
    println!("committed {increments} concurrent increments in {took:?}; counter = {value}");
    rt.sleep(Duration::from_millis(100)).await;
    table(&nodes);

    let old = leader.id();
    println!("\nstopping the leader, node {old}");
    net.unregister(old);
    leader.shutdown().await;
    nodes[old as usize - 1] = None;
    let t = Instant::now();
    let leader = wait_leader(&nodes).await?;
    println!("node {} took over after {:?}", leader.id(), t.elapsed());
    let (value, _) = commit_many(&leader, increments).await?;
    println!("committed {increments} more; counter = {value}");
    rt.sleep(Duration::from_millis(100)).await;
    table(&nodes);

    println!("\nrestarting node {old} from its store");
    nodes[old as usize - 1] = Some(start(&rt, &net, old, stores[old as usize - 1].clone(), false).await?);
    let t = Instant::now();
    while nodes[old as usize - 1].as_ref().map(|n| n.read_local_stale(|c| c.value())) != Some(value) {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("restarted node did not catch up".into());
        }
        rt.sleep(Duration::from_millis(5)).await;
    }
    println!("node {old} caught up in {:?}", t.elapsed());
    table(&nodes);
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
    println!("\nall nodes stopped cleanly");
    Ok(())
}

//! `bench failover`: under a steady write load, kill the leader with SIGKILL and time
//! how long until a write sent after the kill succeeds; restart the node and repeat.
//! With `--mode transfer` (kv), each round moves leadership to the next node through the
//! admin API instead; with `--mode rolling` (kv), each round restarts every node in turn
//! with SIGTERM (the leader hands over first), waiting for each to rejoin. Every mode
//! also reports the longest gap between two successful writes in the round: the write
//! unavailability the clients saw.
//!
//! The load's clients each wait for their request in flight, which a system may hold
//! until its own timeout when the leader it went to is gone. So that the figure is the
//! time until the cluster takes writes again, not a client timeout, a prober also
//! starts a fresh write (on a new connection, nodes in turn) every 20 ms after the kill;
//! the first write sent after the kill that succeeds, from either, ends the round.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http_client::one_shot;
use super::load::{Load, LoadConfig};
use super::nodes::Cluster;
use super::results::median;
use super::target::{Op, RequestBuilder, Target, Workload};
use super::{block_on, SetupArgs};

/// What a round of `bench failover` does to the cluster.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SIGKILL the leader, then restart it.
    Kill,
    /// Move leadership to the next node (`POST /cluster/transfer-leader`; kv only).
    Transfer,
    /// Restart every node in turn with SIGTERM, the leader last (kv only).
    Rolling,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Kill => "kill",
            Mode::Transfer => "transfer",
            Mode::Rolling => "rolling",
        }
    }
}

/// Options of `bench failover`.
#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    /// The system to measure.
    #[arg(long, value_enum)]
    pub target: Target,
    /// What each round does: kill the leader, transfer leadership, or restart every
    /// node in turn.
    #[arg(long, value_enum, default_value_t = Mode::Kill)]
    pub mode: Mode,
    /// Rounds (leader kills, transfers or rolling restarts).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Writing clients that keep running through every round.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Bytes per written value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Seconds of steady load before each kill.
    #[arg(long, default_value_t = 1.0)]
    pub steady: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub setup: SetupArgs,
    /// Print a JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// The percentile `q` (0..=1) of `xs` by the nearest-rank method.
pub fn percentile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Fresh writes started every `every` until one succeeds; reports when the first did.
struct Prober {
    done: Arc<AtomicBool>,
    first_ok_ns: Arc<AtomicU64>,
    start: Instant,
}

impl Prober {
    fn start(target: Target, endpoints: Vec<SocketAddr>, value_size: usize, every: Duration) -> Prober {
        let done = Arc::new(AtomicBool::new(false));
        let first_ok_ns = Arc::new(AtomicU64::new(u64::MAX));
        let start = Instant::now();
        let (d, f) = (done.clone(), first_ok_ns.clone());
        tokio::spawn(async move {
            let builder = Arc::new(RequestBuilder::new(target, value_size));
            let outstanding = Arc::new(AtomicU64::new(0));
            let mut n = 0u64;
            while !d.load(Ordering::Relaxed) {
                // At most a few hundred probes in flight (a node may hold each for seconds).
                if outstanding.load(Ordering::Relaxed) < 500 {
                    let addr = endpoints[(n as usize) % endpoints.len().max(1)];
                    let (b, d, f, o) = (builder.clone(), d.clone(), f.clone(), outstanding.clone());
                    o.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let r = one_shot(addr, Duration::from_secs(30), |h, out| b.build(h, Op::Put(n % 10_000), out))
                            .await;
                        if matches!(r, Ok((s, _)) if s.is_success()) {
                            f.fetch_min(start.elapsed().as_nanos() as u64, Ordering::SeqCst);
                            d.store(true, Ordering::Relaxed);
                        }
                        o.fetch_sub(1, Ordering::Relaxed);
                    });
                    n += 1;
                }
                tokio::time::sleep(every).await;
            }
        });
        Prober { done, first_ok_ns, start }
    }

    /// When the first probe succeeded, measured from `since`.
    fn first_ok_since(&self, since: Instant) -> Option<Duration> {
        let ns = self.first_ok_ns.load(Ordering::SeqCst);
        (ns != u64::MAX).then(|| (self.start + Duration::from_nanos(ns)).saturating_duration_since(since))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Asks node `i` to hand leadership to node `to` (ids are indexes + 1) and waits for the
/// answer.
pub(super) async fn transfer(cluster: &Cluster, i: usize, to: usize) -> Result<(), String> {
    let addr = cluster.http_endpoints()[i];
    let body = format!(r#"{{"to": {}}}"#, to + 1);
    let (status, answer) = one_shot(addr, Duration::from_secs(10), |host, out| {
        out.extend_from_slice(
            format!(
                "POST /cluster/transfer-leader HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    })
    .await?;
    if !status.is_success() {
        return Err(format!("transfer to node {}: {status} {}", to + 1, String::from_utf8_lossy(&answer)));
    }
    Ok(())
}

/// One round that is not a kill: the longest gap between successful writes while it
/// ran and for a second after.
async fn planned_round(args: &FailoverArgs, cluster: &mut Cluster, load: &Load, round: usize) -> Result<f64, String> {
    let n = cluster.http_endpoints().len();
    let leader = cluster.wait_ready(Duration::from_secs(30)).await?;
    load.reset_gap();
    match args.mode {
        Mode::Transfer => {
            let to = (leader + 1) % n;
            transfer(cluster, leader, to).await?;
            eprintln!(
                "failover {} transfer: round {round}: leadership moved from node {} to node {}",
                args.target,
                leader + 1,
                to + 1
            );
        }
        Mode::Rolling => {
            // Followers first, the leader last, as an operator would.
            let order: Vec<usize> = (1..=n).map(|k| (leader + k) % n).collect();
            for i in order {
                cluster.restart_gracefully(i, Duration::from_secs(30))?;
                cluster.wait_ready(Duration::from_secs(30)).await?;
                // Let the restarted node catch up before the next one goes.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            eprintln!("failover {} rolling: round {round}: every node restarted in turn", args.target);
        }
        Mode::Kill => return Err("a kill is not a planned round".into()),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(load.max_gap().as_secs_f64() * 1e3)
}

async fn rounds(args: &FailoverArgs) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut cluster = Cluster::start(args.target, &args.setup.options())?;
    cluster.wait_ready(Duration::from_secs(30)).await?;
    let cfg = LoadConfig {
        target: args.target,
        endpoints: cluster.http_endpoints(),
        clients: args.clients.max(1),
        workload: Workload::Write,
        value_size: args.value_size,
        keyspace: 10_000,
        request_timeout: Duration::from_secs(5),
    };
    let mut load = Load::start(&cfg);
    load.begin_measuring();
    let mut times = Vec::new();
    let mut gaps = Vec::new();
    if args.mode != Mode::Kill {
        cluster.wait_ready(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
        for round in 1..=args.rounds.max(1) {
            let gap = planned_round(args, &mut cluster, &load, round).await?;
            eprintln!(
                "failover {} {}: round {round}: longest gap between successful writes {gap:.1} ms",
                args.target,
                args.mode.name()
            );
            gaps.push(gap);
            tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
        }
        let _ = load.finish().await?;
        cluster.stop();
        return Ok((Vec::new(), gaps));
    }
    for round in 1..=args.rounds.max(1) {
        // Every node runs again (the last victim has restarted); let the load settle.
        cluster.wait_ready(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
        let leader = cluster.wait_ready(Duration::from_secs(30)).await?;
        let before = load.counters().ops();
        if before == 0 {
            return Err(format!("{}: no write succeeded before the kill", args.target));
        }
        load.reset_gap();
        let killed_at = cluster.kill_signal(leader)?;
        load.mark_at(killed_at);
        let prober = Prober::start(args.target, cluster.http_endpoints(), args.value_size, Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_secs(60);
        let took = loop {
            let firsts = [load.first_ok_since_mark(), prober.first_ok_since(killed_at)];
            if let Some(d) = firsts.into_iter().flatten().min() {
                break d;
            }
            if Instant::now() > deadline {
                return Err(format!("{}: no write succeeded within 60 s of killing the leader", args.target));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let ms = took.as_secs_f64() * 1e3;
        eprintln!(
            "failover {}: round {round}: leader node {} killed, writes back after {ms:.0} ms",
            args.target,
            leader + 1
        );
        times.push(ms);
        // The gap runs until writes flow again; a second more shows any later stall.
        tokio::time::sleep(Duration::from_secs(1)).await;
        gaps.push(load.max_gap().as_secs_f64() * 1e3);
        cluster.restart(leader)?;
    }
    let _ = load.finish().await?;
    cluster.stop();
    Ok((times, gaps))
}

/// `bench failover`.
pub fn run_failover(args: &FailoverArgs) -> Result<(), String> {
    if args.setup.nodes < 3 {
        return Err(format!(
            "failover needs at least 3 nodes (a majority must survive the leader), not {}",
            args.setup.nodes
        ));
    }
    if args.mode != Mode::Kill && args.target != Target::Kv {
        return Err(format!("--mode {} runs only kv clusters", args.mode.name()));
    }
    let (times, gaps) = block_on(args.setup.client_threads, rounds(args))?;
    let max_of = |xs: &[f64]| xs.iter().copied().fold(0.0, f64::max);
    if !times.is_empty() {
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        println!(
            "failover {}: {} rounds, {} writing clients: leader killed to first successful write p50 {p50:.0} ms, \
             p99 {p99:.0} ms, max {:.0} ms (median {:.0} ms)",
            args.target,
            times.len(),
            args.clients,
            max_of(&times),
            median(&times)
        );
    }
    let (g50, g99) = (percentile(&gaps, 0.5), percentile(&gaps, 0.99));
    println!(
        "failover {} {}: {} rounds, {} writing clients: longest gap between successful writes per round p50 {g50:.1} ms, \
         p99 {g99:.1} ms, max {:.1} ms ({})",
        args.target,
        args.mode.name(),
        gaps.len(),
        args.clients,
        max_of(&gaps),
        gaps.iter().map(|g| format!("{g:.1}")).collect::<Vec<_>>().join(", ")
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "target": args.target.name(), "mode": args.mode.name(), "rounds": gaps.len(), "clients": args.clients,
                "failover_p50_ms": percentile(&times, 0.5), "failover_p99_ms": percentile(&times, 0.99),
                "failover_max_ms": max_of(&times), "failover_ms": times,
                "gap_p50_ms": g50, "gap_p99_ms": g99, "gap_max_ms": max_of(&gaps), "gap_ms": gaps,
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let xs = [400.0, 100.0, 300.0, 200.0, 500.0];
        assert_eq!(percentile(&xs, 0.5), 300.0);
        assert_eq!(percentile(&xs, 0.99), 500.0);
        assert_eq!(percentile(&xs, 0.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}

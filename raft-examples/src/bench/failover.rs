//! `bench failover`: under a steady write load, kill the leader with SIGKILL and time
//! how long until a write sent after the kill succeeds; restart the node and repeat.

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::load::{Load, LoadConfig};
use super::results::median;
use super::target::{Target, Workload};
use super::{block_on, SetupArgs};

/// Options of `bench failover`.
#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    /// The system to measure.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Leader kills.
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

async fn rounds(args: &FailoverArgs) -> Result<Vec<f64>, String> {
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
    for round in 1..=args.rounds.max(1) {
        // Every node runs again (the last victim has restarted); let the load settle.
        cluster.wait_ready(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
        let leader = cluster.wait_ready(Duration::from_secs(30)).await?;
        let before = load.counters().ops();
        if before == 0 {
            return Err(format!("{}: no write succeeded before the kill", args.target));
        }
        let killed_at = cluster.kill_signal(leader)?;
        load.mark_at(killed_at);
        let deadline = Instant::now() + Duration::from_secs(60);
        let took = loop {
            if let Some(d) = load.first_ok_since_mark() {
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
        cluster.restart(leader)?;
    }
    let _ = load.finish().await?;
    cluster.stop();
    Ok(times)
}

/// `bench failover`.
pub fn run_failover(args: &FailoverArgs) -> Result<(), String> {
    let times = block_on(args.setup.client_threads, rounds(args))?;
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    let max = times.iter().copied().fold(0.0, f64::max);
    println!(
        "failover {}: {} rounds, {} writing clients: leader killed to first successful write p50 {p50:.0} ms, \
         p99 {p99:.0} ms, max {max:.0} ms (median {:.0} ms)",
        args.target,
        times.len(),
        args.clients,
        median(&times)
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "target": args.target.name(), "rounds": times.len(), "clients": args.clients,
                "failover_p50_ms": p50, "failover_p99_ms": p99, "failover_max_ms": max, "failover_ms": times,
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

//! `bench soak`: a `kv` cluster under a steady mixed load with a fault at a fixed
//! interval, for a given duration. It reports, at the end:
//!
//! - lost acknowledged writes (must be 0): audit writers cycle through keys no one else
//!   writes, and every key is read back against what was acknowledged (`audit.rs`);
//! - linearizability of sampled windows: at every `--check-every`, clients run for
//!   `--check-window` on keys of their own and the history is checked (`history.rs`);
//! - peak resident memory of the nodes and the size of their data directories over time
//!   (bounded with snapshots on: in a run of five minutes or more, the second half's
//!   largest must not exceed the first half's by more than a quarter);
//! - throughput over time, printed each minute and drawn as an SVG chart (`chart.rs`).
//!
//! The faults rotate in an order drawn from `--seed`: SIGKILL of the leader or of a
//! follower (restarted two seconds later), SIGSTOP of a node for three seconds, a
//! graceful restart (SIGTERM), a leadership transfer and, where nftables can be used
//! (root, `nft` installed; else the soak says so and goes on without), the leader cut
//! off from the others for five seconds and a bridge (two nodes cut from each other for
//! five seconds, both reaching the third); before each, the cluster must be ready again
//! (one leader every node knows) within 30 s.

mod audit;
mod chart;
mod history;
mod http;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raft_examples::launch::firewall::Firewall;

use super::load::{Load, LoadConfig};
use super::nodes::{parse_status_kib, Cluster};
use super::target::{Target, Workload};
use super::{block_on, SetupArgs};

/// Options of `bench soak`.
#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// Seconds to run.
    #[arg(long, default_value_t = 1800.0)]
    pub duration: f64,
    /// Seconds between faults (0: no faults).
    #[arg(long, default_value_t = 30.0)]
    pub fault_every: f64,
    /// Clients of the mixed load (half writes, half linearizable reads).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Bytes per value of the load.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Keys of the load.
    #[arg(long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Writers of the lost-write audit.
    #[arg(long, default_value_t = 2)]
    pub audit_writers: usize,
    /// Seconds between the starts of two linearizability windows.
    #[arg(long, default_value_t = 300.0)]
    pub check_every: f64,
    /// Seconds each linearizability window lasts.
    #[arg(long, default_value_t = 20.0)]
    pub check_window: f64,
    /// Seconds between two samples of throughput, memory and disk use.
    #[arg(long, default_value_t = 5.0)]
    pub sample_every: f64,
    /// The nodes' snapshot threshold in entries (`--snapshot-after-entries`), so that
    /// the run compacts many times.
    #[arg(long, default_value_t = 50_000)]
    pub snapshot_after_entries: u64,
    /// The seed of the fault order and of the checked clients.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the throughput chart goes.
    #[arg(long, default_value = "soak.svg")]
    pub svg: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub setup: SetupArgs,
    /// Print a JSON object of the figures as the last line.
    #[arg(long)]
    pub json: bool,
}

/// The shortest run whose disk use is judged: a shorter one may not have compacted a
/// whole log segment yet.
const MIN_SECONDS_FOR_BOUNDS: f64 = 300.0;

/// One sample of the run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the load started.
    pub at: f64,
    /// Successful load operations per second since the previous sample.
    pub ops_per_sec: f64,
    /// Failed load operations since the previous sample.
    pub errors: u64,
    /// The largest resident memory of a node, in MiB.
    pub max_rss_mib: f64,
    /// The largest data directory of a node, in MiB.
    pub max_dir_mib: f64,
}

/// A fault of the rotation.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    KillFollower,
    Pause,
    GracefulRestart,
    Transfer,
    IsolateLeader,
    Bridge,
}

/// Runs the soak; an error if a write was lost, a window was not linearizable, the
/// disk use grew without bound or the cluster did not recover from a fault.
pub fn run_soak(args: &SoakArgs) -> Result<(), String> {
    block_on(args.setup.client_threads.max(2), soak(args))
}

/// The total size of the files under `dir`, in bytes.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Resident memory (VmRSS) of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    parse_status_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmRSS")
}

/// Takes a sample: memory and disk of every node, and the load's rate since `prev`.
fn sample(cluster: &Cluster, load: &Load, started: Instant, prev: &mut (Instant, u64, u64)) -> Sample {
    let (now, ops, errors) = (Instant::now(), load.counters().ops(), load.counters().errors());
    let secs = now.duration_since(prev.0).as_secs_f64().max(1e-9);
    let s = Sample {
        at: now.duration_since(started).as_secs_f64(),
        ops_per_sec: ops.saturating_sub(prev.1) as f64 / secs,
        errors: errors.saturating_sub(prev.2),
        max_rss_mib: cluster.pids().into_iter().flatten().filter_map(rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        max_dir_mib: cluster.data_dirs().iter().map(|d| dir_size(d)).max().unwrap_or(0) as f64 / 1048576.0,
    };
    *prev = (now, ops, errors);
    s
}

/// Cuts `cut` (both ways) for five seconds, then heals.
async fn cut_for_a_while(fw: Option<&Firewall>, cut: &[(std::net::IpAddr, std::net::IpAddr)]) -> Result<(), String> {
    let fw = fw.ok_or("a partition without a firewall")?;
    for &(a, b) in cut {
        fw.cut(a, b)?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    fw.heal()
}

/// Applies `fault` and undoes it; returns what it did.
async fn strike(cluster: &mut Cluster, fw: Option<&Firewall>, fault: Fault, pick: u64) -> Result<String, String> {
    let leader = cluster.wait_ready(Duration::from_secs(30)).await?;
    let n = cluster.http_endpoints().len();
    let follower = (leader + 1 + (pick as usize % (n - 1).max(1))) % n;
    let any = pick as usize % n;
    Ok(match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let i = if matches!(fault, Fault::KillLeader) { leader } else { follower };
            cluster.kill(i);
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.restart(i)?;
            format!("SIGKILL node {} ({}), restarted", i + 1, if i == leader { "leader" } else { "follower" })
        }
        Fault::Pause => {
            cluster.pause(any)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            cluster.resume(any)?;
            format!("SIGSTOP node {} for 3 s", any + 1)
        }
        Fault::GracefulRestart => {
            cluster.restart_gracefully(any, Duration::from_secs(30))?;
            format!("SIGTERM node {}, restarted", any + 1)
        }
        Fault::Transfer => {
            let to = (leader + 1) % n;
            super::failover::transfer(cluster, leader, to).await?;
            format!("leadership moved from node {} to node {}", leader + 1, to + 1)
        }
        Fault::IsolateLeader | Fault::Bridge => {
            let ips: Vec<_> = cluster
                .addresses()
                .into_iter()
                .map(|a| a.ok_or("a node without an address"))
                .collect::<Result<_, _>>()?;
            if matches!(fault, Fault::IsolateLeader) {
                let cut: Vec<_> = (0..n).filter(|&i| i != leader).map(|i| (ips[leader], ips[i])).collect();
                cut_for_a_while(fw, &cut).await?;
                format!("leader node {} cut off from the others for 5 s", leader + 1)
            } else {
                cut_for_a_while(fw, &[(ips[leader], ips[follower])]).await?;
                format!(
                    "nodes {} (leader) and {} cut from each other for 5 s, the others see both",
                    leader + 1,
                    follower + 1
                )
            }
        }
    })
}

/// What the run found.
struct Findings {
    samples: Vec<Sample>,
    faults: Vec<(f64, String)>,
    windows: Vec<(f64, history::Window)>,
    audit: audit::AuditResult,
    peak_hwm_mib: f64,
    last_error: Option<String>,
}

async fn soak(args: &SoakArgs) -> Result<(), String> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    eprintln!("soak: seed {seed} (--seed {seed} replays the fault order, not the timing)");
    let mut setup = args.setup.clone();
    setup.kv_args.push(format!("--snapshot-after-entries={}", args.snapshot_after_entries));
    let mut options = setup.options();
    let firewall = match Firewall::new() {
        Ok(fw) => {
            options.own_addresses = Some([fastrand::u8(100..=250), fastrand::u8(1..=254)]);
            Some(fw)
        }
        Err(e) => {
            eprintln!("soak: no network partitions: {e}");
            None
        }
    };
    let mut cluster = Cluster::start(Target::Kv, &options)?;
    cluster.wait_ready(Duration::from_secs(30)).await?;
    let findings = run(args, seed, &mut cluster, firewall.as_ref()).await;
    cluster.stop();
    let findings = findings?;
    report(args, &findings)
}

async fn run(args: &SoakArgs, seed: u64, cluster: &mut Cluster, fw: Option<&Firewall>) -> Result<Findings, String> {
    let endpoints = cluster.http_endpoints();
    let cfg = LoadConfig {
        target: Target::Kv,
        endpoints: endpoints.clone(),
        clients: args.clients.max(1),
        workload: Workload::Mixed,
        value_size: args.value_size,
        keyspace: args.keyspace.max(1),
        request_timeout: Duration::from_secs(5),
    };
    // Every key of the load exists before it starts: its reads find values.
    super::load::populate(&cfg, 64).await.map_err(|e| format!("writing the keys failed: {e}"))?;
    let load = Load::start(&cfg);
    let audit = audit::Audit::start(endpoints.clone(), args.audit_writers.max(1));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut order = vec![Fault::KillLeader, Fault::KillFollower, Fault::Pause, Fault::GracefulRestart, Fault::Transfer];
    if fw.is_some() {
        order.extend([Fault::IsolateLeader, Fault::Bridge]);
    }
    rng.shuffle(&mut order);
    let (mut samples, mut faults, mut windows) = (Vec::new(), Vec::new(), Vec::new());
    let mut prev = (started, 0, 0);
    let (mut next_sample, mut next_fault, mut next_check) = (started, started, started);
    let every = |secs: f64| Duration::from_secs_f64(secs.max(0.1));
    let mut check: Option<(f64, tokio::task::JoinHandle<history::Window>)> = None;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let s = sample(cluster, &load, started, &mut prev);
            if samples.len() % ((60.0 / args.sample_every.max(0.1)).round() as usize).max(1) == 0 {
                eprintln!(
                    "soak: {:>6.0} s  {:>8.0} ops/s  {:>5} errors  rss {:>6.1} MiB  data {:>7.1} MiB  audit {} acked",
                    s.at,
                    s.ops_per_sec,
                    s.errors,
                    s.max_rss_mib,
                    s.max_dir_mib,
                    audit.acked()
                );
            }
            samples.push(s);
            next_sample += every(args.sample_every);
        }
        if now >= next_check && check.is_none() {
            let (at, tag) = (now.duration_since(started).as_secs_f64(), format!("lin-{}", windows.len()));
            let (e, length, s) = (endpoints.clone(), every(args.check_window), rng.u64(..));
            check = Some((at, tokio::spawn(async move { history::window(&e, &tag, 4, length, s).await })));
            next_check += every(args.check_every);
        }
        if check.as_ref().is_some_and(|(_, h)| h.is_finished()) {
            let (at, h) = check.take().expect("a window");
            windows.push((at, h.await.map_err(|e| format!("the checked clients failed: {e}"))?));
        }
        if args.fault_every > 0.0 && now >= next_fault && now > started + Duration::from_secs(5) {
            let fault = order[faults.len() % order.len()];
            let what = strike(cluster, fw, fault, rng.u64(..)).await?;
            let at = now.duration_since(started).as_secs_f64();
            eprintln!("soak: {at:>6.0} s  fault: {what}");
            faults.push((at, what));
            next_fault = now + every(args.fault_every);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some((at, h)) = check.take() {
        windows.push((at, h.await.map_err(|e| format!("the checked clients failed: {e}"))?));
    }
    let last_error = load.counters().last_error();
    let _ = load.finish().await;
    cluster.wait_ready(Duration::from_secs(30)).await?;
    let peak_hwm_mib = cluster.peak_rss_kib().into_iter().flatten().max().unwrap_or(0) as f64 / 1024.0;
    let audit = audit.stop_and_verify(&endpoints).await;
    Ok(Findings { samples, faults, windows, audit, peak_hwm_mib, last_error })
}

/// The largest data directory in the samples whose time is in `from..to` (seconds).
fn max_dir(samples: &[Sample], from: f64, to: f64) -> f64 {
    samples.iter().filter(|s| s.at >= from && s.at < to).map(|s| s.max_dir_mib).fold(0.0, f64::max)
}

/// Prints the summary, draws the chart, and fails on a lost write, a window that is not
/// linearizable or disk use that kept growing.
fn report(args: &SoakArgs, f: &Findings) -> Result<(), String> {
    let mut problems = Vec::new();
    let total = f.samples.last().map_or(0.0, |s| s.at);
    let rates: Vec<f64> = f.samples.iter().skip(1).map(|s| s.ops_per_sec).collect();
    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let lowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let errors: u64 = f.samples.iter().map(|s| s.errors).sum();
    println!("soak: {total:.0} s, {} faults, {} samples", f.faults.len(), f.samples.len());
    println!("throughput: mean {mean:.0} ops/s, lowest sample {lowest:.0} ops/s, {errors} failed load operations");
    if let Some(e) = &f.last_error {
        println!("  the last failed load operation: {e}");
    }
    println!(
        "lost-write audit: {} writes sent, {} acknowledged, {} keys read back, {} lost",
        f.audit.attempts,
        f.audit.acked,
        f.audit.keys,
        f.audit.lost.len()
    );
    for l in f.audit.lost.iter().take(20) {
        println!("  lost: {l}");
        problems.push(format!("lost write: {l}"));
    }
    for (at, w) in &f.windows {
        println!("linearizability window at {at:.0} s: {} operations ({} unknown): {}", w.ops, w.unknown, w.verdict);
        if !w.verdict.is_linearizable() {
            problems.push(format!("the window at {at:.0} s is {}", w.verdict));
        }
    }
    let peak_rss = f.samples.iter().map(|s| s.max_rss_mib).fold(f.peak_hwm_mib, f64::max);
    let (first, second) = (max_dir(&f.samples, 0.0, total / 2.0), max_dir(&f.samples, total / 2.0, f64::MAX));
    println!("peak RSS of a node: {peak_rss:.1} MiB");
    println!("largest data directory: {first:.1} MiB in the first half, {second:.1} MiB in the second");
    if total < MIN_SECONDS_FOR_BOUNDS {
        println!("(a run under {MIN_SECONDS_FOR_BOUNDS:.0} s is too short to judge whether disk use stays bounded)");
    } else if second > first * 1.25 {
        problems.push(format!("disk use kept growing: {first:.1} MiB then {second:.1} MiB"));
    }
    chart::draw(&args.svg, &f.samples, &f.faults)?;
    println!("chart: {}", args.svg.display());
    if args.json {
        let windows: Vec<_> = f
            .windows
            .iter()
            .map(|(at, w)| serde_json::json!({"at_s": at, "ops": w.ops, "unknown": w.unknown, "linearizable": w.verdict.is_linearizable()}))
            .collect();
        let json = serde_json::json!({
            "seconds": total,
            "faults": f.faults.len(),
            "mean_ops_per_sec": mean,
            "lowest_ops_per_sec": lowest,
            "failed_load_ops": errors,
            "audit_sent": f.audit.attempts,
            "audit_acked": f.audit.acked,
            "lost_writes": f.audit.lost.len(),
            "windows": windows,
            "peak_rss_mib": peak_rss,
            "data_dir_mib_first_half": first,
            "data_dir_mib_second_half": second,
        });
        println!("{json}");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

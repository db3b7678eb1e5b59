//! Cluster benchmarks: our `kv` app and etcd, each as a real cluster on loopback (3 nodes
//! unless `--nodes` says otherwise) with durable storage, driven over HTTP by the same
//! load generator.
//!
//! The `bench` binary's `cluster`, `compare`, `failover` and `report` subcommands call
//! the `run_*` functions here; the parts ([`load`], [`nodes`], [`target`], [`results`],
//! [`server`], [`plot`], [`progress`], [`http_client`]) are usable on their own.
//!
//! Besides the clients' throughput and latencies, a run reports the leader's own
//! latencies over the measured window ([`server`]): its `/metrics` is scraped just before
//! and just after the window, and the difference of the two scrapes of each histogram
//! gives its p50 and p99 (log write and commit for `kv`, WAL fsync for etcd).

pub mod failover;
pub mod http_client;
pub mod load;
pub mod nodes;
pub mod plot;
pub mod progress;
pub mod results;
pub mod server;
pub mod soak;
pub mod target;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use load::{Load, LoadConfig};
use nodes::{Cluster, ClusterOptions};
use progress::Progress;
use results::{aggregate, markdown_table, ratios, RunResult};
use target::{Target, Workload};

/// How the clients load a cluster (shared by `cluster`, `compare` and `report`).
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Concurrent clients, each with its own connection and one request outstanding.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    pub workload: Workload,
    /// Number of distinct keys (written before measuring for every load that reads).
    #[arg(long, default_value_t = 10_000)]
    pub keyspace: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds before a request without an answer counts as an error.
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout: f64,
}

/// Where the programs are and where their data goes.
#[derive(clap::Args, Clone, Debug)]
pub struct SetupArgs {
    /// Nodes per cluster (the comparisons in docs/performance.md use 3; 1 measures a
    /// node with no replication at all).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nodes: u16,
    /// The `kv` binary (default: `kv` next to this executable).
    #[arg(long)]
    pub kv_bin: Option<PathBuf>,
    /// The etcd binary (default: `etcd` on PATH; see scripts/install-bench-deps.sh).
    #[arg(long)]
    pub etcd_bin: Option<PathBuf>,
    /// Directory for the nodes' temporary data directories (default: the system's temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Worker threads of the load generator's tokio runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// An extra argument for every `kv` node (repeatable), e.g.
    /// `--kv-arg=--snapshot-after-entries=50000`.
    #[arg(long = "kv-arg", allow_hyphen_values = true)]
    pub kv_args: Vec<String>,
    /// The `kv` nodes talk mutual TLS 1.3 to each other (throwaway certificates; the
    /// HTTP API stays plaintext, so the figures are the cost of TLS between members).
    /// With `compare`: kv with TLS against kv in plaintext instead of kv against etcd.
    #[arg(long)]
    pub tls: bool,
}

impl Default for SetupArgs {
    /// The command line's defaults.
    fn default() -> Self {
        SetupArgs {
            nodes: 3,
            kv_bin: None,
            etcd_bin: None,
            dir: None,
            client_threads: 1,
            kv_args: Vec::new(),
            tls: false,
        }
    }
}

impl SetupArgs {
    fn options(&self) -> ClusterOptions {
        ClusterOptions {
            nodes: usize::from(self.nodes),
            kv_bin: self.kv_bin.clone(),
            etcd_bin: self.etcd_bin.clone(),
            dir: self.dir.clone(),
            kv_args: self.kv_args.clone(),
            tls: self.tls,
            own_addresses: None,
        }
    }
}

/// `bench cluster`: one target, one load.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// The system to start and measure.
    #[arg(long, value_enum)]
    pub target: Target,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub load: LoadArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub setup: SetupArgs,
    /// Print a JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// `bench compare`: kv and etcd in turn, several rounds.
#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub load: LoadArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub setup: SetupArgs,
    /// Rounds; each runs both systems, the order alternating between rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print a JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// `bench report`: a sweep over client counts for both systems, with SVG charts.
#[derive(clap::Args, Clone, Debug)]
pub struct ReportArgs {
    /// Directory for the charts and the raw results (bench-*.svg, bench-results.json).
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
    /// Client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256,1024")]
    pub clients: Vec<usize>,
    /// Workloads to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "write,read")]
    pub workloads: Vec<Workload>,
    /// Systems to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kv,etcd")]
    pub targets: Vec<Target>,
    /// Measured seconds per point.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Rounds per point (figures are medians over rounds).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Bytes per written value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Do not measure: draw the charts and the table from a saved bench-results.json.
    #[arg(long)]
    pub from: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub setup: SetupArgs,
}

/// Runs `work` on a tokio runtime with `threads` workers; Ctrl-C drops it (which
/// stops every process it started) and fails.
pub fn block_on<T>(threads: usize, work: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    rt.block_on(async {
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        }
    })
}

/// Writes back the page cache, starts a cluster of `target`, loads it as `load` says,
/// stops it, and returns the figures.
pub async fn measure(target: Target, load: &LoadArgs, setup: &SetupArgs) -> Result<RunResult, String> {
    // Write back what earlier runs left in the page cache (the other system's data, in
    // `compare` and `report`), so that it does not share the disk with this run.
    nix::unistd::sync();
    let mut cluster = Cluster::start(target, &setup.options())?;
    cluster.wait_ready(Duration::from_secs(30)).await?;
    let cfg = LoadConfig {
        target,
        endpoints: cluster.http_endpoints(),
        clients: load.clients.max(1),
        workload: load.workload,
        value_size: load.value_size,
        keyspace: load.keyspace.max(1),
        request_timeout: Duration::from_secs_f64(load.request_timeout),
    };
    if load.workload.needs_data() {
        load::populate(&cfg, 64).await.map_err(|e| format!("{target}: writing the keys failed: {e}"))?;
    }
    let mut running = Load::start(&cfg);
    let tls = if setup.tls { " (TLS)" } else { "" };
    let label = format!("{target}{tls} {} {} clients", load.workload, cfg.clients);
    let total = Duration::from_secs_f64(load.warmup + load.duration);
    let progress = Progress::start(label, total, running.counters());
    tokio::time::sleep(Duration::from_secs_f64(load.warmup)).await;
    // The leader's histograms just before and just after the window.
    let before = match cluster.leader().await {
        Some(i) => cluster.scrape(i).await.map(|s| (i, s)),
        None => Err("no node says it leads".to_string()),
    };
    running.begin_measuring();
    let counters = running.counters();
    tokio::time::sleep(Duration::from_secs_f64(load.duration)).await;
    // Memory is read before the clients stop, while every node still runs.
    let rss = cluster.peak_rss_kib();
    let server = match before {
        Ok((i, before)) => match cluster.scrape(i).await {
            Ok(after) => server::between(target, &before, &after),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let alive = cluster.check_alive();
    let outcome = running.finish().await?;
    drop(progress);
    cluster.stop();
    alive?;
    if outcome.hist.is_empty() {
        let last = counters.last_error().unwrap_or_else(|| "none".into());
        return Err(format!("{target}: no operation succeeded ({} errors, last: {last})", outcome.errors));
    }
    if outcome.errors > 0 {
        if let Some(e) = counters.last_error() {
            eprintln!("{target}: {} errors, last: {e}", outcome.errors);
        }
    }
    let mut result = RunResult::from_histogram(
        target,
        load.workload,
        cfg.clients,
        load.value_size,
        outcome.measured.as_secs_f64(),
        &outcome.hist,
        outcome.errors,
        rss.into_iter().map(Option::unwrap_or_default).collect(),
    );
    match server {
        Ok(s) => result.server = s,
        Err(e) => eprintln!("{target}: no server-side latencies from the leader's /metrics: {e}"),
    }
    Ok(result)
}

/// Prints `r`'s line after `prefix`, and its server-side line if it has one.
fn print_result(prefix: &str, r: &RunResult) {
    println!("{prefix}{}", r.line());
    if let Some(server) = r.server_line() {
        println!("{prefix}{server}");
    }
}

/// `bench cluster`.
pub fn run_cluster(args: &ClusterArgs) -> Result<(), String> {
    let r = block_on(args.setup.client_threads, measure(args.target, &args.load, &args.setup))?;
    print_result("cluster ", &r);
    if args.json {
        println!("{}", r.to_json());
    }
    Ok(())
}

/// `bench compare --tls`: kv with TLS between the nodes against kv in plaintext, in
/// alternating rounds.
fn run_compare_tls(args: &CompareArgs) -> Result<(), String> {
    let rounds = args.rounds.max(1);
    let (tls_setup, plain_setup) = (args.setup.clone(), SetupArgs { tls: false, ..args.setup.clone() });
    let (tls, plain) = block_on(args.setup.client_threads, async {
        let (mut tls, mut plain) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            for with_tls in order {
                let setup = if with_tls { &tls_setup } else { &plain_setup };
                let r = measure(Target::Kv, &args.load, setup).await?;
                let what = if with_tls { "TLS" } else { "plaintext" };
                print_result(&format!("round {} ({what}): ", round + 1), &r);
                if with_tls { &mut tls } else { &mut plain }.push(r);
            }
        }
        Ok((tls, plain))
    })?;
    let (tls_median, plain_median) = (&aggregate(&tls)[0], &aggregate(&plain)[0]);
    let ratio = ratios(tls_median, plain_median);
    print_result(&format!("median of {rounds} rounds (TLS): "), tls_median);
    print_result(&format!("median of {rounds} rounds (plaintext): "), plain_median);
    let p50_cost = tls_median.p50_us as i64 - plain_median.p50_us as i64;
    println!(
        "TLS/plaintext: throughput {:.2}x ({:+.1}%), p50 latency {:.2}x ({p50_cost:+} µs), p99 latency {:.2}x",
        ratio.ops,
        (ratio.ops - 1.0) * 100.0,
        ratio.p50,
        ratio.p99
    );
    if args.json {
        let v = serde_json::json!({
            "ratio_ops": ratio.ops, "ratio_p50": ratio.p50, "ratio_p99": ratio.p99, "p50_cost_us": p50_cost,
            "tls": tls_median.to_json(), "plaintext": plain_median.to_json(),
            "rounds_tls": tls.iter().map(RunResult::to_json).collect::<Vec<_>>(),
            "rounds_plaintext": plain.iter().map(RunResult::to_json).collect::<Vec<_>>(),
        });
        println!("{v}");
    }
    Ok(())
}

/// `bench compare` (kv against etcd; with `--tls`, kv with TLS against kv in plaintext).
pub fn run_compare(args: &CompareArgs) -> Result<(), String> {
    if args.setup.tls {
        return run_compare_tls(args);
    }
    let rounds = args.rounds.max(1);
    let all = block_on(args.setup.client_threads, async {
        let mut all = Vec::new();
        for round in 0..rounds {
            let order = if round % 2 == 0 { [Target::Kv, Target::Etcd] } else { [Target::Etcd, Target::Kv] };
            for t in order {
                let r = measure(t, &args.load, &args.setup).await?;
                print_result(&format!("round {}: ", round + 1), &r);
                all.push(r);
            }
        }
        Ok(all)
    })?;
    let agg = aggregate(&all);
    let (kv, etcd) = (&agg[0], &agg[1]);
    let ratio = ratios(kv, etcd);
    print_result(&format!("median of {rounds} rounds: "), kv);
    print_result(&format!("median of {rounds} rounds: "), etcd);
    println!(
        "kv/etcd: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x, peak memory {:.2}x",
        ratio.ops, ratio.p50, ratio.p99, ratio.rss
    );
    if args.json {
        let v = serde_json::json!({
            "ratio_ops": ratio.ops, "ratio_p50": ratio.p50, "ratio_p99": ratio.p99, "ratio_rss": ratio.rss,
            "kv": kv.to_json(), "etcd": etcd.to_json(),
            "rounds": all.iter().map(RunResult::to_json).collect::<Vec<_>>(),
        });
        println!("{v}");
    }
    Ok(())
}

/// `bench report`.
pub fn run_report(args: &ReportArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let results = match &args.from {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let arr = v.as_array().ok_or("expected a JSON array of results")?;
            arr.iter().map(RunResult::from_json).collect::<Result<Vec<_>, _>>()?
        }
        None => {
            let results = block_on(args.setup.client_threads, async {
                let mut all = Vec::new();
                for &w in &args.workloads {
                    for &c in &args.clients {
                        for round in 0..args.rounds.max(1) {
                            let mut order = args.targets.clone();
                            if round % 2 == 1 {
                                order.reverse();
                            }
                            for t in order {
                                let load = LoadArgs {
                                    clients: c,
                                    duration: args.duration,
                                    value_size: args.value_size,
                                    workload: w,
                                    keyspace: 10_000,
                                    warmup: 1.0,
                                    request_timeout: 10.0,
                                };
                                let r = measure(t, &load, &args.setup).await?;
                                eprintln!("{}", r.line());
                                if let Some(server) = r.server_line() {
                                    eprintln!("{server}");
                                }
                                all.push(r);
                            }
                        }
                    }
                }
                Ok(all)
            })?;
            let path = args.out.join("bench-results.json");
            let json = serde_json::Value::Array(results.iter().map(RunResult::to_json).collect());
            std::fs::write(&path, format!("{json:#}\n"))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            results
        }
    };
    let value_kib = results.first().map(|r| r.value_size as f64 / 1024.0).unwrap_or(1.0);
    let nodes = args.setup.nodes;
    let throughput = args.out.join("bench-throughput.svg");
    plot::throughput_chart(
        &results,
        &throughput,
        &format!("{nodes} nodes on loopback, fsync on, {value_kib} KiB values: throughput"),
    )?;
    let mut written = vec![throughput];
    for w in Workload::ALL {
        if results.iter().any(|r| r.workload == w) {
            let path = args.out.join(format!("bench-latency-{w}.svg"));
            plot::latency_chart(
                &results,
                w,
                &path,
                &format!("{w} latency, {nodes} nodes, fsync on, {value_kib} KiB values"),
            )?;
            written.push(path);
        }
    }
    print!("{}", markdown_table(&results));
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Setup {
        #[command(flatten)]
        setup: SetupArgs,
    }

    #[test]
    fn setup_defaults_match_the_command_line_and_bad_node_counts_are_refused() {
        let parsed = Setup::try_parse_from(["bench"]).unwrap().setup;
        let default = SetupArgs::default();
        assert_eq!((parsed.nodes, parsed.client_threads), (default.nodes, default.client_threads));
        assert_eq!(default.options().nodes, 3);
        assert_eq!(Setup::try_parse_from(["bench", "--nodes", "1"]).unwrap().setup.options().nodes, 1);
        assert!(Setup::try_parse_from(["bench", "--nodes", "0"]).is_err());
        assert!(Setup::try_parse_from(["bench", "--nodes", "10"]).is_err());
    }
}

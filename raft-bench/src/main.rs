//! Benchmarks.
//!
//! `bench inproc --nodes 3 --clients N --duration SECS [--json]`: a cluster of real
//! `Raft` nodes in one process on tokio, with the in-memory store and network; N
//! clients propose empty commands in a loop. Prints writes/s and latency percentiles.
//!
//! `bench net --payload BYTES --duration SECS [--tls] [--json]`: AppendEntries-shaped messages
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
//! each node's peak memory, and the leader's own p50/p99 of log writes and commits (etcd:
//! WAL fsyncs) over the run, from its `/metrics` histograms. `bench compare` runs both in alternating rounds and prints
//! the ratios; `--tls` runs the kv nodes with mutual TLS between them, and `compare
//! --tls` alternates kv with TLS and kv in plaintext instead; `bench failover --target kv|etcd --rounds N` times leader loss to the
//! next successful write; `bench report --out DIR` sweeps client counts for both and
//! draws SVG charts. See the `raft_bench` library.
//!
//! `bench snapshot --writes N --value-size BYTES [--parts restart,install]`: restart of a
//! node from a snapshot against a full log replay, and InstallSnapshot between `kv`
//! processes against raw loopback TCP with the receiver's peak memory.

use std::time::Duration;

use clap::{Parser, Subcommand};
use raft_bench::{cluster, floor};

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
        /// Each client proposes in a client session of its own.
        #[arg(long)]
        sessions: bool,
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
        /// Also measure with mutual TLS: throughput, and round trips against plaintext.
        #[arg(long)]
        tls: bool,
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
    Cluster(cluster::ClusterArgs),
    /// kv against etcd, alternating rounds; prints the ratios.
    Compare(cluster::CompareArgs),
    /// Time from killing the leader to the next successful write.
    Failover(cluster::failover::FailoverArgs),
    /// Sweep over client counts for both systems; markdown table and SVG charts.
    Report(cluster::ReportArgs),
    /// The machine's floor under one replicated write: loopback round trips and
    /// concurrent fdatasync latency, without Raft.
    Floor(floor::FloorArgs),
    /// The dns app: dnsperf queries against NSD, registrations against etcd puts.
    Dns(raft_bench::dns::DnsArgs),
    /// Snapshots: restart from one against a log replay, InstallSnapshot against raw TCP.
    Snapshot(raft_bench::snapshot::SnapshotArgs),
    /// A kv cluster under steady mixed load with periodic faults for a long time: lost
    /// acknowledged writes, sampled linearizability, memory and disk over time, a chart.
    Soak(cluster::soak::SoakArgs),
}

fn main() {
    let cli = Cli::parse();
    let cluster_result = match &cli.cmd {
        Cmd::Cluster(args) => Some(raft_bench::cluster::run_cluster(args)),
        Cmd::Compare(args) => Some(raft_bench::cluster::run_compare(args)),
        Cmd::Failover(args) => Some(raft_bench::cluster::failover::run_failover(args)),
        Cmd::Report(args) => Some(raft_bench::cluster::run_report(args)),
        Cmd::Dns(args) => Some(raft_bench::dns::run_dns(args)),
        Cmd::Floor(args) => Some(raft_bench::floor::run_floor(args)),
        Cmd::Snapshot(args) => Some(raft_bench::snapshot::run_snapshot(args)),
        Cmd::Soak(args) => Some(raft_bench::cluster::soak::run_soak(args)),
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
        Cmd::Cluster(_)
        | Cmd::Compare(_)
        | Cmd::Failover(_)
        | Cmd::Report(_)
        | Cmd::Floor(_)
        | Cmd::Dns(_)
        | Cmd::Snapshot(_)
        | Cmd::Soak(_) => {}
        Cmd::Net { payload, duration, tls, json } => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start tokio: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = rt.block_on(raft_bench::net::run(payload, Duration::from_secs_f64(duration), tls, json)) {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Store { entry_size, batch, duration, dir, skip_open, json } => {
            if let Err(e) = raft_bench::store::run(
                entry_size,
                batch.max(1),
                Duration::from_secs_f64(duration),
                dir,
                skip_open,
                json,
            ) {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Inproc { nodes, clients, duration, threads, sessions, json } => {
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
            if let Err(e) =
                rt.block_on(raft_bench::inproc::run(nodes, clients, Duration::from_secs_f64(duration), sessions, json))
            {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

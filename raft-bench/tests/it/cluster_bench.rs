//! `bench cluster` and `bench failover` end to end against real clusters of our `kv` app
//! (3 nodes, and one single node) and of etcd.
//!
//! The etcd tests need etcd on PATH (`scripts/install-bench-deps.sh`); without it they
//! print why and pass without running.

use std::process::Command;

use crate::kv_bin;

/// Runs `bench` with `args`: whether it succeeded, its stdout and its stderr.
fn run_bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bench")).args(args).output().expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stdout, stderr)
}

/// Runs `bench` with `args`, which must succeed; its stdout and stderr.
fn bench(args: &[&str]) -> (String, String) {
    let (ok, stdout, stderr) = run_bench(args);
    assert!(ok, "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

fn etcd_installed() -> bool {
    if raft_bench::cluster::nodes::find_on_path("etcd").is_some() {
        return true;
    }
    eprintln!("skipped: etcd is not installed (run scripts/install-bench-deps.sh)");
    false
}

/// Checks the JSON line of `bench cluster` (a cluster of `nodes` nodes) and returns it.
fn check_cluster_json(stdout: &str, nodes: usize) -> serde_json::Value {
    let v = last_json(stdout);
    for key in ["ops_per_sec", "p50_us", "p99_us", "p999_us", "peak_rss_kib"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert!(v["ops_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    let rss = v["peak_rss_kib"].as_array().unwrap();
    assert_eq!(rss.len(), nodes, "one peak memory figure per node: {v}");
    assert!(rss.iter().all(|k| k.as_u64().unwrap() > 0), "{v}");
    v
}

/// Runs `bench cluster` against a kv cluster of `nodes` nodes with 8 clients over 200
/// keys and checks its JSON.
fn kv_cluster(workload: &str, duration: &str, nodes: usize) -> serde_json::Value {
    let nodes_arg = nodes.to_string();
    let (stdout, _) = bench(&[
        "cluster",
        "--target",
        "kv",
        "--kv-bin",
        kv_bin(),
        "--clients",
        "8",
        "--duration",
        duration,
        "--warmup",
        "0.5",
        "--workload",
        workload,
        "--keyspace",
        "200",
        "--nodes",
        &nodes_arg,
        "--json",
    ]);
    let v = check_cluster_json(&stdout, nodes);
    assert_eq!(
        (v["target"].as_str(), v["workload"].as_str(), v["clients"].as_u64()),
        (Some("kv"), Some(workload), Some(8))
    );
    assert_eq!(v["errors"].as_u64(), Some(0), "{v}");
    // The leader's own log writes and commits over the window, from its /metrics.
    let server = v["server"].as_array().unwrap_or_else(|| panic!("no server-side figures in {v}"));
    let labels: Vec<&str> = server.iter().filter_map(|s| s["label"].as_str()).collect();
    assert_eq!(labels, ["log write", "commit"], "{v}");
    if workload != "local-read" {
        for s in server {
            assert!(s["count"].as_u64() > Some(0) && s["p99_us"].as_f64() > Some(0.0), "{v}");
        }
    }
    let marked = format!("cluster kv {workload} server side (leader's /metrics histograms, power-of-two buckets");
    assert!(stdout.contains(&marked), "{stdout}");
    v
}

#[test]
fn cluster_bench_against_kv_reports_json_figures() {
    kv_cluster("mixed", "1.5", 3);
}

/// `--nodes 1`: one node, no replication, every client on it.
#[test]
fn cluster_bench_runs_a_single_node_kv() {
    let v = kv_cluster("write", "1", 1);
    assert!(v["ops"].as_u64().unwrap() > 0, "{v}");
}

/// Killing the leader of a one-node cluster leaves nothing to elect: refused up front.
#[test]
fn failover_bench_refuses_fewer_than_three_nodes() {
    let (ok, _, stderr) =
        run_bench(&["failover", "--target", "kv", "--kv-bin", kv_bin(), "--nodes", "1", "--rounds", "1"]);
    assert!(!ok);
    assert!(stderr.contains("at least 3 nodes"), "{stderr}");
}

/// Local reads: every node answers from its own replica, after the keys were written.
#[test]
fn cluster_bench_against_kv_serves_local_reads() {
    let v = kv_cluster("local-read", "1", 3);
    assert!(v["ops"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn failover_bench_against_kv_times_a_leader_kill() {
    let (stdout, _) = bench(&["failover", "--target", "kv", "--kv-bin", kv_bin(), "--rounds", "1", "--json"]);
    let v = last_json(&stdout);
    let p50 = v["failover_p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 60_000.0, "{v}");
}

#[test]
fn failover_bench_against_kv_measures_a_transfer_and_a_rolling_restart() {
    for (mode, rounds) in [("transfer", "2"), ("rolling", "1")] {
        let (stdout, stderr) =
            bench(&["failover", "--target", "kv", "--kv-bin", kv_bin(), "--mode", mode, "--rounds", rounds, "--json"]);
        let v = last_json(&stdout);
        assert_eq!(v["mode"], mode, "{v}");
        let gaps = v["gap_ms"].as_array().expect("gaps");
        assert_eq!(gaps.len(), rounds.parse::<usize>().unwrap(), "{v}");
        assert!(gaps.iter().all(|g| g.as_f64().is_some_and(|g| g > 0.0 && g < 60_000.0)), "{v}");
        if mode == "transfer" {
            assert_eq!(stderr.matches("leadership moved from node").count(), 2, "{stderr}");
        } else {
            assert!(stderr.contains("every node restarted in turn"), "{stderr}");
        }
    }
    let (ok, _, stderr) = run_bench(&["failover", "--target", "etcd", "--mode", "transfer", "--rounds", "1"]);
    assert!(!ok && stderr.contains("runs only kv"), "{stderr}");
}

#[test]
fn soak_bench_reports_no_lost_write_and_linearizable_windows_through_faults() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("soak.svg");
    let (stdout, stderr) = bench(&[
        "soak",
        "--kv-bin",
        kv_bin(),
        "--duration",
        "16",
        "--fault-every",
        "3",
        "--check-every",
        "8",
        "--check-window",
        "4",
        "--sample-every",
        "1",
        "--clients",
        "4",
        "--keyspace",
        "500",
        "--snapshot-after-entries",
        "2000",
        "--kv-arg=--log-segment-size=1048576",
        "--svg",
        svg.to_str().unwrap(),
        "--json",
    ]);
    let v = last_json(&stdout);
    assert!(v["faults"].as_u64().unwrap() >= 3, "{v}\n{stderr}");
    assert_eq!(stderr.matches("fault: ").count() as u64, v["faults"].as_u64().unwrap(), "{stderr}");
    assert_eq!(v["lost_writes"], 0, "{v}");
    assert!(v["audit_acked"].as_u64().unwrap() > 0, "{v}");
    let windows = v["windows"].as_array().unwrap();
    assert!(windows.len() >= 2 && windows.iter().all(|w| w["linearizable"] == true), "{v}");
    assert!(v["mean_ops_per_sec"].as_f64().unwrap() > 0.0 && v["peak_rss_mib"].as_f64().unwrap() > 0.0, "{v}");
    let chart = std::fs::read_to_string(&svg).expect("the chart");
    assert!(chart.starts_with("<svg") && chart.contains("kv soak"), "{}", &chart[..chart.len().min(200)]);
}

#[test]
fn cluster_bench_against_etcd_reports_json_figures() {
    if !etcd_installed() {
        return;
    }
    let (stdout, _) = bench(&[
        "cluster",
        "--target",
        "etcd",
        "--clients",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--workload",
        "mixed",
        "--keyspace",
        "100",
        "--json",
    ]);
    check_cluster_json(&stdout, 3);
}

#[test]
fn failover_bench_against_etcd_times_a_leader_kill() {
    if !etcd_installed() {
        return;
    }
    let (stdout, _) = bench(&["failover", "--target", "etcd", "--rounds", "1", "--clients", "4", "--json"]);
    let v = last_json(&stdout);
    let p50 = v["failover_p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 60_000.0, "{v}");
    assert!(v["failover_p99_ms"].as_f64().is_some(), "{v}");
}

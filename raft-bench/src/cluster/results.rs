//! One measurement's figures, their JSON form, medians over rounds and markdown tables.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::server::ServerLatency;
use super::target::{Target, Workload};

/// The figures of one run against one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// The system measured.
    pub target: Target,
    /// The operation mix.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// Bytes per written value.
    pub value_size: usize,
    /// Length of the measured window in seconds.
    pub seconds: f64,
    /// Successful operations in the window.
    pub ops: u64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Median latency in microseconds.
    pub p50_us: u64,
    /// 99th percentile latency in microseconds.
    pub p99_us: u64,
    /// 99.9th percentile latency in microseconds.
    pub p999_us: u64,
    /// Highest latency in microseconds.
    pub max_us: u64,
    /// Failed operations in the window.
    pub errors: u64,
    /// Peak resident memory of each node in KiB, in node order (0 where unknown).
    pub peak_rss_kib: Vec<u64>,
    /// What the leader's own histograms recorded during the window (see
    /// [`super::server`]); empty when its `/metrics` could not be read.
    pub server: Vec<ServerLatency>,
}

impl RunResult {
    /// Figures from a latency histogram (microseconds) over `seconds`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_histogram(
        target: Target,
        workload: Workload,
        clients: usize,
        value_size: usize,
        seconds: f64,
        hist: &Histogram<u64>,
        errors: u64,
        peak_rss_kib: Vec<u64>,
    ) -> RunResult {
        let ops = hist.len();
        let q = |x: f64| if ops == 0 { 0 } else { hist.value_at_quantile(x) };
        RunResult {
            target,
            workload,
            clients,
            value_size,
            seconds,
            ops,
            ops_per_sec: if seconds > 0.0 { ops as f64 / seconds } else { 0.0 },
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if ops == 0 { 0 } else { hist.max() },
            errors,
            peak_rss_kib,
            server: Vec::new(),
        }
    }

    /// The largest peak resident memory of any node, in KiB.
    pub fn max_rss_kib(&self) -> u64 {
        self.peak_rss_kib.iter().copied().max().unwrap_or(0)
    }

    /// One human-readable line.
    pub fn line(&self) -> String {
        let rss: Vec<String> = self.peak_rss_kib.iter().map(|k| format!("{:.0}", *k as f64 / 1024.0)).collect();
        format!(
            "{} {}: {} clients, {} B values, {:.1}s: {:.0} ops/s, latency p50 {} us, p99 {} us, p999 {} us, \
             max {} us, {} errors, peak RSS per node [{}] MiB",
            self.target,
            self.workload,
            self.clients,
            self.value_size,
            self.seconds,
            self.ops_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.errors,
            rss.join(", ")
        )
    }

    /// The server-side figures as one line, marked as estimates from the leader's
    /// histograms; `None` when there are none.
    pub fn server_line(&self) -> Option<String> {
        if self.server.is_empty() {
            return None;
        }
        let figures: Vec<String> = self.server.iter().map(ServerLatency::describe).collect();
        Some(format!(
            "{} {} server side (leader's /metrics histograms, power-of-two buckets, interpolated): {}",
            self.target,
            self.workload,
            figures.join("; ")
        ))
    }

    /// The JSON object printed with `--json`.
    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target.name(), "workload": self.workload.name(), "clients": self.clients,
            "value_size": self.value_size, "seconds": self.seconds, "ops": self.ops,
            "ops_per_sec": self.ops_per_sec, "p50_us": self.p50_us, "p99_us": self.p99_us,
            "p999_us": self.p999_us, "max_us": self.max_us, "errors": self.errors,
            "peak_rss_kib": self.peak_rss_kib,
            "server": self.server.iter().map(ServerLatency::to_json).collect::<Vec<_>>(),
        })
    }

    /// Reads what [`RunResult::to_json`] wrote.
    pub fn from_json(v: &Value) -> Result<RunResult, String> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| format!("missing {k}"));
        let f = |k: &str| v.get(k).and_then(Value::as_f64).ok_or_else(|| format!("missing {k}"));
        let s = |k: &str| v.get(k).and_then(Value::as_str).ok_or_else(|| format!("missing {k}"));
        Ok(RunResult {
            target: Target::from_name(s("target")?).ok_or("unknown target")?,
            workload: Workload::from_name(s("workload")?).ok_or("unknown workload")?,
            clients: u("clients")? as usize,
            value_size: u("value_size")? as usize,
            seconds: f("seconds")?,
            ops: u("ops")?,
            ops_per_sec: f("ops_per_sec")?,
            p50_us: u("p50_us")?,
            p99_us: u("p99_us")?,
            p999_us: u("p999_us")?,
            max_us: u("max_us")?,
            errors: u("errors")?,
            peak_rss_kib: v
                .get("peak_rss_kib")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
            // Results saved before the server-side figures have none.
            server: match v.get("server").and_then(Value::as_array) {
                Some(a) => a.iter().map(ServerLatency::from_json).collect::<Result<_, _>>()?,
                None => Vec::new(),
            },
        })
    }
}

/// The median of `xs` (mean of the two middle values for an even count); 0 when empty.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The server-side figures of several rounds: per label (in the first round's order),
/// the medians of the rounds that had samples, and the samples of all.
fn aggregate_server(rounds: &[&RunResult]) -> Vec<ServerLatency> {
    let mut labels: Vec<&str> = Vec::new();
    for r in rounds {
        for s in &r.server {
            if !labels.contains(&s.label.as_str()) {
                labels.push(&s.label);
            }
        }
    }
    labels
        .into_iter()
        .map(|label| {
            let each: Vec<&ServerLatency> =
                rounds.iter().flat_map(|r| r.server.iter().filter(|s| s.label == label)).collect();
            let m = |f: &dyn Fn(&ServerLatency) -> Option<f64>| {
                let xs: Vec<f64> = each.iter().filter_map(|s| f(s)).collect();
                (!xs.is_empty()).then(|| median(&xs))
            };
            ServerLatency {
                label: label.to_string(),
                count: each.iter().map(|s| s.count).sum(),
                p50_us: m(&|s| s.p50_us),
                p99_us: m(&|s| s.p99_us),
            }
        })
        .collect()
}

/// One result per (target, workload, clients): each figure is the median over the
/// rounds that measured that point; the peak memory is the highest seen.
pub fn aggregate(results: &[RunResult]) -> Vec<RunResult> {
    let mut groups: BTreeMap<(usize, usize, usize), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        let t = Target::ALL.iter().position(|x| *x == r.target).unwrap_or(0);
        let w = Workload::ALL.iter().position(|x| *x == r.workload).unwrap_or(0);
        groups.entry((w, r.clients, t)).or_default().push(r);
    }
    groups
        .into_values()
        .map(|g| {
            let m = |f: &dyn Fn(&RunResult) -> f64| median(&g.iter().map(|r| f(r)).collect::<Vec<_>>());
            let nodes = g.iter().map(|r| r.peak_rss_kib.len()).max().unwrap_or(0);
            RunResult {
                target: g[0].target,
                workload: g[0].workload,
                clients: g[0].clients,
                value_size: g[0].value_size,
                seconds: g.iter().map(|r| r.seconds).sum(),
                ops: g.iter().map(|r| r.ops).sum(),
                ops_per_sec: m(&|r| r.ops_per_sec),
                p50_us: m(&|r| r.p50_us as f64) as u64,
                p99_us: m(&|r| r.p99_us as f64) as u64,
                p999_us: m(&|r| r.p999_us as f64) as u64,
                max_us: g.iter().map(|r| r.max_us).max().unwrap_or(0),
                errors: g.iter().map(|r| r.errors).sum(),
                peak_rss_kib: (0..nodes)
                    .map(|i| g.iter().filter_map(|r| r.peak_rss_kib.get(i)).copied().max().unwrap_or(0))
                    .collect(),
                server: aggregate_server(&g),
            }
        })
        .collect()
}

/// Ratios of ours to etcd's: throughput (higher is better for us) and latency (lower is).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratios {
    /// kv ops/s divided by etcd ops/s.
    pub ops: f64,
    /// kv p50 divided by etcd p50.
    pub p50: f64,
    /// kv p99 divided by etcd p99.
    pub p99: f64,
    /// kv's highest peak RSS divided by etcd's.
    pub rss: f64,
}

/// kv over etcd, from one result of each.
pub fn ratios(kv: &RunResult, etcd: &RunResult) -> Ratios {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Ratios {
        ops: div(kv.ops_per_sec, etcd.ops_per_sec),
        p50: div(kv.p50_us as f64, etcd.p50_us as f64),
        p99: div(kv.p99_us as f64, etcd.p99_us as f64),
        rss: div(kv.max_rss_kib() as f64, etcd.max_rss_kib() as f64),
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0}", us as f64 / 1000.0)
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
}

/// A markdown table with one row per workload and client count and the figures of
/// every target side by side (medians where several rounds ran).
pub fn markdown_table(results: &[RunResult]) -> String {
    let agg = aggregate(results);
    let mut out = String::from(
        "| workload | clients | system | ops/s | p50 ms | p99 ms | p999 ms | errors | peak RSS per node MiB | kv/etcd ops |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in &agg {
        let rss: Vec<String> = r.peak_rss_kib.iter().map(|k| format!("{:.0}", *k as f64 / 1024.0)).collect();
        let ratio = if r.target == Target::Kv {
            agg.iter()
                .find(|e| e.target == Target::Etcd && e.workload == r.workload && e.clients == r.clients)
                .map(|e| format!("{:.2}", ratios(r, e).ops))
                .unwrap_or_default()
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            thousands(r.clients as f64),
            r.target,
            thousands(r.ops_per_sec),
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.p999_us),
            r.errors,
            rss.join(" / "),
            ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::load::new_histogram;

    fn result(target: Target, clients: usize, ops_per_sec: f64, p50: u64) -> RunResult {
        RunResult {
            target,
            workload: Workload::Write,
            clients,
            value_size: 1024,
            seconds: 1.0,
            ops: ops_per_sec as u64,
            ops_per_sec,
            p50_us: p50,
            p99_us: p50 * 3,
            p999_us: p50 * 5,
            max_us: p50 * 9,
            errors: 0,
            peak_rss_kib: vec![1024, 2048, 4096],
            server: Vec::new(),
        }
    }

    fn server(label: &str, count: u64, p50: Option<f64>, p99: Option<f64>) -> ServerLatency {
        ServerLatency { label: label.into(), count, p50_us: p50, p99_us: p99 }
    }

    #[test]
    fn histogram_summary_gives_percentiles_and_throughput() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us).unwrap();
        }
        let r = RunResult::from_histogram(Target::Kv, Workload::Read, 8, 1024, 2.0, &h, 3, vec![10, 20, 30]);
        assert_eq!(r.ops, 1000);
        assert!((r.ops_per_sec - 500.0).abs() < 1e-9);
        assert!((499..=501).contains(&r.p50_us), "{}", r.p50_us);
        assert!((989..=991).contains(&r.p99_us), "{}", r.p99_us);
        assert!((998..=1000).contains(&r.p999_us), "{}", r.p999_us);
        assert_eq!((r.max_us, r.errors, r.max_rss_kib()), (1000, 3, 30));
        let empty = RunResult::from_histogram(Target::Kv, Workload::Read, 1, 1, 1.0, &new_histogram(), 0, vec![]);
        assert_eq!((empty.ops, empty.p50_us, empty.max_us), (0, 0, 0));
    }

    #[test]
    fn json_has_the_documented_keys_and_round_trips() {
        let mut r = result(Target::Etcd, 256, 5400.0, 44_000);
        r.server = vec![server("wal fsync", 9, Some(812.5), Some(1_900.0)), server("commit", 0, None, None)];
        let v = r.to_json();
        for key in ["ops_per_sec", "p50_us", "p99_us", "p999_us", "peak_rss_kib", "server"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let text = v.to_string();
        assert_eq!(RunResult::from_json(&serde_json::from_str(&text).unwrap()).unwrap(), r);
        // Results saved without server-side figures still read.
        let mut old = r.to_json();
        old.as_object_mut().unwrap().remove("server");
        assert_eq!(RunResult::from_json(&old).unwrap().server, []);
    }

    #[test]
    fn server_figures_get_their_own_marked_line_and_medians_over_rounds() {
        let mut rounds = [result(Target::Kv, 64, 100.0, 10), result(Target::Kv, 64, 200.0, 20)];
        assert_eq!(rounds[0].server_line(), None);
        rounds[0].server = vec![server("log write", 10, Some(800.0), Some(2_000.0)), server("commit", 5, None, None)];
        rounds[1].server = vec![server("log write", 30, Some(1_000.0), Some(4_000.0))];
        let line = rounds[0].server_line().unwrap();
        assert!(line.starts_with("kv write server side (leader's /metrics histograms, power-of-two buckets"), "{line}");
        assert!(
            line.ends_with("log write p50 800 us, p99 2000 us (10 samples); commit p50 -, p99 - (5 samples)"),
            "{line}"
        );
        let agg = aggregate(&rounds);
        assert_eq!(
            agg[0].server,
            [server("log write", 40, Some(900.0), Some(3_000.0)), server("commit", 5, None, None)]
        );
    }

    #[test]
    fn median_and_aggregate_take_the_middle_of_rounds() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let rs = [
            result(Target::Kv, 16, 100.0, 10),
            result(Target::Kv, 16, 300.0, 30),
            result(Target::Kv, 16, 200.0, 20),
            result(Target::Etcd, 16, 50.0, 40),
        ];
        let agg = aggregate(&rs);
        assert_eq!(agg.len(), 2);
        assert_eq!(agg[0].target, Target::Kv);
        assert_eq!((agg[0].ops_per_sec, agg[0].p50_us), (200.0, 20));
        let r = ratios(&agg[0], &agg[1]);
        assert_eq!((r.ops, r.p50, r.rss), (4.0, 0.5, 1.0));
    }

    #[test]
    fn markdown_table_has_a_row_per_system_and_the_ratio() {
        let table =
            markdown_table(&[result(Target::Kv, 1024, 54_321.0, 900), result(Target::Etcd, 1024, 5_000.0, 44_000)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[2].contains("| write | 1,024 | kv | 54,321 | 0.90 |"), "{}", lines[2]);
        assert!(lines[2].ends_with("| 10.86 |"), "{}", lines[2]);
        assert!(lines[3].contains("| etcd | 5,000 | 44 |"), "{}", lines[3]);
    }
}

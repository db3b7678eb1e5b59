//! Server-side latencies of a run: the leader's own histograms, read from its
//! `GET /metrics` just before and just after the measured window (with
//! [`raft_examples::launch::scrape`]); the difference of the two scrapes is what the
//! leader recorded during the window.
//!
//! For our `kv`: `raft_log_write_seconds` (each log write, append and fsync, until
//! durable) and `raft_commit_seconds` (from a proposal's append to its commit, one sample
//! per entry). For etcd: `etcd_disk_wal_fsync_duration_seconds` (the WAL's fsync alone).
//! The buckets are at powers of two (of a microsecond for `kv`, of a millisecond for
//! etcd), and the quantiles are interpolated within a bucket: they are estimates within a
//! factor of 2, unlike the clients' figures, which come from an HDR histogram.

use raft_examples::launch::scrape::Scrape;
use serde_json::{json, Value};

use super::target::Target;

/// One histogram reported from the leader's `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerMetric {
    /// What it measures, as printed.
    pub label: &'static str,
    /// The histogram's name (without `_bucket`), in seconds.
    pub name: &'static str,
}

/// The histograms reported for `target`.
pub fn server_metrics(target: Target) -> &'static [ServerMetric] {
    match target {
        Target::Kv => &[
            ServerMetric { label: "log write", name: "raft_log_write_seconds" },
            ServerMetric { label: "commit", name: "raft_commit_seconds" },
        ],
        Target::Etcd => &[ServerMetric { label: "wal fsync", name: "etcd_disk_wal_fsync_duration_seconds" }],
    }
}

/// The gauge that is 1 on the leader.
pub fn is_leader_gauge(target: Target) -> &'static str {
    match target {
        Target::Kv => "raft_is_leader",
        Target::Etcd => "etcd_server_is_leader",
    }
}

/// What the leader recorded in one histogram during the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerLatency {
    /// What it measures ([`ServerMetric::label`]).
    pub label: String,
    /// Samples recorded in the window.
    pub count: u64,
    /// Estimated median in microseconds (`None` without samples).
    pub p50_us: Option<f64>,
    /// Estimated 99th percentile in microseconds (`None` without samples).
    pub p99_us: Option<f64>,
}

impl ServerLatency {
    /// The JSON object in a result's `server` array.
    pub fn to_json(&self) -> Value {
        json!({ "label": self.label, "count": self.count, "p50_us": self.p50_us, "p99_us": self.p99_us })
    }

    /// Reads what [`ServerLatency::to_json`] wrote.
    pub fn from_json(v: &Value) -> Result<ServerLatency, String> {
        Ok(ServerLatency {
            label: v.get("label").and_then(Value::as_str).ok_or("server latency without label")?.to_string(),
            count: v.get("count").and_then(Value::as_u64).ok_or("server latency without count")?,
            p50_us: v.get("p50_us").and_then(Value::as_f64),
            p99_us: v.get("p99_us").and_then(Value::as_f64),
        })
    }

    /// `log write p50 812 us, p99 1930 us (5,210 samples)`.
    pub fn describe(&self) -> String {
        let us = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.0} us"));
        format!("{} p50 {}, p99 {} ({} samples)", self.label, us(self.p50_us), us(self.p99_us), self.count)
    }
}

/// The latencies the leader recorded between `before` and `after`, two scrapes of its
/// `/metrics`; fails if it no longer leads in `after` (the window then mixes two
/// leaders) or a histogram is missing or unreadable.
pub fn between(target: Target, before: &Scrape, after: &Scrape) -> Result<Vec<ServerLatency>, String> {
    let gauge = is_leader_gauge(target);
    if [before, after].iter().any(|s| s.value(gauge, &[]).is_some_and(|v| v != 1.0)) {
        return Err("the node scraped did not lead for the whole run".into());
    }
    server_metrics(target)
        .iter()
        .map(|m| {
            let h0 = before.histogram(m.name, &[]).map_err(|e| e.to_string())?;
            let h1 = after.histogram(m.name, &[]).map_err(|e| e.to_string())?;
            let d = h1.since(&h0).map_err(|e| e.to_string())?;
            let us = |q: f64| d.quantile(q).map(|s| s * 1e6);
            Ok(ServerLatency { label: m.label.to_string(), count: d.count, p50_us: us(0.5), p99_us: us(0.99) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Latencies, Metrics, Role};
    use raft_examples::host::metrics::render;

    fn page(role: Role, latencies: &Latencies) -> Scrape {
        let status = raft::Status {
            id: 1,
            role,
            is_voter: true,
            term: 2,
            voted_for: Some(1),
            leader: Some(1),
            commit_index: 5,
            applied_index: 5,
            last_log_index: 5,
            last_log_term: 2,
            durable_index: 5,
            membership: raft::Membership::new(1..=3),
            config_index: 1,
            transferring_to: None,
            match_index: Default::default(),
            cached_entries: 0,
            snapshot_index: 0,
            first_log_index: 1,
            fatal_error: None,
            stopped: false,
        };
        let m = Metrics {
            status,
            counters: raft::Counters::default(),
            latencies: latencies.clone(),
            sessions: raft::SessionStats::default(),
        };
        Scrape::parse(&render(&m, "kv", &[])).unwrap()
    }

    #[test]
    fn the_leaders_log_writes_and_commits_during_the_window_are_reported() {
        let mut before = Latencies::default();
        before.log_write.record_n(50_000, 10);
        let mut after = before.clone();
        after.log_write.record_n(900, 1_000);
        after.commit.record_n(2_500, 8_000);
        let got = between(Target::Kv, &page(Role::Leader, &before), &page(Role::Leader, &after)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].label.as_str(), got[0].count), ("log write", 1_000), "only the window's writes");
        assert_eq!((got[1].label.as_str(), got[1].count), ("commit", 8_000));
        let within = |x: Option<f64>, us: f64| x.is_some_and(|x| x >= us / 2.0 && x <= us * 2.0);
        assert!(within(got[0].p50_us, 900.0) && within(got[0].p99_us, 900.0), "{got:?}");
        assert!(within(got[1].p50_us, 2_500.0) && within(got[1].p99_us, 2_500.0), "{got:?}");
        assert!(got[0].describe().starts_with("log write p50 "), "{}", got[0].describe());
        assert_eq!(ServerLatency::from_json(&got[1].to_json()).unwrap(), got[1]);

        let idle = between(Target::Kv, &page(Role::Leader, &before), &page(Role::Leader, &before)).unwrap();
        assert_eq!((idle[1].count, idle[1].p99_us), (0, None));
        assert_eq!(idle[1].describe(), "commit p50 -, p99 - (0 samples)");
        assert_eq!(ServerLatency::from_json(&idle[1].to_json()).unwrap(), idle[1]);
        let deposed = between(Target::Kv, &page(Role::Leader, &before), &page(Role::Follower, &after));
        assert!(deposed.is_err(), "{deposed:?}");
    }

    #[test]
    fn etcds_wal_fsync_histogram_is_read_from_its_text_format() {
        let page = |fast: u64, slow: u64| {
            let text = format!(
                "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.\n\
                 # TYPE etcd_disk_wal_fsync_duration_seconds histogram\n\
                 etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"0.001\"}} {fast}\n\
                 etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"0.002\"}} {}\n\
                 etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"0.004\"}} {}\n\
                 etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
                 etcd_disk_wal_fsync_duration_seconds_sum {}\n\
                 etcd_disk_wal_fsync_duration_seconds_count {}\n\
                 etcd_server_is_leader 1\n",
                fast + slow,
                fast + slow,
                fast + slow,
                fast as f64 * 0.0008 + slow as f64 * 0.0015,
                fast + slow
            );
            Scrape::parse(&text).unwrap()
        };
        let got = between(Target::Etcd, &page(10, 0), &page(10, 100)).unwrap();
        assert_eq!((got[0].label.as_str(), got[0].count), ("wal fsync", 100));
        let p50 = got[0].p50_us.unwrap();
        assert!((p50 - 1_500.0).abs() < 1e-6, "half way through the (1, 2] ms bucket: {p50}");
    }
}

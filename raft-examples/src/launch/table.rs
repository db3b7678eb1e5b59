//! The `cluster` launcher's live status table: one row per node, from one `GET /metrics`
//! per node per refresh, on a connection kept open from one refresh to the next.
//!
//! Besides where each node is (role, term, leader, commit and applied indexes), a row
//! shows the node's replication lag as the leader sees it (the leader's
//! `raft_replication_lag_entries{peer}`) and the 99th percentile of the node's log writes
//! (append and fsync, `raft_log_write_seconds`) over the last refresh interval: the
//! difference of this refresh's histogram and the previous one's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::client::Connection;
use super::scrape::{as_count, Scrape, ScrapeError, ScrapedHistogram};
use super::LocalCluster;

/// The histogram of the node's log writes, each until durable.
const LOG_WRITE: &str = "raft_log_write_seconds";

/// What one node's `/metrics` says, for its row.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    /// `leader`, `follower` or `candidate` (also while pre-voting).
    pub role: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<u64>,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied.
    pub applied: u64,
    /// Entries its log is behind the leader's, as the leader reports; `None` for the
    /// leader itself and when no leader answered.
    pub lag: Option<u64>,
    /// The 99th percentile of its log writes over the last refresh interval, in
    /// seconds; `None` when it wrote nothing in that interval (or on the first refresh).
    pub write_p99: Option<f64>,
}

impl Figures {
    /// The node's figures from its scrape; `lag` and `write_p99` are left `None`.
    pub fn from_scrape(s: &Scrape) -> Result<Figures, ScrapeError> {
        let whole =
            |name: &str| s.value(name, &[]).and_then(as_count).ok_or_else(|| ScrapeError::Missing(name.to_string()));
        let role = s
            .samples
            .iter()
            .find(|x| x.name == "raft_role" && x.value == 1.0)
            .and_then(|x| x.label("role"))
            .ok_or_else(|| ScrapeError::Missing("raft_role".into()))?;
        let role = if role == "pre_candidate" { "candidate" } else { role };
        let leader = whole("raft_leader_id")?;
        Ok(Figures {
            role: role.to_string(),
            term: whole("raft_term")?,
            leader: (leader != 0).then_some(leader),
            commit: whole("raft_commit_index")?,
            applied: whole("raft_applied_index")?,
            lag: None,
            write_p99: None,
        })
    }
}

/// What a refresh learned about one node.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// The node answered.
    Up {
        /// Its process id.
        pid: i32,
        /// Its figures.
        figures: Figures,
    },
    /// The node runs but did not answer (or answered something unreadable).
    Silent {
        /// Its process id.
        pid: i32,
        /// Why, as the request or the parser said.
        error: String,
    },
    /// The node's process exited.
    Exited {
        /// How it ended.
        status: String,
        /// Its log file.
        log: PathBuf,
    },
}

/// The table's first line.
pub fn header() -> String {
    format!(
        "{:<5} {:<22} {:<10} {:>6} {:>7} {:>8} {:>8} {:>6} {:>10} {:>8}\n",
        "node", "http", "role", "term", "leader", "commit", "applied", "lag", "fsync p99", "pid"
    )
}

/// A duration in seconds as the table shows it: `850 µs`, `1.25 ms`, `12.5 ms`, `1.20 s`.
pub fn format_seconds(s: f64) -> String {
    match s {
        s if !s.is_finite() || s < 0.0 => "-".into(),
        s if s < 1e-3 => format!("{:.0} µs", s * 1e6),
        s if s < 1e-2 => format!("{:.2} ms", s * 1e3),
        s if s < 1.0 => format!("{:.1} ms", s * 1e3),
        s => format!("{s:.2} s"),
    }
}

/// The line of node `id`, at `http` (shown with the `https://` scheme when `https`), in
/// the table (with its newline).
pub fn format_row(id: u64, http: SocketAddr, https: bool, row: &Row) -> String {
    let dash = || "-".to_string();
    let rest = match row {
        Row::Up { pid, figures: f } => format!(
            "{:<10} {:>6} {:>7} {:>8} {:>8} {:>6} {:>10} {:>8}",
            f.role,
            f.term,
            f.leader.map_or_else(dash, |l| l.to_string()),
            f.commit,
            f.applied,
            f.lag.map_or_else(dash, |l| l.to_string()),
            f.write_p99.map_or_else(dash, format_seconds),
            pid
        ),
        Row::Silent { pid, error } => format!(
            "{:<10} {:>6} {:>7} {:>8} {:>8} {:>6} {:>10} {:>8}  ({})",
            "?",
            "",
            "",
            "",
            "",
            "-",
            "-",
            pid,
            short_error(error)
        ),
        Row::Exited { status, log } => format!("exited: {status}, see {}", log.display()),
    };
    let scheme = if https { "https" } else { "http" };
    format!("{id:<5} {:<22} {rest}\n", format!("{scheme}://{http}"))
}

/// A request's error as a few words.
fn short_error(e: &str) -> String {
    if e.contains("onnection refused") {
        "not answering yet".into()
    } else if e.contains("imeout") || e.contains("imed out") {
        "no answer (paused?)".into()
    } else {
        e.chars().take(40).collect()
    }
}

/// The log writes recorded between two scrapes of a node (`None` without an earlier
/// one); when the node restarted in between, everything the later scrape holds.
fn writes_between(now: &ScrapedHistogram, before: Option<&ScrapedHistogram>) -> Option<ScrapedHistogram> {
    match now.since(before?) {
        Ok(d) => Some(d),
        Err(ScrapeError::Reset(_)) => Some(now.clone()),
        Err(_) => None,
    }
}

/// Fills in each node's lag from the leader's scrape (the node in the highest term that
/// says it leads), also for a node that does not answer (a paused or dead follower's lag
/// is what an operator looks for): `scrapes[i]` is node `ids[i]`'s, if it answered.
fn lags(ids: &[u64], scrapes: &[Option<&Scrape>]) -> Vec<Option<u64>> {
    let term = |s: &Scrape| s.value("raft_term", &[]).unwrap_or(0.0);
    let leader = scrapes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.filter(|s| s.value("raft_is_leader", &[]) == Some(1.0)).map(|s| (i, s)))
        .max_by(|a, b| term(a.1).total_cmp(&term(b.1)));
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let (l, s) = leader?;
            if l == i {
                return None;
            }
            s.value("raft_replication_lag_entries", &[("peer", &id.to_string())]).and_then(as_count)
        })
        .collect()
}

/// The live table of a [`LocalCluster`]: a connection to each node and each node's
/// log-write histogram of the previous refresh.
#[derive(Debug)]
pub struct StatusTable {
    timeout: Duration,
    connections: Vec<Option<Connection>>,
    previous: Vec<Option<ScrapedHistogram>>,
}

impl StatusTable {
    /// A table whose requests each take at most `timeout`.
    pub fn new(timeout: Duration) -> StatusTable {
        StatusTable { timeout, connections: Vec::new(), previous: Vec::new() }
    }

    /// `GET /metrics` of node index `i`, parsed; a request that fails other than by a
    /// timeout (a kept connection the node closed) is sent once more on a new one.
    fn scrape(&mut self, cluster: &LocalCluster, i: usize) -> Result<Scrape, String> {
        let addr = cluster.nodes[i].http.to_string();
        let mut reply = None;
        for _ in 0..2 {
            let mut connection = match self.connections[i].take() {
                Some(c) => c,
                None => Connection::with_trust(&addr, self.timeout, cluster.https().cloned())?,
            };
            let r = connection.request("GET", "/metrics", None);
            self.connections[i] = Some(connection);
            let retry = r.status == 0 && !r.text().contains("timed out");
            reply = Some(r);
            if !retry {
                break;
            }
        }
        let reply = reply.ok_or("no request sent")?;
        match reply.status {
            200 => Scrape::parse(&reply.text()).map_err(|e| format!("bad /metrics: {e}")),
            0 => Err(reply.text()),
            s => Err(format!("/metrics answered {s}")),
        }
    }

    /// Scrapes every node once and returns the table's text.
    pub fn refresh(&mut self, cluster: &mut LocalCluster) -> String {
        let n = cluster.nodes.len();
        self.connections.resize_with(n, || None);
        self.previous.resize(n, None);
        let mut scrapes: Vec<Result<Scrape, Row>> = Vec::with_capacity(n);
        for i in 0..n {
            let pid = cluster.pid(i).map_or(0, |p| p.as_raw());
            scrapes.push(match cluster.exited(i) {
                Some(status) => Err(Row::Exited { status: status.to_string(), log: cluster.nodes[i].log.clone() }),
                None => self.scrape(cluster, i).map_err(|error| Row::Silent { pid, error }),
            });
        }
        let ids: Vec<u64> = cluster.nodes.iter().map(|m| m.id).collect();
        let answered: Vec<Option<&Scrape>> = scrapes.iter().map(|s| s.as_ref().ok()).collect();
        let lags = lags(&ids, &answered);
        let mut out = header();
        for (i, scrape) in scrapes.iter().enumerate() {
            let pid = cluster.pid(i).map_or(0, |p| p.as_raw());
            let writes = scrape.as_ref().ok().and_then(|s| s.histogram(LOG_WRITE, &[]).ok());
            let between = writes.as_ref().and_then(|w| writes_between(w, self.previous[i].as_ref()));
            self.previous[i] = writes;
            let row = match scrape {
                Err(row) => row.clone(),
                Ok(s) => match Figures::from_scrape(s) {
                    Ok(mut figures) => {
                        figures.lag = lags[i];
                        figures.write_p99 = between.and_then(|d| d.quantile(0.99));
                        Row::Up { pid, figures }
                    }
                    Err(e) => Row::Silent { pid, error: format!("bad /metrics: {e}") },
                },
            };
            out.push_str(&format_row(ids[i], cluster.nodes[i].http, cluster.https().is_some(), &row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::metrics::render;
    use raft::{Latencies, Metrics, Role};

    /// A rendered page of node `id` in `role`, with `log_write` as its log-write histogram.
    fn page(id: u64, role: Role, match_index: &[(u64, u64)], log_write: &raft::Histogram) -> Scrape {
        let status = raft::Status {
            id,
            role,
            is_voter: true,
            term: 7,
            voted_for: Some(1),
            leader: Some(1),
            commit_index: 40,
            applied_index: 39,
            last_log_index: 42,
            last_log_term: 7,
            durable_index: 42,
            membership: raft::Membership::new(1..=3),
            config_index: 1,
            transferring_to: None,
            match_index: match_index.iter().copied().collect(),
            cached_entries: 0,
            snapshot_index: 0,
            first_log_index: 1,
            fatal_error: None,
            stopped: false,
        };
        let latencies = Latencies { log_write: log_write.clone(), ..Default::default() };
        let m =
            Metrics { status, counters: raft::Counters::default(), latencies, sessions: raft::SessionStats::default() };
        Scrape::parse(&render(&m, "kv", &[])).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn durations_are_shown_in_microseconds_milliseconds_or_seconds() {
        assert_eq!(format_seconds(0.000_512), "512 µs");
        assert_eq!(format_seconds(0.001_234), "1.23 ms");
        assert_eq!(format_seconds(0.0125), "12.5 ms");
        assert_eq!(format_seconds(2.5), "2.50 s");
        assert_eq!(format_seconds(f64::NAN), "-");
    }

    #[test]
    fn rows_show_the_leaders_view_of_lag_and_the_log_write_p99_between_refreshes() {
        let mut before = raft::Histogram::default();
        before.record_n(200, 10);
        let mut after = before.clone();
        after.record_n(3_000, 100);
        let leader = page(1, Role::Leader, &[(2, 42), (3, 30)], &after);
        let follower = page(2, Role::Follower, &[], &after);
        let other = page(3, Role::Follower, &[], &after);
        assert_eq!(lags(&[1, 2, 3], &[Some(&leader), Some(&follower), Some(&other)]), [None, Some(0), Some(12)]);
        let lags = lags(&[1, 2, 3], &[Some(&leader), Some(&follower), None]);
        assert_eq!(lags, [None, Some(0), Some(12)], "a node that does not answer shows the leader's view of it");
        assert_eq!(super::lags(&[1, 2], &[Some(&follower), None]), [None, None], "no leader answered");

        let now = follower.histogram(LOG_WRITE, &[]).unwrap();
        let earlier = page(2, Role::Follower, &[], &before).histogram(LOG_WRITE, &[]).unwrap();
        let between = writes_between(&now, Some(&earlier)).unwrap();
        assert_eq!(between.count, 100, "only the writes since the previous refresh");
        assert_eq!(writes_between(&earlier, Some(&now)).unwrap().count, 10, "a restart: all of the new scrape");
        assert_eq!(writes_between(&now, None), None, "the first refresh has nothing to compare with");
        assert_eq!(writes_between(&now, Some(&now)).unwrap().quantile(0.99), None, "no writes: no p99");

        let mut figures = Figures::from_scrape(&follower).unwrap();
        assert_eq!(
            (figures.role.as_str(), figures.term, figures.leader, figures.commit, figures.applied),
            ("follower", 7, Some(1), 40, 39)
        );
        figures.lag = lags[1];
        figures.write_p99 = between.quantile(0.99);
        // 3 ms writes: the (2.048, 4.096] ms bucket, interpolated.
        let p99 = figures.write_p99.unwrap();
        assert!((0.002_048..=0.004_096).contains(&p99), "{p99}");
        let line = format_row(2, addr(8002), false, &Row::Up { pid: 4242, figures });
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[..8], ["2", "http://127.0.0.1:8002", "follower", "7", "1", "40", "39", "0"], "{line}");
        assert!(line.ends_with(&format!("{:>10} {:>8}\n", format_seconds(p99), 4242)), "{line}");
        assert_eq!(line.len(), header().len(), "the columns line up with the header");

        let leader_row = Row::Up { pid: 1, figures: Figures::from_scrape(&leader).unwrap() };
        let leader_line = format_row(1, addr(8001), false, &leader_row);
        let cells: Vec<&str> = leader_line.split_whitespace().collect();
        assert_eq!(cells[2..], ["leader", "7", "1", "40", "39", "-", "-", "1"], "{leader_line}");

        let silent = format_row(
            3,
            addr(8003),
            false,
            &Row::Silent { pid: 99, error: "Connection refused (os error 111)".into() },
        );
        assert!(silent.contains(" - ") && silent.ends_with("99  (not answering yet)\n"), "{silent:?}");
        let exited = Row::Exited { status: "exit status: 1".into(), log: "/tmp/node-3.log".into() };
        assert_eq!(
            format_row(3, addr(8003), false, &exited),
            "3     http://127.0.0.1:8003  exited: exit status: 1, see /tmp/node-3.log\n"
        );
        assert!(format_row(3, addr(8003), true, &exited).starts_with("3     https://127.0.0.1:8003 exited"));
    }
}

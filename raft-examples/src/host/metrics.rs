//! `GET /metrics`: a node's [`raft::Metrics`] in the OpenMetrics text format (which
//! Prometheus scrapes), through the `prometheus-client` crate. Names carry the `raft_`
//! prefix, counters end in `_total` and byte counts in `_bytes`; docs/metrics.md says
//! what each means and which alerts to set on them.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use raft::{Histogram, Metrics, Role};
use raft_net_tcp::PeerStats;

/// The labels of a per-peer gauge.
type PeerLabels = Vec<(&'static str, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    // The encoder adds `_total`.
    registry.register(name, help, c);
}

/// A gauge with a `peer` label, one sample per `(peer, value)`.
fn per_peer(registry: &mut Registry, name: &str, help: &str, values: impl Iterator<Item = (raft::NodeId, u64)>) {
    let family: Family<PeerLabels, Gauge> = Family::default();
    for (peer, v) in values {
        family.get_or_create(&vec![("peer", peer.to_string())]).set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

/// One of the node's histograms, or one per peer (with a `peer` label), as a
/// Prometheus histogram. Its buckets are at the powers of two of the unit (for
/// latencies: 1 µs, 2 µs, ... about 25 days); `scale` converts the unit to the one in the
/// metric's name (1e-6 for microseconds to seconds, 1 for counts).
#[derive(Debug)]
struct Histograms {
    scale: f64,
    series: Vec<(Option<raft::NodeId>, Histogram)>,
}

impl Histograms {
    fn encode_one(&self, h: &Histogram, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::new();
        let mut below = 0;
        for (bound, cumulative) in h.cumulative_at_powers_of_two() {
            buckets.push((bound as f64 * self.scale, cumulative - below));
            below = cumulative;
        }
        buckets.push((f64::INFINITY, h.count() - below));
        encoder.encode_histogram::<NoLabelSet>(h.sum() as f64 * self.scale, h.count(), &buckets, None)
    }
}

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (peer, h) in &self.series {
            match peer {
                // A histogram without labels is the only series of its metric.
                None => return self.encode_one(h, encoder),
                Some(p) => {
                    let labels = vec![("peer", p.to_string())];
                    self.encode_one(h, encoder.encode_family(&labels)?)?
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Registers a histogram of microseconds as one of seconds.
fn seconds(registry: &mut Registry, name: &str, help: &str, h: &Histogram) {
    registry.register(name, help, Histograms { scale: 1e-6, series: vec![(None, h.clone())] });
}

/// A counter with a `peer` label, one sample per `(peer, value)`.
fn per_peer_counter(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (raft::NodeId, u64)>,
) {
    let family: Family<PeerLabels, Counter> = Family::default();
    for (peer, v) in values {
        family.get_or_create(&vec![("peer", peer.to_string())]).inc_by(v);
    }
    registry.register(name, help, family);
}

/// The driver's latency histograms.
fn register_latencies(registry: &mut Registry, l: &raft::Latencies) {
    seconds(registry, "log_write_seconds", "Log store writes, each until durable (fsync)", &l.log_write);
    let batch = Histograms { scale: 1.0, series: vec![(None, l.log_write_entries.clone())] };
    registry.register("log_write_entries", "Entries in each log store write", batch);
    seconds(registry, "apply_seconds", "State machine applies, each batch", &l.apply);
    seconds(registry, "commit_seconds", "Leader only: from a proposal's append to its commit", &l.commit);
    seconds(registry, "read_index_seconds", "Read-index rounds, from asking to confirmed", &l.read_index);
    let rtt = Histograms { scale: 1e-6, series: l.peer_rtt.iter().map(|(&p, h)| (Some(p), h.clone())).collect() };
    registry.register("peer_rtt_seconds", "Leader only: heartbeat round trip to each peer", rtt);
}

/// The transport's counters of each peer.
fn register_peers(registry: &mut Registry, peers: &[(raft::NodeId, PeerStats)]) {
    let per = |f: fn(&PeerStats) -> u64| peers.iter().map(move |(id, s)| (*id, f(s)));
    per_peer(
        registry,
        "peer_connected",
        "1 while the outgoing connection to the peer is up",
        per(|s| u64::from(s.connected)),
    );
    per_peer_counter(registry, "peer_connects", "Outgoing connections to the peer established", per(|s| s.connects));
    per_peer_counter(registry, "peer_frames_sent", "Frames written to the peer", per(|s| s.sent));
    per_peer_counter(registry, "peer_frames_received", "Frames received from the peer", per(|s| s.received));
    let dropped_help = "Frames dropped because the peer's send queue was full";
    per_peer_counter(registry, "peer_frames_dropped", dropped_help, per(|s| s.dropped));
    per_peer(registry, "peer_send_queue_frames", "Frames queued for the peer", per(|s| s.queued as u64));
    per_peer(registry, "peer_send_queue_bytes", "Bytes queued for the peer", per(|s| s.queued_bytes as u64));
}

/// The text of `GET /metrics` for `m`, a node of `app`, whose transport reports
/// `peers`.
pub fn render(m: &Metrics, app: &str, peers: &[(raft::NodeId, PeerStats)]) -> String {
    let mut registry = Registry::with_prefix("raft");
    let s = &m.status;
    let info: Family<PeerLabels, Gauge> = Family::default();
    info.get_or_create(&vec![("app", app.to_string()), ("node", s.id.to_string())]).set(1);
    registry.register("node_info", "This node's id and app (always 1)", info);
    gauge(&mut registry, "term", "Current term", s.term);
    let roles: Family<PeerLabels, Gauge> = Family::default();
    for (role, name) in [
        (Role::Follower, "follower"),
        (Role::PreCandidate, "pre_candidate"),
        (Role::Candidate, "candidate"),
        (Role::Leader, "leader"),
    ] {
        roles.get_or_create(&vec![("role", name.to_string())]).set(i64::from(s.role == role));
    }
    registry.register("role", "1 for this node's current role, 0 for the others", roles);
    gauge(&mut registry, "is_leader", "1 while this node is the leader", u64::from(s.role == Role::Leader));
    gauge(&mut registry, "leader_known", "1 while this node knows a leader", u64::from(s.leader.is_some()));
    gauge(&mut registry, "leader_id", "The known leader's id (0: none)", s.leader.unwrap_or(0));
    gauge(&mut registry, "commit_index", "Highest index known committed", s.commit_index);
    gauge(&mut registry, "applied_index", "Highest index applied to the state machine", s.applied_index);
    gauge(&mut registry, "last_log_index", "Index of the last log entry", s.last_log_index);
    gauge(&mut registry, "durable_index", "Highest index durable in the local store", s.durable_index);
    gauge(&mut registry, "snapshot_index", "Last index the latest snapshot covers", s.snapshot_index);
    gauge(&mut registry, "first_log_index", "First index the log holds", s.first_log_index);
    gauge(&mut registry, "voters", "Voters in the current configuration", s.membership.voters.len() as u64);
    let lag_help = "Leader only: entries each peer's log is behind this one";
    per_peer(&mut registry, "replication_lag_entries", lag_help, m.replication_lag());
    let match_help = "Leader only: the highest index known replicated on each peer";
    per_peer(&mut registry, "match_index", match_help, s.match_index.iter().map(|(&p, &i)| (p, i)));
    let sessions_help = "Client sessions in the replicated session table (idempotency keys included)";
    gauge(&mut registry, "client_sessions", sessions_help, m.sessions.sessions);
    let responses_help = "Responses the session table holds for commands their clients have not acknowledged";
    gauge(&mut registry, "client_session_responses", responses_help, m.sessions.responses);

    let c = &m.counters;
    counter(&mut registry, "pre_votes_started", "Pre-vote rounds this node started", c.pre_votes_started);
    counter(&mut registry, "elections_started", "Elections this node started", c.elections_started);
    counter(&mut registry, "became_leader", "Times this node became leader", c.became_leader);
    counter(&mut registry, "leader_changes", "Times the leader this node knows changed", c.leader_changes);
    counter(&mut registry, "proposals_appended", "Client commands appended as leader", c.proposals_appended);
    counter(&mut registry, "proposals_forwarded", "Client commands forwarded to the leader", c.proposals_forwarded);
    let refused: Family<PeerLabels, Counter> = Family::default();
    refused.get_or_create(&vec![("reason", "not_leader".to_string())]).inc_by(c.proposals_refused_not_leader);
    refused.get_or_create(&vec![("reason", "overloaded".to_string())]).inc_by(c.proposals_refused_overloaded);
    registry.register("proposals_refused", "Proposals refused, by reason", refused);
    counter(&mut registry, "read_index_rounds", "Read-index rounds started as leader", c.read_index_rounds);
    counter(&mut registry, "snapshots_taken", "Snapshots taken of the state machine", c.snapshots_taken);
    counter(&mut registry, "snapshots_sent", "Snapshot transfers started to followers", c.snapshots_sent);
    counter(&mut registry, "snapshot_sent_bytes", "Bytes of snapshot chunks sent", c.snapshot_bytes_sent);
    counter(
        &mut registry,
        "snapshots_installed",
        "Snapshots received from a leader and installed",
        c.snapshots_installed,
    );
    counter(&mut registry, "snapshot_received_bytes", "Bytes of snapshot chunks received", c.snapshot_bytes_received);

    register_latencies(&mut registry, &m.latencies);
    register_peers(&mut registry, peers);

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let status = raft::Status {
            id: 1,
            role: Role::Leader,
            is_voter: true,
            term: 3,
            voted_for: Some(1),
            leader: Some(1),
            commit_index: 9,
            applied_index: 9,
            last_log_index: 10,
            last_log_term: 3,
            durable_index: 10,
            membership: raft::Membership::new(1..=3),
            config_index: 1,
            transferring_to: None,
            match_index: [(2, 10), (3, 4)].into_iter().collect(),
            cached_entries: 0,
            snapshot_index: 0,
            first_log_index: 1,
            fatal_error: None,
            stopped: false,
        };
        let counters = raft::Counters { elections_started: 2, snapshot_bytes_sent: 1 << 20, ..Default::default() };
        let mut latencies = raft::Latencies::default();
        latencies.log_write.record_n(300, 3);
        latencies.log_write.record(5_000);
        latencies.peer_rtt.entry(2).or_default().record(100);
        Metrics { status, counters, latencies, sessions: raft::SessionStats { sessions: 12, responses: 30 } }
    }

    #[test]
    fn metrics_are_named_by_convention_and_carry_the_values() {
        let peers = [(2, PeerStats { connected: true, connects: 1, sent: 40, received: 38, ..Default::default() })];
        let text = render(&sample(), "kv", &peers);
        for line in [
            "raft_elections_started_total 2",
            "raft_snapshot_sent_bytes_total 1048576",
            "raft_is_leader 1",
            "raft_client_sessions 12",
            "raft_client_session_responses 30",
            "raft_role{role=\"leader\"} 1",
            "raft_role{role=\"follower\"} 0",
            "raft_replication_lag_entries{peer=\"3\"} 6",
            "raft_replication_lag_entries{peer=\"2\"} 0",
            "raft_proposals_refused_total{reason=\"overloaded\"} 0",
            "raft_log_write_seconds_count 4",
            "raft_log_write_seconds_sum 0.0059",
            "raft_log_write_seconds_bucket{le=\"0.000256\"} 0",
            "raft_log_write_seconds_bucket{le=\"0.000512\"} 3",
            "raft_log_write_seconds_bucket{le=\"0.008192\"} 4",
            "raft_log_write_seconds_bucket{le=\"+Inf\"} 4",
            "raft_peer_rtt_seconds_bucket{le=\"0.000128\",peer=\"2\"} 1",
            "raft_commit_seconds_count 0",
            "raft_peer_connected{peer=\"2\"} 1",
            "raft_peer_frames_received_total{peer=\"2\"} 38",
            "raft_peer_frames_dropped_total{peer=\"2\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        assert!(text.contains("# TYPE raft_elections_started counter"), "{text}");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    }
}

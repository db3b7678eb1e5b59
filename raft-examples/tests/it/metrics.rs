//! `GET /metrics` of real `kv` processes, read with a Prometheus text parser: the
//! counters move as the protocol does (an election, writes, a paused follower's lag),
//! and the session table's gauges follow writes with an `Idempotency-Key`.

use std::time::Duration;

use raft_examples::launch::client::request_with_headers;

use crate::support::{wait_until, Cluster, PATIENCE};

const KV: &str = env!("CARGO_BIN_EXE_kv");

/// Node `i`'s metrics, parsed; `None` if it does not answer.
fn scrape(c: &Cluster, i: usize) -> Option<prometheus_parse::Scrape> {
    let r = c.request(i, "GET", "/metrics", None);
    if r.status != 200 {
        return None;
    }
    let text = r.text();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    Some(prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("unparsable /metrics: {e}\n{text}")))
}

/// The value of sample `name` with label `label` (if given) in `s`.
fn value(s: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    s.samples.iter().find(|x| x.metric == name && label.is_none_or(|(k, v)| x.labels.get(k) == Some(v))).map(
        |x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}

fn metric(c: &Cluster, i: usize, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    value(&scrape(c, i)?, name, label)
}

#[test]
fn metrics_follow_elections_writes_and_a_lagging_follower() {
    let mut c = Cluster::start(KV, 3, |_| Vec::new());
    let leader = c.wait_leader(None);
    for i in 0..20 {
        c.put(leader, &format!("k{i}"), b"v");
    }
    let s = scrape(&c, leader).expect("the leader answers /metrics");
    assert_eq!(value(&s, "raft_is_leader", None), Some(1.0));
    assert_eq!(value(&s, "raft_role", Some(("role", "leader"))), Some(1.0));
    assert!(value(&s, "raft_became_leader_total", None) >= Some(1.0));
    assert!(value(&s, "raft_proposals_appended_total", None) >= Some(20.0));
    assert!(value(&s, "raft_commit_index", None) >= Some(22.0));
    for i in 0..3 {
        assert!(metric(&c, i, "raft_leader_changes_total", None) >= Some(1.0), "node {} saw the leader", i + 1);
        assert_eq!(metric(&c, i, "raft_leader_known", None), Some(1.0));
    }

    // Each write with an Idempotency-Key leaves its key's session, holding its one
    // response, in every replica's table.
    let (sessions, responses) = ("raft_client_sessions", "raft_client_session_responses");
    let before = (value(&s, sessions, None).expect("a sessions gauge"), value(&s, responses, None).unwrap());
    for key in ["m-1", "m-2"] {
        let addr = c.nodes[leader].http.to_string();
        let headers = [("Idempotency-Key", key)];
        let path = format!("/kv/{key}");
        let r = request_with_headers(c.https(), &addr, "PUT", &path, &headers, Some(b"v"), Duration::from_secs(3));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for i in 0..3 {
        wait_until("every replica's session table to hold the two keys", PATIENCE, || {
            let now = (metric(&c, i, sessions, None)?, metric(&c, i, responses, None)?);
            (now == (before.0 + 2.0, before.1 + 2.0)).then_some(())
        });
    }

    // A paused follower falls behind on the leader's lag gauge, and catches up.
    let follower = (leader + 1) % 3;
    let peer = (follower + 1).to_string();
    c.pause(follower);
    for i in 0..50 {
        c.put(leader, &format!("lag{i}"), b"v");
    }
    let lag = metric(&c, leader, "raft_replication_lag_entries", Some(("peer", &peer))).expect("a lag per peer");
    assert!(lag >= 50.0, "the paused follower is {lag} entries behind");
    c.resume(follower);
    wait_until("the follower's lag to go back to 0", PATIENCE, || {
        (metric(&c, leader, "raft_replication_lag_entries", Some(("peer", &peer)))? == 0.0).then_some(())
    });

    // The leader killed: another node counts its election and a leader change.
    let changes: Vec<f64> = (0..3).map(|i| metric(&c, i, "raft_leader_changes_total", None).unwrap()).collect();
    c.kill9(leader);
    let next = c.wait_leader(Some(leader));
    wait_until("the new leader's metrics", PATIENCE, || {
        (metric(&c, next, "raft_is_leader", None)? == 1.0).then_some(())
    });
    assert!(metric(&c, next, "raft_elections_started_total", None) >= Some(1.0));
    assert!(metric(&c, next, "raft_leader_changes_total", None).unwrap() > changes[next]);
}

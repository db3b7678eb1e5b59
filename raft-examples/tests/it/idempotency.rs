//! `Idempotency-Key` on real `kv` and `counter` processes: a client that retries one
//! write with one key through different nodes while the leader is killed gets one
//! application and one answer, and the key is still honoured after restarts; the key
//! reused with another body is refused with 422 and not applied.

use std::time::{Duration, Instant};

use raft_examples::launch::client::{request_with_headers, Reply};

use crate::support::{Cluster, ReplyJson, PATIENCE};

const KV: &str = env!("CARGO_BIN_EXE_kv");
const COUNTER: &str = env!("CARGO_BIN_EXE_counter");

/// Sends `method path` with `Idempotency-Key: key` to node index `i`.
fn send(c: &Cluster, i: usize, method: &str, path: &str, key: &str, body: &[u8]) -> Reply {
    let addr = c.nodes[i].http.to_string();
    let headers = [("Idempotency-Key", key)];
    request_with_headers(c.https(), &addr, method, path, &headers, Some(body), Duration::from_secs(3))
}

/// Retries `method path` with one idempotency key through the running nodes in turn,
/// starting at `first`, until one answers 200, and returns that answer. A 503 or a lost
/// connection leaves the outcome open, so the client retries with the same key.
fn until_answered(c: &Cluster, first: usize, method: &str, path: &str, key: &str, body: &[u8]) -> Reply {
    let r = until_settled(c, first, method, path, key, body);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    r
}

/// As [`until_answered`], but returns the first answer that is neither a 503 nor a lost
/// connection.
fn until_settled(c: &Cluster, first: usize, method: &str, path: &str, key: &str, body: &[u8]) -> Reply {
    let deadline = Instant::now() + PATIENCE;
    let mut i = first;
    loop {
        if c.running(i) {
            let r = send(c, i, method, path, key, body);
            if !matches!(r.status, 0 | 503) {
                return r;
            }
        }
        assert!(Instant::now() < deadline, "{method} {path} with key {key} was never answered");
        i = (i + 1) % c.nodes.len();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_put_retried_with_one_key_through_other_nodes_while_the_leader_is_killed_is_applied_once() {
    let mut c = Cluster::start(KV, 3, |_| Vec::new());
    for round in 0..3 {
        let leader = c.wait_leader(None);
        let key = format!("put-{round}");
        let path = format!("/kv/k{round}");
        // The first attempt goes to the leader, which dies while (or right after) it
        // handles it; the client does not know whether it was applied.
        let first = std::thread::scope(|s| {
            let attempt = s.spawn(|| send(&c, leader, "PUT", &path, &key, b"first"));
            std::thread::sleep(Duration::from_millis(2 + round as u64));
            let pid = c.pid(leader);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            attempt.join().expect("the attempt")
        });
        c.kill9(leader);
        let answer = until_answered(&c, (leader + 1) % 3, "PUT", &path, &key, b"first");
        let index = answer.json()["index"].as_u64().expect("an index");
        if first.status == 200 {
            assert_eq!(first.json()["index"].as_u64(), Some(index), "the first answer is the only one");
        }
        // Someone else overwrites the value; repeats of the keyed write, through every
        // node, get the first answer and do not write again.
        c.put((leader + 1) % 3, &format!("k{round}"), b"second");
        c.spawn(leader);
        c.wait_serving(leader);
        for i in 0..3 {
            let again = until_answered(&c, i, "PUT", &path, &key, b"first");
            assert_eq!(again.json()["index"].as_u64(), Some(index), "node {}: {}", i + 1, again.text());
        }
        // The key with another body is another request: refused (422), not applied.
        for i in 0..3 {
            let reused = until_settled(&c, i, "PUT", &path, &key, b"third");
            assert_eq!(reused.status, 422, "node {}: {}", i + 1, reused.text());
        }
        for i in 0..3 {
            assert_eq!(c.get(i, &format!("k{round}")).as_deref(), Some(&b"second"[..]), "applied once");
        }
        // The same key on another resource is another request.
        let other = until_answered(&c, 0, "PUT", &format!("/kv/other{round}"), &key, b"x");
        assert_ne!(other.json()["index"].as_u64(), Some(index));
    }
}

#[test]
fn an_increment_retried_with_one_key_while_the_leader_is_killed_counts_once() {
    let mut c = Cluster::start(COUNTER, 3, |_| Vec::new());
    let leader = c.wait_leader(None);
    let first = std::thread::scope(|s| {
        let attempt = s.spawn(|| send(&c, leader, "POST", "/incr", "inc-1", b"5"));
        std::thread::sleep(Duration::from_millis(2));
        let _ = nix::sys::signal::kill(c.pid(leader), nix::sys::signal::Signal::SIGKILL);
        attempt.join().expect("the attempt")
    });
    c.kill9(leader);
    let answer = until_answered(&c, (leader + 1) % 3, "POST", "/incr", "inc-1", b"5");
    assert_eq!(answer.json()["value"], 5, "{}", answer.text());
    if first.status == 200 {
        assert_eq!(first.json()["value"], 5);
    }
    c.spawn(leader);
    c.wait_serving(leader);
    for i in 0..3 {
        assert_eq!(until_answered(&c, i, "POST", "/incr", "inc-1", b"5").json()["value"], 5);
    }
    // A new key counts again; the whole cluster restarted still knows the old one.
    assert_eq!(until_answered(&c, 1, "POST", "/incr", "inc-2", b"1").json()["value"], 6);
    for i in 0..3 {
        c.kill9(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    for i in 0..3 {
        c.wait_serving(i);
    }
    c.wait_leader(None);
    assert_eq!(until_answered(&c, 2, "POST", "/incr", "inc-1", b"5").json()["value"], 5);
    // The key with another amount is another request: refused (422), not counted.
    let reused = until_settled(&c, 1, "POST", "/incr", "inc-1", b"7");
    assert_eq!(reused.status, 422, "{}", reused.text());
    assert!(reused.text().contains("Idempotency-Key"), "{}", reused.text());
    let r = until_answered(&c, 0, "GET", "/value", "unused", b"");
    assert_eq!(r.json()["value"], 6, "each key counted once");
}

#[test]
fn a_bad_idempotency_key_is_refused() {
    let c = Cluster::start(COUNTER, 1, |_| Vec::new());
    c.wait_leader(None);
    let long = "k".repeat(300);
    for key in ["", long.as_str(), "caf\u{e9}"] {
        let r = send(&c, 0, "POST", "/incr", key, b"1");
        assert_eq!(r.status, 400, "key {key:?}: {}", r.text());
    }
    let r = until_answered(&c, 0, "GET", "/value", "unused", b"");
    assert_eq!(r.json()["value"], 0, "nothing was applied");
}

//! Three real `counter` processes on loopback: increments through any node, the
//! linearizable value, and bad deltas.

use crate::support::{Cluster, ReplyJson};

const COUNTER: &str = env!("CARGO_BIN_EXE_counter");

#[test]
fn increments_through_any_node_and_the_value_is_linearizable() {
    let c = Cluster::start(COUNTER, 3, |_| Vec::new());
    c.wait_leader(None);
    let incr = |i: usize, body: Option<&[u8]>| {
        crate::support::wait_until("an increment to be applied", crate::support::PATIENCE, || {
            let r = c.request(i, "POST", "/incr", body);
            match r.status {
                200 => Some(r.json()["value"].as_i64().expect("value")),
                0 | 503 => None,
                s => panic!("POST /incr: {s} {}", r.text()),
            }
        })
    };
    let value = |i: usize| {
        let r = c.request(i, "GET", "/value", None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["value"].as_i64().expect("value")
    };
    let mut expected = 0;
    for i in 0..12usize {
        let (body, delta): (Option<&[u8]>, i64) = match i % 3 {
            0 => (None, 1),
            1 => (Some(b"5"), 5),
            _ => (Some(b"-2\n"), -2),
        };
        expected += delta;
        assert_eq!(incr(i % 3, body), expected);
        assert_eq!(value((i + 1) % 3), expected, "read through node {} after write {i}", (i + 1) % 3 + 1);
    }
    for (body, what) in [(&b"one"[..], "a word"), (b"1.5", "a fraction"), (b"\xff", "invalid UTF-8")] {
        let r = c.request(0, "POST", "/incr", Some(body));
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(c.request(1, "POST", "/incr", Some(&[b'1'; 100])).status, 413);
    assert_eq!(c.request(1, "GET", "/incr", None).status, 405);
    assert_eq!(c.request(1, "POST", "/value", None).status, 405);
    assert_eq!(c.request(1, "GET", "/kv/x", None).status, 404);
    assert_eq!(value(2), expected, "bad requests changed nothing");
    let s = c.status(2).expect("status");
    assert_eq!(s["app"], "counter");
}

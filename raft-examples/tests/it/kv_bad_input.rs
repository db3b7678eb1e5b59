//! Bad input to a real `kv` process's HTTP API gets the documented status and a JSON
//! error, and the node keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Cluster, Reply, ReplyJson};

const KV: &str = env!("CARGO_BIN_EXE_kv");
const MAX_VALUE: usize = 1 << 20;

/// Asserts `r` has `status` and a JSON body `{"error": "..."}`.
fn assert_json_error(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let body = r.json();
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: no error message in {body}");
}

/// Sends raw bytes on a new connection and returns the status code of the answer (0 if
/// the server closed the connection without one).
fn raw_status(c: &Cluster, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(c.nodes[0].http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn still_serving(c: &Cluster, round: usize) {
    let key = format!("alive{round}");
    c.put(0, &key, b"yes");
    assert_eq!(c.get(0, &key).as_deref(), Some(&b"yes"[..]));
}

#[test]
fn bad_requests_get_json_errors_and_the_node_keeps_serving() {
    let c = Cluster::start(KV, 1, |_| Vec::new());
    c.wait_leader(None);
    still_serving(&c, 0);

    // Malformed compare-and-set bodies.
    for body in
        [&b"{not json"[..], b"", b"[]", b"{\"expected\": 5, \"new\": \"x\"}", b"{\"expected\": null}", b"\xff\xfe"]
    {
        let r = c.request(0, "POST", "/kv/k/cas", Some(body));
        assert_json_error(&r, 400, &format!("CAS body {:?}", String::from_utf8_lossy(body)));
    }
    // Keys: invalid UTF-8 after percent-decoding, empty, too long.
    for path in ["/kv/%ff%fe", "/kv/ok%C3", "/kv/", "/kv/%ff/cas"] {
        for method in ["GET", "PUT", "DELETE"] {
            let r = c.request(0, method, path, Some(b"v"));
            assert_json_error(&r, 400, &format!("{method} {path}"));
        }
    }
    let r = c.request(0, "POST", "/kv/%ff/cas", Some(br#"{"expected": null, "new": "x"}"#));
    assert_json_error(&r, 400, "CAS on an invalid key");
    let long = "k".repeat(1025);
    assert_json_error(&c.request(0, "PUT", &format!("/kv/{long}"), Some(b"v")), 400, "a 1025-byte key");
    assert_eq!(c.put(0, &"k".repeat(1024), b"v").status, 200, "a 1024-byte key is allowed");

    // Oversized bodies: 413, for a value and for a compare-and-set.
    // Not one repeated byte, so that a body put together wrongly from its pieces shows.
    let big: Vec<u8> = (0..MAX_VALUE + 1).map(|i| (i % 251) as u8).collect();
    assert_json_error(&c.request(0, "PUT", "/kv/big", Some(&big)), 413, "a value over 1 MiB");
    assert_eq!(c.put(0, "big", &big[..MAX_VALUE]).status, 200, "a value of exactly 1 MiB is allowed");
    assert!(c.get(0, "big").as_deref() == Some(&big[..MAX_VALUE]), "the 1 MiB value reads back byte for byte");
    let cas = format!(r#"{{"expected": null, "new": "{}"}}"#, "y".repeat(MAX_VALUE + 1));
    assert_json_error(&c.request(0, "POST", "/kv/big2/cas", Some(cas.as_bytes())), 413, "a CAS value over 1 MiB");
    let huge = vec![b'z'; 4 * MAX_VALUE];
    assert_json_error(&c.request(0, "POST", "/kv/big2/cas", Some(&huge)), 413, "a 4 MiB CAS body");
    let chunked = format!(
        "PUT /kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        MAX_VALUE + 1
    );
    let mut raw = chunked.into_bytes();
    raw.extend(std::iter::repeat_n(b'c', MAX_VALUE + 1));
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw_status(&c, &raw), 413, "a chunked body over 1 MiB");
    assert_eq!(c.get(0, "chunked"), None);

    // Unknown paths and wrong methods.
    for path in ["/", "/nope", "/kv", "/status/x", "/kvx/a"] {
        assert_json_error(&c.request(0, "GET", path, None), 404, &format!("GET {path}"));
    }
    assert_json_error(&c.request(0, "PATCH", "/kv/a", Some(b"x")), 405, "PATCH /kv/a");
    assert_json_error(&c.request(0, "POST", "/kv/a", Some(b"x")), 405, "POST /kv/a");
    assert_json_error(&c.request(0, "DELETE", "/status", None), 405, "DELETE /status");
    still_serving(&c, 1);

    // Garbage below HTTP: the connection gets a 400 or is closed; the node goes on.
    let status = raw_status(&c, b"\x00\x01\x02 garbage\r\n\r\n");
    assert!(status == 400 || status == 0, "garbage got {status}");
    let status = raw_status(&c, b"GET /kv/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(status == 400 || status == 404 || status == 0, "raw invalid UTF-8 in the path got {status}");
    let status =
        raw_status(&c, b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 413, "a declared length over the limit");
    // A connection that sends half a request and goes away.
    {
        let mut s = TcpStream::connect(c.nodes[0].http).expect("connect");
        s.write_all(b"PUT /kv/half HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").expect("send");
    }
    still_serving(&c, 2);
    assert_eq!(c.get(0, "half"), None, "a half-sent body is not stored");
    let s = c.status(0).expect("status");
    assert_eq!(s["role"], "leader");
}

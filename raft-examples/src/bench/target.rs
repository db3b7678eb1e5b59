//! What differs between the systems under test: how an operation becomes an HTTP request,
//! and how a node's status (who is leader) is asked for and read.
//!
//! Our `kv` app: `PUT /kv/{key}` with the value as body, `GET /kv/{key}`, `GET /status`.
//! etcd 3.4's v3 JSON gateway: `POST /v3/kv/put` with `{"key": b64, "value": b64}`,
//! `POST /v3/kv/range` with `{"key": b64}` (linearizable unless `serializable` is set),
//! `POST /v3/maintenance/status` with `{}`.

use std::fmt;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};

/// The system a benchmark drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Target {
    /// Our `kv` app: file log with fsync, TCP transport.
    Kv,
    /// etcd 3.4 from Debian's `etcd-server` package.
    Etcd,
}

impl Target {
    /// Both targets, ours first.
    pub const ALL: [Target; 2] = [Target::Kv, Target::Etcd];

    /// The lower-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Target::Kv => "kv",
            Target::Etcd => "etcd",
        }
    }

    /// Parses a name produced by [`Target::name`].
    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mix of operations the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Workload {
    /// Only writes of random keys.
    Write,
    /// Only linearizable reads of random keys (written before the measurement).
    Read,
    /// Half writes, half linearizable reads.
    Mixed,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 3] = [Workload::Write, Workload::Read, Workload::Mixed];

    /// The lower-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
        }
    }

    /// Parses a name produced by [`Workload::name`].
    pub fn from_name(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Whether the keys must exist before the measurement starts.
    pub fn needs_data(self) -> bool {
        self != Workload::Write
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One client operation on the key with this number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write the benchmark value to the key.
    Put(u64),
    /// Linearizable read of the key.
    Get(u64),
}

/// The key with number `n`, the same for both targets.
pub fn key_name(n: u64) -> String {
    format!("bench-{n:06}")
}

/// A value of `size` printable bytes.
pub fn make_value(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>().into()
}

/// Builds the requests of one target; the value and its encodings are computed once.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    target: Target,
    value: Bytes,
    value_b64: String,
}

impl RequestBuilder {
    /// A builder for `target` writing values of `value_size` bytes.
    pub fn new(target: Target, value_size: usize) -> Self {
        let value = make_value(value_size);
        let value_b64 = if target == Target::Etcd { base64(&value) } else { String::new() };
        RequestBuilder { target, value, value_b64 }
    }

    /// The request for `op`, sent to the node whose address is `host`.
    pub fn build(&self, host: &HeaderValue, op: Op) -> Request<Full<Bytes>> {
        let (method, uri, body, json) = match (self.target, op) {
            (Target::Kv, Op::Put(k)) => (Method::PUT, format!("/kv/{}", key_name(k)), self.value.clone(), false),
            (Target::Kv, Op::Get(k)) => (Method::GET, format!("/kv/{}", key_name(k)), Bytes::new(), false),
            (Target::Etcd, Op::Put(k)) => {
                let body = format!(r#"{{"key":"{}","value":"{}"}}"#, base64(key_name(k).as_bytes()), self.value_b64);
                (Method::POST, "/v3/kv/put".to_string(), Bytes::from(body), true)
            }
            (Target::Etcd, Op::Get(k)) => {
                let body = format!(r#"{{"key":"{}"}}"#, base64(key_name(k).as_bytes()));
                (Method::POST, "/v3/kv/range".to_string(), Bytes::from(body), true)
            }
        };
        request(method, &uri, host, body, json)
    }

    /// The request that asks a node for its status.
    pub fn status(&self, host: &HeaderValue) -> Request<Full<Bytes>> {
        match self.target {
            Target::Kv => request(Method::GET, "/status", host, Bytes::new(), false),
            Target::Etcd => request(Method::POST, "/v3/maintenance/status", host, Bytes::from_static(b"{}"), true),
        }
    }
}

fn request(method: Method, uri: &str, host: &HeaderValue, body: Bytes, json: bool) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    // The URIs are built above from fixed paths and key names; they always parse.
    *req.uri_mut() = uri.parse().unwrap_or_default();
    req.headers_mut().insert(HOST, host.clone());
    if json {
        req.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    req
}

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node is the leader.
    pub is_leader: bool,
    /// The node knows a leader (itself or another).
    pub leader_known: bool,
    /// Its term, where the target reports one.
    pub term: Option<u64>,
}

/// Reads a status response body of `target`.
pub fn parse_status(target: Target, body: &[u8]) -> Result<NodeStatus, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("status is not JSON: {e}"))?;
    match target {
        Target::Kv => {
            let role = v.get("role").and_then(|r| r.as_str()).ok_or("status without role")?;
            let leader = v.get("leader").and_then(|l| l.as_u64());
            Ok(NodeStatus {
                is_leader: role.eq_ignore_ascii_case("leader"),
                leader_known: leader.is_some(),
                term: v.get("term").and_then(|t| t.as_u64()),
            })
        }
        Target::Etcd => {
            // The gateway writes 64-bit integers as strings; fields equal to zero are left out.
            let num = |x: Option<&serde_json::Value>| -> u64 {
                match x {
                    Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
                    Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
                    _ => 0,
                }
            };
            let header = v.get("header").ok_or("status without header")?;
            let member = num(header.get("member_id"));
            let leader = num(v.get("leader"));
            let term = num(header.get("raft_term"));
            Ok(NodeStatus {
                is_leader: member != 0 && leader == member,
                leader_known: leader != 0,
                term: (term != 0).then_some(term),
            })
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as etcd's JSON gateway expects for bytes.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn base64_matches_rfc4648_test_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    fn body(req: Request<Full<Bytes>>) -> (Method, String, String, Option<String>) {
        let (parts, body) = req.into_parts();
        let bytes = futures::executor::block_on(body.collect()).unwrap().to_bytes();
        let ct = parts.headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(parts.headers.get(HOST).unwrap(), "127.0.0.1:1234");
        (parts.method, parts.uri.to_string(), String::from_utf8(bytes.to_vec()).unwrap(), ct)
    }

    #[test]
    fn kv_requests_use_the_key_path_and_raw_value() {
        let b = RequestBuilder::new(Target::Kv, 5);
        let host = HeaderValue::from_static("127.0.0.1:1234");
        assert_eq!(body(b.build(&host, Op::Put(7))), (Method::PUT, "/kv/bench-000007".into(), "abcde".into(), None));
        assert_eq!(body(b.build(&host, Op::Get(7))), (Method::GET, "/kv/bench-000007".into(), String::new(), None));
        assert_eq!(body(b.status(&host)).1, "/status");
    }

    #[test]
    fn etcd_requests_are_gateway_json_with_base64_fields() {
        let b = RequestBuilder::new(Target::Etcd, 3);
        let host = HeaderValue::from_static("127.0.0.1:1234");
        let (m, uri, text, ct) = body(b.build(&host, Op::Put(1)));
        assert_eq!((m, uri.as_str(), ct.as_deref()), (Method::POST, "/v3/kv/put", Some("application/json")));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["key"], base64(b"bench-000001"));
        assert_eq!(v["value"], base64(b"abc"));
        let (m, uri, text, _) = body(b.build(&host, Op::Get(1)));
        assert_eq!((m, uri.as_str()), (Method::POST, "/v3/kv/range"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["key"], base64(b"bench-000001"));
        assert!(v.get("serializable").is_none(), "range must stay linearizable");
        assert_eq!(body(b.status(&host)).1, "/v3/maintenance/status");
    }

    #[test]
    fn kv_status_names_the_leader() {
        let leader = br#"{"id":1,"role":"leader","term":3,"leader":1,"commit_index":9,"applied_index":9}"#;
        let s = parse_status(Target::Kv, leader).unwrap();
        assert_eq!(s, NodeStatus { is_leader: true, leader_known: true, term: Some(3) });
        let follower = br#"{"id":2,"role":"follower","term":3,"leader":null,"commit_index":9,"applied_index":9}"#;
        let s = parse_status(Target::Kv, follower).unwrap();
        assert!(!s.is_leader && !s.leader_known);
        assert!(parse_status(Target::Kv, b"not json").is_err());
    }

    #[test]
    fn etcd_status_compares_leader_with_member_id() {
        let body = br#"{"header":{"cluster_id":"1","member_id":"42","revision":"5","raft_term":"2"},
            "version":"3.4.23","dbSize":"20480","leader":"42","raftIndex":"8","raftTerm":"2"}"#;
        let s = parse_status(Target::Etcd, body).unwrap();
        assert_eq!(s, NodeStatus { is_leader: true, leader_known: true, term: Some(2) });
        let body = br#"{"header":{"member_id":"43","raft_term":"2"},"leader":"42"}"#;
        let s = parse_status(Target::Etcd, body).unwrap();
        assert!(!s.is_leader && s.leader_known);
        let body = br#"{"header":{"member_id":"43"}}"#;
        assert!(!parse_status(Target::Etcd, body).unwrap().leader_known);
    }

    #[test]
    fn names_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()), Some(t));
        }
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
        }
        assert_eq!(make_value(28).len(), 28);
    }
}

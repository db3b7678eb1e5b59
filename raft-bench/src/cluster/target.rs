//! What differs between the systems under test: how an operation becomes an HTTP request,
//! and how a node's status (who is leader) is asked for and read.
//!
//! Our `kv` app: `PUT /kv/{key}` with the value as body, `GET /kv/{key}`,
//! `GET /kv/{key}?stale` (this replica as it is), `GET /status`.
//! etcd 3.4's v3 JSON gateway: `POST /v3/kv/put` with `{"key": b64, "value": b64}`,
//! `POST /v3/kv/range` with `{"key": b64}` (linearizable unless `serializable` is set:
//! then the member answers from its own store), `POST /v3/maintenance/status` with `{}`.
//! Both serve their Prometheus metrics at `GET /metrics`.

use std::fmt;
use std::io::Write;

use bytes::Bytes;

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
    /// Only local reads of random keys (written before the measurement): the node a
    /// client talks to answers from its own replica, without a consensus round (kv's
    /// `?stale`, etcd's serializable range). A yardstick for the HTTP front end and the
    /// storage lookup alone, which bounds what the consensus workloads can reach.
    #[value(name = "local-read")]
    LocalRead,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 4] = [Workload::Write, Workload::Read, Workload::Mixed, Workload::LocalRead];

    /// The lower-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
            Workload::LocalRead => "local-read",
        }
    }

    /// Parses a name produced by [`Workload::name`].
    pub fn from_name(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Whether the keys must exist before the measurement starts (every workload that
    /// reads).
    pub fn needs_data(self) -> bool {
        match self {
            Workload::Write => false,
            Workload::Read | Workload::Mixed | Workload::LocalRead => true,
        }
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
    /// Read of the key from the replica of the node asked, without a consensus round
    /// (may lag the cluster).
    LocalGet(u64),
}

impl Op {
    /// The number of the key the operation is on.
    pub fn key(self) -> u64 {
        match self {
            Op::Put(n) | Op::Get(n) | Op::LocalGet(n) => n,
        }
    }
}

/// The key with number `n`, the same for both targets.
pub fn key_name(n: u64) -> String {
    format!("bench-{n:06}")
}

/// A value of `size` printable bytes.
pub fn make_value(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>().into()
}

/// Writes the requests of one target as HTTP/1.1 bytes; the value and its encodings are
/// computed once.
///
/// Every request carries `host` (the node's address); a request with a body carries
/// `content-length` (and `content-type: application/json` for etcd). Header names are
/// lower case.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    target: Target,
    value: Bytes,
    value_b64: String,
}

/// Room for `bench-` and the 20 digits of any `u64`.
const KEY_MAX: usize = 32;
/// Room for the base64 encoding of a key.
const KEY_B64_MAX: usize = KEY_MAX.div_ceil(3) * 4;

impl RequestBuilder {
    /// A builder for `target` writing values of `value_size` bytes.
    pub fn new(target: Target, value_size: usize) -> Self {
        let value = make_value(value_size);
        let value_b64 = if target == Target::Etcd { base64(&value) } else { String::new() };
        RequestBuilder { target, value, value_b64 }
    }

    /// Writes the request for `op`, sent to the node whose address is `host`, into
    /// `out` (which is cleared first).
    pub fn build(&self, host: &str, op: Op, out: &mut Vec<u8>) {
        out.clear();
        let mut key = [0u8; KEY_MAX];
        let key = write_key(op.key(), &mut key);
        match (self.target, op) {
            (Target::Kv, Op::Put(_)) => request(out, "PUT", &[b"/kv/", key], host, None, &[&self.value[..]]),
            (Target::Kv, Op::Get(_)) => request(out, "GET", &[b"/kv/", key], host, None, &[]),
            (Target::Kv, Op::LocalGet(_)) => request(out, "GET", &[b"/kv/", key, b"?stale"], host, None, &[]),
            (Target::Etcd, op) => {
                let mut key_b64 = [0u8; KEY_B64_MAX];
                let key_b64 = base64_into(key, &mut key_b64);
                match op {
                    Op::Put(_) => {
                        let body: [&[u8]; 5] =
                            [br#"{"key":""#, key_b64, br#"","value":""#, self.value_b64.as_bytes(), br#""}"#];
                        request(out, "POST", &[b"/v3/kv/put"], host, Some(JSON), &body)
                    }
                    Op::Get(_) => {
                        let body: [&[u8]; 3] = [br#"{"key":""#, key_b64, br#""}"#];
                        request(out, "POST", &[b"/v3/kv/range"], host, Some(JSON), &body)
                    }
                    Op::LocalGet(_) => {
                        let body: [&[u8]; 3] = [br#"{"key":""#, key_b64, br#"","serializable":true}"#];
                        request(out, "POST", &[b"/v3/kv/range"], host, Some(JSON), &body)
                    }
                }
            }
        }
    }

    /// Writes `GET /metrics` for the node at `host` into `out` (which is cleared first):
    /// both targets serve their Prometheus metrics there.
    pub fn metrics(&self, host: &str, out: &mut Vec<u8>) {
        out.clear();
        request(out, "GET", &[b"/metrics"], host, None, &[]);
    }

    /// Writes the request that asks the node at `host` for its status into `out` (which
    /// is cleared first).
    pub fn status(&self, host: &str, out: &mut Vec<u8>) {
        out.clear();
        match self.target {
            Target::Kv => request(out, "GET", &[b"/status"], host, None, &[]),
            Target::Etcd => request(out, "POST", &[b"/v3/maintenance/status"], host, Some(JSON), &[b"{}"]),
        }
    }
}

const JSON: &str = "application/json";

/// Appends one request: `method`, the path made of `path`, the `host` header, an
/// optional `content-type`, `content-length` unless the request is a GET without a body,
/// and the body made of `body`.
fn request(out: &mut Vec<u8>, method: &str, path: &[&[u8]], host: &str, content_type: Option<&str>, body: &[&[u8]]) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    for part in path {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = content_type {
        out.extend_from_slice(b"content-type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let len: usize = body.iter().map(|b| b.len()).sum();
    if len > 0 || method != "GET" {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "content-length: {len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    for part in body {
        out.extend_from_slice(part);
    }
}

/// Writes the name of key `n` (as [`key_name`] spells it) into `buf`; returns it.
fn write_key(n: u64, buf: &mut [u8; KEY_MAX]) -> &[u8] {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    // `bench-` and at most 20 digits fit.
    let _ = write!(cursor, "bench-{n:06}");
    let len = cursor.position() as usize;
    &buf[..len]
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
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    base64_each(data, |c| out.push(char::from(c)));
    out
}

/// [`base64`] into `buf`, which must hold `data.len().div_ceil(3) * 4` bytes; returns the
/// encoded part of `buf`.
fn base64_into<'a>(data: &[u8], buf: &'a mut [u8]) -> &'a [u8] {
    let mut len = 0;
    base64_each(data, |c| {
        buf[len] = c;
        len += 1;
    });
    &buf[..len]
}

fn base64_each(data: &[u8], mut emit: impl FnMut(u8)) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                emit(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                emit(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_test_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    /// Parses one request written by the builder: method, path, body and content type.
    /// It must be exactly one HTTP/1.1 request for host 127.0.0.1:1234, its
    /// `content-length` (absent only on a GET without a body) matching the body.
    fn parse(bytes: &[u8]) -> (String, String, String, Option<String>) {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut fields);
        let httparse::Status::Complete(head) = req.parse(bytes).unwrap() else { panic!("incomplete request") };
        assert_eq!(req.version, Some(1));
        let field = |name: &str| {
            let mut values = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
            let value = values.next().map(|h| String::from_utf8(h.value.to_vec()).unwrap());
            assert!(values.next().is_none(), "{name} twice");
            value
        };
        assert_eq!(field("host").as_deref(), Some("127.0.0.1:1234"));
        let body = &bytes[head..];
        match field("content-length") {
            Some(len) => assert_eq!(len.parse::<usize>().unwrap(), body.len()),
            None => assert!(body.is_empty() && req.method == Some("GET"), "a body without content-length"),
        }
        let ct = field("content-type");
        let method = req.method.unwrap().to_string();
        (method, req.path.unwrap().to_string(), String::from_utf8(body.to_vec()).unwrap(), ct)
    }

    fn build(b: &RequestBuilder, op: Op) -> Vec<u8> {
        // Whatever was in the buffer goes.
        let mut out = b"leftover".to_vec();
        b.build("127.0.0.1:1234", op, &mut out);
        out
    }

    fn status(b: &RequestBuilder) -> Vec<u8> {
        let mut out = b"leftover".to_vec();
        b.status("127.0.0.1:1234", &mut out);
        out
    }

    #[test]
    fn kv_requests_use_the_key_path_and_raw_value() {
        let b = RequestBuilder::new(Target::Kv, 5);
        assert_eq!(
            build(&b, Op::Put(7)),
            b"PUT /kv/bench-000007 HTTP/1.1\r\nhost: 127.0.0.1:1234\r\ncontent-length: 5\r\n\r\nabcde"
        );
        assert_eq!(parse(&build(&b, Op::Put(7))), ("PUT".into(), "/kv/bench-000007".into(), "abcde".into(), None));
        assert_eq!(parse(&build(&b, Op::Get(7))), ("GET".into(), "/kv/bench-000007".into(), String::new(), None));
        assert_eq!(build(&b, Op::Get(7)), b"GET /kv/bench-000007 HTTP/1.1\r\nhost: 127.0.0.1:1234\r\n\r\n");
        assert_eq!(parse(&status(&b)).1, "/status");
        // An empty value is still a PUT with a (zero) length.
        let empty = RequestBuilder::new(Target::Kv, 0);
        assert_eq!(parse(&build(&empty, Op::Put(1))).2, "");
    }

    #[test]
    fn etcd_requests_are_gateway_json_with_base64_fields() {
        let b = RequestBuilder::new(Target::Etcd, 3);
        let (m, uri, text, ct) = parse(&build(&b, Op::Put(1)));
        assert_eq!((m.as_str(), uri.as_str(), ct.as_deref()), ("POST", "/v3/kv/put", Some("application/json")));
        assert_eq!(text, format!(r#"{{"key":"{}","value":"{}"}}"#, base64(b"bench-000001"), base64(b"abc")));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["key"], base64(b"bench-000001"));
        assert_eq!(v["value"], base64(b"abc"));
        let (m, uri, text, ct) = parse(&build(&b, Op::Get(1)));
        assert_eq!((m.as_str(), uri.as_str(), ct.as_deref()), ("POST", "/v3/kv/range", Some("application/json")));
        assert_eq!(text, format!(r#"{{"key":"{}"}}"#, base64(b"bench-000001")));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v.get("serializable").is_none(), "range must stay linearizable");
        let (m, uri, text, ct) = parse(&status(&b));
        assert_eq!((m.as_str(), uri.as_str(), text.as_str()), ("POST", "/v3/maintenance/status", "{}"));
        assert_eq!(ct.as_deref(), Some("application/json"));
    }

    #[test]
    fn kv_local_read_asks_for_the_stale_replica() {
        let b = RequestBuilder::new(Target::Kv, 5);
        assert_eq!(build(&b, Op::LocalGet(7)), b"GET /kv/bench-000007?stale HTTP/1.1\r\nhost: 127.0.0.1:1234\r\n\r\n");
        assert_eq!(
            parse(&build(&b, Op::LocalGet(7))),
            ("GET".into(), "/kv/bench-000007?stale".into(), String::new(), None)
        );
    }

    #[test]
    fn etcd_local_read_is_a_serializable_range() {
        let b = RequestBuilder::new(Target::Etcd, 3);
        let (m, uri, text, ct) = parse(&build(&b, Op::LocalGet(42)));
        assert_eq!((m.as_str(), uri.as_str(), ct.as_deref()), ("POST", "/v3/kv/range", Some("application/json")));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["key"], base64(b"bench-000042"));
        assert_eq!(v["serializable"], serde_json::Value::Bool(true));
        assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{text}");
    }

    #[test]
    fn op_key_is_the_key_of_every_op() {
        for op in [Op::Put(3), Op::Get(3), Op::LocalGet(3)] {
            assert_eq!(op.key(), 3);
        }
    }

    #[test]
    fn keys_are_spelled_alike_everywhere() {
        for n in [0, 7, 999_999, 1_000_000, u64::MAX] {
            let mut buf = [0; KEY_MAX];
            assert_eq!(write_key(n, &mut buf), key_name(n).as_bytes());
            let mut b64 = [0; KEY_B64_MAX];
            assert_eq!(base64_into(key_name(n).as_bytes(), &mut b64), base64(key_name(n).as_bytes()).as_bytes());
        }
        let (_, path, _, _) = parse(&build(&RequestBuilder::new(Target::Kv, 1), Op::Get(u64::MAX)));
        assert_eq!(path, format!("/kv/{}", key_name(u64::MAX)));
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
        assert_eq!(Workload::from_name("local-read"), Some(Workload::LocalRead));
        assert_eq!(Workload::LocalRead.to_string(), "local-read");
        assert!(Workload::LocalRead.needs_data() && Workload::Read.needs_data() && !Workload::Write.needs_data());
        // The command line spells the workloads as JSON does.
        for w in Workload::ALL {
            assert_eq!(<Workload as clap::ValueEnum>::from_str(w.name(), false), Ok(w));
        }
        assert_eq!(make_value(28).len(), 28);
    }
}

//! Three real `dns` processes on loopback, queried with the real `dig` (Debian's
//! `dnsutils`; the tests skip with a message when it is missing): every record type,
//! NXDOMAIN, REFUSED, truncation over UDP and the full answer over TCP, registrations
//! visible through every node, replicated ttl expiry (also across a leader kill), and
//! garbage packets that leave the node answering.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{wait_until, Cluster, ReplyJson, PATIENCE};

const DNS: &str = env!("CARGO_BIN_EXE_dns");

/// A cluster and each node's DNS address.
struct DnsCluster {
    c: Cluster,
    dns: Vec<SocketAddr>,
}

/// Whether `dig` can run; prints why a test skips when it cannot.
fn have_dig() -> bool {
    let ok = Command::new("dig").arg("-v").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: `dig` is not installed (Debian package dnsutils; scripts/install-test-deps.sh)");
    }
    ok
}

fn start() -> DnsCluster {
    let dns = raft_examples::launch::free_ports(3).expect("free ports");
    let ports = dns.clone();
    let c = Cluster::start(DNS, 3, move |id| vec!["--dns".into(), ports[id as usize - 1].to_string()]);
    c.wait_leader(None);
    DnsCluster { c, dns }
}

/// What `dig` printed, split up.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: String,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    raw: String,
}

impl Dig {
    fn answers_of(&self, rtype: &str) -> Vec<String> {
        let field = |l: &String| l.split_whitespace().nth(3) == Some(rtype);
        self.answer
            .iter()
            .filter(|l| field(l))
            .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
            .collect()
    }
}

fn dig(addr: SocketAddr, name: &str, rtype: &str, opts: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+norecurse", "+time=2", "+tries=2"])
        .args(opts)
        .args([name, rtype])
        .output()
        .expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        status: String::new(),
        flags: String::new(),
        answer: vec![],
        authority: vec![],
        additional: vec![],
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest.split(';').next().unwrap_or("").to_string();
        }
        if line.starts_with(";; ") && line.ends_with("SECTION:") {
            section = line;
            continue;
        }
        if line.is_empty() || line.starts_with(';') {
            if line.is_empty() {
                section = "";
            }
            continue;
        }
        match section {
            ";; ANSWER SECTION:" => d.answer.push(line.to_string()),
            ";; AUTHORITY SECTION:" => d.authority.push(line.to_string()),
            ";; ADDITIONAL SECTION:" => d.additional.push(line.to_string()),
            _ => {}
        }
    }
    d
}

fn register(c: &Cluster, i: usize, service: &str, instance: &str, body: &str) {
    let path = format!("/v1/services/{service}/{instance}");
    wait_until(&format!("PUT {path}"), PATIENCE, || {
        let r = c.request(i, "PUT", &path, Some(body.as_bytes()));
        match r.status {
            200 => Some(()),
            503 | 0 => None,
            s => panic!("PUT {path}: {s} {}", r.text()),
        }
    });
}

/// Waits until `name` has `n` records of `rtype` on every node.
fn wait_everywhere(d: &DnsCluster, nodes: &[usize], name: &str, rtype: &str, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    wait_until(&format!("{n} {rtype} records for {name}"), within, || {
        nodes.iter().all(|&i| dig(d.dns[i], name, rtype, &[]).answers_of(rtype).len() == n).then_some(())
    });
    start.elapsed()
}

#[test]
fn dig_gets_every_record_type_from_every_node() {
    if !have_dig() {
        return;
    }
    let d = start();
    register(&d.c, 0, "web", "web-1", r#"{"address": "10.1.0.1", "port": 8080, "tags": ["primary", "blue"]}"#);
    register(&d.c, 1, "web", "web-2", r#"{"address": "10.1.0.2", "port": 8081, "tags": ["blue"]}"#);
    register(&d.c, 2, "web", "web-6", r#"{"address": "fd00::6", "port": 8086}"#);
    // Bad names are refused before anything is written.
    let r = d.c.request(0, "PUT", "/v1/services/we_b/x", Some(br#"{"address": "10.0.0.1"}"#));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].is_string());

    wait_everywhere(&d, &[0, 1, 2], "web.service.local", "A", 2, PATIENCE);
    for i in 0..3 {
        let addr = d.dns[i];
        let mut a = dig(addr, "web.service.local", "A", &[]).answers_of("A");
        a.sort();
        assert_eq!(a, vec!["10.1.0.1", "10.1.0.2"], "node {}", i + 1);
        assert_eq!(dig(addr, "web.service.local", "AAAA", &[]).answers_of("AAAA"), vec!["fd00::6"]);
        assert_eq!(dig(addr, "web-1.web.service.local", "A", &[]).answers_of("A"), vec!["10.1.0.1"]);
        let mut blue = dig(addr, "blue.web.service.local", "A", &[]).answers_of("A");
        blue.sort();
        assert_eq!(blue, vec!["10.1.0.1", "10.1.0.2"], "the tag `blue`");
        assert_eq!(dig(addr, "web-1.web.service.local", "TXT", &[]).answers_of("TXT"), vec![r#""primary" "blue""#]);

        let srv = dig(addr, "_web._tcp.service.local", "SRV", &[]);
        let mut records = srv.answers_of("SRV");
        records.sort();
        assert_eq!(
            records,
            vec![
                "1 1 8080 web-1.web.service.local.",
                "1 1 8081 web-2.web.service.local.",
                "1 1 8086 web-6.web.service.local."
            ],
            "{}",
            srv.raw
        );
        assert_eq!(srv.additional.len(), 3, "the targets' addresses: {}", srv.raw);
        assert!(srv.additional.iter().any(|l| l.starts_with("web-6.web.service.local.") && l.contains("fd00::6")));
        assert_eq!(dig(addr, "web.service.local", "SRV", &[]).answers_of("SRV").len(), 3);

        let nx = dig(addr, "nothere.service.local", "A", &[]);
        assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
        assert!(nx.authority.iter().any(|l| l.contains("SOA")), "{}", nx.raw);
        assert!(nx.flags.contains("aa"), "{}", nx.raw);
        let empty = dig(addr, "web-1.web.service.local", "AAAA", &[]);
        assert_eq!((empty.status.as_str(), empty.answer.len()), ("NOERROR", 0), "{}", empty.raw);
        assert_eq!(dig(addr, "example.com", "A", &[]).status, "REFUSED");
    }

    // Enough instances that the SRV answer outgrows 512 bytes.
    for n in 0..40 {
        register(
            &d.c,
            n % 3,
            "big",
            &format!("instance-{n}"),
            &format!(r#"{{"address": "10.2.0.{n}", "port": 9000}}"#),
        );
    }
    wait_everywhere(&d, &[0, 1, 2], "big.service.local", "A", 40, PATIENCE);
    let udp = dig(d.dns[1], "big.service.local", "SRV", &["+ignore", "+noedns"]);
    assert!(udp.flags.split_whitespace().any(|f| f == "tc"), "TC over UDP: {}", udp.raw);
    assert!(udp.answer.is_empty());
    let tcp = dig(d.dns[1], "big.service.local", "SRV", &["+tcp"]);
    assert!(!tcp.flags.split_whitespace().any(|f| f == "tc"), "{}", tcp.raw);
    assert_eq!(tcp.answers_of("SRV").len(), 40, "{}", tcp.raw);
    assert_eq!(tcp.additional.iter().filter(|l| l.contains("\tA\t")).count(), 40);

    // The HTTP view agrees, and deregistration removes the name everywhere.
    let r = d.c.request(2, "GET", "/v1/services", None);
    assert_eq!(r.json()["services"]["web"], 3, "{}", r.text());
    let r = d.c.request(1, "DELETE", "/v1/services/web/web-6", None);
    assert_eq!(r.json()["existed"], true, "{}", r.text());
    wait_everywhere(&d, &[0, 1, 2], "web.service.local", "AAAA", 0, PATIENCE);
    assert_eq!(dig(d.dns[0], "web-6.web.service.local", "A", &[]).status, "NXDOMAIN");
}

#[test]
fn an_instance_that_is_not_renewed_expires_on_every_node_also_across_a_leader_kill() {
    if !have_dig() {
        return;
    }
    let mut d = start();
    let ttl = Duration::from_secs(2);
    let bound = ttl + Duration::from_secs(2);

    // A renewed instance outlives its ttl; an unrenewed one is gone within ttl + 2 s.
    register(&d.c, 1, "api", "kept", r#"{"address": "10.3.0.1", "ttl": 2}"#);
    register(&d.c, 1, "api", "short", r#"{"address": "10.3.0.2", "ttl": 2}"#);
    let registered = Instant::now();
    wait_everywhere(&d, &[0, 1, 2], "short.api.service.local", "A", 1, PATIENCE);
    while registered.elapsed() < bound + Duration::from_secs(1) {
        let r = d.c.request(2, "POST", "/v1/services/api/kept/renew", None);
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..3 {
        let gone = dig(d.dns[i], "short.api.service.local", "A", &[]);
        assert_eq!(gone.status, "NXDOMAIN", "node {}: {}", i + 1, gone.raw);
        assert_eq!(dig(d.dns[i], "kept.api.service.local", "A", &[]).answers_of("A"), vec!["10.3.0.1"]);
    }
    let r = d.c.request(0, "POST", "/v1/services/api/short/renew", None);
    assert_eq!(r.status, 404, "renewing an expired instance: {}", r.text());

    // Across a leader kill: registered, the leader killed at once; the survivors drop
    // it within ttl + 2 s of the new leader's election, and not before the ttl.
    let leader = d.c.wait_leader(None);
    register(&d.c, leader, "api", "orphan", r#"{"address": "10.3.0.3", "ttl": 2}"#);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    wait_everywhere(&d, &survivors, "orphan.api.service.local", "A", 1, PATIENCE);
    d.c.kill9(leader);
    let killed = Instant::now();
    let new_leader = d.c.wait_leader(Some(leader));
    let elected = killed.elapsed();
    let since_election = wait_everywhere(&d, &survivors, "orphan.api.service.local", "A", 0, PATIENCE);
    let since_kill = killed.elapsed();
    eprintln!(
        "leader killed; node {} elected after {elected:?}; the instance was gone {since_election:?} later",
        new_leader + 1
    );
    assert!(since_election <= bound, "gone {since_election:?} after the election; bound {bound:?}");
    assert!(since_kill >= ttl, "gone {since_kill:?} after the kill: earlier than its ttl");
}

#[test]
fn garbage_and_truncated_packets_leave_the_node_answering() {
    if !have_dig() {
        return;
    }
    let d = start();
    register(&d.c, 0, "web", "a", r#"{"address": "10.4.0.1"}"#);
    let addr = d.dns[0];
    wait_everywhere(&d, &[0], "web.service.local", "A", 1, PATIENCE);

    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.set_read_timeout(Some(Duration::from_millis(40))).expect("timeout");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut formerr = 0;
    for round in 0..300 {
        let len = (next() % 600) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 && packet.len() > 2 {
            packet[2] &= 0x7f; // a query, not a response
        }
        udp.send_to(&packet, addr).expect("send");
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = udp.recv_from(&mut buf) {
            if n >= 4 && buf[3] & 0x0f == 1 {
                formerr += 1;
            }
        }
    }
    eprintln!("{formerr} of 300 garbage datagrams got FORMERR, the rest silence or an answer");
    // A valid query cut short, and TCP frames that lie about their length or stop.
    let full = {
        let mut q = vec![0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        for label in ["web", "service", "local"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    };
    for cut in 1..full.len() {
        udp.send_to(&full[..cut], addr).expect("send");
    }
    for frame in [&[0xff, 0xff, 1, 2, 3][..], &[0x00], &[0x00, 0x05, 1, 2, 3, 4, 5], &[0x00, 0x10, 1]] {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(frame);
        }
    }
    for i in 0..3 {
        assert_eq!(dig(d.dns[i], "web.service.local", "A", &[]).answers_of("A"), vec!["10.4.0.1"], "node {}", i + 1);
    }
    assert_eq!(dig(addr, "web.service.local", "A", &["+tcp"]).answers_of("A"), vec!["10.4.0.1"]);
    assert!(d.c.status(0).is_some(), "node 1 still serves HTTP");
}

//! `bench dns`: the `dns` app's DNS side against NSD, and its registrations against
//! etcd puts.
//!
//! 1. A three-node `dns` cluster on loopback gets `--instances` instances (ten per
//!    service) registered over HTTP by `--clients` concurrent clients: registrations/s.
//! 2. `dnsperf` sends A and SRV queries for every service name to one node for
//!    `--duration` seconds: queries/s and latency.
//! 3. The same names as a static zone served by NSD on a free port, the same `dnsperf`
//!    run: queries/s and latency, and the ratio of the two.
//! 4. A three-member etcd cluster gets as many puts from as many clients: puts/s.
//!
//! Needs `dnsperf`, `nsd` and `etcd` (scripts/install-bench-deps.sh); a missing one skips
//! its part with a message.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_examples::launch::{client, free_ports, LocalCluster, Spec};

use crate::cluster::nodes::{find_on_path, Cluster, ClusterOptions};
use crate::cluster::target::{base64, Target};

/// The options of `bench dns`.
#[derive(Clone, Debug, clap::Args)]
pub struct DnsArgs {
    /// Instances to register (ten per service).
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// Concurrent registration clients (and etcd put clients).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of each dnsperf run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Queries dnsperf keeps outstanding.
    #[arg(long, default_value_t = 100)]
    pub outstanding: usize,
    /// The `dns` binary (default: next to this executable).
    #[arg(long)]
    pub dns_bin: Option<PathBuf>,
    /// Skip the etcd comparison.
    #[arg(long)]
    pub skip_etcd: bool,
}

/// What dnsperf reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DnsperfResult {
    /// Queries per second.
    pub qps: f64,
    /// Mean latency in milliseconds.
    pub mean_ms: f64,
    /// Queries that got no answer.
    pub lost: u64,
    /// The share of answers that were NOERROR, in percent.
    pub noerror_pct: f64,
}

/// Reads dnsperf's summary.
pub fn parse_dnsperf(out: &str) -> Option<DnsperfResult> {
    let after = |key: &str| out.lines().find_map(|l| l.trim().strip_prefix(key).map(str::trim));
    let qps = after("Queries per second:")?.parse().ok()?;
    let mean_s: f64 = after("Average Latency (s):")?.split_whitespace().next()?.parse().ok()?;
    let lost = after("Queries lost:")?.split_whitespace().next()?.parse().ok()?;
    // `Response codes:       NOERROR 1000 (100.00%)`, other codes after commas.
    let codes = after("Response codes:")?;
    let noerror_pct = codes
        .split(',')
        .find_map(|c| c.trim().strip_prefix("NOERROR"))
        .and_then(|c| c.split('(').nth(1)?.split('%').next()?.parse().ok())
        .unwrap_or(0.0);
    Some(DnsperfResult { qps, mean_ms: mean_s * 1000.0, lost, noerror_pct })
}

const ZONE: &str = "service.local";

fn service(n: usize) -> String {
    format!("svc-{}", n / 10)
}

fn address(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The dnsperf query file: an A and an SRV query for every service.
fn query_file(services: usize) -> String {
    let mut s = String::new();
    for i in 0..services {
        let _ = writeln!(s, "svc-{i}.{ZONE} A");
        let _ = writeln!(s, "_svc-{i}._tcp.{ZONE} SRV");
    }
    s
}

/// The same names as a static zone, in the master file format NSD reads.
fn zone_file(instances: usize) -> String {
    let mut z = format!(
        "$ORIGIN {ZONE}.\n$TTL 5\n@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 5\n@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
    );
    for n in 0..instances {
        let (s, i, a) = (service(n), format!("i-{n}"), address(n));
        let _ = writeln!(z, "{s} IN A {a}");
        let _ = writeln!(z, "_{s}._tcp IN SRV 1 1 8080 {i}.{s}.{ZONE}.");
        let _ = writeln!(z, "{i}.{s} IN A {a}");
    }
    z
}

/// Runs `n` operations from `clients` threads; returns operations per second.
fn concurrently(
    clients: usize,
    n: usize,
    op: impl Fn(usize) -> Result<(), String> + Send + Sync,
) -> Result<f64, String> {
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        return None;
                    }
                    if let Err(e) = op(i) {
                        return Some(e);
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect()
    });
    if let Some(e) = errors.first() {
        return Err(e.clone());
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn dnsperf(server: SocketAddr, queries: &Path, args: &DnsArgs) -> Result<DnsperfResult, String> {
    let out = Command::new("dnsperf")
        .args(["-s", &server.ip().to_string(), "-p", &server.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &args.duration.to_string(), "-q", &args.outstanding.to_string(), "-c", "4"])
        .output()
        .map_err(|e| format!("cannot run dnsperf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_dnsperf(&text)
        .ok_or_else(|| format!("unexpected dnsperf output:\n{text}{}", String::from_utf8_lossy(&out.stderr)))
}

/// An NSD serving `zone` on `addr`, killed when dropped.
struct Nsd(Child);

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nsd(dir: &Path, zone: &str, addr: SocketAddr) -> Result<Nsd, String> {
    let bin = find_on_path("nsd").or_else(|| Some(PathBuf::from("/usr/sbin/nsd")).filter(|p| p.is_file()));
    let bin = bin.ok_or("nsd is not installed (scripts/install-bench-deps.sh)")?;
    let zone_path = dir.join("service.local.zone");
    std::fs::write(&zone_path, zone).map_err(|e| e.to_string())?;
    let conf = format!(
        "server:\n  ip-address: {ip}@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  \
         pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  \
         server-count: 1\n  verbosity: 0\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\nzone:\n  name: {ZONE}\n  zonefile: \"{z}\"\n",
        ip = addr.ip(),
        port = addr.port(),
        d = dir.display(),
        z = zone_path.display(),
    );
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nsd: {e}"))?;
    let nsd = Nsd(child);
    wait_answers(addr)?;
    Ok(nsd)
}

/// Waits until `addr` answers a DNS query for the zone's apex (with `dig`'s absence
/// tolerated: a UDP probe by hand).
fn wait_answers(addr: SocketAddr) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    // A query for `service.local. SOA`.
    let mut q = vec![0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ZONE.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 6, 0, 1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = socket.send_to(&q, addr);
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n >= 12 && buf[..2] == q[..2] {
                return Ok(());
            }
        }
    }
    Err(format!("no DNS answer from {addr} within 20 s"))
}

fn default_dns_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("dns"), dir.parent()?.join("dns")].into_iter().find(|p| p.is_file())
}

/// Runs `bench dns` and prints its figures.
pub fn run_dns(args: &DnsArgs) -> Result<(), String> {
    let bin = args
        .dns_bin
        .clone()
        .or_else(default_dns_bin)
        .ok_or("the dns binary is not next to bench; build it: cargo build --release -p raft-examples --bin dns")?;
    let services = args.instances.div_ceil(10);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, query_file(services)).map_err(|e| e.to_string())?;

    let dns_ports = free_ports(3)?;
    let ports = dns_ports.clone();
    let mut spec = Spec::app(bin, 3);
    spec.extra_args = Arc::new(move |id| vec!["--dns".into(), ports[id as usize - 1].to_string()]);
    let cluster = LocalCluster::start_serving(spec, Duration::from_secs(20))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.leader().is_none() {
        if Instant::now() > deadline {
            return Err("the dns cluster elected no leader within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let http: Vec<String> = cluster.http_endpoints().iter().map(ToString::to_string).collect();
    let register = |n: usize| {
        let body = format!(r#"{{"address": "{}", "port": 8080}}"#, address(n));
        let path = format!("/v1/services/{}/i-{n}", service(n));
        let r = client::request(&http[n % 3], "PUT", &path, Some(body.as_bytes()), Duration::from_secs(10));
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("PUT {path}: {} {}", r.status, r.text()))
        }
    };
    let registrations = concurrently(args.clients, args.instances, register)?;
    println!("dns: {} registrations at {} clients: {registrations:.0} registrations/s", args.instances, args.clients);

    let have_dnsperf = find_on_path("dnsperf").is_some();
    if !have_dnsperf {
        println!("dnsperf is not installed (scripts/install-bench-deps.sh): skipping the query benchmark");
    }
    let mut ours = None;
    if have_dnsperf {
        wait_answers(dns_ports[0])?;
        let r = dnsperf(dns_ports[0], &queries, args)?;
        println!(
            "dns: {} A+SRV names, one node: {:.0} queries/s, mean latency {:.3} ms, {} lost, {:.1}% NOERROR",
            2 * services,
            r.qps,
            r.mean_ms,
            r.lost,
            r.noerror_pct
        );
        ours = Some(r);
    }
    drop(cluster);

    if let Some(ours) = ours {
        let nsd_addr = free_ports(1)?[0];
        match start_nsd(dir.path(), &zone_file(args.instances), nsd_addr) {
            Ok(nsd) => {
                let r = dnsperf(nsd_addr, &queries, args)?;
                drop(nsd);
                println!(
                    "nsd: the same names as a static zone: {:.0} queries/s, mean latency {:.3} ms, {} lost, {:.1}% NOERROR",
                    r.qps, r.mean_ms, r.lost, r.noerror_pct
                );
                println!("dns/nsd queries/s: {:.2} (target at least 0.5)", ours.qps / r.qps);
            }
            Err(e) => println!("skipping NSD: {e}"),
        }
    }

    if !args.skip_etcd {
        etcd_puts(args, registrations)?;
    }
    Ok(())
}

/// The etcd half: as many puts as registrations, from as many clients.
fn etcd_puts(args: &DnsArgs, registrations: f64) -> Result<(), String> {
    if find_on_path("etcd").is_none() {
        println!("etcd is not installed (scripts/install-bench-deps.sh): skipping the etcd comparison");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut etcd = Cluster::start(Target::Etcd, &ClusterOptions::default())?;
    rt.block_on(etcd.wait_ready(Duration::from_secs(30)))?;
    let endpoints: Vec<String> = etcd.http_endpoints().iter().map(ToString::to_string).collect();
    let put = |n: usize| {
        let (key, value) = (format!("/services/{}/i-{n}", service(n)), format!(r#"{{"address":"{}"}}"#, address(n)));
        let body = format!(r#"{{"key":"{}","value":"{}"}}"#, base64(key.as_bytes()), base64(value.as_bytes()));
        let r =
            client::request(&endpoints[n % 3], "POST", "/v3/kv/put", Some(body.as_bytes()), Duration::from_secs(10));
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("etcd put: {} {}", r.status, r.text()))
        }
    };
    let puts = concurrently(args.clients, args.instances, put)?;
    etcd.stop();
    println!("etcd: {} puts at {} clients: {puts:.0} puts/s", args.instances, args.clients);
    println!("dns registrations / etcd puts: {:.2}", registrations / puts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dnsperf_output() {
        let out = "Statistics:\n\n  Queries sent:         100\n  Queries completed:    99 (99.00%)\n  \
                   Queries lost:         1 (1.00%)\n\n  Response codes:       NOERROR 99 (100.00%)\n  Queries per second:   12345.678900\n\n  \
                   Average Latency (s):  0.000250 (min 0.000010, max 0.002000)\n";
        let r = parse_dnsperf(out).unwrap();
        assert_eq!(r.lost, 1);
        assert!((r.qps - 12345.6789).abs() < 1e-6);
        assert!((r.mean_ms - 0.25).abs() < 1e-9);
        assert!((r.noerror_pct - 100.0).abs() < 1e-9);
        assert_eq!(parse_dnsperf("nothing"), None);
    }

    #[test]
    fn the_zone_holds_every_instance() {
        let z = zone_file(20);
        assert_eq!(z.lines().filter(|l| l.starts_with("svc-1 IN A")).count(), 10);
        assert!(z.contains("_svc-0._tcp IN SRV 1 1 8080 i-0.svc-0.service.local."));
        assert_eq!(query_file(2).lines().count(), 4);
    }
}

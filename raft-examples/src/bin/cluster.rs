//! Starts a local cluster (three nodes by default, `--nodes 1` to `7`) of an example app (`kv`, `counter` or `dns`) as child
//! processes on loopback, prints each node's HTTP address and curl examples, then shows
//! a live status table until Ctrl-C, which stops every node cleanly.
//!
//! The table is refreshed twice a second from one `GET /metrics` per node (see
//! [`raft_examples::launch::table`]): each node's role, term, leader, commit and applied
//! indexes, its replication lag as the leader sees it (entries behind the leader's log;
//! `-` for the leader itself and for a node that does not answer), and the 99th
//! percentile of its log writes (append and fsync) over the last refresh interval (`-`
//! when it wrote nothing), estimated from the power-of-two buckets of
//! `raft_log_write_seconds`.
//!
//! ```text
//! cargo run --release -p raft-examples --bin cluster -- kv
//! cargo run --release -p raft-examples --bin cluster -- counter
//! cargo run --release -p raft-examples --bin cluster -- dns
//! ```
//!
//! Node N listens for Raft on `<base-port> + N` and for HTTP on `<base-port> + 1000 + N`
//! (7001-7003 and 8001-8003 by default; the `dns` app serves DNS on `<base-port> + 1600 + N`,
//! 8601-8603) and keeps its data in
//! `<data-dir>/<app>/node-N` (its log output goes to `node-N.log` beside it). Running the
//! launcher again restarts the nodes from that data.
//!
//! With `--tls`, the launcher makes a throwaway CA and node certificates in
//! `<data-dir>/<app>/tls/`, the nodes talk mutual TLS to each other and serve HTTPS, and
//! the table speaks HTTPS to them (`curl --cacert <data-dir>/<app>/tls/ca.pem ...`).
//!
//! `cluster add <app>` (same `--data-dir`, `--base-port`, `--host`) adds a node to the
//! cluster running there: it starts node N (the lowest id that is neither a member nor
//! has a data directory) with `--join`, in the background with its log in
//! `node-N.log`, adds it as a learner and makes it a voter through the admin API, and
//! exits; the new node keeps running (stop it with `kill <pid>`, the pid is printed).
//!
//! Run through `cargo run`, the launcher first builds the app binary with the same
//! profile and features (`cargo build`), so it is never stale; run directly, it expects
//! the app binary next to its own executable.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use raft_examples::launch::certs::ClusterCerts;
use raft_examples::launch::table::StatusTable;
use raft_examples::launch::{Data, LocalCluster, Ports, Spec};

const POLL_INTERVAL: Duration = Duration::from_millis(500);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `GET /metrics` of the table may take.
const METRICS_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AppName {
    /// The replicated key-value store.
    Kv,
    /// The replicated counter.
    Counter,
    /// The service registry with a DNS interface.
    Dns,
}

impl AppName {
    fn name(self) -> &'static str {
        match self {
            AppName::Kv => "kv",
            AppName::Counter => "counter",
            AppName::Dns => "dns",
        }
    }
}

/// Where a local cluster lives and listens: shared by the launcher and `cluster add`.
#[derive(clap::Args)]
struct Place {
    /// Where the nodes keep their data: `<data-dir>/<app>/node-N`.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Node N listens for Raft on base-port + N and for HTTP on base-port + 1000 + N.
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// The address the nodes bind to.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Do not run `cargo build` for the app first, even when run through cargo.
    #[arg(long)]
    no_build: bool,
}

#[derive(Parser)]
#[command(about = "Runs a local cluster of an example app with a live status table")]
struct Cli {
    /// The app to run.
    #[arg(value_enum)]
    app: AppName,
    /// How many nodes (1 to 7); a cluster started before keeps the members in its log,
    /// so restarting it with another count does not change its membership (use the
    /// admin API under `/cluster`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=MAX_NODES as i64))]
    nodes: u16,
    #[command(flatten)]
    place: Place,
    /// Mutual TLS between the nodes and HTTPS for the API: makes a throwaway CA and a
    /// certificate for each of the launcher's node ids 1 to 7 in `<data-dir>/<app>/tls/`
    /// (new ones on every run) and starts the nodes with them.
    #[arg(long)]
    tls: bool,
}

/// `cluster add`: adds a node to a running local cluster.
#[derive(Parser)]
#[command(
    name = "cluster add",
    about = "Starts the next node of a running local cluster with --join and makes it a voter"
)]
struct AddCli {
    /// The app the cluster runs.
    #[arg(value_enum)]
    app: AppName,
    /// The cluster's places, as given to the launcher.
    #[command(flatten)]
    place: Place,
    /// The cluster was started with `--tls`: the new node uses the certificate the
    /// launcher made for its id, and the admin requests go over HTTPS.
    #[arg(long)]
    tls: bool,
}

/// The launcher's node ids are 1 to this.
const MAX_NODES: u64 = 7;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let result = if argv.get(1).is_some_and(|a| a == "add") {
        add(AddCli::parse_from(argv.iter().skip(1)))
    } else {
        run(Cli::parse())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The profile and target directory this executable was built into: it lives in
/// `<target-dir>/<profile>/`.
fn build_location(exe: &Path) -> Option<(PathBuf, String)> {
    let profile_dir = exe.parent()?;
    let profile = profile_dir.file_name()?.to_str()?.to_string();
    Some((profile_dir.parent()?.to_path_buf(), profile))
}

/// Builds the app binary with `cargo build`, with this executable's profile, target
/// directory and runtime features.
fn cargo_build(cargo: &str, app: &str, exe: &Path) -> Result<(), String> {
    let (target_dir, profile) =
        build_location(exe).ok_or_else(|| format!("cannot tell the build directory of {}", exe.display()))?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build").arg("--manifest-path").arg(&manifest).args(["-p", "raft-examples", "--bin", app]);
    cmd.arg("--target-dir").arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if !cfg!(feature = "tokio") {
        cmd.arg("--no-default-features");
    }
    if cfg!(feature = "smol") {
        cmd.args(["--features", "smol"]);
    }
    println!("building the {app} binary: cargo build -p raft-examples --bin {app} ({profile})");
    let status = cmd.status().map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("building {app} failed ({status})"));
    }
    Ok(())
}

/// Finds (and, under cargo, first builds) the app binary next to this executable.
fn app_binary(app: &str, no_build: bool) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    if !no_build {
        if let Ok(cargo) = std::env::var("CARGO") {
            cargo_build(&cargo, app, &exe)?;
        }
    }
    let bin = exe.with_file_name(format!("{app}{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        return Err(format!(
            "the {app} binary is not at {}; build it first with\n    cargo build --release -p raft-examples --bin {app}\n\
             or start the launcher with\n    cargo run --release -p raft-examples --bin cluster -- {app}",
            bin.display()
        ));
    }
    Ok(bin)
}

/// What to start: the app's nodes on the base ports, with `--dns` for the DNS app and,
/// with `--tls`, fresh certificates.
fn spec_of(cli: &Cli, bin: PathBuf, dir: &Path) -> Result<(Spec, Option<ClusterCerts>), String> {
    let nodes = usize::from(cli.nodes);
    let mut spec = Spec::app(bin, nodes);
    spec.ports = Ports::Base { host: cli.place.host.clone(), base: cli.place.base_port };
    spec.data = Data::At(dir.to_path_buf());
    spec.own_process_group = true;
    let certs = if cli.tls {
        // Every id the launcher may use, so that `cluster add --tls` finds one.
        let ids: Vec<u64> = (1..=MAX_NODES).collect();
        let certs = ClusterCerts::generate(dir, &ids, std::slice::from_ref(&cli.place.host))?;
        spec.https = Some(certs.https_trust()?);
        Some(certs)
    } else {
        None
    };
    let dns = cli.app == AppName::Dns;
    if dns {
        for id in 1..=nodes as u64 {
            dns_port(cli.place.base_port, id)?;
        }
    }
    let (host, base, node_certs) = (cli.place.host.clone(), cli.place.base_port, certs.clone());
    spec.extra_args = Arc::new(move |id| {
        let mut args = Vec::new();
        if let (true, Ok(port)) = (dns, dns_port(base, id)) {
            args.extend(["--dns".to_string(), format!("{host}:{port}")]);
        }
        if let Some(certs) = &node_certs {
            args.extend(certs.node_args(id));
        }
        args
    });
    Ok((spec, certs))
}

/// Prints the nodes' addresses and example commands.
fn print_intro(cli: &Cli, cluster: &LocalCluster, dir: &Path, reused: bool, certs: Option<&ClusterCerts>) {
    let app = cli.app.name();
    let scheme = if certs.is_some() { "https" } else { "http" };
    let http_addrs: Vec<String> = cluster.http_endpoints().iter().map(|a| format!("{scheme}://{a}")).collect();
    println!();
    println!(
        "{} cluster of {} nodes, data in {} ({})",
        app,
        cluster.nodes.len(),
        dir.display(),
        if reused { "reused: the nodes restart from it" } else { "new" }
    );
    for n in &cluster.nodes {
        println!("  node {}: {scheme}://{}   log: {}", n.id, n.http, n.log.display());
    }
    if let Some(certs) = certs {
        println!("  TLS between the nodes and HTTPS, throwaway CA: {}", certs.ca().display());
    }
    if cli.app == AppName::Dns {
        let ports: Vec<String> =
            dns_ports_of(cli.place.base_port, cluster.nodes.len()).iter().map(ToString::to_string).collect();
        println!("  DNS (UDP and TCP) on ports {}, zone service.local.", ports.join(", "));
    }
    println!();
    println!("Try (any node accepts any request):");
    let curl = match certs {
        Some(c) => format!("curl --cacert {}", c.ca().display()),
        None => "curl".to_string(),
    };
    for line in examples(cli.app, &http_addrs, &dns_ports_of(cli.place.base_port, cluster.nodes.len())) {
        match line.strip_prefix("curl") {
            Some(rest) => println!("  {curl}{rest}"),
            None => println!("  {line}"),
        }
    }
    println!();
    println!("Ctrl-C stops every node.");
    println!();
}

fn run(cli: Cli) -> Result<(), String> {
    let app = cli.app.name();
    let bin = app_binary(app, cli.place.no_build)?;
    let dir = cli.place.data_dir.join(app);
    let reused = (1..=usize::from(cli.nodes)).any(|id| dir.join(format!("node-{id}")).exists());
    let (spec, certs) = spec_of(&cli, bin, &dir)?;
    LocalCluster::check_ports_free(&spec).map_err(|e| format!("{e}; is a cluster already running? Try --base-port"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;

    // Dropping the cluster on an error kills the nodes already started.
    let mut cluster = LocalCluster::start(spec)?;
    print_intro(&cli, &cluster, &dir, reused, certs.as_ref());

    let tty = std::io::stdout().is_terminal();
    let mut table = StatusTable::new(METRICS_TIMEOUT);
    let mut drawn_lines = 0;
    let mut last_table = String::new();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let text = table.refresh(&mut cluster);
        if tty {
            let mut out = std::io::stdout().lock();
            if drawn_lines > 0 {
                // Back to the first line of the previous table, and clear below.
                let _ = write!(out, "\x1b[{drawn_lines}F\x1b[J");
            }
            let _ = write!(out, "{text}");
            let _ = out.flush();
            drawn_lines = text.lines().count();
        } else if text != last_table {
            print!("{text}");
            last_table = text;
        }
        while !stop.load(Ordering::SeqCst) && started.elapsed() < POLL_INTERVAL {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!();
    println!("stopping the nodes");
    stop_all(&mut cluster);
    Ok(())
}

/// How long `cluster add` waits for an admin request (a promotion waits for the new
/// node to catch up).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `cluster add`: finds the cluster through any node's `GET /cluster`, starts the next
/// node with `--join` and makes it a voter.
fn add(cli: AddCli) -> Result<(), String> {
    use raft_examples::launch::client;
    let app = cli.app.name();
    let bin = app_binary(app, cli.place.no_build)?;
    let dir = cli.place.data_dir.join(app);
    let port = |offset: u64, id: u64| {
        u16::try_from(u64::from(cli.place.base_port) + offset + id)
            .map_err(|_| format!("--base-port {} is too high", cli.place.base_port))
    };
    let http = |id: u64| port(1000, id).map(|p| format!("{}:{p}", cli.place.host));
    // Over HTTPS with --tls, trusting the CA the launcher made.
    let trust = if cli.tls {
        let ca = dir.join("tls").join("ca.pem");
        let pem =
            std::fs::read(&ca).map_err(|e| format!("{}: {e} (was the cluster started with --tls?)", ca.display()))?;
        Some(client::HttpsTrust::from_ca_pem(&pem)?)
    } else {
        None
    };
    let mut found = None;
    for id in 1..=MAX_NODES {
        let r = client::request_with(trust.as_ref(), &http(id)?, "GET", "/cluster", None, Duration::from_secs(1));
        if let (200, Ok(v)) = (r.status, serde_json::from_slice::<serde_json::Value>(&r.body)) {
            found = Some((id, v));
            break;
        }
    }
    let (via, shown) = found.ok_or_else(|| {
        format!("no node answers GET /cluster on {}:{}..", cli.place.host, cli.place.base_port + 1001)
    })?;
    let ids = |key: &str| -> Vec<u64> {
        shown[key].as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect()).unwrap_or_default()
    };
    let (voters, learners) = (ids("voters"), ids("learners"));
    let id = (1..=MAX_NODES)
        .find(|id| !voters.contains(id) && !learners.contains(id) && !dir.join(format!("node-{id}")).exists())
        .ok_or("the launcher's clusters have 7 nodes at most")?;
    let join: Vec<String> = shown["nodes"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some(format!("{k}={}", v["raft"].as_str()?))).collect())
        .unwrap_or_default();
    if join.is_empty() {
        return Err("GET /cluster shows no member's Raft address".into());
    }
    let (raft_addr, http_addr) = (format!("{}:{}", cli.place.host, port(0, id)?), http(id)?);
    let certs = if cli.tls { Some(ClusterCerts::existing(&dir, id)?) } else { None };
    let joining = Joining { id, raft_addr: &raft_addr, http_addr: &http_addr, join: &join.join(",") };
    let pid = start_joining(&cli, &bin, &dir, &joining, certs.as_ref(), trust.as_ref())?;
    println!(
        "node {id} started (pid {pid}), Raft {raft_addr}, HTTP {http_addr}, log {}",
        dir.join(format!("node-{id}.log")).display()
    );
    let via = http(via)?;
    let body = format!(r#"{{"id":{id},"raft":"{raft_addr}","http":"{http_addr}"}}"#);
    for (path, body) in [
        ("/cluster/learners", body),
        ("/cluster/voters", {
            let all: Vec<String> = voters.iter().chain([&id]).map(ToString::to_string).collect();
            format!(r#"{{"voters":[{}]}}"#, all.join(","))
        }),
    ] {
        let r = client::request_with(trust.as_ref(), &via, "POST", path, Some(body.as_bytes()), ADMIN_TIMEOUT);
        if r.status != 200 {
            return Err(format!("POST {path} {body}: {} {}", r.status, r.text()));
        }
        println!("POST {path} {body}: {}", r.text().trim());
    }
    Ok(())
}

/// The node `cluster add` starts.
struct Joining<'a> {
    id: u64,
    raft_addr: &'a str,
    http_addr: &'a str,
    /// The members to contact, `id=host:port,...`.
    join: &'a str,
}

/// Starts the node in the background with `--join` (and its certificate with `--tls`);
/// returns its pid once it answers `/status`.
fn start_joining(
    cli: &AddCli,
    bin: &Path,
    dir: &Path,
    node: &Joining<'_>,
    certs: Option<&ClusterCerts>,
    trust: Option<&raft_examples::launch::client::HttpsTrust>,
) -> Result<u32, String> {
    let Joining { id, raft_addr, http_addr, join } = *node;
    let log = dir.join(format!("node-{id}.log"));
    let open =
        || std::fs::File::options().create(true).append(true).open(&log).map_err(|e| format!("{}: {e}", log.display()));
    let data = dir.join(format!("node-{id}"));
    let mut cmd = Command::new(bin);
    cmd.args(["--id", &id.to_string(), "--listen", raft_addr, "--http", http_addr, "--join", join, "--data-dir"]);
    cmd.arg(&data).stdin(std::process::Stdio::null()).stdout(open()?).stderr(open()?);
    if cli.app == AppName::Dns {
        cmd.args(["--dns".to_string(), format!("{}:{}", cli.place.host, dns_port(cli.place.base_port, id)?)]);
    }
    if let Some(certs) = certs {
        cmd.args(certs.node_args(id));
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = || {
        raft_examples::launch::client::request_with(
            trust,
            http_addr,
            "GET",
            "/status",
            None,
            Duration::from_millis(500),
        )
    };
    while status().status != 200 {
        if Instant::now() > deadline {
            return Err(format!("node {id} does not answer /status; see {}", log.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child.id())
}

/// Sends SIGTERM to every running node, waits for each to exit (SIGKILL after a
/// timeout), and prints how each ended.
fn stop_all(cluster: &mut LocalCluster) {
    for (i, status) in cluster.stop_all(STOP_TIMEOUT).into_iter().enumerate() {
        let n = &cluster.nodes[i];
        match status {
            Some(s) if s.success() => println!("  node {} stopped", n.id),
            Some(s) => println!("  node {} ended: {s} (see {})", n.id, n.log.display()),
            None => println!("  node {}: could not wait for it", n.id),
        }
    }
}

/// Node `id`'s DNS port: 1600 above its Raft port (8601 to 8603 by default).
fn dns_port(base: u16, id: u64) -> Result<u16, String> {
    u16::try_from(u64::from(base) + 1600 + id).map_err(|_| format!("--base-port {base} is too high for the DNS ports"))
}

fn dns_ports_of(base: u16, nodes: usize) -> Vec<u16> {
    (1..=nodes as u64).filter_map(|id| dns_port(base, id).ok()).collect()
}

fn examples(app: AppName, http: &[String], dns: &[u16]) -> Vec<String> {
    // With fewer than three nodes, the examples go to the same node more than once.
    let at = |i: usize| http.get(i % http.len().max(1)).cloned().unwrap_or_default();
    let [a, b, c] = [at(0), at(1), at(2)];
    match app {
        AppName::Kv => vec![
            format!("curl -X PUT -d 'world' {a}/kv/hello"),
            format!("curl {b}/kv/hello"),
            format!("curl '{c}/kv/hello?stale'"),
            format!("curl -X POST -d '{{\"expected\":\"world\",\"new\":\"there\"}}' {b}/kv/hello/cas"),
            format!("curl -X DELETE {c}/kv/hello"),
            format!("curl {a}/status"),
        ],
        AppName::Counter => vec![
            format!("curl -X POST {a}/incr"),
            format!("curl -X POST -d 5 {b}/incr"),
            format!("curl {c}/value"),
            format!("curl {a}/status"),
        ],
        AppName::Dns => {
            let (d1, d2) = (dns.first().copied().unwrap_or(8601), dns.get(1).copied().unwrap_or(8602));
            vec![
                format!(
                    "curl -X PUT -d '{{\"address\":\"127.0.0.10\",\"port\":8080,\"tags\":[\"primary\"]}}' \
{a}/v1/services/web/web-1"
                ),
                format!("curl -X PUT -d '{{\"address\":\"127.0.0.11\",\"port\":8080,\"ttl\":30}}' {b}/v1/services/web/web-2"),
                format!("curl {c}/v1/services/web"),
                format!("dig @127.0.0.1 -p {d1} web.service.local A"),
                format!("dig @127.0.0.1 -p {d2} _web._tcp.service.local SRV"),
                format!("dig @127.0.0.1 -p {d1} web-1.web.service.local TXT"),
                format!("curl -X POST {b}/v1/services/web/web-2/renew"),
                format!("curl -X DELETE {c}/v1/services/web/web-1"),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_default_to_three_and_range_from_one_to_seven() {
        assert_eq!(Cli::try_parse_from(["cluster", "kv"]).unwrap().nodes, 3);
        assert_eq!(Cli::try_parse_from(["cluster", "kv", "--nodes", "7"]).unwrap().nodes, 7);
        for bad in ["0", "8", "x"] {
            assert!(Cli::try_parse_from(["cluster", "kv", "--nodes", bad]).is_err(), "--nodes {bad}");
        }
    }

    #[test]
    fn examples_work_for_a_single_node() {
        let one = ["http://127.0.0.1:8001".to_string()];
        for app in [AppName::Kv, AppName::Counter, AppName::Dns] {
            assert!(examples(app, &one, &[8601]).iter().all(|l| !l.contains("8002")));
        }
    }
}

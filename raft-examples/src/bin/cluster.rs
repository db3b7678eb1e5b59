//! Starts a local three-node cluster of an example app (`kv` or `counter`) as child
//! processes on loopback, prints each node's HTTP address and curl examples, then shows
//! a live status table until Ctrl-C, which stops every node cleanly.
//!
//! ```text
//! cargo run --release -p raft-examples --bin cluster -- kv
//! cargo run --release -p raft-examples --bin cluster -- counter
//! ```
//!
//! Node N listens for Raft on `<base-port> + N` and for HTTP on `<base-port> + 1000 + N`
//! (7001-7003 and 8001-8003 by default) and keeps its data in
//! `<data-dir>/<app>/node-N` (its log output goes to `node-N.log` beside it). Running the
//! launcher again restarts the nodes from that data.
//!
//! Run through `cargo run`, the launcher first builds the app binary with the same
//! profile and features (`cargo build`), so it is never stale; run directly, it expects
//! the app binary next to its own executable.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const NODES: u64 = 3;
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AppName {
    /// The replicated key-value store.
    Kv,
    /// The replicated counter.
    Counter,
}

impl AppName {
    fn name(self) -> &'static str {
        match self {
            AppName::Kv => "kv",
            AppName::Counter => "counter",
        }
    }
}

#[derive(Parser)]
#[command(about = "Runs a local three-node cluster of an example app with a live status table")]
struct Cli {
    /// The app to run.
    #[arg(value_enum)]
    app: AppName,
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

struct Node {
    id: u64,
    http: String,
    log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
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

fn port(base: u16, offset: u64) -> Result<u16, String> {
    u16::try_from(u64::from(base) + offset).map_err(|_| format!("--base-port {base} is too high"))
}

fn run(cli: Cli) -> Result<(), String> {
    let app = cli.app.name();
    let bin = app_binary(app, cli.no_build)?;
    let dir = cli.data_dir.join(app);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let reused = (1..=NODES).any(|id| dir.join(format!("node-{id}")).exists());

    let mut raft_addrs = Vec::new();
    let mut http_addrs = Vec::new();
    for id in 1..=NODES {
        raft_addrs.push(format!("{}:{}", cli.host, port(cli.base_port, id)?));
        http_addrs.push(format!("{}:{}", cli.host, port(cli.base_port, 1000 + id)?));
    }
    for addr in raft_addrs.iter().chain(&http_addrs) {
        if let Err(e) = TcpListener::bind(addr.as_str()) {
            return Err(format!("{addr} is not free ({e}); is a cluster already running? Try --base-port"));
        }
    }
    let peers: Vec<String> = raft_addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let peers = peers.join(",");

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;

    let mut nodes = Vec::new();
    for id in 1..=NODES {
        let i = (id - 1) as usize;
        let log = dir.join(format!("node-{id}.log"));
        match spawn(&bin, id, &raft_addrs[i], &http_addrs[i], &peers, &dir.join(format!("node-{id}")), &log) {
            Ok(child) => nodes.push(Node { id, http: http_addrs[i].clone(), log, child, exited: None }),
            Err(e) => {
                stop_all(&mut nodes);
                return Err(e);
            }
        }
    }

    println!();
    println!(
        "{} cluster of {NODES} nodes, data in {} ({})",
        app,
        dir.display(),
        if reused { "reused: the nodes restart from it" } else { "new" }
    );
    for n in &nodes {
        println!("  node {}: http://{}   log: {}", n.id, n.http, n.log.display());
    }
    println!();
    println!("Try (any node accepts any request):");
    for line in examples(cli.app, &http_addrs) {
        println!("  {line}");
    }
    println!();
    println!("Ctrl-C stops every node.");
    println!();

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(400)))
        .http_status_as_error(false)
        .build()
        .into();
    let tty = std::io::stdout().is_terminal();
    let mut drawn_lines = 0;
    let mut last_table = String::new();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let table = status_table(&agent, &mut nodes);
        if tty {
            let mut out = std::io::stdout().lock();
            if drawn_lines > 0 {
                // Back to the first line of the previous table, and clear below.
                let _ = write!(out, "\x1b[{drawn_lines}F\x1b[J");
            }
            let _ = write!(out, "{table}");
            let _ = out.flush();
            drawn_lines = table.lines().count();
        } else if table != last_table {
            print!("{table}");
            last_table = table;
        }
        while !stop.load(Ordering::SeqCst) && started.elapsed() < POLL_INTERVAL {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!();
    println!("stopping the nodes");
    stop_all(&mut nodes);
    Ok(())
}

fn spawn(bin: &Path, id: u64, listen: &str, http: &str, peers: &str, data: &Path, log: &Path) -> Result<Child, String> {
    let open_log = || -> Result<File, String> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))
    };
    let mut cmd = Command::new(bin);
    cmd.args(["--id", &id.to_string(), "--listen", listen, "--http", http, "--peers", peers, "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?);
    // A process group of its own: Ctrl-C in the terminal reaches only the launcher, which
    // then stops the nodes itself.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// Sends SIGTERM to every running node, waits for each to exit (SIGKILL after a
/// timeout), and prints how each ended.
fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        if n.exited.is_none() && n.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(n.child.id() as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for n in nodes.iter_mut() {
        let status = loop {
            match n.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = n.child.kill();
                    break n.child.wait().ok();
                }
            }
        };
        match status {
            Some(s) if s.success() => println!("  node {} stopped", n.id),
            Some(s) => println!("  node {} ended: {s} (see {})", n.id, n.log.display()),
            None => println!("  node {}: could not wait for it", n.id),
        }
    }
}

/// One poll of every node's `/status`, as the text of the table.
fn status_table(agent: &ureq::Agent, nodes: &mut [Node]) -> String {
    let mut out = format!(
        "{:<5} {:<22} {:<10} {:>6} {:>7} {:>8} {:>8} {:>8}\n",
        "node", "http", "role", "term", "leader", "commit", "applied", "pid"
    );
    for n in nodes.iter_mut() {
        if n.exited.is_none() {
            n.exited = n.child.try_wait().ok().flatten();
        }
        let row = match n.exited {
            Some(status) => format!("exited: {status}, see {}", n.log.display()),
            None => match fetch_status(agent, &n.http) {
                Ok(s) => {
                    let field = |k: &str| match &s[k] {
                        serde_json::Value::Null => "-".to_string(),
                        serde_json::Value::String(v) => v.clone(),
                        v => v.to_string(),
                    };
                    format!(
                        "{:<10} {:>6} {:>7} {:>8} {:>8} {:>8}",
                        field("role"),
                        field("term"),
                        field("leader"),
                        field("commit_index"),
                        field("applied_index"),
                        n.child.id()
                    )
                }
                Err(e) => format!("{:<10} {:>6} {:>7} {:>8} {:>8} {:>8}  ({e})", "?", "", "", "", "", n.child.id()),
            },
        };
        out.push_str(&format!("{:<5} {:<22} {row}\n", n.id, format!("http://{}", n.http)));
    }
    out
}

fn fetch_status(agent: &ureq::Agent, http: &str) -> Result<serde_json::Value, String> {
    let mut resp = agent.get(&format!("http://{http}/status")).call().map_err(|e| short_error(&e.to_string()))?;
    let body = resp.body_mut().read_to_string().map_err(|e| short_error(&e.to_string()))?;
    serde_json::from_str(&body).map_err(|e| format!("bad status: {e}"))
}

fn short_error(e: &str) -> String {
    if e.contains("onnection refused") {
        "not answering yet".into()
    } else if e.contains("imeout") || e.contains("imed out") {
        "no answer (paused?)".into()
    } else {
        e.chars().take(40).collect()
    }
}

fn examples(app: AppName, http: &[String]) -> Vec<String> {
    let [a, b, c] = [&http[0], &http[1], &http[2]];
    match app {
        AppName::Kv => vec![
            format!("curl -X PUT -d 'world' http://{a}/kv/hello"),
            format!("curl http://{b}/kv/hello"),
            format!("curl 'http://{c}/kv/hello?stale'"),
            format!("curl -X POST -d '{{\"expected\":\"world\",\"new\":\"there\"}}' http://{b}/kv/hello/cas"),
            format!("curl -X DELETE http://{c}/kv/hello"),
            format!("curl http://{a}/status"),
        ],
        AppName::Counter => vec![
            format!("curl -X POST http://{a}/incr"),
            format!("curl -X POST -d 5 http://{b}/incr"),
            format!("curl http://{c}/value"),
            format!("curl http://{a}/status"),
        ],
    }
}

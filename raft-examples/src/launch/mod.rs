//! Running a cluster of node processes on this machine: the one launcher behind the
//! `cluster` binary, the cluster benchmarks and the process tests.
//!
//! A [`LocalCluster`] gives each node its addresses ([`Ports`]), a data directory and a
//! log file ([`Data`]), starts the processes, and kills (SIGKILL), stops (SIGTERM),
//! pauses (SIGSTOP), resumes and restarts them, and polls their `/status` with the small
//! HTTP client in [`client`]. Every process it started is killed when it is dropped.
//! What the program is told comes from a [`CommandLine`]: by default the apps' flags
//! ([`app_command_line`]), or any other program's (the benchmarks run etcd with it).
//!
//! [`scrape`] reads the nodes' `GET /metrics` (gauges, histograms, the difference of two
//! scrapes and its quantiles); [`table`] is the `cluster` binary's live status table,
//! built on it.

pub mod certs;
pub mod client;
pub mod firewall;
pub mod scrape;
pub mod table;

use std::fs::File;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use self::client::Reply;

/// How often a wait polls.
const POLL: Duration = Duration::from_millis(25);

/// The addresses the nodes get.
#[derive(Clone, Debug)]
pub enum Ports {
    /// Free loopback ports, picked when the cluster starts.
    Free,
    /// Node N listens for Raft on `base + N` and for HTTP on `base + 1000 + N`, on `host`.
    Base {
        /// The address the nodes bind to.
        host: String,
        /// The base port.
        base: u16,
    },
    /// Node N gets the loopback address `127.a.b.N` of its own, where `[a, b]` is `net`:
    /// it listens there (on free ports) and connects to its peers from there
    /// (`--bind-source`), so that a firewall can cut the traffic between chosen nodes.
    Loopback {
        /// The second and third bytes of the nodes' addresses.
        net: [u8; 2],
    },
}

impl Ports {
    /// The address node `id` is given under [`Ports::Loopback`].
    pub fn loopback_address(net: [u8; 2], id: u64) -> Result<std::net::Ipv4Addr, String> {
        let last = u8::try_from(id).ok().filter(|&b| b < 255).ok_or_else(|| format!("node id {id} has no address"))?;
        Ok(std::net::Ipv4Addr::new(127, net[0], net[1], last))
    }
}

/// Where the nodes keep their data: node N in `node-N`, its output in `node-N.log`.
#[derive(Clone, Debug)]
pub enum Data {
    /// A fresh temporary directory (in `parent`, or the system's), removed with the
    /// cluster.
    Temp {
        /// The directory to create it in.
        parent: Option<PathBuf>,
        /// The start of its name.
        prefix: String,
    },
    /// This directory, created if missing and kept: a second run reuses the data.
    At(PathBuf),
}

/// The arguments of node `i` of `members` (0-based), given every member's addresses.
pub type CommandLine = Arc<dyn Fn(&[Member], usize) -> Vec<String> + Send + Sync>;

/// What to start.
#[derive(Clone)]
pub struct Spec {
    /// The program each node runs.
    pub program: PathBuf,
    /// How many nodes.
    pub nodes: usize,
    /// Their addresses.
    pub ports: Ports,
    /// Their data directories.
    pub data: Data,
    /// Their command lines.
    pub command_line: CommandLine,
    /// Extra arguments for node `id` (1-based), after the command line.
    pub extra_args: Arc<dyn Fn(u64) -> Vec<String> + Send + Sync>,
    /// Environment variables set for every node.
    pub env: Vec<(String, String)>,
    /// Start each node in a process group of its own, so that Ctrl-C in a terminal
    /// reaches only the launching process (which then stops the nodes itself).
    pub own_process_group: bool,
    /// The nodes serve HTTPS with certificates from this CA: the launcher's requests
    /// (`/status`, the table's `/metrics`) speak HTTPS and verify them.
    pub https: Option<client::HttpsTrust>,
}

impl Spec {
    /// `nodes` nodes of the app at `program` on free ports, with data in a temp dir.
    pub fn app(program: impl Into<PathBuf>, nodes: usize) -> Spec {
        Spec {
            program: program.into(),
            nodes,
            ports: Ports::Free,
            data: Data::Temp { parent: None, prefix: "cluster-".into() },
            command_line: Arc::new(app_command_line),
            extra_args: Arc::new(|_| Vec::new()),
            env: Vec::new(),
            own_process_group: false,
            https: None,
        }
    }
}

/// The command line of an app node (see `host::NodeArgs`): `--id`, `--listen`,
/// `--http`, `--peers` with every member, `--peers-http` with their HTTP addresses and
/// `--data-dir`.
pub fn app_command_line(members: &[Member], i: usize) -> Vec<String> {
    let node = &members[i];
    let peers = members.iter().map(|m| format!("{}={}", m.id, m.raft)).collect::<Vec<_>>().join(",");
    let peers_http = members.iter().map(|m| format!("{}={}", m.id, m.http)).collect::<Vec<_>>().join(",");
    vec![
        "--id".into(),
        node.id.to_string(),
        "--listen".into(),
        node.raft.to_string(),
        "--http".into(),
        node.http.to_string(),
        "--peers".into(),
        peers,
        "--peers-http".into(),
        peers_http,
        "--data-dir".into(),
        node.data_dir.display().to_string(),
    ]
    .into_iter()
    .chain(node.source.iter().flat_map(|ip| ["--bind-source".to_string(), ip.to_string()]))
    .collect()
}

/// One node: its addresses, files and process.
pub struct Member {
    /// The node id (1-based).
    pub id: u64,
    /// The Raft (peer) address.
    pub raft: SocketAddr,
    /// The HTTP (client) address.
    pub http: SocketAddr,
    /// The address its connections to its peers come from, if one is set.
    pub source: Option<std::net::IpAddr>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The log file: stdout and stderr of every run, appended.
    pub log: PathBuf,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

/// A running cluster of node processes on this machine.
pub struct LocalCluster {
    spec: Spec,
    /// The nodes; index `i` is node `i + 1`.
    pub nodes: Vec<Member>,
    dir: PathBuf,
    // Kept for its Drop, which removes a temporary data directory.
    _temp: Option<tempfile::TempDir>,
}

/// Binds `n` distinct free loopback ports at once and releases them.
pub fn free_ports(n: usize) -> Result<Vec<SocketAddr>, String> {
    free_ports_on(std::net::Ipv4Addr::LOCALHOST, n)
}

/// Binds `n` distinct free ports of `ip` at once and releases them.
fn free_ports_on(ip: std::net::Ipv4Addr, n: usize) -> Result<Vec<SocketAddr>, String> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((ip, 0)).map_err(|e| format!("cannot bind a port of {ip}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map_err(|e| e.to_string())).collect()
}

/// Node `id`'s Raft and HTTP addresses under [`Ports::Base`].
fn base_addrs(host: &str, base: u16, id: u64) -> Result<(SocketAddr, SocketAddr), String> {
    let at = |offset: u64| -> Result<SocketAddr, String> {
        let port = u16::try_from(u64::from(base) + offset).map_err(|_| format!("--base-port {base} is too high"))?;
        let addr = format!("{host}:{port}");
        addr.to_socket_addrs()
            .map_err(|e| format!("`{addr}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{addr}` resolves to no address"))
    };
    Ok((at(id)?, at(1000 + id)?))
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/<pid>/task/*/stat`); true where there is no `/proc` to tell.
fn all_threads_stopped(pid: Pid) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses and may hold any
        // character.
        stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().next()).is_none_or(|state| state == "T")
    })
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl LocalCluster {
    /// Lays out `spec`'s nodes and starts every one; returns once they are spawned
    /// ([`LocalCluster::wait_serving`] waits until one answers).
    pub fn start(spec: Spec) -> Result<LocalCluster, String> {
        let mut cluster = LocalCluster::lay_out(spec)?;
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Starts `spec`'s nodes and waits until each answers `/status` within `patience`.
    /// Should a node exit while starting (another process took one of the free ports in
    /// the meantime), the cluster is started afresh on new ports, up to three times.
    pub fn start_serving(spec: Spec, patience: Duration) -> Result<LocalCluster, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cluster = LocalCluster::start(spec.clone())?;
            match (0..cluster.nodes.len()).try_for_each(|i| cluster.wait_serving(i, patience)) {
                Ok(()) => return Ok(cluster),
                Err(e) if attempt < 3 && matches!(spec.ports, Ports::Free | Ports::Loopback { .. }) => {
                    eprintln!("starting the cluster again on other ports: {e}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn lay_out(spec: Spec) -> Result<LocalCluster, String> {
        if spec.nodes == 0 {
            return Err("a cluster needs at least one node".into());
        }
        let (dir, temp) = match &spec.data {
            Data::At(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                (dir.clone(), None)
            }
            Data::Temp { parent, prefix } => {
                let mut builder = tempfile::Builder::new();
                builder.prefix(prefix);
                let temp = match parent {
                    Some(p) => builder.tempdir_in(p),
                    None => builder.tempdir(),
                }
                .map_err(|e| format!("cannot create a temp dir: {e}"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let free = match &spec.ports {
            Ports::Free => free_ports(2 * spec.nodes)?,
            Ports::Base { .. } | Ports::Loopback { .. } => Vec::new(),
        };
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            let id = i as u64 + 1;
            let (raft, http, source) = match &spec.ports {
                Ports::Free => (free[2 * i], free[2 * i + 1], None),
                Ports::Base { host, base } => {
                    let (raft, http) = base_addrs(host, *base, id)?;
                    (raft, http, None)
                }
                Ports::Loopback { net } => {
                    let ip = Ports::loopback_address(*net, id)?;
                    let ports = free_ports_on(ip, 2)?;
                    (ports[0], ports[1], Some(ip.into()))
                }
            };
            nodes.push(Member {
                id,
                raft,
                http,
                source,
                data_dir: dir.join(format!("node-{id}")),
                log: dir.join(format!("node-{id}.log")),
                extra_args: (spec.extra_args)(id),
                child: None,
                paused: false,
            });
        }
        Ok(LocalCluster { spec, nodes, dir, _temp: temp })
    }

    /// Fails naming the first address of the cluster that another process holds.
    pub fn check_ports_free(spec: &Spec) -> Result<(), String> {
        if let Ports::Base { host, base } = &spec.ports {
            let addrs = (1..=spec.nodes as u64).map(|id| base_addrs(host, *base, id)).collect::<Result<Vec<_>, _>>()?;
            for addr in addrs.iter().map(|a| a.0).chain(addrs.iter().map(|a| a.1)) {
                if let Err(e) = TcpListener::bind(addr) {
                    return Err(format!("{addr} is not free ({e})"));
                }
            }
        }
        Ok(())
    }

    /// The directory holding the nodes' data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The program the nodes run.
    pub fn program(&self) -> &Path {
        &self.spec.program
    }

    /// Starts node index `i` (again), with its data directory as it is.
    pub fn spawn(&mut self, i: usize) -> Result<(), String> {
        let args = (self.spec.command_line)(&self.nodes, i);
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Err(format!("node {} is already running", node.id));
        }
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(&node.log)
                .map_err(|e| format!("cannot open {}: {e}", node.log.display()))
        };
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&args).args(&node.extra_args).stdin(Stdio::null()).stdout(open()?).stderr(open()?);
        cmd.envs(self.spec.env.iter().map(|(k, v)| (k, v)));
        if self.spec.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", self.spec.program.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Kills node index `i` (if it runs) and starts it again on its data.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)
    }

    /// SIGKILLs node index `i` and reaps it; the instant the signal was sent, if the node
    /// ran.
    pub fn kill(&mut self, i: usize) -> Option<Instant> {
        let mut child = self.nodes[i].child.take()?;
        self.nodes[i].paused = false;
        let _ = child.kill();
        let at = Instant::now();
        let _ = child.wait();
        Some(at)
    }

    /// SIGTERMs node index `i` and waits up to `timeout` for it to exit (SIGKILL after
    /// that); how it ended, or `None` if it did not run.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        self.nodes[i].child.as_ref()?;
        self.stop_each(&[i], timeout).pop().flatten()
    }

    /// SIGTERMs every running node and waits up to `timeout` in all for them to exit
    /// (SIGKILL after that); how each ended, in node order (`None`: it did not run, or
    /// could not be waited for).
    pub fn stop_all(&mut self, timeout: Duration) -> Vec<Option<ExitStatus>> {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.stop_each(&all, timeout)
    }

    fn stop_each(&mut self, which: &[usize], timeout: Duration) -> Vec<Option<ExitStatus>> {
        for &i in which {
            if self.exited(i).is_none() {
                if let Some(pid) = self.pid(i) {
                    if self.nodes[i].paused {
                        let _ = kill(pid, Signal::SIGCONT);
                    }
                    let _ = kill(pid, Signal::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + timeout;
        which
            .iter()
            .map(|&i| {
                let mut child = self.nodes[i].child.take()?;
                self.nodes[i].paused = false;
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                        _ => {
                            let _ = child.kill();
                            break child.wait().ok();
                        }
                    }
                }
            })
            .collect()
    }

    /// SIGSTOPs node index `i` and waits (up to a second) until every thread of it has
    /// stopped, so that it answers nothing sent after this returns.
    pub fn pause(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, Signal::SIGSTOP)?;
        self.nodes[i].paused = true;
        if let Some(pid) = self.pid(i) {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !all_threads_stopped(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// SIGCONTs node index `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, Signal::SIGCONT)?;
        self.nodes[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: Signal) -> Result<(), String> {
        let pid = self.pid(i).ok_or_else(|| format!("node {} is not running", i + 1))?;
        kill(pid, signal).map_err(|e| format!("cannot send {signal} to node {}: {e}", i + 1))
    }

    /// The process id of node index `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<Pid> {
        let child = self.nodes[i].child.as_ref()?;
        i32::try_from(child.id()).ok().map(Pid::from_raw)
    }

    /// Whether node index `i` was started and not killed or stopped since (it may have
    /// exited on its own: see [`LocalCluster::exited`]).
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Whether node index `i` is paused.
    pub fn paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// How node index `i` ended, if it was started and has exited on its own.
    pub fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        self.nodes[i].child.as_mut()?.try_wait().ok().flatten()
    }

    /// Fails, with the end of its log, if a node that should run has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if let Some(status) = self.exited(i) {
                self.nodes[i].child = None;
                return Err(format!(
                    "node {} exited ({status}); its last output:\n{}",
                    i + 1,
                    tail(&self.nodes[i].log, 20)
                ));
            }
        }
        Ok(())
    }

    /// The last `lines` lines of node index `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.nodes[i].log, lines)
    }

    /// The HTTP addresses of the nodes, in node order.
    pub fn http_endpoints(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.http).collect()
    }

    /// Sends one request to node index `i`'s HTTP address (see [`client::request`]).
    pub fn request(&self, i: usize, method: &str, path: &str, body: Option<&[u8]>, timeout: Duration) -> Reply {
        client::request_with(self.https(), &self.nodes[i].http.to_string(), method, path, body, timeout)
    }

    /// The CA the nodes' HTTPS certificates come from, if they serve HTTPS.
    pub fn https(&self) -> Option<&client::HttpsTrust> {
        self.spec.https.as_ref()
    }

    /// `GET /status` of node index `i`, if it answers 200 with JSON within `timeout`.
    pub fn status(&self, i: usize, timeout: Duration) -> Result<serde_json::Value, String> {
        let r = self.request(i, "GET", "/status", None, timeout);
        if r.status != 200 {
            return Err(if r.status == 0 { r.text() } else { format!("status {}", r.status) });
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("bad status: {e}"))
    }

    /// Waits until node index `i` answers `/status`; fails, with the end of its log, if
    /// it exits first, and after `patience`.
    pub fn wait_serving(&mut self, i: usize, patience: Duration) -> Result<(), String> {
        let id = self.nodes[i].id;
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.exited(i) {
                self.nodes[i].child = None;
                return Err(format!("node {id} exited with {status}:\n{}", self.log_tail(i, 40)));
            }
            if self.status(i, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("node {id} did not serve HTTP within {patience:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The index of the node that is leader in the highest term reported by the running,
    /// unpaused nodes, if a majority of all nodes agree on it.
    pub fn leader(&self) -> Option<usize> {
        let statuses: Vec<(usize, serde_json::Value)> = (0..self.nodes.len())
            .filter(|&i| self.running(i) && !self.paused(i))
            .filter_map(|i| self.status(i, Duration::from_secs(1)).ok().map(|s| (i, s)))
            .collect();
        let (i, s) = statuses.iter().filter(|(_, s)| s["role"] == "leader").max_by_key(|(_, s)| s["term"].as_u64())?;
        let id = s["id"].as_u64()?;
        let term = s["term"].as_u64()?;
        let agree =
            statuses.iter().filter(|(_, o)| o["leader"].as_u64() == Some(id) && o["term"].as_u64() == Some(term));
        (agree.count() * 2 > self.nodes.len()).then_some(*i)
    }

    /// SIGKILLs every node that runs.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_nodes_get_the_documented_flags_and_base_ports() {
        let mut spec = Spec::app("/bin/true", 3);
        spec.ports = Ports::Base { host: "127.0.0.1".into(), base: 7000 };
        spec.data = Data::At(std::env::temp_dir().join(format!("launch-test-{}", std::process::id())));
        let c = LocalCluster::lay_out(spec).expect("layout");
        assert_eq!(c.nodes[1].raft.port(), 7002);
        assert_eq!(c.nodes[1].http.port(), 8002);
        let args = app_command_line(&c.nodes, 1);
        assert_eq!(&args[..6], ["--id", "2", "--listen", "127.0.0.1:7002", "--http", "127.0.0.1:8002"]);
        assert_eq!(args[7], "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003");
        assert_eq!(args[8..10], ["--peers-http", "1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003"]);
        assert!(args[11].ends_with("node-2"));
        let _ = std::fs::remove_dir_all(c.dir());
        assert!(base_addrs("127.0.0.1", 65_000, 1).is_err(), "the HTTP port would pass 65535");
        assert_eq!(args.len(), 12, "no --bind-source without an address of its own");
    }

    #[test]
    fn nodes_with_addresses_of_their_own_listen_there_and_bind_their_connections_there() {
        let mut spec = Spec::app("/bin/true", 3);
        spec.ports = Ports::Loopback { net: [201, 7] };
        let c = LocalCluster::lay_out(spec).expect("layout");
        for (i, node) in c.nodes.iter().enumerate() {
            let ip = std::net::IpAddr::from([127, 201, 7, i as u8 + 1]);
            assert_eq!((node.raft.ip(), node.http.ip(), node.source), (ip, ip, Some(ip)));
            assert_ne!(node.raft.port(), node.http.port());
            let args = app_command_line(&c.nodes, i);
            assert_eq!(args[args.len() - 2..], ["--bind-source".to_string(), ip.to_string()]);
        }
        assert!(Ports::loopback_address([1, 1], 255).is_err());
    }

    #[test]
    fn a_paused_process_has_every_thread_stopped() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        assert!(!all_threads_stopped(pid));
        kill(pid, Signal::SIGSTOP).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "SIGSTOP did not stop the process");
            std::thread::sleep(Duration::from_millis(1));
        }
        kill(pid, Signal::SIGCONT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "SIGCONT did not resume the process");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

//! Running real app processes for the process-level tests: free loopback ports, a data
//! directory per node in a temp dir, signals, a small HTTP client and waits with
//! deadlines. Every child is killed when the cluster is dropped (also on a failed
//! assertion), and a failing test prints the end of each node's log.

#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A generous bound for anything the cluster should do "soon" (an election, a catch-up).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Binds `n` distinct free loopback ports and releases them.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

/// Polls `f` until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An HTTP answer: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code; 0 when the request failed without an answer.
    pub status: u16,
    /// The body (or the transport error's text when `status` is 0).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("expected JSON, got status {} body {:?}: {e}", self.status, self.text()))
    }
}

/// A blocking HTTP client that reports every status as a [`Reply`].
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Sends one request; a connection error becomes status 0.
pub fn request(agent: &ureq::Agent, method: &str, url: &str, body: Option<&[u8]>) -> Reply {
    let req = ureq::http::Request::builder().method(method).uri(url).body(body.unwrap_or_default().to_vec());
    let req = match req {
        Ok(r) => r,
        Err(e) => panic!("bad request {method} {url}: {e}"),
    };
    match agent.run(req) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap_or_default();
            Reply { status, body }
        }
        Err(e) => Reply { status: 0, body: e.to_string().into_bytes() },
    }
}

/// One app node process.
pub struct Node {
    /// The node id.
    pub id: u64,
    /// Raft address.
    pub raft: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Data directory.
    pub dir: PathBuf,
    /// Log file (stdout and stderr of every run, appended).
    pub log: PathBuf,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

/// A cluster of app processes on loopback.
pub struct Cluster {
    /// The app binary.
    pub bin: PathBuf,
    /// The nodes; index `i` is node `i + 1`.
    pub nodes: Vec<Node>,
    /// The `--peers` value.
    pub peers: String,
    /// The HTTP client.
    pub agent: ureq::Agent,
    tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` nodes of the app at `bin`, with `extra(id)` added to node `id`'s
    /// arguments, and waits until every node answers `/status`. Should a node exit
    /// while starting (another process took one of the free ports in the meantime),
    /// the cluster is started afresh on new ports, up to three times.
    pub fn start(bin: &str, n: usize, extra: impl Fn(u64) -> Vec<String>) -> Cluster {
        let mut tmp = Some(tempfile::tempdir().expect("temp dir"));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = tmp.as_ref().expect("the temp dir").path().join(format!("attempt-{attempt}"));
            let ports = free_ports(2 * n);
            let mut nodes = Vec::new();
            for i in 0..n {
                let id = i as u64 + 1;
                nodes.push(Node {
                    id,
                    raft: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
                    http: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                    dir: base.join(format!("node-{id}")),
                    log: base.join(format!("node-{id}.log")),
                    extra_args: extra(id),
                    child: None,
                    paused: false,
                });
            }
            std::fs::create_dir_all(&base).expect("create the attempt's directory");
            let peers = nodes.iter().map(|n| format!("{}={}", n.id, n.raft)).collect::<Vec<_>>().join(",");
            let mut cluster = Cluster { bin: PathBuf::from(bin), nodes, peers, agent: client(), tmp: tmp.take() };
            for i in 0..n {
                cluster.spawn(i);
            }
            match (0..n).try_for_each(|i| cluster.try_wait_serving(i)) {
                Ok(()) => return cluster,
                Err(e) if attempt < 3 => {
                    eprintln!("starting the cluster again on other ports: {e}");
                    tmp = cluster.tmp.take();
                    // Dropping the cluster kills its processes.
                    drop(cluster);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The temp dir holding the nodes' data and logs.
    pub fn dir(&self) -> &Path {
        self.tmp.as_ref().expect("the temp dir").path()
    }

    /// Starts node index `i` (again), with its data directory as it is.
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} is already running", node.id);
        let log = File::options().create(true).append(true).open(&node.log).expect("open log");
        let child = Command::new(&self.bin)
            .args(["--id", &node.id.to_string()])
            .args(["--listen", &node.raft.to_string()])
            .args(["--http", &node.http.to_string()])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(&node.dir)
            .args(&node.extra_args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        node.child = Some(child);
        node.paused = false;
    }

    /// Waits until node index `i` answers `/status`; panics (with its log) if it exits.
    pub fn wait_serving(&mut self, i: usize) {
        if let Err(e) = self.try_wait_serving(i) {
            panic!("{e}");
        }
    }

    /// Waits until node index `i` answers `/status`, or fails if it exits first.
    fn try_wait_serving(&mut self, i: usize) -> Result<(), String> {
        let id = self.nodes[i].id;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.nodes[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.nodes[i].child = None;
                return Err(format!("node {id} exited with {status}:\n{}", tail(&self.nodes[i].log, 40)));
            }
            if self.status(i).is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("node {id} did not serve HTTP within {PATIENCE:?}"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The process id of node index `i`; panics if it is not running.
    pub fn pid(&self, i: usize) -> Pid {
        let child = self.nodes[i].child.as_ref().unwrap_or_else(|| panic!("node {} is not running", i + 1));
        Pid::from_raw(child.id() as i32)
    }

    /// SIGKILLs node index `i` and reaps it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// SIGTERMs node index `i` and waits for it to exit; returns whether it exited
    /// cleanly (status 0) within the patience bound.
    pub fn terminate(&mut self, i: usize) -> bool {
        let pid = self.pid(i);
        kill(pid, Signal::SIGTERM).expect("send SIGTERM");
        let mut child = self.nodes[i].child.take().expect("running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// SIGSTOPs node index `i`.
    pub fn pause(&mut self, i: usize) {
        kill(self.pid(i), Signal::SIGSTOP).expect("send SIGSTOP");
        self.nodes[i].paused = true;
    }

    /// SIGCONTs node index `i`.
    pub fn resume(&mut self, i: usize) {
        kill(self.pid(i), Signal::SIGCONT).expect("send SIGCONT");
        self.nodes[i].paused = false;
    }

    /// Whether node index `i` is running (started and not killed).
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The URL of `path` on node index `i`.
    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.nodes[i].http)
    }

    /// Sends a request to node index `i`.
    pub fn request(&self, i: usize, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        request(&self.agent, method, &self.url(i, path), body)
    }

    /// `GET /status` of node index `i`, if it answers within a second.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let quick: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1)))
            .http_status_as_error(false)
            .build()
            .into();
        let r = request(&quick, "GET", &self.url(i, "/status"), None);
        (r.status == 200).then(|| r.json())
    }

    /// The index of the node that is leader in the highest term reported by the running,
    /// unpaused nodes, if a majority of those agree on it.
    pub fn leader(&self) -> Option<usize> {
        let statuses: Vec<(usize, serde_json::Value)> = (0..self.nodes.len())
            .filter(|&i| self.running(i) && !self.nodes[i].paused)
            .filter_map(|i| self.status(i).map(|s| (i, s)))
            .collect();
        let (i, s) = statuses.iter().filter(|(_, s)| s["role"] == "leader").max_by_key(|(_, s)| s["term"].as_u64())?;
        let id = s["id"].as_u64()?;
        let term = s["term"].as_u64()?;
        let agree =
            statuses.iter().filter(|(_, o)| o["leader"].as_u64() == Some(id) && o["term"].as_u64() == Some(term));
        (agree.count() * 2 > self.nodes.len()).then_some(*i)
    }

    /// Waits for a leader (see [`Cluster::leader`]) other than `not`.
    pub fn wait_leader(&self, not: Option<usize>) -> usize {
        wait_until("a leader", PATIENCE, || self.leader().filter(|&l| Some(l) != not))
    }

    /// `PUT /kv/{key}` through node `i`, retried on 503 (and on a connection error) until
    /// it succeeds or the patience runs out.
    pub fn put(&self, i: usize, key: &str, value: &[u8]) -> Reply {
        wait_until(&format!("PUT {key} through node {} to succeed", i + 1), PATIENCE, || {
            let r = self.request(i, "PUT", &format!("/kv/{key}"), Some(value));
            match r.status {
                200 => Some(r),
                0 | 503 => None,
                _ => panic!("PUT {key} through node {}: {} {}", i + 1, r.status, r.text()),
            }
        })
    }

    /// `GET /kv/{key}` through node `i` (linearizable), retried on 503 until it answers
    /// 200 or 404; returns the value.
    pub fn get(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        wait_until(&format!("GET {key} through node {} to answer", i + 1), PATIENCE, || {
            let r = self.request(i, "GET", &format!("/kv/{key}"), None);
            match r.status {
                200 => Some(Some(r.body)),
                404 => Some(None),
                0 | 503 => None,
                _ => panic!("GET {key} through node {}: {} {}", i + 1, r.status, r.text()),
            }
        })
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("---- node {} log ({}) ----\n{}", n.id, n.log.display(), tail(&n.log, 60));
            }
        }
    }
}

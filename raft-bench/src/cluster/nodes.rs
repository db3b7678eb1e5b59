//! Starting and stopping a cluster of `kv` processes or etcd members on loopback (3 nodes
//! unless asked otherwise), with data in a temporary directory, on the apps' launcher
//! ([`raft_examples::launch`]); what differs per target is the program, its command line
//! and how its status is read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_examples::launch::certs::ClusterCerts;
use raft_examples::launch::scrape::Scrape;
use raft_examples::launch::{Data, LocalCluster, Member, Ports, Spec};

use super::http_client::one_shot;
use super::target::{parse_status, NodeStatus, RequestBuilder, Target};

/// Where the programs are, where the data goes, and how many nodes run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (members), at least 1.
    pub nodes: usize,
    /// Path of the `kv` binary (default: `kv` next to the running executable).
    pub kv_bin: Option<PathBuf>,
    /// Path of the etcd binary (default: `etcd` on PATH).
    pub etcd_bin: Option<PathBuf>,
    /// Directory to create the temporary data directory in (default: the system's).
    pub dir: Option<PathBuf>,
    /// Extra arguments for every `kv` node.
    pub kv_args: Vec<String>,
    /// `kv` nodes talk mutual TLS to each other, with throwaway certificates (the HTTP
    /// API the load goes to stays plaintext: `--http-plain`).
    pub tls: bool,
    /// `kv` node N gets the loopback address 127.a.b.N of its own (`Ports::Loopback`), so
    /// that a [`Firewall`](raft_examples::launch::firewall::Firewall) can partition them.
    pub own_addresses: Option<[u8; 2]>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            kv_bin: None,
            etcd_bin: None,
            dir: None,
            kv_args: Vec::new(),
            tls: false,
            own_addresses: None,
        }
    }
}

/// A running cluster; dropping it kills every process it started.
pub struct Cluster {
    target: Target,
    nodes: LocalCluster,
    // The throwaway certificates of a TLS cluster, removed with it.
    _certs: Option<tempfile::TempDir>,
}

/// The `kv` binary that sits next to the running executable (in `target/<profile>/`,
/// also when the executable is a test in `target/<profile>/deps/`).
pub fn default_kv_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("kv"), dir.parent()?.join("kv")].into_iter().find(|p| p.is_file())
}

/// Finds `name` in the directories of PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The command line of etcd member `i`: `members[i].raft` is its peer address, `http`
/// its client address; the cluster token (this process and the first port) tells this
/// cluster's members from others.
fn etcd_command_line(members: &[Member], i: usize) -> Vec<String> {
    let node = &members[i];
    let token = format!("bench-{}-{}", std::process::id(), members[0].http.port());
    let initial = members.iter().map(|n| format!("m{}=http://{}", n.id, n.raft)).collect::<Vec<_>>().join(",");
    vec![
        format!("--name=m{}", node.id),
        format!("--data-dir={}", node.data_dir.display()),
        format!("--listen-client-urls=http://{}", node.http),
        format!("--advertise-client-urls=http://{}", node.http),
        format!("--listen-peer-urls=http://{}", node.raft),
        format!("--initial-advertise-peer-urls=http://{}", node.raft),
        format!("--initial-cluster={initial}"),
        "--initial-cluster-state=new".into(),
        format!("--initial-cluster-token={token}"),
    ]
}

/// A temporary directory with a fresh CA and a certificate for each of the nodes.
fn throwaway_certs(opts: &ClusterOptions) -> Result<(tempfile::TempDir, ClusterCerts), String> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("bench-certs-");
    let dir = match &opts.dir {
        Some(p) => builder.tempdir_in(p),
        None => builder.tempdir(),
    }
    .map_err(|e| format!("cannot create a temp dir for the certificates: {e}"))?;
    let ids: Vec<u64> = (1..=opts.nodes as u64).collect();
    let certs = ClusterCerts::generate(dir.path(), &ids, &[])?;
    Ok((dir, certs))
}

impl Cluster {
    /// Starts a cluster of `opts.nodes` nodes of `target` and returns once every process
    /// is spawned; [`Cluster::wait_ready`] waits for a leader.
    pub fn start(target: Target, opts: &ClusterOptions) -> Result<Cluster, String> {
        if opts.nodes == 0 {
            return Err("a cluster needs at least one node".into());
        }
        let program = match target {
            Target::Kv => opts.kv_bin.clone().or_else(default_kv_bin).ok_or(
                "no kv binary next to this executable: build it with \
                 `cargo build --release -p raft-examples -p raft-bench` or pass --kv-bin",
            )?,
            Target::Etcd => opts.etcd_bin.clone().or_else(|| find_on_path("etcd")).ok_or(
                "etcd is not installed: run scripts/install-bench-deps.sh (Debian's etcd-server) or pass --etcd-bin",
            )?,
        };
        let mut spec = Spec::app(program, opts.nodes);
        spec.data = Data::Temp { parent: opts.dir.clone(), prefix: "bench-cluster-".into() };
        match target {
            Target::Kv => {
                if std::env::var_os("RUST_LOG").is_none() {
                    spec.env.push(("RUST_LOG".into(), "warn".into()));
                }
                let extra = opts.kv_args.clone();
                let certs = if opts.tls { Some(throwaway_certs(opts)?) } else { None };
                let node_certs = certs.as_ref().map(|(_, c)| c.clone());
                spec.extra_args = Arc::new(move |id| {
                    let mut args = extra.clone();
                    if let Some(c) = &node_certs {
                        args.extend(c.node_args(id));
                        args.push("--http-plain".into());
                    }
                    args
                });
                if let Some(net) = opts.own_addresses {
                    spec.ports = Ports::Loopback { net };
                }
                let nodes = LocalCluster::start(spec)?;
                return Ok(Cluster { target, nodes, _certs: certs.map(|(dir, _)| dir) });
            }
            Target::Etcd => {
                if opts.tls {
                    return Err("--tls runs only kv clusters".into());
                }
                spec.command_line = Arc::new(etcd_command_line);
            }
        }
        Ok(Cluster { target, nodes: LocalCluster::start(spec)?, _certs: None })
    }

    /// The target this cluster runs.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The data directory of all nodes.
    pub fn dir(&self) -> &Path {
        self.nodes.dir()
    }

    /// HTTP addresses of the nodes, in node order.
    pub fn http_endpoints(&self) -> Vec<SocketAddr> {
        self.nodes.http_endpoints()
    }

    /// Process ids of the running nodes (`None` for a killed one).
    pub fn pids(&self) -> Vec<Option<u32>> {
        (0..self.nodes.nodes.len()).map(|i| self.nodes.pid(i).and_then(|p| u32::try_from(p.as_raw()).ok())).collect()
    }

    /// Peak resident memory (VmHWM) of each running node, in KiB.
    pub fn peak_rss_kib(&self) -> Vec<Option<u64>> {
        self.pids().into_iter().map(|pid| pid.and_then(peak_rss_kib)).collect()
    }

    /// The last `lines` lines of node `i`'s output, for error messages.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        self.nodes.log_tail(i, lines)
    }

    /// Fails if a node that should run has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let target = self.target;
        self.nodes.check_alive().map_err(|e| format!("{target} {e}"))
    }

    /// Asks every running node for its status (`None` for a killed or silent node).
    pub async fn statuses(&self) -> Vec<Option<NodeStatus>> {
        let builder = RequestBuilder::new(self.target, 0);
        let mut out = Vec::new();
        for (i, node) in self.nodes.nodes.iter().enumerate() {
            if !self.nodes.running(i) {
                out.push(None);
                continue;
            }
            let r = one_shot(node.http, Duration::from_millis(500), |h, out| builder.status(h, out)).await;
            out.push(match r {
                Ok((s, body)) if s.is_success() => parse_status(self.target, &body).ok(),
                _ => None,
            });
        }
        out
    }

    /// The index of the node that says it leads in the highest term, if any answers so.
    pub async fn leader(&self) -> Option<usize> {
        let st = self.statuses().await;
        st.iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.is_leader).map(|s| (i, s.term)))
            .max_by_key(|&(_, term)| term)
            .map(|(i, _)| i)
    }

    /// `GET /metrics` of node `i`, parsed (both targets serve their Prometheus metrics
    /// there, on the client port).
    pub async fn scrape(&self, i: usize) -> Result<Scrape, String> {
        let node = self.nodes.nodes.get(i).ok_or_else(|| format!("no node {}", i + 1))?;
        let builder = RequestBuilder::new(self.target, 0);
        let (status, body) = one_shot(node.http, Duration::from_secs(2), |h, out| builder.metrics(h, out)).await?;
        if !status.is_success() {
            return Err(format!("node {}: /metrics answered {status}", i + 1));
        }
        let text = std::str::from_utf8(&body).map_err(|e| format!("node {}: /metrics is not UTF-8: {e}", i + 1))?;
        Scrape::parse(text).map_err(|e| format!("node {}: /metrics: {e}", i + 1))
    }

    /// Waits until every running node answers, exactly one is leader, every other
    /// knows a leader, and the leader's term is the highest. Returns the leader's index.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let st = self.statuses().await;
            let running = (0..self.nodes.nodes.len()).filter(|&i| self.nodes.running(i)).count();
            let answered: Vec<(usize, &NodeStatus)> =
                st.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s))).collect();
            let leaders: Vec<usize> = answered.iter().filter(|(_, s)| s.is_leader).map(|(i, _)| *i).collect();
            if answered.len() == running && leaders.len() == 1 && answered.iter().all(|(_, s)| s.leader_known) {
                let top = answered.iter().filter_map(|(_, s)| s.term).max();
                if st[leaders[0]].as_ref().and_then(|s| s.term) == top {
                    return Ok(leaders[0]);
                }
            }
            if Instant::now() > deadline {
                let logs = (0..self.nodes.nodes.len())
                    .map(|i| format!("node {}:\n{}", i + 1, self.log_tail(i, 10)))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(format!("{} cluster not ready within {timeout:?}: statuses {st:?}\n{logs}", self.target));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills node `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        self.nodes.kill(i);
    }

    /// Kills node `i` with SIGKILL and returns the instant the signal was sent (before
    /// the process is reaped).
    pub fn kill_signal(&mut self, i: usize) -> Result<Instant, String> {
        self.nodes.kill(i).ok_or_else(|| format!("node {} is not running", i + 1))
    }

    /// Starts node `i` again on its data directory.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.nodes.restart(i)
    }

    /// Stops node `i` with SIGTERM (a kv leader hands leadership over before it stops),
    /// waits up to `timeout` for a clean exit, and starts it again on its data directory.
    pub fn restart_gracefully(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        match self.nodes.terminate(i, timeout) {
            Some(status) if status.success() => self.nodes.spawn(i),
            other => {
                Err(format!("node {} did not stop cleanly on SIGTERM: {other:?}\n{}", i + 1, self.log_tail(i, 10)))
            }
        }
    }

    /// SIGSTOPs node `i` (returns once every thread of it has stopped).
    pub fn pause(&mut self, i: usize) -> Result<(), String> {
        self.nodes.pause(i)
    }

    /// SIGCONTs node `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), String> {
        self.nodes.resume(i)
    }

    /// Each node's own address (see [`ClusterOptions::own_addresses`]), in node order.
    pub fn addresses(&self) -> Vec<Option<std::net::IpAddr>> {
        self.nodes.nodes.iter().map(|n| n.source).collect()
    }

    /// The data directory of each node, in node order.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        self.nodes.nodes.iter().map(|n| n.data_dir.clone()).collect()
    }

    /// Kills every node.
    pub fn stop(mut self) {
        self.nodes.kill_all();
    }
}

/// Peak resident set size (VmHWM) of process `pid` in KiB, from /proc.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// The VmHWM field of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmHWM")
}

/// A `kB` field (`VmHWM`, `VmRSS`, ...) of a `/proc/<pid>/status` text, in KiB.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let text = "Name:\tetcd\nVmPeak:\t  900 kB\nVmHWM:\t  215040 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(parse_vm_hwm(text), Some(215_040));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn free_ports_are_distinct() {
        let p = raft_examples::launch::free_ports(6).unwrap();
        let mut ports: Vec<u16> = p.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
    }
}

//! Running real app processes for the process-level tests, on the crate's own launcher
//! ([`raft_examples::launch`]): free loopback ports, a data directory per node in a temp
//! dir, signals, the launcher's HTTP client and waits with deadlines. Every child is
//! killed when the cluster is dropped (also on a failed assertion), and a failing test
//! prints the end of each node's log.

#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use raft_examples::launch::{client, tail, LocalCluster, Spec};

/// A generous bound for anything the cluster should do "soon" (an election, a catch-up).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `f` until it returns `Some`, or panics naming `what` after `timeout`.
pub(crate) fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An HTTP answer: status and body (status 0 and the error's text when the request got
/// no answer).
pub(crate) use raft_examples::launch::Reply;

/// The body of a [`Reply`] as JSON.
pub(crate) trait ReplyJson {
    /// The body as JSON; panics if it is not.
    fn json(&self) -> serde_json::Value;
}

impl ReplyJson for Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("expected JSON, got status {} body {:?}: {e}", self.status, self.text()))
    }
}

/// A blocking HTTP client that reports every status as a [`Reply`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Client {
    timeout: Duration,
}

/// The client of the tests: a request may take 15 s.
pub(crate) fn client() -> Client {
    Client { timeout: REQUEST_TIMEOUT }
}

/// Sends one request to `url` (`http://host:port/path`); a connection error becomes
/// status 0.
pub(crate) fn request(client: &Client, method: &str, url: &str, body: Option<&[u8]>) -> Reply {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("bad request {method} {url}: not http://"));
    let (addr, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    client::request(addr, method, path, body, client.timeout)
}

/// A cluster of app processes on loopback.
pub(crate) struct Cluster {
    inner: LocalCluster,
    /// The HTTP client.
    pub(crate) agent: Client,
}

impl Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.inner
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.inner
    }
}

impl Cluster {
    /// Starts `n` nodes of the app at `bin`, with `extra(id)` added to node `id`'s
    /// arguments, and waits until every node answers `/status` (see
    /// [`LocalCluster::start_serving`]).
    pub(crate) fn start(bin: &str, n: usize, extra: impl Fn(u64) -> Vec<String> + Send + Sync + 'static) -> Cluster {
        let mut spec = Spec::app(bin, n);
        spec.extra_args = Arc::new(extra);
        Cluster::start_spec(spec)
    }

    /// Starts the nodes of `spec` (with the tests' `RUST_LOG`) and waits until every one
    /// answers `/status`.
    pub(crate) fn start_spec(mut spec: Spec) -> Cluster {
        spec.env = vec![("RUST_LOG".into(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))];
        match LocalCluster::start_serving(spec, PATIENCE) {
            Ok(inner) => Cluster { inner, agent: client() },
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts node index `i` (again), with its data directory as it is.
    pub(crate) fn spawn(&mut self, i: usize) {
        if let Err(e) = self.inner.spawn(i) {
            panic!("{e}");
        }
    }

    /// Waits until node index `i` answers `/status`; panics (with its log) if it exits.
    pub(crate) fn wait_serving(&mut self, i: usize) {
        if let Err(e) = self.inner.wait_serving(i, PATIENCE) {
            panic!("{e}");
        }
    }

    /// The process id of node index `i`; panics if it is not running.
    pub(crate) fn pid(&self, i: usize) -> Pid {
        self.inner.pid(i).unwrap_or_else(|| panic!("node {} is not running", i + 1))
    }

    /// SIGKILLs node index `i` and reaps it.
    pub(crate) fn kill9(&mut self, i: usize) {
        self.inner.kill(i);
    }

    /// SIGTERMs node index `i` and waits for it to exit; returns whether it exited
    /// cleanly (status 0) within the patience bound.
    pub(crate) fn terminate(&mut self, i: usize) -> bool {
        self.pid(i);
        self.inner.terminate(i, PATIENCE).is_some_and(|s| s.success())
    }

    /// SIGSTOPs node index `i`.
    pub(crate) fn pause(&mut self, i: usize) {
        self.inner.pause(i).expect("send SIGSTOP");
    }

    /// SIGCONTs node index `i`.
    pub(crate) fn resume(&mut self, i: usize) {
        self.inner.resume(i).expect("send SIGCONT");
    }

    /// The URL of `path` on node index `i`.
    pub(crate) fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.nodes[i].http)
    }

    /// Sends a request to node index `i`.
    pub(crate) fn request(&self, i: usize, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        self.inner.request(i, method, path, body, self.agent.timeout)
    }

    /// `GET /status` of node index `i`, if it answers within a second.
    pub(crate) fn status(&self, i: usize) -> Option<serde_json::Value> {
        self.inner.status(i, Duration::from_secs(1)).ok()
    }

    /// Waits for a leader (see [`LocalCluster::leader`]) other than `not`.
    pub(crate) fn wait_leader(&self, not: Option<usize>) -> usize {
        wait_until("a leader", PATIENCE, || self.leader().filter(|&l| Some(l) != not))
    }

    /// `PUT /kv/{key}` through node `i`, retried on 503 (and on a connection error) until
    /// it succeeds or the patience runs out.
    pub(crate) fn put(&self, i: usize, key: &str, value: &[u8]) -> Reply {
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
    pub(crate) fn get(&self, i: usize, key: &str) -> Option<Vec<u8>> {
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

impl Drop for Cluster {
    fn drop(&mut self) {
        self.inner.kill_all();
        if std::thread::panicking() {
            for n in &self.inner.nodes {
                eprintln!("---- node {} log ({}) ----\n{}", n.id, n.log.display(), tail(&n.log, 60));
            }
        }
    }
}

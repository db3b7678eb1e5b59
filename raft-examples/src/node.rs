//! Running one node of an example app: the command line shared by the apps, the file
//! store under `--data-dir`, the TCP transport on `--listen`, the HTTP server on
//! `--http` with `/status`, and a clean stop on SIGTERM or SIGINT.
//!
//! An app ([`App`]) brings its state machine and its HTTP routes; everything else is
//! here, so `kv` and `counter` start, recover and stop the same way.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use futures::future::{BoxFuture, FutureExt};
use hyper::{Method, Request, StatusCode};
use raft::{Config, LogStore, NodeId, Raft, Role, StateMachine};
use raft_net_tcp::{TcpConfig, TcpTransport};
use raft_store_file::{FileStore, FileStoreOptions};
use tracing::{error, info, warn};

use crate::http::{self, ApiError, Handler, HttpResponse, HttpRuntime};
use crate::sched::{self, Scheduling};

#[cfg(not(any(feature = "tokio", feature = "smol")))]
compile_error!("raft-examples needs a runtime: enable the `tokio` or the `smol` feature");

/// The longest any client request waits for the cluster before it is answered with 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The async runtime a node runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// tokio, multi-threaded (feature `tokio`).
    #[cfg(feature = "tokio")]
    Tokio,
    /// smol, on an executor driven by two threads (feature `smol`).
    #[cfg(feature = "smol")]
    Smol,
}

impl Default for RuntimeChoice {
    fn default() -> Self {
        #[cfg(feature = "tokio")]
        return RuntimeChoice::Tokio;
        #[cfg(not(feature = "tokio"))]
        return RuntimeChoice::Smol;
    }
}

/// The command line of an app node. Both apps take exactly these flags.
#[derive(Clone, Debug, Parser)]
#[command(version)]
pub struct NodeArgs {
    /// This node's id: one of the ids in `--peers`.
    #[arg(long)]
    pub id: NodeId,
    /// The address to listen on for Raft traffic from the other nodes (host:port).
    #[arg(long)]
    pub listen: String,
    /// The address to serve the HTTP API on (host:port).
    #[arg(long)]
    pub http: String,
    /// Every member's Raft address, this node's included: `1=host:port,2=host:port,...`.
    /// They make up the cluster when the data directory is empty; after that the
    /// membership comes from the log and the addresses are only used to reach the peers.
    #[arg(long, value_parser = parse_peers)]
    pub peers: Peers,
    /// The directory holding this node's log; it is created if missing.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The async runtime to run on (the choices are the runtimes compiled in).
    #[arg(long, value_enum, default_value_t = RuntimeChoice::default())]
    pub runtime: RuntimeChoice,
    /// The largest value (request body) accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_value_size: usize,
    /// How the OS schedules the node's threads (see the `sched` module): `batch` keeps a
    /// node from being preempted mid-burst by the peers it wakes.
    #[arg(long, value_enum, default_value_t = Scheduling::default())]
    pub scheduling: Scheduling,
}

/// The `--peers` list: node id to Raft address, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<NodeId, String>);

/// Parses `1=host:port,2=host:port,...`.
pub fn parse_peers(s: &str) -> Result<Peers, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("`{part}` is not of the form ID=HOST:PORT"))?;
        let id: NodeId = id.trim().parse().map_err(|_| format!("`{id}` is not a node id"))?;
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(Peers(peers))
}

fn resolve(what: &str, addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{what} `{addr}`: {e}"))?
        .next()
        .ok_or_else(|| format!("{what} `{addr}` resolves to no address"))
}

/// An example application: a state machine and the HTTP routes in front of it. `/status`
/// is served for every app.
pub trait App: Send + Sync + 'static {
    /// The replicated state.
    type Machine: StateMachine + Default;

    /// The app's name, for logs and `/status`.
    const NAME: &'static str;

    /// One line for `--help`.
    const ABOUT: &'static str;

    /// The cluster id for the transport handshake and the store: nodes of different apps
    /// refuse each other.
    const CLUSTER_ID: u64;

    /// The largest request body the app reads for `method` on `path`.
    fn max_body_size(&self, method: &Method, path: &str) -> usize;

    /// Answers a request for any path other than `/status`. Unknown paths are a
    /// [`ApiError::NotFound`], a known path with the wrong method a
    /// [`ApiError::MethodNotAllowed`].
    fn handle<'a>(
        &'a self,
        node: &'a AppNode<Self::Machine>,
        request: Request<Bytes>,
    ) -> impl Future<Output = Result<HttpResponse, ApiError>> + Send + 'a;
}

type Sleeper = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// A running node as the app's handlers see it: the Raft handle, with proposals and
/// reads bounded by [`REQUEST_TIMEOUT`] (the Raft handle's request timeout).
pub struct AppNode<SM: StateMachine> {
    raft: Raft<SM>,
    app: &'static str,
    runtime: &'static str,
    request_timeout: Duration,
    sleep: Sleeper,
}

impl<SM: StateMachine> AppNode<SM> {
    /// The Raft handle.
    pub fn raft(&self) -> &Raft<SM> {
        &self.raft
    }

    /// Proposes `command` and waits until it is committed and applied (any node: a
    /// follower forwards it to the leader). The Raft handle bounds the wait by its
    /// request timeout.
    pub async fn propose(&self, command: SM::Command) -> Result<SM::Response, ApiError> {
        Ok(self.raft.propose(command).await?)
    }

    /// Runs `f` on the state machine once it reflects every write acknowledged before
    /// the call (a linearizable read by ReadIndex, on any node), within the Raft
    /// handle's request timeout.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&SM) -> T + Send + 'static) -> Result<T, ApiError> {
        Ok(self.raft.read(f).await?)
    }

    /// Runs `f` on this node's replica as it is, which may lag the cluster.
    pub fn read_stale<T>(&self, f: impl FnOnce(&SM) -> T) -> T {
        self.raft.read_local_stale(f)
    }

    /// The body of `GET /status`.
    pub fn status_json(&self) -> serde_json::Value {
        let s = self.raft.status();
        let role = match s.role {
            _ if !s.is_voter => "learner",
            Role::Leader => "leader",
            Role::Candidate | Role::PreCandidate => "candidate",
            Role::Follower => "follower",
        };
        serde_json::json!({
            "id": s.id,
            "role": role,
            "term": s.term,
            "leader": s.leader,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "last_log_index": s.last_log_index,
            "durable_index": s.durable_index,
            "voters": s.membership.voters,
            "learners": s.membership.learners,
            "app": self.app,
            "runtime": self.runtime,
            "stopped": s.stopped,
            "fatal_error": s.fatal_error,
        })
    }
}

/// The HTTP handler of a node: `/status`, then the app's routes.
struct NodeHandler<A: App> {
    app: A,
    node: AppNode<A::Machine>,
}

impl<A: App> Handler for NodeHandler<A> {
    fn max_body_size(&self, request: &hyper::http::request::Parts) -> usize {
        self.app.max_body_size(&request.method, request.uri.path())
    }

    fn body_timeout(&self) -> Duration {
        self.node.request_timeout
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        (self.node.sleep)(d)
    }

    async fn handle(self: Arc<Self>, request: Request<Bytes>) -> HttpResponse {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        let result = if path == "/status" {
            if method == Method::GET {
                Ok(http::json_ok(&self.node.status_json()))
            } else {
                Err(http::method_not_allowed(&method, &path, "GET"))
            }
        } else {
            self.app.handle(&self.node, request).await
        };
        match result {
            Ok(r) => r,
            Err(e) => {
                match e.status() {
                    StatusCode::INTERNAL_SERVER_ERROR => warn!(%method, %path, error = %e, "request failed"),
                    StatusCode::SERVICE_UNAVAILABLE => info!(%method, %path, error = %e, "request not served"),
                    _ => {}
                }
                e.into_response()
            }
        }
    }
}

/// Parses the command line, sets up logging (`RUST_LOG`, default `info`) and runs the
/// node until SIGTERM or SIGINT. This is the whole `main` of an app.
pub fn main<A: App>(app: impl FnOnce(&NodeArgs) -> A) -> ExitCode {
    let command = NodeArgs::command().name(A::NAME).bin_name(A::NAME).about(A::ABOUT);
    let args = match NodeArgs::from_arg_matches(&command.get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    // Before any thread is started, so that every thread of the node inherits it.
    if let Err(e) = sched::apply(args.scheduling) {
        warn!(error = %e, policy = ?args.scheduling, "cannot set the scheduling policy; running under the default one");
    }
    let app = app(&args);

    // The first SIGTERM or SIGINT stops the node cleanly; a second one exits at once.
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    if let Err(e) = ctrlc::set_handler(move || match stop_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(tx) => {
            let _ = tx.send(());
        }
        None => std::process::exit(130),
    }) {
        error!(error = %e, "cannot install the signal handler");
        return ExitCode::FAILURE;
    }
    let stop = stop_rx.map(|_| ());

    let result = match args.runtime {
        #[cfg(feature = "tokio")]
        RuntimeChoice::Tokio => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(async { run(raft::runtime::TokioRuntime::new(), args, app, stop).await }),
            Err(e) => Err(format!("cannot start tokio: {e}")),
        },
        #[cfg(feature = "smol")]
        RuntimeChoice::Smol => run_on_smol(args, app, stop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("{} node failed: {e}", A::NAME);
            ExitCode::FAILURE
        }
    }
}

/// Runs the node on a smol executor of its own, driven by this thread and one more.
#[cfg(feature = "smol")]
fn run_on_smol<A: App>(args: NodeArgs, app: A, stop: impl Future<Output = ()>) -> Result<(), String> {
    let ex = Arc::new(smol::Executor::new());
    let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
    let helper = {
        let ex = ex.clone();
        std::thread::Builder::new()
            .name("smol-worker".into())
            .spawn(move || smol::block_on(ex.run(done_rx.recv())))
            .map_err(|e| format!("cannot start a worker thread: {e}"))?
    };
    let result = smol::block_on(ex.run(run(raft::runtime::SmolRuntime::with_executor(ex.clone()), args, app, stop)));
    drop(done_tx);
    let _ = helper.join();
    result
}

/// Starts the node on `rt` and serves until `stop` completes, then shuts it down.
pub async fn run<R: HttpRuntime, A: App>(
    rt: R,
    args: NodeArgs,
    app: A,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let id = args.id;
    let mut peers = BTreeMap::new();
    for (&peer, addr) in &args.peers.0 {
        peers.insert(peer, resolve(&format!("the address of node {peer}"), addr)?);
    }
    if !peers.contains_key(&id) {
        return Err(format!("--peers must list this node ({id}) among {:?}", peers.keys().collect::<Vec<_>>()));
    }
    let listen = resolve("--listen", &args.listen)?;
    let http_addr = resolve("--http", &args.http)?;

    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", args.data_dir.display()))?;
    let mut store =
        FileStore::open(&args.data_dir, FileStoreOptions { cluster_id: A::CLUSTER_ID, ..Default::default() })
            .map_err(|e| format!("cannot open the store in {}: {e}", args.data_dir.display()))?;
    let initial = store.initial_state().await.map_err(|e| format!("cannot read the store: {e}"))?;
    let fresh = initial.last.index == 0 && initial.prev.index == 0 && initial.hard_state == Default::default();

    let transport = TcpTransport::bind(rt.clone(), TcpConfig::new(A::CLUSTER_ID, id), listen)
        .await
        .map_err(|e| format!("cannot listen for Raft traffic on {listen}: {e}"))?;
    let http_listener = rt.bind(http_addr).await.map_err(|e| format!("cannot listen for HTTP on {http_addr}: {e}"))?;
    let http_local = R::local_addr(&http_listener).map_err(|e| format!("HTTP listener: {e}"))?;
    for (&peer, &addr) in &peers {
        if peer != id {
            transport.set_peer(peer, addr);
        }
    }

    // The framework's own timeout ends every write and read (no leader, or an unknown
    // outcome: answered with 503).
    let config = Config { request_timeout: REQUEST_TIMEOUT, ..Config::default() };
    let raft = if fresh {
        info!(node = id, members = ?peers.keys().collect::<Vec<_>>(), "empty data directory: bootstrapping the cluster");
        Raft::bootstrap(id, peers.keys().copied(), config, rt.clone(), store, transport.network(), A::Machine::default())
            .await
    } else {
        info!(node = id, last_index = initial.last.index, term = initial.hard_state.term, "restarting from the data directory");
        Raft::restart(id, config, rt.clone(), store, transport.network(), A::Machine::default()).await
    }
    .map_err(|e| format!("cannot start the Raft node: {e}"))?;
    let receiver = raft.clone();
    transport.start(move |m| receiver.receive(m));

    let sleep_rt = rt.clone();
    let node = AppNode {
        raft: raft.clone(),
        app: A::NAME,
        runtime: rt.name(),
        request_timeout: REQUEST_TIMEOUT,
        sleep: Arc::new(move |d| sleep_rt.sleep_until(sleep_rt.now().add(d)).boxed()),
    };
    info!(
        node = id,
        app = A::NAME,
        runtime = rt.name(),
        raft = %transport.local_addr(),
        http = %http_local,
        data_dir = %args.data_dir.display(),
        "node started"
    );
    http::serve(rt.clone(), http_listener, Arc::new(NodeHandler { app, node }), stop).await;

    info!(node = id, "stopping");
    raft.shutdown().await;
    transport.shutdown().await;
    info!(node = id, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_lists_are_refused() {
        let p = parse_peers("1=127.0.0.1:7001, 2=localhost:7002,3=[::1]:7003").unwrap();
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.0[&2], "localhost:7002");
        assert!(parse_peers("").is_err());
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("0=a:1").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("127.0.0.1:7001").is_err());
    }

    #[test]
    fn the_command_line_is_the_documented_one() {
        let args = NodeArgs::try_parse_from([
            "kv",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:7002",
            "--http",
            "127.0.0.1:8002",
            "--peers",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(args.id, 2);
        assert_eq!(args.runtime, RuntimeChoice::default());
        assert_eq!(args.max_value_size, 1 << 20);
        assert!(NodeArgs::try_parse_from(["kv", "--id", "1"]).is_err());
    }
}

//! The host: everything a node of an example app needs besides the app itself. It parses
//! the command line ([`NodeArgs`]), opens the file store under `--data-dir`, starts the
//! TCP transport on `--listen` and the HTTP server on `--http` with `/status` and
//! `/metrics` (Prometheus, [`metrics`]), runs the app's extra services
//! ([`App::services`]) beside it, puts the threads under `SCHED_BATCH` ([`sched`]) and
//! stops cleanly on SIGTERM or SIGINT.
//!
//! An app ([`App`]) brings its state machine, its HTTP routes and any listeners of its
//! own; everything else is here, so every app starts, recovers and stops the same way.

pub mod args;
pub mod cluster;
pub mod metrics;
pub mod sched;
pub mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::{CommandFactory, FromArgMatches};
use futures::future::{BoxFuture, Either, FutureExt};
use hyper::{Method, Request, StatusCode};
use raft::{Config, LogStore, Membership, NodeId, NodeInfo, Raft, StateMachine};
use raft_net_tcp::codec::HelloStatus;
use raft_net_tcp::{ConnectionError, HandshakeError, Incarnations, PeerStats, TcpConfig, TcpTransport};
use raft_store_file::{FileStore, FileStoreOptions};
use tracing::{debug, error, info, warn};

use self::args::resolve;
pub use self::args::{parse_peers, NodeArgs, Peers, RuntimeChoice, Security, SecurityArgs, SnapshotArgs};
use crate::http::{self, AdminToken, ApiError, Handler, HttpResponse, HttpRuntime};

#[cfg(not(any(feature = "tokio", feature = "smol")))]
compile_error!("raft-examples needs a runtime: enable the `tokio` or the `smol` feature");

/// The longest any client request waits for the cluster before it is answered with 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A task the host runs beside the HTTP server for as long as the node runs (see
/// [`App::services`]). It is dropped when the node stops; an error stops the node.
pub type Service = BoxFuture<'static, Result<(), String>>;

/// An example application: a state machine, the HTTP routes in front of it, and any
/// listeners of its own. `/status` and `/metrics` are served for every app.
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

    /// Tasks the host runs beside the HTTP server once the node has started, such as a
    /// listener of the app's own (a DNS server's UDP and TCP sockets). They get the
    /// runtime and the node; they are dropped when the node stops, and the first one that
    /// fails stops the node with its error. One that ends with `Ok` just ends. None by
    /// default.
    fn services<R: HttpRuntime>(&self, rt: &R, node: &AppNode<Self::Machine>) -> Vec<Service> {
        let _ = (rt, node);
        Vec::new()
    }
}

/// A running node as the app's handlers and services see it: the Raft handle, with
/// proposals and reads bounded by [`REQUEST_TIMEOUT`] (the Raft handle's request
/// timeout).
pub struct AppNode<SM: StateMachine> {
    raft: Raft<SM>,
    app: &'static str,
    runtime: &'static str,
    /// The transport's counters for each peer (for `/metrics`).
    peer_stats: Arc<dyn Fn() -> Vec<(NodeId, PeerStats)> + Send + Sync>,
}

impl<SM: StateMachine> Clone for AppNode<SM> {
    fn clone(&self) -> Self {
        AppNode { raft: self.raft.clone(), app: self.app, runtime: self.runtime, peer_stats: self.peer_stats.clone() }
    }
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

    /// Proposes `command` at most once for `key` (from [`crate::http::idempotency_key`]):
    /// a repeat with the same key, through any node, gets the first answer without
    /// applying the command again ([`Raft::propose_once`]). Without a key, as
    /// [`AppNode::propose`].
    pub async fn propose_keyed(&self, key: Option<&[u8]>, command: SM::Command) -> Result<SM::Response, ApiError> {
        match key {
            Some(key) => Ok(self.raft.propose_once(key, command).await?),
            None => self.propose(command).await,
        }
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
        status::status_json(&self.raft, self.app, self.runtime)
    }
}

/// The HTTP handler of a node: the admin token check, `/status` and `/metrics`, then the
/// app's routes.
struct NodeHandler<A: App> {
    app: A,
    node: AppNode<A::Machine>,
    admin_token: Option<AdminToken>,
    cluster: cluster::ClusterApi,
}

impl<A: App> Handler for NodeHandler<A> {
    fn max_body_size(&self, request: &hyper::http::request::Parts) -> usize {
        if cluster::is_cluster_path(request.uri.path()) {
            return cluster::MAX_BODY;
        }
        self.app.max_body_size(&request.method, request.uri.path())
    }

    fn body_timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }

    async fn handle(self: Arc<Self>, request: Request<Bytes>) -> HttpResponse {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        if http::is_admin_request(&method, &path) {
            if let Err(e) = http::check_admin(self.admin_token.as_ref(), request.headers()) {
                warn!(%method, %path, error = %e, "admin request refused");
                return e.into_response();
            }
        }
        let result = if path == "/status" || path == "/metrics" {
            if method != Method::GET {
                Err(http::method_not_allowed(&method, &path, "GET"))
            } else if path == "/status" {
                Ok(http::json_ok(&self.node.status_json()))
            } else {
                let peers = (self.node.peer_stats)();
                Ok(http::metrics_ok(metrics::render(&self.node.raft.metrics(), self.node.app, &peers)))
            }
        } else if cluster::is_cluster_path(&path) {
            self.cluster.handle(&self.node.raft, request).await
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
    main_with_args::<A, NoExtraArgs>(|args, NoExtraArgs {}| app(args))
}

/// No flags beyond [`NodeArgs`].
#[derive(clap::Args)]
struct NoExtraArgs {}

/// [`main`] for an app with flags of its own (`X`) beside the [`NodeArgs`] every app
/// takes; `app` gets both.
pub fn main_with_args<A: App, X: clap::Args>(app: impl FnOnce(&NodeArgs, X) -> A) -> ExitCode {
    let command = X::augment_args(NodeArgs::command().name(A::NAME).bin_name(A::NAME).about(A::ABOUT));
    let matches = command.get_matches();
    let (args, extra) = match NodeArgs::from_arg_matches(&matches).and_then(|a| Ok((a, X::from_arg_matches(&matches)?)))
    {
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
    let app = app(&args, extra);
    let stop = match stop_signal() {
        Ok(stop) => stop,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
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

/// A future that completes on the first SIGTERM or SIGINT; a second one exits at once.
fn stop_signal() -> Result<impl Future<Output = ()>, String> {
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    ctrlc::set_handler(move || match stop_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(tx) => {
            let _ = tx.send(());
        }
        None => std::process::exit(130),
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(stop_rx.map(|_| ()))
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

/// Starts the node on `rt` and serves until `stop` completes (or one of the app's
/// services fails), then shuts it down.
pub async fn run<R: HttpRuntime, A: App>(
    rt: R,
    args: NodeArgs,
    app: A,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let id = args.id;
    let listen = resolve("--listen", &args.listen)?;
    let http_addr = resolve("--http", &args.http)?;

    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", args.data_dir.display()))?;
    let mut store = FileStore::open(
        &args.data_dir,
        FileStoreOptions { cluster_id: A::CLUSTER_ID, segment_size: args.log_segment_size, ..Default::default() },
    )
    .map_err(|e| format!("cannot open the store in {}: {e}", args.data_dir.display()))?;
    let initial = store.initial_state().await.map_err(|e| format!("cannot read the store: {e}"))?;

    // The data directory's incarnation: peers refuse this node under its id if it ever
    // comes back with another directory (raft_net_tcp::incarnation).
    let incarnations =
        Incarnations::open(&args.data_dir).map_err(|e| format!("cannot open the node's identity: {e}"))?;
    let security = args.security.load()?;
    let mut tcp_config = transport_config(A::CLUSTER_ID, id, &security, listen);
    tcp_config.incarnations = Some(Arc::new(incarnations));
    tcp_config.bind_source = args.bind_source;
    let transport = TcpTransport::bind(rt.clone(), tcp_config, listen)
        .await
        .map_err(|e| format!("cannot listen for Raft traffic on {listen}: {e}"))?;
    let http_listener = rt.bind(http_addr).await.map_err(|e| format!("cannot listen for HTTP on {http_addr}: {e}"))?;
    let http_local = R::local_addr(&http_listener).map_err(|e| format!("HTTP listener: {e}"))?;
    let (peers, members) = initial_peers(&args, http_local)?;
    for (&peer, &addr) in &peers {
        if peer != id {
            transport.set_peer(peer, addr);
        }
    }

    // The framework's own timeout ends every write and read (no leader, or an unknown
    // outcome: answered with 503).
    let config = args.snapshots.apply(Config { request_timeout: REQUEST_TIMEOUT, ..Config::default() });
    let raft = if let (true, Some(members)) = (initial.is_empty(), members) {
        refuse_if_replaced(&transport, id, &peers).await?;
        info!(node = id, members = ?members.voters, "empty data directory: bootstrapping the cluster");
        Raft::bootstrap_membership(id, members, config, rt.clone(), store, transport.network(), A::Machine::default())
            .await
    } else if initial.is_empty() {
        info!(node = id, contacts = ?peers, "empty data directory and --join: waiting to be added as a learner");
        Raft::restart(id, config, rt.clone(), store, transport.network(), A::Machine::default()).await
    } else {
        info!(
            node = id,
            last_index = initial.last.index,
            term = initial.hard_state.term,
            "restarting from the data directory"
        );
        Raft::restart(id, config, rt.clone(), store, transport.network(), A::Machine::default()).await
    }
    .map_err(|e| format!("cannot start the Raft node: {e}"))?;
    let receiver = raft.clone();
    transport.start(move |m| receiver.receive(m));

    let stats_of = transport.clone();
    let peer_stats = Arc::new(move || stats_of.all_peer_stats());
    let node = AppNode { raft: raft.clone(), app: A::NAME, runtime: rt.name(), peer_stats };
    let services = app.services(&rt, &node);
    info!(
        node = id,
        app = A::NAME,
        runtime = rt.name(),
        raft = %transport.local_addr(),
        http = %http_local,
        peer_tls = security.peer_tls.is_some(),
        https = security.https.is_some(),
        data_dir = %args.data_dir.display(),
        "node started"
    );
    let cluster = cluster::ClusterApi { trust: forward_trust(&args, &security)? };
    let handler = Arc::new(NodeHandler { app, node, admin_token: security.admin_token, cluster });
    let serving = http::serve(rt.clone(), http_listener, handler, security.https, stop);
    let result = match futures::future::select(pin!(serving), pin!(run_services(services))).await {
        Either::Left(((), _)) => Ok(()),
        Either::Right((e, _)) => Err(e),
    };

    info!(node = id, "stopping");
    raft.shutdown().await;
    transport.shutdown().await;
    info!(node = id, "stopped");
    result
}

/// Safe start: before a node with an empty data directory bootstraps, it asks every
/// reachable peer whether it accepts this node, and stops with an error if one knows this
/// node id by another data directory (the node lost its data: its vote and log are gone,
/// and it may not come back under that id). Unreachable peers are passed over: they
/// refuse the node in their turn once they are up.
async fn refuse_if_replaced<R: HttpRuntime>(
    transport: &TcpTransport<R>,
    id: NodeId,
    peers: &BTreeMap<NodeId, std::net::SocketAddr>,
) -> Result<(), String> {
    let probes = peers.iter().filter(|&(&p, _)| p != id).map(|(&peer, &addr)| async move {
        let result = transport.probe(peer, addr).await;
        if let Err(e) = &result {
            debug!(node = id, peer, %addr, error = %e, "peer not reached before bootstrapping");
        }
        (peer, result)
    });
    let refusing: Vec<NodeId> = futures::future::join_all(probes)
        .await
        .into_iter()
        .filter(|(_, r)| {
            matches!(r, Err(ConnectionError::Handshake { source: HandshakeError::Refused(HelloStatus::Replaced), .. }))
        })
        .map(|(peer, _)| peer)
        .collect();
    if refusing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "node {id} is already a member of a running cluster with another data directory (nodes {refusing:?} \
         know it): this directory is empty, so the node lost its vote and log and may not rejoin as node {id}. \
         Remove it (DELETE /cluster/nodes/{id}) and add this machine as a new node: a new --id with --join \
         (see the README)"
    ))
}

/// The peers to reach at start (resolved) and, unless the node joins a running cluster
/// (`--join`), the configuration to bootstrap with an empty data directory: the members
/// of `--peers` with their Raft addresses and, under `"http"`, their HTTP addresses
/// (this node's from `--http`, the others' from `--peers-http`).
fn initial_peers(
    args: &NodeArgs,
    http_local: std::net::SocketAddr,
) -> Result<(BTreeMap<NodeId, std::net::SocketAddr>, Option<Membership>), String> {
    let id = args.id;
    let resolve_all = |peers: &Peers| -> Result<BTreeMap<NodeId, std::net::SocketAddr>, String> {
        let mut out = BTreeMap::new();
        for (&peer, addr) in &peers.0 {
            out.insert(peer, resolve(&format!("the address of node {peer}"), addr)?);
        }
        Ok(out)
    };
    if let Some(join) = &args.join {
        if join.0.contains_key(&id) {
            return Err(format!("--join lists members of the running cluster to contact, not this node ({id})"));
        }
        return Ok((resolve_all(join)?, None));
    }
    let given = args.peers.as_ref().ok_or("--peers or --join is needed")?;
    let peers = resolve_all(given)?;
    if !peers.contains_key(&id) {
        return Err(format!("--peers must list this node ({id}) among {:?}", peers.keys().collect::<Vec<_>>()));
    }
    // The address clients reach this node at: as given, unless the port was left to the OS.
    let own_http = if args.http.ends_with(":0") { http_local.to_string() } else { args.http.clone() };
    let members = Membership::with_nodes(given.0.iter().map(|(&peer, addr)| {
        let http = if peer == id { Some(&own_http) } else { args.peers_http.as_ref().and_then(|h| h.0.get(&peer)) };
        let info = NodeInfo::new(addr.clone());
        (
            peer,
            match http {
                Some(h) => info.with(cluster::HTTP_KEY, h.clone()),
                None => info,
            },
        )
    }));
    Ok((peers.into_iter().filter(|&(peer, _)| peer != id).collect(), Some(members)))
}

/// The CA that admin requests forwarded to the leader check its certificate against:
/// the cluster's (`--tls-ca`) when the nodes serve HTTPS.
fn forward_trust(args: &NodeArgs, security: &Security) -> Result<Option<crate::launch::client::HttpsTrust>, String> {
    match (&security.https, &args.security.tls_ca) {
        (Some(_), Some(ca)) => {
            let pem = std::fs::read(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            crate::launch::client::HttpsTrust::from_ca_pem(&pem).map(Some).map_err(|e| format!("--tls-ca: {e}"))
        }
        _ => Ok(None),
    }
}

/// The transport's settings, with mutual TLS when configured; logs what is left
/// unauthenticated.
fn transport_config(cluster_id: u64, id: NodeId, security: &Security, listen: std::net::SocketAddr) -> TcpConfig {
    let mut config = TcpConfig::new(cluster_id, id);
    config.tls = security.peer_tls.clone();
    if config.tls.is_none() {
        warn!(
            node = id,
            "no --tls-cert/--tls-key/--tls-ca: peers are not authenticated and Raft traffic is not encrypted; \
             anyone who can reach {listen} can disrupt the cluster"
        );
    }
    if security.admin_token.is_none() {
        warn!(node = id, "no --admin-token: requests that change membership or leadership are not authenticated");
    }
    config
}

/// Runs `services` together; completes only with the first one's error (one that ends
/// with `Ok` leaves the others running).
async fn run_services(services: Vec<Service>) -> String {
    let failures = services.into_iter().map(|s| {
        async move {
            match s.await {
                Ok(()) => futures::future::pending::<String>().await,
                Err(e) => format!("a service of the app failed: {e}"),
            }
        }
        .boxed()
    });
    // A pending one keeps `select_all` from an empty list.
    let (e, _, _) = futures::future::select_all(failures.chain([futures::future::pending().boxed()])).await;
    e
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::apps::counter::Counter;

    /// An app with no routes whose one service fails at once.
    struct FailingService;

    impl App for FailingService {
        type Machine = Counter;
        const NAME: &'static str = "failing";
        const ABOUT: &'static str = "";
        const CLUSTER_ID: u64 = 0x7465_7374;

        fn max_body_size(&self, _: &Method, _: &str) -> usize {
            0
        }

        async fn handle<'a>(&'a self, _: &'a AppNode<Counter>, r: Request<Bytes>) -> Result<HttpResponse, ApiError> {
            Err(http::not_found(r.uri().path()))
        }

        fn services<R: HttpRuntime>(&self, _rt: &R, node: &AppNode<Counter>) -> Vec<Service> {
            let node = node.clone();
            vec![Box::pin(async move { Err(format!("boom on node {}", node.raft().status().id)) })]
        }
    }

    #[test]
    fn a_failing_service_stops_the_node_with_its_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = crate::launch::free_ports(2).expect("ports");
        let args = NodeArgs::try_parse_from([
            "failing",
            "--id",
            "1",
            "--listen",
            &ports[0].to_string(),
            "--http",
            &ports[1].to_string(),
            "--peers",
            &format!("1={}", ports[0]),
            "--data-dir",
            &dir.path().display().to_string(),
        ])
        .expect("args");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
        // The runtime handle is taken inside the runtime.
        let result = rt.block_on(async {
            run(raft::runtime::TokioRuntime::new(), args, FailingService, futures::future::pending()).await
        });
        let e = result.expect_err("the service failed");
        assert!(e.contains("boom on node 1"), "{e}");
    }
}

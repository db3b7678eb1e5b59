//! The `bench inproc` benchmark of the main workspace, for openraft 0.9.
//!
//! `openraft-inproc-bench inproc --nodes 3 --clients N --duration SECS [--json]`: a cluster of
//! real openraft `Raft` nodes in one process on tokio, with an in-memory log store, an
//! in-memory state machine and an in-memory network that calls the target node's `Raft`
//! handle directly (no serialization); N clients call `client_write` on the leader with an
//! empty command in a loop, one outstanding each. Prints writes/s and latency percentiles,
//! in the same format (and with the same JSON keys) as the main workspace's `bench inproc`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Config, Entry, EntryPayload, LogId, LogState, OptionalSend, Raft, RaftLogReader, RaftNetwork,
    RaftNetworkFactory, RaftSnapshotBuilder, ServerState, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    Vote,
};

openraft::declare_raft_types!(
    /// Types of the benchmark cluster: the command and its response are `()`.
    pub TypeConfig:
        D = (),
        R = (),
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

type NodeId = u64;
type C = TypeConfig;

// ---------------------------------------------------------------------------------------------
// Log store: entries in a BTreeMap behind a mutex, shared with the log readers.

#[derive(Default)]
struct LogInner {
    log: BTreeMap<u64, Entry<C>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

/// An in-memory log store; a clone is another handle to the same log (used as the reader).
#[derive(Clone, Default)]
struct MemLog {
    inner: Arc<Mutex<LogInner>>,
}

impl MemLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().expect("log mutex poisoned")
    }
}

impl RaftLogReader<C> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<C> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<NodeId>> {
        let inner = self.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = self.lock();
            for e in entries {
                inner.log.insert(e.log_id.index, e);
            }
        }
        // In memory: durable as soon as it is stored.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        let _removed = inner.log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        let kept = inner.log.split_off(&(log_id.index + 1));
        inner.log = kept;
        inner.last_purged = Some(log_id);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// State machine: counts applied commands (like the main workspace's `Noop`).

#[derive(Default)]
struct SmInner {
    applied: u64,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshot_seq: u64,
}

#[derive(Clone, Default)]
struct MemSm {
    inner: Arc<Mutex<SmInner>>,
}

impl MemSm {
    fn lock(&self) -> std::sync::MutexGuard<'_, SmInner> {
        self.inner.lock().expect("state machine mutex poisoned")
    }
}

impl RaftSnapshotBuilder<C> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<NodeId>> {
        let mut inner = self.lock();
        inner.snapshot_seq += 1;
        let id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshot_seq),
            None => format!("none-{}", inner.snapshot_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: id,
        };
        let data = inner.applied.to_le_bytes().to_vec();
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<C> for MemSm {
    type SnapshotBuilder = MemSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut responses = Vec::new();
        for e in entries {
            inner.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(()) => inner.applied += 1,
                EntryPayload::Membership(m) => inner.membership = StoredMembership::new(Some(e.log_id), m),
            }
            responses.push(());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut inner = self.lock();
        let mut counter = [0u8; 8];
        let n = data.len().min(8);
        counter[..n].copy_from_slice(&data[..n]);
        inner.applied = u64::from_le_bytes(counter);
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner
            .snapshot
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.clone())) }))
    }
}

// ---------------------------------------------------------------------------------------------
// Network: a router from node id to the node's `Raft` handle; RPCs are direct calls.

#[derive(Clone, Default)]
struct Router {
    nodes: Arc<RwLock<BTreeMap<NodeId, Raft<C>>>>,
}

impl Router {
    fn get(&self, id: NodeId) -> Option<Raft<C>> {
        self.nodes.read().expect("router lock poisoned").get(&id).cloned()
    }
}

#[derive(Debug)]
struct NotRegistered(NodeId);

impl std::fmt::Display for NotRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} is not registered", self.0)
    }
}

impl std::error::Error for NotRegistered {}

impl RaftNetworkFactory<C> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        Conn { target, router: self.clone() }
    }
}

struct Conn {
    target: NodeId,
    router: Router,
}

impl Conn {
    #[allow(clippy::result_large_err)] // the error type is openraft's
    fn node<E: std::error::Error>(&self) -> Result<Raft<C>, RPCError<NodeId, BasicNode, E>> {
        self.router.get(self.target).ok_or_else(|| RPCError::Unreachable(Unreachable::new(&NotRegistered(self.target))))
    }
}

impl RaftNetwork<C> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let node = self.node()?;
        node.append_entries(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let node = self.node()?;
        node.install_snapshot(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let node = self.node()?;
        node.vote(rpc).await.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

// ---------------------------------------------------------------------------------------------
// CLI and benchmark driver (mirrors the main workspace's `bench inproc`).

#[derive(Parser)]
#[command(about = "In-process openraft benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// In-process cluster with in-memory store and network.
    Inproc {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Concurrent clients, each with one write outstanding.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Measured seconds (after a short warm-up).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Worker threads of the tokio runtime (default: number of CPUs).
        #[arg(long)]
        threads: Option<usize>,
        /// Print a JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inproc { nodes, clients, duration, threads, json } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(t) = threads {
                b.worker_threads(t);
            }
            let rt = match b.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start tokio: {e}");
                    std::process::exit(1);
                }
            };
            if let Err(e) = rt.block_on(inproc(nodes, clients, Duration::from_secs_f64(duration), json)) {
                eprintln!("bench failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

async fn inproc(nodes: u64, clients: usize, duration: Duration, json: bool) -> Result<(), String> {
    // openraft's defaults, validated (the same values as `Config::default()`).
    let config = Arc::new(Config::default().validate().map_err(|e| e.to_string())?);
    let router = Router::default();
    let mut rafts = Vec::new();
    for id in 1..=nodes {
        let raft = Raft::new(id, config.clone(), router.clone(), MemLog::default(), MemSm::default())
            .await
            .map_err(|e| e.to_string())?;
        router.nodes.write().expect("router lock poisoned").insert(id, raft.clone());
        rafts.push(raft);
    }
    // Form the cluster: initialize node 1 with all nodes as voters; it elects itself and
    // replicates the membership to the others.
    let members: BTreeSet<NodeId> = (1..=nodes).collect();
    rafts[0].initialize(members).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let leader = loop {
        if let Some(r) = rafts.iter().find(|r| r.metrics().borrow().state == ServerState::Leader) {
            break r.clone();
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("no leader elected within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let leader = leader.clone();
        let measuring = measuring.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram precision");
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = leader.client_write(()).await;
                if measuring.load(Ordering::Relaxed) {
                    match r {
                        Ok(_) => {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => errors += 1,
                    }
                }
            }
            (hist, errors)
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).expect("valid histogram precision");
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.map_err(|e| e.to_string())?;
        hist.add(&h).map_err(|e| e.to_string())?;
        errors += e;
    }
    for r in &rafts {
        let _ = r.shutdown().await;
    }
    let writes = hist.len();
    let wps = writes as f64 / elapsed;
    let (p50, p99, p999) = (hist.value_at_quantile(0.5), hist.value_at_quantile(0.99), hist.value_at_quantile(0.999));
    println!(
        "inproc: {nodes} nodes, {clients} clients, {elapsed:.1}s: {wps:.0} writes/s, latency p50 {p50} us, p99 {p99} us, p999 {p999} us, {errors} errors"
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "nodes": nodes, "clients": clients, "seconds": elapsed, "writes": writes,
                "writes_per_sec": wps, "p50_us": p50, "p99_us": p99, "p999_us": p999, "errors": errors,
            })
        );
    }
    Ok(())
}

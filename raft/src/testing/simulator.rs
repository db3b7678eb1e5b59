//! The deterministic cluster simulator.
//!
//! [`SimCluster`] runs N nodes of the real [`Raft`] handle (core and driver) on the
//! [`Simulation`] runtime, with [`MemStore`]s whose writes take virtual time and can be
//! lost in a crash, and a [`MemNetwork`] with fault injection. Everything is driven by
//! one seed, so a seed replays a run exactly.
//!
//! [`run_seed`] is the randomized test: concurrent clients write to a KV state machine
//! through any node (followers forward to the leader) and read it either through the log
//! or with linearizable ReadIndex reads on any node, while a nemesis partitions, isolates, drops, duplicates, delays, crashes and restarts;
//! after every simulation step the invariants of the design are checked, incrementally:
//! election safety, state machine safety, log matching of every committed prefix and
//! leader completeness (every 256 steps and at the end, also a pairwise comparison of
//! whole logs, uncommitted tails included); at the end the client history is checked for
//! linearizability and the healed cluster must make progress.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{self, Either};
use serde::{Deserialize, Serialize};

use super::linearizability::{check_kv, CheckResult, KvInput, KvOutput, Operation};
use super::mem_network::{FaultConfig, MemNetwork};
use super::mem_store::MemStore;
use super::sim_runtime::{SimRuntime, Simulation};
use super::sim_store::SimStore;
use crate::config::Config;
use crate::core::Role;
use crate::driver::Raft;
use crate::error::ClientError;
use crate::runtime::Runtime;
use crate::state_machine::StateMachine;
use crate::sync::lock;
use crate::types::{Entry, Instant, LogIndex, NodeId, Term};

/// A command of the simulated KV store. `op` identifies the client operation, so the
/// checker can tell which operation was applied at which index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// A unique operation id.
    pub op: u64,
    /// What to do.
    pub action: KvInput,
}

/// The record of what one node applied: `(index, op id)` in apply order.
pub type AppliedLog = Arc<Mutex<Vec<(LogIndex, u64)>>>;

/// The simulated KV state machine. It records every applied command for the checker.
#[derive(Debug)]
pub struct SimKv {
    map: BTreeMap<String, String>,
    applied: AppliedLog,
}

impl SimKv {
    /// An empty store recording into `applied`.
    pub fn new(applied: AppliedLog) -> Self {
        SimKv { map: BTreeMap::new(), applied }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.map.get(key)
    }
}

impl StateMachine for SimKv {
    type Command = KvCommand;
    type Response = KvOutput;

    fn apply(&mut self, index: LogIndex, cmd: KvCommand) -> KvOutput {
        lock(&self.applied).push((index, cmd.op));
        match cmd.action {
            KvInput::Put { key, value } => {
                self.map.insert(key, value);
                KvOutput::Ok
            }
            KvInput::Get { key } => KvOutput::Value(self.map.get(&key).cloned()),
            KvInput::Delete { key } => {
                self.map.remove(&key);
                KvOutput::Ok
            }
            KvInput::Cas { key, expected, new } => {
                let current = self.map.get(&key).cloned();
                if current == expected {
                    self.map.insert(key, new);
                    KvOutput::CasResult { ok: true, current: expected }
                } else {
                    KvOutput::CasResult { ok: false, current }
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.map).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.map = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Options of a simulated cluster and of a randomized run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Number of nodes.
    pub nodes: u64,
    /// Number of concurrent clients in [`run_seed`].
    pub clients: usize,
    /// Virtual time with faults in [`run_seed`].
    pub fault_time: Duration,
    /// Virtual time after healing, in which the cluster must make progress.
    pub heal_time: Duration,
    /// Whether the nemesis injects faults.
    pub faults: bool,
    /// Largest virtual delay of a store write.
    pub max_write_delay: Duration,
    /// The nodes' configuration (its `rng_seed` is replaced per node).
    pub config: Config,
    /// Print every trace event as it happens.
    pub verbose: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 3,
            clients: 4,
            fault_time: Duration::from_secs(4),
            heal_time: Duration::from_secs(3),
            faults: true,
            max_write_delay: Duration::from_millis(2),
            config: Config::default(),
            verbose: false,
        }
    }
}

impl SimOptions {
    /// Options varied by `seed`: 3 or 5 nodes, pre-vote and check-quorum on or off,
    /// different message, window, memory-cache and forwarding limits.
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_0f0b_710a);
        let mut o = SimOptions { nodes: if rng.u8(..4) == 0 { 5 } else { 3 }, ..SimOptions::default() };
        o.config.pre_vote = rng.u8(..4) != 0;
        o.config.check_quorum = rng.u8(..4) != 0;
        o.config.max_inflight_messages = rng.usize(1..16);
        o.config.max_entries_per_message = rng.usize(1..64);
        // Often keep little in memory, so lagging peers are served from the store.
        o.config.max_cached_lag = if rng.bool() { rng.u64(4..200) } else { 1 << 16 };
        o.config.max_forwards_in_flight = rng.usize(1..4);
        o
    }
}

/// A violated invariant or a failed check, with the seed that replays it.
#[derive(Debug)]
pub struct SimFailure {
    /// The seed of the run.
    pub seed: u64,
    /// What went wrong.
    pub reason: String,
    /// The last trace events before the failure.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.reason)?;
        writeln!(f, "replay with: RAFT_SIM_SEED={} cargo test -p raft --all-features --test simulation", self.seed)?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// What a successful run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Client operations that completed with a known result.
    pub ops_ok: usize,
    /// Client operations whose outcome is unknown (timed out or the node crashed).
    pub ops_unknown: usize,
    /// Highest commit index reached.
    pub commit_index: LogIndex,
    /// Highest term reached.
    pub max_term: Term,
    /// Simulation steps taken.
    pub steps: u64,
    /// Crashes injected.
    pub crashes: usize,
}

/// What a sweep of many seeds did: see [`sweep`].
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Client operations with a known result, over every passing seed.
    pub ops_ok: usize,
    /// Crashes injected, over every passing seed.
    pub crashes: usize,
    /// The seeds that failed (each failure was printed with its replay hint).
    pub failures: Vec<u64>,
    /// Wall-clock time the sweep took.
    pub seconds: f64,
}

/// Runs `run` for every seed in `seeds`, printing each failure to stderr, and adds up
/// what the passing runs did.
pub fn sweep(seeds: std::ops::Range<u64>, mut run: impl FnMut(u64) -> Result<SimReport, SimFailure>) -> SweepReport {
    let started = std::time::Instant::now();
    let mut report = SweepReport::default();
    for seed in seeds {
        match run(seed) {
            Ok(r) => {
                report.ops_ok += r.ops_ok;
                report.crashes += r.crashes;
            }
            Err(f) => {
                eprintln!("{f}");
                report.failures.push(seed);
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

struct Trace {
    lines: Mutex<VecDeque<String>>,
    verbose: bool,
}

impl Trace {
    fn log(&self, now: Instant, line: String) {
        let line = format!("[{now:?}] {line}");
        if self.verbose {
            eprintln!("{line}");
        }
        let mut l = lock(&self.lines);
        if l.len() >= 300 {
            l.pop_front();
        }
        l.push_back(line);
    }

    fn tail(&self) -> Vec<String> {
        lock(&self.lines).iter().cloned().collect()
    }
}

struct NodeSlot {
    raft: Option<Raft<SimKv>>,
    store: Arc<dyn SimStore>,
    applied: AppliedLog,
    /// How far `applied` has been checked.
    applied_checked: usize,
    /// How far this incarnation's committed log has been checked.
    log_checked: LogIndex,
    /// As leader of the term given: how far its log has been checked against the
    /// committed log (a leader never removes entries, so this only grows).
    leader_checked: (Term, LogIndex),
}

/// The shared state of a simulated cluster, usable from inside simulated tasks.
struct ClusterState {
    sim: Arc<Simulation>,
    net: MemNetwork<SimRuntime>,
    opts: SimOptions,
    nodes: Mutex<BTreeMap<NodeId, NodeSlot>>,
    trace: Trace,
}

/// A cluster of simulated nodes. See the module docs.
pub struct SimCluster {
    state: Arc<ClusterState>,
    checker: Checker,
}

impl SimCluster {
    /// Bootstraps `opts.nodes` nodes (ids `1..=n`) on a new simulation seeded with
    /// `seed`.
    pub fn new(seed: u64, opts: SimOptions) -> Result<Self, SimFailure> {
        Self::with_stores(seed, opts, |_| Arc::new(MemStore::new()))
    }

    /// Like [`new`](Self::new), with node `id`'s store made by `make_store(id)`.
    pub fn with_stores(
        seed: u64,
        opts: SimOptions,
        mut make_store: impl FnMut(NodeId) -> Arc<dyn SimStore>,
    ) -> Result<Self, SimFailure> {
        let sim = Arc::new(Simulation::new(seed));
        let net = MemNetwork::new(sim.runtime(), seed ^ 0x6e65_7477_6f72);
        let trace = Trace { lines: Mutex::new(VecDeque::new()), verbose: opts.verbose };
        let state = Arc::new(ClusterState { sim, net, opts, nodes: Mutex::new(BTreeMap::new()), trace });
        let cluster = SimCluster { state, checker: Checker::new(seed) };
        let n = cluster.state.opts.nodes;
        for id in 1..=n {
            let store = make_store(id);
            let sim = cluster.state.sim.clone();
            let max_delay = cluster.state.opts.max_write_delay;
            let rt = sim.runtime();
            let delay_rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed ^ id)));
            store.set_write_delay(Some(Arc::new(move || {
                let rt = rt.clone();
                let d = lock(&delay_rng).u64(0..=max_delay.as_nanos() as u64);
                Box::pin(async move {
                    let until = rt.now().add(Duration::from_nanos(d));
                    rt.sleep_until(until).await;
                })
            })));
            let applied: AppliedLog = Arc::default();
            lock(&cluster.state.nodes).insert(
                id,
                NodeSlot { raft: None, store, applied, applied_checked: 0, log_checked: 0, leader_checked: (0, 0) },
            );
            let state = cluster.state.clone();
            let started = cluster
                .state
                .sim
                .block_on(async move { state.start_node(id, Some((1..=n).collect())).await }, Duration::from_secs(1));
            match started {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(cluster.fail(format!("node {id} failed to bootstrap: {e}"))),
                None => return Err(cluster.fail(format!("node {id} did not bootstrap in time"))),
            }
        }
        Ok(cluster)
    }

    /// The simulation.
    pub fn sim(&self) -> &Simulation {
        &self.state.sim
    }

    /// The network, for injecting faults.
    pub fn network(&self) -> &MemNetwork<SimRuntime> {
        &self.state.net
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.state.sim.now()
    }

    /// The Raft handle of node `id`, if it is running.
    pub fn node(&self, id: NodeId) -> Option<Raft<SimKv>> {
        lock(&self.state.nodes).get(&id).and_then(|s| s.raft.clone())
    }

    /// The store of node `id`, if it is a [`MemStore`].
    pub fn store(&self, id: NodeId) -> Option<MemStore> {
        lock(&self.state.nodes).get(&id).and_then(|s| s.store.as_any().downcast_ref::<MemStore>().cloned())
    }

    /// Ids of the nodes.
    pub fn ids(&self) -> Vec<NodeId> {
        lock(&self.state.nodes).keys().copied().collect()
    }

    /// Records a line in the trace.
    pub fn log(&self, line: impl Into<String>) {
        self.state.trace.log(self.now(), line.into());
    }

    /// The running node that leads the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.state.leader()
    }

    /// Runs the simulation for `d` of virtual time, checking invariants after every
    /// step.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimFailure> {
        let end = self.now().add(d);
        while self.now() < end {
            if !self.state.sim.step() {
                self.state.sim.run_until(end);
            }
            self.check_step()?;
        }
        Ok(())
    }

    /// Runs until `pred` holds (checked after every step) or `limit` passes. Returns
    /// whether it held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&SimCluster) -> bool,
    ) -> Result<bool, SimFailure> {
        let end = self.now().add(limit);
        while self.now() < end {
            if pred(self) {
                return Ok(true);
            }
            if !self.state.sim.step() {
                self.state.sim.run_until(end);
            }
            self.check_step()?;
        }
        Ok(pred(self))
    }

    /// Runs until some node is leader (and returns it) or `limit` passes.
    pub fn wait_for_leader(&mut self, limit: Duration) -> Result<Option<NodeId>, SimFailure> {
        self.run_until(limit, |c| c.leader().is_some())?;
        Ok(self.leader())
    }

    /// Proposes `action` through node `via` and runs the simulation until it completes
    /// or `limit` passes (`None`).
    pub fn propose(
        &mut self,
        via: NodeId,
        action: KvInput,
        limit: Duration,
    ) -> Result<Option<Result<KvOutput, ClientError>>, SimFailure> {
        let Some(raft) = self.node(via) else { return Ok(Some(Err(ClientError::ShuttingDown))) };
        let op = self.checker.next_op();
        let result: Arc<Mutex<Option<Result<KvOutput, ClientError>>>> = Arc::default();
        let r2 = result.clone();
        let _task = self.state.sim.runtime().spawn(async move {
            let out = raft.propose(KvCommand { op, action }).await;
            *lock(&r2) = Some(out);
        });
        self.run_until(limit, |_| lock(&result).is_some())?;
        let out = lock(&result).take();
        Ok(out)
    }

    /// Proposes through whichever node leads, following leader hints, until it
    /// succeeds or `limit` passes.
    pub fn propose_anywhere(&mut self, action: KvInput, limit: Duration) -> Result<Option<KvOutput>, SimFailure> {
        let end = self.now().add(limit);
        while self.now() < end {
            let Some(leader) = self.leader() else {
                self.run_for(Duration::from_millis(10))?;
                continue;
            };
            // A proposal on a leader that is about to be deposed may stay undecided until
            // a later commit passes its index; try again rather than wait for it.
            let left = end.saturating_since(self.now()).min(Duration::from_secs(1));
            if let Some(Ok(out)) = self.propose(leader, action.clone(), left)? {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// Crashes node `id`: its tasks stop, its network endpoint goes away and its store
    /// loses everything not yet durable.
    pub fn crash(&self, id: NodeId) {
        self.state.crash(id);
    }

    /// Restarts a crashed node from its store.
    pub fn restart(&mut self, id: NodeId) -> Result<(), SimFailure> {
        let state = self.state.clone();
        match self.state.sim.block_on(async move { state.start_node(id, None).await }, Duration::from_secs(1)) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(self.fail(format!("node {id} failed to restart: {e}"))),
            None => Err(self.fail(format!("node {id} did not restart in time"))),
        }
    }

    /// Checks the per-step invariants now.
    pub fn check_step(&mut self) -> Result<(), SimFailure> {
        let r = self.checker.check_step(&self.state);
        r.map_err(|reason| self.fail(reason))
    }

    /// Checks every invariant, including the whole-log ones.
    pub fn check_all(&mut self) -> Result<(), SimFailure> {
        self.check_step()?;
        let r = self.checker.check_logs(&self.state, true);
        r.map_err(|reason| self.fail(reason))
    }

    /// The highest commit index among running nodes.
    pub fn max_commit(&self) -> LogIndex {
        self.state.statuses().iter().map(|s| s.2).max().unwrap_or(0)
    }

    /// The values of `key` on every running node (stale local reads).
    pub fn values(&self, key: &str) -> BTreeMap<NodeId, Option<String>> {
        lock(&self.state.nodes)
            .iter()
            .filter_map(|(&id, s)| s.raft.as_ref().map(|r| (id, r.read_local_stale(|kv| kv.get(key).cloned()))))
            .collect()
    }

    fn fail(&self, reason: String) -> SimFailure {
        SimFailure { seed: self.checker.seed, reason, trace: self.state.trace.tail() }
    }

    /// Stops every node cleanly and checks that no task is left running.
    pub fn shutdown(self) -> Result<(), SimFailure> {
        let rafts: Vec<Raft<SimKv>> = lock(&self.state.nodes).values().filter_map(|s| s.raft.clone()).collect();
        let done = self.state.sim.block_on(
            async move {
                for r in rafts {
                    r.shutdown().await;
                }
            },
            Duration::from_secs(5),
        );
        if done.is_none() {
            return Err(self.fail("shutdown did not finish".into()));
        }
        Ok(())
    }
}

impl ClusterState {
    fn now(&self) -> Instant {
        self.sim.now()
    }

    fn log(&self, line: String) {
        self.trace.log(self.now(), line);
    }

    /// `(id, role, commit, term)` of every running node.
    fn statuses(&self) -> Vec<(NodeId, Role, LogIndex, Term)> {
        lock(&self.nodes)
            .iter()
            .filter_map(|(&id, s)| s.raft.as_ref().map(|r| r.with_status(|st| (id, st.role, st.commit_index, st.term))))
            .collect()
    }

    fn leader(&self) -> Option<NodeId> {
        self.statuses().into_iter().filter(|s| s.1 == Role::Leader).max_by_key(|s| s.3).map(|s| s.0)
    }

    async fn start_node(self: &Arc<Self>, id: NodeId, bootstrap: Option<Vec<NodeId>>) -> Result<(), String> {
        let (store, applied) = {
            let mut nodes = lock(&self.nodes);
            let slot = nodes.get_mut(&id).ok_or("unknown node")?;
            lock(&slot.applied).clear();
            slot.applied_checked = 0;
            slot.log_checked = 0;
            slot.leader_checked = (0, 0);
            (slot.store.clone(), slot.applied.clone())
        };
        let store = store.open()?;
        let mut config = self.opts.config.clone();
        config.rng_seed = Some(self.sim.random_u64());
        let rt = self.sim.runtime_in_group(id);
        let endpoint = self.net.endpoint(id);
        let sm = SimKv::new(applied);
        let raft = match bootstrap {
            Some(members) => Raft::bootstrap(id, members, config, rt, store, endpoint, sm).await,
            None => Raft::restart(id, config, rt, store, endpoint, sm).await,
        }
        .map_err(|e| e.to_string())?;
        let r2 = raft.clone();
        self.net.register(id, Arc::new(move |m| r2.receive(m)));
        if let Some(slot) = lock(&self.nodes).get_mut(&id) {
            slot.raft = Some(raft);
        }
        self.log(format!("node {id} started"));
        Ok(())
    }

    fn crash(&self, id: NodeId) {
        let store = {
            let mut nodes = lock(&self.nodes);
            let Some(slot) = nodes.get_mut(&id) else { return };
            slot.raft = None;
            slot.store.clone()
        };
        self.net.unregister(id);
        self.sim.kill_group(id);
        self.sim.with_rng(|rng| store.crash(rng));
        self.log(format!("node {id} crashed"));
    }
}

/// Invariant checks shared by the scripted tests and the randomized runs.
struct Checker {
    seed: u64,
    next_op: u64,
    /// Election safety: the leader seen for each term.
    leaders: BTreeMap<Term, NodeId>,
    /// State machine safety: the operation applied at each index.
    applied: BTreeMap<LogIndex, u64>,
    /// The committed log as first observed: index -> (entry, the observer's term). The
    /// entry was committed in that term or earlier, so every leader of a later term
    /// must hold it.
    committed: BTreeMap<LogIndex, (Entry, Term)>,
    steps: u64,
    last_roles: BTreeMap<NodeId, (Role, Term)>,
}

impl Checker {
    fn new(seed: u64) -> Self {
        Checker {
            seed,
            next_op: 1,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            committed: BTreeMap::new(),
            steps: 0,
            last_roles: BTreeMap::new(),
        }
    }

    fn next_op(&mut self) -> u64 {
        self.next_op += 1;
        self.next_op | (1 << 62)
    }

    fn check_step(&mut self, state: &ClusterState) -> Result<(), String> {
        self.steps += 1;
        // Election safety (paper figure 3): at most one leader per term, ever.
        for (id, role, _commit, term) in state.statuses() {
            if self.last_roles.get(&id) != Some(&(role, term)) {
                self.last_roles.insert(id, (role, term));
                state.log(format!("node {id} is {role:?} in term {term}"));
            }
            if role == Role::Leader {
                if let Some(&other) = self.leaders.get(&term) {
                    if other != id {
                        return Err(format!("election safety: nodes {other} and {id} both lead term {term}"));
                    }
                } else {
                    self.leaders.insert(term, id);
                }
            }
        }
        // State machine safety: every node applies the same operation at each index, in
        // increasing index order, exactly once.
        let mut nodes = lock(&state.nodes);
        for (&id, slot) in nodes.iter_mut() {
            let applied = lock(&slot.applied);
            for k in slot.applied_checked..applied.len() {
                let (index, op) = applied[k];
                if k > 0 && applied[k - 1].0 >= index {
                    return Err(format!(
                        "state machine safety: node {id} applied index {index} after index {}",
                        applied[k - 1].0
                    ));
                }
                match self.applied.get(&index) {
                    Some(&o) if o != op => {
                        return Err(format!(
                        "state machine safety: node {id} applied op {op} at index {index}, another node applied op {o}"
                    ))
                    }
                    Some(_) => {}
                    None => {
                        self.applied.insert(index, op);
                    }
                }
            }
            slot.applied_checked = applied.len();
        }
        drop(nodes);
        self.check_logs(state, self.steps % 256 == 0)
    }

    /// Log matching and leader completeness, read from the stores, incrementally: every
    /// entry at or below a node's commit index equals the committed entry first observed
    /// there; a leader's log holds every entry committed in an earlier term. With
    /// `full`, also every pair of whole logs: if they agree on an index's term they
    /// agree on the whole prefix.
    fn check_logs(&mut self, state: &ClusterState, full: bool) -> Result<(), String> {
        let mut nodes = lock(&state.nodes);
        for (&id, slot) in nodes.iter_mut() {
            let Some(raft) = &slot.raft else { continue };
            let (role, commit, durable, term) = raft.with_status(|s| (s.role, s.commit_index, s.durable_index, s.term));
            let upto = commit.min(durable);
            if upto > slot.log_checked {
                for e in slot.store.entries_in(slot.log_checked + 1, upto) {
                    match self.committed.get(&e.index) {
                        Some((c, _)) if *c != e => {
                            return Err(format!(
                                "log matching: node {id} holds {e:?} at committed index {}, committed entry is {c:?}",
                                e.index
                            ))
                        }
                        Some(_) => {}
                        None => {
                            self.committed.insert(e.index, (e, term));
                        }
                    }
                }
                slot.log_checked = upto;
            }
            // Leader completeness (paper §5.4): once the leader's log is durable that far,
            // it holds every entry committed in an earlier term.
            if role == Role::Leader {
                if slot.leader_checked.0 != term {
                    slot.leader_checked = (term, 0);
                }
                let want = self.committed.range(..=durable).next_back().map_or(0, |(&i, _)| i);
                if want > slot.leader_checked.1 {
                    let from = slot.leader_checked.1 + 1;
                    let held = slot.store.entries_in(from, want);
                    for (idx, (c, _)) in self.committed.range(from..=want).filter(|(_, (_, t))| *t < term) {
                        let e = held.get((*idx - from) as usize);
                        if e != Some(c) {
                            return Err(format!(
                                "leader completeness: leader {id} of term {term} has {e:?} at index {idx}, committed entry is {c:?}"
                            ));
                        }
                    }
                    slot.leader_checked.1 = want;
                }
            }
        }
        if full {
            let logs: Vec<(NodeId, Vec<Entry>)> =
                nodes.iter().map(|(&id, s)| (id, s.store.entries_snapshot())).collect();
            for (i, (a, la)) in logs.iter().enumerate() {
                for (b, lb) in logs.iter().skip(i + 1) {
                    let common = la.len().min(lb.len());
                    if let Some(k) = (0..common).rev().find(|&k| la[k].term == lb[k].term) {
                        if la[..=k] != lb[..=k] {
                            return Err(format!(
                                "log matching: nodes {a} and {b} agree on the term at index {} but differ before it",
                                k + 1
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// One client's view of an operation, for the history.
type History = Arc<Mutex<Vec<Operation<KvInput, KvOutput>>>>;

/// Runs one randomized simulation with faults, as described in the module docs.
pub fn run_seed(seed: u64, opts: SimOptions) -> Result<SimReport, SimFailure> {
    run_seed_with_stores(seed, opts, |_| Arc::new(MemStore::new()))
}

/// Like [`run_seed`], with node `id`'s store made by `make_store(id)`.
pub fn run_seed_with_stores(
    seed: u64,
    opts: SimOptions,
    make_store: impl FnMut(NodeId) -> Arc<dyn SimStore>,
) -> Result<SimReport, SimFailure> {
    let faults = opts.faults;
    let (fault_time, heal_time, clients) = (opts.fault_time, opts.heal_time, opts.clients);
    let mut cluster = SimCluster::with_stores(seed, opts, make_store)?;
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let crashes = Arc::new(Mutex::new(0usize));

    for c in 0..clients {
        let state = cluster.state.clone();
        let history = history.clone();
        let stop = stop.clone();
        let first_op = (c as u64 + 1) << 40;
        let rng = fastrand::Rng::with_seed(seed ^ (0xc11e_0000 + c as u64));
        drop(cluster.state.sim.runtime().spawn(client_task(state, c as u64, first_op, rng, history, stop)));
    }
    if faults {
        let state = cluster.state.clone();
        let stop = stop.clone();
        let crashes = crashes.clone();
        let rng = fastrand::Rng::with_seed(seed ^ 0x6e65_6d65_7369);
        drop(cluster.state.sim.runtime().spawn(nemesis_task(state, rng, stop, crashes)));
    }

    cluster.run_for(fault_time)?;
    // Heal: no more faults, every node back up.
    stop.store(true, Ordering::SeqCst);
    cluster.network().set_faults(FaultConfig::none());
    cluster.network().heal();
    cluster.log("healed all faults");
    for id in cluster.ids() {
        if cluster.node(id).is_none() {
            cluster.restart(id)?;
        }
    }
    // Progress: a write commits after healing, and every node catches up.
    let before = cluster.max_commit();
    let op = KvInput::Put { key: "final".into(), value: "done".into() };
    if cluster.propose_anywhere(op, heal_time)?.is_none() {
        return Err(cluster.fail(format!("no progress: no write committed within {heal_time:?} after healing")));
    }
    let target = cluster.max_commit();
    if target <= before {
        return Err(cluster.fail("no progress: commit index did not advance after healing".into()));
    }
    let caught_up = cluster.run_until(heal_time, |c| {
        c.state.statuses().iter().all(|s| s.2 >= target) && c.values("final").values().all(|v| v.is_some())
    })?;
    if !caught_up {
        return Err(cluster.fail(format!("no progress: not every node applied index {target} after healing")));
    }
    // Let clients finish their last operations.
    cluster.run_for(Duration::from_millis(1500))?;
    cluster.check_all()?;

    let history = std::mem::take(&mut *lock(&history));
    let ops_ok = history.iter().filter(|o| o.ret.is_some()).count();
    let ops_unknown = history.len() - ops_ok;
    match check_kv(&history, 2_000_000) {
        CheckResult::Linearizable => {}
        CheckResult::NotLinearizable { explanation } => {
            return Err(cluster.fail(format!("client history is not linearizable: {explanation}")))
        }
        CheckResult::Unknown => cluster.log("linearizability check exceeded its budget; result unknown"),
    }
    let report = SimReport {
        ops_ok,
        ops_unknown,
        commit_index: cluster.max_commit(),
        max_term: cluster.checker.leaders.keys().next_back().copied().unwrap_or(0),
        steps: cluster.checker.steps,
        crashes: *lock(&crashes),
    };
    cluster.shutdown()?;
    Ok(report)
}

async fn client_task(
    state: Arc<ClusterState>,
    client: u64,
    mut op_id: u64,
    mut rng: fastrand::Rng,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let rt = state.sim.runtime();
    let keys = ["x", "y", "z"];
    let mut target: NodeId = rng.u64(1..=state.opts.nodes);
    let mut seq = 0;
    let read_index_reads = client % 2 == 1;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        op_id += 1;
        let key = keys[rng.usize(..keys.len())].to_string();
        let action = match rng.u8(..10) {
            0..=3 => KvInput::Put { key, value: format!("c{client}-{seq}") },
            4..=6 => KvInput::Get { key },
            7 => KvInput::Delete { key },
            _ => {
                let expected = if rng.bool() { None } else { Some(format!("c{}-{}", rng.u64(0..4), rng.u64(1..=seq))) };
                KvInput::Cas { key, expected, new: format!("c{client}-{seq}") }
            }
        };
        let call = rt.now();
        let give_up = call.add(Duration::from_secs(2));
        loop {
            let raft = lock(&state.nodes).get(&target).and_then(|s| s.raft.clone());
            let Some(raft) = raft else {
                target = rng.u64(1..=state.opts.nodes);
                rt.sleep_until(rt.now().add(Duration::from_millis(5))).await;
                if rt.now() >= give_up {
                    break;
                }
                continue;
            };
            // Reads go half through the log and half through ReadIndex; either way, and
            // for writes, the target may be any node: followers forward or ask the leader.
            let timeout = rt.sleep_until(rt.now().add(Duration::from_secs(1)));
            let request: futures::future::BoxFuture<'static, Result<KvOutput, ClientError>> = match &action {
                KvInput::Get { key } if read_index_reads => {
                    let key = key.clone();
                    Box::pin(async move { raft.read(move |kv| KvOutput::Value(kv.get(&key).cloned())).await })
                }
                _ => {
                    let cmd = KvCommand { op: op_id, action: action.clone() };
                    Box::pin(async move { raft.propose(cmd).await })
                }
            };
            let outcome = match future::select(request, Box::pin(timeout)).await {
                Either::Left((r, _)) => Some(r),
                Either::Right(_) => None,
            };
            let record = |ret: Option<Instant>, output: Option<KvOutput>| {
                lock(&history).push(Operation {
                    client,
                    input: action.clone(),
                    call: call.as_nanos(),
                    ret: ret.map(Instant::as_nanos),
                    output,
                });
            };
            match outcome {
                Some(Ok(out)) => {
                    record(Some(rt.now()), Some(out));
                    break;
                }
                // Refused or discarded: it never took effect; try again, on any node.
                Some(Err(ClientError::NotLeader { .. } | ClientError::NoLeader)) => {
                    target = rng.u64(1..=state.opts.nodes);
                    rt.sleep_until(rt.now().add(Duration::from_millis(10))).await;
                }
                Some(Err(ClientError::Dropped)) | Some(Err(ClientError::Overloaded)) => {
                    rt.sleep_until(rt.now().add(Duration::from_millis(5))).await;
                }
                // The node stopped or we timed out: the outcome is unknown.
                Some(Err(_)) | None => {
                    record(None, None);
                    break;
                }
            }
            if rt.now() >= give_up {
                break;
            }
        }
        rt.sleep_until(rt.now().add(Duration::from_micros(rng.u64(0..3000)))).await;
    }
}

async fn nemesis_task(
    state: Arc<ClusterState>,
    mut rng: fastrand::Rng,
    stop: Arc<AtomicBool>,
    crashes: Arc<Mutex<usize>>,
) {
    let rt = state.sim.runtime();
    let n = state.opts.nodes;
    let mut down: Vec<(NodeId, Instant)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        rt.sleep_until(rt.now().add(Duration::from_millis(rng.u64(100..600)))).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Restart nodes whose downtime is over.
        let now = rt.now();
        let mut i = 0;
        while i < down.len() {
            if down[i].1 <= now {
                let (id, _) = down.remove(i);
                if let Err(e) = state.start_node(id, None).await {
                    state.log(format!("nemesis: restart of node {id} failed: {e}"));
                }
            } else {
                i += 1;
            }
        }
        match rng.u8(..10) {
            0 => {
                let mut ids: Vec<NodeId> = (1..=n).collect();
                rng.shuffle(&mut ids);
                let k = rng.usize(1..=(n as usize) / 2);
                let (a, b) = ids.split_at(k);
                state.net.partition(a, b);
                state.log(format!("nemesis: partition {a:?} | {b:?}"));
            }
            1 => {
                if let Some(l) = state.leader() {
                    state.net.isolate(l);
                    state.log(format!("nemesis: isolate leader {l}"));
                }
            }
            2 => {
                let a = rng.u64(1..=n);
                let b = rng.u64(1..=n);
                if a != b {
                    state.net.block(a, b);
                    state.log(format!("nemesis: block {a} -> {b}"));
                }
            }
            3 | 4 => {
                let f = FaultConfig {
                    drop: rng.f64() * 0.2,
                    duplicate: rng.f64() * 0.1,
                    min_delay: Duration::ZERO,
                    max_delay: Duration::from_micros(rng.u64(0..20_000)),
                };
                state.log(format!("nemesis: faults {f:?}"));
                state.net.set_faults(f);
            }
            5 | 6 => {
                let id = rng.u64(1..=n);
                if down.iter().all(|d| d.0 != id) {
                    state.crash(id);
                    *lock(&crashes) += 1;
                    down.push((id, rt.now().add(Duration::from_millis(rng.u64(50..1000)))));
                }
            }
            _ => {
                state.net.heal();
                state.net.set_faults(FaultConfig::none());
                state.log("nemesis: heal".into());
            }
        }
    }
}

//! [`SimCluster`]: the nodes, their stores and the network on one simulation, the
//! trace of what happened, and the calls a scripted test drives them with.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::checker::Checker;
use super::workload::{AppliedLog, KvCommand, SimKv};
use super::{SimFailure, SimOptions};
use crate::error::ClientError;
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::testing::linearizability::{KvInput, KvOutput};
use crate::testing::mem_network::MemNetwork;
use crate::testing::mem_store::MemStore;
use crate::testing::sim_runtime::{rate_ppm_for, DriftClock, DriftRuntime, SimRuntime, Simulation, RATE_ONE_PPM};
use crate::testing::sim_store::SimStore;
use crate::types::{Instant, LogIndex, NodeId, Term};
use crate::Raft;
use crate::Role;

pub(super) struct Trace {
    lines: Mutex<VecDeque<String>>,
    verbose: bool,
}

impl Trace {
    pub(super) fn log(&self, now: Instant, line: String) {
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

    pub(super) fn tail(&self) -> Vec<String> {
        lock(&self.lines).iter().cloned().collect()
    }
}

pub(super) struct NodeSlot {
    pub(super) raft: Option<Raft<SimKv>>,
    pub(super) store: Arc<dyn SimStore>,
    pub(super) applied: AppliedLog,
    /// How far `applied` has been checked.
    pub(super) applied_checked: usize,
    /// How far this incarnation's committed log has been checked.
    pub(super) log_checked: LogIndex,
    /// As leader of the term given: how far its log has been checked against the
    /// committed log (a leader never removes entries, so this only grows).
    pub(super) leader_checked: (Term, LogIndex),
    /// Removed from the cluster and shut down for good: never restarted nor added again.
    pub(super) retired: bool,
    /// The nemesis injected a store fault since the node last started: a stop on a fatal
    /// error is then expected (fail-stop), and the node is restarted.
    pub(super) store_faulted: bool,
    /// The node's clock: the host's, so it keeps running (and drifting) across crashes.
    pub(super) clock: Arc<DriftClock>,
}

/// Mixed with the seed and the node id to seed the draw of the node's clock rate, so that
/// it is independent of every other random choice.
const CLOCK_SEED_MIX: u64 = 0xc10c_d51f_0000_0000;

/// Node `id`'s clock for `drift` (see [`SimOptions::clock_drift`]): the virtual clock
/// itself at zero, without drawing anything.
fn node_clock(seed: u64, id: NodeId, drift: f64) -> DriftClock {
    let drift = if drift.is_nan() { 0.0 } else { drift.clamp(0.0, 0.9) };
    if drift == 0.0 {
        return DriftClock::new(Instant::ZERO, RATE_ONE_PPM);
    }
    let mut rng = fastrand::Rng::with_seed(seed ^ CLOCK_SEED_MIX ^ id);
    DriftClock::new(Instant::ZERO, rate_ppm_for(drift * (2.0 * rng.f64() - 1.0)))
}

/// The shared state of a simulated cluster, usable from inside simulated tasks.
pub(super) struct ClusterState {
    pub(super) sim: Arc<Simulation>,
    pub(super) net: MemNetwork<SimRuntime>,
    pub(super) opts: SimOptions,
    pub(super) nodes: Mutex<BTreeMap<NodeId, NodeSlot>>,
    pub(super) trace: Trace,
}

/// A cluster of simulated nodes. See the module docs.
pub struct SimCluster {
    pub(super) state: Arc<ClusterState>,
    pub(super) checker: Checker,
}

impl SimCluster {
    /// Bootstraps `opts.nodes` nodes (ids `1..=n`) on a new simulation seeded with
    /// `seed`, and starts `opts.spares` more (ids after `n`) on empty stores, waiting to
    /// be added.
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
        for id in 1..=n + cluster.state.opts.spares {
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
            let clock = Arc::new(node_clock(seed, id, cluster.state.opts.clock_drift));
            lock(&cluster.state.nodes).insert(
                id,
                NodeSlot {
                    raft: None,
                    store,
                    applied,
                    applied_checked: 0,
                    log_checked: 0,
                    leader_checked: (0, 0),
                    retired: false,
                    clock: clock.clone(),
                    store_faulted: false,
                },
            );
            if clock.rate_ppm() != RATE_ONE_PPM {
                cluster.log(format!("node {id} clock runs at {:+.3}% of virtual time", clock.rate_error() * 100.0));
            }
            let state = cluster.state.clone();
            let bootstrap = (id <= n).then(|| (1..=n).collect());
            let started = cluster
                .state
                .sim
                .block_on(async move { state.start_node(id, bootstrap).await }, Duration::from_secs(1));
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

    /// Whether node `id` was removed from the cluster and shut down for good.
    pub fn is_retired(&self, id: NodeId) -> bool {
        lock(&self.state.nodes).get(&id).is_some_and(|s| s.retired)
    }

    /// Node `id`'s clock.
    pub fn clock(&self, id: NodeId) -> Option<Arc<DriftClock>> {
        lock(&self.state.nodes).get(&id).map(|s| s.clock.clone())
    }

    /// Makes node `id`'s clock jump forward by `d` now (see [`DriftClock::jump`]).
    /// Returns whether the node exists.
    pub fn jump_clock(&self, id: NodeId, d: Duration) -> bool {
        self.state.jump_clock(id, d)
    }

    /// The fastest node clock's rate minus the slowest's, relative to virtual time.
    pub fn clock_spread(&self) -> f64 {
        let nodes = lock(&self.state.nodes);
        let rates = nodes.values().map(|s| s.clock.rate_ppm());
        match (rates.clone().min(), rates.max()) {
            (Some(lo), Some(hi)) => (hi - lo) as f64 / RATE_ONE_PPM as f64,
            _ => 0.0,
        }
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

    pub(super) fn fail(&self, reason: String) -> SimFailure {
        SimFailure {
            seed: self.checker.seed,
            reason,
            replay_env: self.state.opts.replay_env(),
            trace: self.state.trace.tail(),
        }
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
    pub(super) fn now(&self) -> Instant {
        self.sim.now()
    }

    pub(super) fn log(&self, line: String) {
        self.trace.log(self.now(), line);
    }

    /// `(id, role, commit, term)` of every running node.
    pub(super) fn statuses(&self) -> Vec<(NodeId, Role, LogIndex, Term)> {
        lock(&self.nodes)
            .iter()
            .filter_map(|(&id, s)| s.raft.as_ref().map(|r| r.with_status(|st| (id, st.role, st.commit_index, st.term))))
            .collect()
    }

    pub(super) fn leader(&self) -> Option<NodeId> {
        self.statuses().into_iter().filter(|s| s.1 == Role::Leader).max_by_key(|s| s.3).map(|s| s.0)
    }

    pub(super) async fn start_node(self: &Arc<Self>, id: NodeId, bootstrap: Option<Vec<NodeId>>) -> Result<(), String> {
        let (store, applied, clock) = {
            let mut nodes = lock(&self.nodes);
            let slot = nodes.get_mut(&id).ok_or("unknown node")?;
            if slot.retired {
                return Err("the node was removed and retired".into());
            }
            lock(&slot.applied).clear();
            slot.applied_checked = 0;
            slot.log_checked = 0;
            slot.leader_checked = (0, 0);
            slot.store_faulted = false;
            (slot.store.clone(), slot.applied.clone(), slot.clock.clone())
        };
        let store = store.open()?;
        let mut config = self.opts.config.clone();
        config.rng_seed = Some(self.sim.random_u64());
        let rt = DriftRuntime::new(self.sim.runtime_in_group(id), clock);
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

    pub(super) fn crash(&self, id: NodeId) {
        let store = {
            let mut nodes = lock(&self.nodes);
            let Some(slot) = nodes.get_mut(&id) else { return };
            if slot.retired {
                return;
            }
            slot.raft = None;
            slot.store.clone()
        };
        self.net.unregister(id);
        self.sim.kill_group(id);
        self.sim.with_rng(|rng| store.crash(rng));
        self.log(format!("node {id} crashed"));
    }

    /// Shuts node `id` down for good (it was removed from the configuration): with a
    /// hand-over of leadership or, with `now`, abruptly.
    pub(super) async fn retire(&self, id: NodeId, now: bool) {
        let raft = {
            let mut nodes = lock(&self.nodes);
            let Some(slot) = nodes.get_mut(&id) else { return };
            slot.retired = true;
            slot.raft.take()
        };
        if let Some(raft) = raft {
            if now {
                raft.shutdown_now().await;
            } else {
                raft.shutdown().await;
            }
        }
        self.net.unregister(id);
        self.sim.kill_group(id);
        self.log(format!("node {id} retired (shut down{})", if now { " at once" } else { "" }));
    }

    /// Makes node `id`'s clock jump forward by `d`, and records it. Returns whether the
    /// node exists.
    pub(super) fn jump_clock(&self, id: NodeId, d: Duration) -> bool {
        let Some(clock) = lock(&self.nodes).get(&id).map(|s| s.clock.clone()) else { return false };
        let now = self.now();
        clock.jump(now, d);
        self.log(format!("clock of node {id} jumps {d:?} forward, to {:?}", clock.local(now)));
        true
    }

    /// The nodes with a store fault injected that stopped on a fatal error (a failed
    /// store) and were not restarted since, with the error. (A fatal stop of another node
    /// is left alone: the run then fails.)
    pub(super) fn fatally_stopped(&self) -> Vec<(NodeId, String)> {
        lock(&self.nodes)
            .iter()
            .filter(|(_, s)| !s.retired && s.store_faulted)
            .filter_map(|(&id, s)| {
                let error = s.raft.as_ref()?.with_status(|st| st.fatal_error.clone().filter(|_| st.stopped))?;
                Some((id, error))
            })
            .collect()
    }

    /// Ids of the nodes that may run (not retired).
    pub(super) fn live_ids(&self) -> Vec<NodeId> {
        lock(&self.nodes).iter().filter(|(_, s)| !s.retired).map(|(&id, _)| id).collect()
    }
}

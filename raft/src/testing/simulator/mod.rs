//! The deterministic cluster simulator.
//!
//! [`SimCluster`] runs N nodes of the real [`Raft`](crate::Raft) handle (core and driver) on the
//! [`Simulation`](super::sim_runtime::Simulation) runtime, with [`MemStore`]s whose writes take virtual time and can be
//! lost in a crash, and a [`MemNetwork`](super::mem_network::MemNetwork) with fault injection. Everything is driven by
//! one seed, so a seed replays a run exactly.
//!
//! [`run_seed`] is the randomized test: concurrent clients write to a KV state machine
//! through any node (followers forward to the leader) and read it either through the log
//! or with linearizable ReadIndex reads on any node, while a nemesis partitions, isolates, drops, duplicates, delays, crashes and restarts
//! (and, with [`SimOptions::spares`], changes the membership and transfers leadership);
//! after every simulation step the invariants of the design are checked, incrementally:
//! election safety, state machine safety, log matching of every committed prefix and
//! leader completeness (every 256 steps and at the end, also a pairwise comparison of
//! whole logs, uncommitted tails included); at the end the client history is checked for
//! linearizability and the healed cluster must make progress.
//!
//! With [`SimOptions::clock_drift`], every node reads time on a clock of its own that runs
//! fast or slow ([`DriftClock`](super::sim_runtime::DriftClock)); with
//! [`SimOptions::clock_jumps`], the nemesis also makes node clocks jump forward. Clocks
//! only steer liveness (election timeouts, heartbeats, the vote-ignoring lease,
//! check-quorum): reads are served by ReadIndex, never by a lease, so every invariant
//! above must hold whatever the clocks do.

mod checker;
#[cfg(test)]
mod clock_tests;
mod cluster;
mod membership;
mod nemesis;
mod workload;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::linearizability::{check_kv, CheckResult, KvInput, KvOutput, Operation};
use super::mem_network::FaultConfig;
use super::mem_store::MemStore;
use super::sim_store::SimStore;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::types::{LogIndex, NodeId, Term};

pub use cluster::SimCluster;
pub use workload::{AppliedLog, KvCommand, SimKv};

use nemesis::{nemesis_task, NemesisCounts};
use workload::{client_task, ClientCounts, GIVE_UP_AFTER};

/// Options of a simulated cluster and of a randomized run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Number of nodes bootstrapped as the first configuration (ids `1..=nodes`).
    pub nodes: u64,
    /// Number of spare nodes (ids after `nodes`) started on empty stores. With spares,
    /// the nemesis of [`run_seed`] also changes the membership and transfers leadership.
    pub spares: u64,
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
    /// Largest relative error of a node's clock rate: each node's clock runs at a rate
    /// drawn from `[1 - clock_drift, 1 + clock_drift]` times virtual time (per node, from
    /// the seed, independently of every other random choice), so `0.05` is ±5%. Zero,
    /// the default, gives every node the virtual clock itself and draws nothing.
    /// Clamped to `[0, 0.9]`.
    pub clock_drift: f64,
    /// Whether the nemesis of [`run_seed`] makes node clocks jump forward, by up to
    /// [`MAX_JUMP_TIMEOUTS`] maximum election timeouts (clocks are monotonic: they never
    /// jump back).
    pub clock_jumps: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 3,
            spares: 0,
            clients: 4,
            fault_time: Duration::from_secs(4),
            heal_time: Duration::from_secs(3),
            faults: true,
            max_write_delay: Duration::from_millis(2),
            config: Config::default(),
            verbose: false,
            clock_drift: 0.0,
            clock_jumps: false,
        }
    }
}

impl SimOptions {
    /// Options varied by `seed`: 3 or 5 nodes, pre-vote and check-quorum on or off,
    /// different message, window, memory-cache and forwarding limits, on a third of the
    /// seeds snapshots every 20 to 200 entries with small chunks, and on a third of the
    /// seeds (drawn independently) two spare nodes and membership changes.
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
        // On a third of the seeds, compact all the time: snapshots every few dozen
        // entries, small chunks, so installs (and crashes during them) are frequent.
        if rng.u8(..3) == 0 {
            o.config.snapshot_after_entries = rng.u64(20..200);
            o.config.snapshot_keep_entries = rng.u64(0..20);
            o.config.snapshot_chunk_size = rng.usize(16..512);
            o.config.snapshot_max_inflight_chunks = rng.usize(1..4);
        }
        // On a third of the seeds, two spare nodes that the nemesis adds as learners,
        // promotes, removes, and hands leadership to.
        if rng.u8(..3) == 0 {
            o.spares = 2;
        }
        o
    }

    /// These options with clocks that drift by up to `drift` (see
    /// [`clock_drift`](Self::clock_drift)) and jump forward.
    #[must_use]
    pub fn with_clock_faults(mut self, drift: f64) -> Self {
        self.clock_drift = drift;
        self.clock_jumps = true;
        self
    }

    /// The environment, besides `RAFT_SIM_SEED`, with which the sweep replays a seed with
    /// these options: empty for a seed's own options.
    pub fn replay_env(&self) -> String {
        let mut env = String::new();
        if self.clock_drift > 0.0 {
            env.push_str(&format!("RAFT_SIM_DRIFT={} ", self.clock_drift));
        }
        if self.clock_jumps {
            env.push_str("RAFT_SIM_JUMPS=1 ");
        }
        env
    }
}

/// A clock jump of the nemesis is drawn from zero to this many maximum election
/// timeouts.
pub const MAX_JUMP_TIMEOUTS: u32 = 3;

/// A violated invariant or a failed check, with the seed that replays it.
#[derive(Debug)]
pub struct SimFailure {
    /// The seed of the run.
    pub seed: u64,
    /// What went wrong.
    pub reason: String,
    /// The environment the replay needs besides the seed (see [`SimOptions::replay_env`]).
    pub replay_env: String,
    /// The last trace events before the failure.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.reason)?;
        writeln!(
            f,
            "replay with: {}RAFT_SIM_SEED={} cargo test -p raft --all-features --test it simulator_sweep -- --nocapture",
            self.replay_env, self.seed
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimReport {
    /// Client operations that completed with a known result.
    pub ops_ok: usize,
    /// Client operations whose outcome stayed unknown: every attempt within the client's
    /// patience timed out or met a stopped node.
    pub ops_unknown: usize,
    /// Client operations with an attempt whose outcome was unclear, retried under the same
    /// (client, seq).
    pub ops_retried: usize,
    /// Of the retried operations, those a later attempt answered.
    pub ops_resolved: usize,
    /// Of the unknown operations, those of clients that propose through
    /// [`crate::Raft::propose`] (which retries by itself, so the client does not).
    pub ops_node_unclear: usize,
    /// Highest commit index reached.
    pub commit_index: LogIndex,
    /// Highest term reached.
    pub max_term: Term,
    /// Simulation steps taken.
    pub steps: u64,
    /// Crashes injected.
    pub crashes: usize,
    /// Membership changes the nemesis saw completed (committed).
    pub membership_changes: usize,
    /// Leadership transfers the nemesis saw completed.
    pub transfers: usize,
    /// Clock jumps injected.
    pub clock_jumps: usize,
    /// The spread of the nodes' clock rates: the fastest's minus the slowest's (0.08 is
    /// 8% of virtual time); zero without drift.
    pub clock_spread: f64,
    /// Store faults the nemesis injected ([`SimStore::inject_fault`]).
    pub store_faults: usize,
    /// Nodes that stopped on a fatal error (fail-stop) and were restarted.
    pub fail_stops: usize,
}

/// What a sweep of many seeds did: see [`sweep`].
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Client operations with a known result, over every passing seed.
    pub ops_ok: usize,
    /// Client operations whose outcome stayed unknown, over every passing seed.
    pub ops_unknown: usize,
    /// Client operations retried after an unclear outcome, over every passing seed.
    pub ops_retried: usize,
    /// Of those, the ones a later attempt answered.
    pub ops_resolved: usize,
    /// Of the unknown ones, those proposed through [`crate::Raft::propose`].
    pub ops_node_unclear: usize,
    /// Crashes injected, over every passing seed.
    pub crashes: usize,
    /// Completed membership changes, over every passing seed.
    pub membership_changes: usize,
    /// Completed leadership transfers, over every passing seed.
    pub transfers: usize,
    /// Clock jumps injected, over every passing seed.
    pub clock_jumps: usize,
    /// The widest spread of clock rates in one passing seed.
    pub clock_spread: f64,
    /// Store faults injected, over every passing seed.
    pub store_faults: usize,
    /// Nodes that stopped on a fatal error and were restarted, over every passing seed.
    pub fail_stops: usize,
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
        let guard = SeedGuard(seed);
        let outcome = run(seed);
        std::mem::forget(guard);
        match outcome {
            Ok(r) => {
                report.ops_ok += r.ops_ok;
                report.ops_unknown += r.ops_unknown;
                report.ops_retried += r.ops_retried;
                report.ops_resolved += r.ops_resolved;
                report.ops_node_unclear += r.ops_node_unclear;
                report.crashes += r.crashes;
                report.membership_changes += r.membership_changes;
                report.transfers += r.transfers;
                report.clock_jumps += r.clock_jumps;
                report.clock_spread = report.clock_spread.max(r.clock_spread);
                report.store_faults += r.store_faults;
                report.fail_stops += r.fail_stops;
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

/// Starts the client tasks, each with its own random stream.
fn spawn_clients(
    cluster: &SimCluster,
    seed: u64,
    clients: usize,
    history: &History,
    stop: &Arc<AtomicBool>,
    counts: &Arc<ClientCounts>,
) {
    for c in 0..clients {
        let (state, history, stop) = (cluster.state.clone(), history.clone(), stop.clone());
        let first_op = (c as u64 + 1) << 40;
        let rng = fastrand::Rng::with_seed(seed ^ (0xc11e_0000 + c as u64));
        let task = client_task(state, c as u64, first_op, rng, history, stop, counts.clone());
        drop(cluster.state.sim.runtime().spawn(task));
    }
}

/// Checks the clients' history for linearizability within `budget` steps per key. A
/// check that cannot decide is a failure, never a pass: the history goes to a file named
/// for the seed that replays it, and the reason says where.
fn check_history(history: &[Operation<KvInput, KvOutput>], budget: u64, seed: u64) -> Result<(), String> {
    match check_kv(history, budget) {
        CheckResult::Linearizable => Ok(()),
        CheckResult::NotLinearizable { explanation } => {
            Err(format!("client history is not linearizable: {explanation}"))
        }
        CheckResult::Unknown => {
            let path = std::env::temp_dir().join(format!("raft-sim-history-seed-{seed}.txt"));
            let text: String = history.iter().map(|op| format!("{op:?}\n")).collect();
            let written = match std::fs::write(&path, text) {
                Ok(()) => format!("the history ({} operations) is in {}", history.len(), path.display()),
                Err(e) => format!("the history could not be written to {}: {e}", path.display()),
            };
            Err(format!(
                "the linearizability check ran out of its budget of {budget} steps without a verdict; {written}"
            ))
        }
    }
}

/// Prints the seed if the run panics (an invariant asserted inside the framework, say),
/// so that every failure names the seed that replays it.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("simulation seed {} panicked; replay with RAFT_SIM_SEED={}", self.0, self.0);
        }
    }
}

/// Steps the linearizability checker may take per key before it gives up; giving up is
/// a failure of the seed (the suite's histories need far fewer).
const CHECK_BUDGET: u64 = 2_000_000;

/// One client's view of an operation, for the history.
type History = Arc<Mutex<Vec<Operation<KvInput, KvOutput>>>>;

/// On healing: disarms the store faults not fired yet, and crashes the nodes that stopped
/// on a fatal error (fail-stop), to be restarted with the crashed ones; returns how many.
fn heal_stores(cluster: &SimCluster) -> usize {
    for slot in lock(&cluster.state.nodes).values() {
        slot.store.disarm_faults();
    }
    let stopped = cluster.state.fatally_stopped();
    for (id, error) in &stopped {
        cluster.log(format!("node {id} stopped on a fatal error ({error}); restarting it"));
        cluster.crash(*id);
    }
    stopped.len()
}

/// Like [`SimCluster::run_until`]; with `supervise` (store faults were injected), in
/// slices of 100 ms, restarting after each the nodes that stopped on a fatal error: a
/// store that failed before the heal stops its node at its next write, which may come
/// after it. Returns whether `pred` held and how many nodes were restarted.
fn run_until_supervised(
    cluster: &mut SimCluster,
    supervise: bool,
    limit: Duration,
    mut pred: impl FnMut(&SimCluster) -> bool,
) -> Result<(bool, usize), SimFailure> {
    if !supervise {
        return Ok((cluster.run_until(limit, pred)?, 0));
    }
    let end = cluster.now().add(limit);
    let mut restarted = 0;
    loop {
        let slice = end.saturating_since(cluster.now()).min(Duration::from_millis(100));
        if cluster.run_until(slice, &mut pred)? {
            return Ok((true, restarted));
        }
        for (id, error) in cluster.state.fatally_stopped() {
            cluster.log(format!("node {id} stopped on a fatal error ({error}); restarting it"));
            cluster.crash(id);
            cluster.restart(id)?;
            restarted += 1;
        }
        if cluster.now() >= end {
            return Ok((pred(cluster), restarted));
        }
    }
}

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
    let counts = Arc::new(NemesisCounts::default());
    let client_counts = Arc::new(ClientCounts::default());

    spawn_clients(&cluster, seed, clients, &history, &stop, &client_counts);
    if faults {
        let state = cluster.state.clone();
        let stop = stop.clone();
        let counts = counts.clone();
        let rng = fastrand::Rng::with_seed(seed ^ 0x6e65_6d65_7369);
        let fault_rng = fastrand::Rng::with_seed(seed ^ 0x7374_6f72_6566);
        drop(cluster.state.sim.runtime().spawn(nemesis_task(state, rng, fault_rng, stop, counts)));
    }

    cluster.run_for(fault_time)?;
    // Heal: no more faults, every node back up.
    stop.store(true, Ordering::SeqCst);
    cluster.network().set_faults(FaultConfig::none());
    cluster.network().heal();
    let healed_fail_stops = heal_stores(&cluster);
    cluster.log("healed all faults");
    // A membership operation under way finishes (it is bounded), so that the progress
    // below is made under the final configuration.
    if !cluster.run_until(Duration::from_secs(5), |_| !counts.busy.load(Ordering::SeqCst))? {
        return Err(cluster.fail("the last membership operation did not finish".into()));
    }
    for id in cluster.ids() {
        if cluster.node(id).is_none() && !cluster.is_retired(id) {
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
    // Every member of the leader's configuration (nodes removed, and spares never added,
    // stay behind).
    let supervise = counts.store_faults.load(Ordering::SeqCst) > 0;
    let (caught_up, late_fail_stops) = run_until_supervised(&mut cluster, supervise, heal_time, |c| {
        let Some(members) = c.leader().and_then(|l| c.node(l)).map(|r| r.with_status(|s| s.membership.all_nodes()))
        else {
            return false;
        };
        let values = c.values("final");
        c.state.statuses().iter().filter(|s| members.contains(&s.0)).all(|s| s.2 >= target)
            && members.iter().all(|id| values.get(id).is_some_and(|v| v.is_some()))
    })?;
    if !caught_up {
        return Err(cluster.fail(format!("no progress: not every node applied index {target} after healing")));
    }
    // Let clients finish their last operations: a client tries one for at most
    // `GIVE_UP_AFTER`, and one still trying when the history is taken could have taken
    // effect without being in it.
    cluster.run_for(GIVE_UP_AFTER + Duration::from_millis(500))?;
    cluster.check_all()?;

    let history = std::mem::take(&mut *lock(&history));
    let ops_ok = history.iter().filter(|o| o.ret.is_some()).count();
    let ops_unknown = history.len() - ops_ok;
    check_history(&history, CHECK_BUDGET, cluster.checker.seed).map_err(|reason| cluster.fail(reason))?;
    let report = SimReport {
        ops_ok,
        ops_unknown,
        ops_retried: client_counts.retried.load(Ordering::SeqCst),
        ops_resolved: client_counts.resolved.load(Ordering::SeqCst),
        ops_node_unclear: client_counts.node_unclear.load(Ordering::SeqCst),
        commit_index: cluster.max_commit(),
        max_term: cluster.checker.leaders.keys().next_back().copied().unwrap_or(0),
        steps: cluster.checker.steps,
        crashes: counts.crashes.load(Ordering::SeqCst),
        membership_changes: counts.changes.load(Ordering::SeqCst),
        transfers: counts.transfers.load(Ordering::SeqCst),
        clock_jumps: counts.clock_jumps.load(Ordering::SeqCst),
        clock_spread: cluster.clock_spread(),
        store_faults: counts.store_faults.load(Ordering::SeqCst),
        fail_stops: counts.fail_stops.load(Ordering::SeqCst) + healed_fail_stops + late_fail_stops,
    };
    cluster.shutdown()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::check_history;
    use crate::testing::linearizability::tests::random_history;

    #[test]
    fn a_check_that_runs_out_of_budget_fails_the_seed_and_keeps_the_history() {
        let history = random_history(7, 5, 50, &["k"]);
        assert_eq!(check_history(&history, 2_000_000, 424_242), Ok(()));
        let reason = check_history(&history, 10, 424_242).unwrap_err();
        assert!(reason.contains("ran out of its budget of 10 steps"), "{reason}");
        let path = std::env::temp_dir().join("raft-sim-history-seed-424242.txt");
        assert!(reason.contains(&path.display().to_string()), "{reason}");
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept.lines().count(), history.len());
        let _ = std::fs::remove_file(path);
    }
}

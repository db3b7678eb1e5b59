//! The nemesis: a task that partitions, isolates, blocks, drops, duplicates, delays,
//! crashes and restarts nodes at random until the run heals, and with spare nodes also
//! changes the membership and transfers leadership (see [`super::membership`]), and with
//! [`SimOptions::clock_jumps`](super::SimOptions::clock_jumps) makes node clocks jump
//! forward.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cluster::ClusterState;
use super::membership;
use super::MAX_JUMP_TIMEOUTS;
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::testing::mem_network::FaultConfig;
use crate::testing::sim_store::SimStore;
use crate::types::{Instant, NodeId};

/// What the nemesis did, for the report.
#[derive(Default)]
pub(super) struct NemesisCounts {
    pub(super) crashes: AtomicUsize,
    /// Membership changes seen committed.
    pub(super) changes: AtomicUsize,
    /// Leadership transfers seen completed.
    pub(super) transfers: AtomicUsize,
    /// Clock jumps injected.
    pub(super) clock_jumps: AtomicUsize,
    /// Whether a membership change or transfer is under way (one at a time).
    pub(super) busy: AtomicBool,
    /// Store faults injected ([`SimStore::inject_fault`]).
    pub(super) store_faults: AtomicUsize,
    /// Nodes that stopped on a fatal error and were restarted.
    pub(super) fail_stops: AtomicUsize,
}

/// `fault_rng` draws the store faults and the restarts of nodes that stopped on one, apart
/// from `rng`, so that stores without faults of their own see the same runs as before.
pub(super) async fn nemesis_task(
    state: Arc<ClusterState>,
    mut rng: fastrand::Rng,
    mut fault_rng: fastrand::Rng,
    stop: Arc<AtomicBool>,
    counts: Arc<NemesisCounts>,
) {
    let rt = state.sim.runtime();
    let mut down: Vec<(NodeId, Instant)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        rt.sleep_until(rt.now().add(Duration::from_millis(rng.u64(100..600)))).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        restart_due(&state, &mut down, rt.now()).await;
        restart_fail_stopped(&state, &mut down, &mut fault_rng, &counts);
        if state.opts.spares > 0 && rng.bool() {
            membership::step(&state, &mut rng, &counts);
        }
        let ids = state.live_ids();
        let n = ids.len();
        match rng.u8(..10) {
            // After removals, too few nodes may be left to split.
            0 if n >= 2 => {
                let mut ids = ids.clone();
                rng.shuffle(&mut ids);
                let k = rng.usize(1..=n / 2);
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
                let a = ids[rng.usize(..n)];
                let b = ids[rng.usize(..n)];
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
                let id = ids[rng.usize(..n)];
                if down.iter().all(|d| d.0 != id) {
                    state.crash(id);
                    counts.crashes.fetch_add(1, Ordering::SeqCst);
                    down.push((id, rt.now().add(Duration::from_millis(rng.u64(50..1000)))));
                }
            }
            _ => {
                state.net.heal();
                state.net.set_faults(FaultConfig::none());
                state.log("nemesis: heal".into());
            }
        }
        // Drawn only with jumps on, so that runs without them replay as before.
        if state.opts.clock_jumps && n > 0 && rng.u8(..4) == 0 {
            let id = ids[rng.usize(..n)];
            jump_clock(&state, &mut rng, id, &counts);
        }
        if fault_rng.u8(..4) == 0 && !stop.load(Ordering::SeqCst) {
            inject_store_fault(&state, &mut fault_rng, &counts);
        }
    }
}

/// Restarts the nodes in `down` whose downtime is over at `now`.
async fn restart_due(state: &Arc<ClusterState>, down: &mut Vec<(NodeId, Instant)>, now: Instant) {
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
}

/// Makes node `id`'s clock jump forward by up to [`MAX_JUMP_TIMEOUTS`] maximum election
/// timeouts: its timers set before the jump fire early.
fn jump_clock(state: &ClusterState, rng: &mut fastrand::Rng, id: NodeId, counts: &NemesisCounts) {
    let max = state.opts.config.election_timeout_max.saturating_mul(MAX_JUMP_TIMEOUTS);
    let d = Duration::from_nanos(rng.u64(1..=u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1)));
    if state.jump_clock(id, d) {
        counts.clock_jumps.fetch_add(1, Ordering::SeqCst);
    }
}

/// Crashes the nodes with a store fault injected that stopped on a fatal error (their
/// store failed: fail-stop) and adds them to `down`, to be restarted like crashed ones,
/// as a supervisor would restart the process.
fn restart_fail_stopped(
    state: &ClusterState,
    down: &mut Vec<(NodeId, Instant)>,
    rng: &mut fastrand::Rng,
    counts: &NemesisCounts,
) {
    for (id, error) in state.fatally_stopped() {
        if down.iter().all(|d| d.0 != id) {
            state.log(format!("nemesis: node {id} stopped on a fatal error ({error}); restarting it"));
            state.crash(id);
            counts.fail_stops.fetch_add(1, Ordering::SeqCst);
            down.push((id, state.now().add(Duration::from_millis(rng.u64(50..500)))));
        }
    }
}

/// Arms a fault of its store's own kind on a random running node, if its store has any.
fn inject_store_fault(state: &ClusterState, rng: &mut fastrand::Rng, counts: &NemesisCounts) {
    let running: Vec<(NodeId, Arc<dyn SimStore>)> = lock(&state.nodes)
        .iter()
        .filter(|(_, s)| s.raft.is_some() && !s.retired)
        .map(|(&id, s)| (id, s.store.clone()))
        .collect();
    if running.is_empty() {
        return;
    }
    let (id, store) = &running[rng.usize(..running.len())];
    if let Some(what) = store.inject_fault(rng) {
        counts.store_faults.fetch_add(1, Ordering::SeqCst);
        if let Some(slot) = lock(&state.nodes).get_mut(id) {
            slot.store_faulted = true;
        }
        state.log(format!("nemesis: store fault on node {id}: {what}"));
    }
}

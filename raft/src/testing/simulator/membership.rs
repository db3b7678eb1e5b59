//! The membership nemesis: on seeds with spare nodes, it asks whichever node leads to
//! add a learner, promote one (a single-server change), remove a voter or a learner,
//! change several voters at once (through the joint configuration) or hand leadership to
//! another voter, one operation at a time and with a bounded timeout. Refusals
//! (not the leader, a change or transfer in progress, a learner not caught up, a
//! timeout) are normal outcomes. A node seen removed is usually shut down for good
//! (retired: never restarted nor added again); sometimes it is left running, removed,
//! and may be added back later with its log.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{self, BoxFuture, Either};

use super::cluster::ClusterState;
use super::nemesis::NemesisCounts;
use crate::error::ChangeError;
use crate::membership::{Membership, NodeInfo};
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::types::NodeId;
use crate::Raft;

use super::workload::SimKv;

/// The timeout given to the handle's calls.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long the nemesis waits on a call at most (the node may crash under it).
const GIVE_UP: Duration = Duration::from_millis(1500);

/// One operation on the membership or the leadership.
#[derive(Clone, Debug)]
enum Op {
    AddLearner(NodeId),
    Promote(NodeId),
    Remove(NodeId),
    SetVoters(BTreeSet<NodeId>),
    Transfer(NodeId),
}

/// What to do with a node once it is seen removed.
#[derive(Clone, Copy, Debug)]
enum Removed {
    KeepRunning,
    Shutdown,
    ShutdownNow,
}

/// Starts one membership operation on the current leader, unless one is under way.
pub(super) fn step(state: &Arc<ClusterState>, rng: &mut fastrand::Rng, counts: &Arc<NemesisCounts>) {
    if counts.busy.load(Ordering::SeqCst) {
        return;
    }
    let Some(leader) = state.leader() else { return };
    let Some(raft) = lock(&state.nodes).get(&leader).and_then(|s| s.raft.clone()) else { return };
    let m = raft.with_status(|s| s.membership.clone());
    let Some(op) = pick(state, rng, leader, &m) else { return };
    let removed = match rng.u8(..4) {
        0 => Removed::KeepRunning,
        1 => Removed::ShutdownNow,
        _ => Removed::Shutdown,
    };
    counts.busy.store(true, Ordering::SeqCst);
    let task = run(state.clone(), raft, op, removed, counts.clone());
    drop(state.sim.runtime().spawn(task));
}

fn choose(rng: &mut fastrand::Rng, ids: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
    let ids: Vec<NodeId> = ids.into_iter().collect();
    (!ids.is_empty()).then(|| ids[rng.usize(..ids.len())])
}

/// Picks an operation that makes sense in configuration `m` of `leader` (the core still
/// refuses it if a change is in progress). Every voter named is a node that may run, so
/// a majority of every configuration can always come back up.
fn pick(state: &ClusterState, rng: &mut fastrand::Rng, leader: NodeId, m: &Membership) -> Option<Op> {
    match rng.u8(..6) {
        0 | 1 => choose(rng, state.live_ids().into_iter().filter(|&id| !m.contains(id))).map(Op::AddLearner),
        2 => choose(rng, m.learners.iter().copied()).map(Op::Promote),
        3 => {
            let id = choose(rng, m.all_nodes())?;
            // The last voter stays.
            (m.voters.iter().any(|&v| v != id)).then_some(Op::Remove(id))
        }
        4 => {
            let mut voters: BTreeSet<NodeId> = m.all_nodes().into_iter().filter(|_| rng.bool()).collect();
            if voters.is_empty() {
                voters.extend(choose(rng, m.all_nodes()));
            }
            Some(Op::SetVoters(voters))
        }
        _ => choose(rng, m.voters.iter().copied().filter(|&v| v != leader)).map(Op::Transfer),
    }
}

fn info(id: NodeId) -> NodeInfo {
    NodeInfo::new(format!("sim-node-{id}"))
}

/// The call `op` makes on the leader's handle.
fn call(raft: &Raft<SimKv>, op: &Op) -> BoxFuture<'static, Result<(), ChangeError>> {
    let raft = raft.clone();
    match op.clone() {
        Op::AddLearner(id) => Box::pin(async move { raft.add_learner(id, info(id), CALL_TIMEOUT).await.map(drop) }),
        Op::Promote(id) => Box::pin(async move {
            let mut voters = raft.with_status(|s| s.membership.voters.clone());
            voters.insert(id);
            raft.change_voters(voters, CALL_TIMEOUT).await.map(drop)
        }),
        Op::Remove(id) => Box::pin(async move { raft.remove_node(id, CALL_TIMEOUT).await.map(drop) }),
        Op::SetVoters(voters) => Box::pin(async move { raft.change_voters(voters, CALL_TIMEOUT).await.map(drop) }),
        Op::Transfer(to) => Box::pin(async move { raft.transfer_leadership(to, CALL_TIMEOUT).await }),
    }
}

async fn run(state: Arc<ClusterState>, raft: Raft<SimKv>, op: Op, removed: Removed, counts: Arc<NemesisCounts>) {
    let rt = state.sim.runtime();
    let leader = raft.id();
    state.log(format!("nemesis: {op:?} on leader {leader}"));
    let before = raft.with_status(|s| s.membership.all_nodes());
    let give_up = rt.sleep_until(rt.now().add(GIVE_UP));
    let outcome = match future::select(call(&raft, &op), Box::pin(give_up)).await {
        Either::Left((r, _)) => r,
        Either::Right(_) => Err(ChangeError::Timeout),
    };
    match outcome {
        Ok(()) => {
            let (after, committed) = raft.with_status(|s| (s.membership.clone(), s.commit_index >= s.config_index));
            state.log(format!("nemesis: {op:?} on leader {leader} done: {after:?}"));
            if let Op::Transfer(_) = op {
                counts.transfers.fetch_add(1, Ordering::SeqCst);
            } else {
                counts.changes.fetch_add(1, Ordering::SeqCst);
                // Only a removal known committed is final.
                let removed_ids = before.into_iter().filter(|&id| committed && !after.contains(id));
                for id in removed_ids.collect::<Vec<_>>() {
                    retire(&state, id, removed).await;
                }
            }
        }
        Err(e) => state.log(format!("nemesis: {op:?} on leader {leader} did not complete: {e}")),
    }
    counts.busy.store(false, Ordering::SeqCst);
}

async fn retire(state: &ClusterState, id: NodeId, removed: Removed) {
    let now = match removed {
        Removed::KeepRunning => {
            state.log(format!("nemesis: node {id} was removed; it keeps running"));
            return;
        }
        Removed::Shutdown => false,
        Removed::ShutdownNow => true,
    };
    let rt = state.sim.runtime();
    let give_up = rt.sleep_until(rt.now().add(Duration::from_secs(2)));
    if let Either::Right(_) = future::select(Box::pin(state.retire(id, now)), Box::pin(give_up)).await {
        state.log(format!("nemesis: shutting down removed node {id} did not finish"));
    }
}

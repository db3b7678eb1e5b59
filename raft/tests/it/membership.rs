//! Membership changes and leadership transfer through the `Raft` handle, on every
//! runtime: a new node joins as a learner, catches up and becomes a voter; leadership
//! moves to it on request; the old leader is removed; several voters change at once
//! through the joint configuration; a leader that shuts down hands over first.
#![cfg(feature = "testing")]

use std::time::Duration;

use raft::testing::helpers::{start_counter_node as start, wait_for, wait_for_leader, Counter};
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{ChangeError, ConfigError, NodeInfo, Raft, Role, Runtime};

const T: Duration = Duration::from_secs(10);

fn info(id: u64) -> NodeInfo {
    NodeInfo::new(format!("node-{id}:7000")).with("http", format!("node-{id}:8000"))
}

/// Starts node `id` with an empty store: it waits to be added.
async fn start_empty<R: Runtime>(rt: &R, net: &MemNetwork<R>, id: u64) -> Raft<Counter> {
    start(rt, net, id, MemStore::new(), false).await
}

async fn a_cluster_grows_moves_its_leader_and_shrinks<R: Runtime>(rt: R) {
    let net = MemNetwork::new(rt.clone(), 5);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&rt, &net, id, MemStore::new(), true).await);
    }
    let l = wait_for_leader(&nodes).await;
    for _ in 0..20 {
        l.propose(1).await.expect("write");
    }

    // A new machine joins as a learner and catches up.
    let four = start_empty(&rt, &net, 4).await;
    let follower = nodes.iter().find(|n| n.id() != l.id()).expect("a follower");
    assert!(matches!(follower.add_learner(4, info(4), T).await, Err(ChangeError::Config(ConfigError::NotLeader(_)))));
    l.add_learner(4, info(4), T).await.expect("learner added");
    let commit = l.status().commit_index;
    four.wait_applied(commit, T).await.expect("the learner catches up");
    assert_eq!(four.read_local_stale(|c| c.0), 20);
    let s = four.status();
    assert!(!s.is_voter && s.membership.learners.contains(&4));
    assert_eq!(s.membership.nodes.get(&4), Some(&info(4)), "the learner knows its address from the log");

    // It becomes a voter (a single-server change), then takes the lead on request.
    let voters: Vec<u64> = vec![1, 2, 3, 4];
    l.change_voters(voters.clone(), T).await.expect("promoted");
    // The change commits on three of the four voters: node 4 may hear of it a little later.
    wait_for(&rt, "node 4 to know it is a voter", || four.status().is_voter).await;
    let term = l.status().term;
    l.transfer_leadership(4, T).await.expect("leadership moves to node 4");
    let s = four.wait_role(Role::Leader, T).await.expect("node 4 leads");
    assert_eq!(s.term, term + 1, "one election, started by the transfer");

    // The old leader is removed, asked the moment node 4 leads: the call waits out the
    // new leader's first commit rather than refusing. (The removed node need not hear of
    // it: the change commits on the others' votes, and the leader stops replicating to it
    // once it is out of every configuration in effect.)
    four.remove_node(l.id(), T).await.expect("removed");
    assert!(!four.status().membership.contains(l.id()));
    assert_eq!(four.propose(1).await, Ok(21), "the new leader takes writes without it");

    // Several voters at once: the joint configuration, then the final one.
    let remaining: Vec<Raft<Counter>> = nodes.iter().filter(|n| n.id() != l.id()).cloned().collect();
    let keep = remaining[0].id();
    four.change_voters([4, keep], T).await.expect("joint change completes");
    let s = four.status();
    assert!(!s.membership.is_joint() && s.membership.voters == [4, keep].into());
    assert_eq!(four.metrics().counters.membership_changes, 2, "the removal and the joint change");
    assert_eq!(four.propose(1).await, Ok(22), "the two-voter cluster commits");

    // A leader that shuts down hands over: the other voter leads in the next term.
    let term = four.status().term;
    four.shutdown().await;
    let s = remaining[0].wait_role(Role::Leader, T).await.expect("the last voter leads");
    assert_eq!(s.term, term + 1);
    for n in nodes.iter().chain([&four]) {
        n.shutdown_now().await;
    }
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_moves_its_leader_and_shrinks_on_tokio() {
    a_cluster_grows_moves_its_leader_and_shrinks(raft::runtime::TokioRuntime::new()).await;
}

#[cfg(feature = "smol")]
#[test]
fn a_cluster_grows_moves_its_leader_and_shrinks_on_smol() {
    smol::block_on(a_cluster_grows_moves_its_leader_and_shrinks(raft::runtime::SmolRuntime::new()));
}

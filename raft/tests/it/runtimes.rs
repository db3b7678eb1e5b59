//! The same three-node integration tests on every runtime: tokio and smol. Real `Raft`
//! nodes with the in-memory store and network, on wall-clock time.
#![cfg(feature = "testing")]

use raft::testing::helpers::{start_counter_node as start, wait_for, wait_for_leader, Counter, WAIT_TIMEOUT};
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{Raft, Role, Runtime};

type Cluster<R> = (MemNetwork<R>, Vec<MemStore>, Vec<Option<Raft<Counter>>>, Raft<Counter>);

/// Bootstraps nodes 1..=3 and waits for a leader.
async fn start_cluster<R: Runtime>(rt: &R, seed: u64) -> Cluster<R> {
    let net = MemNetwork::new(rt.clone(), seed);
    let stores: Vec<MemStore> = (0..3).map(|_| MemStore::new()).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(start(rt, &net, id, stores[id as usize - 1].clone(), true).await));
    }
    let l = wait_for_leader(nodes.iter().flatten()).await;
    (net, stores, nodes, l)
}

/// Elects a leader, commits on every node, survives the loss and return of the leader,
/// and shuts down cleanly.
async fn three_node_cluster<R: Runtime>(rt: R) {
    let (net, stores, mut nodes, l) = start_cluster(&rt, 7).await;
    for i in 1..=50 {
        assert_eq!(l.propose(1).await, Ok(i));
    }
    // A follower forwards proposals to the leader and answers once it applied them.
    let follower = nodes.iter().flatten().find(|n| n.id() != l.id()).unwrap().clone();
    assert_eq!(follower.propose(0).await, Ok(50));
    // Linearizable reads on the follower and the leader see every acknowledged write.
    assert_eq!(follower.read(|c| c.0).await, Ok(50));
    assert_eq!(l.propose(0).await, Ok(50));
    assert_eq!(l.read(|c| c.0).await, Ok(50));
    wait_for(&rt, "every node to apply 50 commands", || {
        nodes.iter().flatten().all(|n| n.read_local_stale(|c| c.0) == 50)
    })
    .await;

    // The leader goes away; the others elect a new one and keep committing.
    let old = l.id();
    net.unregister(old);
    l.shutdown().await;
    nodes[old as usize - 1] = None;
    let l2 = wait_for_leader(nodes.iter().flatten()).await;
    assert_ne!(l2.id(), old, "the old leader is stopped");
    for _ in 0..10 {
        l2.propose(2).await.expect("new leader commits");
    }
    // The old node restarts from its store and catches up.
    nodes[old as usize - 1] = Some(start(&rt, &net, old, stores[old as usize - 1].clone(), false).await);
    wait_for(&rt, "the restarted node to catch up", || {
        nodes[old as usize - 1].as_ref().unwrap().read_local_stale(|c| c.0) == 70
    })
    .await;
    let restarted = nodes[old as usize - 1].as_ref().unwrap().status();
    assert_eq!(restarted.role, Role::Follower);
    assert_eq!(restarted.leader, Some(l2.id()));

    for n in nodes.iter().flatten() {
        n.shutdown().await;
        assert!(n.status().stopped);
        assert_eq!(n.propose(1).await, Err(raft::ClientError::ShuttingDown));
    }
}

/// Proposals and reads a follower sent to a leader that then died are answered through
/// the new leader as soon as the follower knows it, not at the request timeout (5 s by
/// default): the write with its real result (it is proposed again under the same session
/// sequence number, so it is applied once even if the dead leader had appended it), the
/// read by asking the new leader.
async fn requests_to_a_dead_leader_are_answered_through_the_new_leader<R: Runtime>(rt: R) {
    let (net, _stores, nodes, l) = start_cluster(&rt, 11).await;
    assert_eq!(l.propose(1).await, Ok(1));
    let follower = nodes.iter().flatten().find(|n| n.id() != l.id()).unwrap().clone();
    wait_for(&rt, "the follower to apply", || follower.read_local_stale(|c| c.0) == 1).await;
    // The leader vanishes: messages to it are dropped from now on.
    net.unregister(l.id());
    l.shutdown_now().await;
    assert_eq!(follower.status().leader, Some(l.id()), "the follower has not noticed yet");
    let (write, read) = futures::join!(follower.propose(5), follower.read(|c| c.0));
    assert_eq!(write, Ok(6), "the forwarded write is answered through the new leader");
    assert!(read == Ok(1) || read == Ok(6), "the read is served through the new leader: {read:?}");
    assert!(follower.status().leader.is_some_and(|id| id != l.id()));
    assert_eq!(follower.read(|c| c.0).await, Ok(6), "applied once");
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

/// A store that fails a write stops the node (fail-stop) with a clear error, and the
/// others carry on.
async fn failed_store_write_stops_only_that_node<R: Runtime>(rt: R) {
    let (_net, stores, nodes, l) = start_cluster(&rt, 9).await;
    let victim = nodes.iter().flatten().find(|n| n.id() != l.id()).unwrap().clone();
    stores[victim.id() as usize - 1].fail_next_write();
    for _ in 0..5 {
        l.propose(1).await.expect("the healthy majority commits");
    }
    victim
        .wait_for("the failed node to stop", WAIT_TIMEOUT, |s| s.stopped)
        .await
        .unwrap_or_else(|e| panic!("node {}: {e}", victim.id()));
    let err = victim.status().fatal_error.expect("a fatal error is reported");
    assert!(err.contains("log store write failed"), "{err}");
    assert!(matches!(victim.propose(1).await, Err(raft::ClientError::Fatal(_))));
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

#[cfg(feature = "tokio")]
mod on_tokio {
    use raft::runtime::TokioRuntime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_node_cluster_on_tokio() {
        super::three_node_cluster(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_to_a_dead_leader_are_answered_through_the_new_leader_on_tokio() {
        super::requests_to_a_dead_leader_are_answered_through_the_new_leader(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_store_write_stops_only_that_node_on_tokio() {
        super::failed_store_write_stops_only_that_node(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_waits_end_on_the_condition_a_timeout_or_a_stop_on_tokio() {
        super::status_waits_end_on_the_condition_a_timeout_or_a_stop(TokioRuntime::new()).await;
    }
}

#[cfg(feature = "smol")]
mod on_smol {
    use raft::runtime::SmolRuntime;

    #[test]
    fn three_node_cluster_on_smol() {
        smol::block_on(super::three_node_cluster(SmolRuntime::new()));
    }

    #[test]
    fn requests_to_a_dead_leader_are_answered_through_the_new_leader_on_smol() {
        smol::block_on(super::requests_to_a_dead_leader_are_answered_through_the_new_leader(SmolRuntime::new()));
    }

    #[test]
    fn failed_store_write_stops_only_that_node_on_smol() {
        smol::block_on(super::failed_store_write_stops_only_that_node(SmolRuntime::new()));
    }

    #[test]
    fn status_waits_end_on_the_condition_a_timeout_or_a_stop_on_smol() {
        smol::block_on(super::status_waits_end_on_the_condition_a_timeout_or_a_stop(SmolRuntime::new()));
    }
}

/// Applying runs off the protocol loop (tokio only: it needs worker threads to spare).
#[cfg(feature = "tokio")]
mod slow_apply {
    use std::sync::Arc;
    use std::time::Duration;

    use raft::runtime::TokioRuntime;
    use raft::testing::helpers::wait_for_leader;
    use raft::testing::mem_network::MemNetwork;
    use raft::testing::mem_store::MemStore;
    use raft::{Config, LogIndex, Raft, Runtime, StateMachine};

    /// A state machine that blocks in `apply` when told to.
    struct Slow {
        value: u64,
        block: Option<Duration>,
    }

    impl StateMachine for Slow {
        type Command = u64;
        type Response = u64;
        fn apply(&mut self, _index: LogIndex, delta: u64) -> u64 {
            if delta == 0 {
                if let Some(d) = self.block {
                    std::thread::sleep(d);
                }
            }
            self.value += delta;
            self.value
        }
        type Snapshot = u64;
        fn snapshot(&self) -> u64 {
            self.value
        }
        fn write_snapshot(value: u64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            out.write_all(&value.to_le_bytes())
        }
        fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), String> {
            let mut bytes = [0; 8];
            input.read_exact(&mut bytes).map_err(|e| e.to_string())?;
            self.value = u64::from_le_bytes(bytes);
            Ok(())
        }
    }

    /// Applying runs off the protocol loop: while every state machine is stuck for longer
    /// than an election timeout, the leader keeps its followers (no new election) and keeps
    /// committing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn slow_state_machine_does_not_delay_heartbeats_or_commits() {
        let rt = TokioRuntime::new();
        let net = MemNetwork::new(rt.clone(), 11);
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            // Generous timeouts so a busy test machine does not cause elections by itself;
            // the state machine blocks for more than twice the longest election timeout.
            let cfg = Config {
                election_timeout_min: Duration::from_millis(500),
                election_timeout_max: Duration::from_millis(1000),
                heartbeat_interval: Duration::from_millis(50),
                ..Config::default()
            };
            let sm = Slow { value: 0, block: Some(Duration::from_millis(2500)) };
            let raft = Raft::bootstrap(id, [1, 2, 3], cfg, rt.clone(), MemStore::new(), net.endpoint(id), sm)
                .await
                .expect("node starts");
            let r2 = raft.clone();
            net.register(id, Arc::new(move |m| r2.receive(m)));
            nodes.push(Some(raft));
        }
        let l = wait_for_leader(nodes.iter().flatten()).await;
        let term = l.status().term;
        // The blocking command, then more commands while the leader's apply task is stuck.
        let l2 = l.clone();
        let stuck = tokio::spawn(async move { l2.propose(0).await });
        rt.sleep(Duration::from_millis(50)).await;
        let before = l.status().commit_index;
        let mut later = Vec::new();
        for _ in 0..5 {
            let l = l.clone();
            later.push(tokio::spawn(async move { l.propose(1).await }));
        }
        rt.sleep(Duration::from_millis(2000)).await;
        let s = l.status();
        assert!(s.commit_index >= before + 5, "commits continue while applying is stuck: {s:?}");
        for n in nodes.iter().flatten() {
            let st = n.status();
            assert_eq!(st.term, term, "no election on node {} while the leader applies slowly", n.id());
            assert_eq!(st.leader, Some(l.id()));
        }
        assert!(s.applied_index < s.commit_index, "the stuck state machine lags the commit index: {s:?}");
        stuck.await.expect("task").expect("blocking command applies");
        for t in later {
            t.await.expect("task").expect("later commands apply");
        }
        for n in nodes.iter().flatten() {
            n.shutdown().await;
        }
    }
}

/// `Raft::watch` streams status changes, and the wait helpers end on the condition, on
/// a timeout (with the last status) or when the node stops.
async fn status_waits_end_on_the_condition_a_timeout_or_a_stop<R: Runtime>(rt: R) {
    use std::time::Duration;

    use futures::StreamExt;

    let (_net, _stores, nodes, l) = start_cluster(&rt, 13).await;
    let follower = nodes.iter().flatten().find(|n| n.id() != l.id()).unwrap().clone();
    assert_eq!(follower.wait_leader(Duration::from_secs(5)).await, Ok(l.id()));
    let leader_status = l.wait_role(Role::Leader, Duration::from_secs(5)).await.expect("the leader leads");
    assert_eq!(leader_status.leader, Some(l.id()));

    // A watch sees the commit index move past a write.
    let mut updates = follower.watch();
    let first = updates.next().await.expect("the current status comes first");
    l.propose(5).await.expect("a write");
    let target = first.commit_index + 1;
    loop {
        let s = updates.next().await.expect("the node runs");
        if s.commit_index >= target {
            break;
        }
    }
    let applied = follower.wait_applied(target, Duration::from_secs(5)).await.expect("the follower applies");
    assert!(applied.applied_index >= target);

    // A condition that never holds times out with the last status.
    match follower.wait_for("term 1000", Duration::from_millis(50), |s| s.term >= 1000).await {
        Err(raft::WaitError::Timeout { what, last }) => {
            assert_eq!(what, "term 1000");
            assert_eq!(last.id, follower.id());
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    // A stop ends both a pending wait and the stream.
    let waiting = {
        let follower = follower.clone();
        async move { follower.wait_for("term 1000", Duration::from_secs(30), |s| s.term >= 1000).await }
    };
    let stopping = async {
        follower.shutdown().await;
    };
    let (result, ()) = futures::join!(waiting, stopping);
    assert!(matches!(result, Err(raft::WaitError::Stopped { .. })), "{result:?}");
    let rest: Vec<_> = updates.collect().await;
    assert!(rest.last().is_some_and(|s| s.stopped), "the stream ends with the stopped status");
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

//! A node's timers keep firing while its protocol loop is busy, on every runtime.
//!
//! The timer task ticks once per deadline; the protocol loop reads the clock once per
//! batch of events. A tick that arrives in the middle of a batch is stepped at the time
//! it fired (`driver/timer.rs`), so the core sees its deadline passed and arms the next
//! one. Were it stepped at the batch's earlier time, the core would move no timer, arm
//! no new deadline, and the timer task would wait for one forever: a leader would never
//! send another heartbeat, a follower never campaign. Long batches under load make the
//! window wide, so a few seconds of many concurrent writers open it many times.
#![cfg(feature = "testing")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft::testing::helpers::{start_counter_node as start, wait_for_leader};
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{NodeId, Raft, Runtime};

/// Concurrent writers keeping every protocol loop busy.
const WRITERS: usize = 64;
/// How long they write.
const LOAD: Duration = Duration::from_secs(3);
/// The quiet time after the load in which heartbeats must go on: 40 heartbeat
/// intervals (50 ms each by default), of which a few answered suffice (a stopped timer
/// answers none; a loaded machine may delay some).
const QUIET: Duration = Duration::from_secs(2);

/// Heartbeat round trips the leader has timed, per peer.
fn heartbeats_answered(leader: &Raft<raft::testing::helpers::Counter>) -> BTreeMap<NodeId, u64> {
    leader.metrics().latencies.peer_rtt.iter().map(|(&p, h)| (p, h.count())).collect()
}

async fn timers_keep_firing_through_a_busy_protocol_loop<R: Runtime>(rt: R) {
    let net = MemNetwork::new(rt.clone(), 33);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&rt, &net, id, MemStore::new(), true).await);
    }
    let leader = wait_for_leader(&nodes).await;
    let term = leader.status().term;

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let node = nodes[w % nodes.len()].clone();
            let stop = stop.clone();
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // Refusals (e.g. overload) are fine: the point is a busy loop.
                    let _ = node.propose(1).await;
                }
            })
        })
        .collect();
    rt.sleep(LOAD).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await;
    }
    assert_eq!(leader.status().term, term, "the leader kept its term through the load");

    // With nothing to replicate, only the heartbeat timer makes the leader speak.
    let before = heartbeats_answered(&leader);
    rt.sleep(QUIET).await;
    let after = heartbeats_answered(&leader);
    for n in nodes.iter().filter(|n| n.id() != leader.id()) {
        let (b, a) = (before.get(&n.id()).copied().unwrap_or(0), after.get(&n.id()).copied().unwrap_or(0));
        assert!(
            a >= b + 2,
            "the leader's heartbeats to node {} stopped after the load: {b} answered before {QUIET:?} \
             of quiet, {a} after",
            n.id()
        );
    }

    // The followers' election timers still fire: without the leader (stopped at once,
    // without handing over), one takes over.
    leader.shutdown_now().await;
    let others: Vec<_> = nodes.iter().filter(|n| n.id() != leader.id()).collect();
    let next = wait_for_leader(others.iter().copied()).await;
    assert!(next.status().term > term, "a new term began: {:?}", next.status());
    for n in others {
        n.shutdown().await;
    }
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_keep_firing_through_a_busy_protocol_loop_on_tokio() {
    timers_keep_firing_through_a_busy_protocol_loop(raft::runtime::TokioRuntime::new()).await;
}

#[cfg(feature = "smol")]
#[test]
fn timers_keep_firing_through_a_busy_protocol_loop_on_smol() {
    smol::block_on(timers_keep_firing_through_a_busy_protocol_loop(raft::runtime::SmolRuntime::new()));
}

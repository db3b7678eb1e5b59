//! How a follower forwards proposals to the leader: at most
//! `Config::max_forwards_in_flight` unanswered batches at a time, proposals made
//! meanwhile leaving together as one batch, and a batch whose answer was lost no longer
//! counting after two heartbeat intervals, and sent again then.
#![cfg(all(feature = "testing", feature = "tokio"))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use raft::runtime::TokioRuntime;
use raft::testing::helpers::{wait_for, wait_for_leader, Counter, WAIT_TIMEOUT};
use raft::testing::mem_network::{MemEndpoint, MemNetwork};
use raft::testing::mem_store::MemStore;
use raft::{Config, Message, MessageBody, Network, NetworkError, NodeId, Raft, Role, Runtime};

/// A node's network that records the size of every forwarded batch it sends (first
/// attempts) and counts the forwards it sends again, drops the leader's answers to
/// forwards while `drop_answers` is set, and drops as many answers to read-index
/// requests as `drop_read_answers` says.
#[derive(Clone, Default)]
struct Watch {
    forwards: Arc<Mutex<Vec<usize>>>,
    /// The ids of the forwards sent, to tell a first attempt from a repeat.
    seen: Arc<Mutex<std::collections::HashSet<u64>>>,
    retries: Arc<AtomicUsize>,
    drop_answers: Arc<AtomicBool>,
    drop_read_answers: Arc<AtomicUsize>,
}

struct Watched {
    inner: MemEndpoint<TokioRuntime>,
    watch: Watch,
}

#[async_trait]
impl Network for Watched {
    async fn send(&self, to: NodeId, msg: Message) -> Result<(), NetworkError> {
        let w = &self.watch;
        match &msg.body {
            MessageBody::Forward { id, requests } => {
                if w.seen.lock().unwrap().insert(*id) {
                    w.forwards.lock().unwrap().push(requests.len());
                } else {
                    w.retries.fetch_add(1, Ordering::SeqCst);
                }
            }
            MessageBody::ForwardResponse { .. } if w.drop_answers.load(Ordering::SeqCst) => return Ok(()),
            MessageBody::ReadIndexResponse { .. }
                if w.drop_read_answers
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok() =>
            {
                return Ok(())
            }
            _ => {}
        }
        self.inner.send(to, msg).await
    }
}

/// Three counter nodes on watched networks (two unanswered batches at most; an answer
/// counts as lost after 2 × 200 ms), once a follower knows the leader: the nodes and
/// that follower.
async fn cluster(rt: &TokioRuntime, watch: &Watch) -> (Vec<Option<Raft<Counter>>>, Raft<Counter>) {
    let net = MemNetwork::new(rt.clone(), 5);
    let config = Config {
        heartbeat_interval: Duration::from_millis(200),
        election_timeout_min: Duration::from_millis(1000),
        election_timeout_max: Duration::from_millis(2000),
        max_forwards_in_flight: 2,
        ..Config::default()
    };
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let network = Watched { inner: net.endpoint(id), watch: watch.clone() };
        let node =
            Raft::bootstrap(id, [1, 2, 3], config.clone(), rt.clone(), MemStore::new(), network, Counter::default())
                .await
                .expect("node starts");
        let handle = node.clone();
        net.register(id, Arc::new(move |m| handle.receive(m)));
        nodes.push(Some(node));
    }
    let l = wait_for_leader(nodes.iter().flatten()).await;
    let f = nodes.iter().flatten().find(|n| n.status().role == Role::Follower).expect("a follower").clone();
    f.wait_for("the follower to know the leader", WAIT_TIMEOUT, |s| s.leader == Some(l.id()))
        .await
        .unwrap_or_else(|e| panic!("node {}: {e}", f.id()));
    (nodes, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_holds_proposals_while_its_forwards_are_unanswered_and_sends_them_as_one() {
    let rt = TokioRuntime::new();
    let watch = Watch::default();
    let (nodes, f) = cluster(&rt, &watch).await;
    let Watch { forwards, retries, drop_answers, .. } = watch.clone();

    // Answered forwards go one by one.
    assert_eq!(f.propose(1).await, Ok(1));
    assert_eq!(f.propose(1).await, Ok(2));
    assert_eq!(*forwards.lock().unwrap(), vec![1, 1]);

    // With the answers lost, two batches are in flight...
    drop_answers.store(true, Ordering::SeqCst);
    let mut lost = Vec::new();
    for n in 3..=4 {
        let f2 = f.clone();
        lost.push(tokio::spawn(async move { f2.propose(1).await }));
        wait_for(&rt, "a forward", || forwards.lock().unwrap().len() == n).await;
    }
    // ... so the next three proposals, made one at a time, wait, and leave together once
    // the two unanswered batches count as lost.
    let mut held = Vec::new();
    for _ in 0..3 {
        let f2 = f.clone();
        held.push(tokio::spawn(async move { f2.propose(1).await }));
        rt.sleep(Duration::from_millis(20)).await;
    }
    drop_answers.store(false, Ordering::SeqCst);
    wait_for(&rt, "the held batch", || forwards.lock().unwrap().len() == 5).await;
    assert_eq!(*forwards.lock().unwrap(), vec![1, 1, 1, 1, 3]);
    let mut values = Vec::new();
    for h in held {
        values.push(h.await.expect("task").expect("the held proposals commit"));
    }
    values.sort_unstable();
    assert_eq!(values, vec![5, 6, 7], "all seven increments applied, the held three last");
    // The two whose answers were lost were sent again and answered, rather than
    // waiting out the request timeout, with their own results: their entries were
    // normally applied here before the repeated answers came, and the apply task kept
    // the responses. They were appended once (seven increments in all, below).
    let mut lost_values = Vec::new();
    for h in lost {
        lost_values.push(h.await.expect("task"));
    }
    assert_eq!(lost_values, vec![Ok(3), Ok(4)]);
    assert!(retries.load(Ordering::SeqCst) >= 2, "both lost batches were sent again");
    wait_for(&rt, "every increment everywhere", || {
        nodes.iter().flatten().all(|n| n.read_local_stale(|c: &Counter| c.0) == 7)
    })
    .await;
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_asks_again_for_a_read_index_whose_answer_was_lost() {
    let rt = TokioRuntime::new();
    let watch = Watch::default();
    let (nodes, f) = cluster(&rt, &watch).await;
    assert_eq!(f.propose(5).await, Ok(5));
    // The leader's first two answers to read-index requests are lost; the read is
    // served once the follower asks again (without that, it would end in a timeout).
    watch.drop_read_answers.store(2, Ordering::SeqCst);
    assert_eq!(f.read(|c: &Counter| c.0).await, Ok(5));
    assert_eq!(watch.drop_read_answers.load(Ordering::SeqCst), 0, "both answers were dropped");
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

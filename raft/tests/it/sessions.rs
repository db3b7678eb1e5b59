//! Client sessions (`raft::session`, thesis §6.3) on a real three-node cluster: a
//! command repeated under the same (client, seq) is applied once and answered with the
//! first response, whichever node it goes through, across leader changes, restarts and
//! snapshot installs; registered sessions refuse unknown ids and acknowledged numbers;
//! idle sessions expire alike on every replica.
#![cfg(all(feature = "testing", feature = "tokio"))]

use std::sync::Arc;
use std::time::Duration;

use raft::runtime::TokioRuntime;
use raft::session::IMPLICIT;
use raft::testing::helpers::{wait_for, wait_for_leader, Counter};
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{ClientError, Config, Raft, Runtime};

/// Nodes 1..=3 of a counter cluster with `config`.
struct Nodes {
    rt: TokioRuntime,
    net: MemNetwork<TokioRuntime>,
    stores: Vec<MemStore>,
    nodes: Vec<Option<Raft<Counter>>>,
    config: Config,
}

impl Nodes {
    async fn start(seed: u64, config: Config) -> Nodes {
        let rt = TokioRuntime::new();
        let net = MemNetwork::new(rt.clone(), seed);
        let stores: Vec<MemStore> = (0..3).map(|_| MemStore::new()).collect();
        let mut n = Nodes { rt, net, stores, nodes: vec![None, None, None], config };
        for id in 1..=3 {
            n.run(id, true).await;
        }
        n
    }

    /// Starts node `id` on its store: bootstrapped, or restarted from what it holds.
    async fn run(&mut self, id: u64, bootstrap: bool) {
        let (store, endpoint) = (self.stores[id as usize - 1].clone(), self.net.endpoint(id));
        let (config, rt) = (self.config.clone(), self.rt.clone());
        let raft = if bootstrap {
            Raft::bootstrap(id, [1, 2, 3], config, rt, store, endpoint, Counter::default()).await
        } else {
            Raft::restart(id, config, rt, store, endpoint, Counter::default()).await
        }
        .expect("the node starts");
        let handle = raft.clone();
        self.net.register(id, Arc::new(move |m| handle.receive(m)));
        self.nodes[id as usize - 1] = Some(raft);
    }

    /// Stops node `id` and cuts it off.
    async fn stop(&mut self, id: u64) {
        self.net.unregister(id);
        if let Some(n) = self.nodes[id as usize - 1].take() {
            n.shutdown_now().await;
        }
    }

    fn node(&self, id: u64) -> Raft<Counter> {
        self.nodes[id as usize - 1].clone().expect("the node runs")
    }

    async fn leader(&self) -> Raft<Counter> {
        wait_for_leader(self.nodes.iter().flatten()).await
    }

    /// The running nodes other than `id`.
    fn others(&self, id: u64) -> Vec<Raft<Counter>> {
        self.nodes.iter().flatten().filter(|n| n.id() != id).cloned().collect()
    }

    async fn applied_everywhere(&self, value: u64) {
        let nodes: Vec<_> = self.nodes.iter().flatten().cloned().collect();
        wait_for(&self.rt, "every node to apply", || nodes.iter().all(|n| n.read_local_stale(|c| c.0) == value)).await;
    }

    async fn shutdown(self) {
        for n in self.nodes.iter().flatten() {
            n.shutdown_now().await;
        }
    }
}

const CLIENT: u64 = IMPLICIT | 42;

#[tokio::test]
async fn a_repeated_command_through_any_node_is_applied_once_and_gets_the_first_response() {
    let n = Nodes::start(1, Config::default()).await;
    let l = n.leader().await;
    assert_eq!(l.propose_in_session(CLIENT, 1, 0, 5).await, Ok(5));
    for node in n.nodes.iter().flatten() {
        assert_eq!(node.propose_in_session(CLIENT, 1, 0, 5).await, Ok(5), "repeated through node {}", node.id());
    }
    // The next number is a new command.
    assert_eq!(l.propose_in_session(CLIENT, 2, 1, 5).await, Ok(10));
    n.applied_everywhere(10).await;
    // An acknowledged number is refused, not applied again.
    assert_eq!(l.propose_in_session(CLIENT, 1, 0, 5).await, Err(ClientError::StaleRequest { client: CLIENT, seq: 1 }));
    assert_eq!(l.read(|c| c.0).await, Ok(10));
    n.shutdown().await;
}

#[tokio::test]
async fn a_command_repeated_after_its_leader_died_is_applied_once() {
    let mut n = Nodes::start(2, Config::default()).await;
    let l = n.leader().await;
    assert_eq!(l.propose_in_session(CLIENT, 1, 0, 7).await, Ok(7));
    n.applied_everywhere(7).await;
    n.stop(l.id()).await;
    let l2 = wait_for_leader(n.others(l.id()).iter()).await;
    assert_ne!(l2.id(), l.id());
    for node in n.others(l.id()) {
        assert_eq!(node.propose_in_session(CLIENT, 1, 0, 7).await, Ok(7), "repeated through node {}", node.id());
    }
    // The old leader comes back and the repeat through it is answered alike.
    n.run(l.id(), false).await;
    assert_eq!(n.node(l.id()).propose_in_session(CLIENT, 1, 0, 7).await, Ok(7));
    n.applied_everywhere(7).await;
    n.shutdown().await;
}

#[tokio::test]
async fn the_session_table_survives_a_snapshot_install_and_a_restart_from_a_snapshot() {
    let config = Config { snapshot_keep_entries: 0, ..Config::default() };
    let mut n = Nodes::start(3, config).await;
    let l = n.leader().await;
    let behind = n.others(l.id())[0].id();
    n.stop(behind).await;
    assert_eq!(l.propose_in_session(CLIENT, 1, 0, 3).await, Ok(3));
    for _ in 0..5 {
        l.propose(1).await.expect("commits");
    }
    // A snapshot covers the whole log: the node that was away must install it.
    l.trigger_snapshot().expect("the leader takes a snapshot");
    let first = l.status().commit_index + 1;
    l.wait_for("the log purged", Duration::from_secs(10), |s| s.first_log_index >= first)
        .await
        .expect("the log is purged");
    n.run(behind, false).await;
    let b = n.node(behind);
    b.wait_for("the snapshot installed", Duration::from_secs(10), |s| {
        s.snapshot_index > 0 && s.applied_index >= first - 1
    })
    .await
    .expect("the node installs the snapshot");
    assert_eq!(b.read_local_stale(|c| c.0), 8);
    let one = raft::SessionStats { sessions: 1, responses: 1 };
    assert_eq!(b.metrics().sessions, one, "the installed table's size");
    assert_eq!(b.propose_in_session(CLIENT, 1, 0, 3).await, Ok(3), "answered from the installed table");
    // Every node restarts from its own snapshot (the leader's) or log, and still knows.
    let me = l.id();
    n.stop(me).await;
    n.run(me, false).await;
    assert_eq!(n.node(me).propose_in_session(CLIENT, 1, 0, 3).await, Ok(3), "answered after a restart");
    n.applied_everywhere(8).await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_registered_session_refuses_unknown_ids_and_expires_alike_on_every_replica() {
    let config = Config { session_idle_timeout: Duration::from_millis(300), ..Config::default() };
    let n = Nodes::start(4, config).await;
    let l = n.leader().await;
    let session = l.open_session().await.expect("a session opens");
    assert_eq!(session & IMPLICIT, 0, "a registered id");
    assert_eq!(l.propose_in_session(session, 1, 0, 1).await, Ok(1));
    assert_eq!(
        l.propose_in_session(session + 1_000_000, 1, 0, 1).await,
        Err(ClientError::SessionExpired { client: session + 1_000_000 })
    );
    // Through every node while it is fresh.
    for (i, node) in n.nodes.iter().flatten().enumerate() {
        assert_eq!(node.propose_in_session(session, 2 + i as u64, 1, 1).await, Ok(2 + i as u64));
    }
    // Idle past the timeout: the next session entry (another client's) expires it, and
    // every replica refuses it from its own table.
    n.rt.sleep(Duration::from_millis(400)).await;
    assert_eq!(l.propose_in_session(CLIENT, 1, 0, 10).await, Ok(14));
    n.applied_everywhere(14).await;
    for node in n.nodes.iter().flatten() {
        assert_eq!(
            node.propose_in_session(session, 9, 4, 1).await,
            Err(ClientError::SessionExpired { client: session }),
            "node {}",
            node.id()
        );
    }
    assert_eq!(l.read(|c| c.0).await, Ok(14), "nothing of the expired session was applied");
    n.shutdown().await;
}

#[tokio::test]
async fn propose_once_applies_a_key_once() {
    let n = Nodes::start(5, Config::default()).await;
    let l = n.leader().await;
    assert_eq!(l.propose_once(b"order-17", 4).await, Ok(4));
    for node in n.nodes.iter().flatten() {
        assert_eq!(node.propose_once(b"order-17", 4).await, Ok(4));
    }
    assert_eq!(l.propose_once(b"order-18", 4).await, Ok(8), "another key is another command");
    n.applied_everywhere(8).await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_key_reused_for_another_command_is_refused_on_every_node_and_not_applied() {
    let config = Config { snapshot_keep_entries: 0, ..Config::default() };
    let mut n = Nodes::start(8, config).await;
    let l = n.leader().await;
    let key = b"order-19";
    let client = raft::session::client_for_key(key);
    assert_eq!(l.propose_once(key, 4).await, Ok(4));
    for node in n.nodes.iter().flatten() {
        assert_eq!(node.propose_once(key, 5).await, Err(ClientError::KeyReused { client }), "node {}", node.id());
        assert_eq!(node.propose_once(key, 4).await, Ok(4), "the first command still gets its answer");
    }
    // The digest is in the snapshot: a node restarted from one still tells them apart.
    l.trigger_snapshot().expect("the leader takes a snapshot");
    let first = l.status().commit_index + 1;
    l.wait_for("the log purged", Duration::from_secs(10), |s| s.first_log_index >= first)
        .await
        .expect("the log is purged");
    let me = l.id();
    n.stop(me).await;
    n.run(me, false).await;
    let back = n.node(me);
    assert_eq!(back.propose_once(key, 5).await, Err(ClientError::KeyReused { client }), "after a restart");
    assert_eq!(back.propose_once(key, 4).await, Ok(4));
    n.applied_everywhere(4).await;
    n.shutdown().await;
}

/// Waits until every running node reports `sessions` sessions holding `responses`.
async fn table_size_everywhere(n: &Nodes, sessions: u64, responses: u64) {
    let want = raft::SessionStats { sessions, responses };
    let nodes: Vec<_> = n.nodes.iter().flatten().cloned().collect();
    wait_for(&n.rt, "every node's session table size", || nodes.iter().all(|x| x.metrics().sessions == want)).await;
}

#[tokio::test]
async fn the_session_table_size_is_reported_alike_on_every_replica() {
    let config = Config { session_idle_timeout: Duration::from_millis(300), ..Config::default() };
    let n = Nodes::start(7, config).await;
    let l = n.leader().await;
    for key in [&b"a"[..], b"b", b"c"] {
        assert_eq!(l.propose_once(key, 1).await.map(|_| ()), Ok(()));
    }
    for seq in 1..=3 {
        l.propose_in_session(CLIENT, seq, seq.saturating_sub(2), 1).await.expect("applied");
    }
    // Three keys with their one response, and the client's numbers 2 and 3 (it
    // acknowledged 1).
    table_size_everywhere(&n, 4, 5).await;
    // Idle past the timeout: one more session entry expires the four, with their
    // responses, on every replica.
    n.rt.sleep(Duration::from_millis(400)).await;
    l.propose_once(b"d", 1).await.expect("applied");
    table_size_everywhere(&n, 1, 1).await;
    n.shutdown().await;
}

/// The payload of the last entry of `store`'s log.
fn last_payload(store: &MemStore) -> raft::EntryPayload {
    store.entries_snapshot().pop().expect("the log holds an entry").payload
}

#[tokio::test]
async fn propose_on_the_leader_appends_a_plain_command_and_through_a_follower_a_command_of_the_node_session() {
    let n = Nodes::start(6, Config::default()).await;
    let l = n.leader().await;
    let store = &n.stores[l.id() as usize - 1];
    assert_eq!(l.propose(4).await, Ok(4));
    assert!(
        matches!(last_payload(store), raft::EntryPayload::Command(_)),
        "the leader's own proposal has its one copy in the log: no session"
    );
    let f = n.others(l.id())[0].clone();
    assert_eq!(f.propose(5).await, Ok(9));
    match last_payload(store) {
        raft::EntryPayload::Session(e) => match &e.op {
            raft::SessionOp::Command { client, seq, .. } => {
                assert_ne!(client & IMPLICIT, 0, "the follower's own session is an implicit one");
                assert_eq!(*seq, 1, "the follower's first forwarded proposal");
            }
            op => panic!("a session command, not {op:?}"),
        },
        p => panic!("a forwarded proposal goes in the follower's session, not {p:?}"),
    }
    n.applied_everywhere(9).await;
    n.shutdown().await;
}

#[tokio::test]
async fn a_leader_proposal_whose_entry_a_new_leader_replaced_is_proposed_again_and_applied_once() {
    let n = Nodes::start(7, Config::default()).await;
    let l = n.leader().await;
    assert_eq!(l.propose(1).await, Ok(1));
    n.applied_everywhere(1).await;
    // Cut the leader off and propose on it: its entry cannot commit.
    let (old, term) = (l.id(), l.status().term);
    let at = l.status().last_log_index + 1;
    n.net.isolate(old);
    let proposing = {
        let l = l.clone();
        tokio::spawn(async move { l.propose(10).await })
    };
    l.wait_for("the entry appended", Duration::from_secs(5), |s| s.last_log_index >= at)
        .await
        .expect("the isolated leader appends the proposal");
    // The others elect a leader, which commits its own entries at that index.
    let l2 = wait_for_leader(n.others(old).iter()).await;
    assert_eq!(l2.propose(100).await, Ok(101));
    n.net.heal();
    // The old leader learns its entry was replaced and proposes the command again.
    assert_eq!(proposing.await.expect("the task runs"), Ok(111));
    n.applied_everywhere(111).await;
    let replaced = n.stores[old as usize - 1].term_at(at);
    assert!(replaced.is_some_and(|t| t > term), "the old leader's entry at {at} was replaced: {replaced:?}");
    assert_eq!(l2.read(|c| c.0).await, Ok(111), "applied once");
    n.shutdown().await;
}

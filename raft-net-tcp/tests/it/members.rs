//! The transport follows the configuration (`Network::members_changed`): peers come from
//! the members' addresses in the log, a learner added with its address is reached
//! without any `set_peer`, and a removed member is dropped once its removal commits (a
//! leader removing itself included).

use std::collections::BTreeSet;
use std::time::Duration;

use raft::testing::helpers::{wait_for, wait_for_leader, Counter};
use raft::testing::mem_store::MemStore;
use raft::{Config, Membership, NodeId, NodeInfo, Raft};
use raft_net_tcp::{TcpRuntime, TcpTransport};

use crate::cluster::{handles, loopback, test_config, Node};

const TIMEOUT: Duration = Duration::from_secs(10);

fn peers_are<R: TcpRuntime>(t: &TcpTransport<R>, want: &[NodeId]) -> bool {
    t.peer_ids() == want
}

fn others(all: &[NodeId], me: NodeId) -> Vec<NodeId> {
    all.iter().copied().filter(|&id| id != me).collect()
}

/// Bootstraps 1..=3 from their addresses alone, adds 4 as a learner by its address,
/// promotes it and removes a follower: every transport's peers follow.
async fn peers_follow_the_configuration<R: TcpRuntime>(rt: R) {
    let mut transports = Vec::new();
    for id in 1..=4 {
        transports.push(TcpTransport::bind(rt.clone(), test_config(id), loopback()).await.expect("bind"));
    }
    let info = |t: &TcpTransport<R>| NodeInfo::new(t.local_addr().to_string());
    let members = Membership::with_nodes(transports.iter().take(3).map(|t| (t.config().node_id, info(t))));
    let t4 = transports.pop().expect("four transports");
    let mut nodes = Vec::new();
    for t in transports {
        let id = t.config().node_id;
        let raft = Raft::bootstrap_membership(
            id,
            members.clone(),
            Config::default(),
            rt.clone(),
            MemStore::new(),
            t.network(),
            Counter::default(),
        )
        .await
        .expect("bootstrap");
        let r = raft.clone();
        t.start(move |m| r.receive(m));
        nodes.push(Some(Node { transport: t, raft }));
    }
    wait_for(&rt, "peers from the bootstrap configuration", || {
        nodes.iter().flatten().all(|n| peers_are(&n.transport, &others(&[1, 2, 3], n.raft.id())))
    })
    .await;
    let leader = wait_for_leader(handles(&nodes)).await;
    assert_eq!(leader.propose(5).await, Ok(5));

    // Node 4 starts empty; it accepts the leader because it knows the members.
    for n in nodes.iter().flatten() {
        t4.set_peer(n.transport.config().node_id, n.transport.local_addr());
    }
    let r4 = Raft::restart(4, Config::default(), rt.clone(), MemStore::new(), t4.network(), Counter::default())
        .await
        .expect("restart empty");
    let r = r4.clone();
    t4.start(move |m| r.receive(m));
    leader.add_learner(4, info(&t4), TIMEOUT).await.expect("learner added");
    wait_for(&rt, "node 4 to apply", || r4.read_local_stale(|c| c.0) == 5).await;
    wait_for(&rt, "every member to reach node 4", || {
        nodes.iter().flatten().all(|n| peers_are(&n.transport, &others(&[1, 2, 3, 4], n.raft.id())))
    })
    .await;
    leader.change_voters([1, 2, 3, 4], TIMEOUT).await.expect("node 4 promoted");

    // Remove a follower: the others drop it.
    let gone = (1..=3).find(|&id| id != leader.id()).expect("a follower");
    leader.remove_node(gone, TIMEOUT).await.expect("follower removed");
    let stay: Vec<NodeId> = [1, 2, 3, 4].into_iter().filter(|&id| id != gone).collect();
    wait_for(&rt, "the removed node dropped by every remaining member", || {
        nodes
            .iter()
            .flatten()
            .filter(|n| n.raft.id() != gone)
            .all(|n| peers_are(&n.transport, &others(&stay, n.raft.id())))
            && peers_are(&t4, &others(&stay, 4))
    })
    .await;
    assert_eq!(leader.status().membership.voters, stay.iter().copied().collect::<BTreeSet<_>>());
    leader.propose(1).await.expect("commits without the removed node");
    wait_for(&rt, "node 4 to apply", || r4.read_local_stale(|c| c.0) == 6).await;

    leader_removes_itself(&rt, &leader, &nodes, (&t4, &r4), &stay).await;
    for n in nodes.iter().flatten() {
        n.stop().await;
    }
    r4.shutdown().await;
    t4.shutdown().await;
}

/// The leader removes itself: the others keep taking its messages until the entry
/// commits (they still reach it, though it is out of the new configuration), then it
/// hands over and the voters left go on; every remaining member then drops it.
async fn leader_removes_itself<R: TcpRuntime>(
    rt: &R,
    leader: &Raft<Counter>,
    nodes: &[Option<Node<R>>],
    (t4, r4): (&TcpTransport<R>, &Raft<Counter>),
    stay: &[NodeId],
) {
    let old = leader.id();
    leader.remove_node(old, TIMEOUT).await.expect("the leader removes itself");
    let s = r4.wait_for("a new leader", TIMEOUT, |s| s.leader.is_some_and(|l| l != old)).await.expect("new leader");
    assert!(!s.membership.contains(old));
    assert_eq!(r4.propose(1).await, Ok(7), "the voters left commit");
    let left: Vec<NodeId> = stay.iter().copied().filter(|&id| id != old).collect();
    wait_for(rt, "every remaining member to drop the old leader", || {
        nodes
            .iter()
            .flatten()
            .filter(|n| left.contains(&n.raft.id()))
            .all(|n| peers_are(&n.transport, &others(&left, n.raft.id())))
            && peers_are(t4, &others(&left, 4))
    })
    .await;
}

/// Unusable addresses are skipped; a hostname is resolved (in the background: the
/// caller does not wait for DNS); a configuration without addresses leaves the static
/// peers alone; a name resolved after a later configuration removed its node does not
/// bring the node back.
async fn addresses_are_parsed_resolved_or_skipped<R: TcpRuntime>(rt: R) {
    let t = TcpTransport::bind(rt.clone(), test_config(1), loopback()).await.expect("bind");
    t.set_peer(9, "127.0.0.1:9".parse().expect("address"));
    let mut m = Membership::new([1, 2]);
    t.apply_membership(&m);
    assert_eq!(t.peer_ids(), vec![9], "no addresses: static peers kept");
    m = Membership::with_nodes([
        (1, NodeInfo::new("127.0.0.1:1")),
        (2, NodeInfo::new("localhost:7001")),
        (3, NodeInfo::new("not an address")),
        (4, NodeInfo::new("127.0.0.1:4")),
    ]);
    t.apply_membership(&m);
    assert!(!t.peer_ids().contains(&9), "the non-member dropped at once");
    wait_for(&rt, "the host name to resolve", || t.peer_ids() == vec![2, 4]).await;
    assert_eq!(t.peer_ids(), vec![2, 4], "self and the unusable address skipped, the non-member dropped");

    let with_name = Membership::with_nodes([(1, NodeInfo::new("127.0.0.1:1")), (5, NodeInfo::new("localhost:7005"))]);
    let without = Membership::with_nodes([(1, NodeInfo::new("127.0.0.1:1")), (4, NodeInfo::new("127.0.0.1:4"))]);
    t.apply_membership(&with_name);
    t.apply_membership(&without);
    rt.sleep(Duration::from_millis(300)).await;
    assert_eq!(t.peer_ids(), vec![4], "a late answer for node 5 does not bring it back");
    t.shutdown().await;
}

#[cfg(feature = "tokio")]
mod on_tokio {
    use raft::runtime::TokioRuntime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_follow_the_configuration_on_tokio() {
        super::peers_follow_the_configuration(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn addresses_are_parsed_resolved_or_skipped_on_tokio() {
        super::addresses_are_parsed_resolved_or_skipped(TokioRuntime::new()).await;
    }
}

#[cfg(feature = "smol")]
mod on_smol {
    use raft::runtime::SmolRuntime;

    #[test]
    fn peers_follow_the_configuration_on_smol() {
        smol::block_on(super::peers_follow_the_configuration(SmolRuntime::new()));
    }

    #[test]
    fn addresses_are_parsed_resolved_or_skipped_on_smol() {
        smol::block_on(super::addresses_are_parsed_resolved_or_skipped(SmolRuntime::new()));
    }
}

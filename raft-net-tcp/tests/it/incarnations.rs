//! Data-directory incarnations (`raft_net_tcp::incarnation`): a node that lost its data
//! is refused under its old node id, in both directions, by a node that recorded its
//! earlier incarnation; once the id leaves the configuration, a new node may take it.

use std::collections::BTreeMap;
use std::sync::Arc;

use raft::{Membership, NodeInfo};
use raft_net_tcp::codec::HelloStatus;
use raft_net_tcp::{ConnectionError, HandshakeError, Incarnations, TcpRuntime, TcpTransport};

use crate::cluster::{loopback, test_config};

async fn node<R: TcpRuntime>(rt: &R, id: u64, incarnations: Arc<Incarnations>) -> TcpTransport<R> {
    let mut config = test_config(id);
    config.incarnations = Some(incarnations);
    let t = TcpTransport::bind(rt.clone(), config, loopback()).await.expect("bind");
    t.start(|_| {});
    t
}

fn refused_as_replaced(r: &Result<(), ConnectionError>) -> bool {
    matches!(r, Err(ConnectionError::Handshake { source: HandshakeError::Refused(HelloStatus::Replaced), .. }))
}

async fn a_wiped_node_is_refused_under_its_old_id<R: TcpRuntime>(rt: R) {
    let dir = tempfile::tempdir().expect("temp dir");
    let one = node(&rt, 1, Arc::new(Incarnations::open(dir.path()).expect("open"))).await;
    let two = node(&rt, 2, Arc::new(Incarnations::in_memory(0xb1))).await;
    one.set_peer(2, two.local_addr());
    two.set_peer(1, one.local_addr());
    two.probe(1, one.local_addr()).await.expect("the first incarnation is accepted");
    one.probe(2, two.local_addr()).await.expect("and presents it in its replies");
    // Recorded durably, before the handshake was answered.
    assert_eq!(Incarnations::open(dir.path()).expect("reopen").recorded(), BTreeMap::from([(2, 0xb1)]));

    // Node 2 loses its data and comes back under its id with a new incarnation.
    two.shutdown().await;
    let wiped = node(&rt, 2, Arc::new(Incarnations::in_memory(0xb2))).await;
    wiped.set_peer(1, one.local_addr());
    one.set_peer(2, wiped.local_addr());
    let r = wiped.probe(1, one.local_addr()).await;
    assert!(refused_as_replaced(&r), "node 1 refuses the wiped node's connections: {r:?}");
    let r = one.probe(2, wiped.local_addr()).await;
    assert!(
        matches!(
            r,
            Err(ConnectionError::Handshake {
                source: HandshakeError::Replaced { peer: 2, recorded: 0xb1, presented: 0xb2 },
                ..
            })
        ),
        "node 1 drops a connection to it: {r:?}"
    );
    let shown = r.expect_err("refused").to_string();
    assert!(shown.contains("may not rejoin under its old id"), "{shown}");

    // Node 2 leaves the configuration: its id may be given to a new node.
    let members =
        |ids: &[u64]| Membership::with_nodes(ids.iter().map(|&id| (id, NodeInfo::new(loopback().to_string()))));
    one.apply_membership(&members(&[1, 3]));
    assert_eq!(Incarnations::open(dir.path()).expect("reopen").recorded(), BTreeMap::new());
    one.set_peer(2, wiped.local_addr());
    wiped.probe(1, one.local_addr()).await.expect("a new node 2 is accepted");
    let r = node(&rt, 2, Arc::new(Incarnations::in_memory(0xb3))).await.probe(1, one.local_addr()).await;
    assert!(refused_as_replaced(&r), "and recorded in its turn: {r:?}");
    one.shutdown().await;
    wiped.shutdown().await;
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refused_under_its_old_id_on_tokio() {
    a_wiped_node_is_refused_under_its_old_id(raft::runtime::TokioRuntime::new()).await;
}

#[cfg(feature = "smol")]
#[test]
fn a_wiped_node_is_refused_under_its_old_id_on_smol() {
    smol::block_on(a_wiped_node_is_refused_under_its_old_id(raft::runtime::SmolRuntime::new()));
}

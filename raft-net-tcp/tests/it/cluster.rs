//! Three-node clusters over the TCP transport on loopback: election and replication,
//! restart and catch-up, bad input against a real listener, bounded queues, a source
//! address of its own, a peer that stops reading (write timeout and reconnect), and mixed
//! runtimes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use raft::testing::helpers::{wait_for, wait_for_leader, Counter};
use raft::testing::mem_store::MemStore;
use raft::{Config, Message, MessageBody, Network, NodeId, Raft, Role};
use raft_net_tcp::codec::{self, Hello, HelloStatus, HELLO_LEN, PROTOCOL_VERSION, REPLY_LEN};
use raft_net_tcp::{TcpConfig, TcpRuntime, TcpTransport};

pub(crate) const CLUSTER: u64 = 0x5eed;

pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub(crate) fn test_config(id: NodeId) -> TcpConfig {
    let mut c = TcpConfig::new(CLUSTER, id);
    c.backoff_max = Duration::from_millis(200);
    c.handshake_timeout = Duration::from_millis(300);
    c.max_frame_size = 1 << 20;
    c
}

/// A running node: its transport and its Raft handle.
pub(crate) struct Node<R: TcpRuntime> {
    pub(crate) transport: TcpTransport<R>,
    pub(crate) raft: Raft<Counter>,
}

impl<R: TcpRuntime> Node<R> {
    pub(crate) async fn stop(&self) {
        self.raft.shutdown().await;
        self.transport.shutdown().await;
    }
}

async fn bind<R: TcpRuntime>(rt: &R, id: NodeId) -> TcpTransport<R> {
    TcpTransport::bind(rt.clone(), test_config(id), loopback()).await.expect("bind on loopback")
}

/// Starts Raft on an already bound transport whose peers are set.
async fn start_raft<R: TcpRuntime>(rt: &R, t: TcpTransport<R>, store: MemStore, bootstrap: bool) -> Node<R> {
    let id = t.config().node_id;
    let raft = if bootstrap {
        Raft::bootstrap(id, [1, 2, 3], Config::default(), rt.clone(), store, t.network(), Counter::default()).await
    } else {
        Raft::restart(id, Config::default(), rt.clone(), store, t.network(), Counter::default()).await
    }
    .expect("node starts");
    let r = raft.clone();
    t.start(move |m| r.receive(m));
    Node { transport: t, raft }
}

fn set_peers<R: TcpRuntime>(t: &TcpTransport<R>, addrs: &HashMap<NodeId, SocketAddr>) {
    for (&id, &addr) in addrs {
        if id != t.config().node_id {
            t.set_peer(id, addr);
        }
    }
}

/// The Raft handles of the running nodes.
pub(crate) fn handles<R: TcpRuntime>(nodes: &[Option<Node<R>>]) -> impl Iterator<Item = &Raft<Counter>> {
    nodes.iter().flatten().map(|n| &n.raft)
}

pub(crate) fn leader<R: TcpRuntime>(nodes: &[Option<Node<R>>]) -> Option<Raft<Counter>> {
    handles(nodes).find(|r| r.status().role == Role::Leader).cloned()
}

/// Binds three transports on ephemeral ports, wires them up and bootstraps nodes 1..=3.
async fn start_cluster<R: TcpRuntime>(rt: &R) -> (Vec<MemStore>, Vec<Option<Node<R>>>, HashMap<NodeId, SocketAddr>) {
    start_cluster_with(rt, test_config).await
}

/// [`start_cluster`] with each node's transport configured by `config`.
pub(crate) async fn start_cluster_with<R: TcpRuntime>(
    rt: &R,
    config: impl Fn(NodeId) -> TcpConfig,
) -> (Vec<MemStore>, Vec<Option<Node<R>>>, HashMap<NodeId, SocketAddr>) {
    let mut transports = Vec::new();
    for id in 1..=3 {
        transports.push(TcpTransport::bind(rt.clone(), config(id), loopback()).await.expect("bind on loopback"));
    }
    let addrs: HashMap<NodeId, SocketAddr> = transports.iter().map(|t| (t.config().node_id, t.local_addr())).collect();
    let stores: Vec<MemStore> = (0..3).map(|_| MemStore::new()).collect();
    let mut nodes = Vec::new();
    for (t, s) in transports.into_iter().zip(&stores) {
        set_peers(&t, &addrs);
        nodes.push(Some(start_raft(rt, t, s.clone(), true).await));
    }
    wait_for_leader(handles(&nodes)).await;
    (stores, nodes, addrs)
}

pub(crate) async fn all_apply<R: TcpRuntime>(rt: &R, nodes: &[Option<Node<R>>], value: u64) {
    wait_for(rt, &format!("every node to reach {value}"), || {
        nodes.iter().flatten().all(|n| n.raft.read_local_stale(|c| c.0) == value)
    })
    .await;
}

/// Elects, commits, loses the leader, restarts it on a new port and catches it up.
async fn cluster_elects_commits_and_restarted_node_catches_up<R: TcpRuntime>(rt: R) {
    let (stores, mut nodes, mut addrs) = start_cluster(&rt).await;
    let l = leader(&nodes).unwrap();
    for i in 1..=30 {
        assert_eq!(l.propose(1).await, Ok(i));
    }
    all_apply(&rt, &nodes, 30).await;

    // Stop the leader; the others elect a new one and keep committing.
    let old = l.id();
    let idx = old as usize - 1;
    nodes[idx].take().unwrap().stop().await;
    let l2 = wait_for_leader(handles(&nodes)).await;
    assert_ne!(l2.id(), old, "the old leader is stopped");
    for _ in 0..10 {
        l2.propose(2).await.expect("new leader commits");
    }

    // Restart the old node on a new ephemeral port; the others learn the new address.
    let t = bind(&rt, old).await;
    addrs.insert(old, t.local_addr());
    for n in nodes.iter().flatten() {
        set_peers(&n.transport, &addrs);
    }
    set_peers(&t, &addrs);
    nodes[idx] = Some(start_raft(&rt, t, stores[idx].clone(), false).await);
    all_apply(&rt, &nodes, 50).await;
    l2.propose(1).await.expect("commits with the restarted node back");
    all_apply(&rt, &nodes, 51).await;

    for n in nodes.iter().flatten() {
        n.stop().await;
    }
}

/// Connects to `addr` with the runtime's own sockets.
pub(crate) async fn raw_connect<R: TcpRuntime>(rt: &R, addr: SocketAddr) -> R::Stream {
    rt.connect(addr, None).await.expect("connect to the listener")
}

/// Reads until the server closes the connection; fails if it stays open for 5 s.
async fn expect_closed<R: TcpRuntime>(rt: &R, s: &mut R::Stream, what: &str) {
    let start = rt.now();
    let mut buf = [0u8; 256];
    loop {
        let r = raft_net_tcp_read(rt, s, &mut buf).await;
        match r {
            Some(Ok(0)) | Some(Err(_)) => return,
            Some(Ok(_)) => {}
            None => {}
        }
        assert!(rt.now().saturating_since(start) < Duration::from_secs(5), "{what}: connection was not closed");
    }
}

pub(crate) async fn raft_net_tcp_read<R: TcpRuntime>(
    rt: &R,
    s: &mut R::Stream,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    let read = s.read(buf);
    let t = rt.sleep(Duration::from_millis(100));
    futures::pin_mut!(read, t);
    match futures::future::select(read, t).await {
        futures::future::Either::Left((r, _)) => Some(r),
        futures::future::Either::Right(_) => None,
    }
}

/// A valid handshake from `from` to `to`; asserts it is accepted.
async fn handshake<R: TcpRuntime>(rt: &R, addr: SocketAddr, from: NodeId, to: NodeId) -> R::Stream {
    let mut s = raw_connect(rt, addr).await;
    let hello = Hello { version: PROTOCOL_VERSION, cluster_id: CLUSTER, from, to, incarnation: 0 };
    s.write_all(&hello.encode()).await.unwrap();
    let mut reply = [0u8; REPLY_LEN];
    s.read_exact(&mut reply).await.unwrap();
    codec::decode_reply(&reply).expect("handshake accepted");
    s
}

/// Every kind of bad input closes only its own connection; the cluster keeps
/// replicating.
async fn bad_input_closes_only_that_connection<R: TcpRuntime>(rt: R) {
    let (_stores, nodes, _addrs) = start_cluster(&rt).await;
    let l = leader(&nodes).unwrap();
    l.propose(1).await.unwrap();
    let follower = nodes.iter().flatten().find(|n| n.raft.id() != l.id()).unwrap();
    let target = follower.transport.local_addr();
    let fid = follower.raft.id();

    // Garbage instead of a handshake.
    let mut s = raw_connect(&rt, target).await;
    s.write_all(&[0xAB; HELLO_LEN * 2]).await.unwrap();
    expect_closed(&rt, &mut s, "garbage").await;

    // Wrong cluster id: refused with a reason, then closed.
    let mut s = raw_connect(&rt, target).await;
    let hello = Hello { version: PROTOCOL_VERSION, cluster_id: CLUSTER + 1, from: l.id(), to: fid, incarnation: 0 };
    s.write_all(&hello.encode()).await.unwrap();
    let mut reply = [0u8; REPLY_LEN];
    s.read_exact(&mut reply).await.unwrap();
    assert!(matches!(
        codec::decode_reply(&reply),
        Err(raft_net_tcp::HandshakeError::Refused(HelloStatus::WrongCluster))
    ));
    expect_closed(&rt, &mut s, "wrong cluster").await;

    // Unsupported version, unknown sender, wrong receiver.
    for (hello, status) in [
        (
            Hello { version: 99, cluster_id: CLUSTER, from: l.id(), to: fid, incarnation: 0 },
            HelloStatus::UnsupportedVersion,
        ),
        (
            Hello { version: PROTOCOL_VERSION, cluster_id: CLUSTER, from: 77, to: fid, incarnation: 0 },
            HelloStatus::UnknownSender,
        ),
        (
            Hello { version: PROTOCOL_VERSION, cluster_id: CLUSTER, from: l.id(), to: 77, incarnation: 0 },
            HelloStatus::WrongReceiver,
        ),
    ] {
        let mut s = raw_connect(&rt, target).await;
        s.write_all(&hello.encode()).await.unwrap();
        s.read_exact(&mut reply).await.unwrap();
        assert!(matches!(codec::decode_reply(&reply), Err(raft_net_tcp::HandshakeError::Refused(st)) if st == status));
        expect_closed(&rt, &mut s, "refused handshake").await;
    }

    // A handshake that never finishes.
    let mut s = raw_connect(&rt, target).await;
    s.write_all(&hello.encode()[..10]).await.unwrap();
    expect_closed(&rt, &mut s, "slow handshake").await;

    // Oversized length prefix after a valid handshake.
    let mut s = handshake(&rt, target, l.id(), fid).await;
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(&rt, &mut s, "oversize length").await;

    // A frame that does not decode.
    let mut s = handshake(&rt, target, l.id(), fid).await;
    let mut frame = Vec::new();
    codec::encode_payload(&[0xff; 40], 1 << 20, &mut frame).unwrap();
    s.write_all(&frame).await.unwrap();
    expect_closed(&rt, &mut s, "undecodable frame").await;

    // A message claiming another sender than the handshake's.
    let mut s = handshake(&rt, target, l.id(), fid).await;
    let forged = Message { from: 99, to: fid, term: 1, body: MessageBody::HeartbeatResponse { ctx: 0 } };
    let mut frame = Vec::new();
    codec::encode_frame(&forged, 1 << 20, &mut frame).unwrap();
    s.write_all(&frame).await.unwrap();
    expect_closed(&rt, &mut s, "misaddressed message").await;

    // A truncated frame: the sender goes away mid-frame (the server logs and closes).
    let mut s = handshake(&rt, target, l.id(), fid).await;
    s.write_all(&100u32.to_be_bytes()).await.unwrap();
    s.write_all(&[0; 10]).await.unwrap();
    s.close().await.unwrap();
    drop(s);

    // The cluster still replicates to every node, the attacked follower included.
    for _ in 0..10 {
        l.propose(1).await.expect("still commits");
    }
    all_apply(&rt, &nodes, 11).await;
    for n in nodes.iter().flatten() {
        n.stop().await;
    }
}

/// Whether the server has closed `s`: true on end of stream or an error, false if the
/// connection is still open (nothing to read within 100 ms).
async fn is_closed<R: TcpRuntime>(rt: &R, s: &mut R::Stream) -> bool {
    let mut buf = [0u8; 64];
    matches!(raft_net_tcp_read(rt, s, &mut buf).await, Some(Ok(0)) | Some(Err(_)))
}

/// A flood of inbound connections, six times the limit on each of two nodes, all idle
/// before or in the middle of the handshake: the connections over the limit are closed
/// at once, the others when their handshake times out, and meanwhile the cluster keeps
/// committing over the peers' established connections. Once the flood is gone, a
/// valid peer connection is accepted again.
async fn connection_flood_is_bounded<R: TcpRuntime>(rt: R) {
    const LIMIT: usize = 8;
    const FLOOD: usize = 6 * LIMIT;
    let handshake_timeout = Duration::from_secs(3);
    let (_stores, nodes, _addrs) = start_cluster_with(&rt, |id| {
        let mut c = test_config(id);
        c.max_inbound_connections = LIMIT;
        c.handshake_timeout = handshake_timeout;
        c
    })
    .await;
    let l = leader(&nodes).unwrap();
    l.propose(1).await.unwrap();
    all_apply(&rt, &nodes, 1).await;
    let follower = nodes.iter().flatten().find(|n| n.raft.id() != l.id()).unwrap();
    let leader_addr = nodes.iter().flatten().find(|n| n.raft.id() == l.id()).unwrap().transport.local_addr();
    let targets = [(follower.transport.local_addr(), follower.raft.id()), (leader_addr, l.id())];

    let start = rt.now();
    let mut flood = Vec::new();
    for &(addr, to) in &targets {
        for i in 0..FLOOD {
            let mut s = raw_connect(&rt, addr).await;
            if i % 3 == 0 {
                // A handshake that stops half way; the rest send nothing at all.
                let hello = Hello { version: PROTOCOL_VERSION, cluster_id: CLUSTER, from: 1, to, incarnation: 0 };
                s.write_all(&hello.encode()[..HELLO_LEN / 2]).await.unwrap();
            }
            flood.push(s);
        }
    }
    // Let the listeners accept (and refuse) the whole flood.
    rt.sleep(Duration::from_millis(300)).await;

    // Well within the handshake timeout, only the connections under the limit are open.
    let mut open = 0;
    for s in &mut flood {
        if !is_closed(&rt, s).await {
            open += 1;
        }
    }
    assert!(
        rt.now().saturating_since(start) < handshake_timeout,
        "the flood took too long to check; raise the handshake timeout"
    );
    assert!(open <= targets.len() * LIMIT, "{open} flood connections open, over the limit of {LIMIT} per node");

    // The cluster keeps committing while the flood holds the free slots.
    for _ in 0..10 {
        l.propose(1).await.expect("commits during the flood");
    }
    all_apply(&rt, &nodes, 11).await;

    // The connections that were let in are closed when their handshake times out.
    for s in &mut flood {
        expect_closed(&rt, s, "idle flood connection").await;
    }
    drop(flood);

    // With the flood gone, a valid peer connection is accepted again, and the cluster
    // still replicates to every node.
    for &(addr, to) in &targets {
        let from = if to == l.id() { follower.raft.id() } else { l.id() };
        drop(handshake(&rt, addr, from, to).await);
    }
    for _ in 0..10 {
        l.propose(1).await.expect("commits after the flood");
    }
    all_apply(&rt, &nodes, 21).await;
    for n in nodes.iter().flatten() {
        n.stop().await;
    }
}

/// A peer that is down: the send queue stays bounded, the oldest frames are dropped.
async fn down_peer_queue_stays_bounded<R: TcpRuntime>(rt: R) {
    let mut config = test_config(1);
    config.send_queue_len = 64;
    let t = TcpTransport::bind(rt.clone(), config, loopback()).await.unwrap();
    // An address where nothing listens: bind a port, then close it.
    let dead = bind(&rt, 2).await;
    let dead_addr = dead.local_addr();
    dead.shutdown().await;
    drop(dead);
    t.set_peer(2, dead_addr);
    let net = t.network();
    for i in 0..5000 {
        let m = Message { from: 1, to: 2, term: i, body: MessageBody::Heartbeat { commit: 0, ctx: i } };
        net.send(2, m).await.unwrap();
    }
    let stats = t.peer_stats(2).unwrap();
    assert!(stats.queued <= 64, "{stats:?}");
    assert!(stats.dropped >= 5000 - 64, "{stats:?}");
    assert!(net
        .send(9, Message { from: 1, to: 9, term: 0, body: MessageBody::HeartbeatResponse { ctx: 0 } })
        .await
        .is_err());
    t.shutdown().await;
}

/// Accepts one connection on `listener` and answers its handshake as an accepting peer.
async fn accept_handshake<R: TcpRuntime>(listener: &R::Listener) -> R::Stream {
    let (mut s, _) = R::accept(listener).await.expect("accept");
    let mut hello = [0u8; HELLO_LEN];
    s.read_exact(&mut hello).await.expect("hello");
    s.write_all(&codec::encode_reply(HelloStatus::Accepted, 0)).await.expect("reply");
    s
}

/// A peer that completes the handshake and then stops reading: once the socket buffers
/// are full, a write stays pending past `write_timeout`, the connection is dropped and a
/// new one is opened.
async fn stalled_peer_write_times_out_and_reconnects<R: TcpRuntime>(rt: R) {
    let mut config = test_config(1);
    config.write_timeout = Duration::from_millis(200);
    let t = TcpTransport::bind(rt.clone(), config, loopback()).await.unwrap();
    let listener = rt.bind(loopback()).await.unwrap();
    t.set_peer(2, R::local_addr(&listener).unwrap());
    let net = t.network();
    let big = |i: u64| Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::AppendEntries {
            prev_log_index: i,
            prev_log_term: 1,
            entries: vec![raft::Entry {
                term: 1,
                index: i + 1,
                payload: raft::EntryPayload::Command(vec![7u8; 256 << 10].into()),
            }],
            leader_commit: 0,
        },
    };
    net.send(2, big(0)).await.unwrap();
    let _stalled = accept_handshake::<R>(&listener).await;
    // Far more than the loopback socket buffers hold, sent while nothing reads.
    for i in 1..200 {
        net.send(2, big(i)).await.unwrap();
        if i % 20 == 0 {
            rt.sleep(Duration::from_millis(10)).await;
        }
    }
    let second = R::accept(&listener);
    let limit = rt.sleep(Duration::from_secs(5));
    futures::pin_mut!(second, limit);
    match futures::future::select(second, limit).await {
        futures::future::Either::Left((r, _)) => {
            r.expect("the transport reconnects after the write timeout");
        }
        futures::future::Either::Right(_) => panic!("no new connection within 5 s: the stalled write never timed out"),
    }
    t.shutdown().await;
}

/// With `bind_source` set, the transport's connections to its peers come from that
/// address (a firewall between nodes on one host depends on it); a peer that is down is
/// still a refused connection, not a hang.
async fn outgoing_connections_come_from_the_bound_source<R: TcpRuntime>(rt: R) {
    let source = std::net::IpAddr::from([127, 0, 0, 2]);
    let mut config = test_config(1);
    config.bind_source = Some(source);
    let t = TcpTransport::bind(rt.clone(), config, loopback()).await.unwrap();
    let listener = rt.bind(loopback()).await.unwrap();
    t.set_peer(2, R::local_addr(&listener).unwrap());
    t.network().send(2, Message { from: 1, to: 2, term: 1, body: MessageBody::TimeoutNow }).await.unwrap();
    let (_s, from) = R::accept(&listener).await.expect("accept");
    assert_eq!(from.ip(), source, "the connection came from {from}");

    let closed = R::local_addr(&rt.bind(loopback()).await.unwrap()).unwrap();
    let refused = rt.connect(closed, Some(source)).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    t.shutdown().await;
}

/// Shutdown stops the listener: new connections are refused afterwards.
async fn shutdown_closes_the_listener<R: TcpRuntime>(rt: R) {
    let t = bind(&rt, 1).await;
    t.start(|_| {});
    let addr = t.local_addr();
    raw_connect(&rt, addr).await;
    t.shutdown().await;
    rt.sleep(Duration::from_millis(50)).await;
    assert!(rt.connect(addr, None).await.is_err(), "listener still accepting after shutdown");
}

#[cfg(feature = "tokio")]
mod on_tokio {
    use raft::runtime::TokioRuntime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_elects_commits_and_restarted_node_catches_up_on_tokio() {
        super::cluster_elects_commits_and_restarted_node_catches_up(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_input_closes_only_that_connection_on_tokio() {
        super::bad_input_closes_only_that_connection(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_flood_is_bounded_on_tokio() {
        super::connection_flood_is_bounded(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn down_peer_queue_stays_bounded_on_tokio() {
        super::down_peer_queue_stays_bounded(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_peer_write_times_out_and_reconnects_on_tokio() {
        super::stalled_peer_write_times_out_and_reconnects(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outgoing_connections_come_from_the_bound_source_on_tokio() {
        super::outgoing_connections_come_from_the_bound_source(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_the_listener_on_tokio() {
        super::shutdown_closes_the_listener(TokioRuntime::new()).await;
    }
}

#[cfg(feature = "smol")]
mod on_smol {
    use raft::runtime::SmolRuntime;

    #[test]
    fn cluster_elects_commits_and_restarted_node_catches_up_on_smol() {
        smol::block_on(super::cluster_elects_commits_and_restarted_node_catches_up(SmolRuntime::new()));
    }

    #[test]
    fn bad_input_closes_only_that_connection_on_smol() {
        smol::block_on(super::bad_input_closes_only_that_connection(SmolRuntime::new()));
    }

    #[test]
    fn connection_flood_is_bounded_on_smol() {
        smol::block_on(super::connection_flood_is_bounded(SmolRuntime::new()));
    }

    #[test]
    fn down_peer_queue_stays_bounded_on_smol() {
        smol::block_on(super::down_peer_queue_stays_bounded(SmolRuntime::new()));
    }

    #[test]
    fn outgoing_connections_come_from_the_bound_source_on_smol() {
        smol::block_on(super::outgoing_connections_come_from_the_bound_source(SmolRuntime::new()));
    }

    #[test]
    fn stalled_peer_write_times_out_and_reconnects_on_smol() {
        smol::block_on(super::stalled_peer_write_times_out_and_reconnects(SmolRuntime::new()));
    }

    #[test]
    fn shutdown_closes_the_listener_on_smol() {
        smol::block_on(super::shutdown_closes_the_listener(SmolRuntime::new()));
    }
}

/// One node on tokio and two on smol form one cluster: the wire format is the same.
#[cfg(all(feature = "tokio", feature = "smol"))]
#[test]
fn mixed_runtimes_interoperate() {
    use raft::runtime::{SmolRuntime, TokioRuntime};

    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let trt = TokioRuntime::from_handle(tokio_rt.handle().clone());
    let srt = SmolRuntime::new();
    smol::block_on(async {
        let t1 = bind(&trt, 1).await;
        let t2 = bind(&srt, 2).await;
        let t3 = bind(&srt, 3).await;
        let addrs: HashMap<NodeId, SocketAddr> =
            [(1, t1.local_addr()), (2, t2.local_addr()), (3, t3.local_addr())].into_iter().collect();
        set_peers(&t1, &addrs);
        set_peers(&t2, &addrs);
        set_peers(&t3, &addrs);
        let n1 = start_raft(&trt, t1, MemStore::new(), true).await;
        let n2 = start_raft(&srt, t2, MemStore::new(), true).await;
        let n3 = start_raft(&srt, t3, MemStore::new(), true).await;
        let rafts = [n1.raft.clone(), n2.raft.clone(), n3.raft.clone()];
        let l = wait_for_leader(&rafts).await;
        for i in 1..=20 {
            assert_eq!(l.propose(1).await, Ok(i));
        }
        wait_for(&srt, "every node to apply", || rafts.iter().all(|r| r.read_local_stale(|c| c.0) == 20)).await;
        n1.stop().await;
        n2.stop().await;
        n3.stop().await;
    });
}

//! Mutual TLS between members (feature `tls`), against real listeners: a TLS cluster
//! elects and commits; nodes with a certificate from another CA, an expired
//! certificate, no TLS, or a valid certificate for another node deliver nothing and
//! leave the listener serving its members; a TLS node delivers nothing to a plaintext
//! one; a stalled TLS handshake times out; garbage before the TLS handshake and inside
//! the session closes only that connection. The typed error each side of every refusal
//! ends with is checked by the unit tests in `src/tls_tests.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use raft::{Message, MessageBody, Network, NodeId};
use raft_net_tcp::codec::{self, Hello, PROTOCOL_VERSION, REPLY_LEN};
use raft_net_tcp::{node_name, TcpConfig, TcpRuntime, TcpTransport, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::cluster::{all_apply, leader, loopback, raw_connect, start_cluster_with, test_config, CLUSTER};

#[path = "certs.rs"]
mod certs;
use certs::{Ca, NodeCert};

fn tls_config(id: NodeId, tls: Option<TlsConfig>) -> TcpConfig {
    let mut c = test_config(id);
    c.tls = tls;
    c
}

async fn tls_cluster_elects_and_commits<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let (_stores, nodes, _addrs) = start_cluster_with(&rt, |id| tls_config(id, Some(ca.node(id)))).await;
    let l = leader(&nodes).expect("a leader");
    for i in 1..=20 {
        assert_eq!(l.propose(1).await, Ok(i));
    }
    all_apply(&rt, &nodes, 20).await;
    // Both followers talk to the leader over TLS, both ways.
    let leader_node = nodes.iter().flatten().find(|n| n.raft.id() == l.id()).expect("leader node");
    let stats = leader_node.transport.all_peer_stats();
    assert!(stats.iter().all(|(_, s)| s.connected && s.received > 0), "{stats:?}");
    for n in nodes.iter().flatten() {
        n.stop().await;
    }
}

/// A listening node 1 that knows peers 2 and 3 and counts what it is delivered.
struct Target<R: TcpRuntime> {
    transport: TcpTransport<R>,
    delivered: Arc<AtomicU64>,
}

async fn target<R: TcpRuntime>(rt: &R, tls: Option<TlsConfig>) -> Target<R> {
    let transport = TcpTransport::bind(rt.clone(), tls_config(1, tls), loopback()).await.expect("bind");
    // Nothing listens there: the target's own outbound connections do not matter here.
    transport.set_peer(2, loopback());
    transport.set_peer(3, loopback());
    let delivered = Arc::new(AtomicU64::new(0));
    let d = delivered.clone();
    transport.start(move |_| {
        d.fetch_add(1, Ordering::Relaxed);
    });
    Target { transport, delivered }
}

fn heartbeat(from: NodeId) -> Message {
    Message { from, to: 1, term: 1, body: MessageBody::Heartbeat { commit: 0, ctx: 0 } }
}

/// A transport for node `id` with `tls` that sends heartbeats to `to` for a while.
async fn send_for_a_while<R: TcpRuntime>(
    rt: &R,
    id: NodeId,
    tls: Option<TlsConfig>,
    to: &TcpTransport<R>,
) -> TcpTransport<R> {
    let t = TcpTransport::bind(rt.clone(), tls_config(id, tls), loopback()).await.expect("bind");
    t.set_peer(1, to.local_addr());
    for _ in 0..10 {
        t.network().send(1, heartbeat(id)).await.expect("queued");
        rt.sleep(Duration::from_millis(40)).await;
    }
    t
}

/// Node 2, a member, delivers to the target.
async fn member_delivers<R: TcpRuntime>(rt: &R, ca: &Ca, target: &Target<R>) {
    let before = target.delivered.load(Ordering::Relaxed);
    let member = TcpTransport::bind(rt.clone(), tls_config(2, Some(ca.node(2))), loopback()).await.expect("bind");
    member.set_peer(1, target.transport.local_addr());
    let mut delivered = false;
    for _ in 0..250 {
        member.network().send(1, heartbeat(2)).await.expect("queued");
        rt.sleep(Duration::from_millis(20)).await;
        if target.delivered.load(Ordering::Relaxed) > before {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "the member's heartbeats were not delivered within 5 s");
    member.shutdown().await;
}

async fn intruders_deliver_nothing_and_members_still_do<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let other = Ca::new("another cluster");
    let t = target(&rt, Some(ca.node(1))).await;
    let foreign = other.issue(2);
    let intruders: Vec<(&str, NodeId, Option<TlsConfig>)> = vec![
        ("a certificate from another CA", 2, Some(tls_trusting(&ca, &foreign))),
        ("another CA altogether", 2, Some(other.node(2))),
        ("an expired certificate", 2, Some(ca.tls(&ca.issue_expired(2)))),
        ("no TLS", 2, None),
        ("node 2's certificate, claiming node 3", 3, Some(ca.node(2))),
        ("a certificate naming no node", 3, Some(ca.tls(&ca.issue_names(&["node-x", "localhost"])))),
    ];
    for (what, id, tls) in intruders {
        let intruder = send_for_a_while(&rt, id, tls, &t.transport).await;
        let stats = intruder.peer_stats(1).expect("peer");
        assert_eq!(stats.connects, 0, "{what}: connected: {stats:?}");
        assert_eq!(t.delivered.load(Ordering::Relaxed), 0, "{what}: a message was delivered");
        intruder.shutdown().await;
    }
    // The listener still serves its members.
    member_delivers(&rt, &ca, &t).await;
    t.transport.shutdown().await;
}

/// A TLS config holding `cert` (of another CA) but trusting the cluster's CA.
fn tls_trusting(ca: &Ca, cert: &NodeCert) -> TlsConfig {
    TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), ca.pem().as_bytes()).expect("config")
}

async fn a_tls_node_delivers_nothing_to_a_plaintext_node<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let t = target(&rt, None).await;
    let tls_node = send_for_a_while(&rt, 2, Some(ca.node(2)), &t.transport).await;
    assert_eq!(tls_node.peer_stats(1).expect("peer").connects, 0);
    assert_eq!(t.delivered.load(Ordering::Relaxed), 0);
    tls_node.shutdown().await;
    t.transport.shutdown().await;
}

/// Reads until `s` is closed (end of stream or an error); fails after `limit`.
async fn closed_within<R: TcpRuntime, S: AsyncRead + Unpin>(rt: &R, s: &mut S, limit: Duration, what: &str) {
    let mut buf = [0u8; 512];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    assert!(rt.timeout(limit, read).await.is_some(), "{what}: the connection stayed open for {limit:?}");
}

/// A TLS client session to node 1 with `cert`, made by hand.
async fn tls_session<R: TcpRuntime>(
    rt: &R,
    ca: &Ca,
    cert: &NodeCert,
    addr: std::net::SocketAddr,
) -> futures_rustls::client::TlsStream<R::Stream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA pem")).expect("root");
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("chain");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    let connector = futures_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(node_name(1)).expect("name");
    connector.connect(name, raw_connect(rt, addr).await).await.expect("TLS handshake")
}

async fn garbage_and_stalls_close_only_their_connection<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let t = target(&rt, Some(ca.node(1))).await;
    let addr = t.transport.local_addr();
    let timeout = t.transport.config().handshake_timeout;

    // A handshake that stalls in the middle of the TLS handshake: closed after the
    // handshake timeout, while the listener serves others.
    let mut stalled = raw_connect(&rt, addr).await;
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).await.expect("write");

    // Garbage instead of a TLS handshake: closed at once.
    let mut s = raw_connect(&rt, addr).await;
    s.write_all(&[0xAB; 64]).await.expect("write");
    closed_within(&rt, &mut s, Duration::from_millis(200), "garbage before TLS").await;

    // Inside a valid session: garbage instead of a hello.
    let cert = ca.issue(2);
    let mut s = tls_session(&rt, &ca, &cert, addr).await;
    s.write_all(&[0xAB; 64]).await.expect("write");
    s.flush().await.expect("flush");
    closed_within(&rt, &mut s, Duration::from_millis(500), "garbage instead of a hello").await;

    // Inside a valid session: a valid hello, then a frame that does not decode.
    let mut s = tls_session(&rt, &ca, &cert, addr).await;
    let hello = Hello { version: PROTOCOL_VERSION, cluster_id: CLUSTER, from: 2, to: 1, incarnation: 0 };
    s.write_all(&hello.encode()).await.expect("hello");
    s.flush().await.expect("flush");
    let mut reply = [0u8; REPLY_LEN];
    s.read_exact(&mut reply).await.expect("reply");
    codec::decode_reply(&reply).expect("accepted");
    let mut frame = Vec::new();
    codec::encode_payload(&[0xff; 40], 1 << 20, &mut frame).expect("frame");
    s.write_all(&frame).await.expect("garbage frame");
    s.flush().await.expect("flush");
    closed_within(&rt, &mut s, Duration::from_millis(500), "garbage after the hello").await;

    // Meanwhile, and after it all, the listener serves its members.
    member_delivers(&rt, &ca, &t).await;
    closed_within(&rt, &mut stalled, timeout * 3, "a stalled TLS handshake").await;
    member_delivers(&rt, &ca, &t).await;
    t.transport.shutdown().await;
}

#[cfg(feature = "tokio")]
mod on_tokio {
    use raft::runtime::TokioRuntime;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_cluster_elects_and_commits_on_tokio() {
        super::tls_cluster_elects_and_commits(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn intruders_deliver_nothing_and_members_still_do_on_tokio() {
        super::intruders_deliver_nothing_and_members_still_do(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_node_delivers_nothing_to_a_plaintext_node_on_tokio() {
        super::a_tls_node_delivers_nothing_to_a_plaintext_node(TokioRuntime::new()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_and_stalls_close_only_their_connection_on_tokio() {
        super::garbage_and_stalls_close_only_their_connection(TokioRuntime::new()).await;
    }
}

#[cfg(feature = "smol")]
mod on_smol {
    use raft::runtime::SmolRuntime;

    #[test]
    fn tls_cluster_elects_and_commits_on_smol() {
        smol::block_on(super::tls_cluster_elects_and_commits(SmolRuntime::new()));
    }

    #[test]
    fn intruders_deliver_nothing_and_members_still_do_on_smol() {
        smol::block_on(super::intruders_deliver_nothing_and_members_still_do(SmolRuntime::new()));
    }

    #[test]
    fn a_tls_node_delivers_nothing_to_a_plaintext_node_on_smol() {
        smol::block_on(super::a_tls_node_delivers_nothing_to_a_plaintext_node(SmolRuntime::new()));
    }

    #[test]
    fn garbage_and_stalls_close_only_their_connection_on_smol() {
        smol::block_on(super::garbage_and_stalls_close_only_their_connection(SmolRuntime::new()));
    }
}

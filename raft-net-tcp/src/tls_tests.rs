//! Both sides of one connection between two configurations, and the typed error each
//! side ends with: every refusal of the TLS layer and of the hello that follows it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::io::AsyncWriteExt;
use rustls::{CertificateError, Error as RustlsError};

use super::*;
use crate::codec::HelloStatus;
use crate::error::HandshakeError;
use crate::outbound::PeerQueue;
use crate::rt::TcpRuntime;
use crate::transport::{Deliver, Shared};
use crate::TcpConfig;

#[path = "../tests/it/certs.rs"]
mod certs;
use certs::Ca;

const CLUSTER: u64 = 0x7157;

fn config(id: NodeId, tls: Option<TlsConfig>) -> TcpConfig {
    let mut c = TcpConfig::new(CLUSTER, id);
    c.handshake_timeout = Duration::from_millis(500);
    c.tls = tls;
    c
}

/// The result of each side of one connection.
struct Outcome {
    client: Result<(), ConnectionError>,
    server: Result<(), ConnectionError>,
}

/// Node `client.node_id` connects to reach node `to`, served by a listener with
/// `server`'s configuration that knows `peers`.
async fn connect_once<R: TcpRuntime>(
    rt: &R,
    client: TcpConfig,
    to: NodeId,
    server: TcpConfig,
    peers: &[NodeId],
) -> Outcome {
    let listener = rt.bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
    let addr = R::local_addr(&listener).expect("local addr");
    let peers = peers.iter().map(|&id| (id, Arc::new(PeerQueue::new(id, addr)))).collect::<HashMap<_, _>>();
    let shared = Shared { config: server, peers: Mutex::new(peers) };
    let deliver: Deliver = Arc::new(|_| {});
    let server_side = async {
        let (tcp, from) = R::accept(&listener).await.expect("accept");
        crate::inbound::serve(rt, &shared, tcp, from, &deliver).await
    };
    // On success the stream is dropped at once, which ends the server's read loop.
    let client_side = async { crate::outbound::connect(rt, &client, to, addr).await.map(drop) };
    let (server, client) = futures::join!(server_side, client_side);
    eprintln!("client: {client:?}\nserver: {server:?}");
    Outcome { client, server }
}

fn refused_certificate(r: &Result<(), ConnectionError>) -> Option<&CertificateError> {
    match r {
        Err(ConnectionError::Tls { source: TlsError::Refused(RustlsError::InvalidCertificate(e)), .. }) => Some(e),
        _ => None,
    }
}

fn is_tls_error(r: &Result<(), ConnectionError>) -> bool {
    matches!(r, Err(ConnectionError::Tls { .. }))
}

async fn members_with_certificates_from_the_ca_connect<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let o = connect_once(&rt, config(2, Some(ca.node(2))), 1, config(1, Some(ca.node(1))), &[2, 3]).await;
    assert!(o.client.is_ok() && o.server.is_ok());
}

async fn a_certificate_from_another_ca_is_refused<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let other = Ca::new("other");
    // The intruder trusts the cluster's CA, so the server is the one that refuses.
    let cert = other.issue(2);
    let intruder =
        TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), ca.pem().as_bytes()).expect("config");
    let o = connect_once(&rt, config(2, Some(intruder)), 1, config(1, Some(ca.node(1))), &[2]).await;
    assert!(matches!(refused_certificate(&o.server), Some(CertificateError::UnknownIssuer)), "{:?}", o.server);
    assert!(is_tls_error(&o.client), "{:?}", o.client);

    // A node of another cluster's CA refuses the server's certificate in turn.
    let o = connect_once(&rt, config(2, Some(other.node(2))), 1, config(1, Some(ca.node(1))), &[2]).await;
    assert!(matches!(refused_certificate(&o.client), Some(CertificateError::UnknownIssuer)), "{:?}", o.client);
    assert!(is_tls_error(&o.server), "{:?}", o.server);
}

async fn an_expired_certificate_is_refused<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let o =
        connect_once(&rt, config(2, Some(ca.tls(&ca.issue_expired(2)))), 1, config(1, Some(ca.node(1))), &[2]).await;
    assert!(
        matches!(
            refused_certificate(&o.server),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ),
        "{:?}",
        o.server
    );
    assert!(is_tls_error(&o.client), "{:?}", o.client);

    // An expired server certificate is refused by the connecting node.
    let o =
        connect_once(&rt, config(2, Some(ca.node(2))), 1, config(1, Some(ca.tls(&ca.issue_expired(1)))), &[2]).await;
    assert!(
        matches!(
            refused_certificate(&o.client),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ),
        "{:?}",
        o.client
    );
}

async fn a_plaintext_client_on_a_tls_port_is_refused_at_once<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let start = std::time::Instant::now();
    let o = connect_once(&rt, config(2, None), 1, config(1, Some(ca.node(1))), &[2]).await;
    assert!(start.elapsed() < Duration::from_millis(400), "took {:?}: not refused at once", start.elapsed());
    assert!(
        matches!(o.server, Err(ConnectionError::Tls { source: TlsError::Refused(RustlsError::InvalidMessage(_)), .. })),
        "{:?}",
        o.server
    );
    assert!(
        matches!(o.client, Err(ConnectionError::Handshake { source: HandshakeError::PeerExpectsTls, .. })),
        "{:?}",
        o.client
    );
}

async fn a_tls_client_on_a_plaintext_port_is_refused<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let o = connect_once(&rt, config(2, Some(ca.node(2))), 1, config(1, None), &[2]).await;
    assert!(
        matches!(o.server, Err(ConnectionError::Handshake { source: HandshakeError::PeerSentTls, .. })),
        "{:?}",
        o.server
    );
    assert!(matches!(o.client, Err(ConnectionError::Tls { source: TlsError::Closed, .. })), "{:?}", o.client);
}

async fn a_member_cannot_claim_another_members_id<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    // Node 2's valid certificate, and a hello from node 3.
    let o = connect_once(&rt, config(3, Some(ca.node(2))), 1, config(1, Some(ca.node(1))), &[2, 3]).await;
    assert!(
        matches!(o.server, Err(ConnectionError::Handshake { source: HandshakeError::NotCertified { claimed: 3 }, .. })),
        "{:?}",
        o.server
    );
    assert!(
        matches!(
            o.client,
            Err(ConnectionError::Handshake { source: HandshakeError::Refused(HelloStatus::NotCertified), .. })
        ),
        "{:?}",
        o.client
    );
}

async fn a_server_must_be_the_node_the_client_meant_to_reach<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    // The listener holds node 5's certificate; node 2 means to reach node 1.
    let o = connect_once(&rt, config(2, Some(ca.node(2))), 1, config(1, Some(ca.node(5))), &[2]).await;
    assert!(
        matches!(
            refused_certificate(&o.client),
            Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
        ),
        "{:?}",
        o.client
    );
    assert!(is_tls_error(&o.server), "{:?}", o.server);
}

async fn a_stalled_tls_handshake_times_out<R: TcpRuntime>(rt: R) {
    let ca = Ca::new("cluster");
    let listener = rt.bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
    let addr = R::local_addr(&listener).expect("local addr");
    let shared = Shared { config: config(1, Some(ca.node(1))), peers: Mutex::new(HashMap::new()) };
    let deliver: Deliver = Arc::new(|_| {});
    let mut tcp = rt.connect(addr, None).await.expect("connect");
    // The start of a TLS record announcing 512 bytes, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.expect("write");
    let (server_tcp, from) = R::accept(&listener).await.expect("accept");
    let start = std::time::Instant::now();
    let r = crate::inbound::serve(&rt, &shared, server_tcp, from, &deliver).await;
    assert!(matches!(r, Err(ConnectionError::Tls { source: TlsError::Timeout, .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    drop(tcp);
}

#[test]
fn unreadable_or_invalid_pem_is_a_typed_error() {
    let ca = Ca::new("cluster");
    let cert = ca.issue(1);
    let (c, k, a) = (cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), ca.pem().as_bytes());
    assert!(TlsConfig::from_pem(c, k, a).is_ok());
    assert!(matches!(TlsConfig::from_pem(b"", k, a), Err(TlsConfigError::Missing { what: "certificate" })));
    assert!(matches!(TlsConfig::from_pem(c, c, a), Err(TlsConfigError::Missing { what: "private key" })));
    assert!(matches!(TlsConfig::from_pem(c, k, k), Err(TlsConfigError::Missing { what: "CA certificate" })));
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    assert!(matches!(TlsConfig::from_pem(broken.as_bytes(), k, a), Err(TlsConfigError::Pem { .. })));
    // A key that is not the certificate's.
    let other = ca.issue(1);
    assert!(matches!(TlsConfig::from_pem(c, other.key_pem.as_bytes(), a), Err(TlsConfigError::Invalid(_))));
    let missing = TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem", "/nonexistent/ca.pem");
    assert!(matches!(missing, Err(TlsConfigError::Read { what: "certificate", .. })), "{missing:?}");

    let dir = std::env::temp_dir().join(format!("raft-net-tcp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, body) in [("cert.pem", c), ("key.pem", k), ("ca.pem", a)] {
        std::fs::write(dir.join(name), body).expect("write");
    }
    let from_files = TlsConfig::from_pem_files(dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(from_files.is_ok(), "{from_files:?}");
}

#[test]
fn a_certificate_names_only_its_own_node() {
    let ca = Ca::new("cluster");
    let cert = ca.issue(7);
    let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("pem");
    let cert = PeerCertificate(der);
    assert!(cert.names(7));
    assert!(!cert.names(70));
    assert!(!cert.names(1));
    assert!(!PeerCertificate(CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).names(7));
}

macro_rules! on_runtimes {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "tokio")]
        mod on_tokio {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(raft::runtime::TokioRuntime::new()).await;
                }
            )*
        }
        #[cfg(feature = "smol")]
        mod on_smol {
            $(
                #[test]
                fn $name() {
                    smol::block_on(super::$name(raft::runtime::SmolRuntime::new()));
                }
            )*
        }
    };
}

on_runtimes!(
    members_with_certificates_from_the_ca_connect,
    a_certificate_from_another_ca_is_refused,
    an_expired_certificate_is_refused,
    a_plaintext_client_on_a_tls_port_is_refused_at_once,
    a_tls_client_on_a_plaintext_port_is_refused,
    a_member_cannot_claim_another_members_id,
    a_server_must_be_the_node_the_client_meant_to_reach,
    a_stalled_tls_handshake_times_out,
);

//! A `kv` cluster with mutual TLS between the nodes and HTTPS for the API (certificates
//! from the launcher's throwaway CA): it serves writes and linearizable reads over
//! HTTPS, a plaintext HTTP request gets no answer, and a process that speaks the
//! plaintext Raft protocol with the right cluster id cannot change any node's term or
//! log. The same intrusion against a plaintext cluster does change the term, which
//! shows that the intruder's messages are ones a node would act on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use raft::{Message, MessageBody};
use raft_examples::apps::kv::KvApp;
use raft_examples::host::App;
use raft_examples::launch::certs::ClusterCerts;
use raft_examples::launch::{client, Spec};
use raft_net_tcp::codec::{self, Hello, PROTOCOL_VERSION};

use crate::support::{wait_until, Cluster, PATIENCE};

const KV: &str = env!("CARGO_BIN_EXE_kv");

/// Each node's term and last log index.
fn terms_and_logs(c: &Cluster) -> Vec<(u64, u64)> {
    (0..c.nodes.len())
        .map(|i| {
            let s = c.status(i).unwrap_or_else(|| panic!("node {} answers /status", i + 1));
            (s["term"].as_u64().expect("term"), s["last_log_index"].as_u64().expect("last_log_index"))
        })
        .collect()
}

/// Connects to follower `f`'s Raft port in plaintext as the leader `leader_id`, with the
/// kv cluster id, and sends AppendEntries and a vote request from a term far ahead.
/// Returns whether the node answered the hello with an accepting reply.
/// The intruder first reads the leader's data-directory incarnation from the reply the
/// leader sends to a hello claiming to be `f` (a refusal, which still carries it), so that
/// the follower's incarnation check does not stop it: that check guards against wiped
/// nodes, not against intruders.
fn plaintext_intrusion(c: &Cluster, leader_id: u64, f: usize) -> bool {
    let target = c.nodes[f].id;
    let term = c.status(f).expect("status")["term"].as_u64().expect("term") + 100;
    let leader = c.nodes.iter().find(|m| m.id == leader_id).expect("the leader");
    let mut probe = TcpStream::connect(leader.raft).expect("connect to the leader's Raft port");
    probe.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let hello =
        Hello { version: PROTOCOL_VERSION, cluster_id: KvApp::CLUSTER_ID, from: target, to: leader_id, incarnation: 0 };
    let _ = probe.write_all(&hello.encode());
    let mut reply = [0u8; codec::REPLY_LEN];
    let incarnation = match probe.read_exact(&mut reply) {
        Ok(()) => u64::from_be_bytes(reply[8..16].try_into().expect("eight bytes")),
        Err(_) => 0,
    };
    let mut s = TcpStream::connect(c.nodes[f].raft).expect("connect to the Raft port");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let hello =
        Hello { version: PROTOCOL_VERSION, cluster_id: KvApp::CLUSTER_ID, from: leader_id, to: target, incarnation };
    let _ = s.write_all(&hello.encode());
    let mut frames = Vec::new();
    for body in [
        MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, entries: Vec::new(), leader_commit: 0 },
        MessageBody::RequestVote { last_log_index: 1 << 40, last_log_term: term, transfer: false },
    ] {
        let m = Message { from: leader_id, to: target, term, body };
        codec::encode_frame(&m, 1 << 20, &mut frames).expect("frame");
    }
    let _ = s.write_all(&frames);
    let mut reply = [0u8; codec::REPLY_LEN];
    let accepted = s.read_exact(&mut reply).is_ok() && codec::decode_reply(&reply).is_ok();
    // Give the node time to act on whatever it took in.
    std::thread::sleep(Duration::from_millis(500));
    accepted
}

fn tls_spec(certs: &ClusterCerts) -> Spec {
    let mut spec = Spec::app(KV, 3);
    spec.https = Some(certs.https_trust().expect("trust"));
    let certs = certs.clone();
    spec.extra_args = std::sync::Arc::new(move |id| certs.node_args(id));
    spec
}

#[test]
fn a_tls_cluster_serves_https_and_ignores_plaintext_peers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = ClusterCerts::generate(dir.path(), &[1, 2, 3], &[]).expect("certificates");
    let c = Cluster::start_spec(tls_spec(&certs));
    let l = c.wait_leader(None);

    // Writes through every node, each read back linearizably through the next.
    for i in 0..12usize {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        c.put(i % 3, &key, value.as_bytes());
        assert_eq!(c.get((i + 1) % 3, &key).as_deref(), Some(value.as_bytes()));
    }

    // The API speaks only HTTPS.
    let plain = client::request(&c.nodes[0].http.to_string(), "GET", "/status", None, Duration::from_secs(2));
    assert_ne!(plain.status, 200, "a plaintext request was answered: {}", plain.text());

    // A plaintext Raft peer with the right cluster id, posing as the leader.
    let f = (l + 1) % 3;
    let before = terms_and_logs(&c);
    assert!(!plaintext_intrusion(&c, c.nodes[l].id, f), "a TLS node accepted a plaintext hello");
    let after = terms_and_logs(&c);
    assert_eq!(after, before, "the intruder changed a term or a log");
    let log = std::fs::read_to_string(&c.nodes[f].log).expect("log");
    assert!(log.contains("TLS"), "the refusal is logged with its reason:\n{log}");

    // The cluster still serves.
    c.put(f, "after", b"intrusion");
    assert_eq!(c.get(l, "after").as_deref(), Some(&b"intrusion"[..]));
}

#[test]
fn the_same_intrusion_moves_a_plaintext_clusters_term() {
    let c = Cluster::start(KV, 3, |_| Vec::new());
    let l = c.wait_leader(None);
    c.put(l, "k", b"v");
    let f = (l + 1) % 3;
    let before = terms_and_logs(&c)[f].0;
    assert!(plaintext_intrusion(&c, c.nodes[l].id, f), "the plaintext node accepted the hello");
    wait_until("the follower to take the intruder's term", PATIENCE, || {
        (c.status(f)?["term"].as_u64()? >= before + 100).then_some(())
    });
}

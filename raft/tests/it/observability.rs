//! What a real three-node cluster tells an operator as it works, on every runtime:
//! - the driver's latency histograms ([`raft::Latencies`]) fill: every node times its
//!   store writes and applies; the leader times each write's commit, each read-index
//!   round and its heartbeats to both peers;
//! - with `raft=debug` tracing, a proposal's path from its request span through append,
//!   commit and apply to its answer can be followed by its index.
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::testing::helpers::{start_counter_node as start, wait_for_leader};
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{Raft, Runtime};

const WRITES: u64 = 40;
const READS: u64 = 5;

async fn latencies_fill_as_the_cluster_works<R: Runtime>(rt: R) {
    let net = MemNetwork::new(rt.clone(), 21);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(start(&rt, &net, id, MemStore::new(), true).await));
    }
    let l = wait_for_leader(nodes.iter().flatten()).await;
    let before = l.metrics().latencies;
    for _ in 0..WRITES {
        l.propose(1).await.expect("a write commits");
    }
    for _ in 0..READS {
        assert_eq!(l.read(|c| c.0).await, Ok(WRITES));
    }
    let commit = l.status().commit_index;
    for n in nodes.iter().flatten() {
        n.wait_applied(commit, Duration::from_secs(10)).await.expect("every node applies the writes");
    }
    // Heartbeats go out every interval; wait for a few to each peer to come back.
    let peers: Vec<_> = nodes.iter().flatten().map(Raft::id).filter(|&id| id != l.id()).collect();
    let deadline = rt.now().add(Duration::from_secs(10));
    loop {
        let rtt = l.metrics().latencies.peer_rtt;
        if peers.iter().all(|p| rtt.get(p).is_some_and(|h| h.count() >= 3)) {
            break;
        }
        assert!(rt.now() < deadline, "no heartbeat round trips timed to {peers:?}: {rtt:?}");
        rt.sleep(Duration::from_millis(20)).await;
    }

    let after = l.metrics().latencies;
    let commits = after.commit.since(&before.commit);
    assert!(commits.count() >= WRITES, "one commit sample per entry appended: {commits:?}");
    let reads = after.read_index.since(&before.read_index);
    assert!(reads.count() >= READS, "one sample per read-index round: {reads:?}");
    assert!(commits.quantile(0.5) < 10_000_000, "a commit in memory takes well under 10 s: {commits:?}");
    for n in nodes.iter().flatten() {
        let m = n.metrics().latencies;
        assert!(m.log_write.count() > 0, "node {} timed its store writes", n.id());
        assert!(m.log_write_entries.sum() >= WRITES, "node {} wrote every entry: {:?}", n.id(), m.log_write_entries);
        assert!(m.apply.count() > 0, "node {} timed its applies", n.id());
        if n.id() != l.id() {
            assert!(m.commit.count() == 0 && m.peer_rtt.is_empty(), "only the leader times commits and peers");
        }
    }
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latencies_fill_as_the_cluster_works_on_tokio() {
    latencies_fill_as_the_cluster_works(raft::runtime::TokioRuntime::new()).await;
}

#[cfg(feature = "smol")]
#[test]
fn latencies_fill_as_the_cluster_works_on_smol() {
    smol::block_on(latencies_fill_as_the_cluster_works(raft::runtime::SmolRuntime::new()));
}

/// Log lines written by the tracing subscriber, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The number after `name=` in `line`.
fn field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_tracing_follows_a_forwarded_proposal_from_request_to_answer() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("raft=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Each test runs in a process of its own under nextest; the global default reaches
    // the runtime's worker threads.
    let _ = tracing::subscriber::set_global_default(subscriber);

    let rt = raft::runtime::TokioRuntime::new();
    let net = MemNetwork::new(rt.clone(), 5);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(start(&rt, &net, id, MemStore::new(), true).await));
    }
    let l = wait_for_leader(nodes.iter().flatten()).await;
    let follower = nodes.iter().flatten().find(|n| n.id() != l.id()).unwrap().clone();
    follower.propose(7).await.expect("a forwarded write commits");
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let f = follower.id();
    let span = format!("propose{{node={f} index=");
    let lines: Vec<&str> = text.lines().collect();
    let forwarded = lines
        .iter()
        .position(|l| l.contains(&format!("propose{{node={f}")) && l.contains("forwarded to the leader"))
        .unwrap_or_else(|| panic!("no forward traced in the request span:\n{text}"));
    let appended = lines
        .iter()
        .position(|l| l.contains(&span) && l.contains("appended to the leader's log"))
        .unwrap_or_else(|| panic!("no append traced with the index on the span:\n{text}"));
    let index = field(lines[appended], "index").expect("the index");
    let node_span = format!("raft_node{{node={f}}}");
    let committed = lines
        .iter()
        .position(|l| l.contains(&node_span) && l.contains("committed") && field(l, "commit") >= Some(index))
        .unwrap_or_else(|| panic!("node {f} traced no commit of index {index}:\n{text}"));
    let applied = lines
        .iter()
        .position(|l| l.contains(&node_span) && l.contains("applied") && field(l, "applied") >= Some(index))
        .unwrap_or_else(|| panic!("node {f} traced no apply of index {index}:\n{text}"));
    let answered = lines
        .iter()
        .position(|l| l.contains(&format!("propose{{node={f} index={index}}}")) && l.contains("answered ok=true"))
        .unwrap_or_else(|| panic!("no answer traced for index {index}:\n{text}"));
    assert!(forwarded < appended && appended < answered, "request events in order:\n{text}");
    assert!(committed < answered && applied < answered, "commit and apply before the answer:\n{text}");
}

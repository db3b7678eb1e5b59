//! Three real `Raft` nodes on `FileStore`s, on tokio and on smol: they commit, a node is
//! stopped, its directory reopened, and it catches up from what it had on disk.

use std::path::Path;
use std::time::Duration;

use raft::testing::helpers::{start_counter_node, wait_for, wait_for_leader, Counter};
use raft::testing::mem_network::MemNetwork;
use raft::{NodeId, Raft, Runtime};
use raft_store_file::{FileStore, FileStoreError, FileStoreOptions};

/// Opens the store of a node; after a shutdown the old store may take a moment to be
/// dropped by the persist task, so a held lock is retried.
async fn open_store<R: Runtime>(rt: &R, dir: &Path) -> FileStore {
    let opts = FileStoreOptions { cluster_id: 1, segment_size: 16 << 10, ..Default::default() };
    for _ in 0..500 {
        match FileStore::open(dir, opts.clone()) {
            Ok(s) => return s,
            Err(FileStoreError::Locked { .. }) => rt.sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    }
    panic!("the store in {} stayed locked", dir.display());
}

async fn start<R: Runtime>(rt: &R, net: &MemNetwork<R>, id: NodeId, dir: &Path, bootstrap: bool) -> Raft<Counter> {
    let store = open_store(rt, dir).await;
    start_counter_node(rt, net, id, store, bootstrap).await
}

async fn cluster_on_file_stores<R: Runtime>(rt: R) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let net = MemNetwork::new(rt.clone(), 5);
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        nodes.push(Some(start(&rt, &net, id, dirs[id as usize - 1].path(), true).await));
    }
    let l = wait_for_leader(nodes.iter().flatten()).await;
    for i in 1..=200 {
        assert_eq!(l.propose(1).await, Ok(i));
    }
    // A follower is stopped, misses writes, and restarts from its directory.
    let f = nodes.iter().flatten().find(|n| n.id() != l.id()).expect("a follower").id();
    net.unregister(f);
    if let Some(n) = nodes[f as usize - 1].take() {
        n.shutdown().await;
    }
    for _ in 0..100 {
        l.propose(2).await.expect("commit with two nodes");
    }
    nodes[f as usize - 1] = Some(start(&rt, &net, f, dirs[f as usize - 1].path(), false).await);
    wait_for(&rt, "the restarted node to catch up", || {
        nodes[f as usize - 1].as_ref().is_some_and(|n| n.read_local_stale(|c| c.0) == 400)
    })
    .await;
    for n in nodes.iter().flatten() {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_file_stores_on_tokio() {
    cluster_on_file_stores(raft::runtime::TokioRuntime::new()).await;
}

#[test]
fn three_nodes_on_file_stores_on_smol() {
    smol::block_on(cluster_on_file_stores(raft::runtime::SmolRuntime::new()));
}

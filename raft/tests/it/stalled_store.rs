//! Where a store's writes run. A store whose calls block its thread
//! (`LogStore::blocks_thread`) has a follower's writes run on the runtime worker that
//! runs its store task, and a leader's on a blocking thread: a leader whose disk stalls
//! must keep its heartbeats going, even on a runtime with a single worker.
#![cfg(all(feature = "testing", feature = "tokio"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use raft::runtime::TokioRuntime;
use raft::testing::helpers::{start_counter_node as start, wait_for_leader};
use raft::testing::mem_network::MemNetwork;
use raft::testing::mem_store::MemStore;
use raft::{Entry, HardState, InitialState, LogId, LogIndex, LogStore, SnapshotStore, StoreError};

/// The in-memory store, saying that it blocks its thread, and stalling its thread (a
/// synchronous sleep, like a disk that stops answering) on every append while `stall_ms`
/// is non-zero.
struct StallingStore {
    inner: MemStore,
    stall_ms: Arc<AtomicU64>,
}

#[async_trait]
impl LogStore for StallingStore {
    fn blocks_thread(&self) -> bool {
        true
    }

    async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
        self.inner.initial_state().await
    }

    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.inner.save_hard_state(hs).await
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let ms = self.stall_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        self.inner.append(entries).await
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
        self.inner.truncate(from).await
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
        self.inner.purge(upto).await
    }

    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
        self.inner.entries(start, end).await
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.inner.snapshots()
    }

    async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
        self.inner.reset_to(snapshot).await
    }
}

/// Each node on a tokio runtime of its own with a single worker; the network and the
/// test on a fourth.
#[test]
fn a_leader_whose_disk_stalls_keeps_leading_on_a_single_worker() {
    let runtimes: Vec<tokio::runtime::Runtime> = (0..4)
        .map(|_| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
        .collect();
    let rt = |i: usize| TokioRuntime::from_handle(runtimes[i].handle().clone());
    runtimes[3].block_on(async {
        let net = MemNetwork::new(rt(3), 11);
        let stalls: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let store = StallingStore { inner: MemStore::new(), stall_ms: stalls[id as usize - 1].clone() };
            nodes.push(Some(start(&rt(id as usize - 1), &net, id, store, true).await));
        }
        let l = wait_for_leader(nodes.iter().flatten()).await;
        assert_eq!(l.propose(1).await, Ok(1));
        let term = l.status().term;

        // The leader's disk stops answering for far longer than an election timeout (at
        // most 300 ms): its writes wait, and its heartbeats must not.
        stalls[l.id() as usize - 1].store(1_500, Ordering::SeqCst);
        let stuck = {
            let l = l.clone();
            tokio::spawn(async move { l.propose(1).await })
        };
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        for n in nodes.iter().flatten() {
            assert_eq!(n.status().term, term, "node {} saw an election while the leader's disk stalled", n.id());
        }
        assert_eq!(l.status().role, raft::Role::Leader);
        stalls[l.id() as usize - 1].store(0, Ordering::SeqCst);
        // The stalled write still commits once the disk answers.
        assert_eq!(stuck.await.expect("the proposal task"), Ok(2));
        for n in nodes.iter().flatten() {
            n.shutdown().await;
        }
    });
}

//! Quick three-node smoke test on tokio with trivial in-test store and network.
#![cfg(feature = "tokio")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use raft::runtime::TokioRuntime;
use raft::*;

#[derive(Default)]
struct Counter(u64);
impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;
    fn apply(&mut self, _i: LogIndex, c: u64) -> u64 {
        self.0 += c;
        self.0
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, _s: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Default)]
struct VecStore {
    hs: HardState,
    log: Vec<Entry>,
}
#[async_trait]
impl LogStore for VecStore {
    async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
        let last = self.log.last().map(|e| LogId { term: e.term, index: e.index }).unwrap_or_default();
        Ok(InitialState { hard_state: self.hs, prev: LogId::default(), last })
    }
    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.hs = *hs;
        Ok(())
    }
    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        assert_eq!(entries[0].index, self.log.len() as u64 + 1);
        self.log.extend_from_slice(entries);
        Ok(())
    }
    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
        self.log.truncate(from as usize - 1);
        Ok(())
    }
    async fn purge(&mut self, _upto: LogIndex) -> Result<(), StoreError> {
        Ok(())
    }
    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
        Ok(self.log[start as usize - 1..end as usize - 1].to_vec())
    }
}

type Router = Arc<Mutex<BTreeMap<NodeId, Raft<Counter>>>>;
struct Net(Router);
#[async_trait]
impl Network for Net {
    async fn send(&self, to: NodeId, msg: Message) -> Result<(), NetworkError> {
        let r = self.0.lock().unwrap().get(&to).cloned();
        if let Some(r) = r {
            r.receive(msg)
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_and_commit() {
    let router: Router = Default::default();
    for id in 1..=3 {
        let r = Raft::bootstrap(
            id,
            [1, 2, 3],
            Config::default(),
            TokioRuntime::new(),
            VecStore::default(),
            Net(router.clone()),
            Counter::default(),
        )
        .await
        .unwrap();
        router.lock().unwrap().insert(id, r);
    }
    let nodes: Vec<Raft<Counter>> = router.lock().unwrap().values().cloned().collect();
    let leader = loop {
        if let Some(l) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            break l.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for i in 1..=100u64 {
        assert_eq!(leader.propose(1).await.unwrap(), i);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in &nodes {
        assert_eq!(n.read_local_stale(|c| c.0), 100, "node {} applied all", n.id());
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

//! Small pieces shared by cluster tests on real runtimes: a counter state machine and
//! waiting helpers.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use super::mem_network::MemNetwork;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::state_machine::StateMachine;
use crate::storage::LogStore;
use crate::types::LogIndex;
use crate::types::NodeId;
use crate::Raft;
use crate::Role;

/// A replicated counter: each command adds to it and the response is the new value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter(pub u64);

impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;

    fn apply(&mut self, _index: LogIndex, delta: u64) -> u64 {
        self.0 = self.0.wrapping_add(delta);
        self.0
    }

    type Snapshot = u64;

    fn snapshot(&self) -> u64 {
        self.0
    }

    fn write_snapshot(value: u64, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&value.to_le_bytes())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), String> {
        let mut data = Vec::new();
        input.read_to_end(&mut data).map_err(|e| e.to_string())?;
        let bytes: [u8; 8] = data.try_into().map_err(|_| "counter snapshot must be 8 bytes".to_string())?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Polls `f` every 10 ms until it holds; panics naming `what` after 10 s.
pub async fn wait_for<R: Runtime>(rt: &R, what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        rt.sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The running node that reports itself leader, if any.
pub fn leader<SM: StateMachine>(nodes: &[Option<Raft<SM>>]) -> Option<Raft<SM>> {
    nodes.iter().flatten().find(|n| n.status().role == Role::Leader).cloned()
}

/// Waits, as [`wait_for`] does, until a running node reports itself leader, and returns
/// it.
pub async fn wait_for_leader<R: Runtime, SM: StateMachine>(rt: &R, nodes: &[Option<Raft<SM>>]) -> Raft<SM> {
    wait_for(rt, "a leader", || leader(nodes).is_some()).await;
    leader(nodes).expect("a leader was seen")
}

/// Starts node `id` of a counter cluster with members 1..=3 on `store`, reachable
/// through `net`: bootstraps a new member, or restarts from what the store holds.
/// Panics if the node cannot start (this is test support).
pub async fn start_counter_node<R: Runtime, S: LogStore>(
    rt: &R,
    net: &MemNetwork<R>,
    id: NodeId,
    store: S,
    bootstrap: bool,
) -> Raft<Counter> {
    let config = Config::default();
    let raft = if bootstrap {
        Raft::bootstrap(id, [1, 2, 3], config, rt.clone(), store, net.endpoint(id), Counter::default()).await
    } else {
        Raft::restart(id, config, rt.clone(), store, net.endpoint(id), Counter::default()).await
    }
    .unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
    let handle = raft.clone();
    net.register(id, Arc::new(move |m| handle.receive(m)));
    raft
}

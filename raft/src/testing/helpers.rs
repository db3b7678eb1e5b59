//! Small pieces shared by cluster tests on real runtimes: a counter state machine and
//! waiting helpers.
//!
//! A wait for a node's [`Status`](crate::Status) (its role, known leader, applied index,
//! term, ...) goes through the node's own wait helpers ([`Raft::wait_for`],
//! [`Raft::wait_leader`], [`Raft::wait_applied`], [`Raft::wait_role`]) with
//! [`WAIT_TIMEOUT`]; they wake on each status change instead of polling.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;

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

/// How long the waiting helpers, and the tests' waits on a node's status, wait before
/// failing.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `f` every 10 ms until it holds; panics naming `what` after [`WAIT_TIMEOUT`].
///
/// For conditions that are not on a node's status (a state machine's value, a network
/// counter). A condition on a node's [`Status`](crate::Status) waits with the node's own
/// helpers instead ([`Raft::wait_for`] and the others), which wake on each change.
pub async fn wait_for<R: Runtime>(rt: &R, what: &str, mut f: impl FnMut() -> bool) {
    const POLL: Duration = Duration::from_millis(10);
    for _ in 0..WAIT_TIMEOUT.as_millis() / POLL.as_millis() {
        if f() {
            return;
        }
        rt.sleep(POLL).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until one of `nodes` reports itself leader, and returns it: races the nodes'
/// [`Raft::wait_role`]`(Role::Leader)`, without polling, so it needs no runtime (the
/// nodes may even run on different ones). A node that stops meanwhile drops out of the
/// race. Panics if no node leads within [`WAIT_TIMEOUT`] (with every node's last status),
/// or if every node stopped.
pub async fn wait_for_leader<'a, SM: StateMachine>(nodes: impl IntoIterator<Item = &'a Raft<SM>>) -> Raft<SM> {
    let mut waits: Vec<_> = nodes
        .into_iter()
        .map(|n| Box::pin(async move { (n, n.wait_role(Role::Leader, WAIT_TIMEOUT).await) }))
        .collect();
    assert!(!waits.is_empty(), "waiting for a leader among no running node");
    let mut failures = Vec::new();
    while !waits.is_empty() {
        let ((node, result), _, rest) = select_all(waits).await;
        match result {
            Ok(_) => return node.clone(),
            Err(e) => failures.push(format!("node {}: {e}", node.id())),
        }
        waits = rest;
    }
    panic!("no leader: {}", failures.join("; "));
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

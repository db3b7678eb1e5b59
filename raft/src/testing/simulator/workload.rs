//! The workload: the simulated KV state machine [`SimKv`] and the client tasks that
//! write and read it concurrently, recording a history for the linearizability check.
//!
//! Each client has its own client session ([`crate::session`]): an operation that goes
//! through the log is request `seq` of it, and an attempt whose outcome is unclear (a
//! timeout, the node stopped) is retried under the same (client, seq), through any node,
//! so the operation is applied at most once (the checker fails a seed where an operation
//! is applied twice) and its caller learns its real result.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{self, Either};
use serde::{Deserialize, Serialize};

use super::cluster::ClusterState;
use super::History;
use crate::error::ClientError;
use crate::runtime::Runtime;
use crate::state_machine::StateMachine;
use crate::sync::lock;
use crate::testing::linearizability::{KvInput, KvOutput, Operation};
use crate::types::{Instant, LogIndex, NodeId};

/// A command of the simulated KV store. `op` identifies the client operation, so the
/// checker can tell which operation was applied at which index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// A unique operation id.
    pub op: u64,
    /// What to do.
    pub action: KvInput,
}

/// The record of what one node applied: `(index, op id)` in apply order.
pub type AppliedLog = Arc<Mutex<Vec<(LogIndex, u64)>>>;

/// The simulated KV state machine. It records every applied command for the checker.
#[derive(Debug)]
pub struct SimKv {
    map: BTreeMap<String, String>,
    applied: AppliedLog,
}

impl SimKv {
    /// An empty store recording into `applied`.
    pub fn new(applied: AppliedLog) -> Self {
        SimKv { map: BTreeMap::new(), applied }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.map.get(key)
    }
}

impl StateMachine for SimKv {
    type Command = KvCommand;
    type Response = KvOutput;

    fn apply(&mut self, index: LogIndex, cmd: KvCommand) -> KvOutput {
        lock(&self.applied).push((index, cmd.op));
        match cmd.action {
            KvInput::Put { key, value } => {
                self.map.insert(key, value);
                KvOutput::Ok
            }
            KvInput::Get { key } => KvOutput::Value(self.map.get(&key).cloned()),
            KvInput::Delete { key } => {
                self.map.remove(&key);
                KvOutput::Ok
            }
            KvInput::Cas { key, expected, new } => {
                let current = self.map.get(&key).cloned();
                if current == expected {
                    self.map.insert(key, new);
                    KvOutput::CasResult { ok: true, current: expected }
                } else {
                    KvOutput::CasResult { ok: false, current }
                }
            }
        }
    }

    type Snapshot = BTreeMap<String, String>;

    fn snapshot(&self) -> Self::Snapshot {
        self.map.clone()
    }

    fn write_snapshot(map: Self::Snapshot, out: &mut dyn Write) -> io::Result<()> {
        let data = postcard::to_allocvec(&map).map_err(io::Error::other)?;
        out.write_all(&data)
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), String> {
        let mut data = Vec::new();
        input.read_to_end(&mut data).map_err(|e| e.to_string())?;
        self.map = postcard::from_bytes(&data).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What the clients counted, for the run's report.
#[derive(Debug, Default)]
pub(super) struct ClientCounts {
    /// Operations with an attempt whose outcome was unclear, retried under the same
    /// (client, seq).
    pub(super) retried: AtomicUsize,
    /// Of those, the ones a later attempt answered.
    pub(super) resolved: AtomicUsize,
    /// Operations through [`crate::Raft::propose`] whose outcome stayed unclear (it
    /// retries by itself; the client does not).
    pub(super) node_unclear: AtomicUsize,
}

/// How long a client keeps trying one operation.
pub(super) const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

#[allow(clippy::too_many_arguments)]
pub(super) async fn client_task(
    state: Arc<ClusterState>,
    client: u64,
    mut op_id: u64,
    mut rng: fastrand::Rng,
    history: History,
    stop: Arc<AtomicBool>,
    counts: Arc<ClientCounts>,
) {
    let rt = state.sim.runtime();
    let session = crate::session::IMPLICIT | (client + 1);
    let mut target: NodeId = any_node(&state, &mut rng);
    let mut seq = 0;
    let kind = Request::for_client(client);
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        op_id += 1;
        let action = draw_action(&mut rng, client, seq);
        let call = rt.now();
        let give_up = call.add(GIVE_UP_AFTER);
        // Whether an attempt's outcome was unclear: the operation may have taken effect.
        let mut unclear = false;
        let record = |ret: Option<Instant>, output: Option<KvOutput>| {
            lock(&history).push(Operation {
                client,
                input: action.clone(),
                call: call.as_nanos(),
                ret: ret.map(Instant::as_nanos),
                output,
            });
        };
        loop {
            let raft = lock(&state.nodes).get(&target).and_then(|s| s.raft.clone());
            let Some(raft) = raft else {
                target = any_node(&state, &mut rng);
                rt.sleep_until(rt.now().add(Duration::from_millis(5))).await;
                if rt.now() >= give_up {
                    if unclear {
                        record(None, None);
                    }
                    break;
                }
                continue;
            };
            // Reads go half through the log and half through ReadIndex; either way, and
            // for writes, the target may be any node: followers forward or ask the leader.
            let timeout = rt.sleep_until(rt.now().add(Duration::from_secs(1)));
            let request = kind.start(raft, &action, KvSession { client: session, seq, op: op_id });
            let outcome = match future::select(request, Box::pin(timeout)).await {
                Either::Left((r, _)) => Some(r),
                Either::Right(_) => None,
            };
            match outcome {
                Some(Ok(out)) => {
                    record(Some(rt.now()), Some(out));
                    if unclear {
                        counts.resolved.fetch_add(1, Ordering::SeqCst);
                    }
                    break;
                }
                // Refused or discarded: it never took effect; try again, on any node.
                Some(Err(ClientError::NotLeader { .. } | ClientError::NoLeader)) => {
                    target = any_node(&state, &mut rng);
                    rt.sleep_until(rt.now().add(Duration::from_millis(10))).await;
                }
                Some(Err(ClientError::Dropped)) | Some(Err(ClientError::Overloaded)) => {
                    rt.sleep_until(rt.now().add(Duration::from_millis(5))).await;
                }
                // `Raft::propose` retried what it could; another call would be another
                // command. The outcome stays unknown.
                Some(Err(_)) | None if kind == Request::Node => {
                    counts.node_unclear.fetch_add(1, Ordering::SeqCst);
                    record(None, None);
                    break;
                }
                // The node stopped or we timed out: the outcome is unclear. Try again
                // under the same (client, seq), on any node: it is applied at most once.
                Some(Err(_)) | None => {
                    if !unclear {
                        counts.retried.fetch_add(1, Ordering::SeqCst);
                    }
                    unclear = true;
                    target = any_node(&state, &mut rng);
                    rt.sleep_until(rt.now().add(Duration::from_millis(10))).await;
                }
            }
            if rt.now() >= give_up {
                if unclear {
                    record(None, None);
                }
                break;
            }
        }
        rt.sleep_until(rt.now().add(Duration::from_micros(rng.u64(0..3000)))).await;
    }
}

/// How a client operation goes to the cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    /// Through the log: a session command.
    Log,
    /// Gets by ReadIndex, the rest through the log.
    ReadIndex,
    /// Through [`crate::Raft::propose`].
    Node,
}

/// An operation's place in its client's session.
struct KvSession {
    client: crate::session::ClientId,
    seq: u64,
    op: u64,
}

impl Request {
    /// Odd clients read by ReadIndex; of the even ones, one in two goes through
    /// `Raft::propose` (the node's own session, none on the leader) instead of a session
    /// of its own. A client with a session of its own sends every second operation with
    /// `Raft::propose_once` instead.
    fn for_client(client: u64) -> Request {
        match client % 4 {
            1 | 3 => Request::ReadIndex,
            2 => Request::Node,
            _ => Request::Log,
        }
    }

    fn start(
        &self,
        raft: crate::Raft<SimKv>,
        action: &KvInput,
        s: KvSession,
    ) -> futures::future::BoxFuture<'static, Result<KvOutput, ClientError>> {
        match (*self, action) {
            (Request::ReadIndex, KvInput::Get { key }) => {
                let key = key.clone();
                Box::pin(async move { raft.read(move |kv| KvOutput::Value(kv.get(&key).cloned())).await })
            }
            (Request::Node, _) => {
                let cmd = KvCommand { op: s.op, action: action.clone() };
                Box::pin(async move { raft.propose(cmd).await })
            }
            // Every second one of a session's operations goes as an idempotency key's
            // request (a key of its own, the same on every retry).
            _ if s.seq % 2 == 0 => {
                let cmd = KvCommand { op: s.op, action: action.clone() };
                let key = format!("{:x}-{}", s.client, s.seq);
                Box::pin(async move { raft.propose_once(key.as_bytes(), cmd).await })
            }
            _ => {
                let cmd = KvCommand { op: s.op, action: action.clone() };
                // Every earlier operation of this client has ended: acknowledged.
                Box::pin(async move { raft.propose_in_session(s.client, s.seq, s.seq - 1, cmd).await })
            }
        }
    }
}

/// Client `client`'s operation number `seq`: a put, get, delete or compare-and-set of
/// one of three keys.
fn draw_action(rng: &mut fastrand::Rng, client: u64, seq: u64) -> KvInput {
    let keys = ["x", "y", "z"];
    let key = keys[rng.usize(..keys.len())].to_string();
    match rng.u8(..10) {
        0..=3 => KvInput::Put { key, value: format!("c{client}-{seq}") },
        4..=6 => KvInput::Get { key },
        7 => KvInput::Delete { key },
        _ => {
            let expected = if rng.bool() { None } else { Some(format!("c{}-{}", rng.u64(0..4), rng.u64(1..=seq))) };
            KvInput::Cas { key, expected, new: format!("c{client}-{seq}") }
        }
    }
}

/// Any node that may run, spares and removed nodes included.
fn any_node(state: &ClusterState, rng: &mut fastrand::Rng) -> NodeId {
    let ids = state.live_ids();
    ids[rng.usize(..ids.len())]
}

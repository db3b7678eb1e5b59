//! The workload: the simulated KV state machine [`SimKv`] and the client tasks that
//! write and read it concurrently, recording a history for the linearizability check.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
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

pub(super) async fn client_task(
    state: Arc<ClusterState>,
    client: u64,
    mut op_id: u64,
    mut rng: fastrand::Rng,
    history: History,
    stop: Arc<AtomicBool>,
) {
    let rt = state.sim.runtime();
    let keys = ["x", "y", "z"];
    let mut target: NodeId = any_node(&state, &mut rng);
    let mut seq = 0;
    let read_index_reads = client % 2 == 1;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        op_id += 1;
        let key = keys[rng.usize(..keys.len())].to_string();
        let action = match rng.u8(..10) {
            0..=3 => KvInput::Put { key, value: format!("c{client}-{seq}") },
            4..=6 => KvInput::Get { key },
            7 => KvInput::Delete { key },
            _ => {
                let expected = if rng.bool() { None } else { Some(format!("c{}-{}", rng.u64(0..4), rng.u64(1..=seq))) };
                KvInput::Cas { key, expected, new: format!("c{client}-{seq}") }
            }
        };
        let call = rt.now();
        let give_up = call.add(Duration::from_secs(2));
        loop {
            let raft = lock(&state.nodes).get(&target).and_then(|s| s.raft.clone());
            let Some(raft) = raft else {
                target = any_node(&state, &mut rng);
                rt.sleep_until(rt.now().add(Duration::from_millis(5))).await;
                if rt.now() >= give_up {
                    break;
                }
                continue;
            };
            // Reads go half through the log and half through ReadIndex; either way, and
            // for writes, the target may be any node: followers forward or ask the leader.
            let timeout = rt.sleep_until(rt.now().add(Duration::from_secs(1)));
            let request: futures::future::BoxFuture<'static, Result<KvOutput, ClientError>> = match &action {
                KvInput::Get { key } if read_index_reads => {
                    let key = key.clone();
                    Box::pin(async move { raft.read(move |kv| KvOutput::Value(kv.get(&key).cloned())).await })
                }
                _ => {
                    let cmd = KvCommand { op: op_id, action: action.clone() };
                    Box::pin(async move { raft.propose(cmd).await })
                }
            };
            let outcome = match future::select(request, Box::pin(timeout)).await {
                Either::Left((r, _)) => Some(r),
                Either::Right(_) => None,
            };
            let record = |ret: Option<Instant>, output: Option<KvOutput>| {
                lock(&history).push(Operation {
                    client,
                    input: action.clone(),
                    call: call.as_nanos(),
                    ret: ret.map(Instant::as_nanos),
                    output,
                });
            };
            match outcome {
                Some(Ok(out)) => {
                    record(Some(rt.now()), Some(out));
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
                // The node stopped or we timed out: the outcome is unknown.
                Some(Err(_)) | None => {
                    record(None, None);
                    break;
                }
            }
            if rt.now() >= give_up {
                break;
            }
        }
        rt.sleep_until(rt.now().add(Duration::from_micros(rng.u64(0..3000)))).await;
    }
}

/// Any node that may run, spares and removed nodes included.
fn any_node(state: &ClusterState, rng: &mut fastrand::Rng) -> NodeId {
    let ids = state.live_ids();
    ids[rng.usize(..ids.len())]
}

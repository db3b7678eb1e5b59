//! The apply task: applies committed entries to the state machine and answers the
//! proposers waiting for them, off the protocol loop, so a slow state machine never
//! delays heartbeats. Between batches it takes snapshots (the state machine's view is
//! taken here, written out on a blocking thread) and restores them (`snapshot.rs`).
//!
//! The client-session layer ([`crate::session`]) sits here, between the log and the
//! state machine: a session command whose (client, seq) was applied before is answered
//! with the recorded response and not passed to the state machine again. The session
//! table is replicated state: it goes into every snapshot with the state machine's.

use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;

use super::snapshot::{self, Applied};
use super::{Event, Responder};
use crate::error::ClientError;
use crate::metrics::DriverLatencies;
use crate::runtime::Runtime;
use crate::session::{Check, Recorded, SessionEntry, SessionKey, SessionTable};
use crate::snapshot::{SnapshotMeta, SnapshotStore};
use crate::state_machine::StateMachine;
use crate::sync::lock;
use crate::types::{Entry, EntryPayload, LogId, LogIndex, NodeId};

/// Work for the apply task: committed entries to apply, in order, with the proposers
/// waiting for them here.
pub(super) struct ApplyBatch<SM: StateMachine> {
    pub(super) entries: Vec<Entry>,
    pub(super) responders: Vec<(LogIndex, Responder<SM>)>,
    /// Proposers whose entry was applied before they were registered (a forward's answer
    /// came late), answered from the session table: (the command's key, proposer).
    pub(super) claims: Vec<(SessionKey, Responder<SM>)>,
}

/// Work for the apply task, in the order the core asked for it.
pub(super) enum ApplyOp<SM: StateMachine> {
    /// Apply entries.
    Batch(ApplyBatch<SM>),
    /// Take a snapshot of the state after the batches before.
    TakeSnapshot,
    /// Replace the state with a snapshot the store holds.
    Restore(SnapshotMeta),
}

/// What the apply task works with, besides its queue.
pub(super) struct ApplyContext<SM: StateMachine, R> {
    pub(super) id: NodeId,
    pub(super) sm: Arc<Mutex<SM>>,
    pub(super) snapshots: Arc<dyn SnapshotStore>,
    pub(super) rt: R,
    pub(super) latencies: Arc<DriverLatencies>,
    pub(super) tx: mpsc::UnboundedSender<Event<SM>>,
}

pub(super) async fn apply_task<SM: StateMachine, R: Runtime>(
    cx: ApplyContext<SM, R>,
    mut position: Applied,
    mut sessions: SessionTable,
    mut rx: mpsc::UnboundedReceiver<ApplyOp<SM>>,
) {
    let ApplyContext { id, sm, snapshots, rt, latencies, tx } = cx;
    // The table read from the snapshot the node started from.
    latencies.set_sessions(sessions.len(), sessions.responses());
    let mut answers = Vec::new();
    while let Some(op) = rx.next().await {
        let batch = match op {
            ApplyOp::Batch(batch) => batch,
            ApplyOp::TakeSnapshot => {
                let view = lock(&sm).snapshot();
                let table = sessions.encode();
                snapshot::write_in_background::<SM, R>(id, &rt, view, table, &position, snapshots.clone(), tx.clone());
                continue;
            }
            ApplyOp::Restore(meta) => {
                match snapshot::restore(&rt, &sm, &snapshots, &meta).await {
                    Ok((table, restored)) => {
                        tracing::info!(node = id, last = ?restored.last, size = restored.size, sessions = table.len(), "state machine restored from a snapshot");
                        sessions = table;
                        latencies.set_sessions(sessions.len(), sessions.responses());
                        // A newer snapshot than the one asked for covers the entries up to
                        // its own: `apply_entries` passes over those.
                        position = Applied::at_snapshot(&restored);
                        if tx.unbounded_send(Event::Applied { index: meta.last.index }).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.unbounded_send(Event::Fatal(e));
                        return;
                    }
                }
                continue;
            }
        };
        let started = (!batch.entries.is_empty()).then(|| rt.now());
        let last = apply_entries(
            id,
            &mut *lock(&sm),
            &mut sessions,
            batch.entries,
            batch.responders,
            &mut position,
            &mut answers,
        );
        if let Some(started) = started {
            latencies.apply.record_duration(rt.now().saturating_since(started));
            latencies.set_sessions(sessions.len(), sessions.responses());
            tracing::debug!(node = id, applied = last, "applied");
        }
        for (key, r) in batch.claims {
            let result = match sessions.response_of(key) {
                Ok(Some(response)) => decode_response::<SM>(response.as_slice()),
                // Not applied: another entry took its position. The handle proposes it
                // again under the same (client, seq).
                Ok(None) => Err(ClientError::Dropped),
                Err(check) => Err(refusal(check, key)),
            };
            answers.push((r, result));
        }
        // The protocol loop hears of the progress first and the proposers last: on a
        // runtime that runs the task it woke last first (tokio's LIFO slot), a client's
        // answer then goes out before the loop's next round of messages, not after it.
        if last > 0 && tx.unbounded_send(Event::Applied { index: last }).is_err() {
            return;
        }
        for (r, result) in answers.drain(..) {
            let _ = r.send(result);
        }
    }
}

/// Proposers to answer after a batch, with their responses.
type Answers<SM> = Vec<(Responder<SM>, Result<<SM as StateMachine>::Response, ClientError>)>;

/// The committed command at `index`; one that no longer decodes is skipped on every node
/// alike, and its proposer gets the error.
fn decode_command<SM: StateMachine>(id: NodeId, index: LogIndex, data: &[u8]) -> Result<SM::Command, ClientError> {
    postcard::from_bytes(data).map_err(|e| {
        tracing::error!(node = id, index, error = %e, "committed command does not decode; skipped");
        ClientError::Encode(format!("command at index {index} does not decode: {e}"))
    })
}

/// A stored response decoded for a repeated command.
fn decode_response<SM: StateMachine>(data: &[u8]) -> Result<SM::Response, ClientError> {
    postcard::from_bytes(data).map_err(|e| ClientError::Encode(format!("a recorded response does not decode: {e}")))
}

/// The error for a session command the table refuses.
fn refusal(check: Check, key: SessionKey) -> ClientError {
    let SessionKey { client, seq, .. } = key;
    match check {
        Check::Expired => ClientError::SessionExpired { client },
        Check::Mismatch => ClientError::KeyReused { client },
        _ => ClientError::StaleRequest { client, seq },
    }
}

/// Applies session entry `e` at `index`: a command once per (client, seq), its
/// response recorded; a repeated one answered from the record.
fn apply_session<SM: StateMachine>(
    id: NodeId,
    sm: &mut SM,
    sessions: &mut SessionTable,
    index: LogIndex,
    e: &SessionEntry,
) -> Option<Result<SM::Response, ClientError>> {
    let Some((key, acked, command)) = e.op.command_parts() else {
        sessions.open(e, index);
        return None;
    };
    let SessionKey { client, seq, .. } = key;
    Some(match sessions.check(e, key, acked) {
        Check::Fresh => decode_command::<SM>(id, index, command).map(|cmd| {
            let response = sm.apply(index, cmd);
            match Recorded::encode(&response) {
                Ok(encoded) => sessions.record(client, seq, encoded),
                Err(e) => tracing::error!(node = id, index, error = %e, "a response does not encode; a repeat will be refused"),
            }
            response
        }),
        Check::Duplicate(response) => {
            tracing::debug!(node = id, index, client, seq, "a repeated command: answered from the session table");
            decode_response::<SM>(response.as_slice())
        }
        check => Err(refusal(check, key)),
    })
}

/// Applies `entries` in order; the response of each entry a proposer waits for goes to
/// `answers`. Returns the last index applied (0 for none).
fn apply_entries<SM: StateMachine>(
    id: NodeId,
    sm: &mut SM,
    sessions: &mut SessionTable,
    entries: Vec<Entry>,
    responders: Vec<(LogIndex, Responder<SM>)>,
    position: &mut Applied,
    answers: &mut Answers<SM>,
) -> LogIndex {
    let mut last = 0;
    let mut responders = responders.into_iter().peekable();
    for entry in entries {
        let (index, term) = (entry.index, entry.term);
        last = index;
        if index <= position.last.index {
            // Covered by a newer snapshot restored in place of the one asked for, which
            // the store no longer held: the state has it already. Its proposer learns
            // the outcome by proposing again (its session answers).
            if responders.peek().is_some_and(|(i, _)| *i == index) {
                if let Some((_, r)) = responders.next() {
                    answers.push((r, Err(ClientError::Indeterminate)));
                }
            }
            continue;
        }
        position.last = LogId { index, term };
        let result = match entry.payload {
            EntryPayload::Command(data) => decode_command::<SM>(id, index, &data).map(|cmd| sm.apply(index, cmd)),
            EntryPayload::Membership(m) => {
                position.membership = (index, *m);
                continue;
            }
            EntryPayload::Session(e) => match apply_session(id, sm, sessions, index, &e) {
                Some(result) => result,
                None => continue,
            },
            EntryPayload::Blank => continue,
        };
        if responders.peek().is_some_and(|(i, _)| *i == index) {
            if let Some((_, r)) = responders.next() {
                answers.push((r, result));
            }
        }
    }
    last
}

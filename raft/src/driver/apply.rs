//! The apply task: applies committed entries to the state machine and answers the
//! proposers waiting for them, off the protocol loop, so a slow state machine never
//! delays heartbeats. Between batches it takes snapshots (the state machine's view is
//! taken here, written out on a blocking thread) and restores them (`snapshot.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;

use super::snapshot::{self, Applied};
use super::{Event, Responder};
use crate::error::ClientError;
use crate::metrics::DriverLatencies;
use crate::runtime::Runtime;
use crate::snapshot::{SnapshotMeta, SnapshotStore};
use crate::state_machine::StateMachine;
use crate::sync::lock;
use crate::types::{Entry, EntryPayload, LogId, LogIndex, NodeId, Term};

/// Work for the apply task: committed entries to apply, in order, with the proposers
/// waiting for them here.
pub(super) struct ApplyBatch<SM: StateMachine> {
    pub(super) entries: Vec<Entry>,
    pub(super) responders: Vec<(LogIndex, Responder<SM>)>,
    /// Keep the responses of these entries that no proposer here waits for (the last
    /// [`KEPT_RESPONSES`]): a forwarded batch's answer may still be on its way.
    pub(super) keep_unclaimed: bool,
    /// Proposers whose entry was applied before they were registered (a forward's answer
    /// came late), answered from the kept responses: (index, term, proposer).
    pub(super) claims: Vec<(LogIndex, Term, Responder<SM>)>,
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

/// How many responses the apply task keeps for proposers registered after their entry
/// was applied.
const KEPT_RESPONSES: usize = 4096;

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
    mut rx: mpsc::UnboundedReceiver<ApplyOp<SM>>,
) {
    let ApplyContext { id, sm, snapshots, rt, latencies, tx } = cx;
    let mut answers = Vec::new();
    // Responses no proposer here waited for, in index order (see `ApplyBatch`).
    let mut kept: Kept<SM> = VecDeque::new();
    while let Some(op) = rx.next().await {
        let batch = match op {
            ApplyOp::Batch(batch) => batch,
            ApplyOp::TakeSnapshot => {
                let view = lock(&sm).snapshot();
                snapshot::write_in_background::<SM, R>(id, &rt, view, &position, snapshots.clone(), tx.clone());
                continue;
            }
            ApplyOp::Restore(meta) => {
                match snapshot::restore(&rt, &sm, &snapshots, &meta).await {
                    Ok(()) => {
                        tracing::info!(node = id, last = ?meta.last, size = meta.size, "state machine restored from a snapshot");
                        kept.clear();
                        position = Applied::at_snapshot(&meta);
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
            batch.entries,
            batch.responders,
            batch.keep_unclaimed,
            &mut position,
            &mut kept,
            &mut answers,
        );
        if let Some(started) = started {
            latencies.apply.record_duration(rt.now().saturating_since(started));
            tracing::debug!(node = id, applied = last, "applied");
        }
        for (index, term, r) in batch.claims {
            let result = match kept.binary_search_by_key(&index, |k| k.0) {
                Ok(at) if kept[at].1 == term => kept.remove(at).map_or(Err(ClientError::Indeterminate), |k| k.2),
                // Another entry was committed at that position.
                Ok(_) => Err(ClientError::Dropped),
                // Not kept (or kept too long ago): it may or may not be this one.
                Err(_) => Err(ClientError::Indeterminate),
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

/// The responses kept for proposers registered late: (index, term, response).
type Kept<SM> = VecDeque<(LogIndex, Term, Result<<SM as StateMachine>::Response, ClientError>)>;

/// Applies `entries` in order; the response of each entry a proposer waits for goes to
/// `answers`, the others to `kept` when `keep_unclaimed`. Returns the last index applied
/// (0 for none).
#[allow(clippy::too_many_arguments)]
fn apply_entries<SM: StateMachine>(
    id: NodeId,
    sm: &mut SM,
    entries: Vec<Entry>,
    responders: Vec<(LogIndex, Responder<SM>)>,
    keep_unclaimed: bool,
    position: &mut Applied,
    kept: &mut Kept<SM>,
    answers: &mut Answers<SM>,
) -> LogIndex {
    let mut last = 0;
    let mut responders = responders.into_iter().peekable();
    for entry in entries {
        let (index, term) = (entry.index, entry.term);
        last = index;
        position.last = LogId { index, term };
        let result = match entry.payload {
            EntryPayload::Command(data) => match postcard::from_bytes::<SM::Command>(&data) {
                Ok(cmd) => Ok(sm.apply(index, cmd)),
                Err(e) => {
                    tracing::error!(node = id, index, error = %e, "committed command does not decode; skipped");
                    Err(ClientError::Encode(format!("command at index {index} does not decode: {e}")))
                }
            },
            EntryPayload::Membership(m) => {
                position.membership = (index, *m);
                continue;
            }
            EntryPayload::Blank => continue,
        };
        if responders.peek().is_some_and(|(i, _)| *i == index) {
            if let Some((_, r)) = responders.next() {
                answers.push((r, result));
            }
        } else if keep_unclaimed {
            if kept.len() == KEPT_RESPONSES {
                kept.pop_front();
            }
            kept.push_back((index, term, result));
        }
    }
    last
}

//! The persist task: the one task that owns the [`LogStore`]. It carries out the core's
//! persist requests in order, merging the ones queued meanwhile into one store call
//! sequence (group commit), reports them durable, and reads entries the core no longer
//! holds in memory.
//!
//! **Architecture invariant:** a persist request is reported durable only after every
//! store call it needs has returned `Ok`; after a failed write nothing more is written
//! (fail-stop, design invariant 9).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use super::snapshot::Receiving;
use super::Event;
use crate::core::PersistRequest;
use crate::error::StoreError;
use crate::metrics::DriverLatencies;
use crate::runtime::Runtime;
use crate::snapshot::{SnapshotMeta, SnapshotStore};
use crate::state_machine::StateMachine;
use crate::storage::LogStore;
use crate::types::{LogId, LogIndex, NodeId, Term};

/// Work for the task that owns the store.
pub(super) enum StoreOp {
    /// A write, with whether the node was leader when it asked for it.
    Persist {
        req: PersistRequest,
        leader: bool,
    },
    Load {
        peer: NodeId,
        term: Term,
        start: LogIndex,
        end: LogIndex,
    },
    /// Remove the log up to `upto` (a snapshot covers it).
    Purge {
        upto: LogIndex,
    },
    /// A chunk of a snapshot being received.
    Chunk {
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
    },
}

/// What the persist task owns: the log store, and the snapshot being received.
struct Stores<S> {
    log: S,
    snapshots: Arc<dyn SnapshotStore>,
    receiving: Receiving,
}

/// Carries out the store operations in order, merging queued writes (group commit).
///
/// Where the calls of a store block their thread ([`LogStore::blocks_thread`]), a
/// follower's writes run right here, on the worker that runs this task: a follower acts
/// on nothing while its write is pending (its acknowledgement waits for it), so running
/// it here saves two thread hand-offs on every replicated write's path, and the
/// runtime's other workers go on with everything else. A leader's writes and reads run
/// on a blocking thread ([`Runtime::spawn_blocking_task`]) instead, so that a slow disk
/// never holds up its heartbeats and replication, which go on while it writes.
pub(super) async fn persist_task<SM: StateMachine, S: LogStore, R: Runtime>(
    id: NodeId,
    store: S,
    blocking: bool,
    rt: R,
    latencies: Arc<DriverLatencies>,
    mut rx: mpsc::UnboundedReceiver<StoreOp>,
    tx: mpsc::UnboundedSender<Event<SM>>,
) {
    let snapshots = store.snapshots();
    let mut store = Some(Stores { log: store, snapshots, receiving: Receiving::default() });
    let mut queue = VecDeque::new();
    while let Some(first) = rx.next().await {
        queue.push_back(first);
        while let Ok(more) = rx.try_recv() {
            queue.push_back(more);
        }
        while let Some(op) = queue.pop_front() {
            // Group commit: persist requests queued meanwhile go to the store together.
            let op = match op {
                StoreOp::Persist { mut req, mut leader } => {
                    // Nothing merges into an install: it must run after what came before
                    // it and before what comes after.
                    while req.install.is_none() && matches!(queue.front(), Some(StoreOp::Persist { .. })) {
                        if let Some(StoreOp::Persist { req: more, leader: l }) = queue.pop_front() {
                            merge_persist(&mut req, more);
                            leader |= l;
                        }
                    }
                    StoreOp::Persist { req, leader }
                }
                load => load,
            };
            let off_thread = blocking && !matches!(op, StoreOp::Persist { leader: false, .. });
            // A write is timed from here, where the node waits for it, to durable.
            let write = match &op {
                StoreOp::Persist { req, .. } => Some((rt.now(), req.entries.len() as u64)),
                _ => None,
            };
            let Some(mut s) = store.take() else { return };
            let ok = if off_thread {
                let (done_tx, done_rx) = oneshot::channel();
                let events = tx.clone();
                drop(rt.spawn_blocking_task(async move {
                    let ok = store_op(id, &mut s, op, &events).await;
                    let _ = done_tx.send((s, ok));
                }));
                match done_rx.await {
                    Ok((s, ok)) => {
                        store = Some(s);
                        ok
                    }
                    Err(_) => {
                        let _ = tx.unbounded_send(Event::Fatal("the log store's thread stopped".into()));
                        false
                    }
                }
            } else {
                let ok = store_op(id, &mut s, op, &tx).await;
                store = Some(s);
                ok
            };
            if !ok {
                return;
            }
            if let Some((started, entries)) = write {
                latencies.log_write.record_duration(rt.now().saturating_since(started));
                if entries > 0 {
                    latencies.log_write_entries.record_n(entries, 1);
                }
            }
        }
    }
}

/// Carries out one store operation; false after a fatal store error.
async fn store_op<SM: StateMachine, S: LogStore>(
    id: NodeId,
    stores: &mut Stores<S>,
    op: StoreOp,
    tx: &mpsc::UnboundedSender<Event<SM>>,
) -> bool {
    let result = match op {
        StoreOp::Persist { req, .. } => return persist(id, stores, req, tx).await,
        StoreOp::Load { peer, term, start, end } => {
            let entries = stores.log.entries(start, end).await.map_err(|e| e.to_string());
            let _ = tx.unbounded_send(Event::Loaded { peer, term, entries });
            return true;
        }
        StoreOp::Purge { upto } => purge(id, &mut stores.log, upto, tx).await,
        StoreOp::Chunk { meta, offset, data } => {
            let (last, next) = (meta.last, offset + data.len() as u64);
            let written = stores.receiving.write(&*stores.snapshots, meta, offset, &data);
            if written.is_ok() {
                let _ = tx.unbounded_send(Event::ChunkWritten { last, next });
            }
            written
        }
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(node = id, error = %e, "a store write failed; stopping (fail-stop)");
            let _ = tx.unbounded_send(Event::Fatal(format!("store write failed: {e}")));
            false
        }
    }
}

/// Purges the log up to `upto` and reports where it now starts.
async fn purge<SM: StateMachine, S: LogStore>(
    id: NodeId,
    store: &mut S,
    upto: LogIndex,
    tx: &mpsc::UnboundedSender<Event<SM>>,
) -> Result<(), StoreError> {
    let term = match store.entries(upto, upto + 1).await {
        Ok(e) => e.first().map(|e| e.term),
        Err(StoreError::Unavailable { .. }) => None,
        Err(e) => return Err(e),
    };
    let Some(term) = term else {
        tracing::debug!(node = id, upto, "nothing to purge there");
        return Ok(());
    };
    store.purge(upto).await?;
    tracing::debug!(node = id, upto, "log purged");
    let _ = tx.unbounded_send(Event::Purged { prev: LogId { index: upto, term } });
    Ok(())
}

/// Carries out one persist request; false after a fatal store error.
async fn persist<SM: StateMachine, S: LogStore>(
    id: NodeId,
    stores: &mut Stores<S>,
    req: PersistRequest,
    tx: &mpsc::UnboundedSender<Event<SM>>,
) -> bool {
    {
        let store = &mut stores.log;
        let result = async {
            if let Some(hs) = &req.hard_state {
                store.save_hard_state(hs).await?;
            }
            if let Some(from) = req.truncate_from {
                store.truncate(from).await?;
            }
            if !req.entries.is_empty() {
                store.append(&req.entries).await?;
            }
            if let Some(meta) = &req.install {
                stores.receiving.finish(meta)?;
                store.reset_to(meta.last).await?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                let _ = tx.unbounded_send(Event::Persisted { seq: req.seq });
                true
            }
            Err(e) => {
                tracing::error!(node = id, error = %e, "log store write failed; stopping (fail-stop)");
                let _ = tx.unbounded_send(Event::Fatal(format!("log store write failed: {e}")));
                false
            }
        }
    }
}

/// Folds `later` into `acc` so that carrying out the result equals carrying out both in
/// order.
fn merge_persist(acc: &mut PersistRequest, later: PersistRequest) {
    acc.seq = later.seq;
    if later.hard_state.is_some() {
        acc.hard_state = later.hard_state;
    }
    if let Some(t) = later.truncate_from {
        acc.entries.retain(|e| e.index < t);
        acc.truncate_from = Some(acc.truncate_from.map_or(t, |a| a.min(t)));
    }
    acc.entries.extend(later.entries);
    if later.install.is_some() {
        acc.install = later.install;
    }
}

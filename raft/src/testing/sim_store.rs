//! Stores the [simulator](super::simulator) can run nodes on: [`SimStore`] is what it
//! needs of a node's storage (open it for a node starting, crash it, inspect it for the
//! invariant checks). [`MemStore`] implements it; another store (a file store on a
//! simulated file system, say) implements it in its own tests and runs the same sweep
//! through [`run_seed_with_stores`](super::simulator::run_seed_with_stores).

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;

use super::mem_store::{DelayFn, MemStore};
use crate::error::StoreError;
use crate::snapshot::SnapshotStore;
use crate::storage::{InitialState, LogStore};
use crate::types::{Entry, HardState, LogId, LogIndex};

/// One node's storage as the simulator sees it, across the node's crashes and restarts.
///
/// The simulator calls [`open`](Self::open) each time the node starts, and
/// [`crash`](Self::crash) after the node's tasks were stopped (so the store returned by
/// the last `open` has been dropped, or will never be called again).
pub trait SimStore: Send + Sync + 'static {
    /// A store for the node starting now, holding what survived so far.
    fn open(&self) -> Result<BoxedStore, String>;

    /// Simulates a crash of the node's machine: whatever was not durable may be lost or
    /// torn, as the store's own model says.
    fn crash(&self, rng: &mut fastrand::Rng);

    /// Makes every write take the virtual time the future returned by `delay` takes
    /// (`None`: no delay). A crash during the delay loses the write.
    fn set_write_delay(&self, delay: Option<DelayFn>);

    /// The entries with indexes in `start..=end` that the store holds, in index order
    /// (for the checkers; also while the node is down).
    fn entries_in(&self, start: LogIndex, end: LogIndex) -> Vec<Entry>;

    /// Every entry the store holds, in index order.
    fn entries_snapshot(&self) -> Vec<Entry>;

    /// The last index purged from the log (0 if none): a snapshot covers the entries up
    /// to it, so the checkers no longer see them.
    fn purged_index(&self) -> LogIndex;

    /// The store as `Any`, so tests can get back the concrete type.
    fn as_any(&self) -> &dyn Any;

    /// Arms a fault of the store's own kind (a read that returns corrupt data, say), which
    /// the nemesis injects now and then into a running node; returns what was armed, for
    /// the trace, or `None` if the store has no such faults (the default). A store that
    /// detects the fault fails, and the node stops on it (fail-stop); the nemesis then
    /// restarts the node like a crashed one.
    fn inject_fault(&self, rng: &mut fastrand::Rng) -> Option<String> {
        let _ = rng;
        None
    }

    /// Disarms what [`inject_fault`](Self::inject_fault) armed and did not fire yet (the
    /// run is healing).
    fn disarm_faults(&self) {}
}

/// A [`LogStore`] behind a box, so that nodes of one simulator can use different store
/// types.
pub struct BoxedStore(pub Box<dyn LogStore>);

#[async_trait]
impl LogStore for BoxedStore {
    fn blocks_thread(&self) -> bool {
        self.0.blocks_thread()
    }

    async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
        self.0.initial_state().await
    }

    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.0.save_hard_state(hs).await
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.0.append(entries).await
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
        self.0.truncate(from).await
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
        self.0.purge(upto).await
    }

    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
        self.0.entries(start, end).await
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.0.snapshots()
    }

    async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
        self.0.reset_to(snapshot).await
    }
}

impl SimStore for MemStore {
    fn open(&self) -> Result<BoxedStore, String> {
        Ok(BoxedStore(Box::new(self.clone())))
    }

    fn crash(&self, rng: &mut fastrand::Rng) {
        MemStore::crash(self, rng);
    }

    fn set_write_delay(&self, delay: Option<DelayFn>) {
        MemStore::set_write_delay(self, delay);
    }

    fn entries_in(&self, start: LogIndex, end: LogIndex) -> Vec<Entry> {
        MemStore::entries_in(self, start, end)
    }

    fn entries_snapshot(&self) -> Vec<Entry> {
        MemStore::entries_snapshot(self)
    }

    fn purged_index(&self) -> LogIndex {
        MemStore::prev(self).index
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

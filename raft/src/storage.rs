//! The [`LogStore`] trait: durable storage for the log, the term and the vote.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::snapshot::SnapshotStore;
use crate::types::{Entry, HardState, LogId, LogIndex};

/// What a store holds when a node starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The durable term and vote.
    pub hard_state: HardState,
    /// The position just before the first entry held: `(0, 0)` for a log that was never
    /// purged, otherwise the last purged entry (at or before the latest snapshot's last
    /// entry).
    pub prev: LogId,
    /// The last entry held, or `prev` if the log is empty.
    pub last: LogId,
}

impl InitialState {
    /// Whether the store holds nothing at all: no entry, no purge point and no term or
    /// vote. Only such a store may be bootstrapped into a new cluster; anything else is
    /// restarted from what it holds.
    pub fn is_empty(&self) -> bool {
        self.last.index == 0 && self.prev.index == 0 && self.hard_state == HardState::default()
    }
}

/// Durable storage for one node's log and hard state.
///
/// # Contract
///
/// - The driver calls the methods of one store from one task, one call at a time and in
///   the order the protocol needs them (hence `&mut self`); a call's effects are visible
///   to every later call.
/// - **Durability:** when `append`, `truncate` or `save_hard_state` returns `Ok`, its
///   effect is durable: it survives a crash of the process or the machine (data written
///   and `fdatasync`ed, or the equivalent). The protocol acts on that promise: it grants
///   votes, acknowledges appends and counts its own copy toward commitment only after
///   these calls return.
/// - **Fail-stop:** if a write fails the store must not pretend it succeeded, and the
///   node stops on the error; a store should refuse all further writes once a write or
///   sync has failed, since after a failed `fsync` it cannot know what is on disk.
/// - Indexes are contiguous: the log holds every index from `prev.index + 1` to
///   `last.index`, with no gaps.
/// - A crash may lose any effect whose call had not yet returned, but a store never
///   exposes a torn or partial entry: after restart the log is a prefix of what was
///   written, containing at least everything that was reported durable.
#[async_trait]
pub trait LogStore: Send + 'static {
    /// Whether the store's calls block their thread (synchronous file I/O and `fsync`
    /// inside the async methods). The driver then runs a leader's store calls on a
    /// thread of their own where the runtime has one ([`Runtime::spawn_blocking_task`]),
    /// so that a slow disk never holds up its heartbeats and replication. A follower's
    /// writes run on the runtime worker that runs the store task: a follower acts on
    /// nothing while its write is pending, and this saves two thread hand-offs on every
    /// replicated write (the runtime's other workers go on meanwhile; on a runtime with
    /// one worker, the follower's node waits for each write). A store that never blocks
    /// keeps the default `false` and stays on the runtime's workers.
    ///
    /// [`Runtime::spawn_blocking_task`]: crate::Runtime::spawn_blocking_task
    fn blocks_thread(&self) -> bool {
        false
    }

    /// The store's snapshots (see [`SnapshotStore`]): a handle the driver uses from other
    /// threads while this store is in use. Called once when a node starts.
    fn snapshots(&self) -> Arc<dyn SnapshotStore>;

    /// Reads what the store holds: the hard state and the bounds of the log.
    async fn initial_state(&mut self) -> Result<InitialState, StoreError>;

    /// Durably records the term and vote, replacing the previous value atomically.
    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError>;

    /// Durably appends `entries`, which are contiguous, non-empty, and start at exactly
    /// `last.index + 1`. Any other start index is a contract violation and must return
    /// [`StoreError::Invalid`] without writing.
    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError>;

    /// Durably removes every entry with index `>= from` (a conflicting suffix, paper
    /// §5.3). `from` greater than `last.index` is a no-op; `from <= prev.index` is
    /// [`StoreError::Invalid`] (purged entries are committed and never conflict).
    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError>;

    /// Removes every entry with index `<= upto` (after a snapshot covers them); the log
    /// then starts after `upto`, and `prev` becomes the purged position. Purging need not
    /// be durable at once: a crash may bring purged entries back, never lose others.
    /// `upto` beyond `last.index` is [`StoreError::Invalid`].
    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError>;

    /// Durably makes the log continue after `snapshot`, a snapshot's last entry, when that
    /// snapshot is installed (paper §7): if the log holds an entry at `snapshot.index`
    /// with term `snapshot.term`, the entries up to it are removed and the ones after it
    /// kept (as [`purge`](Self::purge) does); otherwise every entry is removed and the log
    /// is empty with `prev` = `last` = `snapshot`. The emptying is durable when the call
    /// returns (a crash during it leaves either the old log or the empty one); the
    /// removal of a matching prefix may come back after a crash, as a purge may. A
    /// `snapshot.index` at or below `prev.index` is a no-op.
    async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError>;

    /// Returns the entries with indexes in `start..end`, in order. Asking for anything
    /// outside the held range is [`StoreError::Unavailable`].
    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError>;
}

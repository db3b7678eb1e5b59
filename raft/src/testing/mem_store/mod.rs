//! [`MemStore`]: an in-memory [`LogStore`] that models durability, crashes and write
//! failures, for tests and the deterministic simulator.
//!
//! # Durability model
//!
//! The store models two views of the same data:
//!
//! - the **volatile** view, what a process would see through its page cache: every write
//!   (`append`, `truncate`, `save_hard_state`, `purge`) takes effect here at once, and every
//!   read is served from it;
//! - the **durable** view, what survives a power loss.
//!
//! A write is first applied to the volatile view and queued; the call then awaits the
//! optional write delay (see [`MemStore::set_write_delay`]), after which the write and
//! every write queued before it become durable (like an `fdatasync`, which flushes all
//! earlier writes to the file too) and the call returns `Ok`. Without a delay a write is
//! durable before its call returns, and nothing is ever pending except purges.
//!
//! `purge` does not wait: it is queued like a write and becomes durable with the next
//! write that completes, so a crash may bring purged entries back, as the contract
//! allows.
//!
//! [`MemStore::crash`] simulates a power loss: the queued writes are applied to the
//! durable view in order up to a random point, the write at that point may be torn (an
//! append keeps a random prefix of its entries; a hard state or truncate write is atomic),
//! and everything after it is lost. The durable view then becomes the volatile view of the
//! next incarnation. The log after a crash is therefore always a prefix of what was
//! written, and contains everything that was reported durable.
//!
//! Only the volatile view is stored. Each queued write that is not yet durable keeps an
//! undo record instead (where the log ended before an append, the entries a truncate or a
//! purge removed, the hard state a save replaced), so the durable view is the volatile one
//! with the queued writes rolled back, newest first; a crash rolls back the writes it
//! loses that way, and a write becoming durable just drops the records up to it. An append
//! thus clones its entries once, and the common case (no delay, durable at once) does no
//! work proportional to the length of the log.
//!
//! # Incarnations
//!
//! Every crash starts a new incarnation (bumps [`MemStore::epoch`]). A handle binds to the
//! current incarnation at its first [`LogStore`] call, and from then on every call through
//! it fails with [`StoreError::Io`] once the store has crashed; so does a write that was in
//! flight during the crash and resumes later, and such a write has no effect. A clone is a
//! fresh, unbound handle: a harness keeps one handle for inspection and fault injection,
//! gives a clone to the node, and after a crash gives a new clone to the restarted node.

mod log;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::membership::Membership;
use crate::snapshot::{ChecksumReader, ChecksumWriter, SnapshotMeta, SnapshotStore, SnapshotWriter};
use crate::storage::{InitialState, LogStore};
use crate::sync::lock;
use crate::types::{Entry, HardState, LogId, LogIndex, Term};

use log::{log_id, LogState, Op, Undo};

/// A write delay: called once per write, the returned future is awaited between the write
/// reaching the volatile view and it becoming durable. A simulator plugs its virtual-time
/// sleep in here.
pub type DelayFn = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Counters kept by a [`MemStore`] across all its incarnations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStoreStats {
    /// `append` calls that returned `Ok`.
    pub appends: u64,
    /// Entries written by `append` calls that returned `Ok`.
    pub appended_entries: u64,
    /// `truncate` calls that removed entries and returned `Ok` (no-op truncates are not
    /// counted).
    pub truncates: u64,
    /// `save_hard_state` calls that returned `Ok`.
    pub hard_state_saves: u64,
    /// `purge` calls that removed entries.
    pub purges: u64,
    /// Writes that became durable and returned `Ok` (one sync each).
    pub syncs: u64,
    /// Writes that failed, injected with [`MemStore::fail_next_write`].
    pub failed_writes: u64,
    /// Calls refused because they came from a crashed incarnation.
    pub stale_calls: u64,
    /// Calls to [`MemStore::crash`].
    pub crashes: u64,
    /// Snapshots finished (made durable).
    pub snapshots_saved: u64,
    /// `reset_to` calls that emptied the log.
    pub resets: u64,
    /// Crashes that left an in-flight append partially written (a non-empty strict prefix
    /// of its entries).
    pub torn_appends: u64,
}

struct Inner {
    epoch: u64,
    /// The volatile view: every write applied so far, pending or durable.
    log: LogState,
    /// Writes applied to `log` but not yet durable, oldest first, with their sequence
    /// numbers and undo records. The durable view is `log` with these rolled back, newest
    /// first.
    pending: VecDeque<(u64, Undo)>,
    next_seq: u64,
    /// Why the store refuses writes, after a failed write.
    failed: Option<String>,
    fail_next: bool,
    delay: Option<DelayFn>,
    stats: MemStoreStats,
    /// The latest finished snapshot: durable from its `finish` on (a file renamed into
    /// place and synced).
    snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
}

impl Inner {
    /// Makes every queued write up to and including `seq` durable: their undo records
    /// are no longer needed.
    fn sync_through(&mut self, seq: u64) {
        while self.pending.front().is_some_and(|(s, _)| *s <= seq) {
            self.pending.pop_front();
        }
    }

    /// The durable view, rebuilt by rolling back a copy of the volatile one. Inspection
    /// only: it copies the whole log.
    fn durable(&self) -> LogState {
        let mut state = self.log.clone();
        for (_, undo) in self.pending.iter().rev() {
            state.roll_back(undo.clone());
        }
        state
    }

    /// The durable hard state: the one the oldest pending hard state write replaced.
    fn durable_hard_state(&self) -> HardState {
        self.pending
            .iter()
            .find_map(|(_, undo)| match undo {
                Undo::HardState(hs) => Some(*hs),
                _ => None,
            })
            .unwrap_or(self.log.hard_state)
    }

    /// The durable `prev`: the one the oldest pending purge replaced.
    fn durable_prev(&self) -> LogId {
        self.pending
            .iter()
            .find_map(|(_, undo)| match undo {
                Undo::Purge { prev, .. } | Undo::Reset { prev, .. } => Some(*prev),
                _ => None,
            })
            .unwrap_or(self.log.prev)
    }

    /// The durable last position: where the log ended before the oldest pending append or
    /// truncate (purges and hard state writes do not move it).
    fn durable_last(&self) -> LogId {
        self.pending
            .iter()
            .find_map(|(_, undo)| match undo {
                Undo::Append { prev_last, .. } => Some(*prev_last),
                Undo::Truncate(removed) => removed.last().map(log_id),
                Undo::Reset { prev, removed } => Some(removed.last().map_or(*prev, log_id)),
                _ => None,
            })
            .unwrap_or_else(|| self.log.last())
    }
}

/// What a write must still do after it reached the volatile view.
struct Ticket {
    epoch: u64,
    seq: u64,
    delay: Option<DelayFn>,
}

/// An in-memory [`LogStore`] with a durability model, simulated crashes and injected write
/// failures. See the [module documentation](self) for the model.
///
/// Cloning is cheap and shares the data; a clone is a fresh handle not yet bound to an
/// incarnation.
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
    /// The incarnation this handle is bound to, from its first `LogStore` call on.
    incarnation: Option<u64>,
}

fn stale_error(bound: u64, now: u64) -> StoreError {
    StoreError::Io(io::Error::other(format!(
        "simulated crash: this handle belongs to incarnation {bound}, the store is at incarnation {now}"
    )))
}

/// Binds a handle to the current incarnation, or refuses it if it belongs to an earlier
/// one.
fn bind(incarnation: &mut Option<u64>, inner: &mut Inner) -> Result<u64, StoreError> {
    match *incarnation {
        None => {
            *incarnation = Some(inner.epoch);
            Ok(inner.epoch)
        }
        Some(e) if e == inner.epoch => Ok(e),
        Some(e) => {
            inner.stats.stale_calls += 1;
            Err(stale_error(e, inner.epoch))
        }
    }
}

impl MemStore {
    /// An empty store: no entries, `prev` at `(0, 0)`, default hard state, no write delay.
    pub fn new() -> Self {
        MemStore {
            inner: Arc::new(Mutex::new(Inner {
                epoch: 0,
                log: LogState::default(),
                pending: VecDeque::new(),
                next_seq: 0,
                failed: None,
                fail_next: false,
                delay: None,
                stats: MemStoreStats::default(),
                snapshot: None,
            })),
            incarnation: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Sets the delay every later write awaits before it becomes durable; `None` makes
    /// writes durable at once. The setting survives crashes.
    pub fn set_write_delay(&self, delay: Option<DelayFn>) {
        self.lock().delay = delay;
    }

    /// Makes the next `append`, `truncate` or `save_hard_state` (that is valid and not a
    /// no-op) fail with [`StoreError::Io`], as if its sync had failed: its effect reaches
    /// the volatile view but is never made durable (a crash may keep it or not). From then
    /// on the store refuses every write, including `purge`, with [`StoreError::Failed`]
    /// until the next [`crash`](Self::crash). The armed failure survives a crash.
    pub fn fail_next_write(&self) {
        self.lock().fail_next = true;
    }

    /// Simulates a power loss, then readies the store for a new incarnation.
    ///
    /// Queued writes reach the durable view in order up to a point chosen with `rng`; the
    /// write at that point may be torn (an append keeps a random, possibly empty, strict
    /// prefix of its entries; other writes are atomic), and later ones are lost. The
    /// volatile view is reset to the durable one, the failed state is cleared, and the
    /// epoch is bumped so that handles bound to the crashed incarnation, and writes of it
    /// still in flight, fail without effect.
    pub fn crash(&self, rng: &mut fastrand::Rng) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.epoch += 1;
        inner.stats.crashes += 1;
        let pending = inner.pending.len();
        let kept = rng.usize(..=pending);
        // Roll back the lost writes, newest first; the first lost one may be torn.
        while inner.pending.len() > kept {
            let Some((_, undo)) = inner.pending.pop_back() else { break };
            if inner.pending.len() == kept {
                if let Undo::Append { count, .. } = undo {
                    if count > 0 {
                        let torn = rng.usize(..count);
                        inner.log.drop_last(count - torn);
                        if torn > 0 {
                            inner.stats.torn_appends += 1;
                        }
                        continue;
                    }
                }
            }
            inner.log.roll_back(undo);
        }
        // The rest survives.
        inner.pending.clear();
        inner.failed = None;
        tracing::debug!(epoch = inner.epoch, pending, kept, last = ?inner.log.last(), "mem store crashed");
    }

    /// The current incarnation, bumped by every crash.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Whether a write has failed and the store refuses writes.
    pub fn is_failed(&self) -> bool {
        self.lock().failed.is_some()
    }

    /// The hard state in the volatile view (what reads see).
    pub fn hard_state(&self) -> HardState {
        self.lock().log.hard_state
    }

    /// The hard state that would survive a crash now (ignoring in-flight writes, which a
    /// crash may or may not keep).
    pub fn durable_hard_state(&self) -> HardState {
        self.lock().durable_hard_state()
    }

    /// The purged position in the volatile view.
    pub fn prev(&self) -> LogId {
        self.lock().log.prev
    }

    /// The last entry in the volatile view, or `prev` if the log is empty.
    pub fn last(&self) -> LogId {
        self.lock().log.last()
    }

    /// The purged position in the durable view.
    pub fn durable_prev(&self) -> LogId {
        self.lock().durable_prev()
    }

    /// The last durable entry, or the durable `prev` if the durable log is empty.
    pub fn durable_last(&self) -> LogId {
        self.lock().durable_last()
    }

    /// Every entry held in the volatile view, in index order.
    pub fn entries_snapshot(&self) -> Vec<Entry> {
        self.lock().log.entries.clone()
    }

    /// The entries with indexes in `start..=end` held in the volatile view (those in
    /// range that it holds), in index order. For checkers; not bound to an incarnation.
    pub fn entries_in(&self, start: LogIndex, end: LogIndex) -> Vec<Entry> {
        let inner = self.lock();
        let log = &inner.log;
        let first = start.max(log.prev.index + 1);
        if first > end {
            return Vec::new();
        }
        let from = log.offset(first).min(log.entries.len());
        let to = log.offset(end).saturating_add(1).min(log.entries.len());
        log.entries[from..to.max(from)].to_vec()
    }

    /// Every entry held in the durable view, in index order.
    pub fn durable_entries(&self) -> Vec<Entry> {
        self.lock().durable().entries
    }

    /// The term of the entry at `index` in the volatile view (`prev.term` at
    /// `prev.index`), or `None` if the view does not hold that position.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.lock().log.term_at(index)
    }

    /// The number of writes (including purges) in the volatile view that are not yet
    /// durable.
    pub fn pending_writes(&self) -> usize {
        self.lock().pending.len()
    }

    /// The metadata of the latest finished snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.lock().snapshot.as_ref().map(|(m, _)| m.clone())
    }

    /// Flips one bit of the held snapshot's data (at `offset` modulo its length), as a
    /// disk might: reading it back must then fail its checksum. Returns whether a
    /// non-empty snapshot was there to damage.
    pub fn corrupt_snapshot(&self, offset: usize) -> bool {
        let mut inner = self.lock();
        let Some((_, data)) = &mut inner.snapshot else { return false };
        let data = Arc::make_mut(data);
        let len = data.len();
        match data.get_mut(offset % len.max(1)) {
            Some(b) => {
                *b ^= 0x10;
                true
            }
            None => false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> MemStoreStats {
        self.lock().stats
    }

    /// Validates `op`, applies it to the volatile view and queues its undo record. `Ok(None)` means the
    /// op was a no-op or needs no sync.
    fn begin(&mut self, op: Op<'_>) -> Result<Option<Ticket>, StoreError> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let epoch = bind(&mut self.incarnation, inner)?;
        if let Some(why) = &inner.failed {
            return Err(StoreError::Failed(why.clone()));
        }
        if !inner.log.validate(&op)? {
            return Ok(None);
        }
        let undo = inner.log.apply(op);
        let synced = undo.is_synced();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if !synced {
            inner.stats.purges += 1;
        }
        inner.pending.push_back((seq, undo));
        if !synced {
            return Ok(None);
        }
        if inner.fail_next {
            inner.fail_next = false;
            inner.stats.failed_writes += 1;
            let why = "an injected write failure".to_string();
            inner.failed = Some(why.clone());
            return Err(StoreError::Io(io::Error::other(why)));
        }
        Ok(Some(Ticket { epoch, seq, delay: inner.delay.clone() }))
    }

    /// Waits for the write behind `ticket` to become durable.
    async fn complete(&self, ticket: Ticket) -> Result<(), StoreError> {
        if let Some(delay) = &ticket.delay {
            delay().await;
        }
        let mut inner = self.lock();
        if inner.epoch != ticket.epoch {
            inner.stats.stale_calls += 1;
            return Err(stale_error(ticket.epoch, inner.epoch));
        }
        if let Some(why) = &inner.failed {
            return Err(StoreError::Failed(why.clone()));
        }
        inner.sync_through(ticket.seq);
        inner.stats.syncs += 1;
        Ok(())
    }

    /// Runs a synced write; `Ok(true)` if it had an effect.
    async fn write(&mut self, op: Op<'_>) -> Result<bool, StoreError> {
        match self.begin(op)? {
            Some(ticket) => self.complete(ticket).await.map(|()| true),
            None => Ok(false),
        }
    }
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl Clone for MemStore {
    /// A new handle to the same data, not bound to an incarnation yet.
    fn clone(&self) -> Self {
        MemStore { inner: Arc::clone(&self.inner), incarnation: None }
    }
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemStore")
            .field("epoch", &inner.epoch)
            .field("incarnation", &self.incarnation)
            .field("prev", &inner.log.prev)
            .field("last", &inner.log.last())
            .field("durable_last", &inner.durable_last())
            .field("pending", &inner.pending.len())
            .field("failed", &inner.failed)
            .finish()
    }
}

#[async_trait]
impl LogStore for MemStore {
    async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        bind(&mut self.incarnation, inner)?;
        Ok(InitialState { hard_state: inner.log.hard_state, prev: inner.log.prev, last: inner.log.last() })
    }

    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.write(Op::HardState(*hs)).await?;
        self.lock().stats.hard_state_saves += 1;
        Ok(())
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.write(Op::Append(entries)).await?;
        let mut inner = self.lock();
        inner.stats.appends += 1;
        inner.stats.appended_entries += entries.len() as u64;
        Ok(())
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
        if self.write(Op::Truncate(from)).await? {
            self.lock().stats.truncates += 1;
        }
        Ok(())
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
        self.begin(Op::Purge(upto)).map(|_| ())
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        let incarnation = self.incarnation.unwrap_or_else(|| self.lock().epoch);
        Arc::new(MemSnapshots { inner: Arc::clone(&self.inner), incarnation })
    }

    async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
        let matches = {
            let mut guard = lock(&self.inner);
            let inner = &mut *guard;
            bind(&mut self.incarnation, inner)?;
            inner.log.term_at(snapshot.index) == Some(snapshot.term)
        };
        if matches {
            return self.begin(Op::Purge(snapshot.index)).map(|_| ());
        }
        if self.write(Op::Reset(snapshot)).await? {
            self.lock().stats.resets += 1;
        }
        Ok(())
    }

    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        bind(&mut self.incarnation, inner)?;
        let view = &inner.log;
        if start > end {
            return Err(StoreError::Invalid(format!("entries range {start}..{end} is reversed")));
        }
        if start == end {
            return Ok(Vec::new());
        }
        if start <= view.prev.index || end > view.last().index + 1 {
            return Err(StoreError::Unavailable { start, end });
        }
        Ok(view.entries[view.offset(start)..view.offset(end)].to_vec())
    }
}

/// The snapshots of a [`MemStore`]: one handle per incarnation. A snapshot is durable
/// once finished; a writer of an incarnation that crashed before it finished fails and
/// leaves the previous snapshot in place.
struct MemSnapshots {
    inner: Arc<Mutex<Inner>>,
    incarnation: u64,
}

impl MemSnapshots {
    fn held(&self, last: LogId) -> Result<(SnapshotMeta, Arc<Vec<u8>>), StoreError> {
        let inner = lock(&self.inner);
        match &inner.snapshot {
            Some((meta, data)) if meta.last == last => Ok((meta.clone(), Arc::clone(data))),
            _ => Err(StoreError::Unavailable { start: last.index, end: last.index }),
        }
    }
}

impl SnapshotStore for MemSnapshots {
    fn create(
        &self,
        last: LogId,
        membership: &Membership,
        membership_index: LogIndex,
    ) -> Result<Box<dyn SnapshotWriter>, StoreError> {
        let inner = lock(&self.inner);
        if inner.epoch != self.incarnation {
            return Err(stale_error(self.incarnation, inner.epoch));
        }
        Ok(Box::new(MemSnapshotWriter {
            inner: Arc::clone(&self.inner),
            incarnation: self.incarnation,
            last,
            membership: membership.clone(),
            membership_index,
            data: ChecksumWriter::new(Vec::new()),
        }))
    }

    fn latest(&self) -> Result<Option<SnapshotMeta>, StoreError> {
        Ok(lock(&self.inner).snapshot.as_ref().map(|(m, _)| m.clone()))
    }

    fn open(&self, last: LogId) -> Result<Box<dyn io::Read + Send>, StoreError> {
        let (meta, data) = self.held(last)?;
        Ok(Box::new(ChecksumReader::new(io::Cursor::new(SharedBytes(data)), &meta)))
    }

    fn read_chunk(&self, last: LogId, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let (_, data) = self.held(last)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data.get(start..end).unwrap_or_default().to_vec())
    }
}

/// Shared snapshot bytes as a byte slice, for a cursor.
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

struct MemSnapshotWriter {
    inner: Arc<Mutex<Inner>>,
    incarnation: u64,
    last: LogId,
    membership: Membership,
    membership_index: LogIndex,
    data: ChecksumWriter<Vec<u8>>,
}

impl io::Write for MemSnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotWriter for MemSnapshotWriter {
    fn finish(self: Box<Self>) -> Result<SnapshotMeta, StoreError> {
        let meta = SnapshotMeta {
            last: self.last,
            membership: self.membership,
            membership_index: self.membership_index,
            size: self.data.size(),
            checksum: self.data.checksum(),
        };
        let mut inner = lock(&self.inner);
        if inner.epoch != self.incarnation {
            inner.stats.stale_calls += 1;
            return Err(stale_error(self.incarnation, inner.epoch));
        }
        if let Some((held, _)) = &inner.snapshot {
            if held.last.index > meta.last.index {
                return Err(StoreError::Invalid(format!(
                    "snapshot at index {} is older than the one held at index {}",
                    meta.last.index, held.last.index
                )));
            }
        }
        inner.snapshot = Some((meta.clone(), Arc::new(self.data.into_inner())));
        inner.stats.snapshots_saved += 1;
        Ok(meta)
    }
}

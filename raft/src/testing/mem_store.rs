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

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::StoreError;
use crate::storage::{InitialState, LogStore};
use crate::sync::lock;
use crate::types::{Entry, HardState, LogId, LogIndex, Term};

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
    /// Crashes that left an in-flight append partially written (a non-empty strict prefix
    /// of its entries).
    pub torn_appends: u64,
}

/// One write, checked against the contract by [`LogState::validate`] before it is applied.
#[derive(Clone, Copy, Debug)]
enum Op<'a> {
    Append(&'a [Entry]),
    Truncate(LogIndex),
    HardState(HardState),
    Purge(LogIndex),
}

/// What it takes to roll back one write that is applied to the log but not yet durable.
#[derive(Clone, Debug)]
enum Undo {
    /// An append of `count` (at least one) entries to a log that ended at `prev_last`.
    Append { prev_last: LogId, count: usize },
    /// A truncate, with the entries it removed (at least one).
    Truncate(Vec<Entry>),
    /// A hard state write, with the hard state it replaced.
    HardState(HardState),
    /// A purge, with the `prev` it replaced and the entries it removed (at least one).
    Purge { prev: LogId, removed: Vec<Entry> },
}

impl Undo {
    /// Whether the write is one that the caller awaits until it is durable (all but
    /// purge).
    fn is_synced(&self) -> bool {
        !matches!(self, Undo::Purge { .. })
    }
}

/// The store's data: the hard state and the log.
#[derive(Clone, Debug, Default)]
struct LogState {
    hard_state: HardState,
    prev: LogId,
    entries: Vec<Entry>,
}

impl LogState {
    fn last(&self) -> LogId {
        self.entries.last().map_or(self.prev, log_id)
    }

    /// The position in `entries` of the entry with `index`, which must be above `prev`.
    fn offset(&self, index: LogIndex) -> usize {
        usize::try_from(index.saturating_sub(self.prev.index).saturating_sub(1)).unwrap_or(usize::MAX)
    }

    /// Checks `op` against the contract. `Ok(false)` means it is valid but a no-op.
    fn validate(&self, op: &Op<'_>) -> Result<bool, StoreError> {
        let last = self.last();
        match op {
            Op::Append(entries) => {
                let Some(first) = entries.first() else {
                    return Err(StoreError::Invalid("append of no entries".into()));
                };
                if first.index != last.index + 1 {
                    return Err(StoreError::Invalid(format!(
                        "append starting at index {} but the log ends at {}",
                        first.index, last.index
                    )));
                }
                if let Some(w) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
                    return Err(StoreError::Invalid(format!(
                        "append of non-contiguous entries: index {} follows {}",
                        w[1].index, w[0].index
                    )));
                }
                Ok(true)
            }
            Op::Truncate(from) => {
                if *from <= self.prev.index {
                    return Err(StoreError::Invalid(format!(
                        "truncate from {from} at or below the purged position {}",
                        self.prev.index
                    )));
                }
                Ok(*from <= last.index)
            }
            Op::HardState(_) => Ok(true),
            Op::Purge(upto) => {
                if *upto > last.index {
                    return Err(StoreError::Invalid(format!(
                        "purge up to {upto} beyond the last index {}",
                        last.index
                    )));
                }
                Ok(*upto > self.prev.index)
            }
        }
    }

    /// Applies `op`, which [`validate`](Self::validate) accepted as valid and not a no-op,
    /// and returns what rolls it back. An append clones its entries once; nothing else is
    /// copied (removed entries move into the undo record).
    fn apply(&mut self, op: Op<'_>) -> Undo {
        match op {
            Op::Append(entries) => {
                let prev_last = self.last();
                self.entries.extend_from_slice(entries);
                Undo::Append { prev_last, count: entries.len() }
            }
            Op::Truncate(from) => {
                let keep = self.offset(from);
                Undo::Truncate(self.entries.split_off(keep))
            }
            Op::HardState(hs) => Undo::HardState(std::mem::replace(&mut self.hard_state, hs)),
            Op::Purge(upto) => {
                let count = self.offset(upto) + 1;
                let removed: Vec<Entry> = self.entries.drain(..count).collect();
                let term = removed.last().map_or(self.prev.term, |e| e.term);
                let prev = std::mem::replace(&mut self.prev, LogId { term, index: upto });
                Undo::Purge { prev, removed }
            }
        }
    }

    /// Rolls back the last write applied, given its undo record.
    fn roll_back(&mut self, undo: Undo) {
        match undo {
            Undo::Append { count, .. } => self.drop_last(count),
            Undo::Truncate(mut removed) => self.entries.append(&mut removed),
            Undo::HardState(hs) => self.hard_state = hs,
            Undo::Purge { prev, mut removed } => {
                removed.append(&mut self.entries);
                self.entries = removed;
                self.prev = prev;
            }
        }
    }

    /// Removes the last `count` entries.
    fn drop_last(&mut self, count: usize) {
        let keep = self.entries.len().saturating_sub(count);
        self.entries.truncate(keep);
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev.index {
            return Some(self.prev.term);
        }
        if index < self.prev.index {
            return None;
        }
        self.entries.get(self.offset(index)).map(|e| e.term)
    }
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
                Undo::Purge { prev, .. } => Some(*prev),
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
                _ => None,
            })
            .unwrap_or_else(|| self.log.last())
    }
}

fn log_id(e: &Entry) -> LogId {
    LogId { term: e.term, index: e.index }
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use futures::executor::block_on;

    use super::*;
    use crate::types::EntryPayload;

    fn entry(term: Term, index: LogIndex) -> Entry {
        Entry { term, index, payload: EntryPayload::Command(Bytes::from(vec![index as u8; 3])) }
    }

    fn entries(term: Term, range: std::ops::RangeInclusive<LogIndex>) -> Vec<Entry> {
        range.map(|i| entry(term, i)).collect()
    }

    /// A write delay that holds every write until the returned flag is set.
    fn gate() -> (DelayFn, Arc<AtomicBool>) {
        let open = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&open);
        let delay: DelayFn = Arc::new(move || {
            let flag = Arc::clone(&flag);
            Box::pin(futures::future::poll_fn(move |_| {
                if flag.load(Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }))
        });
        (delay, open)
    }

    /// Polls a future once with a no-op waker.
    fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        let waker = futures::task::noop_waker();
        Pin::new(fut).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn writes_without_delay_are_durable_at_once() {
        let harness = MemStore::new();
        let mut node = harness.clone();
        block_on(async {
            node.append(&entries(1, 1..=3)).await.unwrap();
            node.save_hard_state(&HardState { term: 1, voted_for: Some(2) }).await.unwrap();
            node.truncate(3).await.unwrap();
        });
        assert_eq!(harness.durable_last(), LogId { term: 1, index: 2 });
        assert_eq!(harness.durable_hard_state(), HardState { term: 1, voted_for: Some(2) });
        assert_eq!(harness.pending_writes(), 0);
        let stats = harness.stats();
        assert_eq!((stats.appends, stats.hard_state_saves, stats.truncates, stats.syncs), (1, 1, 1, 3));
    }

    #[test]
    fn delayed_write_is_visible_before_it_is_durable() {
        let harness = MemStore::new();
        let mut node = harness.clone();
        let (delay, open) = gate();
        harness.set_write_delay(Some(delay));
        let batch = entries(1, 1..=2);
        let mut fut = node.append(&batch);
        assert!(poll_once(&mut fut).is_pending());
        assert_eq!(harness.last(), LogId { term: 1, index: 2 });
        assert_eq!(harness.durable_last(), LogId::default());
        assert_eq!(harness.pending_writes(), 1);
        open.store(true, Ordering::SeqCst);
        assert!(matches!(poll_once(&mut fut), Poll::Ready(Ok(()))));
        drop(fut);
        assert_eq!(harness.durable_last(), LogId { term: 1, index: 2 });
        assert_eq!(harness.stats().syncs, 1);
    }

    #[test]
    fn crash_during_append_leaves_a_prefix() {
        let (mut none, mut torn, mut full) = (0, 0, 0);
        for seed in 0..300 {
            let harness = MemStore::new();
            let mut node = harness.clone();
            block_on(node.append(&entries(1, 1..=3))).unwrap();
            let (delay, _open) = gate();
            harness.set_write_delay(Some(delay));
            let batch = entries(2, 4..=10);
            let mut fut = node.append(&batch);
            assert!(poll_once(&mut fut).is_pending());
            harness.crash(&mut fastrand::Rng::with_seed(seed));
            drop(fut);
            let all: Vec<Entry> = entries(1, 1..=3).into_iter().chain(batch.iter().cloned()).collect();
            let kept = harness.entries_snapshot();
            assert!(kept.len() >= 3, "durable entries were lost");
            assert_eq!(kept[..], all[..kept.len()], "the log after a crash is a prefix of what was written");
            assert_eq!(harness.durable_entries(), kept);
            assert_eq!(harness.durable_last(), harness.last());
            match kept.len() {
                3 => none += 1,
                10 => full += 1,
                _ => torn += 1,
            }
        }
        assert!(none > 0 && torn > 0 && full > 0, "outcomes: none {none}, torn {torn}, full {full}");
    }

    #[test]
    fn crash_keeps_durable_data_and_hard_state_writes_are_atomic() {
        let (mut old, mut new) = (0, 0);
        for seed in 0..100 {
            let harness = MemStore::new();
            let mut node = harness.clone();
            let first = HardState { term: 3, voted_for: Some(1) };
            block_on(async {
                node.append(&entries(1, 1..=5)).await.unwrap();
                node.save_hard_state(&first).await.unwrap();
            });
            let (delay, _open) = gate();
            harness.set_write_delay(Some(delay));
            let second = HardState { term: 4, voted_for: Some(2) };
            let mut fut = node.save_hard_state(&second);
            assert!(poll_once(&mut fut).is_pending());
            assert_eq!(harness.hard_state(), second);
            harness.crash(&mut fastrand::Rng::with_seed(seed));
            drop(fut);
            let hs = harness.hard_state();
            if hs == first {
                old += 1;
            } else {
                assert_eq!(hs, second, "a hard state write is atomic");
                new += 1;
            }
            assert_eq!(harness.entries_snapshot(), entries(1, 1..=5));

            let mut restarted = harness.clone();
            harness.set_write_delay(None);
            let state = block_on(restarted.initial_state()).unwrap();
            assert_eq!(state.last, LogId { term: 1, index: 5 });
            assert_eq!(state.hard_state, hs);
        }
        assert!(old > 0 && new > 0, "outcomes: old {old}, new {new}");
    }

    #[test]
    fn crash_may_undo_a_purge_but_never_loses_other_entries() {
        let mut undone = 0;
        for seed in 0..50 {
            let harness = MemStore::new();
            let mut node = harness.clone();
            block_on(async {
                node.append(&entries(1, 1..=6)).await.unwrap();
                node.purge(3).await.unwrap();
            });
            assert_eq!(harness.prev(), LogId { term: 1, index: 3 });
            harness.crash(&mut fastrand::Rng::with_seed(seed));
            let prev = harness.prev();
            assert!(prev == LogId { term: 1, index: 3 } || prev == LogId::default(), "prev {prev:?}");
            if prev.index == 0 {
                undone += 1;
            }
            assert_eq!(harness.last(), LogId { term: 1, index: 6 });
        }
        assert!(undone > 0);

        // A later write makes an earlier purge durable.
        let harness = MemStore::new();
        let mut node = harness.clone();
        block_on(async {
            node.append(&entries(1, 1..=6)).await.unwrap();
            node.purge(3).await.unwrap();
            node.append(&entries(1, 7..=7)).await.unwrap();
        });
        assert_eq!(harness.durable_prev(), LogId { term: 1, index: 3 });
    }

    #[test]
    fn stale_in_flight_write_does_nothing_after_crash() {
        let harness = MemStore::new();
        let mut old_node = harness.clone();
        block_on(old_node.append(&entries(1, 1..=2))).unwrap();
        let (delay, open) = gate();
        harness.set_write_delay(Some(delay));
        let batch = entries(1, 3..=4);
        let mut fut = old_node.append(&batch);
        assert!(poll_once(&mut fut).is_pending());

        harness.crash(&mut fastrand::Rng::with_seed(1));
        let survived = harness.last();
        assert!(survived.index >= 2);

        // The new incarnation writes something else.
        harness.set_write_delay(None);
        let mut new_node = harness.clone();
        let next = survived.index + 1;
        block_on(new_node.append(&entries(2, next..=next))).unwrap();
        let after = harness.entries_snapshot();

        // The old write resumes: it fails and changes nothing.
        open.store(true, Ordering::SeqCst);
        match poll_once(&mut fut) {
            Poll::Ready(Err(StoreError::Io(_))) => {}
            other => panic!("stale write must fail with Io, got {other:?}"),
        }
        drop(fut);
        assert_eq!(harness.entries_snapshot(), after);
        assert_eq!(harness.durable_entries(), after);

        // Any later call through the old handle fails too.
        assert!(matches!(block_on(old_node.initial_state()), Err(StoreError::Io(_))));
        assert!(matches!(block_on(old_node.append(&entries(2, next + 1..=next + 1))), Err(StoreError::Io(_))));
        assert!(block_on(old_node.entries(1, 2)).is_err());
        assert_eq!(harness.entries_snapshot(), after);
        assert_eq!(harness.stats().stale_calls, 4);
        assert_eq!(harness.epoch(), 1);
    }

    #[test]
    fn injected_failure_is_fail_stop() {
        let harness = MemStore::new();
        let mut node = harness.clone();
        block_on(node.append(&entries(1, 1..=2))).unwrap();
        harness.fail_next_write();
        // An invalid call neither consumes the armed failure nor fails the store.
        assert!(matches!(block_on(node.append(&entries(1, 5..=5))), Err(StoreError::Invalid(_))));
        assert!(!harness.is_failed());
        assert!(matches!(block_on(node.append(&entries(1, 3..=3))), Err(StoreError::Io(_))));
        assert!(harness.is_failed());
        assert_eq!(harness.durable_last(), LogId { term: 1, index: 2 }, "a failed write is not durable");
        assert!(matches!(block_on(node.append(&entries(1, 4..=4))), Err(StoreError::Failed(_))));
        assert!(matches!(block_on(node.truncate(2)), Err(StoreError::Failed(_))));
        assert!(matches!(block_on(node.save_hard_state(&HardState::default())), Err(StoreError::Failed(_))));
        assert!(matches!(block_on(node.purge(1)), Err(StoreError::Failed(_))));
        assert_eq!(block_on(node.entries(1, 3)).unwrap(), entries(1, 1..=2));
        assert_eq!(harness.stats().failed_writes, 1);

        // After a crash a new incarnation can write again.
        harness.crash(&mut fastrand::Rng::with_seed(7));
        assert!(!harness.is_failed());
        let mut restarted = harness.clone();
        let state = block_on(restarted.initial_state()).unwrap();
        assert!(state.last.index == 2 || state.last.index == 3);
        block_on(restarted.append(&entries(2, state.last.index + 1..=state.last.index + 1))).unwrap();
    }

    #[test]
    fn contract_violations_are_invalid_and_write_nothing() {
        let harness = MemStore::new();
        let mut node = harness.clone();
        block_on(async {
            assert!(matches!(node.append(&[]).await, Err(StoreError::Invalid(_))));
            assert!(matches!(node.append(&entries(1, 2..=3)).await, Err(StoreError::Invalid(_))));
            let gap = vec![entry(1, 1), entry(1, 3)];
            assert!(matches!(node.append(&gap).await, Err(StoreError::Invalid(_))));
            assert!(matches!(node.truncate(0).await, Err(StoreError::Invalid(_))));
            assert!(matches!(node.purge(1).await, Err(StoreError::Invalid(_))));
            assert!(matches!(node.entries(2, 1).await, Err(StoreError::Invalid(_))));
        });
        assert_eq!(harness.last(), LogId::default());
        assert_eq!(harness.stats(), MemStoreStats::default());
    }

    /// A write as the model records it.
    #[derive(Clone, Debug)]
    enum ModelOp {
        Append(Vec<Entry>),
        Truncate(LogIndex),
        HardState(HardState),
        Purge(LogIndex),
    }

    /// What the model expects a write to return when first polled.
    #[derive(Debug, PartialEq)]
    enum Expect {
        Invalid,
        Refused,
        Done,
        Injected,
        Queued(u64),
    }

    /// A straightforward reference: two full copies of the data, the durable one rebuilt
    /// by replaying the queued writes in order.
    #[derive(Default)]
    struct Model {
        volatile: LogState,
        durable: LogState,
        pending: VecDeque<(u64, ModelOp)>,
        next_seq: u64,
        failed: bool,
        fail_next: bool,
    }

    fn model_apply(state: &mut LogState, op: &ModelOp) {
        match op {
            ModelOp::Append(entries) => state.entries.extend_from_slice(entries),
            ModelOp::Truncate(from) => {
                let keep = state.offset(*from);
                state.entries.truncate(keep);
            }
            ModelOp::HardState(hs) => state.hard_state = *hs,
            ModelOp::Purge(upto) => {
                let count = state.offset(*upto) + 1;
                let term = state.entries[count - 1].term;
                state.entries.drain(..count);
                state.prev = LogId { term, index: *upto };
            }
        }
    }

    impl Model {
        fn begin(&mut self, op: &ModelOp) -> Expect {
            if self.failed {
                return Expect::Refused;
            }
            let checked = match op {
                ModelOp::Append(entries) => self.volatile.validate(&Op::Append(entries)),
                ModelOp::Truncate(from) => self.volatile.validate(&Op::Truncate(*from)),
                ModelOp::HardState(hs) => self.volatile.validate(&Op::HardState(*hs)),
                ModelOp::Purge(upto) => self.volatile.validate(&Op::Purge(*upto)),
            };
            match checked {
                Err(_) => return Expect::Invalid,
                Ok(false) => return Expect::Done,
                Ok(true) => {}
            }
            model_apply(&mut self.volatile, op);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.pending.push_back((seq, op.clone()));
            if let ModelOp::Purge(_) = op {
                return Expect::Done;
            }
            if self.fail_next {
                self.fail_next = false;
                self.failed = true;
                return Expect::Injected;
            }
            Expect::Queued(seq)
        }

        fn sync_through(&mut self, seq: u64) {
            while self.pending.front().is_some_and(|(s, _)| *s <= seq) {
                let (_, op) = self.pending.pop_front().unwrap();
                model_apply(&mut self.durable, &op);
            }
        }

        fn crash(&mut self, rng: &mut fastrand::Rng) {
            let pending: Vec<ModelOp> = self.pending.drain(..).map(|(_, op)| op).collect();
            let kept = rng.usize(..=pending.len());
            for op in &pending[..kept] {
                model_apply(&mut self.durable, op);
            }
            if let Some(ModelOp::Append(entries)) = pending.get(kept) {
                let torn = rng.usize(..entries.len());
                if torn > 0 {
                    model_apply(&mut self.durable, &ModelOp::Append(entries[..torn].to_vec()));
                }
            }
            self.volatile = self.durable.clone();
            self.failed = false;
        }
    }

    fn random_op(rng: &mut fastrand::Rng, state: &LogState, term: &mut Term) -> ModelOp {
        let (prev, last) = (state.prev.index, state.last().index);
        match rng.u32(..20) {
            0..=9 => {
                if rng.u32(..5) == 0 {
                    *term += 1;
                }
                let start = if rng.u32(..20) == 0 { last + 2 } else { last + 1 };
                ModelOp::Append(entries(*term, start..=start + rng.u64(..4)))
            }
            10..=12 => ModelOp::Truncate(rng.u64(prev..=last + 1)),
            13..=16 => {
                ModelOp::HardState(HardState { term: rng.u64(..10), voted_for: rng.bool().then(|| rng.u64(..5)) })
            }
            _ => ModelOp::Purge(rng.u64(prev..=last + 1)),
        }
    }

    fn run_op(mut node: MemStore, op: ModelOp) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move {
            match op {
                ModelOp::Append(entries) => node.append(&entries).await,
                ModelOp::Truncate(from) => node.truncate(from).await,
                ModelOp::HardState(hs) => node.save_hard_state(&hs).await,
                ModelOp::Purge(upto) => node.purge(upto).await,
            }
        })
    }

    fn assert_matches_model(store: &MemStore, model: &Model, what: &str) {
        assert_eq!(store.entries_snapshot(), model.volatile.entries, "{what}: entries");
        assert_eq!(store.last(), model.volatile.last(), "{what}: last");
        assert_eq!(store.prev(), model.volatile.prev, "{what}: prev");
        assert_eq!(store.hard_state(), model.volatile.hard_state, "{what}: hard state");
        assert_eq!(store.durable_entries(), model.durable.entries, "{what}: durable entries");
        assert_eq!(store.durable_last(), model.durable.last(), "{what}: durable last");
        assert_eq!(store.durable_prev(), model.durable.prev, "{what}: durable prev");
        assert_eq!(store.durable_hard_state(), model.durable.hard_state, "{what}: durable hard state");
        assert_eq!(store.pending_writes(), model.pending.len(), "{what}: pending writes");
    }

    #[test]
    fn matches_a_two_copy_model_under_random_writes_and_crashes() {
        type InFlight = (BoxFuture<'static, Result<(), StoreError>>, Arc<AtomicBool>, u64);
        let mut torn = 0;
        for seed in 0..300 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let harness = MemStore::new();
            let mut model = Model::default();
            let gates: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
            let delay: DelayFn = {
                let gates = Arc::clone(&gates);
                Arc::new(move || {
                    let flag = Arc::new(AtomicBool::new(false));
                    gates.lock().unwrap().push(Arc::clone(&flag));
                    Box::pin(futures::future::poll_fn(move |_| {
                        if flag.load(Ordering::SeqCst) {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    }))
                })
            };
            let mut in_flight: Vec<InFlight> = Vec::new();
            let mut term = 1;
            for step in 0..80 {
                let what = format!("seed {seed} step {step}");
                match rng.u32(..12) {
                    0..=6 => {
                        let delayed = rng.bool();
                        harness.set_write_delay(delayed.then(|| Arc::clone(&delay)));
                        if rng.u32(..25) == 0 {
                            harness.fail_next_write();
                            model.fail_next = true;
                        }
                        let op = random_op(&mut rng, &model.volatile, &mut term);
                        let gated = gates.lock().unwrap().len();
                        let mut fut = run_op(harness.clone(), op.clone());
                        let polled = poll_once(&mut fut);
                        let expect = model.begin(&op);
                        match (&expect, polled) {
                            (Expect::Invalid, Poll::Ready(Err(StoreError::Invalid(_))))
                            | (Expect::Refused, Poll::Ready(Err(StoreError::Failed(_))))
                            | (Expect::Injected, Poll::Ready(Err(StoreError::Io(_))))
                            | (Expect::Done, Poll::Ready(Ok(()))) => {}
                            (Expect::Queued(seq), Poll::Ready(Ok(()))) if !delayed => model.sync_through(*seq),
                            (Expect::Queued(seq), Poll::Pending) if delayed => {
                                let gate =
                                    gates.lock().unwrap().get(gated).cloned().expect("the write awaits its delay");
                                in_flight.push((fut, gate, *seq));
                            }
                            (_, polled) => panic!("{what}: {op:?} expected {expect:?}, got {polled:?}"),
                        }
                    }
                    7..=9 if !in_flight.is_empty() => {
                        let (mut fut, gate, seq) = in_flight.swap_remove(rng.usize(..in_flight.len()));
                        gate.store(true, Ordering::SeqCst);
                        match poll_once(&mut fut) {
                            Poll::Ready(Ok(())) if !model.failed => model.sync_through(seq),
                            Poll::Ready(Err(StoreError::Failed(_))) if model.failed => {}
                            other => panic!("{what}: completion got {other:?}, failed {}", model.failed),
                        }
                    }
                    _ => {
                        let mut a = fastrand::Rng::with_seed(rng.u64(..));
                        let mut b = a.clone();
                        let torn_before = harness.stats().torn_appends;
                        harness.crash(&mut a);
                        model.crash(&mut b);
                        assert_eq!(a.u64(..), b.u64(..), "{what}: the crash drew other random numbers");
                        torn += harness.stats().torn_appends - torn_before;
                        // Writes of the crashed incarnation fail and change nothing.
                        for (mut fut, gate, _) in in_flight.drain(..) {
                            gate.store(true, Ordering::SeqCst);
                            assert!(matches!(poll_once(&mut fut), Poll::Ready(Err(StoreError::Io(_)))), "{what}");
                        }
                    }
                }
                assert_matches_model(&harness, &model, &what);
            }
        }
        assert!(torn > 0, "no crash tore an append");
    }
}

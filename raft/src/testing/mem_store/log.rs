//! The log model under the store: [`LogState`] (hard state, purged position and
//! entries), the writes checked against the contract, and the undo records that roll
//! back a write not yet durable.

use crate::error::StoreError;
use crate::types::{Entry, HardState, LogId, LogIndex, Term};

/// One write, checked against the contract by [`LogState::validate`] before it is applied.
#[derive(Clone, Copy, Debug)]
pub(super) enum Op<'a> {
    Append(&'a [Entry]),
    Truncate(LogIndex),
    HardState(HardState),
    Purge(LogIndex),
    /// Empty the log and make it continue after the given position (a snapshot's last
    /// entry that the log does not hold).
    Reset(LogId),
}

/// What it takes to roll back one write that is applied to the log but not yet durable.
#[derive(Clone, Debug)]
pub(super) enum Undo {
    /// An append of `count` (at least one) entries to a log that ended at `prev_last`.
    Append { prev_last: LogId, count: usize },
    /// A truncate, with the entries it removed (at least one).
    Truncate(Vec<Entry>),
    /// A hard state write, with the hard state it replaced.
    HardState(HardState),
    /// A purge, with the `prev` it replaced and the entries it removed (at least one).
    Purge { prev: LogId, removed: Vec<Entry> },
    /// A reset, with the `prev` it replaced and every entry it removed.
    Reset { prev: LogId, removed: Vec<Entry> },
}

impl Undo {
    /// Whether the write is one that the caller awaits until it is durable (all but
    /// purge).
    pub(super) fn is_synced(&self) -> bool {
        !matches!(self, Undo::Purge { .. })
    }
}

/// The store's data: the hard state and the log.
#[derive(Clone, Debug, Default)]
pub(super) struct LogState {
    pub(super) hard_state: HardState,
    pub(super) prev: LogId,
    pub(super) entries: Vec<Entry>,
}

impl LogState {
    pub(super) fn last(&self) -> LogId {
        self.entries.last().map_or(self.prev, log_id)
    }

    /// The position in `entries` of the entry with `index`, which must be above `prev`.
    pub(super) fn offset(&self, index: LogIndex) -> usize {
        usize::try_from(index.saturating_sub(self.prev.index).saturating_sub(1)).unwrap_or(usize::MAX)
    }

    /// Checks `op` against the contract. `Ok(false)` means it is valid but a no-op.
    pub(super) fn validate(&self, op: &Op<'_>) -> Result<bool, StoreError> {
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
            Op::Reset(to) => Ok(to.index > self.prev.index),
        }
    }

    /// Applies `op`, which [`validate`](Self::validate) accepted as valid and not a no-op,
    /// and returns what rolls it back. An append clones its entries once; nothing else is
    /// copied (removed entries move into the undo record).
    pub(super) fn apply(&mut self, op: Op<'_>) -> Undo {
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
            Op::Reset(to) => {
                let removed = std::mem::take(&mut self.entries);
                let prev = std::mem::replace(&mut self.prev, to);
                Undo::Reset { prev, removed }
            }
        }
    }

    /// Rolls back the last write applied, given its undo record.
    pub(super) fn roll_back(&mut self, undo: Undo) {
        match undo {
            Undo::Append { count, .. } => self.drop_last(count),
            Undo::Truncate(mut removed) => self.entries.append(&mut removed),
            Undo::HardState(hs) => self.hard_state = hs,
            Undo::Purge { prev, mut removed } | Undo::Reset { prev, mut removed } => {
                removed.append(&mut self.entries);
                self.entries = removed;
                self.prev = prev;
            }
        }
    }

    /// Removes the last `count` entries.
    pub(super) fn drop_last(&mut self, count: usize) {
        let keep = self.entries.len().saturating_sub(count);
        self.entries.truncate(keep);
    }

    pub(super) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev.index {
            return Some(self.prev.term);
        }
        if index < self.prev.index {
            return None;
        }
        self.entries.get(self.offset(index)).map(|e| e.term)
    }
}

pub(super) fn log_id(e: &Entry) -> LogId {
    LogId { term: e.term, index: e.index }
}

//! The core's view of the replicated log: entries held in memory, the commit index and
//! how much of the log is known to be durable (paper §5.3, §5.4; figure 2's `log[]` and
//! `commitIndex`).
//!
//! ```text
//!   prev        trimmed                durable   commit          last
//!    |  (store)    |  (memory: entries)   |         |              |
//! ---+-------------+----------------------+---------+--------------+
//! ```
//!
//! `prev` is the snapshot point; entries up to `trimmed` are only in the store; `durable`
//! and `commit` are independent of each other (a follower may know an index committed
//! before its own copy is durable, a leader the reverse), and both are at most `last`.
//!
//! **Architecture invariant:** a committed entry is never truncated (Log Matching and
//! Leader Completeness, paper §5.3-5.4): `truncate_local` asserts it in debug builds and
//! the follower never truncates at or below its commit index.

use std::collections::VecDeque;

use super::{RaftCore, Role};
use crate::types::{Entry, EntryPayload, LogId, LogIndex, Term};

/// The core trims its in-memory log in chunks of at least this many entries (or a
/// quarter of `Config::max_cached_lag` if that is smaller).
const TRIM_CHUNK: u64 = 1 << 12;

/// The log as the protocol core sees it.
///
/// The log starts after `prev` (the snapshot point, `(0, 0)` without compaction). Only
/// a tail of it is held in memory: entries up to `trimmed` were applied and are durable,
/// so the core dropped them; they are read back from the store when a lagging peer needs
/// them. `durable` is the highest index known to be on stable storage *with the same
/// term as the entry held here*; truncation lowers it, a `Persisted` report raises it.
#[derive(Debug, Default)]
pub(crate) struct RaftLog {
    prev: LogId,
    /// The last entry dropped from memory (`prev` if none).
    trimmed: LogId,
    /// The entries after `trimmed`.
    entries: VecDeque<Entry>,
    /// Highest index durable in the store, matching this log.
    pub(crate) durable: LogIndex,
    /// Highest index known to be committed (paper figure 2, `commitIndex`).
    pub(crate) commit: LogIndex,
}

impl RaftLog {
    /// A log holding `entries` after `prev`, all of them durable.
    #[cfg(test)]
    pub(crate) fn restore(prev: LogId, entries: Vec<Entry>) -> Self {
        Self::restore_after(prev, prev, entries)
    }

    /// A log that starts after `prev` and holds `entries` in memory after `from` (a
    /// snapshot's last entry, or `prev`); the entries in between are only in the store.
    /// Everything is durable, and everything up to `from` committed.
    pub(crate) fn restore_after(prev: LogId, from: LogId, entries: Vec<Entry>) -> Self {
        let trimmed = if from.index > prev.index { from } else { prev };
        let durable = entries.last().map_or(trimmed.index, |e| e.index);
        RaftLog { prev, trimmed, entries: entries.into(), durable, commit: trimmed.index }
    }

    /// The store purged the log up to `prev`: the log starts after it, and memory drops
    /// whatever it held up to it.
    pub(crate) fn set_prev(&mut self, prev: LogId) {
        if prev.index <= self.prev.index || prev.index > self.last_index() {
            return;
        }
        if prev.index > self.trimmed.index {
            self.trim_to(prev.index);
            self.trimmed = prev;
        }
        self.prev = prev;
    }

    /// Installs a snapshot that ends at `last` (paper §7): with `keep`, the log holds
    /// `last` and the entries after it stay; otherwise every entry goes. Either way the
    /// log starts after `last`, which is committed.
    pub(crate) fn install(&mut self, last: LogId, keep: bool) {
        if keep {
            if last.index > self.trimmed.index {
                self.trim_to(last.index);
            }
        } else {
            // What is durable of the old log is another history past the commit index;
            // the snapshot's entries become durable with the install.
            self.entries.clear();
            self.durable = self.durable.min(self.commit);
        }
        self.trimmed = last;
        self.prev = last;
        self.commit = self.commit.max(last.index);
    }

    /// The snapshot point: the log (in memory or in the store) starts after it.
    pub(crate) fn prev(&self) -> LogId {
        self.prev
    }

    /// The last entry no longer held in memory.
    pub(crate) fn trimmed(&self) -> LogId {
        self.trimmed
    }

    /// Drops entries up to `index` from memory; they must be applied and durable.
    pub(crate) fn trim_to(&mut self, index: LogIndex) {
        if index <= self.trimmed.index || index > self.last_index() {
            return;
        }
        let term = self.term_at(index).unwrap_or(self.trimmed.term);
        let n = (index - self.trimmed.index) as usize;
        self.entries.drain(..n);
        self.trimmed = LogId { term, index };
    }

    /// Number of entries held in memory.
    pub(crate) fn cached_len(&self) -> usize {
        self.entries.len()
    }

    /// The index of the last entry (or of `prev` for an empty log).
    pub(crate) fn last_index(&self) -> LogIndex {
        self.trimmed.index + self.entries.len() as u64
    }

    /// The term of the last entry (or of `prev`).
    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.trimmed.term, |e| e.term)
    }

    /// The position of the last entry.
    pub(crate) fn last_id(&self) -> LogId {
        LogId { index: self.last_index(), term: self.last_term() }
    }

    /// The term of the entry at `index`; `None` if memory does not hold it (beyond the
    /// end, trimmed, or compacted away before `prev`).
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.trimmed.index {
            return Some(self.trimmed.term);
        }
        if index == self.prev.index {
            return Some(self.prev.term);
        }
        if index < self.trimmed.index {
            return None;
        }
        self.entries.get((index - self.trimmed.index - 1) as usize).map(|e| e.term)
    }

    /// The entry at `index`, if held in memory.
    pub(crate) fn get(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.trimmed.index {
            return None;
        }
        self.entries.get((index - self.trimmed.index - 1) as usize)
    }

    /// Paper §5.4.1: is a log ending at `(last_index, last_term)` at least as up to date
    /// as ours?
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Appends an entry; its index must be `last_index() + 1`.
    pub(crate) fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push_back(entry);
    }

    /// Removes every entry with index `>= from`, lowering `durable` to match.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        let keep = from.saturating_sub(self.trimmed.index + 1) as usize;
        self.entries.truncate(keep);
        self.durable = self.durable.min(from.saturating_sub(1));
    }

    /// Clones entries in `start..` up to `max_count` entries and `max_bytes` bytes (at
    /// least one entry if any is available).
    pub(crate) fn slice(&self, start: LogIndex, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        if start <= self.trimmed.index || start > self.last_index() {
            return Vec::new();
        }
        let from = (start - self.trimmed.index - 1) as usize;
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.entries.range(from..) {
            let sz = e.approx_size();
            if out.len() >= max_count || (!out.is_empty() && bytes + sz > max_bytes) {
                break;
            }
            bytes += sz;
            out.push(e.clone());
        }
        out
    }

    /// Clones the entries in `start..=end`.
    pub(crate) fn range(&self, start: LogIndex, end: LogIndex) -> Vec<Entry> {
        if start > end || start <= self.trimmed.index {
            return Vec::new();
        }
        let from = (start - self.trimmed.index - 1) as usize;
        let to = ((end.min(self.last_index()) - self.trimmed.index) as usize).max(from);
        self.entries.range(from..to).cloned().collect()
    }

    /// The last index in `floor..=upto` whose entry has a term of at most `term`, or
    /// `floor` if there is none (thesis §5.3 conflict optimization, skipping a whole
    /// suffix of newer terms at once: terms never decrease along a log). Stops below
    /// the first held entry if even `prev` is newer than `term`.
    pub(crate) fn last_index_with_term_at_most(&self, term: Term, upto: LogIndex, floor: LogIndex) -> LogIndex {
        let mut i = upto.min(self.last_index());
        while i > floor && self.term_at(i).is_some_and(|t| t > term) {
            i -= 1;
        }
        i
    }
}

/// The core's operations on its own log: appending, truncating a conflicting suffix,
/// committing and trimming what is applied and durable (paper §5.3, §5.4).
impl RaftCore {
    /// Appends one entry in the current term to the local log (leader only) and queues
    /// it for persistence and replication.
    pub(crate) fn append_local(&mut self, payload: EntryPayload) -> LogIndex {
        let index = self.log.last_index() + 1;
        let entry = Entry { term: self.hs.term, index, payload };
        self.push_entry(entry);
        self.replicate_dirty = true;
        index
    }

    /// Adds an entry at the end of the log, tracking membership entries.
    pub(crate) fn push_entry(&mut self, entry: Entry) {
        if let EntryPayload::Membership(m) = &entry.payload {
            self.configs.push((entry.index, (**m).clone()));
            self.set_membership((**m).clone());
        }
        self.durability.queue_entry(entry.clone());
        self.log.push(entry);
    }

    /// Removes a conflicting suffix from `from` on (paper §5.3).
    pub(crate) fn truncate_local(&mut self, from: LogIndex) {
        debug_assert!(from > self.log.commit, "committed entries are never truncated");
        self.log.truncate_from(from);
        self.durability.queue_truncate(from);
        if self.configs.last().is_some_and(|(i, _)| *i >= from) {
            self.configs.retain(|(i, _)| *i < from);
            let m = self.configs.last().map(|(_, m)| m.clone()).unwrap_or_default();
            self.set_membership(m);
        }
    }

    /// Advances the commit index, dropping membership history that can no longer be
    /// truncated.
    pub(crate) fn set_commit(&mut self, commit: LogIndex) {
        if commit <= self.log.commit {
            return;
        }
        self.log.commit = commit;
        let keep_from = self.configs.iter().rposition(|(i, _)| *i <= commit).unwrap_or(0);
        if keep_from > 0 {
            self.configs.drain(..keep_from);
            self.configs_generation += 1;
            self.track_progress();
        }
    }

    /// Drops applied, durable entries from memory, keeping what peers that are not far
    /// behind still need.
    pub(crate) fn maybe_trim(&mut self) {
        let mut to = self.apply_index.min(self.log.durable);
        if self.role == Role::Leader {
            let slowest = self.progress.values().map(|p| p.match_index).min().unwrap_or(to);
            if to.saturating_sub(slowest) < self.cfg.max_cached_lag {
                to = to.min(slowest);
            }
        }
        let chunk = TRIM_CHUNK.min(self.cfg.max_cached_lag / 4).max(1);
        if to >= self.log.trimmed().index + chunk {
            self.log.trim_to(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry { term: t, index: i as u64 + 1, payload: EntryPayload::Blank })
            .collect();
        RaftLog::restore(LogId::default(), entries)
    }

    #[test]
    fn term_lookup_and_bounds() {
        let log = log_with_terms(&[1, 1, 2, 3]);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.last_term(), 3);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(5), None);
    }

    #[test]
    fn up_to_date_compares_last_term_then_index() {
        let log = log_with_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(5, 1));
        assert!(!log.is_up_to_date(2, 2));
    }

    #[test]
    fn truncation_lowers_durable_index() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.durable, 4);
        log.truncate_from(3);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.durable, 2);
    }

    #[test]
    fn conflict_hints_skip_newer_terms() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.last_index_with_term_at_most(3, 6, 0), 5, "skips the term-4 suffix");
        assert_eq!(log.last_index_with_term_at_most(2, 4, 0), 4, "already at most the term");
        assert_eq!(log.last_index_with_term_at_most(1, 6, 0), 2);
        assert_eq!(log.last_index_with_term_at_most(0, 6, 0), 0);
        assert_eq!(log.last_index_with_term_at_most(1, 6, 3), 3, "never below the floor");
        assert_eq!(log.last_index_with_term_at_most(9, 20, 0), 6, "capped at the last entry");
    }

    #[test]
    fn trimmed_entries_leave_memory_but_keep_their_position() {
        let mut log = log_with_terms(&[1, 1, 2, 2, 3]);
        log.trim_to(3);
        assert_eq!(log.cached_len(), 2);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.term_at(3), Some(2), "the last trimmed term is remembered");
        assert_eq!(log.term_at(2), None);
        assert!(log.get(3).is_none());
        assert_eq!(log.slice(3, 10, 1000).len(), 0, "trimmed entries must be loaded");
        assert_eq!(log.slice(4, 10, 1000).len(), 2);
        log.truncate_from(5);
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn slice_respects_count_and_byte_limits() {
        let log = log_with_terms(&[1; 10]);
        assert_eq!(log.slice(3, 4, usize::MAX).len(), 4);
        assert_eq!(log.slice(3, 100, 1).len(), 1, "always at least one entry");
        assert_eq!(log.slice(11, 100, 100).len(), 0);
        assert_eq!(log.range(2, 5).iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    }
}

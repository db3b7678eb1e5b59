//! A conformance suite for [`LogStore`] implementations.
//!
//! [`run_conformance`] runs every check that needs only one open store;
//! [`run_reopen_conformance`] runs the checks that close a store and open the same data
//! again, for stores that persist. Each check is also a public function, so a store's own
//! tests can run them one by one. A failing check panics with a message that starts with
//! ``LogStore conformance check `NAME` failed``, naming the check.
//!
//! The checks test the contract documented on [`LogStore`] and nothing more: where the
//! contract leaves a choice to the store (for instance whether a purge survives a reopen
//! at once), the checks accept every allowed outcome.
//!
//! ```ignore
//! futures::executor::block_on(run_conformance(|| async { MemStore::new() }));
//! futures::executor::block_on(run_reopen_conformance(
//!     || async { MemStore::new() },
//!     |store: MemStore| async move { store.clone() },
//! ));
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::ops::RangeInclusive;

use bytes::Bytes;

use crate::error::StoreError;
use crate::membership::Membership;
use crate::storage::{InitialState, LogStore};
use crate::types::{Entry, EntryPayload, HardState, LogId, LogIndex, Term};

/// Runs every single-store check, each on a new empty store made by `fresh`.
pub async fn run_conformance<S, F, Fut>(mut fresh: F)
where
    S: LogStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    empty_store_has_zero_state(fresh().await).await;
    append_then_read_back(fresh().await).await;
    append_must_be_contiguous(fresh().await).await;
    empty_append_is_rejected(fresh().await).await;
    truncate_removes_suffix(fresh().await).await;
    truncate_beyond_last_is_noop(fresh().await).await;
    truncate_below_prev_is_invalid(fresh().await).await;
    purge_moves_prev_and_hides_entries(fresh().await).await;
    entries_outside_range_are_unavailable(fresh().await).await;
    hard_state_roundtrip(fresh().await).await;
    append_after_truncate_continues_from_new_end(fresh().await).await;
}

/// Runs every check that reopens a store, each on a new empty store made by `fresh`.
/// `reopen` closes the store it is given and opens the same data again, as a process
/// restart would.
pub async fn run_reopen_conformance<S, F, Fut, R, RFut>(mut fresh: F, mut reopen: R)
where
    S: LogStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    reopen_keeps_everything_reported_durable(fresh().await, &mut reopen).await;
    reopen_keeps_hard_state(fresh().await, &mut reopen).await;
    reopen_after_purge_keeps_prev(fresh().await, &mut reopen).await;
}

/// A sample entry at `index` in `term`, with a payload that varies with the index: blank
/// entries, membership configurations (simple and joint), client-session entries (a
/// session opened, session commands, keys' requests) and commands from empty to about 70 KB.
pub fn sample_entry(term: Term, index: LogIndex) -> Entry {
    let session = |op| {
        EntryPayload::Session(std::sync::Arc::new(crate::session::SessionEntry {
            time_ms: 1_700_000_000_000 + index,
            idle_timeout_ms: 3_600_000,
            max_sessions: 1000,
            op,
        }))
    };
    let payload = match index % 7 {
        0 => EntryPayload::Blank,
        3 => EntryPayload::Membership(Box::new(sample_membership(index))),
        5 if index % 3 == 0 => session(crate::session::SessionOp::Open),
        5 if index % 3 == 1 => {
            session(crate::session::SessionOp::once(crate::session::IMPLICIT | index, sample_command(index)))
        }
        5 => session(crate::session::SessionOp::Command {
            client: crate::session::IMPLICIT | index,
            seq: index,
            acked: index / 2,
            command: sample_command(index),
        }),
        _ => EntryPayload::Command(sample_command(index)),
    };
    Entry { term, index, payload }
}

/// Sample entries (see [`sample_entry`]) for every index in `indexes`, all in `term`.
pub fn sample_entries(term: Term, indexes: RangeInclusive<LogIndex>) -> Vec<Entry> {
    indexes.map(|index| sample_entry(term, index)).collect()
}

fn sample_command(index: LogIndex) -> Bytes {
    let len: u64 = match index % 5 {
        0 => 0,
        1 => 1,
        2 => 17 + index % 13,
        3 => 300 + index,
        _ if index % 10 == 4 => 70_000,
        _ => 4096,
    };
    (0..len).map(|i| (index.wrapping_mul(31).wrapping_add(i) % 251) as u8).collect::<Vec<u8>>().into()
}

fn sample_membership(index: LogIndex) -> Membership {
    let mut m = Membership::new([1, 2, 3]);
    if index % 2 == 0 {
        m.voters_outgoing = Some([1, 2, 4].into_iter().collect());
        m.learners.insert(5 + index);
    }
    m
}

/// Reports the outcome of one named check.
struct Check(&'static str);

impl Check {
    fn fail(&self, msg: std::fmt::Arguments<'_>) -> ! {
        panic!("LogStore conformance check `{}` failed: {msg}", self.0)
    }

    fn ok<T>(&self, what: &str, r: Result<T, StoreError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(format_args!("{what}: unexpected error: {e}")),
        }
    }

    fn eq<T: PartialEq + Debug>(&self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format_args!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn holds(&self, what: &str, cond: bool) {
        if !cond {
            self.fail(format_args!("{what}"));
        }
    }

    fn invalid<T: Debug>(&self, what: &str, r: Result<T, StoreError>) {
        match r {
            Err(StoreError::Invalid(_)) => {}
            other => self.fail(format_args!("{what}: expected StoreError::Invalid, got {other:?}")),
        }
    }

    fn unavailable<T: Debug>(&self, what: &str, r: Result<T, StoreError>, start: LogIndex, end: LogIndex) {
        match r {
            Err(StoreError::Unavailable { start: s, end: e }) if s == start && e == end => {}
            other => self.fail(format_args!(
                "{what}: expected StoreError::Unavailable {{ start: {start}, end: {end} }}, got {other:?}"
            )),
        }
    }

    async fn state<S: LogStore>(&self, store: &mut S) -> InitialState {
        self.ok("initial_state", store.initial_state().await)
    }

    async fn append<S: LogStore>(&self, store: &mut S, entries: &[Entry]) {
        let what =
            format!("append of {}..={}", entries.first().map_or(0, |e| e.index), entries.last().map_or(0, |e| e.index));
        self.ok(&what, store.append(entries).await);
    }

    async fn read<S: LogStore>(&self, store: &mut S, start: LogIndex, end: LogIndex) -> Vec<Entry> {
        self.ok(&format!("entries({start}, {end})"), store.entries(start, end).await)
    }

    /// Checks that the store holds exactly `want` after `prev`, and nothing beyond.
    async fn holds_log<S: LogStore>(&self, store: &mut S, what: &str, prev: LogId, want: &[Entry]) {
        let state = self.state(store).await;
        let last = want.last().map_or(prev, |e| LogId { term: e.term, index: e.index });
        self.eq(&format!("{what}: prev"), state.prev, prev);
        self.eq(&format!("{what}: last"), state.last, last);
        if !want.is_empty() {
            let got = self.read(store, prev.index + 1, last.index + 1).await;
            self.eq(&format!("{what}: entries"), got, want.to_vec());
        }
        self.unavailable(
            &format!("{what}: entry after last"),
            store.entries(last.index + 1, last.index + 2).await,
            last.index + 1,
            last.index + 2,
        );
    }
}

fn id(term: Term, index: LogIndex) -> LogId {
    LogId { term, index }
}

/// A new store holds nothing: default hard state, `prev` and `last` at `(0, 0)`, and no
/// entries.
pub async fn empty_store_has_zero_state<S: LogStore>(mut store: S) {
    let c = Check("empty_store_has_zero_state");
    let state = c.state(&mut store).await;
    c.eq("initial state of a new store", state, InitialState::default());
    c.unavailable("entries(1, 2) of an empty store", store.entries(1, 2).await, 1, 2);
}

/// Appended entries, of every payload kind and of many sizes, read back exactly, over any
/// sub-range and across appends; `last` follows the appends.
pub async fn append_then_read_back<S: LogStore>(mut store: S) {
    let c = Check("append_then_read_back");
    let first = sample_entries(1, 1..=1);
    c.append(&mut store, &first).await;
    c.holds_log(&mut store, "after one entry", LogId::default(), &first).await;

    let mut all = first;
    let batch = sample_entries(1, 2..=15);
    c.append(&mut store, &batch).await;
    all.extend(batch);
    let batch = sample_entries(3, 16..=40);
    c.append(&mut store, &batch).await;
    all.extend(batch);
    c.holds_log(&mut store, "after three appends", LogId::default(), &all).await;

    for (start, end) in [(1, 2), (5, 6), (2, 16), (14, 18), (16, 41), (40, 41), (1, 41)] {
        let got = c.read(&mut store, start, end).await;
        c.eq(&format!("entries({start}, {end})"), got, all[(start - 1) as usize..(end - 1) as usize].to_vec());
    }
    let kinds = all.iter().fold([false; 5], |mut k, e| {
        k[match &e.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Command(_) => 1,
            EntryPayload::Membership(_) => 2,
            EntryPayload::Session(s) if s.op == crate::session::SessionOp::Open => 3,
            EntryPayload::Session(_) => 4,
        }] = true;
        k
    });
    c.holds("the sample covers every payload kind", kinds == [true; 5]);
}

/// An append that does not start right after `last`, or whose entries are not
/// contiguous, is `Invalid` and writes nothing.
pub async fn append_must_be_contiguous<S: LogStore>(mut store: S) {
    let c = Check("append_must_be_contiguous");
    c.invalid("append at 2 to an empty log", store.append(&sample_entries(1, 2..=3)).await);
    c.holds_log(&mut store, "after a rejected append", LogId::default(), &[]).await;

    let all = sample_entries(1, 1..=3);
    c.append(&mut store, &all).await;
    c.invalid("append overlapping the last entry", store.append(&sample_entries(1, 3..=4)).await);
    c.invalid("append repeating the whole log", store.append(&sample_entries(1, 1..=4)).await);
    c.invalid("append leaving a gap", store.append(&sample_entries(1, 5..=6)).await);
    let gap = vec![sample_entry(1, 4), sample_entry(1, 6)];
    c.invalid("append with a gap inside the batch", store.append(&gap).await);
    let repeat = vec![sample_entry(1, 4), sample_entry(1, 4)];
    c.invalid("append repeating an index inside the batch", store.append(&repeat).await);
    c.holds_log(&mut store, "after rejected appends", LogId::default(), &all).await;

    let next = sample_entries(2, 4..=5);
    c.append(&mut store, &next).await;
    let all: Vec<Entry> = all.into_iter().chain(next).collect();
    c.holds_log(&mut store, "after a valid append", LogId::default(), &all).await;
}

/// An append of no entries is `Invalid`, on an empty log and on a non-empty one.
pub async fn empty_append_is_rejected<S: LogStore>(mut store: S) {
    let c = Check("empty_append_is_rejected");
    c.invalid("empty append to an empty log", store.append(&[]).await);
    c.holds_log(&mut store, "after an empty append", LogId::default(), &[]).await;
    let all = sample_entries(1, 1..=2);
    c.append(&mut store, &all).await;
    c.invalid("empty append to a non-empty log", store.append(&[]).await);
    c.holds_log(&mut store, "after another empty append", LogId::default(), &all).await;
}

/// `truncate(from)` removes the entries from `from` on, down to an empty log.
pub async fn truncate_removes_suffix<S: LogStore>(mut store: S) {
    let c = Check("truncate_removes_suffix");
    let all: Vec<Entry> = sample_entries(1, 1..=4).into_iter().chain(sample_entries(2, 5..=10)).collect();
    c.append(&mut store, &all).await;
    c.ok("truncate(6)", store.truncate(6).await);
    c.holds_log(&mut store, "after truncate(6)", LogId::default(), &all[..5]).await;
    c.ok("truncate(5)", store.truncate(5).await);
    c.holds_log(&mut store, "after truncate(5)", LogId::default(), &all[..4]).await;
    c.ok("truncate(1)", store.truncate(1).await);
    c.holds_log(&mut store, "after truncate(1)", LogId::default(), &[]).await;
}

/// `truncate(from)` with `from` beyond `last` succeeds and changes nothing.
pub async fn truncate_beyond_last_is_noop<S: LogStore>(mut store: S) {
    let c = Check("truncate_beyond_last_is_noop");
    c.ok("truncate(1) of an empty log", store.truncate(1).await);
    c.holds_log(&mut store, "after truncating an empty log", LogId::default(), &[]).await;
    let all = sample_entries(1, 1..=5);
    c.append(&mut store, &all).await;
    c.ok("truncate(6)", store.truncate(6).await);
    c.ok("truncate(1000)", store.truncate(1000).await);
    c.ok("truncate(u64::MAX)", store.truncate(u64::MAX).await);
    c.holds_log(&mut store, "after truncates beyond last", LogId::default(), &all).await;
}

/// `truncate(from)` with `from <= prev.index` is `Invalid` and removes nothing; truncating
/// right after `prev` empties the log and leaves `last` at `prev`.
pub async fn truncate_below_prev_is_invalid<S: LogStore>(mut store: S) {
    let c = Check("truncate_below_prev_is_invalid");
    c.invalid("truncate(0) of a log never purged", store.truncate(0).await);
    let all: Vec<Entry> = sample_entries(1, 1..=3).into_iter().chain(sample_entries(2, 4..=10)).collect();
    c.append(&mut store, &all).await;
    c.ok("purge(5)", store.purge(5).await);
    c.invalid("truncate(5) at prev", store.truncate(5).await);
    c.invalid("truncate(3) below prev", store.truncate(3).await);
    c.invalid("truncate(0) below prev", store.truncate(0).await);
    c.holds_log(&mut store, "after rejected truncates", id(2, 5), &all[5..]).await;
    c.ok("truncate(6)", store.truncate(6).await);
    c.holds_log(&mut store, "after truncate(6)", id(2, 5), &[]).await;
}

/// `purge(upto)` moves `prev` to `upto`, keeping that entry's term, makes the entries up to
/// `upto` unavailable and leaves the rest; purging the whole log leaves `last == prev`;
/// appends continue after `last`; purging beyond `last` is `Invalid`.
pub async fn purge_moves_prev_and_hides_entries<S: LogStore>(mut store: S) {
    let c = Check("purge_moves_prev_and_hides_entries");
    let all: Vec<Entry> = sample_entries(1, 1..=3).into_iter().chain(sample_entries(4, 4..=10)).collect();
    c.append(&mut store, &all).await;
    c.invalid("purge(11) beyond last", store.purge(11).await);
    c.holds_log(&mut store, "after a rejected purge", LogId::default(), &all).await;

    c.ok("purge(3)", store.purge(3).await);
    c.holds_log(&mut store, "after purge(3)", id(1, 3), &all[3..]).await;
    c.unavailable("entries(3, 4) after purge(3)", store.entries(3, 4).await, 3, 4);
    c.unavailable("entries(1, 5) after purge(3)", store.entries(1, 5).await, 1, 5);

    c.ok("purge(7)", store.purge(7).await);
    c.holds_log(&mut store, "after purge(7)", id(4, 7), &all[7..]).await;

    c.ok("purge(10)", store.purge(10).await);
    c.holds_log(&mut store, "after purging the whole log", id(4, 10), &[]).await;
    c.invalid("purge(11) of an empty log", store.purge(11).await);

    let next = sample_entries(5, 11..=12);
    c.invalid("append at 1 after purging", store.append(&sample_entries(5, 1..=2)).await);
    c.append(&mut store, &next).await;
    c.holds_log(&mut store, "after appending to a purged log", id(4, 10), &next).await;
}

/// `entries(start, end)` reaching below `prev.index + 1` or beyond `last.index + 1` is
/// `Unavailable`, naming the requested range.
pub async fn entries_outside_range_are_unavailable<S: LogStore>(mut store: S) {
    let c = Check("entries_outside_range_are_unavailable");
    let all = sample_entries(2, 1..=8);
    c.append(&mut store, &all).await;
    c.unavailable("entries(9, 10) past last", store.entries(9, 10).await, 9, 10);
    c.unavailable("entries(5, 10) ending past last", store.entries(5, 10).await, 5, 10);
    c.unavailable("entries(0, 2) starting at index 0", store.entries(0, 2).await, 0, 2);
    c.unavailable("entries(100, 200) far past last", store.entries(100, 200).await, 100, 200);
    c.ok("purge(3)", store.purge(3).await);
    c.unavailable("entries(3, 5) starting at prev", store.entries(3, 5).await, 3, 5);
    c.unavailable("entries(1, 9) covering purged entries", store.entries(1, 9).await, 1, 9);
    c.unavailable("entries(2, 3) entirely purged", store.entries(2, 3).await, 2, 3);
    let got = c.read(&mut store, 4, 9).await;
    c.eq("entries(4, 9), the whole held range", got, all[3..].to_vec());
}

/// The hard state reads back as last saved, whatever the log holds, and saving it leaves
/// the log alone.
pub async fn hard_state_roundtrip<S: LogStore>(mut store: S) {
    let c = Check("hard_state_roundtrip");
    let states = [
        HardState { term: 1, voted_for: None },
        HardState { term: 1, voted_for: Some(2) },
        HardState { term: 7, voted_for: None },
        HardState { term: 7, voted_for: Some(u64::MAX) },
        HardState { term: u64::MAX, voted_for: Some(1) },
    ];
    for hs in states {
        c.ok("save_hard_state", store.save_hard_state(&hs).await);
        let state = c.state(&mut store).await;
        c.eq("hard state read back", state.hard_state, hs);
        c.eq(
            "log of an empty store after save_hard_state",
            (state.prev, state.last),
            (LogId::default(), LogId::default()),
        );
    }
    let all = sample_entries(3, 1..=4);
    c.append(&mut store, &all).await;
    let hs = HardState { term: 8, voted_for: Some(3) };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);
    c.eq("hard state after an append", c.state(&mut store).await.hard_state, hs);
    c.holds_log(&mut store, "after save_hard_state", LogId::default(), &all).await;
}

/// After a truncate, the next append starts at the new end and may carry other terms;
/// an append at the old end is `Invalid`.
pub async fn append_after_truncate_continues_from_new_end<S: LogStore>(mut store: S) {
    let c = Check("append_after_truncate_continues_from_new_end");
    let old = sample_entries(1, 1..=6);
    c.append(&mut store, &old).await;
    c.ok("truncate(4)", store.truncate(4).await);
    c.invalid("append at the old end (7)", store.append(&sample_entries(2, 7..=8)).await);
    let new = sample_entries(2, 4..=9);
    c.append(&mut store, &new).await;
    let all: Vec<Entry> = old[..3].iter().cloned().chain(new).collect();
    c.holds_log(&mut store, "after truncate and append", LogId::default(), &all).await;
    let got = c.read(&mut store, 3, 5).await;
    c.eq("entries(3, 5) across the rewrite", got.iter().map(|e| e.term).collect::<Vec<_>>(), vec![1, 2]);

    c.ok("purge(2)", store.purge(2).await);
    c.ok("truncate(3)", store.truncate(3).await);
    let next = sample_entries(3, 3..=3);
    c.append(&mut store, &next).await;
    c.holds_log(&mut store, "after purge, truncate and append", id(1, 2), &next).await;
}

/// Everything reported durable (appends, truncates, the hard state) is there after a
/// reopen, and the reopened store accepts appends after its last entry.
pub async fn reopen_keeps_everything_reported_durable<S, R, RFut>(mut store: S, mut reopen: R)
where
    S: LogStore,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    let c = Check("reopen_keeps_everything_reported_durable");
    c.append(&mut store, &sample_entries(1, 1..=4)).await;
    c.append(&mut store, &sample_entries(1, 5..=9)).await;
    c.ok("truncate(7)", store.truncate(7).await);
    c.append(&mut store, &sample_entries(2, 7..=10)).await;
    let hs = HardState { term: 2, voted_for: Some(1) };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);
    let mut all: Vec<Entry> = sample_entries(1, 1..=6).into_iter().chain(sample_entries(2, 7..=10)).collect();

    let mut store = reopen(store).await;
    c.holds_log(&mut store, "after the first reopen", LogId::default(), &all).await;
    c.eq("hard state after the first reopen", c.state(&mut store).await.hard_state, hs);

    let next = sample_entries(3, 11..=11);
    c.append(&mut store, &next).await;
    all.extend(next);
    let mut store = reopen(store).await;
    c.holds_log(&mut store, "after appending and reopening", LogId::default(), &all).await;

    c.ok("truncate(3)", store.truncate(3).await);
    let mut store = reopen(store).await;
    c.holds_log(&mut store, "after truncating and reopening", LogId::default(), &all[..2]).await;
    c.eq("hard state after the last reopen", c.state(&mut store).await.hard_state, hs);
}

/// The hard state last saved is there after a reopen, with an empty log and with a
/// non-empty one.
pub async fn reopen_keeps_hard_state<S, R, RFut>(mut store: S, mut reopen: R)
where
    S: LogStore,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    let c = Check("reopen_keeps_hard_state");
    let hs = HardState { term: 1, voted_for: Some(2) };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);
    let mut store = reopen(store).await;
    let state = c.state(&mut store).await;
    c.eq("hard state after reopen", state.hard_state, hs);
    c.eq("log after reopen", (state.prev, state.last), (LogId::default(), LogId::default()));

    let hs = HardState { term: 5, voted_for: None };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);
    let mut store = reopen(store).await;
    c.eq("hard state with no vote after reopen", c.state(&mut store).await.hard_state, hs);

    c.append(&mut store, &sample_entries(5, 1..=3)).await;
    c.ok("save_hard_state", store.save_hard_state(&HardState { term: 5, voted_for: Some(3) }).await);
    let hs = HardState { term: 6, voted_for: None };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);
    let mut store = reopen(store).await;
    c.eq("the last of several hard states after reopen", c.state(&mut store).await.hard_state, hs);
}

/// After a purge and a reopen, `last` is unchanged (its term kept even when the purge
/// emptied the log) and `prev` is the purged position with its term, or, since a purge
/// need not be durable at once, an earlier `prev` with the purged entries back and intact.
/// No entry after the purged position is ever lost.
pub async fn reopen_after_purge_keeps_prev<S, R, RFut>(mut store: S, mut reopen: R)
where
    S: LogStore,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    let c = Check("reopen_after_purge_keeps_prev");
    let all: Vec<Entry> = sample_entries(1, 1..=3).into_iter().chain(sample_entries(2, 4..=8)).collect();
    c.append(&mut store, &all[..3]).await;
    c.append(&mut store, &all[3..]).await;
    let hs = HardState { term: 2, voted_for: Some(1) };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);

    let positions = |all: &[Entry]| -> Vec<LogId> {
        std::iter::once(LogId::default()).chain(all.iter().map(|e| id(e.term, e.index))).collect()
    };

    // Checks the state after a reopen that followed purges to `purged`.
    async fn after_reopen<S: LogStore>(
        c: &Check,
        store: &mut S,
        what: &str,
        purged: LogId,
        all: &[Entry],
        positions: &[LogId],
    ) {
        let state = c.state(store).await;
        let last = all.last().map_or(LogId::default(), |e| id(e.term, e.index));
        c.eq(&format!("{what}: last"), state.last, last);
        c.holds(
            &format!(
                "{what}: prev {:?} is neither the purged position {purged:?} nor an earlier position of the log",
                state.prev
            ),
            state.prev == purged || (state.prev.index < purged.index && positions.contains(&state.prev)),
        );
        let held = &all[state.prev.index as usize..];
        c.holds_log(store, what, state.prev, held).await;
        c.unavailable(
            &format!("{what}: entry at prev"),
            store.entries(state.prev.index, state.prev.index + 1).await,
            state.prev.index,
            state.prev.index + 1,
        );
    }

    c.ok("purge(5)", store.purge(5).await);
    let mut store = reopen(store).await;
    after_reopen(&c, &mut store, "after purge(5) and reopen", id(2, 5), &all, &positions(&all)).await;
    c.eq("hard state after reopen", c.state(&mut store).await.hard_state, hs);

    let next = sample_entries(3, 9..=9);
    c.append(&mut store, &next).await;
    let all: Vec<Entry> = all.into_iter().chain(next).collect();
    let mut store = reopen(store).await;
    after_reopen(&c, &mut store, "after appending and reopening", id(2, 5), &all, &positions(&all)).await;

    c.ok("purge(9)", store.purge(9).await);
    let mut store = reopen(store).await;
    after_reopen(&c, &mut store, "after purging the whole log and reopening", id(3, 9), &all, &positions(&all)).await;

    let next = sample_entries(4, 10..=10);
    c.append(&mut store, &next).await;
    let all: Vec<Entry> = all.into_iter().chain(next).collect();
    let mut store = reopen(store).await;
    after_reopen(&c, &mut store, "after appending to a purged log and reopening", id(3, 9), &all, &positions(&all))
        .await;
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use futures::executor::block_on;

    use super::*;
    use crate::testing::mem_store::MemStore;

    #[test]
    fn mem_store_passes_the_suite() {
        block_on(run_conformance(|| async { MemStore::new() }));
    }

    #[test]
    fn mem_store_passes_the_suite_with_a_write_delay() {
        block_on(run_conformance(|| async {
            let store = MemStore::new();
            store.set_write_delay(Some(std::sync::Arc::new(|| Box::pin(futures::future::ready(())))));
            store
        }));
    }

    #[test]
    fn mem_store_passes_the_reopen_suite() {
        block_on(run_reopen_conformance(|| async { MemStore::new() }, |store: MemStore| async move { store.clone() }));
    }

    #[test]
    fn mem_store_passes_the_reopen_suite_across_crashes() {
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            block_on(run_reopen_conformance(
                || async { MemStore::new() },
                move |store: MemStore| {
                    store.crash(&mut rng);
                    async move { store.clone() }
                },
            ));
        }
    }

    /// A broken store: it accepts non-contiguous appends by dropping them silently.
    struct Lax(MemStore);

    #[async_trait]
    impl LogStore for Lax {
        async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
            self.0.initial_state().await
        }
        async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
            self.0.save_hard_state(hs).await
        }
        async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
            match self.0.append(entries).await {
                Err(StoreError::Invalid(_)) => Ok(()),
                other => other,
            }
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
        fn snapshots(&self) -> std::sync::Arc<dyn crate::snapshot::SnapshotStore> {
            self.0.snapshots()
        }
        async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
            self.0.reset_to(snapshot).await
        }
    }

    #[test]
    fn a_broken_store_fails_the_named_check() {
        let result = std::panic::catch_unwind(|| block_on(append_must_be_contiguous(Lax(MemStore::new()))));
        let payload = match result {
            Ok(()) => panic!("the broken store passed"),
            Err(payload) => payload,
        };
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            msg.starts_with("LogStore conformance check `append_must_be_contiguous` failed"),
            "unexpected panic message: {msg}"
        );
    }
}

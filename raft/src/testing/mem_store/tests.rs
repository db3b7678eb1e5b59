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
    let delay: DelayFn =
        Arc::new(move || {
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
        13..=16 => ModelOp::HardState(HardState { term: rng.u64(..10), voted_for: rng.bool().then(|| rng.u64(..5)) }),
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
                            let gate = gates.lock().unwrap().get(gated).cloned().expect("the write awaits its delay");
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

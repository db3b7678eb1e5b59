//! The Wing–Gong search with memoization, and the data structures it runs on.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use super::{Model, Op};

/// End-of-list marker for [`List`].
const NIL: usize = usize::MAX;

/// A doubly linked list over nodes `0..=len`, node 0 being the head sentinel, supporting
/// removal and LIFO re-insertion of nodes in O(1) (removed nodes keep their links).
struct List {
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl List {
    fn new(len: usize) -> Self {
        let prev = (0..=len).map(|i| i.wrapping_sub(1)).collect();
        let next = (0..=len).map(|i| if i == len { NIL } else { i + 1 }).collect();
        List { prev, next }
    }

    fn first(&self) -> usize {
        self.next[0]
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Re-inserts `node`; nodes must be re-inserted in the reverse order of their removal.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }
}

/// A fixed-size set of small integers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_subset_of(&self, other: &Bitset) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// The memo of explored configurations.
///
/// A configuration is (linearized known-return operations, model state, linearized
/// unknown-outcome operations). A configuration is *dominated* by an explored one with the
/// same known set and state and a subset of its unknown-outcome operations: the explored
/// one had every option the new one has (unknown-outcome operations constrain nothing and
/// may be left out), so if it led to no linearization neither can the new one.
///
/// Entries are bucketed by a hash of (known set, state) so that a lookup clones nothing.
struct Memo<M> {
    hasher: RandomState,
    buckets: HashMap<u64, Vec<Explored<M>>>,
}

/// The explored configurations sharing one known set and state.
struct Explored<M> {
    known: Bitset,
    state: M,
    /// Minimal (under inclusion) unknown-outcome sets explored with them.
    pending: Vec<Bitset>,
}

impl<M: Model> Memo<M> {
    fn new() -> Self {
        Memo { hasher: RandomState::new(), buckets: HashMap::new() }
    }

    /// Records the configuration; returns `false` if it is dominated by an explored one.
    fn insert(&mut self, known: &Bitset, state: &M, pending: &Bitset) -> bool {
        let bucket = self.buckets.entry(self.hasher.hash_one((known, state))).or_default();
        let Some(explored) = bucket.iter_mut().find(|e| e.known == *known && e.state == *state) else {
            bucket.push(Explored { known: known.clone(), state: state.clone(), pending: vec![pending.clone()] });
            return true;
        };
        if explored.pending.iter().any(|set| set.is_subset_of(pending)) {
            return false;
        }
        explored.pending.retain(|set| !pending.is_subset_of(set));
        explored.pending.push(pending.clone());
        true
    }
}

/// Where an operation sits in the search.
#[derive(Clone, Copy)]
enum Slot {
    /// An operation with a known return; index into the known bitset.
    Known(usize),
    /// An operation with an unknown outcome; index into the pending bitset.
    Pending(usize),
}

/// A node of the main list: the call or return of an operation with a known return.
#[derive(Clone, Copy)]
enum Event {
    Head,
    Call { op: usize },
    Return { time: u64 },
}

/// Where the search looks for the next operation to linearize.
#[derive(Clone, Copy)]
enum Cursor {
    /// Scanning the main list of calls and returns.
    Main(usize),
    /// Scanning the unknown-outcome operations called no later than `bound`, the earliest
    /// outstanding return.
    Pending { node: usize, bound: u64 },
}

/// A linearized operation on the search stack.
struct Frame<M> {
    op: usize,
    /// The operation's node in the main list or the pending list.
    node: usize,
    /// The model state before the operation.
    prev: M,
    /// For an unknown-outcome operation, the bound of the pending scan it was taken from.
    bound: u64,
}

/// The deepest point the search reached, for the explanation.
pub(super) struct Best<M> {
    /// Linearized operations, in order.
    pub(super) order: Vec<usize>,
    /// How many of them have known returns.
    pub(super) known: usize,
    /// The model state after them.
    pub(super) state: M,
}

pub(super) enum Outcome<M> {
    Linearizable,
    Unknown,
    NotLinearizable(Best<M>),
}

/// Searches for a linearization of `ops` from `init`, within `max_steps` steps.
#[expect(
    clippy::too_many_lines,
    reason = "one loop over the search's cursor states, whose shared locals (lists, sets, memo, stack) would otherwise be threaded through helpers"
)]
pub(super) fn search<M: Model>(init: &M, ops: &[&Op<M>], max_steps: u64) -> Outcome<M> {
    let mut slots = Vec::with_capacity(ops.len());
    let (mut known_count, mut pending_count) = (0, 0);
    for op in ops {
        if op.ret.is_some() {
            slots.push(Slot::Known(known_count));
            known_count += 1;
        } else {
            slots.push(Slot::Pending(pending_count));
            pending_count += 1;
        }
    }
    if known_count == 0 {
        return Outcome::Linearizable;
    }

    // Main list: calls and returns of known-return operations in time order, calls before
    // returns at equal times (so that touching intervals count as concurrent).
    let mut timeline: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * known_count);
    for (i, op) in ops.iter().enumerate() {
        if let Some(ret) = op.ret {
            timeline.push((op.call, false, i));
            timeline.push((ret, true, i));
        }
    }
    timeline.sort_unstable();
    let mut events = Vec::with_capacity(timeline.len() + 1);
    events.push(Event::Head);
    let mut ret_node = vec![NIL; ops.len()];
    for &(time, is_return, op) in &timeline {
        if is_return {
            ret_node[op] = events.len();
            events.push(Event::Return { time });
        } else {
            events.push(Event::Call { op });
        }
    }
    let mut main = List::new(timeline.len());

    // Pending list: unknown-outcome operations in call order.
    let mut pending_ops: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    pending_ops.sort_unstable_by_key(|&i| (ops[i].call, i));
    pending_ops.insert(0, NIL); // Node 0 is the head sentinel.
    let mut pending = List::new(pending_ops.len() - 1);
    // Identical unknown-outcome operations are interchangeable once both are callable, and
    // the earlier-called one is callable whenever the later one is: use them in call order.
    // `twin[node]` is the pending index of the nearest earlier identical operation.
    let mut twin = vec![None; pending_ops.len()];
    for node in 2..pending_ops.len() {
        let op = ops[pending_ops[node]];
        twin[node] = (1..node)
            .rev()
            .map(|earlier| pending_ops[earlier])
            .find(|&other| M::same_input(&op.input, &ops[other].input) && op.output == ops[other].output)
            .map(|other| match slots[other] {
                Slot::Pending(q) => q,
                Slot::Known(_) => unreachable!("the pending list only holds unknown outcomes"),
            });
    }

    let mut known_set = Bitset::new(known_count);
    let mut pending_set = Bitset::new(pending_count);
    let mut memo = Memo::new();
    memo.insert(&known_set, init, &pending_set);
    let mut state = init.clone();
    let mut stack: Vec<Frame<M>> = Vec::new();
    let mut known_left = known_count;
    let mut best = Best { order: Vec::new(), known: 0, state: init.clone() };
    let mut cursor = Cursor::Main(main.first());
    let mut steps = 0u64;

    loop {
        if steps >= max_steps {
            return Outcome::Unknown;
        }
        steps += 1;

        let backtrack = match cursor {
            Cursor::Main(node) => match events[node] {
                Event::Head => unreachable!("the head sentinel is never scanned"),
                Event::Call { op } => {
                    let Slot::Known(k) = slots[op] else { unreachable!("the main list only holds known returns") };
                    let mut taken = false;
                    if let Some(next) = state.step(&ops[op].input, ops[op].output.as_ref()) {
                        known_set.set(k);
                        if memo.insert(&known_set, &next, &pending_set) {
                            let prev = std::mem::replace(&mut state, next);
                            stack.push(Frame { op, node, prev, bound: 0 });
                            main.unlink(node);
                            main.unlink(ret_node[op]);
                            known_left -= 1;
                            if known_left == 0 {
                                return Outcome::Linearizable;
                            }
                            if known_count - known_left > best.known {
                                best = Best {
                                    order: stack.iter().map(|frame| frame.op).collect(),
                                    known: known_count - known_left,
                                    state: state.clone(),
                                };
                            }
                            taken = true;
                        } else {
                            known_set.clear(k);
                        }
                    }
                    cursor = Cursor::Main(if taken { main.first() } else { main.next[node] });
                    false
                }
                // The earliest outstanding return: every known-return operation that can
                // go next has been tried; try the unknown-outcome ones, then backtrack.
                Event::Return { time } => {
                    cursor = Cursor::Pending { node: pending.first(), bound: time };
                    false
                }
            },
            Cursor::Pending { node, bound } => {
                if node == NIL || ops[pending_ops[node]].call > bound {
                    true
                } else {
                    let op = pending_ops[node];
                    let Slot::Pending(p) = slots[op] else {
                        unreachable!("the pending list only holds unknown outcomes")
                    };
                    let mut taken = false;
                    let (input, output) = (&ops[op].input, ops[op].output.as_ref());
                    let after_pending = stack.last().filter(|last| matches!(slots[last.op], Slot::Pending(_)));
                    let next = if twin[node].is_some_and(|q| !pending_set.get(q)) {
                        // Its identical, earlier-called twin is unused: that one goes first.
                        None
                    } else {
                        state.step(input, output).filter(|next| {
                            // An unknown-outcome operation that leaves the state unchanged is
                            // never needed: leaving it out gives the same state with more
                            // options. Nor is the unknown-outcome operation just linearized if
                            // this one reaches the same state without it (e.g. a blind write
                            // overwriting another): that shorter sequence is explored from the
                            // earlier state.
                            *next != state
                                && !after_pending
                                    .is_some_and(|last| last.prev.step(input, output).as_ref() == Some(next))
                        })
                    };
                    if let Some(next) = next {
                        pending_set.set(p);
                        if memo.insert(&known_set, &next, &pending_set) {
                            let prev = std::mem::replace(&mut state, next);
                            stack.push(Frame { op, node, prev, bound });
                            pending.unlink(node);
                            taken = true;
                        } else {
                            pending_set.clear(p);
                        }
                    }
                    cursor = if taken {
                        Cursor::Main(main.first())
                    } else {
                        Cursor::Pending { node: pending.next[node], bound }
                    };
                    false
                }
            }
        };

        if backtrack {
            let Some(frame) = stack.pop() else {
                return Outcome::NotLinearizable(best);
            };
            state = frame.prev;
            match slots[frame.op] {
                Slot::Known(k) => {
                    known_set.clear(k);
                    main.relink(ret_node[frame.op]);
                    main.relink(frame.node);
                    known_left += 1;
                    cursor = Cursor::Main(main.next[frame.node]);
                }
                Slot::Pending(p) => {
                    pending_set.clear(p);
                    pending.relink(frame.node);
                    cursor = Cursor::Pending { node: pending.next[frame.node], bound: frame.bound };
                }
            }
        }
    }
}

//! A linearizability checker for client histories.
//!
//! A history is a list of [`Operation`]s, each with the virtual time at which a client
//! invoked it (`call`) and, if the client learned the outcome, the time at which it
//! returned (`ret`) together with its output. The history is *linearizable* with respect to
//! a sequential [`Model`] if every operation can be assigned a single instant between its
//! call and its return such that executing the operations one at a time in that order, on
//! the model, produces exactly the observed outputs.
//!
//! [`check`] implements the Wing–Gong search with the memoization improvement described in
//! the "Testing for Linearizability" literature: it repeatedly picks a *minimal* operation
//! (one invoked before the earliest pending return), applies it to the model, and backtracks
//! when the earliest outstanding return is reached with no operation that can be placed.
//! Configurations — the set of linearized operations plus the model state — that were
//! already explored are never explored again.
//!
//! Operations whose outcome is unknown (`ret == None`: the request timed out, the client
//! crashed, ...) may have taken effect at any time after their call, or never. The search
//! treats them as optional: it succeeds as soon as every operation with a known return has
//! been linearized. At each point it tries them after the operations with known returns,
//! and skips those that would not change the model state, those whose identical
//! earlier-called twin is still unused (see [`Model::same_input`]), and those that make the
//! unknown-outcome operation placed just before them pointless (a write overwriting
//! another). A configuration is also skipped when one with the same linearized
//! known-return operations and model state, but a subset of its unknown-outcome
//! operations, was already explored.
//!
//! [`check_kv`] checks a key-value history by splitting it per key (linearizability is
//! compositional, so a history is linearizable iff every per-key sub-history is) and
//! checking each key against the single-register model [`KvRegister`].
//!
//! Operations are referred to in explanations as `#i`, the index of the operation in the
//! history slice passed to [`check`] or [`check_kv`].

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Debug, Write as _};
use std::hash::{BuildHasher, Hash};

use serde::{Deserialize, Serialize};

/// A sequential specification of the object a history is checked against.
///
/// The model must be deterministic: [`step`](Model::step) is a pure function of the current
/// state, the input and the observed output.
pub trait Model: Clone + Eq + Hash + Debug {
    /// The description of an operation (what the client asked for).
    type Input: Debug;
    /// The result of an operation (what the client observed).
    type Output: Debug + PartialEq;

    /// Applies `input` to this state.
    ///
    /// Returns the next state if the operation can produce `output` when executed in this
    /// state, and `None` if it cannot. An `output` of `None` means the outcome was not
    /// observed: any outcome is acceptable, and only the effect of the operation is applied.
    fn step(&self, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self>;

    /// Whether two inputs are the same operation (have the same effect in every state).
    ///
    /// Optional: it only speeds the search up. When several unknown-outcome operations have
    /// the same input and output, the checker then considers them interchangeable and
    /// explores only one order of using them. The default, `false`, is always correct;
    /// returning `true` for inputs that differ makes the checker unsound.
    fn same_input(a: &Self::Input, b: &Self::Input) -> bool {
        let _ = (a, b);
        false
    }
}

/// One client operation in a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// The client that issued the operation (informational; not used by the search).
    pub client: u64,
    /// What the client asked for.
    pub input: I,
    /// Virtual time (nanoseconds) at which the operation was invoked.
    pub call: u64,
    /// Virtual time (nanoseconds) at which the operation returned, or `None` if its outcome
    /// is unknown: it may have taken effect at any time after `call`, or never.
    pub ret: Option<u64>,
    /// What the client observed, or `None` if the output is unknown (any output is
    /// accepted). Usually `None` whenever `ret` is `None`.
    pub output: Option<O>,
}

/// The verdict of a linearizability check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// A linearization of the history exists.
    Linearizable,
    /// No linearization of the history exists.
    NotLinearizable {
        /// A human-readable account of where the search got stuck: the longest
        /// linearizable prefix found, the model state after it and the operations that
        /// could not be placed next.
        explanation: String,
    },
    /// The step budget was exhausted before the search reached a verdict.
    Unknown,
}

impl CheckResult {
    /// Whether the history was proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }

    /// Whether the history was proven not linearizable.
    pub fn is_not_linearizable(&self) -> bool {
        matches!(self, CheckResult::NotLinearizable { .. })
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => f.write_str("linearizable"),
            CheckResult::NotLinearizable { explanation } => write!(f, "not linearizable: {explanation}"),
            CheckResult::Unknown => f.write_str("unknown (step budget exhausted)"),
        }
    }
}

/// Checks whether `history` is linearizable with respect to the model starting in `init`.
///
/// Each iteration of the search (trying one operation, or backtracking once) counts as one
/// step; if more than `max_steps` steps are needed the result is [`CheckResult::Unknown`].
///
/// An operation that returns at the same instant another one is called is treated as
/// concurrent with it. The order of operations in `history` does not matter.
///
/// # Panics
///
/// Panics if an operation returns before it was called (a malformed history).
pub fn check<M: Model>(init: M, history: &[Operation<M::Input, M::Output>], max_steps: u64) -> CheckResult {
    let ops: Vec<&Operation<M::Input, M::Output>> = history.iter().collect();
    let ids: Vec<usize> = (0..history.len()).collect();
    check_refs(&init, &ops, &ids, max_steps)
}

/// The input of an operation on a key-value store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvInput {
    /// Sets `key` to `value`. Output: [`KvOutput::Ok`].
    Put {
        /// The key to write.
        key: String,
        /// The value to store.
        value: String,
    },
    /// Reads `key`. Output: [`KvOutput::Value`].
    Get {
        /// The key to read.
        key: String,
    },
    /// Removes `key`. Output: [`KvOutput::Ok`].
    Delete {
        /// The key to remove.
        key: String,
    },
    /// Sets `key` to `new` if its current value is `expected` (`None`: the key is absent).
    /// Output: [`KvOutput::CasResult`].
    Cas {
        /// The key to update.
        key: String,
        /// The value the key must currently hold for the update to happen.
        expected: Option<String>,
        /// The value to store on success.
        new: String,
    },
}

impl KvInput {
    /// The key the operation acts on.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Put { key, .. } | KvInput::Get { key } | KvInput::Delete { key } | KvInput::Cas { key, .. } => key,
        }
    }
}

/// The output of an operation on a key-value store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOutput {
    /// A `Put` or `Delete` was applied.
    Ok,
    /// The value read by a `Get` (`None`: the key was absent).
    Value(Option<String>),
    /// The result of a `Cas`.
    CasResult {
        /// Whether the value matched `expected` and was replaced.
        ok: bool,
        /// On a mismatch, the value the key held (`None`: absent). On success, either the
        /// value before the update (equal to `expected`) or the new value; the model
        /// accepts both conventions.
        current: Option<String>,
    },
}

/// The sequential model of a single key of a key-value store: the key's current value
/// (`None` while absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvRegister(pub Option<String>);

impl Model for KvRegister {
    type Input = KvInput;
    type Output = KvOutput;

    fn same_input(a: &KvInput, b: &KvInput) -> bool {
        a == b
    }

    fn step(&self, input: &KvInput, output: Option<&KvOutput>) -> Option<Self> {
        match input {
            KvInput::Put { value, .. } => {
                matches!(output, None | Some(KvOutput::Ok)).then(|| KvRegister(Some(value.clone())))
            }
            KvInput::Delete { .. } => matches!(output, None | Some(KvOutput::Ok)).then_some(KvRegister(None)),
            KvInput::Get { .. } => match output {
                None => Some(self.clone()),
                Some(KvOutput::Value(value)) if *value == self.0 => Some(self.clone()),
                Some(_) => None,
            },
            KvInput::Cas { expected, new, .. } => {
                let matches = self.0 == *expected;
                match output {
                    None if matches => Some(KvRegister(Some(new.clone()))),
                    None => Some(self.clone()),
                    Some(KvOutput::CasResult { ok: true, current })
                        if matches && (*current == self.0 || current.as_deref() == Some(new.as_str())) =>
                    {
                        Some(KvRegister(Some(new.clone())))
                    }
                    Some(KvOutput::CasResult { ok: false, current }) if !matches && *current == self.0 => {
                        Some(self.clone())
                    }
                    Some(_) => None,
                }
            }
        }
    }
}

/// Checks a key-value history, one key at a time.
///
/// The history is partitioned by [`KvInput::key`] and every key is checked independently
/// against [`KvRegister`] starting absent, with a budget of `max_steps` steps per key.
/// Keys are checked in lexicographic order; the first key found not linearizable is named
/// in the explanation. If no key fails but some key exhausts its budget, the result is
/// [`CheckResult::Unknown`].
///
/// # Panics
///
/// Panics if an operation returns before it was called (a malformed history).
pub fn check_kv(history: &[Operation<KvInput, KvOutput>], max_steps: u64) -> CheckResult {
    type Part<'h> = (Vec<&'h Operation<KvInput, KvOutput>>, Vec<usize>);
    let mut parts: BTreeMap<&str, Part<'_>> = BTreeMap::new();
    for (id, op) in history.iter().enumerate() {
        let (ops, ids) = parts.entry(op.input.key()).or_default();
        ops.push(op);
        ids.push(id);
    }
    let mut unknown = false;
    for (key, (ops, ids)) in &mut parts {
        let dropped = drop_irrelevant_unknown_outcomes(ops, ids);
        match check_refs(&KvRegister(None), ops, ids, max_steps) {
            CheckResult::Linearizable => {}
            CheckResult::Unknown => unknown = true,
            CheckResult::NotLinearizable { explanation } => {
                let note = if dropped > 0 {
                    format!(" ({dropped} unknown-outcome reads and unobserved writes were left out)")
                } else {
                    String::new()
                };
                return CheckResult::NotLinearizable {
                    explanation: format!("key {key:?} is not linearizable{note}: {explanation}"),
                };
            }
        }
    }
    if unknown {
        CheckResult::Unknown
    } else {
        CheckResult::Linearizable
    }
}

/// Removes, from the operations on one key, the unknown-outcome operations that cannot
/// matter to any linearization, and returns how many were removed:
///
/// * a `Get` with an unknown output has no effect;
/// * a `Put` of a value that no operation observes (no `Get` or `Cas` output and no `Cas`
///   expectation mentions it) is never needed. In a linearization using it, the operation
///   right after it either overwrites it (`Put`, `Delete`: drop the write), or would
///   observe it (impossible: the value is not mentioned), or has an unknown output and
///   leaves the final state equal to the written value when executed first (swap them);
///   repeating this moves the write to the end, where it can be left out.
///
/// These operations are cheap to decide on but expensive to carry through the search,
/// which would otherwise try them at every point after their call.
fn drop_irrelevant_unknown_outcomes(ops: &mut Vec<&Operation<KvInput, KvOutput>>, ids: &mut Vec<usize>) -> usize {
    let mut observed: HashSet<&str> = HashSet::new();
    for op in ops.iter() {
        if let KvInput::Cas { expected: Some(value), .. } = &op.input {
            observed.insert(value);
        }
        match &op.output {
            Some(KvOutput::Value(Some(value)) | KvOutput::CasResult { current: Some(value), .. }) => {
                observed.insert(value);
            }
            Some(KvOutput::Ok | KvOutput::Value(None) | KvOutput::CasResult { current: None, .. }) | None => {}
        }
    }
    let irrelevant = |op: &Operation<KvInput, KvOutput>| {
        op.ret.is_none()
            && op.output.is_none()
            && match &op.input {
                KvInput::Get { .. } => true,
                KvInput::Put { value, .. } => !observed.contains(value.as_str()),
                KvInput::Delete { .. } | KvInput::Cas { .. } => false,
            }
    };
    let before = ops.len();
    let (kept_ops, kept_ids) = ops.iter().zip(ids.iter()).filter(|(op, _)| !irrelevant(op)).unzip();
    *ops = kept_ops;
    *ids = kept_ids;
    before - ops.len()
}

// ---------------------------------------------------------------------------------------
// Search internals.
// ---------------------------------------------------------------------------------------

type Op<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

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
struct Best<M> {
    /// Linearized operations, in order.
    order: Vec<usize>,
    /// How many of them have known returns.
    known: usize,
    /// The model state after them.
    state: M,
}

enum Outcome<M> {
    Linearizable,
    Unknown,
    NotLinearizable(Best<M>),
}

fn check_refs<M: Model>(init: &M, ops: &[&Op<M>], ids: &[usize], max_steps: u64) -> CheckResult {
    for (op, id) in ops.iter().zip(ids) {
        if let Some(ret) = op.ret {
            assert!(ret >= op.call, "operation #{id} returns at {ret}, before its call at {}", op.call);
        }
    }
    match search(init, ops, max_steps) {
        Outcome::Linearizable => CheckResult::Linearizable,
        Outcome::Unknown => CheckResult::Unknown,
        Outcome::NotLinearizable(best) => CheckResult::NotLinearizable { explanation: explain(ops, ids, &best) },
    }
}

fn search<M: Model>(init: &M, ops: &[&Op<M>], max_steps: u64) -> Outcome<M> {
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

/// How many operations of the best prefix the explanation lists.
const PREFIX_SHOWN: usize = 20;
/// How many candidate operations the explanation lists.
const CANDIDATES_SHOWN: usize = 20;

fn describe<I: Debug, O: Debug>(id: usize, op: &Operation<I, O>) -> String {
    let ret = op.ret.map_or_else(|| "?".to_owned(), |ret| ret.to_string());
    let output = op.output.as_ref().map_or_else(|| "<unknown>".to_owned(), |output| format!("{output:?}"));
    format!("#{id} client {} [{}, {ret}] {:?} -> {output}", op.client, op.call, op.input)
}

fn explain<M: Model>(ops: &[&Op<M>], ids: &[usize], best: &Best<M>) -> String {
    let mut done = vec![false; ops.len()];
    for &op in &best.order {
        done[op] = true;
    }
    let known_total = ops.iter().filter(|op| op.ret.is_some()).count();
    let pending_total = ops.len() - known_total;
    let pending_used = best.order.len() - best.known;

    let mut text = String::new();
    let _ = writeln!(
        text,
        "no linearization of the {} operations ({pending_total} with unknown outcome) exists.",
        ops.len()
    );
    let _ = writeln!(
        text,
        "Longest linearizable prefix found: {} of {known_total} completed operations \
         (plus {pending_used} with unknown outcome):",
        best.known
    );
    let skipped = best.order.len().saturating_sub(PREFIX_SHOWN);
    if best.order.is_empty() {
        let _ = writeln!(text, "  (empty)");
    } else if skipped > 0 {
        let _ = writeln!(text, "  ... {skipped} earlier operations");
    }
    for &op in &best.order[skipped..] {
        let _ = writeln!(text, "  {}", describe(ids[op], ops[op]));
    }
    let _ = writeln!(text, "Model state after that prefix: {:?}", best.state);

    // The outstanding operation that had to take effect first, and everything that could
    // have been placed before it.
    let deadline = (0..ops.len())
        .filter(|&i| !done[i])
        .filter_map(|i| ops[i].ret.map(|ret| (ret, ops[i].call, i)))
        .min()
        .map(|(_, _, i)| i);
    if let (Some(deadline), Some(bound)) = (deadline, deadline.and_then(|i| ops[i].ret)) {
        // Completed operations first, then unknown-outcome ones that would change the state.
        let mut candidates: Vec<(usize, &str)> = Vec::new();
        let mut idle = 0;
        for op in (0..ops.len()).filter(|&i| !done[i] && ops[i].call <= bound) {
            let reason = match best.state.step(&ops[op].input, ops[op].output.as_ref()) {
                None => "impossible in this state",
                Some(next) if ops[op].ret.is_none() && next == best.state => {
                    idle += 1;
                    continue;
                }
                Some(_) => "possible, but every continuation fails",
            };
            candidates.push((op, reason));
        }
        candidates.sort_unstable_by_key(|&(i, _)| (ops[i].ret.is_none(), ops[i].call, i));
        let _ = writeln!(
            text,
            "Operation #{} returned at {bound}, so it or an operation invoked by then must come next, \
             but none of these leads to a complete linearization:",
            ids[deadline]
        );
        for &(op, reason) in candidates.iter().take(CANDIDATES_SHOWN) {
            let _ = writeln!(text, "  {}: {reason}", describe(ids[op], ops[op]));
        }
        if candidates.len() > CANDIDATES_SHOWN {
            let _ = writeln!(text, "  ... and {} more", candidates.len() - CANDIDATES_SHOWN);
        }
        if idle > 0 {
            let _ = writeln!(text, "  ({idle} unknown-outcome operations without effect in this state not shown)");
        }
    }
    text.truncate(text.trim_end().len());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 10_000_000;

    fn op(
        client: u64,
        call: u64,
        ret: Option<u64>,
        input: KvInput,
        output: Option<KvOutput>,
    ) -> Operation<KvInput, KvOutput> {
        Operation { client, input, call, ret, output }
    }

    fn put(key: &str, value: &str) -> KvInput {
        KvInput::Put { key: key.into(), value: value.into() }
    }

    fn get(key: &str) -> KvInput {
        KvInput::Get { key: key.into() }
    }

    fn delete(key: &str) -> KvInput {
        KvInput::Delete { key: key.into() }
    }

    fn cas(key: &str, expected: Option<&str>, new: &str) -> KvInput {
        KvInput::Cas { key: key.into(), expected: expected.map(Into::into), new: new.into() }
    }

    fn value(v: Option<&str>) -> Option<KvOutput> {
        Some(KvOutput::Value(v.map(Into::into)))
    }

    fn cas_result(ok: bool, current: Option<&str>) -> Option<KvOutput> {
        Some(KvOutput::CasResult { ok, current: current.map(Into::into) })
    }

    fn ok() -> Option<KvOutput> {
        Some(KvOutput::Ok)
    }

    /// Checks a single-key history with [`check`], and asserts that [`check_kv`] agrees.
    fn register(history: &[Operation<KvInput, KvOutput>]) -> CheckResult {
        let result = check(KvRegister(None), history, BUDGET);
        let by_key = check_kv(history, BUDGET);
        assert_eq!(std::mem::discriminant(&result), std::mem::discriminant(&by_key), "{result:?} vs {by_key:?}");
        result
    }

    fn explanation(result: CheckResult) -> String {
        match result {
            CheckResult::NotLinearizable { explanation } => explanation,
            other => panic!("expected NotLinearizable, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(register(&[]), CheckResult::Linearizable);
        assert_eq!(check_kv(&[], 0), CheckResult::Linearizable);
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            op(1, 0, Some(10), get("k"), value(None)),
            op(1, 20, Some(30), put("k", "a"), ok()),
            op(2, 40, Some(50), get("k"), value(Some("a"))),
            op(1, 60, Some(70), put("k", "b"), ok()),
            op(2, 80, Some(90), get("k"), value(Some("b"))),
            op(1, 100, Some(110), delete("k"), ok()),
            op(2, 120, Some(130), get("k"), value(None)),
        ];
        assert_eq!(register(&history), CheckResult::Linearizable);
        assert_eq!(check_kv(&history, BUDGET), CheckResult::Linearizable);
    }

    #[test]
    fn history_order_in_slice_does_not_matter() {
        let mut history = vec![
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(2, 20, Some(30), get("k"), value(Some("a"))),
            op(1, 40, Some(50), put("k", "b"), ok()),
            op(2, 60, Some(70), get("k"), value(Some("b"))),
        ];
        history.reverse();
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn concurrent_writes_with_read_seeing_either_value_are_linearizable() {
        for seen in ["x", "y"] {
            let history = [
                op(1, 0, Some(100), put("k", "x"), ok()),
                op(2, 10, Some(90), put("k", "y"), ok()),
                op(3, 20, Some(80), get("k"), value(Some(seen))),
                // After both writes completed, one of them is the final value.
                op(3, 200, Some(210), get("k"), value(Some(seen))),
            ];
            assert_eq!(register(&history), CheckResult::Linearizable, "read saw {seen}");
        }
    }

    #[test]
    fn reads_disagreeing_on_final_order_of_concurrent_writes_are_not_linearizable() {
        let history = [
            op(1, 0, Some(100), put("k", "x"), ok()),
            op(2, 10, Some(90), put("k", "y"), ok()),
            op(3, 200, Some(210), get("k"), value(Some("x"))),
            op(4, 220, Some(230), get("k"), value(Some("y"))),
        ];
        assert!(register(&history).is_not_linearizable());
    }

    #[test]
    fn stale_read_after_completed_write_is_not_linearizable() {
        let history = [
            op(1, 0, Some(10), put("k", "old"), ok()),
            op(1, 20, Some(30), put("k", "new"), ok()),
            op(2, 40, Some(50), get("k"), value(Some("old"))),
        ];
        let text = explanation(register(&history));
        assert!(text.contains("Longest linearizable prefix found: 2 of 3"), "{text}");
        assert!(text.contains("#2 client 2 [40, 50]"), "{text}");
        assert!(text.contains("impossible in this state"), "{text}");
        assert!(text.contains(r#"KvRegister(Some("new"))"#), "{text}");
    }

    #[test]
    fn read_concurrent_with_write_may_see_old_value() {
        let history = [
            op(1, 0, Some(10), put("k", "old"), ok()),
            op(1, 20, Some(60), put("k", "new"), ok()),
            op(2, 30, Some(50), get("k"), value(Some("old"))),
            op(2, 70, Some(80), get("k"), value(Some("new"))),
        ];
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        let history = [op(1, 0, Some(10), put("k", "a"), ok()), op(2, 10, Some(20), get("k"), value(None))];
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn read_of_never_written_value_is_not_linearizable() {
        let history = [op(1, 0, Some(10), put("k", "a"), ok()), op(2, 5, Some(15), get("k"), value(Some("ghost")))];
        let text = explanation(register(&history));
        assert!(text.contains("#1 client 2"), "{text}");
    }

    #[test]
    fn pending_write_may_or_may_not_be_observed() {
        for seen in [Some("x"), Some("y")] {
            let history = [
                op(1, 0, Some(10), put("k", "x"), ok()),
                op(2, 20, None, put("k", "y"), None),
                op(3, 30, Some(40), get("k"), value(seen)),
                op(3, 1_000, Some(1_010), get("k"), value(seen)),
            ];
            assert_eq!(register(&history), CheckResult::Linearizable, "read saw {seen:?}");
        }
    }

    #[test]
    fn identical_pending_operations_can_each_take_effect() {
        let history = [
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(2, 20, None, delete("k"), None),
            op(3, 20, None, put("k", "b"), None),
            op(4, 20, None, delete("k"), None),
            op(5, 30, Some(40), get("k"), value(None)),
            op(5, 50, Some(60), get("k"), value(Some("b"))),
            op(5, 70, Some(80), get("k"), value(None)),
        ];
        assert_eq!(register(&history), CheckResult::Linearizable);
        // A third absent read after another "b" needs a third delete.
        let mut history = history.to_vec();
        history.push(op(1, 90, None, put("k", "b"), None));
        history.push(op(5, 100, Some(110), get("k"), value(Some("b"))));
        history.push(op(5, 120, Some(130), get("k"), value(None)));
        assert!(register(&history).is_not_linearizable());
    }

    #[test]
    fn unobserved_pending_write_does_not_hide_a_stale_read() {
        let history = [
            op(1, 0, Some(10), put("k", "old"), ok()),
            op(2, 5, None, put("k", "lost"), None),
            op(2, 6, None, get("k"), None),
            op(1, 20, Some(30), put("k", "new"), ok()),
            op(3, 40, Some(50), get("k"), value(Some("old"))),
        ];
        assert!(register(&history).is_not_linearizable());
        let text = explanation(check_kv(&history, BUDGET));
        assert!(text.contains("2 unknown-outcome reads and unobserved writes were left out"), "{text}");
    }

    #[test]
    fn pending_write_may_take_effect_long_after_its_call() {
        let history = [
            op(1, 0, Some(10), put("k", "x"), ok()),
            op(2, 5, None, put("k", "late"), None),
            op(3, 100, Some(110), get("k"), value(Some("x"))),
            op(3, 200, Some(210), get("k"), value(Some("x"))),
            op(3, 300, Some(310), get("k"), value(Some("late"))),
        ];
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn pending_write_cannot_be_observed_before_its_call() {
        let history = [op(1, 0, Some(10), get("k"), value(Some("early"))), op(2, 20, None, put("k", "early"), None)];
        assert!(register(&history).is_not_linearizable());
    }

    #[test]
    fn observed_pending_write_cannot_be_undone() {
        let history = [
            op(1, 0, Some(10), put("k", "x"), ok()),
            op(2, 20, None, put("k", "y"), None),
            op(3, 30, Some(40), get("k"), value(Some("y"))),
            op(3, 50, Some(60), get("k"), value(Some("x"))),
        ];
        assert!(register(&history).is_not_linearizable());
    }

    #[test]
    fn history_of_only_pending_operations_is_linearizable() {
        let history = [op(1, 0, None, put("k", "x"), None), op(2, 5, None, get("k"), None)];
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn cas_succeeds_only_on_matching_value() {
        // Success on an absent key, success on a match, failure reporting the current value.
        let history = [
            op(1, 0, Some(10), cas("k", None, "a"), cas_result(true, None)),
            op(1, 20, Some(30), cas("k", Some("a"), "b"), cas_result(true, Some("b"))),
            op(1, 40, Some(50), cas("k", Some("a"), "c"), cas_result(false, Some("b"))),
            op(1, 60, Some(70), get("k"), value(Some("b"))),
        ];
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn cas_reporting_success_on_mismatch_is_not_linearizable() {
        let history = [
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(1, 20, Some(30), cas("k", Some("z"), "b"), cas_result(true, Some("b"))),
        ];
        assert!(register(&history).is_not_linearizable());
    }

    #[test]
    fn cas_failure_must_report_the_current_value() {
        let history = [
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(1, 20, Some(30), cas("k", Some("z"), "b"), cas_result(false, Some("stale"))),
        ];
        assert!(register(&history).is_not_linearizable());
        let history = [
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(1, 20, Some(30), cas("k", Some("z"), "b"), cas_result(false, Some("a"))),
            op(1, 40, Some(50), get("k"), value(Some("a"))),
        ];
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn concurrent_cas_operations_cannot_both_succeed() {
        let history = [
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(2, 20, Some(40), cas("k", Some("a"), "b"), cas_result(true, Some("b"))),
            op(3, 25, Some(45), cas("k", Some("a"), "c"), cas_result(true, Some("c"))),
        ];
        assert!(register(&history).is_not_linearizable());
        let history = [
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(2, 20, Some(40), cas("k", Some("a"), "b"), cas_result(true, Some("b"))),
            op(3, 25, Some(45), cas("k", Some("a"), "c"), cas_result(false, Some("b"))),
        ];
        assert_eq!(register(&history), CheckResult::Linearizable);
    }

    #[test]
    fn pending_cas_applies_its_effect_only_on_match() {
        // The pending CAS expects a value the key never holds, so it can never take effect.
        let history = [
            op(1, 0, Some(10), put("k", "a"), ok()),
            op(2, 20, None, cas("k", Some("z"), "b"), None),
            op(3, 30, Some(40), get("k"), value(Some("b"))),
        ];
        assert!(register(&history).is_not_linearizable());
    }

    #[test]
    fn check_kv_reports_the_failing_key() {
        let history = [
            op(1, 0, Some(10), put("a", "1"), ok()),
            op(2, 5, Some(15), put("b", "1"), ok()),
            op(1, 20, Some(30), put("b", "2"), ok()),
            op(2, 40, Some(50), get("a"), value(Some("1"))),
            op(3, 60, Some(70), get("b"), value(Some("1"))),
            op(3, 80, Some(90), get("c"), value(None)),
        ];
        let text = explanation(check_kv(&history, BUDGET));
        assert!(text.starts_with(r#"key "b" is not linearizable"#), "{text}");
        // Operations are named by their index in the full history.
        assert!(text.contains("#4 client 3 [60, 70]"), "{text}");
        assert!(!text.contains(r#"key: "a""#), "{text}");
    }

    #[test]
    fn per_key_checking_ignores_other_keys() {
        // Interleaved keys: a single register model would reject this, per-key checking not.
        let history = [
            op(1, 0, Some(10), put("a", "1"), ok()),
            op(1, 20, Some(30), put("b", "2"), ok()),
            op(2, 40, Some(50), get("a"), value(Some("1"))),
            op(2, 60, Some(70), get("b"), value(Some("2"))),
        ];
        assert_eq!(check_kv(&history, BUDGET), CheckResult::Linearizable);
        assert!(check(KvRegister(None), &history, BUDGET).is_not_linearizable());
    }

    #[test]
    #[should_panic(expected = "before its call")]
    fn operation_returning_before_its_call_is_rejected() {
        let history = [op(1, 10, Some(5), get("k"), value(None))];
        let _ = check(KvRegister(None), &history, BUDGET);
    }

    /// A counter whose unknown-outcome increments can build on each other.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Counter(u64);

    #[derive(Clone, Debug)]
    enum CounterInput {
        Add(u64),
        Read,
    }

    impl Model for Counter {
        type Input = CounterInput;
        type Output = u64;

        fn step(&self, input: &CounterInput, output: Option<&u64>) -> Option<Self> {
            match input {
                CounterInput::Add(n) => Some(Counter(self.0 + n)),
                CounterInput::Read => output.is_none_or(|&seen| seen == self.0).then(|| self.clone()),
            }
        }
    }

    #[test]
    fn pending_operations_can_build_on_each_other() {
        let counter_op = |call, ret, input, output| Operation { client: 1, input, call, ret, output };
        let history = [
            counter_op(0, None, CounterInput::Add(1), None),
            counter_op(0, None, CounterInput::Add(1), None),
            counter_op(0, None, CounterInput::Add(5), None),
            counter_op(10, Some(20), CounterInput::Read, Some(2)),
            counter_op(30, Some(40), CounterInput::Read, Some(7)),
        ];
        assert_eq!(check(Counter(0), &history, BUDGET), CheckResult::Linearizable);
        let mut history = history.to_vec();
        history.push(counter_op(50, Some(60), CounterInput::Read, Some(6)));
        assert!(check(Counter(0), &history, BUDGET).is_not_linearizable());
    }

    /// Decides linearizability by enumerating every order (and every subset of the
    /// unknown-outcome operations), straight from the definition.
    fn brute_force<M: Model>(state: &M, ops: &[Operation<M::Input, M::Output>], done: &mut [bool]) -> bool {
        // The earliest return among operations that must still be linearized.
        let Some(deadline) = (0..ops.len()).filter(|&i| !done[i]).filter_map(|i| ops[i].ret).min() else {
            return true;
        };
        for i in 0..ops.len() {
            // `i` may go next unless an outstanding operation returned before it was called.
            if done[i] || ops[i].call > deadline {
                continue;
            }
            if let Some(next) = state.step(&ops[i].input, ops[i].output.as_ref()) {
                done[i] = true;
                let found = brute_force(&next, ops, done);
                done[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn small_random_histories_agree_with_brute_force() {
        let mut rng = fastrand::Rng::with_seed(99);
        let values = [None, Some("a"), Some("b")];
        let pick = |rng: &mut fastrand::Rng| values[rng.usize(..values.len())].map(str::to_owned);
        let (mut linearizable, mut not) = (0, 0);
        for case in 0..3_000 {
            let len = rng.usize(1..=7);
            let history: Vec<Operation<KvInput, KvOutput>> = (0..len)
                .map(|i| {
                    let call = rng.u64(0..40);
                    let ret = (rng.u32(..4) != 0).then(|| call + rng.u64(0..30));
                    let (input, output) = match rng.u32(..7) {
                        0 | 1 => (get("k"), KvOutput::Value(pick(&mut rng))),
                        2 | 3 => (put("k", if rng.bool() { "a" } else { "b" }), KvOutput::Ok),
                        4 => (delete("k"), KvOutput::Ok),
                        _ => {
                            let new = if rng.bool() { "a" } else { "b" };
                            let input = KvInput::Cas { key: "k".into(), expected: pick(&mut rng), new: new.into() };
                            (input, KvOutput::CasResult { ok: rng.bool(), current: pick(&mut rng) })
                        }
                    };
                    let output = (ret.is_some() && rng.u32(..5) != 0).then_some(output);
                    op(i as u64, call, ret, input, output)
                })
                .collect();
            let expected = brute_force(&KvRegister(None), &history, &mut vec![false; len]);
            let result = register(&history);
            assert_eq!(result.is_linearizable(), expected, "case {case}: {history:#?}\n{result}");
            assert_ne!(result, CheckResult::Unknown);
            if expected {
                linearizable += 1;
            } else {
                not += 1;
            }
        }
        // Both verdicts are well represented.
        assert!(linearizable > 500 && not > 500, "{linearizable} linearizable, {not} not");
    }

    #[test]
    fn exhausted_budget_is_unknown() {
        let history = random_history(7, 5, 50, &["k"]);
        assert_eq!(register(&history), CheckResult::Linearizable);
        assert_eq!(check(KvRegister(None), &history, 10), CheckResult::Unknown);
        assert_eq!(check_kv(&history, 10), CheckResult::Unknown);
    }

    /// An operation of a simulated client, before its input and output are decided.
    struct Planned {
        client: u64,
        key: String,
        call: u64,
        ret: Option<u64>,
        /// When the operation takes effect on the store, if it ever does.
        effect: Option<u64>,
    }

    /// Simulates `clients` clients running `ops_per_client` operations each, sequentially
    /// with random durations, against an atomic key-value store. Each operation takes effect
    /// at a random instant inside its interval; about one in forty has an unknown outcome
    /// and takes effect at some later instant, or never. Written values are unique.
    fn random_history(
        seed: u64,
        clients: u64,
        ops_per_client: usize,
        keys: &[&str],
    ) -> Vec<Operation<KvInput, KvOutput>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut planned = Vec::new();
        for client in 0..clients {
            let mut time = rng.u64(0..50);
            for _ in 0..ops_per_client {
                let call = time;
                let key = keys[rng.usize(..keys.len())].to_owned();
                if rng.u32(..40) == 0 {
                    let effect = rng.bool().then(|| call + rng.u64(1..=3_000));
                    planned.push(Planned { client, key, call, ret: None, effect });
                    time = call + 500 + rng.u64(0..50);
                } else {
                    let effect = call + rng.u64(1..=100);
                    let ret = effect + rng.u64(1..=100);
                    planned.push(Planned { client, key, call, ret: Some(ret), effect: Some(effect) });
                    time = ret + rng.u64(0..50);
                }
            }
        }

        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| (planned[i].effect.is_none(), planned[i].effect, i));
        let mut store: HashMap<String, String> = HashMap::new();
        let mut written = 0u64;
        let fresh = |written: &mut u64| {
            *written += 1;
            format!("v{written}")
        };
        let mut decided: Vec<Option<(KvInput, Option<KvOutput>)>> = (0..planned.len()).map(|_| None).collect();
        for i in order {
            let plan = &planned[i];
            let key = plan.key.clone();
            let current = store.get(&key).cloned();
            let (input, output) = match rng.u32(..10) {
                0..=3 => (KvInput::Get { key }, KvOutput::Value(current)),
                4..=6 => (KvInput::Put { key, value: fresh(&mut written) }, KvOutput::Ok),
                7..=8 => {
                    let expected = match rng.u32(..3) {
                        0 | 1 => current.clone(),
                        _ => rng.bool().then(|| format!("v{}", rng.u64(1..=written.max(1)))),
                    };
                    let ok = expected == current;
                    let new = fresh(&mut written);
                    let current = if ok { Some(new.clone()) } else { current };
                    (KvInput::Cas { key, expected, new }, KvOutput::CasResult { ok, current })
                }
                _ => (KvInput::Delete { key }, KvOutput::Ok),
            };
            if plan.effect.is_some() {
                match &input {
                    KvInput::Put { key, value } => {
                        store.insert(key.clone(), value.clone());
                    }
                    KvInput::Delete { key } => {
                        store.remove(key);
                    }
                    KvInput::Cas { key, new, .. } if matches!(output, KvOutput::CasResult { ok: true, .. }) => {
                        store.insert(key.clone(), new.clone());
                    }
                    _ => {}
                }
            }
            decided[i] = Some((input, plan.ret.map(|_| output)));
        }

        planned
            .into_iter()
            .zip(decided)
            .map(|(plan, decided)| {
                let (input, output) = decided.expect("every operation is decided");
                Operation { client: plan.client, input, call: plan.call, ret: plan.ret, output }
            })
            .collect()
    }

    fn is_completed_read(op: &Operation<KvInput, KvOutput>) -> bool {
        matches!(op.input, KvInput::Get { .. }) && op.ret.is_some()
    }

    fn completed_put(op: &Operation<KvInput, KvOutput>) -> Option<(u64, &str)> {
        match (&op.input, op.ret) {
            (KvInput::Put { value, .. }, Some(ret)) => Some((ret, value.as_str())),
            _ => None,
        }
    }

    /// Replaces the output of a late read with a value that was overwritten before the
    /// read was invoked (by a write that itself started after the value's write returned).
    fn corrupt_with_stale_value(history: &mut [Operation<KvInput, KvOutput>]) {
        let mut reads: Vec<usize> = (0..history.len()).filter(|&i| is_completed_read(&history[i])).collect();
        reads.sort_by_key(|&i| std::cmp::Reverse(history[i].call));
        for read in reads {
            let call = history[read].call;
            let overwrite_call =
                history.iter().filter(|w| completed_put(w).is_some_and(|(ret, _)| ret < call)).map(|w| w.call).max();
            let Some(overwrite_call) = overwrite_call else { continue };
            let stale = history.iter().filter_map(completed_put).filter(|&(ret, _)| ret < overwrite_call).max();
            if let Some((_, stale)) = stale {
                history[read].output = Some(KvOutput::Value(Some(stale.to_owned())));
                return;
            }
        }
        panic!("no read to corrupt");
    }

    #[test]
    fn random_linearizable_register_history_passes_and_corrupted_read_fails() {
        for seed in [1, 2] {
            let history = random_history(seed, 5, 400, &["k"]);
            assert_eq!(history.len(), 2_000);
            assert!(history.iter().any(|op| op.ret.is_none()));
            assert_eq!(check(KvRegister(None), &history, BUDGET), CheckResult::Linearizable, "seed {seed}");
            assert_eq!(check_kv(&history, BUDGET), CheckResult::Linearizable, "seed {seed}");

            // A read of a value that was never written.
            let mut corrupted = history.clone();
            let reads: Vec<usize> = (0..history.len()).filter(|&i| is_completed_read(&history[i])).collect();
            let victim = reads[reads.len() / 2];
            corrupted[victim].output = Some(KvOutput::Value(Some("never written".into())));
            assert!(check_kv(&corrupted, BUDGET).is_not_linearizable(), "seed {seed}");
            let text = explanation(check(KvRegister(None), &corrupted, BUDGET));
            assert!(text.contains(&format!("#{victim} ")), "seed {seed}: {text}");

            // A read of a value that had definitely been overwritten.
            let mut corrupted = history.clone();
            corrupt_with_stale_value(&mut corrupted);
            assert!(check_kv(&corrupted, BUDGET).is_not_linearizable(), "seed {seed}");
        }
    }

    #[test]
    fn random_multi_key_history_passes_and_corrupted_read_fails() {
        let keys = ["a", "b", "c", "d"];
        let history = random_history(42, 5, 400, &keys);
        assert_eq!(check_kv(&history, BUDGET), CheckResult::Linearizable);

        let mut corrupted = history.clone();
        let victim = (0..history.len()).rev().find(|&i| is_completed_read(&history[i])).expect("a read");
        corrupted[victim].output = Some(KvOutput::Value(Some("never written".into())));
        let text = explanation(check_kv(&corrupted, BUDGET));
        let key = corrupted[victim].input.key();
        assert!(text.starts_with(&format!("key {key:?} is not linearizable")), "{text}");
    }
}

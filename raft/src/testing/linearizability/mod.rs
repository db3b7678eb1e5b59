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

mod explain;
mod kv;
mod search;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt::{self, Debug};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

pub use kv::{check_kv, KvInput, KvOutput, KvRegister};

use explain::explain;
use search::{search, Outcome};

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
/// An operation of the history checked against model `M`.
type Op<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// Checks the operations `ops` (named `#ids[i]` in explanations) against the model starting in `init`.
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

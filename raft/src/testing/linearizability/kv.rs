//! The key-value model: [`KvInput`], [`KvOutput`], the single-key model [`KvRegister`]
//! and [`check_kv`], which checks a history one key at a time.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{check_refs, CheckResult, Model, Operation};

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

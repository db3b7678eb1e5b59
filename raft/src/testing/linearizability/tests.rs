use std::collections::HashMap;

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
pub(crate) fn random_history(
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

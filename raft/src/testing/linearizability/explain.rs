//! The explanation of a failed check: the longest linearizable prefix found and the
//! operations that could not be placed after it.

use std::fmt::{Debug, Write as _};

use super::search::Best;
use super::{Model, Op, Operation};

/// How many operations of the best prefix the explanation lists.
const PREFIX_SHOWN: usize = 20;
/// How many candidate operations the explanation lists.
const CANDIDATES_SHOWN: usize = 20;

fn describe<I: Debug, O: Debug>(id: usize, op: &Operation<I, O>) -> String {
    let ret = op.ret.map_or_else(|| "?".to_owned(), |ret| ret.to_string());
    let output = op.output.as_ref().map_or_else(|| "<unknown>".to_owned(), |output| format!("{output:?}"));
    format!("#{id} client {} [{}, {ret}] {:?} -> {output}", op.client, op.call, op.input)
}

pub(super) fn explain<M: Model>(ops: &[&Op<M>], ids: &[usize], best: &Best<M>) -> String {
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

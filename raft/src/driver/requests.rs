//! The callers waiting on the node: proposals waiting for their entry to be applied,
//! proposals and reads batched in this round, forwards and read-index requests waiting
//! for the leader's answer, and reads waiting for the state machine to reach their
//! index. Each caller is answered exactly once: by its result, or by an error when the
//! node learns the answer will not come.
//!
//! The rules of forwarding (the window, resending a lost request, settling requests to a
//! former leader) are the core's (`core/forward.rs`); this file only keeps the callers
//! of each request id and answers them as the core decides.
//!
//! **Architecture invariant:** a proposal is answered with its state machine response
//! only if the entry applied at its index has the term it was appended in, or, for one
//! whose leader's answer came after that index was applied, from the session table's
//! record of its (client, seq); any other entry there answers it
//! [`ClientError::Dropped`], and the handle proposes it again: a session command with
//! the same (client, seq), which the session layer applies at most once; a command
//! outside any session (appended by this node as leader, so its only copy is the one
//! that was replaced) as a new proposal.

use std::collections::{BTreeMap, VecDeque};

use super::apply::{ApplyBatch, ApplyOp};
use super::{Driver, ReadResponder, Waiter};
use crate::core::{ProposeError, Role};
use crate::error::ClientError;
use crate::network::Network;
use crate::runtime::Runtime;
use crate::session::{SessionKey, SessionOp};
use crate::state_machine::StateMachine;
use crate::types::{Entry, Instant, LogIndex, Proposal, Term};

/// The callers waiting on one node.
pub(super) struct Requests<SM: StateMachine> {
    /// Proposals waiting for their entry to be applied, in index order.
    pending: VecDeque<Pending<SM>>,
    /// Proposals made on a follower in the current batch, forwarded together.
    pub(super) forward_batch: Vec<(SessionOp, Waiter<SM>, tracing::Span)>,
    /// Reads asked for in the current batch; they share one read index.
    pub(super) read_batch: Vec<ReadResponder>,
    /// The proposers of each forward waiting for the leader's answer, in the batch's
    /// order, with their (client, seq) and request spans.
    forwards: BTreeMap<u64, Vec<Forwarded<SM>>>,
    /// The readers of each read-index request waiting for its index, with when it was
    /// asked for.
    reads: BTreeMap<u64, (Instant, Vec<ReadResponder>)>,
    /// Reads whose index is known, waiting for the state machine to apply it.
    read_waiters: BTreeMap<LogIndex, Vec<ReadResponder>>,
    /// Last index handed to the apply task.
    handed_to_apply: LogIndex,
    /// Last index the apply task reported applied.
    applied: LogIndex,
}

/// A proposer of a forward waiting for the leader's answer: its caller, its command's
/// (client, seq), its request span.
type Forwarded<SM> = (Waiter<SM>, Option<SessionKey>, tracing::Span);

/// A proposal waiting for its entry to be applied.
struct Pending<SM: StateMachine> {
    index: LogIndex,
    term: Term,
    tx: Waiter<SM>,
    /// The session command's key.
    key: Option<SessionKey>,
}

impl<SM: StateMachine> Requests<SM> {
    /// No caller waits yet.
    pub(super) fn new() -> Self {
        Requests {
            pending: VecDeque::new(),
            forward_batch: Vec::new(),
            read_batch: Vec::new(),
            forwards: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_waiters: BTreeMap::new(),
            handed_to_apply: 0,
            applied: 0,
        }
    }
}

impl<SM: StateMachine, R: Runtime, N: Network> Driver<SM, R, N> {
    /// A proposal made on this node while it leads.
    pub(super) fn propose(&mut self, op: Proposal, tx: Waiter<SM>, span: &tracing::Span) {
        let key = match &op {
            Proposal::Session(op) => {
                self.tell_wall_clock();
                SessionKey::of(op)
            }
            Proposal::Command(_) => None,
        };
        match self.core.propose(std::iter::once(op)) {
            Ok((index, term)) => {
                appended(span, index, term);
                self.insert_pending(Pending { index, term, tx, key })
            }
            Err(e) => tx.fail(propose_error(e)),
        }
    }

    /// Records a proposal waiting for (index, term) to be applied. An entry truncated
    /// from this node's log may still be committed by a later leader that holds it, so
    /// a proposal is settled only when its index is applied: by its own entry (the
    /// response) or by another one ([`ClientError::Dropped`]).
    fn insert_pending(&mut self, p: Pending<SM>) {
        let r = &mut self.requests;
        if p.index <= r.handed_to_apply {
            // Handed to the apply task before the leader's answer reached us (it came
            // late, or was lost and asked for again): the apply task answers from the
            // session table's record of the command. An opened session's entry cannot
            // be checked there; the handle opens another.
            match (p.tx, p.key) {
                (Waiter::Command(tx), Some(key)) => {
                    let claims = vec![(key, tx)];
                    let batch = ApplyBatch { entries: Vec::new(), responders: Vec::new(), claims };
                    let _ = self.apply_tx.unbounded_send(ApplyOp::Batch(batch));
                }
                (tx, _) => tx.fail(ClientError::Dropped),
            }
            return;
        }
        if r.pending.back().is_none_or(|q| q.index <= p.index) {
            r.pending.push_back(p);
        } else {
            let at = r.pending.partition_point(|q| q.index <= p.index);
            r.pending.insert(at, p);
        }
    }

    /// Sends this batch's follower proposals to the leader as one message (unless
    /// the core's window, [`RaftCore::may_forward`](crate::core::RaftCore::may_forward), holds them back for a later batch), and asks for one read
    /// index for this batch's reads.
    pub(super) fn flush_client_batches(&mut self, now: Instant) {
        if !self.requests.forward_batch.is_empty() && self.core.may_forward(now) {
            let batch = std::mem::take(&mut self.requests.forward_batch);
            if self.core.role() == Role::Leader {
                for (op, tx, span) in batch {
                    self.propose(op.into(), tx, &span);
                }
            } else {
                let mut requests = Vec::with_capacity(batch.len());
                let mut responders = Vec::with_capacity(batch.len());
                for (op, tx, span) in batch {
                    responders.push((tx, SessionKey::of(&op), span));
                    requests.push(op);
                }
                match self.core.forward(now, requests) {
                    Ok(id) => {
                        for (_, _, span) in &responders {
                            tracing::debug!(parent: span, forward = id, leader = ?self.core.leader(), "forwarded to the leader");
                        }
                        self.requests.forwards.insert(id, responders);
                    }
                    Err(e) => {
                        for (tx, _, _) in responders {
                            tx.fail(propose_error(e));
                        }
                    }
                }
            }
        }
        if !self.requests.read_batch.is_empty() {
            let batch = std::mem::take(&mut self.requests.read_batch);
            match self.core.read_index(now) {
                Ok(id) => {
                    self.requests.reads.insert(id, (now, batch));
                }
                Err(e) => {
                    for tx in batch {
                        let _ = tx.send(Err(propose_error(e)));
                    }
                }
            }
        }
    }

    /// The leader's answer to forward `id` (or the core settling it).
    pub(super) fn on_forwarded(&mut self, id: u64, result: Result<(LogIndex, Term), ProposeError>) {
        let Some(responders) = self.requests.forwards.remove(&id) else { return };
        match result {
            Ok((first, term)) => {
                for (i, (tx, key, span)) in responders.into_iter().enumerate() {
                    let index = first + i as u64;
                    appended(&span, index, term);
                    self.insert_pending(Pending { index, term, tx, key });
                }
            }
            Err(e) => {
                for (tx, _, _) in responders {
                    tx.fail(propose_error(e));
                }
            }
        }
    }

    /// Read `id` may be served once `index` is applied.
    pub(super) fn on_read_ready(&mut self, id: u64, index: LogIndex) {
        let r = &mut self.requests;
        let Some((asked, waiters)) = r.reads.remove(&id) else { return };
        self.shared.latencies.read_index.record_duration(self.rt.now().saturating_since(asked));
        if index <= r.applied {
            for tx in waiters {
                let _ = tx.send(Ok(index));
            }
        } else {
            r.read_waiters.entry(index).or_default().extend(waiters);
        }
    }

    /// Read `id` cannot be served by the node it asked: its callers retry
    /// ([`Raft::read`](crate::Raft::read) retries `NotLeader` at the new leader).
    pub(super) fn on_read_failed(&mut self, id: u64) {
        let Some((_, waiters)) = self.requests.reads.remove(&id) else { return };
        let leader = self.core.leader();
        for tx in waiters {
            let _ = tx.send(Err(ClientError::NotLeader { leader }));
        }
    }

    /// The state machine applied up to `index`: serve the reads waiting for it.
    pub(super) fn on_applied(&mut self, index: LogIndex) {
        let r = &mut self.requests;
        r.applied = r.applied.max(index);
        while let Some(entry) = r.read_waiters.first_entry() {
            if *entry.key() > r.applied {
                break;
            }
            let read_index = *entry.key();
            for tx in entry.remove() {
                let _ = tx.send(Ok(read_index));
            }
        }
    }

    /// Forgets forwards and read-index requests whose callers have all given up (the
    /// answer was lost with a message, or the leader died), so they do not accumulate,
    /// and tells the core, so it neither counts nor resends them.
    pub(super) fn forget_abandoned_requests(&mut self) {
        let r = &mut self.requests;
        let core = &mut self.core;
        r.forwards.retain(|&id, f| {
            let live = f.iter().any(|(tx, _, _)| !tx.is_canceled());
            if !live {
                core.abandon_request(id);
            }
            live
        });
        r.reads.retain(|&id, (_, w)| {
            let live = w.iter().any(|tx| !tx.is_canceled());
            if !live {
                core.abandon_request(id);
            }
            live
        });
    }

    /// Hands committed entries to the apply task with the proposers waiting for them.
    pub(super) fn apply(&mut self, entries: Vec<Entry>) {
        let (Some(first), Some(last)) = (entries.first().map(|e| e.index), entries.last().map(|e| e.index)) else {
            return;
        };
        let r = &mut self.requests;
        r.handed_to_apply = last;
        let mut responders = Vec::new();
        while r.pending.front().is_some_and(|p| p.index <= last) {
            let Some(p) = r.pending.pop_front() else { break };
            let same = p.index >= first && entries.get((p.index - first) as usize).is_some_and(|e| e.term == p.term);
            match p.tx {
                Waiter::Command(tx) if same => responders.push((p.index, tx)),
                // Committed: the session exists from this entry on.
                Waiter::Open(tx) if same => drop(tx.send(Ok(p.index))),
                tx => tx.fail(ClientError::Dropped),
            }
        }
        let batch = ApplyBatch { entries, responders, claims: Vec::new() };
        let _ = self.apply_tx.unbounded_send(ApplyOp::Batch(batch));
    }

    /// A snapshot covering the log up to `last` replaces the state machine's state: the
    /// proposals waiting there will not be applied one by one, and whether the snapshot
    /// includes them cannot be told here.
    pub(super) fn settle_requests_covered_by(&mut self, last: LogIndex) {
        let r = &mut self.requests;
        r.handed_to_apply = r.handed_to_apply.max(last);
        while r.pending.front().is_some_and(|p| p.index <= last) {
            if let Some(p) = r.pending.pop_front() {
                p.tx.fail(ClientError::Indeterminate);
            }
        }
    }

    /// Answers every waiting caller with `err` (the node is stopping).
    pub(super) fn fail_all_requests(&mut self, err: &ClientError) {
        let r = &mut self.requests;
        for p in r.pending.drain(..) {
            p.tx.fail(err.clone());
        }
        let forwarded = std::mem::take(&mut r.forwards).into_values().flatten().map(|(tx, _, _)| tx);
        for tx in r.forward_batch.drain(..).map(|(_, tx, _)| tx).chain(forwarded) {
            tx.fail(err.clone());
        }
        let reads = std::mem::take(&mut r.reads).into_values().flat_map(|(_, w)| w);
        let waiting = std::mem::take(&mut r.read_waiters).into_values().flatten();
        for tx in r.read_batch.drain(..).chain(reads).chain(waiting) {
            let _ = tx.send(Err(err.clone()));
        }
    }
}

/// Records on a request's span the index its entry was appended at.
fn appended(span: &tracing::Span, index: LogIndex, term: Term) {
    span.record("index", index);
    tracing::debug!(parent: span, index, term, "appended to the leader's log");
}

/// The caller's error for a refusal by the core.
pub(super) fn propose_error(e: ProposeError) -> ClientError {
    match e {
        ProposeError::NotLeader(leader) => ClientError::NotLeader { leader },
        ProposeError::Overloaded => ClientError::Overloaded,
        ProposeError::OutcomeUnknown => ClientError::Indeterminate,
    }
}

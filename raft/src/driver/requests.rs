//! The callers waiting on the node: proposals waiting for their entry to be applied,
//! proposals and reads batched in this round, forwards and read-index requests waiting
//! for the leader's answer, and reads waiting for the state machine to reach their
//! index. Each caller is answered exactly once: by its result, or by an error when the
//! node learns the answer will not come.
//!
//! **Architecture invariant:** a proposal is answered with its state machine response
//! only if the entry applied at its index has the term it was appended in; any other
//! entry there answers it [`ClientError::Dropped`].

use std::time::Duration;

use bytes::Bytes;

use super::apply::ApplyBatch;
use super::{Driver, ReadResponder, Responder};
use crate::core::{ProposeError, Role};
use crate::error::ClientError;
use crate::network::Network;
use crate::runtime::Runtime;
use crate::state_machine::StateMachine;
use crate::types::{Entry, Instant, LogIndex, NodeId, Term};

/// A batch of proposals forwarded to the leader, waiting for its answer.
pub(super) struct Forwarded<SM: StateMachine> {
    /// The leader it went to.
    to: Option<NodeId>,
    /// When it was first sent.
    sent: Instant,
    /// When it was last sent (first or again).
    resent: Instant,
    /// The commands, to send again if no answer comes.
    commands: Vec<Bytes>,
    /// Its proposers, in the batch's order.
    responders: Vec<Responder<SM>>,
}

/// Reads that share one read index asked of the leader, waiting for its answer.
pub(super) struct ReadGroup {
    /// The leader asked (this node, on the leader).
    to: Option<NodeId>,
    /// When it was last asked.
    resent: Instant,
    /// The readers.
    waiters: Vec<ReadResponder>,
}

impl<SM: StateMachine, R: Runtime, N: Network> Driver<SM, R, N> {
    pub(super) fn propose(&mut self, data: Bytes, tx: Responder<SM>) {
        match self.core.propose(std::iter::once(data)) {
            Ok((index, term)) => self.insert_pending(index, term, tx),
            Err(e) => {
                let _ = tx.send(Err(propose_error(e)));
            }
        }
    }

    /// Records a proposal waiting for (index, term) to be applied. An entry truncated
    /// from this node's log may still be committed by a later leader that holds it, so
    /// a proposal is settled only when its index is applied: by its own entry (the
    /// response) or by another one ([`ClientError::Dropped`]).
    fn insert_pending(&mut self, index: LogIndex, term: Term, tx: Responder<SM>) {
        if index <= self.handed_to_apply {
            // Handed to the apply task before the leader's answer reached us (it came late,
            // or was lost and asked for again): the apply task answers from the responses
            // it kept, if it still has this one.
            let claims = vec![(index, term, tx)];
            let batch = ApplyBatch { entries: Vec::new(), responders: Vec::new(), keep_unclaimed: false, claims };
            let _ = self.apply_tx.unbounded_send(batch);
            return;
        }
        if self.pending.back().is_none_or(|p| p.0 <= index) {
            self.pending.push_back((index, term, tx));
        } else {
            let at = self.pending.partition_point(|p| p.0 <= index);
            self.pending.insert(at, (index, term, tx));
        }
    }

    /// Whether proposals made here may leave now: always on a leader; on a follower while
    /// fewer than `max_forwards_in_flight` forwarded batches, sent within the last two
    /// heartbeat intervals, wait for the leader's answer.
    pub(super) fn may_forward(&self, now: Instant) -> bool {
        if self.core.role() == Role::Leader {
            return true;
        }
        let lost_after = self.answer_lost_after();
        let waiting = self.forwards.values().filter(|f| now.saturating_since(f.sent) < lost_after).count();
        waiting < self.core.cfg.max_forwards_in_flight
    }

    /// How long a request to the leader waits for its answer before the answer counts as
    /// lost: two heartbeat intervals.
    fn answer_lost_after(&self) -> Duration {
        self.core.cfg.heartbeat_interval * 2
    }

    /// Makes sure a tick comes when a request sent at `sent` is due to be sent again.
    fn schedule_resend(&mut self, sent: Instant) {
        let due = sent.add(self.answer_lost_after());
        if self.retry_deadline.is_none_or(|d| due < d) {
            self.retry_deadline = Some(due);
            self.arm_timer();
        }
    }

    /// Sends again the forwards and read-index requests to the current leader that have
    /// had no answer for [`Self::answer_lost_after`] (it was lost with a message or a
    /// connection): the leader answers a repeated forward as it did the first time, or
    /// with "unknown" if it no longer knows it, and serves a repeated read again.
    /// Requests to a former leader are settled by
    /// [`Self::settle_requests_to_former_leaders`] instead.
    pub(super) fn resend_unanswered_requests(&mut self, now: Instant) {
        if self.retry_deadline.is_none_or(|d| now < d) {
            return;
        }
        self.retry_deadline = None;
        let lost_after = self.answer_lost_after();
        let leader = match self.core.leader() {
            Some(l) if self.core.role() != Role::Leader => l,
            _ => {
                self.arm_timer();
                return;
            }
        };
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        let core = &mut self.core;
        let node = core.id();
        for (&id, f) in self.forwards.iter_mut().filter(|(_, f)| f.to == Some(leader)) {
            let send = || {
                tracing::debug!(node, id, "no answer to a forward: sending it again");
                core.forward_again(id, f.commands.clone()).is_ok()
            };
            if let Some(t) = resend_if_due(&mut f.resent, now, lost_after, send) {
                earliest(t);
            }
        }
        for (&id, r) in self.reads.iter_mut().filter(|(_, r)| r.to == Some(leader)) {
            let send = || {
                tracing::debug!(node, id, "no answer to a read-index request: asking again");
                core.read_index_again(id).is_ok()
            };
            if let Some(t) = resend_if_due(&mut r.resent, now, lost_after, send) {
                earliest(t);
            }
        }
        if let Some(t) = next {
            self.schedule_resend(t);
        } else {
            self.arm_timer();
        }
    }

    /// Sends this batch's follower proposals to the leader as one message (unless
    /// [`Self::may_forward`] holds them back for a later batch), and asks for one read
    /// index for this batch's reads.
    pub(super) fn flush_client_batches(&mut self, now: Instant) {
        if !self.forward_batch.is_empty() && self.may_forward(now) {
            let batch = std::mem::take(&mut self.forward_batch);
            if self.core.role() == Role::Leader {
                for (data, tx) in batch {
                    self.propose(data, tx);
                }
            } else {
                let (commands, responders): (Vec<Bytes>, Vec<Responder<SM>>) = batch.into_iter().unzip();
                match self.core.forward(commands.clone()) {
                    Ok(id) => {
                        let to = self.core.leader();
                        self.forwards.insert(id, Forwarded { to, sent: now, resent: now, commands, responders });
                        self.schedule_resend(now);
                    }
                    Err(e) => {
                        for tx in responders {
                            let _ = tx.send(Err(propose_error(e)));
                        }
                    }
                }
            }
        }
        if !self.read_batch.is_empty() {
            let batch = std::mem::take(&mut self.read_batch);
            match self.core.read_index() {
                Ok(id) => {
                    self.reads.insert(id, ReadGroup { to: self.core.leader(), resent: now, waiters: batch });
                    if self.core.role() != Role::Leader {
                        self.schedule_resend(now);
                    }
                }
                Err(e) => {
                    for tx in batch {
                        let _ = tx.send(Err(propose_error(e)));
                    }
                }
            }
        }
    }

    pub(super) fn on_forwarded(&mut self, id: u64, result: Result<(LogIndex, Term), ProposeError>) {
        let Some(Forwarded { responders, .. }) = self.forwards.remove(&id) else { return };
        match result {
            Ok((first, term)) => {
                for (i, tx) in responders.into_iter().enumerate() {
                    self.insert_pending(first + i as u64, term, tx);
                }
            }
            Err(e) => {
                for tx in responders {
                    let _ = tx.send(Err(propose_error(e)));
                }
            }
        }
    }

    pub(super) fn on_read_ready(&mut self, id: u64, index: LogIndex) {
        let Some(ReadGroup { waiters, .. }) = self.reads.remove(&id) else { return };
        if index <= self.applied {
            for tx in waiters {
                let _ = tx.send(Ok(index));
            }
        } else {
            self.read_waiters.entry(index).or_default().extend(waiters);
        }
    }

    pub(super) fn on_read_failed(&mut self, id: u64) {
        let Some(ReadGroup { waiters, .. }) = self.reads.remove(&id) else { return };
        let leader = self.core.leader();
        for tx in waiters {
            let _ = tx.send(Err(ClientError::NotLeader { leader }));
        }
    }

    pub(super) fn on_applied(&mut self, index: LogIndex) {
        self.applied = self.applied.max(index);
        while let Some(entry) = self.read_waiters.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            let read_index = *entry.key();
            for tx in entry.remove() {
                let _ = tx.send(Ok(read_index));
            }
        }
    }

    /// Forgets forwarded batches and read groups whose callers have all given up (the
    /// answer was lost with a message, or the leader died), so they do not accumulate.
    pub(super) fn forget_abandoned_requests(&mut self) {
        self.forwards.retain(|_, f| f.responders.iter().any(|tx| !tx.is_canceled()));
        self.reads.retain(|_, r| r.waiters.iter().any(|tx| !tx.is_canceled()));
    }

    /// Answers the forwarded batches and reads that went to a node this one no longer
    /// takes for the leader: that leader's answer may never come (it crashed, or lost
    /// its leadership), and waiting for the request timeout would stall every client of
    /// this node for that long after a failover. A forwarded batch may have been appended
    /// by the former leader and still be committed, so it ends as
    /// [`ClientError::Indeterminate`]; a read has no effect and ends as
    /// [`ClientError::NotLeader`], which [`Raft::read`] retries at the new leader.
    pub(super) fn settle_requests_to_former_leaders(&mut self) {
        let leader = self.core.leader();
        if leader == self.requests_leader {
            return;
        }
        self.requests_leader = leader;
        let former = |to: &Option<NodeId>| *to != leader;
        if self.forwards.values().any(|f| former(&f.to)) {
            let ids: Vec<u64> = self.forwards.iter().filter(|(_, f)| former(&f.to)).map(|(id, _)| *id).collect();
            for id in ids {
                for tx in self.forwards.remove(&id).map(|f| f.responders).unwrap_or_default() {
                    let _ = tx.send(Err(ClientError::Indeterminate));
                }
            }
        }
        if self.reads.values().any(|r| former(&r.to)) {
            let ids: Vec<u64> = self.reads.iter().filter(|(_, r)| former(&r.to)).map(|(id, _)| *id).collect();
            for id in ids {
                for tx in self.reads.remove(&id).map(|r| r.waiters).unwrap_or_default() {
                    let _ = tx.send(Err(ClientError::NotLeader { leader }));
                }
            }
        }
    }
    pub(super) fn apply(&mut self, entries: Vec<Entry>) {
        let (Some(first), Some(last)) = (entries.first().map(|e| e.index), entries.last().map(|e| e.index)) else {
            return;
        };
        self.handed_to_apply = last;
        let mut responders = Vec::new();
        while self.pending.front().is_some_and(|p| p.0 <= last) {
            let Some((index, term, tx)) = self.pending.pop_front() else { break };
            let same = index >= first && entries.get((index - first) as usize).is_some_and(|e| e.term == term);
            if same {
                responders.push((index, tx));
            } else {
                let _ = tx.send(Err(ClientError::Dropped));
            }
        }
        // Only a follower with forwards unanswered can get a late answer for these entries.
        let keep_unclaimed = !self.forwards.is_empty();
        let batch = ApplyBatch { entries, responders, keep_unclaimed, claims: Vec::new() };
        let _ = self.apply_tx.unbounded_send(batch);
    }

    /// Answers every waiting caller with `err` (the node is stopping).
    pub(super) fn fail_all_requests(&mut self, err: &ClientError) {
        for (_, _, tx) in self.pending.drain(..) {
            let _ = tx.send(Err(err.clone()));
        }
        let forwarded = self.forwards.drain().flat_map(|(_, f)| f.responders);
        for tx in self.forward_batch.drain(..).map(|(_, tx)| tx).chain(forwarded) {
            let _ = tx.send(Err(err.clone()));
        }
        let reads = self.reads.drain().flat_map(|(_, r)| r.waiters);
        let waiting = std::mem::take(&mut self.read_waiters).into_values().flatten();
        for tx in self.read_batch.drain(..).chain(reads).chain(waiting) {
            let _ = tx.send(Err(err.clone()));
        }
    }
}

/// Sends a request to the leader again with `send` if it has had no answer for
/// `lost_after` since it was last sent at `resent` (then `resent` becomes `now`). Returns
/// when it was last sent, or `None` if the core refused to send it (no leader to send it
/// to: it is settled once this node follows another leader).
fn resend_if_due(
    resent: &mut Instant,
    now: Instant,
    lost_after: Duration,
    send: impl FnOnce() -> bool,
) -> Option<Instant> {
    if now.saturating_since(*resent) >= lost_after {
        if !send() {
            return None;
        }
        *resent = now;
    }
    Some(*resent)
}

pub(super) fn propose_error(e: ProposeError) -> ClientError {
    match e {
        ProposeError::NotLeader(leader) => ClientError::NotLeader { leader },
        ProposeError::Overloaded => ClientError::Overloaded,
        ProposeError::OutcomeUnknown => ClientError::Indeterminate,
    }
}

//! Forwarding client requests from a follower to the leader, and sending them again
//! when their answer is lost. Not part of the protocol proper (the thesis, §6.2, lets a
//! follower redirect or forward): these messages change no term and no role, and
//! their `term` is ignored on receipt.
//!
//! **Forwarding.** A follower sends commands to the leader it knows in one
//! [`MessageBody::Forward`]; the leader appends them and answers with the index and
//! term they got. The follower's driver then answers its callers when its own state
//! machine applies those positions, and only if the entries there have that term.
//!
//! **The window.** A follower keeps at most `Config::max_forwards_in_flight` forwards
//! unanswered ([`RaftCore::may_forward`]); proposals made meanwhile wait in the driver
//! and leave together, so under load a follower sends fewer, larger forwards. A
//! forward unanswered for two heartbeat intervals no longer counts: its answer may have
//! been lost.
//!
//! **Lost answers.** A forward or read-index request unanswered for two heartbeat
//! intervals is sent again with the same id, on the next tick at or after that time
//! (the core's timer covers it). A read is simply served again. A forward carries only
//! session operations ([`SessionOp`]): the leader appends every copy it receives (a
//! retry, a copy the network duplicated, one that reaches a restarted leader), and the
//! session layer applies each (client, seq) once and answers the later copies with the
//! first one's response ([`crate::session`]). No leader keeps a memory of forwards.
//!
//! **A new leader.** Requests waiting for a node this one no longer takes for the leader
//! are settled at once, since that answer may never come: a forward with
//! [`ProposeError::OutcomeUnknown`] (the former leader may have appended it, and it may
//! still commit), a read with [`Action::ReadFailed`] (a read has no effect; the caller
//! retries at the new leader).

use std::collections::BTreeMap;
use std::time::Duration;

use super::durability::Needs;
use super::{Action, ProposeError, RaftCore, Role};
use crate::message::{ForwardResult, Message, MessageBody};
use crate::session::SessionOp;
use crate::types::{Instant, NodeId, Term};

/// Client-request ids: unique per node, and unlikely to repeat across restarts (they
/// start at a random point), so that an answer to an earlier life's request is not taken
/// for one to this life's.
#[derive(Debug)]
pub(crate) struct RequestIds {
    next: u64,
}

impl RequestIds {
    pub(crate) fn new(seed: u64) -> Self {
        let start = fastrand::Rng::with_seed(seed ^ 0x7265_7175_6573_7473).u64(1..u64::MAX / 2);
        RequestIds { next: start }
    }

    pub(crate) fn allocate(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }
}

/// A forward waiting for the leader's answer.
#[derive(Debug)]
struct Forward {
    /// The leader it went to.
    to: NodeId,
    /// When it was first sent.
    sent: Instant,
    /// When it was last sent (first or again).
    resent: Instant,
    /// The session operations, to send again if no answer comes.
    requests: Vec<SessionOp>,
}

/// A read-index request waiting for the leader's answer.
#[derive(Debug)]
struct ReadRequest {
    /// The leader asked.
    to: NodeId,
    /// When it was last asked.
    resent: Instant,
}

/// A follower's requests waiting for the leader's answer.
#[derive(Debug, Default)]
pub(crate) struct Forwarding {
    forwards: BTreeMap<u64, Forward>,
    reads: BTreeMap<u64, ReadRequest>,
    /// The leader known when the waiting requests were last checked.
    leader_seen: Option<NodeId>,
    /// When the oldest unanswered request is due to be sent again (it may have been
    /// answered since: then the tick finds nothing to do).
    pub(crate) resend_at: Option<Instant>,
}

/// How long a request to the leader waits for its answer before the answer counts as
/// lost: two heartbeat intervals.
fn answer_lost_after(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval * 2
}

impl Forwarding {
    /// Makes sure a tick comes when a request last sent at `sent` is due again.
    fn schedule_resend(&mut self, sent: Instant, heartbeat_interval: Duration) {
        let due = sent.add(answer_lost_after(heartbeat_interval));
        if self.resend_at.is_none_or(|d| due < d) {
            self.resend_at = Some(due);
        }
    }

    /// Records read-index request `id`, sent to `to` at `now`, to be sent again if its
    /// answer does not come.
    pub(crate) fn track_read(&mut self, id: u64, to: NodeId, now: Instant, heartbeat_interval: Duration) {
        self.reads.insert(id, ReadRequest { to, resent: now });
        self.schedule_resend(now, heartbeat_interval);
    }

    /// Request `id` was answered (or its callers gave up): it is not sent again.
    pub(crate) fn answered(&mut self, id: u64) {
        self.forwards.remove(&id);
        self.reads.remove(&id);
    }
}

impl RaftCore {
    /// Forwards client session operations to the known leader (a follower's side of
    /// forwarding) and returns the request's id. The answer arrives as
    /// [`Action::Forwarded`] with that id. Refused at once when this node is the leader
    /// (propose instead) or knows no leader. Sent again if no answer comes within two
    /// heartbeat intervals; the leader may then append the operations more than once,
    /// and the session layer applies each once. Check [`RaftCore::may_forward`] first:
    /// the core does not enforce the window itself, so that a caller may flush a batch
    /// it holds.
    pub fn forward(&mut self, now: Instant, requests: Vec<SessionOp>) -> Result<u64, ProposeError> {
        let leader = self.forward_target().inspect_err(|_| self.counters.proposals_refused_not_leader += 1)?;
        let id = self.request_ids.allocate();
        self.counters.proposals_forwarded += requests.len() as u64;
        let kept = requests.clone();
        self.send_to(Needs::Nothing, leader, MessageBody::Forward { id, requests });
        self.forwarding.forwards.insert(id, Forward { to: leader, sent: now, resent: now, requests: kept });
        self.forwarding.schedule_resend(now, self.cfg.heartbeat_interval);
        Ok(id)
    }

    /// Sends forward `id` (made by [`RaftCore::forward`], with the same `requests`) to
    /// the known leader again, when its answer has not come. The leader appends them
    /// again; the session layer applies each operation once. Refused like
    /// [`RaftCore::forward`].
    pub(crate) fn forward_again(&mut self, id: u64, requests: Vec<SessionOp>) -> Result<(), ProposeError> {
        let leader = self.forward_target()?;
        self.send_to(Needs::Nothing, leader, MessageBody::Forward { id, requests });
        Ok(())
    }

    /// The leader to send client requests to: refused on the leader itself or without a
    /// known leader.
    pub(crate) fn forward_target(&self) -> Result<NodeId, ProposeError> {
        match self.leader {
            Some(leader) if leader != self.id && self.role != Role::Leader => Ok(leader),
            leader => Err(ProposeError::NotLeader(leader)),
        }
    }

    /// Whether proposals made here may be forwarded now: always on a leader (it
    /// proposes them itself); on a follower while fewer than
    /// `Config::max_forwards_in_flight` forwards, sent within the last two heartbeat
    /// intervals, wait for the leader's answer.
    pub fn may_forward(&self, now: Instant) -> bool {
        if self.role == Role::Leader {
            return true;
        }
        let lost_after = answer_lost_after(self.cfg.heartbeat_interval);
        let waiting = self.forwarding.forwards.values().filter(|f| now.saturating_since(f.sent) < lost_after).count();
        waiting < self.cfg.max_forwards_in_flight
    }

    /// The callers of forward or read-index request `id` gave up: forget it, so it is
    /// neither counted in the window nor sent again. Its answer, should it come, is still
    /// reported.
    pub fn abandon_request(&mut self, id: u64) {
        self.forwarding.answered(id);
    }

    /// How many forwards and read-index requests wait for the leader's answer.
    pub fn requests_in_flight(&self) -> usize {
        self.forwarding.forwards.len() + self.forwarding.reads.len()
    }

    /// On a tick: sends again the forwards and read-index requests to the current leader
    /// that have had no answer for two heartbeat intervals (it was lost with a message
    /// or a connection). Requests to a former leader are settled by
    /// [`RaftCore::settle_requests_to_former_leaders`] instead.
    pub(crate) fn resend_unanswered_requests(&mut self, now: Instant) {
        if self.forwarding.resend_at.is_none_or(|d| now < d) {
            return;
        }
        self.forwarding.resend_at = None;
        let leader = match self.leader {
            Some(l) if self.role != Role::Leader => l,
            _ => return,
        };
        let lost_after = answer_lost_after(self.cfg.heartbeat_interval);
        let due = |resent: Instant| now.saturating_since(resent) >= lost_after;
        let forwards: Vec<(u64, Vec<SessionOp>)> = self
            .forwarding
            .forwards
            .iter()
            .filter(|(_, f)| f.to == leader && due(f.resent))
            .map(|(&id, f)| (id, f.requests.clone()))
            .collect();
        for (id, requests) in forwards {
            tracing::debug!(node = self.id, id, "no answer to a forward: sending it again");
            if self.forward_again(id, requests).is_ok() {
                if let Some(f) = self.forwarding.forwards.get_mut(&id) {
                    f.resent = now;
                }
            }
        }
        let reads: Vec<u64> =
            self.forwarding.reads.iter().filter(|(_, r)| r.to == leader && due(r.resent)).map(|(&id, _)| id).collect();
        for id in reads {
            tracing::debug!(node = self.id, id, "no answer to a read-index request: asking again");
            if self.read_index_again(id).is_ok() {
                if let Some(r) = self.forwarding.reads.get_mut(&id) {
                    r.resent = now;
                }
            }
        }
        let f = &mut self.forwarding;
        let to_leader = f.forwards.values().filter(|x| x.to == leader).map(|x| x.resent);
        let earliest = to_leader.chain(f.reads.values().filter(|r| r.to == leader).map(|r| r.resent)).min();
        if let Some(t) = earliest {
            f.schedule_resend(t, self.cfg.heartbeat_interval);
        }
    }

    /// Settles the forwards and read-index requests that went to a node this one no
    /// longer takes for the leader (see the module docs): that leader's answer may never
    /// come (it crashed, or lost its leadership), and waiting for the request timeout
    /// would stall every client of this node for that long after a failover.
    pub(crate) fn settle_requests_to_former_leaders(&mut self) {
        let leader = self.leader;
        if leader == self.forwarding.leader_seen {
            return;
        }
        self.forwarding.leader_seen = leader;
        let actions = &mut self.actions;
        self.forwarding.forwards.retain(|&id, f| {
            let keep = Some(f.to) == leader;
            if !keep {
                actions.push(Action::Forwarded { id, result: Err(ProposeError::OutcomeUnknown) });
            }
            keep
        });
        self.forwarding.reads.retain(|&id, r| {
            let keep = Some(r.to) == leader;
            if !keep {
                actions.push(Action::ReadFailed { id });
            }
            keep
        });
    }

    /// The leader side of a forward from `from`: every copy is appended (see the module
    /// docs).
    pub(crate) fn on_forward(&mut self, m: &mut Message) {
        let MessageBody::Forward { id, requests } = &mut m.body else { return };
        let (id, requests) = (*id, std::mem::take(requests));
        let result = if requests.is_empty() {
            // Nothing to append; answer as if appended after the last entry.
            match self.role {
                Role::Leader => ForwardResult::Accepted { first_index: self.log.last_index() + 1 },
                _ => ForwardResult::NotLeader { leader: self.leader },
            }
        } else {
            match self.propose(requests) {
                Ok((first_index, _)) => ForwardResult::Accepted { first_index },
                Err(ProposeError::NotLeader(leader)) => ForwardResult::NotLeader { leader },
                Err(ProposeError::Overloaded) => ForwardResult::Overloaded,
                Err(ProposeError::OutcomeUnknown) => ForwardResult::Unknown,
            }
        };
        self.send_to(Needs::Nothing, m.from, MessageBody::ForwardResponse { id, result });
    }

    /// A follower's answer from the leader to its forward.
    pub(crate) fn on_forward_response(&mut self, id: u64, term: Term, result: ForwardResult) {
        self.forwarding.answered(id);
        let result = match result {
            ForwardResult::Accepted { first_index } => Ok((first_index, term)),
            ForwardResult::NotLeader { leader } => Err(ProposeError::NotLeader(leader)),
            ForwardResult::Overloaded => Err(ProposeError::Overloaded),
            ForwardResult::Unknown => Err(ProposeError::OutcomeUnknown),
        };
        self.actions.push(Action::Forwarded { id, result });
    }
}

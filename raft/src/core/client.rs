//! Client requests that reach the core: linearizable reads with ReadIndex (thesis §6.4)
//! and proposals forwarded from followers to the leader.
//!
//! **ReadIndex.** A leader serves a read once (1) it has committed an entry of its own
//! term, so its commit index is at least that of any earlier leader; (2) it has recorded
//! its commit index as the read index; (3) a quorum has answered a heartbeat sent after
//! the read arrived, so no newer leader existed when the index was recorded. The caller
//! then waits until its state machine has applied the read index. Reads that arrive
//! together share one heartbeat round: each round carries a fresh context number that
//! followers echo, and a round is confirmed once a quorum has echoed it (or a later one).
//! A follower asks the leader for a read index with [`MessageBody::ReadIndex`] and waits
//! for its own state machine to reach it (thesis §6.4.1).
//!
//! **Forwarding.** A follower sends commands to the leader it knows in one
//! [`MessageBody::Forward`]; the leader appends them and answers with the index and term
//! they got. The follower's driver then answers its callers when its own state machine
//! applies those positions, and only if the entries there have that term.
//!
//! **Lost answers.** A follower whose forward or read-index request got no answer sends
//! it again with the same id ([`RaftCore::forward_again`], [`RaftCore::read_index_again`]).
//! A read is simply served again. The leader remembers its answers to recent forwards
//! per follower and repeats the first answer to a repeated forward, so commands are
//! appended at most once; a retried forward it has no record of (it restarted since, or
//! it has forgotten the id) is answered [`ForwardResult::Unknown`], never appended.
//!
//! These messages are not part of the protocol proper: they change no term and no role,
//! and their `term` is ignored on receipt.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::durability::Needs;
use super::{Action, ProposeError, RaftCore, Role};
use crate::message::{ForwardResult, Message, MessageBody};
use crate::types::{LogIndex, NodeId, Term};

/// A read waiting for its index: from this node's own client (`from == self`) or from a
/// follower.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: u64,
    from: NodeId,
}

/// A heartbeat round confirming leadership for a group of reads.
#[derive(Debug)]
struct ReadRound {
    ctx: u64,
    index: LogIndex,
    reads: Vec<PendingRead>,
}

/// The leader's read-index bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct ReadState {
    /// Reads that have no round yet.
    queued: Vec<PendingRead>,
    /// Rounds sent and not yet confirmed, oldest first (contexts increase).
    rounds: VecDeque<ReadRound>,
    /// The context of the latest round; heartbeats carry it.
    pub(crate) last_ctx: u64,
}

/// How many forwarded requests a leader remembers per follower, with their answers.
const FORWARD_MEMORY: usize = 4096;

/// Client-request ids: unique per node, and unlikely to repeat across restarts (they
/// start at a random point), so that a leader can recognise a repeated message.
#[derive(Debug)]
pub(crate) struct RequestIds {
    next: u64,
    /// Per follower, the forwards answered recently.
    answered: HashMap<NodeId, Answered>,
}

/// One follower's recently answered forwards: their ids, oldest first, and each id's
/// answer with the term it was given in.
#[derive(Debug, Default)]
struct Answered {
    order: VecDeque<u64>,
    answers: HashMap<u64, (Term, ForwardResult)>,
}

impl RequestIds {
    pub(crate) fn new(seed: u64) -> Self {
        let start = fastrand::Rng::with_seed(seed ^ 0x7265_7175_6573_7473).u64(1..u64::MAX / 2);
        RequestIds { next: start, answered: HashMap::new() }
    }

    fn allocate(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }

    /// The answer given to forward `id` from `from`, if it is remembered.
    fn answer_of(&self, from: NodeId, id: u64) -> Option<(Term, ForwardResult)> {
        self.answered.get(&from).and_then(|a| a.answers.get(&id).copied())
    }

    /// Remembers the answer to forward `id` from `from`, forgetting the oldest beyond
    /// [`FORWARD_MEMORY`].
    fn remember(&mut self, from: NodeId, id: u64, term: Term, result: ForwardResult) {
        let a = self.answered.entry(from).or_default();
        if a.answers.insert(id, (term, result)).is_none() {
            a.order.push_back(id);
        }
        if a.order.len() > FORWARD_MEMORY {
            if let Some(old) = a.order.pop_front() {
                a.answers.remove(&old);
            }
        }
    }
}

impl RaftCore {
    /// Asks for a read index for a linearizable read (thesis §6.4) and returns the
    /// request's id. On a leader the read joins the next confirmation round; on a
    /// follower that knows a leader, the request goes to the leader. The answer arrives
    /// later as [`Action::ReadReady`] or [`Action::ReadFailed`] with that id. With no
    /// known leader the request is refused at once.
    pub fn read_index(&mut self) -> Result<u64, ProposeError> {
        if self.role == Role::Leader {
            let id = self.request_ids.allocate();
            self.reads.queued.push(PendingRead { id, from: self.id });
            return Ok(id);
        }
        match self.leader {
            Some(leader) => {
                let id = self.request_ids.allocate();
                self.send_to(Needs::Nothing, leader, MessageBody::ReadIndex { id });
                Ok(id)
            }
            None => Err(ProposeError::NotLeader(None)),
        }
    }

    /// Forwards client commands to the known leader (a follower's side of forwarding)
    /// and returns the request's id. The answer arrives as [`Action::Forwarded`] with
    /// that id. Refused at once when this node is the leader (propose instead) or knows
    /// no leader. The leader answers a repeated copy of the message with its first
    /// answer, so the commands are appended at most once.
    pub fn forward(&mut self, commands: Vec<Bytes>) -> Result<u64, ProposeError> {
        let leader = self.forward_target()?;
        let id = self.request_ids.allocate();
        self.send_to(Needs::Nothing, leader, MessageBody::Forward { id, commands, retry: false });
        Ok(id)
    }

    /// Sends forward `id` (made by [`RaftCore::forward`], with the same `commands`) to
    /// the known leader again, when its answer has not come. A leader that remembers the
    /// id answers again as it did the first time; one that does not (it restarted, or
    /// has forgotten it) answers [`ProposeError::OutcomeUnknown`] and appends nothing.
    /// Refused like [`RaftCore::forward`].
    pub fn forward_again(&mut self, id: u64, commands: Vec<Bytes>) -> Result<(), ProposeError> {
        let leader = self.forward_target()?;
        self.send_to(Needs::Nothing, leader, MessageBody::Forward { id, commands, retry: true });
        Ok(())
    }

    /// Asks the known leader for read index `id` (made by [`RaftCore::read_index`] on a
    /// follower) again, when its answer has not come. Reads have no effect, so the leader
    /// simply serves the request again; the first answer to arrive counts. Refused with
    /// no known leader, or on the leader itself.
    pub fn read_index_again(&mut self, id: u64) -> Result<(), ProposeError> {
        let leader = self.forward_target()?;
        self.send_to(Needs::Nothing, leader, MessageBody::ReadIndex { id });
        Ok(())
    }

    /// The leader to send client requests to: refused on the leader itself or without a
    /// known leader.
    fn forward_target(&self) -> Result<NodeId, ProposeError> {
        match self.leader {
            Some(leader) if leader != self.id && self.role != Role::Leader => Ok(leader),
            leader => Err(ProposeError::NotLeader(leader)),
        }
    }

    /// Handles the client-request messages; false for protocol messages.
    pub(crate) fn step_client_message(&mut self, m: &mut Message) -> bool {
        match &mut m.body {
            MessageBody::Forward { id, commands, retry } => {
                let (id, commands) = (*id, std::mem::take(commands));
                if let Some((term, result)) = self.request_ids.answer_of(m.from, id) {
                    // A repeated copy (its answer was lost, or the network duplicated it):
                    // the first answer again, in the term it was given in.
                    tracing::debug!(node = self.id, from = m.from, id, "answering a repeated forward again");
                    let msg = self.message_in(term, m.from, MessageBody::ForwardResponse { id, result });
                    self.send_after(Needs::Nothing, msg);
                    return true;
                }
                if *retry {
                    // Maybe appended before this node restarted, or too long ago to be
                    // remembered: appending again could apply the commands twice.
                    tracing::debug!(node = self.id, from = m.from, id, "a retried forward has no record here");
                    self.send_to(Needs::Nothing, m.from, MessageBody::ForwardResponse { id, result: ForwardResult::Unknown });
                    return true;
                }
                let n = commands.len();
                let result = if n == 0 {
                    // Nothing to append; answer as if appended after the last entry.
                    match self.role {
                        Role::Leader => ForwardResult::Accepted { first_index: self.log.last_index() + 1 },
                        _ => ForwardResult::NotLeader { leader: self.leader },
                    }
                } else {
                    match self.propose(commands) {
                        Ok((first_index, _)) => ForwardResult::Accepted { first_index },
                        Err(ProposeError::NotLeader(leader)) => ForwardResult::NotLeader { leader },
                        Err(ProposeError::Overloaded) => ForwardResult::Overloaded,
                        Err(ProposeError::OutcomeUnknown) => ForwardResult::Unknown,
                    }
                };
                self.request_ids.remember(m.from, id, self.hs.term, result);
                self.send_to(Needs::Nothing, m.from, MessageBody::ForwardResponse { id, result });
            }
            MessageBody::ForwardResponse { id, result } => {
                let result = match *result {
                    ForwardResult::Accepted { first_index } => Ok((first_index, m.term)),
                    ForwardResult::NotLeader { leader } => Err(ProposeError::NotLeader(leader)),
                    ForwardResult::Overloaded => Err(ProposeError::Overloaded),
                    ForwardResult::Unknown => Err(ProposeError::OutcomeUnknown),
                };
                self.actions.push(Action::Forwarded { id: *id, result });
            }
            MessageBody::ReadIndex { id } => {
                if self.role == Role::Leader {
                    self.reads.queued.push(PendingRead { id: *id, from: m.from });
                } else {
                    self.send_to(Needs::Nothing, m.from, MessageBody::ReadIndexResponse { id: *id, index: None });
                }
            }
            MessageBody::ReadIndexResponse { id, index } => {
                let action = match *index {
                    Some(index) => Action::ReadReady { id: *id, index },
                    None => Action::ReadFailed { id: *id },
                };
                self.actions.push(action);
            }
            _ => return false,
        }
        true
    }

    /// Whether this leader has committed an entry of its own term (thesis §6.4 step 1).
    fn committed_in_term(&self) -> bool {
        self.role == Role::Leader && self.log.commit >= self.term_start
    }

    /// Starts a confirmation round for the queued reads, if the leader may serve reads.
    /// Runs once per batch of inputs, so concurrent reads share one round.
    pub(crate) fn start_read_round(&mut self) {
        if self.reads.queued.is_empty() || !self.committed_in_term() {
            return;
        }
        self.reads.last_ctx += 1;
        let round = ReadRound {
            ctx: self.reads.last_ctx,
            // A follower may know entries committed that this leader does not yet
            // (`MessageBody::Durable`) and have answered for them: the read covers them.
            index: self.log.commit.max(self.durable_announced),
            reads: std::mem::take(&mut self.reads.queued),
        };
        self.reads.rounds.push_back(round);
        if self.read_confirmed_ctx() >= self.reads.last_ctx {
            // A single-voter cluster confirms alone.
            self.release_confirmed_reads();
        } else {
            self.send_heartbeats(false);
        }
    }

    /// The latest round context a quorum has echoed, counting this leader as current.
    fn read_confirmed_ctx(&self) -> u64 {
        let me = self.id;
        let last = self.reads.last_ctx;
        self.quorum.committed_index(|id| if id == me { Some(last) } else { self.progress.get(&id).map(|p| p.read_ack) })
    }

    /// A follower echoed heartbeat context `ctx` in this term.
    pub(crate) fn on_read_ack(&mut self, from: NodeId, ctx: u64) {
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.read_ack = pr.read_ack.max(ctx);
        }
        if !self.reads.rounds.is_empty() {
            self.release_confirmed_reads();
        }
    }

    fn release_confirmed_reads(&mut self) {
        let confirmed = self.read_confirmed_ctx();
        while self.reads.rounds.front().is_some_and(|r| r.ctx <= confirmed) {
            let Some(round) = self.reads.rounds.pop_front() else { break };
            for read in round.reads {
                if read.from == self.id {
                    self.actions.push(Action::ReadReady { id: read.id, index: round.index });
                } else {
                    self.send_to(Needs::Nothing, read.from, MessageBody::ReadIndexResponse { id: read.id, index: Some(round.index) });
                }
            }
        }
    }

    /// Leadership is lost: every read it held fails (the callers retry elsewhere).
    pub(crate) fn fail_reads(&mut self) {
        let queued = std::mem::take(&mut self.reads.queued);
        let rounds = std::mem::take(&mut self.reads.rounds);
        for read in queued.into_iter().chain(rounds.into_iter().flat_map(|r| r.reads)) {
            if read.from == self.id {
                self.actions.push(Action::ReadFailed { id: read.id });
            } else {
                self.send_to(Needs::Nothing, read.from, MessageBody::ReadIndexResponse { id: read.id, index: None });
            }
        }
    }

    /// Number of reads waiting for a round or its confirmation (for tests and metrics).
    pub fn pending_reads(&self) -> usize {
        self.reads.queued.len() + self.reads.rounds.iter().map(|r| r.reads.len()).sum::<usize>()
    }
}

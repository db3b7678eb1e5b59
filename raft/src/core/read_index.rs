//! Linearizable reads with ReadIndex (thesis §6.4).
//!
//! A leader serves a read once (1) it has committed an entry of its own term, so its
//! commit index is at least that of any earlier leader; (2) it has recorded its commit
//! index as the read index; (3) a quorum has answered a heartbeat sent after the read
//! arrived, so no newer leader existed when the index was recorded. The caller then
//! waits until its state machine has applied the read index. Reads that arrive together
//! share one heartbeat round: each round carries a fresh context number that followers
//! echo, and a round is confirmed once a quorum has echoed it (or a later one). A
//! follower asks the leader for a read index with [`MessageBody::ReadIndex`] and waits
//! for its own state machine to reach it (thesis §6.4.1).
//!
//! **Architecture invariant:** a read index is never below the leader's commit index
//! when the read arrived, nor below what it announced durable (`fast_commit.rs`), and
//! no read is served by the lease or by time alone.

use std::collections::VecDeque;

use super::durability::Needs;
use super::{Action, ProposeError, RaftCore, Role};
use crate::message::MessageBody;
use crate::types::{Instant, LogIndex, NodeId};

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

impl RaftCore {
    /// Asks for a read index for a linearizable read (thesis §6.4) and returns the
    /// request's id. On a leader the read joins the next confirmation round; on a
    /// follower that knows a leader, the request goes to the leader (and is sent again
    /// if its answer does not come, see `forward.rs`). The answer arrives
    /// later as [`Action::ReadReady`] or [`Action::ReadFailed`] with that id. With no
    /// known leader the request is refused at once.
    pub fn read_index(&mut self, now: Instant) -> Result<u64, ProposeError> {
        if self.role == Role::Leader {
            let id = self.request_ids.allocate();
            self.reads.queued.push(PendingRead { id, from: self.id });
            return Ok(id);
        }
        match self.leader {
            Some(leader) => {
                let id = self.request_ids.allocate();
                self.send_to(Needs::Nothing, leader, MessageBody::ReadIndex { id });
                self.forwarding.track_read(id, leader, now, self.cfg.heartbeat_interval);
                Ok(id)
            }
            None => Err(ProposeError::NotLeader(None)),
        }
    }

    /// Asks the known leader for read index `id` (made by [`RaftCore::read_index`] on a
    /// follower) again, when its answer has not come. Reads have no effect, so the leader
    /// simply serves the request again; the first answer to arrive counts. Refused with
    /// no known leader, or on the leader itself.
    pub(crate) fn read_index_again(&mut self, id: u64) -> Result<(), ProposeError> {
        let leader = self.forward_target()?;
        self.send_to(Needs::Nothing, leader, MessageBody::ReadIndex { id });
        Ok(())
    }

    /// Whether this leader has committed an entry of its own term (thesis §6.4 step 1).
    pub(crate) fn committed_in_term(&self) -> bool {
        self.role == Role::Leader && self.log.commit >= self.term_start
    }

    /// Starts a confirmation round for the queued reads, if the leader may serve reads.
    /// Runs once per batch of inputs, so concurrent reads share one round.
    pub(crate) fn start_read_round(&mut self) {
        if self.reads.queued.is_empty() || !self.committed_in_term() {
            return;
        }
        self.counters.read_index_rounds += 1;
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

    pub(crate) fn release_confirmed_reads(&mut self) {
        let confirmed = self.read_confirmed_ctx();
        while self.reads.rounds.front().is_some_and(|r| r.ctx <= confirmed) {
            let Some(round) = self.reads.rounds.pop_front() else { break };
            for read in round.reads {
                if read.from == self.id {
                    self.actions.push(Action::ReadReady { id: read.id, index: round.index });
                } else {
                    self.send_to(
                        Needs::Nothing,
                        read.from,
                        MessageBody::ReadIndexResponse { id: read.id, index: Some(round.index) },
                    );
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

    /// A follower asks this node for a read index.
    pub(crate) fn on_read_index_request(&mut self, from: NodeId, id: u64) {
        if self.role == Role::Leader {
            self.reads.queued.push(PendingRead { id, from });
        } else {
            self.send_to(Needs::Nothing, from, MessageBody::ReadIndexResponse { id, index: None });
        }
    }

    /// The leader's answer to this node's read-index request `id`.
    pub(crate) fn on_read_index_response(&mut self, id: u64, index: Option<LogIndex>) {
        self.forwarding.answered(id);
        let action = match index {
            Some(index) => Action::ReadReady { id, index },
            None => Action::ReadFailed { id },
        };
        self.actions.push(action);
    }
}

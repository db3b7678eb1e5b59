//! Leader election: term observation, pre-vote, votes, the election restriction and
//! the role changes (paper §5.1, §5.2, §5.4.1; thesis §9.6 for pre-vote). The lease that
//! ignores disruptive candidates and check-quorum are in `lease.rs`.

use super::durability::Needs;
use super::timers::Timer;
use super::{RaftCore, Role};
use crate::message::{Message, MessageBody};
use crate::quorum::VoteResult;
use crate::types::{EntryPayload, HardState, Instant, LogIndex, NodeId, Term};

impl RaftCore {
    /// The election timeout fired: start a pre-vote round, or an election directly.
    pub(crate) fn campaign(&mut self, now: Instant) {
        if self.cfg.pre_vote {
            self.become_pre_candidate(now);
        } else {
            self.become_candidate(now, false);
        }
    }

    fn become_pre_candidate(&mut self, now: Instant) {
        tracing::debug!(node = self.id, term = self.hs.term, "starting pre-vote");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.counters.pre_votes_started += 1;
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.election_won() {
            self.become_candidate(now, false);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let term = self.hs.term + 1;
        for to in self.quorum.voters() {
            if to != self.id {
                // Sent with the prospective term; our own term stays as it is.
                let msg = crate::message::Message {
                    from: self.id,
                    to,
                    term,
                    body: MessageBody::PreVote { last_log_index, last_log_term },
                };
                self.send_after(Needs::HardState, msg);
            }
        }
    }

    /// Paper §5.2: a new term, a vote for itself, vote requests to every voter. With
    /// `transfer`, the leader asked for this election (thesis §3.10), and the requests say
    /// so.
    pub(crate) fn become_candidate(&mut self, now: Instant, transfer: bool) {
        self.hs = HardState { term: self.hs.term + 1, voted_for: Some(self.id) };
        self.durability.queue_hard_state();
        tracing::debug!(node = self.id, term = self.hs.term, "starting election");
        self.role = Role::Candidate;
        self.leader = None;
        self.counters.elections_started += 1;
        self.reset_election_deadline(now);
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.election_won() {
            self.become_leader(now);
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for to in self.quorum.voters() {
            if to != self.id {
                // Held until the new term and self-vote are durable.
                self.send_to(
                    Needs::Everything,
                    to,
                    MessageBody::RequestVote { last_log_index, last_log_term, transfer },
                );
            }
        }
    }

    fn election_result(&self) -> VoteResult {
        self.quorum.vote_result(|id| self.votes.get(&id).copied())
    }

    fn election_won(&self) -> bool {
        self.election_result() == VoteResult::Won
    }

    /// Paper §5.2 / §8: the new leader starts every peer in probe state and appends a
    /// blank entry of its term, whose commitment commits everything before it.
    pub(crate) fn become_leader(&mut self, now: Instant) {
        tracing::info!(node = self.id, term = self.hs.term, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.counters.became_leader += 1;
        self.note_leader(self.leader);
        self.votes.clear();
        self.progress.clear();
        self.track_progress();
        self.timers.set(Timer::Heartbeat, now.add(self.cfg.heartbeat_interval));
        self.timers.set(Timer::CheckQuorum, now.add(self.cfg.election_timeout_max));
        self.durable_announced = 0;
        self.term_start = self.append_local(EntryPayload::Blank);
    }

    /// Thesis §9.6: grant a pre-vote when the candidate's log is up to date, its
    /// prospective term is newer than ours, and we are not following a live leader.
    pub(crate) fn on_pre_vote(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let granted =
            term > self.hs.term && !self.in_leader_lease(now) && self.log.is_up_to_date(last_index, last_term);
        let reply_term = if granted { term } else { self.hs.term };
        let msg = crate::message::Message {
            from: self.id,
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        };
        // A pre-vote answer depends on nothing persisted except our term.
        self.send_after(Needs::HardState, msg);
    }

    pub(crate) fn on_pre_vote_response(&mut self, now: Instant, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate || term != self.hs.term + 1 {
            return;
        }
        self.votes.insert(from, granted);
        match self.election_result() {
            VoteResult::Won => self.become_candidate(now, false),
            VoteResult::Lost => self.become_follower(now, self.hs.term, None),
            VoteResult::Pending => {}
        }
    }

    /// Paper §5.2, §5.4.1: one vote per term, only for a candidate whose log is at least
    /// as up to date as ours. The answer leaves only once the vote is durable.
    pub(crate) fn on_request_vote(&mut self, now: Instant, from: NodeId, last_index: LogIndex, last_term: Term) {
        let can_vote = match self.hs.voted_for {
            Some(v) => v == from,
            None => self.leader.is_none(),
        };
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted {
            if self.hs.voted_for != Some(from) {
                self.hs.voted_for = Some(from);
                self.durability.queue_hard_state();
            }
            self.reset_election_deadline(now);
        }
        self.send_to(Needs::Everything, from, MessageBody::RequestVoteResponse { granted });
    }

    pub(crate) fn on_vote_response(&mut self, now: Instant, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        match self.election_result() {
            VoteResult::Won => self.become_leader(now),
            VoteResult::Lost => self.become_follower(now, self.hs.term, None),
            VoteResult::Pending => {}
        }
    }

    /// Paper §5.1: a message with a newer term makes this node a follower of that term
    /// (its sender is the leader if it is a leader's message), except a pre-vote, which
    /// never changes anyone's term (thesis §9.6), and a vote request that the leader
    /// lease ignores (thesis §6.2); a message with an older term is answered so that its
    /// stale sender steps down. Returns whether the message is to be handled further.
    pub(crate) fn observe_term(&mut self, now: Instant, m: &Message) -> bool {
        if m.term > self.hs.term {
            match &m.body {
                // A pre-vote never changes anyone's term (thesis §9.6).
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::RequestVote { transfer: false, .. } if self.in_leader_lease(now) => {
                    tracing::debug!(
                        node = self.id,
                        from = m.from,
                        term = m.term,
                        "ignoring vote request: leader is live"
                    );
                    return false;
                }
                MessageBody::AppendEntries { .. }
                | MessageBody::Commit { .. }
                | MessageBody::Durable { .. }
                | MessageBody::Heartbeat { .. } => {
                    self.become_follower(now, m.term, Some(m.from));
                }
                _ => self.become_follower(now, m.term, None),
            }
        } else if m.term < self.hs.term {
            self.on_stale_term(m);
            return false;
        }
        true
    }

    /// A message from an older term: tell a stale leader or candidate about the newer
    /// term so that it steps down; drop stale responses.
    fn on_stale_term(&mut self, m: &Message) {
        let reply = match m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Commit { .. } | MessageBody::Heartbeat { .. } => {
                MessageBody::AppendEntriesResponse { success: false, index: 0, hint: None }
            }
            MessageBody::PreVote { .. } => MessageBody::PreVoteResponse { granted: false },
            MessageBody::RequestVote { .. } => MessageBody::RequestVoteResponse { granted: false },
            _ => return,
        };
        let msg = self.message(m.from, reply);
        self.send_after(Needs::Everything, msg);
    }

    pub(crate) fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        if term > self.hs.term {
            self.hs = HardState { term, voted_for: None };
            self.durability.queue_hard_state();
        }
        if self.role != Role::Follower || self.leader != leader {
            tracing::debug!(node = self.id, term, ?leader, "becoming follower");
        }
        if self.role == Role::Leader {
            self.fail_reads();
        }
        self.transfer = None;
        self.role = Role::Follower;
        self.leader = leader;
        self.note_leader(leader);
        if leader.is_some() {
            self.last_leader_contact = Some(now);
        }
        self.votes.clear();
        self.progress.clear();
        self.reset_election_deadline(now);
    }
}

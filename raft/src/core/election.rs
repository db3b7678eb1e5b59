//! Leader election: pre-vote, votes, the election restriction, check-quorum and the
//! leader lease that ignores disruptive candidates (paper §5.2, §5.4.1; thesis §6.2,
//! §9.6).

use super::progress::Progress;
use super::{RaftCore, Role};
use crate::message::MessageBody;
use crate::quorum::VoteResult;
use crate::types::{EntryPayload, HardState, Instant, LogIndex, NodeId, Term};

impl RaftCore {
    /// Thesis §6.2 / §9.6: whether this node has heard from a live leader within the
    /// minimum election timeout (or is that leader). Such a node ignores vote and
    /// pre-vote requests, so a partitioned node rejoining cannot depose a healthy leader.
    pub(crate) fn in_leader_lease(&self, now: Instant) -> bool {
        if !self.cfg.check_quorum {
            return false;
        }
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self.last_leader_contact.is_some_and(|t| now < t.add(self.cfg.election_timeout_min))
            }
        }
    }

    /// The election timeout fired: start a pre-vote round, or an election directly.
    pub(crate) fn campaign(&mut self, now: Instant) {
        if self.cfg.pre_vote {
            self.become_pre_candidate(now);
        } else {
            self.become_candidate(now);
        }
    }

    fn become_pre_candidate(&mut self, now: Instant) {
        tracing::debug!(node = self.id, term = self.hs.term, "starting pre-vote");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.election_won() {
            self.become_candidate(now);
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
                self.push_raw(msg);
            }
        }
    }

    fn become_candidate(&mut self, now: Instant) {
        self.hs = HardState { term: self.hs.term + 1, voted_for: Some(self.id) };
        self.pending.hard_state = true;
        tracing::debug!(node = self.id, term = self.hs.term, "starting election");
        self.role = Role::Candidate;
        self.leader = None;
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
                self.send(to, MessageBody::RequestVote { last_log_index, last_log_term });
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
        self.votes.clear();
        self.progress.clear();
        let next = self.log.last_index() + 1;
        for id in self.membership.all_nodes() {
            if id != self.id {
                self.progress.insert(id, Progress::new(next));
            }
        }
        self.heartbeat_deadline = now.add(self.cfg.heartbeat_interval);
        self.check_quorum_deadline = now.add(self.cfg.election_timeout_max);
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
        self.push_after_hard_state(msg);
    }

    pub(crate) fn on_pre_vote_response(&mut self, now: Instant, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate || term != self.hs.term + 1 {
            return;
        }
        self.votes.insert(from, granted);
        match self.election_result() {
            VoteResult::Won => self.become_candidate(now),
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
                self.pending.hard_state = true;
            }
            self.reset_election_deadline(now);
        }
        self.send(from, MessageBody::RequestVoteResponse { granted });
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

    /// Thesis §6.2: a leader that has not heard from a quorum within an election timeout
    /// steps down, so clients can find the real leader and a partitioned leader stops
    /// accepting proposals.
    pub(crate) fn check_quorum(&mut self, now: Instant) {
        self.check_quorum_deadline = now.add(self.cfg.election_timeout_max);
        if !self.cfg.check_quorum {
            return;
        }
        let me = self.id;
        let active = self.quorum.vote_result(|id| {
            if id == me {
                Some(true)
            } else {
                self.progress.get(&id).map(|p| p.recent_active)
            }
        });
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        if active != VoteResult::Won {
            tracing::info!(node = self.id, term = self.hs.term, "stepping down: no contact with a quorum");
            self.become_follower(now, self.hs.term, None);
        }
    }
}

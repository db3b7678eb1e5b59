//! The follower side of log replication (paper §5.3): the consistency check, the
//! conflict hint that lets the leader skip a whole term per round trip (thesis §5.3),
//! truncating a conflicting suffix, appending, learning the commit index, and
//! heartbeats.
//!
//! **Architecture invariant:** an acknowledgement never leaves before the entries it
//! acknowledges are durable (it is sent with [`Needs::Everything`]); a malformed append
//! is dropped, never trusted (design invariant 8).

use crate::core::durability::Needs;
use crate::core::{RaftCore, Role};
use crate::message::{ConflictHint, MessageBody};
use crate::types::{Entry, Instant, LogIndex, NodeId, Term};

impl RaftCore {
    /// Paper §5.3: the follower side of AppendEntries (and of `Commit`, an append
    /// without entries whose success is not answered: `answer_success` false).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_append_entries(
        &mut self,
        now: Instant,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        answer_success: bool,
    ) {
        if !well_formed_append(prev_log_index, prev_log_term, &entries, self.hs.term) {
            tracing::warn!(node = self.id, from, prev_log_index, "dropping malformed AppendEntries");
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            // A candidate of this term learns it lost (paper §5.2).
            self.become_follower(now, self.hs.term, Some(from));
        }
        self.last_leader_contact = Some(now);
        self.reset_election_deadline(now);

        // Consistency check. Entries at or below our commit index are known to match.
        let commit = self.log.commit;
        if prev_log_index > self.log.last_index() {
            let hint = ConflictHint { conflict_term: None, index: self.log.last_index() + 1 };
            self.reject_append(from, prev_log_index, hint);
            return;
        }
        if prev_log_index > commit {
            match self.log.term_at(prev_log_index) {
                Some(t) if t == prev_log_term => {}
                Some(_) => {
                    // None of our entries with a term above `prev_log_term` can match the
                    // leader's (its terms up to `prev_log_index` are at most that): point
                    // below all of them at once. Entries up to `commit` match for sure.
                    let index = self.log.last_index_with_term_at_most(prev_log_term, prev_log_index, commit);
                    let hint = ConflictHint { conflict_term: self.log.term_at(index), index };
                    self.reject_append(from, prev_log_index, hint);
                    return;
                }
                None => {
                    let hint = ConflictHint { conflict_term: None, index: commit + 1 };
                    self.reject_append(from, prev_log_index, hint);
                    return;
                }
            }
        }

        let match_index = prev_log_index + entries.len() as u64;
        // Skip entries we already hold; truncate at the first conflict (paper §5.3 step 3).
        let mut new_from = None;
        for (i, e) in entries.iter().enumerate() {
            if e.index <= commit {
                continue;
            }
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    self.truncate_local(e.index);
                    new_from = Some(i);
                }
                None => new_from = Some(i),
            }
            break;
        }
        if let Some(i) = new_from {
            for e in entries.into_iter().skip(i) {
                self.push_entry(e);
            }
        }
        let term = self.hs.term;
        if self.matched.0 != term || self.matched.1 < match_index {
            self.matched = (term, match_index);
        }
        let new_commit = leader_commit.min(match_index);
        if new_commit > self.log.commit {
            self.set_commit(new_commit);
        }
        self.commit_from_leader_durability();
        // Held until every entry up to `match_index` is durable.
        if answer_success {
            self.send_to(
                Needs::Everything,
                from,
                MessageBody::AppendEntriesResponse { success: true, index: match_index, hint: None },
            );
        }
    }

    fn reject_append(&mut self, to: NodeId, rejected: LogIndex, hint: ConflictHint) {
        tracing::trace!(node = self.id, to, rejected, ?hint, "rejecting append");
        self.send_to(
            Needs::Everything,
            to,
            MessageBody::AppendEntriesResponse { success: false, index: rejected, hint: Some(hint) },
        );
    }

    pub(crate) fn on_heartbeat(&mut self, now: Instant, from: NodeId, commit: LogIndex, ctx: u64) {
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(now, self.hs.term, Some(from));
        }
        self.last_leader_contact = Some(now);
        self.reset_election_deadline(now);
        // The leader caps `commit` at our known match index, so those entries match.
        let commit = commit.min(self.log.last_index());
        if commit > self.log.commit {
            self.set_commit(commit);
        }
        self.send_to(Needs::Everything, from, MessageBody::HeartbeatResponse { ctx });
    }
}

/// Whether an AppendEntries is internally consistent: entries contiguous from
/// `prev_log_index + 1`, terms never decreasing, none newer than the sender's term. A
/// message that is not is dropped rather than trusted (design invariant 8).
fn well_formed_append(prev_log_index: LogIndex, prev_log_term: Term, entries: &[Entry], term: Term) -> bool {
    let mut expect_index = prev_log_index;
    let mut min_term = prev_log_term;
    for e in entries {
        let Some(next) = expect_index.checked_add(1) else { return false };
        if e.index != next || e.term < min_term || e.term > term {
            return false;
        }
        expect_index = next;
        min_term = e.term;
    }
    prev_log_term <= term
}

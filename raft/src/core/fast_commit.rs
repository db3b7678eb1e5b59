//! **Not in the paper.** Two optimisations that let followers learn of commitment
//! sooner than Raft's AppendEntries alone would tell them. Both only ever make a node
//! learn a commit index that the paper's rule would also reach; neither makes a leader
//! or a follower count an entry that is not on a quorum.
//!
//! # Commit news ([`MessageBody::Commit`])
//!
//! When the commit index advances and a peer being replicated to has no new entries to
//! receive, the leader sends it only `(prev_log_index, prev_log_term, leader_commit)`,
//! and the follower does not answer. The follower handles it exactly as an empty
//! AppendEntries (paper §5.3: the consistency check on `prev`, then
//! `commit = min(leader_commit, index of last new entry)`), so it is safe for the same
//! reason an empty AppendEntries is; not answering only loses the leader a progress
//! report it does not need (the peer's match index did not change).
//!
//! # Leader durability notices ([`MessageBody::Durable`])
//!
//! The leader writes its log in parallel with replication, so its own copy is often the
//! last to become durable. When that happens in a configuration of at most three voters
//! that is not joint, the leader tells the voters how far its log is durable. A
//! follower then commits `q` when all of the following hold:
//!
//! 1. the notice is from the leader of the follower's current term, and `q` is at most
//!    the leader's durable index: the leader's copy up to `q` is on stable storage;
//! 2. `q` is at most the follower's own durable index *within the part of its log known
//!    to match the leader's* (`matched`, raised only by successful appends of this term):
//!    the follower's copy is durable and identical to the leader's (Log Matching);
//! 3. the leader and the follower are a quorum of the configuration both count under:
//!    the follower's latest configuration entry is the one the notice names
//!    (`config_index`), it lies within the matched prefix, and it is not joint;
//! 4. the entry at `q` has the current term (paper §5.4.2: only entries of the leader's
//!    term are committed by counting).
//!
//! Then entry `q` is durably stored on a quorum in the leader's term, which is exactly
//! the paper's commitment condition, so Leader Completeness holds. A leader's read index
//! is never below what it announced (`read_index.rs`), because a follower may already
//! have answered a client for an index the leader has not yet counted.

use crate::core::durability::Needs;
use crate::core::{RaftCore, Role};
use crate::message::MessageBody;
use crate::types::{Instant, LogIndex, NodeId, Term};

impl RaftCore {
    /// Leader: sends `peer`, which is being replicated to and has no new entries, the
    /// commit index alone (commit news).
    pub(crate) fn send_commit_news(&mut self, peer: NodeId, prev_log_index: LogIndex, prev_log_term: Term) {
        let leader_commit = self.log.commit;
        self.send_to(Needs::HardState, peer, MessageBody::Commit { prev_log_index, prev_log_term, leader_commit });
    }

    /// Follower: commit news from the leader, handled as an empty AppendEntries that is
    /// not answered.
    pub(crate) fn on_commit_news(
        &mut self,
        now: Instant,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        leader_commit: LogIndex,
    ) {
        self.on_append_entries(now, from, prev_log_index, prev_log_term, Vec::new(), leader_commit, false);
    }

    /// Leader: tells the voters how far its log is durable, while that is beyond the
    /// commit index, in the current term, and in a configuration that is not joint and
    /// where the leader and any one follower are a majority (at most 3 voters): only
    /// there can a follower use it.
    pub(crate) fn announce_durability(&mut self) {
        let durable = self.log.durable;
        if durable <= self.log.commit.max(self.durable_announced)
            || self.log.term_at(durable) != Some(self.hs.term)
            || self.membership.voters_outgoing.is_some()
            || self.membership.voters.len() > 3
        {
            return;
        }
        self.durable_announced = durable;
        let config_index = self.config_index();
        let peers: Vec<NodeId> = self.membership.voters.iter().copied().filter(|&id| id != self.id).collect();
        for peer in peers {
            self.send_to(Needs::HardState, peer, MessageBody::Durable { index: durable, config_index });
        }
    }

    /// Follower: the leader's log is durable through `index`.
    pub(crate) fn on_leader_durable(&mut self, from: NodeId, index: LogIndex, config_index: LogIndex) {
        if self.role != Role::Follower || self.leader != Some(from) {
            return;
        }
        self.leader_durable = Some((self.hs.term, index, config_index));
        self.commit_from_leader_durability();
    }

    /// Follower: commits what the leader and this node both hold durably, when the two
    /// of them are a quorum of the leader's configuration (the commit rule of paper
    /// §5.4.2, applied with what this follower knows). Both must count under the same
    /// configuration: this node's latest one must be the leader's, within the part of
    /// the log known to match the leader's.
    pub(crate) fn commit_from_leader_durability(&mut self) {
        let Some((term, leader_durable, config_index)) = self.leader_durable else { return };
        let (Some(leader), (matched_term, matched)) = (self.leader, self.matched) else { return };
        if term != self.hs.term
            || matched_term != term
            || self.role != Role::Follower
            || self.membership.voters_outgoing.is_some()
            || self.config_index() != config_index
            || config_index > matched
        {
            return;
        }
        let mine = matched.min(self.log.durable);
        let me = self.id;
        let q = self.quorum.committed_index(|id| {
            if id == me {
                Some(mine)
            } else if id == leader {
                Some(leader_durable)
            } else {
                None
            }
        });
        let q = q.min(mine).min(leader_durable);
        if q > self.log.commit && self.log.term_at(q) == Some(term) {
            self.set_commit(q);
        }
    }
}

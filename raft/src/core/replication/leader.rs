//! The leader side of log replication (paper §5.3, §5.4.2): pipelined AppendEntries to
//! each peer within a bounded window (a window of messages and bytes per peer, see
//! `progress.rs`), probing after a rejection with the follower's conflict hint (thesis
//! §5.3), heartbeats independent of that window, and the commit rule.
//!
//! **Architecture invariant:** the leader counts its own log for commitment only up to
//! its durable index, and commits by counting only entries of its own term (paper
//! §5.4.2); older entries are committed indirectly.

use super::IfNothingNew;
use crate::core::durability::Needs;
use crate::core::progress::ProgressState;
use crate::core::{RaftCore, Role};
use crate::message::{ConflictHint, MessageBody};
use crate::types::{Entry, LogIndex, NodeId};

impl RaftCore {
    /// Sends whatever each peer's window allows, and `if_empty` to a peer with nothing
    /// new.
    pub(crate) fn broadcast_append(&mut self, if_empty: IfNothingNew) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            self.send_appends(peer, if_empty);
        }
    }

    /// Pipelines appends to `peer` until its window is full or it is up to date.
    pub(crate) fn send_appends(&mut self, peer: NodeId, mut if_empty: IfNothingNew) {
        while self.send_one_append(peer, if_empty) {
            if_empty = IfNothingNew::Nothing;
        }
    }

    /// Sends one append to `peer` if its state allows. Returns whether one went out with
    /// entries and the window may take more.
    fn send_one_append(&mut self, peer: NodeId, if_empty: IfNothingNew) -> bool {
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_messages, self.cfg.max_inflight_bytes);
        let Some(pr) = self.progress.get(&peer) else { return false };
        if pr.is_paused(max_msgs, max_bytes) {
            return false;
        }
        let next = pr.next_index;
        let prev_log_index = next - 1;
        if next <= self.log.prev().index {
            self.start_snapshot_send(peer);
            return false;
        }
        if next <= self.log.trimmed().index {
            self.load_for(peer, next);
            return false;
        }
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            tracing::warn!(node = self.id, peer, prev_log_index, "entries needed by peer are no longer in the log");
            return false;
        };
        let entries = self.log.slice(next, self.cfg.max_entries_per_message, self.cfg.max_bytes_per_message);
        if entries.is_empty() && if_empty == IfNothingNew::Nothing {
            return false;
        }
        let last = prev_log_index + entries.len() as u64;
        let bytes: usize = entries.iter().map(Entry::approx_size).sum();
        let has_entries = !entries.is_empty();
        if let Some(pr) = self.progress.get_mut(&peer) {
            if has_entries || pr.state == ProgressState::Probe {
                pr.sent(last, bytes);
            }
        }
        let leader_commit = self.log.commit;
        let replicating = self.progress.get(&peer).is_some_and(|p| p.state == ProgressState::Replicate);
        if !has_entries && replicating && if_empty == IfNothingNew::Commit {
            // Only the commit index is news: no answer is needed.
            self.send_commit_news(peer, prev_log_index, prev_log_term);
        } else {
            self.send_to(
                Needs::HardState,
                peer,
                MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit },
            );
        }
        has_entries
    }

    /// Heartbeats to every peer. They are independent of the replication window, so a
    /// full window never starves them; each carries the commit index capped at what the
    /// peer is known to hold.
    ///
    /// The context echoed back is `2 * round + periodic`: `round` is the latest read-index
    /// round (so any answered heartbeat confirms it), and the low bit tells the periodic
    /// heartbeats, whose answers drive window recovery, from the extra ones sent to
    /// confirm reads, whose answers must not.
    pub(crate) fn send_heartbeats(&mut self, periodic: bool) {
        if periodic {
            for p in self.progress.values_mut() {
                p.acked_recently = false;
            }
        }
        let ctx = self.reads.last_ctx.saturating_mul(2) | u64::from(periodic);
        let targets: Vec<(NodeId, LogIndex)> =
            self.progress.iter().map(|(&id, p)| (id, p.match_index.min(self.log.commit))).collect();
        for (peer, commit) in targets {
            self.send_to(Needs::HardState, peer, MessageBody::Heartbeat { commit, ctx });
        }
    }

    /// The leader side of an AppendEntries answer.
    pub(crate) fn on_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        hint: Option<ConflictHint>,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_messages, self.cfg.max_inflight_bytes);
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if pr.state == ProgressState::Snapshot && !(success && index > self.log.prev().index) {
            // An answer from before the transfer; the snapshot's answers decide now.
            return;
        }
        if success && index > last {
            tracing::warn!(node = self.id, peer = from, index, last, "ignoring acknowledgement beyond our log");
            return;
        }
        if success {
            // A paused peer was skipped by any commit broadcast meanwhile; unless a new
            // broadcast is due anyway, tell it the commit index now, even with no entries.
            let was_paused = pr.is_paused(max_msgs, max_bytes);
            if pr.acknowledge(index) {
                self.maybe_commit();
            }
            let tell_commit = was_paused && !self.broadcast_commit;
            self.send_appends(from, if tell_commit { IfNothingNew::Commit } else { IfNothingNew::Nothing });
            self.maybe_send_timeout_now(from);
            return;
        }
        // A rejection of something other than what we are probing now is stale.
        let expected = pr.state == ProgressState::Probe && index + 1 == pr.next_index;
        let stale_pipelined = pr.state == ProgressState::Replicate && index <= pr.match_index;
        if !(expected || pr.state == ProgressState::Replicate) || stale_pipelined {
            return;
        }
        let match_index = pr.match_index;
        let next = match hint {
            // The follower's terms up to `hint` are at most `t`, so none of our entries
            // above `t` can match there: probe below all of them.
            Some(ConflictHint { conflict_term: Some(t), index: hint }) => {
                self.log.last_index_with_term_at_most(t, hint, match_index) + 1
            }
            Some(ConflictHint { conflict_term: None, index: end }) => end,
            None => index,
        };
        let next = next.min(index).max(match_index + 1);
        tracing::trace!(node = self.id, peer = from, rejected = index, next, "peer log diverges, probing");
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.become_probe(next);
        }
        self.send_appends(from, IfNothingNew::Append);
    }

    pub(crate) fn on_heartbeat_response(&mut self, from: NodeId, ctx: u64) {
        if self.role != Role::Leader {
            return;
        }
        self.on_read_ack(from, ctx / 2);
        let periodic = ctx & 1 == 1;
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if pr.state == ProgressState::Snapshot {
            if periodic {
                self.snapshot_send_stalled(from);
            }
            return;
        }
        if pr.match_index >= last {
            self.maybe_send_timeout_now(from);
        } else if periodic {
            // Recover from lost appends: a probe may go again, and a full window gives up
            // its oldest slot. If appends were lost, the follower rejects the next one and
            // the peer falls back to probing.
            pr.probe_sent = false;
            if !pr.acked_recently {
                pr.free_oldest_inflight();
            }
            self.send_appends(from, IfNothingNew::Append);
        }
    }

    /// Paper §5.3, §5.4.2: the commit index is the highest index stored on a quorum, and
    /// a leader commits by counting only entries of its own term. The leader counts its
    /// own copy only once durable.
    pub(crate) fn maybe_commit(&mut self) {
        let me = self.id;
        let durable = self.log.durable;
        let q = self.quorum.committed_index(|id| {
            if id == me {
                Some(durable)
            } else {
                self.progress.get(&id).map(|p| p.match_index)
            }
        });
        let q = q.min(self.log.last_index());
        if q > self.log.commit && self.log.term_at(q) == Some(self.hs.term) {
            self.set_commit(q);
            // Let followers learn the new commit index promptly.
            self.broadcast_commit = true;
        }
    }
}

//! Log replication: AppendEntries with the consistency check, conflict hints, pipelined
//! sends within a bounded window, heartbeats, and the commit rule (paper §5.3, §5.4.2;
//! thesis §5.3 for the conflict optimization).

use super::{RaftCore, Role};
use crate::message::{ConflictHint, MessageBody};
use crate::types::{Entry, Instant, LogIndex, NodeId, Term};

/// What a peer with no new entries to receive is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfNothingNew {
    /// Nothing.
    Nothing,
    /// The commit index: a [`MessageBody::Commit`] (not answered) to a peer being
    /// replicated to, an empty `AppendEntries` to a peer being probed.
    Commit,
    /// An empty `AppendEntries`, answered, to learn where the peer stands.
    Append,
}

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
            if has_entries || pr.state == super::progress::ProgressState::Probe {
                pr.sent(last, bytes);
            }
        }
        let leader_commit = self.log.commit;
        let replicating =
            self.progress.get(&peer).is_some_and(|p| p.state == super::progress::ProgressState::Replicate);
        if !has_entries && replicating && if_empty == IfNothingNew::Commit {
            // Only the commit index is news: no answer is needed.
            self.send_leader(peer, MessageBody::Commit { prev_log_index, prev_log_term, leader_commit });
        } else {
            self.send_leader(
                peer,
                MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit },
            );
        }
        has_entries
    }

    /// Asks the driver to read entries from `next` on (and the one before, for its
    /// term) that are no longer in memory.
    fn load_for(&mut self, peer: NodeId, next: LogIndex) {
        let snapshot = self.log.prev();
        if next <= snapshot.index {
            tracing::warn!(node = self.id, peer, next, "peer needs entries before the snapshot point");
            return;
        }
        let start = if next - 1 == snapshot.index { next } else { next - 1 };
        let end = self.log.trimmed().index.min(next - 1 + self.cfg.max_entries_per_message as u64) + 1;
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.loading = true;
        }
        tracing::trace!(node = self.id, peer, start, end, "reading entries for a lagging peer from the store");
        self.actions.push(super::Action::LoadEntries { peer, term: self.hs.term, start, end });
    }

    /// Sends entries read back from the store to the peer that needed them.
    pub(crate) fn on_entries_loaded(&mut self, peer: NodeId, term: Term, loaded: Result<Vec<Entry>, String>) {
        let Some(pr) = self.progress.get_mut(&peer) else { return };
        pr.loading = false;
        tracing::trace!(node = self.id, peer, loaded = ?loaded.as_ref().map(Vec::len), "entries read back");
        if self.role != Role::Leader || term != self.hs.term {
            return;
        }
        let mut entries = match loaded {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(node = self.id, peer, error = %e, "reading entries for a lagging peer failed");
                return;
            }
        };
        let prev_log_index = pr.next_index - 1;
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_messages, self.cfg.max_inflight_bytes);
        if pr.is_paused(max_msgs, max_bytes) {
            return;
        }
        let first = entries.first().map(|e| e.index);
        let prev_log_term = if first == Some(prev_log_index) && prev_log_index > 0 {
            let e = entries.remove(0);
            e.term
        } else if first == Some(prev_log_index + 1) {
            match self.log.term_at(prev_log_index) {
                Some(t) => t,
                None => return,
            }
        } else {
            // The peer's position moved while reading; try again from where it is now.
            self.send_appends(peer, IfNothingNew::Nothing);
            return;
        };
        let mut bytes = 0;
        let keep = entries
            .iter()
            .take_while(|e| {
                bytes += e.approx_size();
                bytes <= self.cfg.max_bytes_per_message
            })
            .count()
            .max(1)
            .min(entries.len());
        entries.truncate(keep);
        if entries.is_empty() {
            return;
        }
        let last = prev_log_index + entries.len() as u64;
        let size = entries.iter().map(Entry::approx_size).sum();
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.sent(last, size);
        }
        let leader_commit = self.log.commit;
        self.send_leader(peer, MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit });
        self.send_appends(peer, IfNothingNew::Nothing);
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
            self.send_leader(peer, MessageBody::Heartbeat { commit, ctx });
        }
    }

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
            self.send(from, MessageBody::AppendEntriesResponse { success: true, index: match_index, hint: None });
        }
    }

    fn reject_append(&mut self, to: NodeId, rejected: LogIndex, hint: ConflictHint) {
        tracing::trace!(node = self.id, to, rejected, ?hint, "rejecting append");
        self.send(to, MessageBody::AppendEntriesResponse { success: false, index: rejected, hint: Some(hint) });
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
            return;
        }
        // A rejection of something other than what we are probing now is stale.
        let expected = pr.state == super::progress::ProgressState::Probe && index + 1 == pr.next_index;
        let stale_pipelined = pr.state == super::progress::ProgressState::Replicate && index <= pr.match_index;
        if !(expected || pr.state == super::progress::ProgressState::Replicate) || stale_pipelined {
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
        self.send(from, MessageBody::HeartbeatResponse { ctx });
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
        if periodic && pr.match_index < last {
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

impl RaftCore {
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
            self.send_leader(peer, MessageBody::Durable { index: durable, config_index });
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

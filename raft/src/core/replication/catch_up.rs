//! Catching up a lagging peer: the entries it needs are no longer in the core's memory
//! (`log.rs` trims what is applied and durable), so the core asks the driver to read
//! them from the store ([`Action::LoadEntries`]) and sends them when they come back
//! ([`Input::EntriesLoaded`](crate::core::Input)). A peer that needs entries the log no
//! longer holds (purged after a snapshot) is sent the snapshot instead (`snapshot.rs`,
//! paper §7).

use super::IfNothingNew;
use crate::core::durability::Needs;
use crate::core::{Action, RaftCore, Role};
use crate::message::MessageBody;
use crate::types::{Entry, LogIndex, NodeId, Term};

impl RaftCore {
    /// Asks the driver to read entries from `next` on (and the one before, for its
    /// term) that are no longer in memory.
    pub(crate) fn load_for(&mut self, peer: NodeId, next: LogIndex) {
        let prev = self.log.prev();
        if next <= prev.index {
            return self.start_snapshot_send(peer);
        }
        let start = if next - 1 == prev.index { next } else { next - 1 };
        let end = self.log.trimmed().index.min(next - 1 + self.cfg.max_entries_per_message as u64) + 1;
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.loading = true;
        }
        tracing::trace!(node = self.id, peer, start, end, "reading entries for a lagging peer from the store");
        self.actions.push(Action::LoadEntries { peer, term: self.hs.term, start, end });
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
        self.send_to(
            Needs::HardState,
            peer,
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit },
        );
        self.send_appends(peer, IfNothingNew::Nothing);
    }
}

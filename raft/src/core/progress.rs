//! The leader's view of each peer's replication progress (paper figure 2: `nextIndex`
//! and `matchIndex`), with a bounded window of in-flight appends.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader is sending to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// The leader does not know where the peer's log matches: one append at a time,
    /// waiting for its answer.
    Probe,
    /// The peer's log matches up to `match_index`: appends are pipelined up to the
    /// in-flight window.
    Replicate,
    /// The peer needs entries the leader has purged: it is sent the latest snapshot in
    /// chunks ([`SnapshotSend`]), and no appends until it holds it.
    Snapshot,
}

/// A snapshot transfer to one peer (paper §7): chunks `[acked, next)` are out, up to a
/// window of chunks; a loss or a restart of the peer sends the leader back to where the
/// peer says it is.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotSend {
    pub(crate) meta: crate::snapshot::SnapshotMeta,
    /// Bytes the peer confirmed holding in order.
    pub(crate) acked: u64,
    /// Where the next chunk to read starts.
    pub(crate) next: u64,
    /// Chunks being read from the store.
    pub(crate) loading: usize,
    /// The empty chunk of an empty snapshot went out.
    pub(crate) sent_empty: bool,
}

/// Replication progress of one peer.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ProgressState,
    /// In `Probe`: an append is out and unanswered.
    pub(crate) probe_sent: bool,
    /// In `Replicate`: the last index and byte size of each append in flight.
    inflight: VecDeque<(LogIndex, usize)>,
    inflight_bytes: usize,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Entries for this peer are being read from the store.
    pub(crate) loading: bool,
    /// An append was acknowledged since the last heartbeat went out: the window is
    /// moving, so a full window means slow, not lost.
    pub(crate) acked_recently: bool,
    /// The latest read-index round this peer has confirmed (thesis §6.4).
    pub(crate) read_ack: u64,
    /// In `Snapshot`: the transfer.
    pub(crate) snapshot: Option<SnapshotSend>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            loading: false,
            acked_recently: false,
            read_ack: 0,
            snapshot: None,
        }
    }

    /// Whether no further append may be sent now.
    pub(crate) fn is_paused(&self, max_msgs: usize, max_bytes: usize) -> bool {
        if self.loading {
            return true;
        }
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_msgs || self.inflight_bytes >= max_bytes,
            ProgressState::Snapshot => true,
        }
    }

    /// Records an append ending at `last` of `bytes` bytes going out.
    pub(crate) fn sent(&mut self, last: LogIndex, bytes: usize) {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
        }
    }

    /// The peer acknowledged everything up to `index`. Returns whether it was news.
    pub(crate) fn acknowledge(&mut self, index: LogIndex) -> bool {
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        self.probe_sent = false;
        self.acked_recently = true;
        let news = index > self.match_index;
        if news {
            self.match_index = index;
            self.next_index = self.next_index.max(index + 1);
        }
        if self.state != ProgressState::Replicate {
            self.become_replicate();
        }
        news
    }

    /// Switches to pipelined replication from `match_index + 1`.
    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.snapshot = None;
        self.next_index = self.match_index + 1;
        self.clear_inflight();
    }

    /// Switches to probing from `next_index`.
    pub(crate) fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Probe;
        self.snapshot = None;
        self.next_index = next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// Starts sending `meta` to the peer.
    pub(crate) fn become_snapshot(&mut self, meta: crate::snapshot::SnapshotMeta) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.clear_inflight();
        self.snapshot = Some(SnapshotSend { meta, acked: 0, next: 0, loading: 0, sent_empty: false });
    }

    /// Frees the oldest in-flight slot (its append was probably lost).
    pub(crate) fn free_oldest_inflight(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_after_one_send_until_answered() {
        let mut p = Progress::new(5);
        assert!(!p.is_paused(4, 1000));
        p.sent(7, 10);
        assert!(p.is_paused(4, 1000));
        assert_eq!(p.next_index, 5, "probing does not advance next optimistically");
        assert!(p.acknowledge(7));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, 8);
    }

    #[test]
    fn replicate_window_is_bounded_by_count_and_bytes() {
        let mut p = Progress::new(1);
        p.acknowledge(0);
        assert_eq!(p.state, ProgressState::Replicate, "any success ends probing");
        p.sent(10, 100);
        p.sent(20, 100);
        assert!(p.is_paused(2, 10_000), "count bound");
        assert!(p.is_paused(10, 150), "byte bound");
        p.acknowledge(10);
        assert!(!p.is_paused(2, 10_000));
        assert_eq!(p.next_index, 21);
    }
}

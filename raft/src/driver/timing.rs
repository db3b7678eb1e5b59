//! The protocol loop's timings ([`Latencies`](crate::Latencies)): how long the leader's
//! entries take from append to commit, and each peer's heartbeat round trip. The loop
//! sees every message and every batch's outcome, so it measures these without the
//! core's help (the core keeps no clock).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::core::{RaftCore, Role};
use crate::message::{Message, MessageBody};
use crate::metrics::{micros, DriverLatencies};
use crate::sync::lock;
use crate::types::{Instant, LogIndex, NodeId, Term};

/// What the protocol loop is timing.
pub(super) struct Timing {
    /// The term in which `appended_to` was last seen as leader (0: not leading).
    leading: Term,
    /// The last index appended while leading.
    appended_to: LogIndex,
    /// Entries appended while leading and not yet committed, by batch: the batch's last
    /// index, its number of entries and when it was appended.
    uncommitted: VecDeque<(LogIndex, u64, Instant)>,
    /// The heartbeat being timed to each peer: its context and when it left. One at a
    /// time, so that an answer is matched with its own heartbeat even when the contexts
    /// of successive heartbeats are equal.
    heartbeats: BTreeMap<NodeId, (u64, Instant)>,
    /// A heartbeat unanswered for this long was lost; the next one is timed instead.
    lost_after: Duration,
}

impl Timing {
    /// Nothing timed yet; a heartbeat unanswered after `lost_after` counts as lost.
    pub(super) fn new(lost_after: Duration) -> Self {
        Timing { leading: 0, appended_to: 0, uncommitted: VecDeque::new(), heartbeats: BTreeMap::new(), lost_after }
    }

    /// After each batch: the entries the leader appended in it start their clock, and
    /// those now committed stop theirs (one sample per entry).
    pub(super) fn after_batch(&mut self, core: &RaftCore, now: Instant, latencies: &DriverLatencies) {
        if core.role() != Role::Leader {
            if self.leading != 0 {
                self.leading = 0;
                self.uncommitted.clear();
                self.heartbeats.clear();
            }
            return;
        }
        let last = core.last_index();
        if self.leading != core.term() {
            // Newly leader: what the log holds already is not timed.
            self.leading = core.term();
            self.appended_to = last;
            self.uncommitted.clear();
        }
        if last > self.appended_to {
            self.uncommitted.push_back((last, last - self.appended_to, now));
            self.appended_to = last;
        }
        let commit = core.commit_index();
        while let Some(&(index, n, appended)) = self.uncommitted.front() {
            if index > commit {
                break;
            }
            self.uncommitted.pop_front();
            latencies.commit.record_n(micros(now.saturating_since(appended)), n);
        }
    }

    /// A heartbeat with context `ctx` is leaving for `to`: it starts the peer's clock
    /// unless one is timed already.
    pub(super) fn on_heartbeat_sent(&mut self, to: NodeId, ctx: u64, now: Instant) {
        let timed = self.heartbeats.get(&to);
        if timed.is_none_or(|&(_, sent)| now.saturating_since(sent) > self.lost_after) {
            self.heartbeats.insert(to, (ctx, now));
        }
    }

    /// A message arrived: the answer to the heartbeat being timed stops its clock.
    pub(super) fn on_receive(&mut self, msg: &Message, now: Instant, latencies: &DriverLatencies) {
        if let MessageBody::HeartbeatResponse { ctx } = msg.body {
            if let Some(&(timed, sent)) = self.heartbeats.get(&msg.from) {
                if timed == ctx {
                    self.heartbeats.remove(&msg.from);
                    let rtt = micros(now.saturating_since(sent));
                    lock(&latencies.peer_rtt).entry(msg.from).or_default().record(rtt);
                }
            }
        }
    }
}

//! Leadership transfer (thesis §3.10).
//!
//! The leader stops taking proposals, brings the target up to date, and sends it
//! [`MessageBody::TimeoutNow`]; the target starts an election at once, without a pre-vote,
//! and its vote requests carry a flag that lets voters grant them although they heard
//! from the leader within the lease (`lease.rs`). The leader gives up after an election
//! timeout if it still leads, and takes proposals again. A leader removed from the
//! configuration hands over the same way before stepping down (`config_change.rs`).
//!
//! **Architecture invariant:** a leader sends `TimeoutNow` only to a voter whose log
//! matches its own to the last entry, so the target can win; nothing else bypasses the
//! lease.

use super::durability::Needs;
use super::replication::IfNothingNew;
use super::timers::Timer;
use super::{RaftCore, Role};
use crate::message::MessageBody;
use crate::types::{Instant, NodeId};

/// A leadership transfer in progress (leader only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// The voter to hand leadership to.
    pub(crate) to: NodeId,
    /// When the transfer is given up.
    pub(crate) deadline: Instant,
    /// `TimeoutNow` went out.
    sent: bool,
}

/// Why a leadership transfer cannot start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TransferError {
    /// This node is not the leader; the leader, if known.
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    /// The target is not a voter of the configuration in effect.
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    /// A transfer to another node is in progress.
    #[error("a transfer to node {0} is in progress")]
    InProgress(NodeId),
}

impl RaftCore {
    /// Thesis §3.10: starts handing leadership to `to`. Proposals are refused until the
    /// transfer ends: `to` wins (this node steps down on its higher term) or an election
    /// timeout passes. Asking again for the same target is not an error; asking for
    /// this node itself does nothing.
    pub fn transfer_leadership(&mut self, now: Instant, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader(self.leader));
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership.voters.contains(&to) {
            return Err(TransferError::NotAVoter(to));
        }
        match self.transfer {
            Some(t) if t.to == to => return Ok(()),
            Some(t) => return Err(TransferError::InProgress(t.to)),
            None => {}
        }
        let deadline = now.add(self.cfg.election_timeout_max);
        tracing::info!(node = self.id, term = self.hs.term, to, "transferring leadership");
        self.counters.transfers_started += 1;
        self.transfer = Some(Transfer { to, deadline, sent: false });
        self.timers.set(Timer::Transfer, deadline);
        self.send_appends(to, IfNothingNew::Nothing);
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// The target of the transfer in progress, if any.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }

    /// Leader: `peer` reported progress; if it is the transfer's target and holds the
    /// whole log, tell it to campaign.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let Some(t) = self.transfer.filter(|t| t.to == peer && !t.sent) else { return };
        let caught_up = self.progress.get(&peer).is_some_and(|p| p.match_index >= self.log.last_index());
        if !caught_up {
            return;
        }
        tracing::debug!(node = self.id, to = t.to, "transfer target caught up: sending TimeoutNow");
        self.transfer = Some(Transfer { sent: true, ..t });
        self.send_to(Needs::HardState, peer, MessageBody::TimeoutNow);
    }

    /// Part of `tick`: a transfer that has not ended within an election timeout is given
    /// up (thesis §3.10), and proposals are taken again.
    pub(crate) fn transfer_timed_out(&mut self, now: Instant) {
        if let Some(t) = self.transfer.filter(|t| now >= t.deadline) {
            tracing::warn!(node = self.id, to = t.to, "leadership transfer timed out: leading on");
            self.counters.transfers_aborted += 1;
            self.transfer = None;
        }
    }

    /// Thesis §3.10: the target of a transfer starts an election at once, without a
    /// pre-vote and with vote requests the lease does not ignore.
    pub(crate) fn on_timeout_now(&mut self, now: Instant, from: NodeId) {
        if self.role == Role::Leader || !self.membership.voters.contains(&self.id) {
            return;
        }
        tracing::info!(node = self.id, from, term = self.hs.term, "told to campaign by the leader");
        self.become_candidate(now, true);
    }

    /// A leader removed from the configuration: hands leadership to the voter that holds
    /// the most of the log (at once if it holds all of it) and steps down.
    pub(crate) fn hand_over_and_step_down(&mut self, now: Instant) {
        let last = self.log.last_index();
        let best =
            self.membership.voters.iter().filter_map(|id| self.progress.get(id).map(|p| (p.match_index, *id))).max();
        if let Some((m, to)) = best.filter(|&(m, _)| m >= last) {
            tracing::debug!(node = self.id, to, match_index = m, "handing leadership over");
            self.send_to(Needs::HardState, to, MessageBody::TimeoutNow);
        }
        self.become_follower(now, self.hs.term, None);
    }
}

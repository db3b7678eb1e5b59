//! Membership changes made by the leader (thesis chapter 4): learners, single-server
//! changes (§4.1) and joint consensus (§4.3), with the configuration history of
//! `tracker.rs` deciding the quorum in effect.
//!
//! - A change is a membership entry the leader appends; it takes effect on every node
//!   as soon as it is appended (`tracker.rs`).
//! - **One change at a time** (thesis §4.1): no change while the latest configuration is
//!   uncommitted or joint, and none before this leader has committed an entry of its own
//!   term (the 2015 correction to the single-server algorithm: a new leader could
//!   otherwise overlap a change of a previous term that it does not know committed).
//! - **Joint consensus** (thesis §4.3): a change of more than one voter first appends
//!   C_old,new, in which elections and commitment need a majority of both sets
//!   (`quorum.rs`); once it commits the leader appends C_new on its own. A leader that
//!   finds an uncommitted or committed joint configuration in its log finishes it the same
//!   way after its first commit.
//! - **A leader outside C_new** (thesis §4.2.2) keeps leading (it replicates, but does
//!   not count itself) until C_new commits; then it hands leadership to the most
//!   up-to-date voter (`transfer.rs`) and steps down.
//!
//! **Architecture invariant:** at most one configuration entry is uncommitted at any
//! time in a leader's term, and a leader appends one only after committing an entry of
//! its term.

use super::{RaftCore, Role};
use crate::membership::{ConfigChange, ConfigError};
use crate::types::{EntryPayload, Instant, LogIndex};

impl RaftCore {
    /// Appends the membership entry that makes `change` (thesis §4.1, §4.3). Returns its
    /// index; for a change of several voters, that of the joint configuration, after
    /// whose commit the leader appends the final one by itself.
    pub fn change_membership(&mut self, change: &ConfigChange) -> Result<LogIndex, ConfigError> {
        if self.role != Role::Leader {
            return Err(ConfigError::NotLeader(self.leader));
        }
        if self.transfer.is_some() {
            return Err(ConfigError::Transferring);
        }
        if self.log.commit < self.term_start {
            return Err(ConfigError::NotReady);
        }
        if !self.may_change_membership() {
            return Err(ConfigError::InProgress);
        }
        let next = self.membership.apply(change)?;
        tracing::info!(node = self.id, ?change, joint = next.is_joint(), "changing membership");
        self.counters.membership_changes += 1;
        Ok(self.append_local(EntryPayload::Membership(Box::new(next))))
    }

    /// Whether a membership change may start now: this node leads, has committed an entry
    /// of its term, and the configuration in effect is committed and not joint.
    pub fn may_change_membership(&self) -> bool {
        self.role == Role::Leader
            && self.log.commit >= self.term_start
            && self.config_index() <= self.log.commit
            && !self.membership.is_joint()
    }

    /// Leader, once per batch after the commit index may have advanced: a committed
    /// joint configuration gives way to the new one (thesis §4.3), and a leader that is
    /// not a voter of the committed configuration hands over and steps down (thesis
    /// §4.2.2).
    pub(crate) fn after_config_commit(&mut self, now: Instant) {
        if self.role != Role::Leader || self.config_index() > self.log.commit || self.log.commit < self.term_start {
            return;
        }
        if self.membership.is_joint() {
            let next = self.membership.leave_joint();
            tracing::info!(node = self.id, voters = ?next.voters, "joint configuration committed: leaving it");
            self.append_local(EntryPayload::Membership(Box::new(next)));
            return;
        }
        if !self.membership.voters.contains(&self.id) {
            tracing::info!(node = self.id, term = self.hs.term, "removed from the configuration: stepping down");
            self.hand_over_and_step_down(now);
        }
    }
}

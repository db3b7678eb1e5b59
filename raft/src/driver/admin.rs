//! The operator's calls on a [`Raft`] node: membership changes (thesis chapter 4) and
//! leadership transfer (thesis §3.10). Each asks the protocol loop to make the change
//! as leader, then waits on the node's status until the change is committed (or the new
//! leader leads), bounded by the caller's timeout.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::channel::oneshot;

use super::{Event, Raft};
use crate::error::ChangeError;
use crate::membership::{ConfigChange, ConfigError, Membership, NodeInfo};
use crate::state_machine::StateMachine;
use crate::status::Status;
use crate::types::{LogIndex, NodeId};
use crate::Role;

impl<SM: StateMachine> Raft<SM> {
    /// Adds `id` as a learner reachable at `node` (or updates a member's address): it
    /// receives the log, by InstallSnapshot if the leader compacted past its start, but
    /// never votes nor counts for commitment. Returns once the configuration is committed,
    /// with its index. Must be called on the leader.
    pub async fn add_learner(&self, id: NodeId, node: NodeInfo, timeout: Duration) -> Result<LogIndex, ChangeError> {
        let want = node.clone();
        let deadline = self.shared.clock.now().add(timeout);
        let index = self.change(ConfigChange::AddLearner { id, node }, deadline).await?;
        self.wait_config(index, self.remaining(deadline), |m| m.contains(id) && m.nodes.get(&id) == Some(&want)).await
    }

    /// Makes `voters` the voters (thesis §4.1, §4.3): new voters must be learners, and are
    /// first waited for until each is within
    /// [`Config::learner_catch_up_entries`](crate::Config::learner_catch_up_entries) of
    /// the leader's log ([`ChangeError::NotCaughtUp`] otherwise); voters not named are
    /// removed. One voter added or removed is a single-server change; any other goes
    /// through the joint configuration. Returns once the final configuration is
    /// committed, with its index. Must be called on the leader.
    pub async fn change_voters(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
        timeout: Duration,
    ) -> Result<LogIndex, ChangeError> {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let deadline = self.shared.clock.now().add(timeout);
        let promoted: Vec<NodeId> = self.with_status(|s| voters.difference(&s.membership.voters).copied().collect());
        for id in promoted {
            self.wait_caught_up(id, self.remaining(deadline)).await?;
        }
        let index = self.change(ConfigChange::SetVoters { voters: voters.clone() }, deadline).await?;
        self.wait_config(index, self.remaining(deadline), |m| !m.is_joint() && m.voters == voters).await
    }

    /// Removes a voter or a learner. A leader that removes itself keeps leading until
    /// the change commits, then hands leadership to the most up-to-date voter and steps
    /// down. Returns once the configuration is committed, with its index. Must be called
    /// on the leader.
    pub async fn remove_node(&self, id: NodeId, timeout: Duration) -> Result<LogIndex, ChangeError> {
        let deadline = self.shared.clock.now().add(timeout);
        let index = self.change(ConfigChange::Remove { id }, deadline).await?;
        self.wait_config(index, self.remaining(deadline), |m| !m.contains(id)).await
    }

    /// Hands leadership to the voter `to` (thesis §3.10): the leader stops taking
    /// proposals, brings `to` up to date and tells it to campaign at once. Returns once
    /// this node sees `to` lead; fails with [`ChangeError::TransferAborted`] if the
    /// leader gave up after an election timeout. Must be called on the leader.
    pub async fn transfer_leadership(&self, to: NodeId, timeout: Duration) -> Result<(), ChangeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.unbounded_send(Event::TransferLeadership { to, tx }).map_err(|_| ChangeError::ShuttingDown)?;
        rx.await.map_err(|_| ChangeError::ShuttingDown)??;
        let s = self
            .wait_for(&format!("node {to} to lead"), timeout, |s| {
                s.leader == Some(to) || (s.role == Role::Leader && s.transferring_to.is_none())
            })
            .await
            .map_err(wait_error)?;
        if s.leader == Some(to) {
            Ok(())
        } else {
            Err(ChangeError::TransferAborted(to))
        }
    }

    /// Asks the protocol loop to append the entry for `change`. A leader elected a moment
    /// ago refuses with [`ConfigError::NotReady`] until it commits an entry of its term;
    /// that is waited out (each time the commit index moves, the change is asked again),
    /// up to `deadline`.
    async fn change(&self, change: ConfigChange, deadline: crate::Instant) -> Result<LogIndex, ChangeError> {
        loop {
            // Read before asking, so a commit between the refusal and the wait is seen.
            let (term, commit) = self.with_status(|s| (s.term, s.commit_index));
            let (tx, rx) = oneshot::channel();
            let event = Event::ChangeMembership { change: change.clone(), tx };
            self.tx.unbounded_send(event).map_err(|_| ChangeError::ShuttingDown)?;
            match rx.await.map_err(|_| ChangeError::ShuttingDown)? {
                Err(ConfigError::NotReady) => {
                    self.wait_for("the new leader's first commit", self.remaining(deadline), |s| {
                        s.term != term || s.commit_index > commit
                    })
                    .await
                    .map_err(wait_error)?;
                }
                result => return Ok(result?),
            }
        }
    }

    /// Waits until the configuration in effect, at `index` or later, satisfies `done`
    /// and is committed; returns its index.
    async fn wait_config(
        &self,
        index: LogIndex,
        timeout: Duration,
        mut done: impl FnMut(&Membership) -> bool,
    ) -> Result<LogIndex, ChangeError> {
        let s = self
            .wait_for(&format!("the configuration at {index} or later committed"), timeout, |s: &Status| {
                s.config_index >= index && s.commit_index >= s.config_index && done(&s.membership)
            })
            .await
            .map_err(wait_error)?;
        Ok(s.config_index)
    }

    /// Waits until learner `id` is within the allowed lag of this leader's log.
    async fn wait_caught_up(&self, id: NodeId, timeout: Duration) -> Result<(), ChangeError> {
        let lag = self.shared.learner_catch_up_entries;
        let behind = |s: &Status| s.last_log_index.saturating_sub(s.match_index.get(&id).copied().unwrap_or(0));
        match self
            .wait_for(&format!("learner {id} to catch up"), timeout, |s| s.role != Role::Leader || behind(s) <= lag)
            .await
        {
            Ok(s) if s.role == Role::Leader => Ok(()),
            Ok(s) => Err(ChangeError::Config(ConfigError::NotLeader(s.leader))),
            Err(crate::WaitError::Timeout { last, .. }) => Err(ChangeError::NotCaughtUp { id, behind: behind(&last) }),
            Err(crate::WaitError::Stopped { .. }) => Err(ChangeError::ShuttingDown),
        }
    }

    fn remaining(&self, deadline: crate::Instant) -> Duration {
        deadline.saturating_since(self.shared.clock.now())
    }
}

fn wait_error(e: crate::WaitError) -> ChangeError {
    match e {
        crate::WaitError::Timeout { .. } => ChangeError::Timeout,
        crate::WaitError::Stopped { .. } => ChangeError::ShuttingDown,
    }
}

//! The leader lease and check-quorum (thesis §6.2, §4.2.3, §9.6).
//!
//! - **Check-quorum:** a leader that has not heard from a quorum within an election
//!   timeout steps down, so a partitioned leader stops accepting proposals and clients
//!   find the real leader.
//! - **Lease (vote-ignoring rule):** a node that heard from a live leader within the
//!   minimum election timeout ignores vote and pre-vote requests, so a node rejoining
//!   from a partition, or one removed from the configuration, cannot depose a healthy
//!   leader. This lease only protects elections; reads are served by ReadIndex
//!   (`read_index.rs`) and never by the lease, so clock drift cannot break
//!   linearizability.

use super::timers::Timer;
use super::{RaftCore, Role};
use crate::quorum::VoteResult;
use crate::types::Instant;

impl RaftCore {
    /// Thesis §6.2 / §9.6: whether this node has heard from a live leader within the
    /// minimum election timeout (or is that leader). Such a node ignores vote and
    /// pre-vote requests, so a partitioned node rejoining cannot depose a healthy leader.
    pub(crate) fn in_leader_lease(&self, now: Instant) -> bool {
        if !self.cfg.check_quorum {
            return false;
        }
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self.last_leader_contact.is_some_and(|t| now < t.add(self.cfg.election_timeout_min))
            }
        }
    }

    /// Thesis §6.2: a leader that has not heard from a quorum within an election timeout
    /// steps down, so clients can find the real leader and a partitioned leader stops
    /// accepting proposals.
    pub(crate) fn check_quorum(&mut self, now: Instant) {
        self.timers.set(Timer::CheckQuorum, now.add(self.cfg.election_timeout_max));
        if !self.cfg.check_quorum {
            return;
        }
        let me = self.id;
        let active = self.quorum.vote_result(|id| {
            if id == me {
                Some(true)
            } else {
                self.progress.get(&id).map(|p| p.recent_active)
            }
        });
        for p in self.progress.values_mut() {
            p.recent_active = false;
        }
        if active != VoteResult::Won {
            tracing::info!(node = self.id, term = self.hs.term, "stepping down: no contact with a quorum");
            self.become_follower(now, self.hs.term, None);
        }
    }
}

//! The configuration history (thesis §4.1): membership entries take effect as soon as
//! they are appended, not when committed, so the core keeps every membership entry
//! after the last committed one and falls back when a truncation removes the latest.
//! The quorum rule and the leader's per-peer progress follow the configuration in
//! effect.
//!
//! **Architecture invariant:** the configuration in effect is always that of the last
//! membership entry in the log (or the last committed one before it, after a
//! truncation); no other code sets it.

use super::progress::Progress;
use super::{RaftCore, Role};
use crate::membership::Membership;
use crate::types::LogIndex;

impl RaftCore {
    /// Index of the latest membership entry in the log (0: none since the start).
    pub(crate) fn config_index(&self) -> LogIndex {
        self.configs.last().map_or(0, |(i, _)| *i)
    }

    /// Whether this node campaigns when its election timer fires: as a voter of the
    /// configuration in effect, or as a voter of the previous one while the entry that
    /// removes it is not known committed. A leader that appended its own removal may be
    /// deposed before the entry commits, holding the most up-to-date log: the remaining
    /// voters then cannot win without its vote, and it must be able to win under C_new
    /// (a candidate outside C_new needs a majority of C_new, not counting itself), commit
    /// the entry and hand over (thesis §4.2.2). A node whose removal it knows committed,
    /// or a learner, never campaigns.
    pub(crate) fn may_campaign(&self) -> bool {
        if self.membership.is_voter(self.id) {
            return true;
        }
        let n = self.configs.len();
        self.config_index() > self.log.commit && n >= 2 && self.configs[n - 2].1.is_voter(self.id)
    }

    pub(crate) fn set_membership(&mut self, m: Membership) {
        self.quorum = m.quorum();
        self.membership = m;
        self.configs_generation += 1;
        self.track_progress();
    }

    /// The configuration in effect, with the addresses ([`Membership::nodes`]) of the
    /// members of earlier configurations not yet superseded by a committed one, i.e. the
    /// nodes being removed: what the network must still reach. A leader that is
    /// removing itself keeps leading until the entry commits, and needs the remaining
    /// members to take its messages until then; a member being removed may still hear of
    /// its removal.
    pub fn reachable_membership(&self) -> Membership {
        let mut m = self.membership.clone();
        for (_, earlier) in self.configs.iter().rev() {
            for (&id, info) in &earlier.nodes {
                m.nodes.entry(id).or_insert_with(|| info.clone());
            }
        }
        m
    }

    /// A number that changes whenever [`RaftCore::reachable_membership`] may have.
    pub fn configs_generation(&self) -> u64 {
        self.configs_generation
    }

    /// Leader: keeps a progress for every member of the configuration in effect and of
    /// the configurations before it that are not yet superseded by a committed one, so
    /// that a node being removed still receives the entry that removes it (and learns
    /// it is no longer a member) until that entry commits.
    pub(crate) fn track_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let next = self.log.last_index() + 1;
        let mut all = self.membership.all_nodes();
        for (_, m) in &self.configs {
            all.extend(m.all_nodes());
        }
        all.remove(&self.id);
        self.progress.retain(|id, _| all.contains(id));
        for id in all {
            self.progress.entry(id).or_insert_with(|| Progress::new(next));
        }
    }
}

//! Cluster membership configurations, stored in the log (thesis chapter 4).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::quorum::{JointQuorum, MajorityQuorum};
use crate::types::NodeId;

/// A membership configuration: the voters (possibly a joint configuration of an
/// outgoing and an incoming set, thesis §4.3) and the non-voting learners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// During joint consensus, the voters of the outgoing configuration; decisions need a
    /// majority of both sets.
    pub voters_outgoing: Option<BTreeSet<NodeId>>,
    /// Nodes that receive the log but neither vote nor count toward commitment.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A simple configuration made of `voters`.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership { voters: voters.into_iter().collect(), voters_outgoing: None, learners: BTreeSet::new() }
    }

    /// The quorum rule of this configuration.
    pub fn quorum(&self) -> JointQuorum {
        JointQuorum::new(
            MajorityQuorum::new(self.voters.iter().copied()),
            self.voters_outgoing.as_ref().map(|o| MajorityQuorum::new(o.iter().copied())),
        )
    }

    /// Whether `id` is a voter in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.as_ref().is_some_and(|o| o.contains(&id))
    }

    /// Every node the leader replicates to: voters of both halves and learners.
    pub fn all_nodes(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        if let Some(o) = &self.voters_outgoing {
            all.extend(o.iter().copied());
        }
        all.extend(self.learners.iter().copied());
        all
    }

    /// The number of node ids named in the configuration (with repeats across halves).
    pub fn len(&self) -> usize {
        self.voters.len() + self.voters_outgoing.as_ref().map_or(0, |o| o.len()) + self.learners.len()
    }

    /// Whether the configuration names no node at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

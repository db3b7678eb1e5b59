//! Cluster membership configurations, stored in the log (thesis chapter 4), and the
//! changes a leader may make to them (thesis §4.1 single-server changes, §4.3 joint
//! consensus).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::quorum::{JointQuorum, MajorityQuorum};
use crate::types::NodeId;

/// How to reach a member, carried in the membership entries so that every node learns
/// it from the log and from snapshots.
///
/// `addr` is the member's Raft address in the form the application's
/// [`Network`](crate::Network) understands (for the TCP transport, `host:port`); `data`
/// holds whatever else the application wants every node to know about it (the example
/// apps keep the HTTP address under `"http"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The member's Raft address.
    pub addr: String,
    /// Application-defined attributes.
    pub data: BTreeMap<String, String>,
}

impl NodeInfo {
    /// A member reachable at `addr`, with no attributes.
    pub fn new(addr: impl Into<String>) -> Self {
        NodeInfo { addr: addr.into(), data: BTreeMap::new() }
    }

    /// Adds the attribute `key` = `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }
}

/// A membership configuration: the voters (possibly a joint configuration of an
/// outgoing and an incoming set, thesis §4.3), the non-voting learners, and how to reach
/// each of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// During joint consensus, the voters of the outgoing configuration; decisions need a
    /// majority of both sets.
    pub voters_outgoing: Option<BTreeSet<NodeId>>,
    /// Nodes that receive the log but neither vote nor count toward commitment.
    pub learners: BTreeSet<NodeId>,
    /// How to reach members, by id. A member may be missing (a cluster bootstrapped from
    /// ids alone, whose addresses the application knows otherwise); no id outside the
    /// configuration is kept.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
}

/// A change of membership that a leader is asked to make
/// ([`RaftCore::change_membership`](crate::core::RaftCore::change_membership)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChange {
    /// Adds a learner, or updates the address of a learner or voter.
    AddLearner {
        /// The new member.
        id: NodeId,
        /// How to reach it.
        node: NodeInfo,
    },
    /// Makes `voters` the voters: learners named are promoted, voters not named are
    /// removed. One voter added or removed is a single-server change (thesis §4.1); any
    /// other goes through the joint configuration (thesis §4.3) and then, automatically,
    /// to the new one.
    SetVoters {
        /// The voters of the new configuration.
        voters: BTreeSet<NodeId>,
    },
    /// Removes a voter or a learner.
    Remove {
        /// The member to remove.
        id: NodeId,
    },
}

/// Why a membership change cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConfigError {
    /// This node is not the leader; the leader, if known.
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    /// A change is in progress: the latest configuration is not committed yet, or is
    /// joint (thesis §4.1: one change at a time).
    #[error("another membership change is in progress")]
    InProgress,
    /// A leadership transfer is in progress.
    #[error("a leadership transfer is in progress")]
    Transferring,
    /// The new configuration would have no voter.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// A voter named is not a member: it must be added as a learner first.
    #[error("node {0} is not a member; add it as a learner first")]
    UnknownNode(NodeId),
    /// The id cannot be a member (0 is reserved).
    #[error("node id {0} is reserved")]
    InvalidId(NodeId),
    /// The change changes nothing.
    #[error("the configuration already is what the change asks for")]
    NoChange,
    /// This node has just become leader and has not yet committed an entry of its own
    /// term (the 2015 correction to thesis §4.1: no change before the leader's first
    /// commit). Transient: [`Raft`](crate::Raft)'s membership calls wait for it.
    #[error("the new leader has not yet committed an entry of its term")]
    NotReady,
}

impl Membership {
    /// A simple configuration made of `voters`.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            voters_outgoing: None,
            learners: BTreeSet::new(),
            nodes: BTreeMap::new(),
        }
    }

    /// A simple configuration of the voters in `nodes`, with their addresses.
    pub fn with_nodes(nodes: impl IntoIterator<Item = (NodeId, NodeInfo)>) -> Self {
        let nodes: BTreeMap<NodeId, NodeInfo> = nodes.into_iter().collect();
        Membership { voters: nodes.keys().copied().collect(), voters_outgoing: None, learners: BTreeSet::new(), nodes }
    }

    /// Whether this is a joint configuration (thesis §4.3).
    pub fn is_joint(&self) -> bool {
        self.voters_outgoing.is_some()
    }

    /// Whether `id` is a member: a voter of either half or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// The configuration that leaves a joint one: the incoming voters alone. A simple
    /// configuration is returned as it is.
    pub fn leave_joint(&self) -> Membership {
        let mut m = self.clone();
        m.voters_outgoing = None;
        m.retain_known_nodes();
        m
    }

    /// The configuration `change` leads to from this one (for a change of several
    /// voters, the joint configuration; [`Membership::leave_joint`] gives the final
    /// one). This one must not be joint.
    pub fn apply(&self, change: &ConfigChange) -> Result<Membership, ConfigError> {
        if self.is_joint() {
            return Err(ConfigError::InProgress);
        }
        let mut m = self.clone();
        match change {
            ConfigChange::AddLearner { id, node } => {
                if *id == 0 {
                    return Err(ConfigError::InvalidId(0));
                }
                if self.contains(*id) && self.nodes.get(id) == Some(node) {
                    return Err(ConfigError::NoChange);
                }
                if !self.is_voter(*id) {
                    m.learners.insert(*id);
                }
                m.nodes.insert(*id, node.clone());
            }
            ConfigChange::Remove { id } => {
                if !self.contains(*id) {
                    return Err(ConfigError::NoChange);
                }
                m.learners.remove(id);
                m.voters.remove(id);
                if m.voters.is_empty() {
                    return Err(ConfigError::NoVoters);
                }
            }
            ConfigChange::SetVoters { voters } => {
                if voters.is_empty() {
                    return Err(ConfigError::NoVoters);
                }
                if let Some(&unknown) = voters.iter().find(|&&v| !self.contains(v)) {
                    return Err(ConfigError::UnknownNode(unknown));
                }
                if *voters == self.voters {
                    return Err(ConfigError::NoChange);
                }
                let changed = voters.symmetric_difference(&self.voters).count();
                m.learners.retain(|l| !voters.contains(l));
                m.voters = voters.clone();
                if changed > 1 {
                    m.voters_outgoing = Some(self.voters.clone());
                }
            }
        }
        m.retain_known_nodes();
        Ok(m)
    }

    /// Drops the addresses of ids that are no longer members.
    fn retain_known_nodes(&mut self) {
        let all = self.all_nodes();
        self.nodes.retain(|id, _| all.contains(id));
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

    /// The number of node ids named in the configuration (with repeats across halves;
    /// addresses not counted).
    pub fn len(&self) -> usize {
        self.voters.len() + self.voters_outgoing.as_ref().map_or(0, |o| o.len()) + self.learners.len()
    }

    /// Whether the configuration names no node at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

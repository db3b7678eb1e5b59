//! [`Status`]: a node's externally visible state, one type for the core
//! ([`RaftCore::status`](crate::core::RaftCore::status)) and the running node
//! ([`Raft::status`](crate::Raft::status)).

use std::collections::BTreeMap;

use crate::core::Role;
use crate::membership::Membership;
use crate::types::{LogId, LogIndex, NodeId, Term};

/// A node's externally visible state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Whether this node is a voter in its current configuration (a non-voter is a
    /// learner).
    pub is_voter: bool,
    /// Current term.
    pub term: Term,
    /// The vote cast in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// The leader of the current term, if known.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: LogIndex,
    /// Highest index applied to the state machine.
    pub applied_index: LogIndex,
    /// Index of the last log entry.
    pub last_log_index: LogIndex,
    /// Term of the last log entry.
    pub last_log_term: Term,
    /// Highest index durable in the local store.
    pub durable_index: LogIndex,
    /// The membership configuration in effect.
    pub membership: Membership,
    /// Index of the membership entry in effect (0: none since the start of the log
    /// this node knows). The configuration is committed once `commit_index` reaches it.
    pub config_index: LogIndex,
    /// Leader: the target of the leadership transfer in progress.
    pub transferring_to: Option<NodeId>,
    /// When leader: each peer's match index (empty otherwise).
    pub match_index: BTreeMap<NodeId, LogIndex>,
    /// Log entries held in memory by the protocol core (the rest is only in the store).
    pub cached_entries: usize,
    /// The last index the latest durable snapshot covers (0 without one).
    pub snapshot_index: LogIndex,
    /// The first index the log holds: entries before it were purged after a snapshot.
    pub first_log_index: LogIndex,
    /// Set when the node stopped after a fatal error.
    pub fatal_error: Option<String>,
    /// Whether the node has stopped.
    pub stopped: bool,
}

impl Status {
    /// The id (index and term) of the last log entry.
    pub fn last_log(&self) -> LogId {
        LogId { term: self.last_log_term, index: self.last_log_index }
    }
}

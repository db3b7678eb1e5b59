//! [`Counters`] and [`Metrics`]: what a node's protocol has done since it started, for
//! operators and programs that watch it (see [`Raft::metrics`](crate::Raft::metrics)).
//!
//! The core keeps the counters as plain integers in its own state: no registry, no
//! clock, nothing global, so it stays deterministic. They count from 0 at every start
//! (they are not persisted); a monitoring system treats a drop as a restart, as it does
//! for any process counter.

use crate::status::Status;

/// Event counts of one node since it started. Every field only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pre-vote rounds this node started (thesis §9.6).
    pub pre_votes_started: u64,
    /// Elections this node started: terms it became a candidate in (paper §5.2).
    pub elections_started: u64,
    /// Times this node became leader.
    pub became_leader: u64,
    /// Times the leader this node knows changed to another known node (itself
    /// included); losing a leader without learning a new one is not counted.
    pub leader_changes: u64,
    /// Client commands appended to the log as leader.
    pub proposals_appended: u64,
    /// Client commands this node forwarded to the leader as a follower.
    pub proposals_forwarded: u64,
    /// Proposals refused because this node was not the leader.
    pub proposals_refused_not_leader: u64,
    /// Proposals refused because too many entries were uncommitted (back-pressure).
    pub proposals_refused_overloaded: u64,
    /// Read-index confirmation rounds started as leader (each serves a batch of reads).
    pub read_index_rounds: u64,
    /// Snapshots this node took of its own state machine.
    pub snapshots_taken: u64,
    /// Snapshot transfers started to followers behind the purge point.
    pub snapshots_sent: u64,
    /// Bytes of snapshot chunks sent to followers.
    pub snapshot_bytes_sent: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Bytes of snapshot chunks received in order from a leader.
    pub snapshot_bytes_received: u64,
}

/// Everything [`Raft::metrics`](crate::Raft::metrics) reports: where the node is
/// ([`Status`]: role, term, leader, indexes, each peer's match index when leader) and
/// what it has done ([`Counters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// Where the node is now.
    pub status: Status,
    /// What it has done since it started.
    pub counters: Counters,
}

impl Metrics {
    /// When leader: how many entries each peer's log is behind this node's last one
    /// (empty otherwise).
    pub fn replication_lag(&self) -> impl Iterator<Item = (crate::NodeId, u64)> + '_ {
        let last = self.status.last_log_index;
        self.status.match_index.iter().map(move |(&id, &m)| (id, last.saturating_sub(m)))
    }
}

//! Node configuration.

use std::time::Duration;

use crate::error::StartError;

/// Tunables of one node. The defaults suit a LAN or a single machine.
#[derive(Clone, Debug)]
pub struct Config {
    /// Election timeouts are drawn uniformly from `[election_timeout_min,
    /// election_timeout_max)` (paper §5.2).
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// How often a leader sends heartbeats. Must be well below `election_timeout_min`.
    pub heartbeat_interval: Duration,
    /// Run a pre-vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a majority within an election
    /// timeout (thesis §6.2).
    pub check_quorum: bool,
    /// Most entries in one AppendEntries message.
    pub max_entries_per_message: usize,
    /// Most bytes of entries in one AppendEntries message (one entry is always allowed).
    pub max_bytes_per_message: usize,
    /// Most AppendEntries messages in flight to one peer.
    pub max_inflight_messages: usize,
    /// Most bytes of entries in flight to one peer.
    pub max_inflight_bytes: usize,
    /// Most batches of proposals a follower has forwarded to the leader and not yet had
    /// answered. Proposals made on the follower meanwhile wait and leave together as one
    /// batch, so under load a follower sends fewer, larger forwards (and the leader
    /// fewer answers); with fewer batches in flight nothing waits. A batch unanswered for
    /// two heartbeat intervals no longer counts, as its answer may have been lost.
    pub max_forwards_in_flight: usize,
    /// Most proposals a leader accepts that are not yet committed; more are refused
    /// with back-pressure rather than growing memory without bound.
    pub max_uncommitted_entries: usize,
    /// Entries beyond what is applied that a leader keeps in memory for a lagging peer;
    /// a peer further behind is served by reading the store. Bounds memory when a peer is
    /// down.
    pub max_cached_lag: u64,
    /// Take a snapshot once this many entries were applied since the last one (paper §7);
    /// 0 disables this trigger.
    pub snapshot_after_entries: u64,
    /// Take a snapshot once the entries applied since the last one hold this many bytes
    /// (commands and entry overhead, as [`Entry::approx_size`](crate::Entry::approx_size)
    /// counts them); 0 disables this trigger.
    pub snapshot_after_bytes: u64,
    /// After a snapshot, keep this many entries before its last one in the log, so that a
    /// follower only a little behind catches up from the log rather than by a snapshot.
    pub snapshot_keep_entries: u64,
    /// The size of one InstallSnapshot chunk.
    pub snapshot_chunk_size: usize,
    /// Most InstallSnapshot chunks in flight to one peer.
    pub snapshot_max_inflight_chunks: usize,
    /// A learner counts as caught up, and may be made a voter
    /// ([`Raft::change_voters`](crate::Raft::change_voters)), once its log is within this
    /// many entries of the leader's.
    pub learner_catch_up_entries: u64,
    /// Seed for the random election timeouts; `None` draws one from the OS.
    pub rng_seed: Option<u64>,
    /// How long [`Raft::propose`](crate::Raft::propose) and
    /// [`Raft::read`](crate::Raft::read) wait for an answer, including the time spent
    /// finding a leader, before they give up with a timeout error.
    pub request_timeout: Duration,
    /// A client session ([`crate::session`]) unused for this long is dropped. The leader
    /// puts its value into each session entry it appends, so replicas with different
    /// settings still expire the same sessions.
    pub session_idle_timeout: Duration,
    /// Most client sessions the replicated table holds; beyond it the least recently
    /// active are dropped. Stamped into the log like `session_idle_timeout`.
    pub max_sessions: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            pre_vote: true,
            check_quorum: true,
            max_entries_per_message: 4096,
            max_bytes_per_message: 1 << 20,
            max_inflight_messages: 64,
            max_inflight_bytes: 16 << 20,
            max_forwards_in_flight: 2,
            max_uncommitted_entries: 1 << 20,
            max_cached_lag: 1 << 16,
            snapshot_after_entries: 100_000,
            snapshot_after_bytes: 256 << 20,
            snapshot_keep_entries: 5_000,
            snapshot_chunk_size: 1 << 20,
            snapshot_max_inflight_chunks: 4,
            learner_catch_up_entries: 1000,
            rng_seed: None,
            request_timeout: Duration::from_secs(5),
            session_idle_timeout: Duration::from_secs(3600),
            max_sessions: 100_000,
        }
    }
}

impl Config {
    /// Checks the configuration for values that cannot work.
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |s: &str| Err(StartError::Config(s.to_string()));
        if self.election_timeout_min.is_zero() || self.election_timeout_max <= self.election_timeout_min {
            return bad("need 0 < election_timeout_min < election_timeout_max");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.election_timeout_min {
            return bad("need 0 < heartbeat_interval < election_timeout_min");
        }
        if self.max_entries_per_message == 0 || self.max_bytes_per_message == 0 {
            return bad("message limits must be positive");
        }
        if self.max_inflight_messages == 0 || self.max_inflight_bytes == 0 {
            return bad("in-flight limits must be positive");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be positive");
        }
        if self.max_sessions == 0 || self.session_idle_timeout.is_zero() {
            return bad("max_sessions and session_idle_timeout must be positive");
        }
        if self.max_forwards_in_flight == 0 {
            return bad("max_forwards_in_flight must be positive");
        }
        if self.max_uncommitted_entries == 0 {
            return bad("max_uncommitted_entries must be positive");
        }
        if self.snapshot_chunk_size == 0 || self.snapshot_max_inflight_chunks == 0 {
            return bad("snapshot_chunk_size and snapshot_max_inflight_chunks must be positive");
        }
        Ok(())
    }
}

//! Error types, one enum per boundary.

use crate::types::NodeId;

/// An error from a [`LogStore`](crate::LogStore). After any error from a write
/// (`append`, `truncate`, `save_hard_state`) the node stops: a store that failed to
/// persist cannot be trusted to know what is durable (fail-stop).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Data read back is corrupt.
    #[error("storage corruption: {0}")]
    Corrupt(String),
    /// A caller broke the contract (e.g. a non-contiguous append).
    #[error("invalid storage request: {0}")]
    Invalid(String),
    /// The requested entries are no longer in the log (purged) or not yet in it.
    #[error("entries {start}..{end} are not available in the log")]
    Unavailable {
        /// First requested index.
        start: u64,
        /// One past the last requested index.
        end: u64,
    },
    /// The store refuses further writes after an earlier failure.
    #[error("store has failed earlier and refuses writes: {0}")]
    Failed(String),
}

/// An error from a [`Network`](crate::Network) send. Raft tolerates loss, so the driver
/// logs these and carries on.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The peer is not reachable now.
    #[error("peer {0} is unreachable")]
    Unreachable(NodeId),
    /// The peer is not known to the network.
    #[error("peer {0} is unknown")]
    UnknownPeer(NodeId),
    /// Any other transport failure.
    #[error("transport error: {0}")]
    Other(String),
}

/// A message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid message of a known version.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Why a wait on a node's status ([`Raft::wait_for`](crate::Raft::wait_for) and the
/// helpers beside it) ended without the condition holding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The condition did not hold within the timeout; the last status seen is kept.
    #[error("timed out waiting for {what}; last status: {last:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The node's status when the wait gave up.
        last: Box<crate::Status>,
    },
    /// The node stopped (shut down, or a fatal error) before the condition held.
    #[error("the node stopped while waiting for {what}")]
    Stopped {
        /// What was waited for.
        what: String,
    },
}

/// An error returned to a client of the [`Raft`](crate::Raft) handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// This node is not the leader. `leader` is the leader this node knows of, if any.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// The proposal was appended but lost when leadership changed: a different entry
    /// was committed at its position, so it was not applied. The caller may retry.
    #[error("proposal was dropped by a leadership change")]
    Dropped,
    /// No leader was known within the request timeout. A proposal was not appended
    /// anywhere; a read was not served.
    #[error("no leader is known within the request timeout")]
    NoLeader,
    /// No answer came within the request timeout. A proposal may or may not take effect.
    #[error("no answer within the request timeout; the outcome is unknown")]
    Timeout,
    /// A proposal's outcome could not be observed here: the leader it was forwarded to
    /// stopped being the leader this node follows before answering, or a snapshot
    /// replaced the state before its entry was applied. It may or may not have taken
    /// effect. The session calls retry this themselves under the same (client, seq)
    /// until the request timeout, and so does [`Raft::propose`](crate::Raft::propose)
    /// for a command it forwarded; its callers see it only for a command this node
    /// appended as leader (outside any session, see there) and, having lost leadership,
    /// replaced by a snapshot from the new leader before applying it.
    #[error("the proposal's outcome could not be observed; it may have taken effect")]
    Indeterminate,
    /// The leader has too many uncommitted entries; retry later.
    #[error("leader is overloaded with uncommitted proposals")]
    Overloaded,
    /// The node is shutting down or has stopped.
    #[error("raft node is shutting down")]
    ShuttingDown,
    /// The command could not be encoded.
    #[error("command could not be encoded: {0}")]
    Encode(String),
    /// The node stopped after a fatal storage error.
    #[error("raft node stopped after a fatal error: {0}")]
    Fatal(String),
    /// The registered client session is not in the session table: it expired (idle past
    /// `Config::session_idle_timeout`, or dropped beyond `Config::max_sessions`) or was
    /// never opened. The command was not applied; earlier commands of the session may
    /// or may not have been. Open a new session.
    #[error("client session {client} is not open (it expired or was never opened)")]
    SessionExpired {
        /// The session's id.
        client: u64,
    },
    /// The command's sequence number is at or below what the client acknowledged: it
    /// was applied before and its response is gone. It was not applied again.
    #[error("request {seq} of client session {client} was acknowledged already; not applied again")]
    StaleRequest {
        /// The session's id.
        client: u64,
        /// The command's sequence number.
        seq: u64,
    },
    /// An idempotency key ([`Raft::propose_once`](crate::Raft::propose_once)) was used
    /// before for another command (its encoding differs): this one was not applied, and
    /// the first one's response is not given for it.
    #[error("the idempotency key of client session {client} was used for another request; not applied")]
    KeyReused {
        /// The key's session ([`crate::session::client_for_key`]).
        client: u64,
    },
}

/// An error starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `bootstrap` was called on a store that already holds state.
    #[error("store already holds a log or term; restart it instead of bootstrapping")]
    AlreadyInitialized,
    /// A state machine snapshot could not be restored.
    #[error("state machine error: {0}")]
    StateMachine(String),
}

/// Why a membership change or a leadership transfer asked of a [`Raft`](crate::Raft)
/// node did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The leader refused the change (not the leader, another change in progress, a
    /// configuration without voters, an unknown node, ...).
    #[error(transparent)]
    Config(#[from] crate::membership::ConfigError),
    /// The leader refused the transfer.
    #[error(transparent)]
    Transfer(#[from] crate::core::TransferError),
    /// A learner to be promoted did not come within the allowed lag of the leader's log
    /// in time ([`Config::learner_catch_up_entries`](crate::Config::learner_catch_up_entries)).
    #[error("learner {id} did not catch up in time: {behind} entries behind")]
    NotCaughtUp {
        /// The learner.
        id: crate::types::NodeId,
        /// How far behind the leader's last entry it was when the wait gave up.
        behind: u64,
    },
    /// The leader gave up the transfer after an election timeout: the target did not win.
    #[error("the leadership transfer to node {0} was given up: the target did not win")]
    TransferAborted(crate::types::NodeId),
    /// The change was made but not seen committed within the timeout (or this node lost
    /// leadership meanwhile); it may still take effect.
    #[error("the change was not seen to complete within the timeout; it may still take effect")]
    Timeout,
    /// The node is shutting down or has stopped.
    #[error("raft node is shutting down")]
    ShuttingDown,
}

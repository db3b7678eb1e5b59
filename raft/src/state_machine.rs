//! The [`StateMachine`] trait: the user's replicated state.

use serde::{de::DeserializeOwned, Serialize};

use crate::types::LogIndex;

/// The application state that Raft replicates.
///
/// # Contract
///
/// - `apply` is called for every committed command, in log order, exactly once per
///   index over the life of the state machine value, on every node. It must be
///   deterministic: the same commands in the same order give the same state and
///   responses everywhere. Entries without a command (a new leader's blank entry, a
///   membership change) are not passed to it, so consecutive calls may skip indexes.
/// - A committed command that no longer decodes as `Command` (a format change without a
///   migration) is skipped on every node alike and logged; its proposer gets an error.
/// - `apply` runs on the driver's apply task, never on the protocol loop, so a slow
///   state machine does not delay heartbeats; it still delays later responses.
/// - A node that restarts without a snapshot rebuilds its state by applying the log from
///   the start to a fresh state machine value.
/// - `snapshot` captures the state after the last applied index; `restore` replaces the
///   whole state with a snapshot's. Log compaction uses them.
pub trait StateMachine: Send + 'static {
    /// A command proposed by a client and applied once committed.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// The result of applying a command, returned to the proposer.
    type Response: Send + 'static;

    /// Applies the committed `command` at log position `index`.
    fn apply(&mut self, index: LogIndex, command: Self::Command) -> Self::Response;

    /// Serializes the current state.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the current state with one produced by [`StateMachine::snapshot`].
    /// An error leaves the state machine unchanged.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

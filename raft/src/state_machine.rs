//! The [`StateMachine`] trait: the user's replicated state.

use std::io::{self, Read, Write};

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
///   membership change, a session opened) are not passed to it, so consecutive calls
///   may skip indexes; nor is a client-session command whose (client, seq) was applied
///   before ([`crate::session`]): its proposer gets the response recorded then, which
///   is why `Response` is serializable.
/// - A committed command that no longer decodes as `Command` (a format change without a
///   migration) is skipped on every node alike and logged; its proposer gets an error.
/// - `apply` runs on the driver's apply task, never on the protocol loop, so a slow
///   state machine does not delay heartbeats; it still delays later responses.
/// - **Snapshots** (paper §7). When the log grows past the [`Config`] thresholds (or on
///   [`Raft::trigger_snapshot`]), the apply task calls `snapshot` between two `apply`
///   calls: it must return quickly a point-in-time view of the state after the last
///   applied index (a clone of a persistent map, a copy-on-write handle, a small copy).
///   The view is then passed to `write_snapshot` on a blocking thread
///   ([`Runtime::spawn_blocking_task`]) while `apply` goes on with later entries; it must
///   stream the view to `out` (in pieces, not as one buffer the size of the state). The
///   framework stores the stream with the last applied index and term and the
///   membership, checksums it, and purges the log it covers.
/// - `restore` replaces the whole state with one read from `input`, a stream written by
///   `write_snapshot` (possibly on another node, so the format must not depend on the
///   machine). It is called on the apply task when a node restarts from a snapshot or
///   installs one sent by the leader; `apply` then continues from the entry after the
///   snapshot. It should read `input` to its end: the framework's reader checks the
///   stream's checksum at the end and fails that read if the data is torn or corrupt.
///   On error the state must be left unchanged (build the new state aside and swap it
///   in), and the node stops with a fatal error rather than run with a wrong state.
/// - A node that restarts without a snapshot rebuilds its state by applying the log from
///   the start to the fresh state machine value it was given.
///
/// [`Config`]: crate::Config
/// [`Raft::trigger_snapshot`]: crate::Raft::trigger_snapshot
/// [`Runtime::spawn_blocking_task`]: crate::Runtime::spawn_blocking_task
pub trait StateMachine: Send + 'static {
    /// A command proposed by a client and applied once committed.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// The result of applying a command, returned to the proposer. It is serializable
    /// because the client-session layer records it ([`crate::session`]): a retried
    /// command is answered with the recorded response, on any node, after restarts.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Applies the committed `command` at log position `index`.
    fn apply(&mut self, index: LogIndex, command: Self::Command) -> Self::Response;

    /// A point-in-time view of the state, taken by [`snapshot`](Self::snapshot) and
    /// written out by [`write_snapshot`](Self::write_snapshot).
    type Snapshot: Send + 'static;

    /// Returns a view of the current state, quickly (see the trait docs).
    fn snapshot(&self) -> Self::Snapshot;

    /// Writes `snapshot` to `out` in the form [`restore`](Self::restore) reads. Runs on a
    /// blocking thread; an error abandons this snapshot (the previous one stays).
    fn write_snapshot(snapshot: Self::Snapshot, out: &mut dyn Write) -> io::Result<()>;

    /// Replaces the current state with one written by
    /// [`write_snapshot`](Self::write_snapshot), read from `input` to its end. An error
    /// leaves the state machine unchanged.
    fn restore(&mut self, input: &mut dyn Read) -> Result<(), String>;
}

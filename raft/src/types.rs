//! Basic data types shared by the core, the driver and the traits.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::membership::Membership;
use crate::session::{SessionEntry, SessionOp};

/// The identity of a node in the cluster. `0` is reserved for "none".
pub type NodeId = u64;

/// A Raft term (paper §5.1).
pub type Term = u64;

/// A log index. Index `0` is the empty position before the first entry.
pub type LogIndex = u64;

/// A point in time on a [`Runtime`](crate::Runtime)'s clock, in nanoseconds since the
/// runtime's epoch.
///
/// The core never reads a clock: time enters only as an `Instant` argument, which is
/// what makes virtual-time simulation possible.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The runtime's epoch.
    pub const ZERO: Instant = Instant(0);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the far future.
    // Deliberately an inherent method rather than `std::ops::Add`: it saturates, which
    // the `+` operator would not suggest.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: std::time::Duration) -> Self {
        Instant(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000_000, (self.0 % 1_000_000_000) / 1000)
    }
}

/// The state a node must persist before it acts on it (paper figure 2): the current
/// term and the candidate voted for in that term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// An empty entry; a new leader appends one to commit entries of earlier terms
    /// (thesis §3.6.2 / paper §8).
    Blank,
    /// An application command, encoded by the driver from `StateMachine::Command`.
    Command(#[serde(deserialize_with = "crate::shared_bytes::bytes")] Bytes),
    /// A membership configuration; it takes effect as soon as it is in a log
    /// (thesis §4.1).
    Membership(Box<Membership>),
    /// A client session operation: a command applied at most once per (client, seq), or
    /// a session opened ([`crate::session`]). Shared, so that the many copies of an
    /// entry (the log cache, messages to each peer, the store's batch, the apply task)
    /// cost a reference count each, not an allocation.
    Session(std::sync::Arc<SessionEntry>),
}

/// What a client proposes: a command, or an operation of the session layer. The leader
/// stamps a session operation with its clock when it appends it ([`SessionEntry`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    /// A command applied once per entry.
    Command(#[serde(deserialize_with = "crate::shared_bytes::bytes")] Bytes),
    /// A session operation.
    Session(SessionOp),
}

impl From<Bytes> for Proposal {
    fn from(command: Bytes) -> Self {
        Proposal::Command(command)
    }
}

impl From<SessionOp> for Proposal {
    fn from(op: SessionOp) -> Self {
        Proposal::Session(op)
    }
}

impl Proposal {
    /// The bytes of the command it carries (0 for none).
    pub fn command_len(&self) -> usize {
        match self {
            Proposal::Command(c) => c.len(),
            Proposal::Session(op) => op.command_len(),
        }
    }
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The position of the entry in the log.
    pub index: LogIndex,
    /// The entry's content.
    pub payload: EntryPayload,
}

impl Entry {
    /// A rough size in bytes, used for flow control (in-flight byte budget, message size).
    pub fn approx_size(&self) -> usize {
        24 + match &self.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Command(b) => b.len(),
            EntryPayload::Membership(m) => 8 * m.len(),
            EntryPayload::Session(s) => 32 + s.op.command_len(),
        }
    }
}

/// The position of an entry: its index and term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogId {
    /// The entry's term.
    pub term: Term,
    /// The entry's index.
    pub index: LogIndex,
}

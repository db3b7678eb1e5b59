//! The core's contract with its driver: the [`Input`]s it takes, the [`Action`]s it
//! asks for, and the order in which they must be carried out.
//!
//! # Calling the core
//!
//! The core has four kinds of methods:
//!
//! - **getters** (`role`, `term`, `status`, ...) read its state and change nothing;
//! - **inputs**: [`RaftCore::step`] with an [`Input`], and the client calls
//!   [`RaftCore::propose`], [`RaftCore::forward`] and [`RaftCore::read_index`];
//! - **[`RaftCore::take_actions`]**, called after a batch of inputs: it runs the deferred
//!   work (batched replication, commitment, the persist request, applying, timers) and
//!   returns the actions;
//! - nothing else: the core never calls out.
//!
//! Every input and `take_actions` gets the current time `now`, which must never go
//! backwards. After each batch of inputs the driver calls `take_actions` once and carries
//! out the actions **in the order given**, with these rules:
//!
//! - [`Action::Persist`] requests go to the store in `seq` order; each is reported with
//!   [`Input::Persisted`] only once durable (a later `seq` implies the earlier ones);
//! - [`Action::Send`] is best effort; messages to one peer keep their order;
//! - [`Action::Apply`] batches go to the state machine in order, each reported with
//!   [`Input::Applied`];
//! - [`Action::SetTimer`] replaces the previous deadline: the driver delivers
//!   [`Input::Tick`] at or after it;
//! - [`Action::LoadEntries`] is answered with [`Input::EntriesLoaded`] in the same term,
//!   [`Action::LoadSnapshotChunk`] with [`Input::SnapshotChunkLoaded`];
//! - [`Action::TakeSnapshot`] and [`Action::RestoreSnapshot`] go to the state machine in
//!   order with the [`Action::Apply`] batches; a snapshot taken is reported with
//!   [`Input::SnapshotTaken`], a restore with [`Input::Applied`];
//! - [`Action::PurgeLog`] and [`Action::WriteSnapshotChunk`] go to the store in order with
//!   the persist requests; a purge is reported with [`Input::LogPurged`], a chunk written
//!   with [`Input::SnapshotChunkWritten`];
//! - the client answers ([`Action::Forwarded`], [`Action::ReadReady`],
//!   [`Action::ReadFailed`]) go to the callers waiting on the given id.

use bytes::Bytes;

use crate::message::Message;
use crate::snapshot::SnapshotMeta;
use crate::types::{Entry, HardState, Instant, LogId, LogIndex, NodeId, Term};

/// An input to the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// A message from a peer.
    Message(Message),
    /// Time has passed; deadlines at or before `now` fire.
    Tick,
    /// Every persist request up to and including `seq` is durable.
    Persisted {
        /// The highest durable persist request.
        seq: u64,
    },
    /// The state machine has applied every entry up to `index`.
    Applied {
        /// The last applied index.
        index: LogIndex,
    },
    /// The answer to [`Action::LoadEntries`].
    EntriesLoaded {
        /// The peer the entries are for.
        peer: NodeId,
        /// The term in which they were requested.
        term: Term,
        /// The entries read, or why the read failed.
        entries: Result<Vec<Entry>, String>,
    },
    /// The answer to [`Action::TakeSnapshot`]: the snapshot is durable (or why not).
    SnapshotTaken {
        /// The snapshot's metadata, or why it failed.
        result: Result<SnapshotMeta, String>,
    },
    /// The answer to [`Action::PurgeLog`]: the log now starts after `prev`.
    LogPurged {
        /// The last purged entry.
        prev: LogId,
    },
    /// The answer to [`Action::LoadSnapshotChunk`].
    SnapshotChunkLoaded {
        /// The peer the chunk is for.
        peer: NodeId,
        /// The term in which it was requested.
        term: Term,
        /// The snapshot's last entry.
        last: LogId,
        /// Where the chunk starts.
        offset: u64,
        /// The bytes read, or why the read failed.
        data: Result<Bytes, String>,
    },
    /// A chunk of [`Action::WriteSnapshotChunk`] was written (not necessarily synced):
    /// the follower's answer to the leader goes out only now, so that a leader never
    /// has more chunks on their way to a follower's store than its window, however slow
    /// that store is.
    SnapshotChunkWritten {
        /// The snapshot being received.
        last: LogId,
        /// Where the written chunk ends.
        next: u64,
    },
}

/// A request to make state durable, executed by the driver against the
/// [`LogStore`](crate::LogStore) in `seq` order: first the hard state, then the
/// truncation, then the append. Report completion with [`Input::Persisted`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistRequest {
    /// Sequence number; requests must complete in order.
    pub seq: u64,
    /// A new term and vote to save.
    pub hard_state: Option<HardState>,
    /// Remove every entry with index `>=` this.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append after the truncation.
    pub entries: Vec<Entry>,
    /// Last: finish the snapshot received through [`Action::WriteSnapshotChunk`] (it must
    /// have this size and checksum) and reset the log to it
    /// ([`LogStore::reset_to`](crate::LogStore::reset_to)).
    pub install: Option<SnapshotMeta>,
}

/// An output of the core, for the driver to carry out.
#[derive(Clone, Debug)]
pub enum Action {
    /// Persist state, then report [`Input::Persisted`].
    Persist(PersistRequest),
    /// Send a message to a peer (best effort).
    Send(Message),
    /// Apply these committed entries, in order, then report [`Input::Applied`].
    Apply(Vec<Entry>),
    /// Deliver [`Input::Tick`] at or after this time.
    SetTimer(Instant),
    /// The read with this id may be served once the state machine has applied `index`
    /// (see [`RaftCore::read_index`](super::RaftCore::read_index)).
    ReadReady {
        /// The id given to [`RaftCore::read_index`](super::RaftCore::read_index).
        id: u64,
        /// The read index.
        index: LogIndex,
    },
    /// The read with this id cannot be served by this request (leadership was lost or the
    /// asked node does not lead); the caller may retry.
    ReadFailed {
        /// The id given to [`RaftCore::read_index`](super::RaftCore::read_index).
        id: u64,
    },
    /// The leader's answer to commands forwarded with [`RaftCore::forward`](super::RaftCore::forward): the index of
    /// the first command and the term of the entries, or why they were refused.
    Forwarded {
        /// The id given to [`RaftCore::forward`](super::RaftCore::forward).
        id: u64,
        /// Where the commands were appended, or the refusal.
        result: Result<(LogIndex, Term), ProposeError>,
    },
    /// Read entries `start..end` from the store (they are no longer in the core's memory)
    /// and hand them back with [`Input::EntriesLoaded`], in the same `term`.
    LoadEntries {
        /// The peer that needs them.
        peer: NodeId,
        /// The leader's term at the request.
        term: Term,
        /// First index to read.
        start: LogIndex,
        /// One past the last index to read.
        end: LogIndex,
    },
    /// Once the state machine has applied every batch before this action, take a
    /// snapshot of it and store it; report [`Input::SnapshotTaken`].
    TakeSnapshot,
    /// Remove the log's entries up to `upto` from the store (a snapshot covers them);
    /// report the new start with [`Input::LogPurged`].
    PurgeLog {
        /// The last index to remove.
        upto: LogIndex,
    },
    /// Read `len` bytes of the snapshot `last` from `offset` and hand them back with
    /// [`Input::SnapshotChunkLoaded`].
    LoadSnapshotChunk {
        /// The peer the chunk is for.
        peer: NodeId,
        /// The leader's term at the request.
        term: Term,
        /// The snapshot's last entry.
        last: LogId,
        /// Where to start.
        offset: u64,
        /// How many bytes (fewer at the end of the data).
        len: usize,
    },
    /// Write a chunk of a snapshot being received to the store, after the chunks before
    /// it; offset 0 starts a new one (discarding any unfinished one).
    WriteSnapshotChunk {
        /// The snapshot being received.
        meta: SnapshotMeta,
        /// Where the chunk starts; chunks come in order.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Replace the state machine's state with the snapshot `meta` (now held by the
    /// store), after the batches before this action; then report [`Input::Applied`] with
    /// its last index.
    RestoreSnapshot {
        /// The snapshot to restore.
        meta: SnapshotMeta,
    },
}

/// Why a proposal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; the leader it knows of, if any.
    NotLeader(Option<NodeId>),
    /// Too many entries are appended but not yet committed.
    Overloaded,
    /// Only in [`Action::Forwarded`], for a retried forward: the leader has no record of
    /// it, so the commands may or may not have been appended (they were not appended
    /// again).
    OutcomeUnknown,
}

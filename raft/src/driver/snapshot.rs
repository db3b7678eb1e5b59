//! The driver's snapshot I/O (paper §7): taking a snapshot (the state machine's view is
//! taken on the apply task, written to the [`SnapshotStore`] on a blocking thread),
//! restoring one (on a blocking thread, the apply task waiting), reading chunks for a
//! peer, and writing the chunks of one being received (on the persist task, in order
//! with the log writes).
//!
//! # The snapshot stream
//!
//! What the store holds is the framework's part followed by the state machine's:
//!
//! ```text
//! magic "raftsnap" | version u8 = 3 | framework part length u64 LE | framework part | state machine stream
//! ```
//!
//! The framework part holds the replicated framework state: the client session table
//! ([`crate::session`]), postcard-encoded; since version 3 each session carries the
//! digest of an idempotency key's request. Version 2 (no digests) is still read, its
//! keys' requests without a digest, and version 1 (an empty framework part, from before
//! sessions) as an empty table.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use super::Event;
use crate::error::StoreError;
use crate::membership::Membership;
use crate::runtime::Runtime;
use crate::session::SessionTable;
use crate::snapshot::{SnapshotMeta, SnapshotStore, SnapshotWriter};
use crate::state_machine::StateMachine;
use crate::sync::lock;
use crate::types::{LogId, LogIndex, NodeId, Term};

const MAGIC: &[u8; 8] = b"raftsnap";
const VERSION: u8 = 3;
/// The largest framework part a reader accepts.
const MAX_FRAMEWORK_PART: u64 = 1 << 30;

/// Where the state machine stands: the last entry applied and the membership in effect
/// there (with the index of its entry), which a snapshot taken now records.
#[derive(Clone, Debug, Default)]
pub(super) struct Applied {
    pub(super) last: LogId,
    pub(super) membership: (LogIndex, Membership),
}

impl Applied {
    /// The position right after restoring `meta`.
    pub(super) fn at_snapshot(meta: &SnapshotMeta) -> Self {
        Applied { last: meta.last, membership: (meta.membership_index, meta.membership.clone()) }
    }
}

/// Writes the framework's part of the stream: the encoded session table.
fn write_header(out: &mut dyn Write, sessions: &[u8]) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&[VERSION])?;
    out.write_all(&(sessions.len() as u64).to_le_bytes())?;
    out.write_all(sessions)
}

/// Reads and checks the framework's part of the stream; returns the session table.
fn read_header(input: &mut dyn Read) -> Result<SessionTable, String> {
    let mut head = [0u8; 17];
    input.read_exact(&mut head).map_err(|e| format!("the snapshot's header cannot be read: {e}"))?;
    let (magic, rest) = head.split_at(8);
    let (version, len) = rest.split_at(1);
    if magic != MAGIC {
        return Err("the snapshot does not start with the framework's magic".into());
    }
    let version = version[0];
    if !(1..=VERSION).contains(&version) {
        return Err(format!("the snapshot has format version {version}; this build reads 1 to {VERSION}"));
    }
    let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
    if len > MAX_FRAMEWORK_PART {
        return Err(format!("the snapshot's framework part claims {len} bytes"));
    }
    if version == 1 {
        // Version 1 has nothing in it; skip whatever is there.
        io::copy(&mut input.take(len), &mut io::sink()).map_err(|e| format!("reading the snapshot: {e}"))?;
        return Ok(SessionTable::default());
    }
    let mut part = Vec::new();
    input.take(len).read_to_end(&mut part).map_err(|e| format!("reading the snapshot's session table: {e}"))?;
    if part.len() as u64 != len {
        return Err(format!("the snapshot's framework part ends after {} of {len} bytes", part.len()));
    }
    SessionTable::decode(&part, version)
}

/// Writes `view` as a snapshot at `position` on a blocking thread and reports it with
/// [`Event::SnapshotTaken`].
pub(super) fn write_in_background<SM: StateMachine, R: Runtime>(
    id: NodeId,
    rt: &R,
    view: SM::Snapshot,
    sessions: Vec<u8>,
    position: &Applied,
    snapshots: Arc<dyn SnapshotStore>,
    tx: mpsc::UnboundedSender<Event<SM>>,
) {
    let position = position.clone();
    drop(rt.spawn_blocking_task(async move {
        let result = write::<SM>(&*snapshots, view, &sessions, &position).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::warn!(node = id, error = %e, "writing a snapshot failed");
        }
        let _ = tx.unbounded_send(Event::SnapshotTaken(result));
    }));
}

fn write<SM: StateMachine>(
    snapshots: &dyn SnapshotStore,
    view: SM::Snapshot,
    sessions: &[u8],
    at: &Applied,
) -> Result<SnapshotMeta, StoreError> {
    if at.last.index == 0 {
        return Err(StoreError::Invalid("nothing was applied yet".into()));
    }
    let mut writer = snapshots.create(at.last, &at.membership.1, at.membership.0)?;
    write_header(&mut writer, sessions)?;
    SM::write_snapshot(view, &mut writer)?;
    writer.flush()?;
    writer.finish()
}

/// Restores the state machine from the snapshot `meta` on a blocking thread, and returns
/// the snapshot's session table with the metadata of the snapshot restored. That is
/// `meta`'s, unless the store no longer holds it because a newer one replaced it (a
/// second install finished before the apply task came to the first): then the newer one
/// is restored, as the core will ask next. Any other error is fatal for the node (the
/// state must not be half restored or stale).
pub(super) async fn restore<SM: StateMachine, R: Runtime>(
    rt: &R,
    sm: &Arc<Mutex<SM>>,
    snapshots: &Arc<dyn SnapshotStore>,
    meta: &SnapshotMeta,
) -> Result<(SessionTable, SnapshotMeta), String> {
    let (done_tx, done_rx) = oneshot::channel();
    let (sm, snapshots, meta) = (sm.clone(), snapshots.clone(), meta.clone());
    drop(rt.spawn_blocking_task(async move {
        let result = match restore_now(&sm, &*snapshots, &meta) {
            Err(RestoreError::Gone(e)) => match snapshots.latest() {
                Ok(Some(newer)) if newer.last.index > meta.last.index => {
                    restore_now(&sm, &*snapshots, &newer).map(|t| (t, newer)).map_err(RestoreError::into_message)
                }
                _ => Err(e),
            },
            other => other.map(|t| (t, meta)).map_err(RestoreError::into_message),
        };
        let _ = done_tx.send(result);
    }));
    done_rx.await.unwrap_or_else(|_| Err("the snapshot restore thread stopped".into()))
}

/// Why a restore failed: the store no longer holds the snapshot, or anything else.
enum RestoreError {
    Gone(String),
    Other(String),
}

impl RestoreError {
    fn into_message(self) -> String {
        match self {
            RestoreError::Gone(e) | RestoreError::Other(e) => e,
        }
    }
}

fn restore_now<SM: StateMachine>(
    sm: &Mutex<SM>,
    snapshots: &dyn SnapshotStore,
    meta: &SnapshotMeta,
) -> Result<SessionTable, RestoreError> {
    let fail = |e: String| format!("restoring the state machine from the snapshot at {:?} failed: {e}", meta.last);
    let mut input = snapshots.open(meta.last).map_err(|e| match e {
        StoreError::Unavailable { .. } => RestoreError::Gone(fail(e.to_string())),
        e => RestoreError::Other(fail(e.to_string())),
    })?;
    let other = |e: String| RestoreError::Other(fail(e));
    let sessions = read_header(&mut input).map_err(other)?;
    lock(sm).restore(&mut input).map_err(other)?;
    // The checksum is checked when the data ends: make sure the end was read.
    let mut rest = [0u8; 1];
    match input.read(&mut rest) {
        Ok(0) => Ok(sessions),
        Ok(_) => Err(other("the state machine did not read the whole snapshot".into())),
        Err(e) => Err(other(e.to_string())),
    }
}

/// The chunk reader: reads the chunks asked for, one at a time on a blocking thread, in
/// the order they were asked for (the core asks in offset order, and a follower takes
/// chunks only in order: parallel reads finishing out of order would make it drop
/// chunks until the leader sees the transfer stall), and reports each with
/// [`Event::ChunkLoaded`]. Ends when the protocol loop drops its sender.
pub(super) async fn chunk_task<SM: StateMachine, R: Runtime>(
    rt: R,
    snapshots: Arc<dyn SnapshotStore>,
    mut requests: mpsc::UnboundedReceiver<ChunkRequest>,
    tx: mpsc::UnboundedSender<Event<SM>>,
) {
    while let Some(request) = requests.next().await {
        let (snapshots, tx) = (snapshots.clone(), tx.clone());
        let (done_tx, done_rx) = oneshot::channel();
        drop(rt.spawn_blocking_task(async move {
            let ChunkRequest { peer, term, last, offset, len } = request;
            let data = snapshots.read_chunk(last, offset, len).map(Bytes::from).map_err(|e| e.to_string());
            let _ = tx.unbounded_send(Event::ChunkLoaded { peer, term, last, offset, data });
            let _ = done_tx.send(());
        }));
        if done_rx.await.is_err() {
            return;
        }
    }
}

/// A chunk to read for a peer.
pub(super) struct ChunkRequest {
    pub(super) peer: NodeId,
    pub(super) term: Term,
    pub(super) last: LogId,
    pub(super) offset: u64,
    pub(super) len: usize,
}

/// The snapshot being received, on the persist task.
#[derive(Default)]
pub(super) struct Receiving {
    current: Option<(SnapshotMeta, Box<dyn SnapshotWriter>)>,
}

impl Receiving {
    /// Writes a chunk; offset 0 starts a new snapshot, dropping an unfinished one.
    pub(super) fn write(
        &mut self,
        snapshots: &dyn SnapshotStore,
        meta: SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        if offset == 0 {
            self.current = None;
            let writer = snapshots.create(meta.last, &meta.membership, meta.membership_index)?;
            self.current = Some((meta.clone(), writer));
        }
        match &mut self.current {
            Some((m, w)) if *m == meta => Ok(w.write_all(data)?),
            _ => Err(StoreError::Invalid(format!("a chunk at {offset} of a snapshot not being received"))),
        }
    }

    /// Finishes the snapshot `meta`, checking that the store wrote what was received.
    pub(super) fn finish(&mut self, meta: &SnapshotMeta) -> Result<(), StoreError> {
        match self.current.take() {
            Some((m, mut w)) if m == *meta => {
                w.flush()?;
                let stored = w.finish()?;
                if stored.size != meta.size || stored.checksum != meta.checksum {
                    return Err(StoreError::Corrupt(format!(
                        "the store wrote {} bytes with checksum {:08x} for a snapshot of {} bytes with checksum {:08x}",
                        stored.size, stored.checksum, meta.size, meta.checksum
                    )));
                }
                Ok(())
            }
            _ => Err(StoreError::Invalid(format!("no snapshot at {:?} is being received", meta.last))),
        }
    }
}

/// Restores `sm` from the store's latest snapshot when a node starts, and returns it
/// with its session table.
pub(super) async fn restore_at_start<SM: StateMachine, R: Runtime>(
    rt: &R,
    sm: &Arc<Mutex<SM>>,
    snapshots: &Arc<dyn SnapshotStore>,
) -> Result<(Option<SnapshotMeta>, SessionTable), crate::error::StartError> {
    let snapshots2 = snapshots.clone();
    let (tx, rx) = oneshot::channel();
    drop(rt.spawn_blocking_task(async move {
        let _ = tx.send(snapshots2.latest());
    }));
    let latest = rx.await.map_err(|_| StoreError::Invalid("the snapshot thread stopped".into()))??;
    let mut sessions = SessionTable::default();
    if let Some(meta) = &latest {
        sessions = restore(rt, sm, snapshots, meta).await.map_err(crate::error::StartError::StateMachine)?.0;
    }
    Ok((latest, sessions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips_and_a_foreign_stream_is_refused() {
        let mut out = Vec::new();
        write_header(&mut out, &SessionTable::default().encode()).unwrap();
        out.extend_from_slice(b"app");
        let mut input = &out[..];
        assert_eq!(read_header(&mut input).unwrap(), SessionTable::default());
        assert_eq!(input, b"app");
        assert!(read_header(&mut &b"not a snapshot at all"[..]).is_err());
        let mut newer = out.clone();
        newer[8] = VERSION + 1;
        assert!(read_header(&mut &newer[..]).is_err());
    }

    #[test]
    fn a_version_1_stream_reads_as_an_empty_session_table() {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(1);
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(b"..app");
        let mut input = &out[..];
        assert_eq!(read_header(&mut input).unwrap(), SessionTable::default());
        assert_eq!(input, b"app");
    }

    #[test]
    fn a_version_2_stream_reads_with_its_session_table() {
        // Version 2's table: (clock, [(client, (last active, floor, [(seq, response)]))]).
        let response: &[u8] = b"resp";
        type Session<'a> = (u64, u64, Vec<(u64, &'a [u8])>);
        let table: (u64, Vec<(u64, Session)>) = (9, vec![(7, (9, 0, vec![(1, response)]))]);
        let part = postcard::to_allocvec(&table).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(2);
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(&part);
        out.extend_from_slice(b"app");
        let mut input = &out[..];
        let read = read_header(&mut input).unwrap();
        assert_eq!((read.len(), read.responses()), (1, 1));
        assert_eq!(input, b"app");
    }

    /// A second install can finish before the apply task restores the first; the store
    /// then holds only the newer snapshot, and the restore takes that one instead of
    /// stopping the node (simulator seed 553 of part 2).
    #[cfg(all(feature = "testing", feature = "tokio"))]
    #[tokio::test]
    async fn a_restore_whose_snapshot_was_replaced_by_a_newer_one_restores_the_newer() {
        use crate::storage::LogStore;
        use crate::testing::helpers::Counter;
        let rt = crate::runtime::TokioRuntime::new();
        let snapshots = crate::testing::mem_store::MemStore::new().snapshots();
        let at = |index, value: u64| {
            let last = LogId { term: 1, index };
            let position = Applied { last, membership: (1, Membership::new([1, 2, 3])) };
            write::<Counter>(&*snapshots, value, &SessionTable::default().encode(), &position).expect("written")
        };
        let older = at(5, 50);
        let newer = at(9, 90);
        let sm = Arc::new(Mutex::new(Counter::default()));
        let (_, restored) = restore(&rt, &sm, &snapshots, &older).await.expect("restored");
        assert_eq!(restored, newer);
        assert_eq!(lock(&sm).0, 90);
        // A snapshot that is gone with nothing newer in its place is still fatal.
        let later = SnapshotMeta { last: LogId { term: 1, index: 12 }, ..newer };
        assert!(restore(&rt, &sm, &snapshots, &later).await.is_err());
    }

    #[test]
    fn a_torn_or_garbled_session_table_fails_the_restore() {
        let mut out = Vec::new();
        write_header(&mut out, &[0xff, 0xff, 0xff]).unwrap();
        assert!(read_header(&mut &out[..]).is_err(), "garbled");
        out.truncate(out.len() - 1);
        assert!(read_header(&mut &out[..]).is_err(), "torn");
    }
}

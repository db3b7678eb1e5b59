//! Snapshots and log compaction (paper §7, thesis chapter 5).
//!
//! - **Compaction.** Once the entries applied since the last snapshot pass
//!   [`Config::snapshot_after_entries`] or [`Config::snapshot_after_bytes`] (or on
//!   [`RaftCore::trigger_snapshot`]), the core asks for a snapshot
//!   ([`Action::TakeSnapshot`], placed after the last [`Action::Apply`], so it covers
//!   exactly what was handed to the state machine). When it is durable
//!   ([`Input::SnapshotTaken`](super::Input)) the core purges the log up to
//!   [`Config::snapshot_keep_entries`] before its last entry ([`Action::PurgeLog`]).
//! - **Sending** (leader). A peer whose next entry is purged gets the latest snapshot in
//!   chunks of [`Config::snapshot_chunk_size`], at most
//!   [`Config::snapshot_max_inflight_chunks`] unacknowledged. Each answer says how much
//!   the peer holds in order; the leader goes back there after a loss or a restart of the
//!   peer, and after a heartbeat interval without progress. Heartbeats and replication to
//!   other peers go on meanwhile.
//! - **Receiving** (follower). Chunks are taken in order only and written to the store
//!   as they come ([`Action::WriteSnapshotChunk`]); the core checksums the stream, and
//!   once complete and matching, installs it: one persist request finishes the snapshot
//!   and resets the log to it ([`LogStore::reset_to`](crate::LogStore::reset_to): a log
//!   that holds the snapshot's last entry keeps what follows, any other is discarded);
//!   once that is durable the state machine is restored ([`Action::RestoreSnapshot`]) and
//!   the leader told. A snapshot the follower already covers is answered at once; a chunk
//!   at offset 0 of another snapshot replaces the transfer in progress.
//!
//! **Architecture invariants:** nothing is purged that a durable snapshot does not cover;
//! no entry after a snapshot reaches the state machine before the snapshot is restored;
//! a follower reports a snapshot done only once it is durable.

use bytes::Bytes;

use super::durability::Needs;
use super::progress::ProgressState;
use super::{Action, RaftCore, Role};
use crate::config::Config;
use crate::message::MessageBody;
use crate::snapshot::SnapshotMeta;
use crate::types::{Entry, Instant, LogId, LogIndex, NodeId, Term};

/// A snapshot being received from the leader.
#[derive(Debug)]
struct Incoming {
    meta: SnapshotMeta,
    /// Bytes received in order.
    next: u64,
    /// Bytes the store has written (what the answers to the leader say).
    written: u64,
    /// CRC-32C of those bytes.
    crc: u32,
}

/// The core's snapshot state.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    /// The latest durable snapshot this node holds.
    pub(crate) latest: Option<SnapshotMeta>,
    /// A snapshot was asked for and not yet reported.
    taking: bool,
    /// [`RaftCore::trigger_snapshot`] was called.
    requested: bool,
    /// Entries and bytes handed to the state machine since the last snapshot was asked for.
    since_entries: u64,
    since_bytes: u64,
    /// Follower: the transfer in progress.
    incoming: Option<Incoming>,
    /// Follower: a received snapshot whose install (persist request `seq`) is not yet
    /// durable; nothing is applied meanwhile.
    installing: Option<(u64, SnapshotMeta)>,
}

impl Snapshots {
    /// The state of a node that restarted from `latest`.
    pub(crate) fn new(latest: Option<SnapshotMeta>) -> Self {
        Snapshots { latest, ..Default::default() }
    }

    /// The last index the latest snapshot covers (0 without one).
    pub(crate) fn index(&self) -> LogIndex {
        self.latest.as_ref().map_or(0, |m| m.last.index)
    }

    /// Whether applying must wait for an install to become durable.
    pub(crate) fn installing(&self) -> bool {
        self.installing.is_some()
    }

    /// Counts entries handed to the state machine.
    pub(crate) fn applying(&mut self, entries: &[Entry]) {
        self.since_entries += entries.len() as u64;
        self.since_bytes += entries.iter().map(|e| e.approx_size() as u64).sum::<u64>();
    }

    fn due(&self, cfg: &Config) -> bool {
        let over = |since: u64, limit: u64| limit > 0 && since >= limit;
        self.requested
            || over(self.since_entries, cfg.snapshot_after_entries)
            || over(self.since_bytes, cfg.snapshot_after_bytes)
    }
}

/// Where the last chunk of a snapshot of `size` bytes starts, in chunks of `chunk`.
fn last_chunk_start(size: u64, chunk: u64) -> u64 {
    size.saturating_sub(1) / chunk * chunk
}

impl RaftCore {
    /// The latest durable snapshot this node holds.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshots.latest.as_ref()
    }

    /// Asks for a snapshot at the next [`RaftCore::take_actions`], whatever the
    /// thresholds say, if anything was applied since the last one.
    pub fn trigger_snapshot(&mut self) {
        self.snapshots.requested = true;
    }

    /// Purges the log up to `upto`, capped at the latest snapshot's last index (entries no
    /// snapshot covers are never purged). Returns the index the purge goes to, if any.
    pub fn purge_log(&mut self, upto: LogIndex) -> Option<LogIndex> {
        let upto = upto.min(self.snapshots.index());
        if upto <= self.log.prev().index {
            return None;
        }
        self.actions.push(Action::PurgeLog { upto });
        Some(upto)
    }

    // ----- compaction -----

    /// Part of `take_actions`, after the apply batch: asks for a snapshot when one is due.
    pub(crate) fn maybe_take_snapshot(&mut self) {
        let s = &mut self.snapshots;
        if s.taking || s.installing.is_some() || self.apply_index <= s.index() || !s.due(&self.cfg) {
            return;
        }
        s.taking = true;
        s.requested = false;
        s.since_entries = 0;
        s.since_bytes = 0;
        tracing::debug!(node = self.id, index = self.apply_index, "taking a snapshot");
        self.actions.push(Action::TakeSnapshot);
    }

    pub(crate) fn on_snapshot_taken(&mut self, result: Result<SnapshotMeta, String>) {
        self.snapshots.taking = false;
        let meta = match result {
            Ok(meta) => meta,
            Err(e) => {
                tracing::warn!(node = self.id, error = %e, "taking a snapshot failed; the log is kept");
                return;
            }
        };
        tracing::debug!(node = self.id, last = ?meta.last, size = meta.size, "snapshot taken");
        if meta.last.index <= self.snapshots.index() {
            return;
        }
        self.counters.snapshots_taken += 1;
        let upto = meta.last.index.saturating_sub(self.cfg.snapshot_keep_entries);
        self.snapshots.latest = Some(meta);
        self.purge_log(upto);
    }

    pub(crate) fn on_log_purged(&mut self, prev: LogId) {
        self.log.set_prev(prev);
    }

    // ----- sending (leader) -----

    /// Starts sending the latest snapshot to `peer`, whose next entry is purged.
    pub(crate) fn start_snapshot_send(&mut self, peer: NodeId) {
        let Some(meta) = self.snapshots.latest.clone() else {
            tracing::warn!(node = self.id, peer, "peer needs purged entries but no snapshot is held");
            return;
        };
        tracing::debug!(node = self.id, peer, last = ?meta.last, size = meta.size, "sending a snapshot");
        self.counters.snapshots_sent += 1;
        if let Some(pr) = self.progress.get_mut(&peer) {
            pr.become_snapshot(meta);
        }
        self.send_snapshot_chunks(peer);
    }

    /// Asks for the chunks the window allows.
    fn send_snapshot_chunks(&mut self, peer: NodeId) {
        let chunk = self.cfg.snapshot_chunk_size as u64;
        let window = chunk * self.cfg.snapshot_max_inflight_chunks as u64;
        let term = self.hs.term;
        let Some(send) = self.progress.get_mut(&peer).and_then(|p| p.snapshot.as_mut()) else { return };
        let size = send.meta.size;
        let last = send.meta.last;
        if size == 0 && !send.sent_empty {
            send.sent_empty = true;
            send.loading += 1;
            self.actions.push(Action::LoadSnapshotChunk { peer, term, last, offset: 0, len: 0 });
            return;
        }
        while send.next < size && send.next - send.acked.min(send.next) < window {
            let offset = send.next;
            let len = chunk.min(size - offset);
            send.next += len;
            send.loading += 1;
            self.actions.push(Action::LoadSnapshotChunk { peer, term, last, offset, len: len as usize });
        }
    }

    pub(crate) fn on_snapshot_chunk_loaded(
        &mut self,
        peer: NodeId,
        term: Term,
        last: LogId,
        offset: u64,
        data: Result<Bytes, String>,
    ) {
        if self.role != Role::Leader || term != self.hs.term {
            return;
        }
        let Some(pr) = self.progress.get_mut(&peer) else { return };
        let Some(send) = pr.snapshot.as_mut().filter(|s| s.meta.last == last) else { return };
        send.loading = send.loading.saturating_sub(1);
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                // Most likely replaced by a newer snapshot: start over with the latest.
                tracing::warn!(node = self.id, peer, ?last, error = %e, "reading a snapshot chunk failed");
                let next = pr.match_index + 1;
                pr.become_probe(next);
                self.start_snapshot_send(peer);
                return;
            }
        };
        if offset + (data.len() as u64) < send.acked {
            return;
        }
        let meta = send.meta.clone();
        self.counters.snapshot_bytes_sent += data.len() as u64;
        self.send_to(Needs::HardState, peer, MessageBody::InstallSnapshot { meta, offset, data });
    }

    pub(crate) fn on_install_snapshot_response(&mut self, from: NodeId, last: LogId, next_offset: u64, done: bool) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else { return };
        pr.recent_active = true;
        if done {
            if last.index > self.log.last_index() {
                return;
            }
            if pr.state == ProgressState::Snapshot || last.index > pr.match_index {
                tracing::debug!(node = self.id, peer = from, ?last, "peer holds the snapshot");
                pr.become_probe(last.index + 1);
                if pr.acknowledge(last.index) {
                    self.maybe_commit();
                }
                self.send_appends(from, super::replication::IfNothingNew::Nothing);
                self.maybe_send_timeout_now(from);
            }
            return;
        }
        let Some(send) = pr.snapshot.as_mut().filter(|s| s.meta.last == last) else { return };
        if next_offset > send.meta.size {
            return;
        }
        pr.acked_recently = true;
        if next_offset >= send.acked {
            send.acked = next_offset;
            send.next = send.next.max(next_offset);
        } else {
            // The peer lost what it had (a restart, or another transfer replaced this
            // one): go back to where it is.
            send.acked = next_offset;
            send.next = next_offset;
            send.sent_empty = false;
        }
        self.send_snapshot_chunks(from);
    }

    /// On a periodic heartbeat answer from a peer being sent a snapshot: with no progress
    /// for a whole heartbeat interval, the chunks in flight were probably lost; send again
    /// from what the peer acknowledged (at least the last chunk, whose answer says done).
    pub(crate) fn snapshot_send_stalled(&mut self, peer: NodeId) {
        let chunk = self.cfg.snapshot_chunk_size as u64;
        let Some(pr) = self.progress.get_mut(&peer) else { return };
        let progressed = pr.acked_recently;
        let Some(send) = pr.snapshot.as_mut() else { return };
        if progressed || send.loading > 0 {
            return;
        }
        send.next = send.acked.min(last_chunk_start(send.meta.size, chunk));
        send.sent_empty = false;
        self.send_snapshot_chunks(peer);
    }

    // ----- receiving (follower) -----

    /// Paper §7: the follower side of InstallSnapshot.
    pub(crate) fn on_install_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
    ) {
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > meta.size) || meta.last.term > self.hs.term || meta.last.index == 0 {
            tracing::warn!(node = self.id, from, offset, last = ?meta.last, "dropping malformed InstallSnapshot");
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(now, self.hs.term, Some(from));
        }
        self.last_leader_contact = Some(now);
        self.reset_election_deadline(now);
        let last = meta.last;
        let size = meta.size;
        let reply = |done: bool, next_offset: u64| MessageBody::InstallSnapshotResponse { last, next_offset, done };

        // Already covered, durably: by the committed log or by a snapshot held.
        if last.index <= self.log.commit.min(self.log.durable) || last.index <= self.snapshots.index() {
            return self.send_to(Needs::Nothing, from, reply(true, size));
        }
        if let Some((_, installing)) = &self.snapshots.installing {
            if installing.last.index >= last.index {
                // Done is said once the install is durable.
                return self.send_to(Needs::Nothing, from, reply(false, size));
            }
        }
        let same = self.snapshots.incoming.as_ref().is_some_and(|i| i.meta == meta);
        if !same {
            if offset != 0 {
                return self.send_to(Needs::Nothing, from, reply(false, 0));
            }
            tracing::debug!(node = self.id, from, ?last, size, "receiving a snapshot");
            self.snapshots.incoming = Some(Incoming { meta: meta.clone(), next: 0, written: 0, crc: 0 });
        }
        let Some(incoming) = self.snapshots.incoming.as_mut() else { return };
        if offset != incoming.next {
            // Not the chunk expected: say how far the store got, for the leader to go on
            // from there.
            let written = incoming.written;
            return self.send_to(Needs::Nothing, from, reply(false, written));
        }
        incoming.crc = crc32c::crc32c_append(incoming.crc, &data);
        self.counters.snapshot_bytes_received += data.len() as u64;
        incoming.next += data.len() as u64;
        let (next, crc) = (incoming.next, incoming.crc);
        // The chunk goes to the store after everything queued before it; the answer
        // waits for it to be written (`on_snapshot_chunk_written`), which bounds what a
        // slow store has queued to the leader's window.
        self.flush_persist();
        self.actions.push(Action::WriteSnapshotChunk { meta: meta.clone(), offset, data });
        if next < size {
            return;
        }
        self.snapshots.incoming = None;
        if crc != meta.checksum {
            tracing::warn!(node = self.id, from, ?last, "received snapshot does not match its checksum; starting over");
            return self.send_to(Needs::Nothing, from, reply(false, 0));
        }
        self.install_snapshot(from, meta);
    }

    /// A received chunk ending at `next` is written: answer the leader, if the transfer
    /// is still the one from the known leader (the final chunk is answered by the
    /// install, once durable).
    pub(crate) fn on_snapshot_chunk_written(&mut self, last: LogId, next: u64) {
        let Some(incoming) = self.snapshots.incoming.as_mut().filter(|i| i.meta.last == last) else { return };
        incoming.written = incoming.written.max(next);
        if next >= incoming.meta.size || self.role != Role::Follower {
            return;
        }
        let Some(leader) = self.leader else { return };
        let body = MessageBody::InstallSnapshotResponse { last, next_offset: next, done: false };
        self.send_to(Needs::Nothing, leader, body);
    }

    /// Installs a received, verified snapshot: one persist request finishes it and resets
    /// the log; the state machine is restored once that is durable.
    fn install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        let last = meta.last;
        let keep = self.log.term_at(last.index) == Some(last.term);
        tracing::info!(node = self.id, from, ?last, keep_log = keep, "installing a snapshot");
        self.flush_persist();
        self.log.install(last, keep);
        self.configs.retain(|(i, _)| *i > last.index);
        self.configs.insert(0, (meta.membership_index, meta.membership.clone()));
        let m = self.configs.last().map(|(_, m)| m.clone()).unwrap_or_default();
        self.set_membership(m);
        self.apply_index = self.apply_index.max(last.index);
        let term = self.hs.term;
        if self.matched.0 != term || self.matched.1 < last.index {
            self.matched = (term, last.index);
        }
        let seq = self.durability.next_seq();
        self.durability.queue_install(meta.clone(), keep);
        self.flush_persist();
        self.snapshots.installing = Some((seq, meta.clone()));
        let body = MessageBody::InstallSnapshotResponse { last, next_offset: meta.size, done: true };
        self.send_to(Needs::Everything, from, body);
    }

    /// Part of `on_persisted`: an install became durable, so the state machine may be
    /// restored (before any later entry is applied).
    pub(crate) fn on_install_persisted(&mut self, seq: u64) {
        if self.snapshots.installing.as_ref().is_none_or(|(s, _)| *s > seq) {
            return;
        }
        let Some((_, meta)) = self.snapshots.installing.take() else { return };
        self.counters.snapshots_installed += 1;
        self.snapshots.since_entries = 0;
        self.snapshots.since_bytes = 0;
        if meta.last.index > self.snapshots.index() {
            self.snapshots.latest = Some(meta.clone());
        }
        self.actions.push(Action::RestoreSnapshot { meta });
    }
}

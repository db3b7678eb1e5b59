//! Durability gating (design invariant 5; paper §5.1 "respond to RPCs only after
//! updating stable storage", thesis §3.8 and §10.2.1 for the leader writing its log in
//! parallel with replication).
//!
//! The core never writes anything itself. What must become durable accumulates in a
//! [`PendingPersist`] and leaves as one numbered [`PersistRequest`] per batch of inputs;
//! the driver reports requests durable with [`Input::Persisted`](super::Input). Every
//! outgoing message goes through one call, [`RaftCore::send_after`], which states what
//! it depends on ([`Needs`]); a message whose dependency is not yet durable is held and
//! released by [`RaftCore::on_persisted`].
//!
//! **Architecture invariant:** no vote, no append acknowledgement and no heartbeat
//! answer leaves before the term, vote and entries it speaks for are durable, and the
//! leader counts its own log for commitment only up to its durable index.

use std::collections::VecDeque;

use super::{Action, PersistRequest, RaftCore};
use crate::message::{Message, MessageBody};
use crate::snapshot::SnapshotMeta;
use crate::types::{Entry, LogId, LogIndex, NodeId, Term};

/// What a message depends on before it may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Needs {
    /// Nothing persisted: client-request messages, which change no term and no log.
    Nothing,
    /// The current term and vote (and their predecessors): a leader's appends and
    /// heartbeats (the leader writes its entries in parallel), pre-votes and their
    /// answers.
    HardState,
    /// Everything persisted so far, including what this batch queued: votes, append
    /// acknowledgements and rejections, heartbeat answers.
    Everything,
}

/// What accumulates for the next [`PersistRequest`].
#[derive(Debug, Default)]
struct PendingPersist {
    hard_state: bool,
    truncate_from: Option<LogIndex>,
    entries: Vec<Entry>,
    /// A received snapshot to install, and whether the log holds its last entry.
    install: Option<(SnapshotMeta, bool)>,
}

impl PendingPersist {
    fn is_empty(&self) -> bool {
        !self.hard_state && self.truncate_from.is_none() && self.entries.is_empty() && self.install.is_none()
    }
}

/// The core's persistence state: what is queued, what is issued, what is durable, and
/// the messages waiting for it.
#[derive(Debug)]
pub(crate) struct Durability {
    pending: PendingPersist,
    next_seq: u64,
    persisted_seq: u64,
    /// The persist request that made the current hard state durable (or will).
    hs_seq: u64,
    /// What the store holds once every issued request completes.
    store_last: LogIndex,
    /// For each issued request, the last entry it wrote.
    issued: VecDeque<(u64, Option<LogId>)>,
    /// Messages waiting for a persist request to become durable.
    held: VecDeque<(u64, Message)>,
}

impl Durability {
    /// The state of a core whose store holds entries up to `store_last`.
    pub(crate) fn new(store_last: LogIndex) -> Self {
        Durability {
            pending: PendingPersist::default(),
            next_seq: 1,
            persisted_seq: 0,
            hs_seq: 0,
            store_last,
            issued: VecDeque::new(),
            held: VecDeque::new(),
        }
    }

    /// The hard state changed: the next request saves it.
    pub(crate) fn queue_hard_state(&mut self) {
        self.pending.hard_state = true;
    }

    /// `entry` was added at the end of the log: the next request appends it.
    pub(crate) fn queue_entry(&mut self, entry: Entry) {
        self.pending.entries.push(entry);
    }

    /// The log was truncated from `from` on: the next request removes what the store
    /// holds there, and queued entries there are dropped.
    pub(crate) fn queue_truncate(&mut self, from: LogIndex) {
        self.pending.entries.retain(|e| e.index < from);
        let store_last = match self.pending.truncate_from {
            Some(t) => self.store_last.min(t - 1),
            None => self.store_last,
        };
        if from <= store_last {
            self.pending.truncate_from = Some(self.pending.truncate_from.map_or(from, |t| t.min(from)));
        }
    }

    /// A received snapshot is to be installed: the next request finishes it and resets
    /// the log to it, after everything queued before (the caller flushes before and after,
    /// so that the request holds only the install). `keep`: the log holds the snapshot's
    /// last entry, so the store keeps the entries after it.
    pub(crate) fn queue_install(&mut self, meta: SnapshotMeta, keep: bool) {
        self.pending.install = Some((meta, keep));
    }

    /// The sequence number the next persist request will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The persist request a message with dependency `needs` waits for.
    fn seq_for(&self, needs: Needs) -> u64 {
        match needs {
            Needs::Nothing => 0,
            Needs::HardState if self.pending.hard_state => self.next_seq,
            Needs::HardState => self.hs_seq,
            Needs::Everything if self.pending.is_empty() => self.next_seq - 1,
            Needs::Everything => self.next_seq,
        }
    }
}

impl RaftCore {
    /// A message from this node in the current term.
    pub(crate) fn message(&self, to: NodeId, body: MessageBody) -> Message {
        self.message_in(self.hs.term, to, body)
    }

    /// A message from this node carrying `term` (a pre-vote's prospective term, or the
    /// term a repeated answer was first given in).
    pub(crate) fn message_in(&self, term: Term, to: NodeId, body: MessageBody) -> Message {
        Message { from: self.id, to, term, body }
    }

    /// Sends `msg` once what it `needs` is durable: at once if it already is, otherwise
    /// when [`RaftCore::on_persisted`] reports the request it waits for. The one way a
    /// message leaves the core.
    pub(crate) fn send_after(&mut self, needs: Needs, msg: Message) {
        let need = self.durability.seq_for(needs);
        if need <= self.durability.persisted_seq {
            self.actions.push(Action::Send(msg));
        } else {
            self.durability.held.push_back((need, msg));
        }
    }

    /// [`RaftCore::send_after`] for a message to `to` in the current term.
    pub(crate) fn send_to(&mut self, needs: Needs, to: NodeId, body: MessageBody) {
        let msg = self.message(to, body);
        self.send_after(needs, msg);
    }

    /// Turns what accumulated in this batch into one [`Action::Persist`].
    pub(crate) fn flush_persist(&mut self) {
        let d = &mut self.durability;
        if d.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut d.pending);
        let seq = d.next_seq;
        d.next_seq += 1;
        if let Some(t) = pending.truncate_from {
            d.store_last = d.store_last.min(t - 1);
        }
        let mut last = pending.entries.last().map(|e| LogId { term: e.term, index: e.index });
        if let Some(l) = last {
            d.store_last = l.index;
        }
        let install = pending.install.map(|(meta, keep)| {
            if !keep {
                d.store_last = meta.last.index;
            }
            last = Some(last.filter(|l| l.index >= meta.last.index).unwrap_or(meta.last));
            meta
        });
        let hard_state = if pending.hard_state {
            d.hs_seq = seq;
            Some(self.hs)
        } else {
            None
        };
        d.issued.push_back((seq, last));
        self.actions.push(Action::Persist(PersistRequest {
            seq,
            hard_state,
            truncate_from: pending.truncate_from,
            entries: pending.entries,
            install,
        }));
    }

    /// Every persist request up to `seq` is durable: advance the durable index and
    /// release the messages that waited for it.
    pub(crate) fn on_persisted(&mut self, seq: u64) {
        let d = &mut self.durability;
        if seq <= d.persisted_seq || seq >= d.next_seq {
            return;
        }
        d.persisted_seq = seq;
        while let Some(&(s, last)) = d.issued.front() {
            if s > seq {
                break;
            }
            d.issued.pop_front();
            if let Some(l) = last {
                // Entries truncated and rewritten since this request do not count.
                if self.log.term_at(l.index) == Some(l.term) && l.index > self.log.durable {
                    self.log.durable = l.index;
                }
            }
        }
        while let Some((need, _)) = d.held.front() {
            if *need > seq {
                break;
            }
            if let Some((_, msg)) = d.held.pop_front() {
                self.actions.push(Action::Send(msg));
            }
        }
        self.on_install_persisted(seq);
        // A follower whose own write just became durable may now know a commit.
        self.commit_from_leader_durability();
    }
}

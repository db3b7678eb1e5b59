//! The async driver and the [`Raft`] handle, one file per task.
//!
//! The driver owns a [`RaftCore`] and carries out its actions; it holds no protocol
//! logic. It runs these tasks on the user's [`Runtime`]:
//!
//! - the **protocol loop**: takes every queued event (messages, proposals, ticks,
//!   persistence and apply completions) in one batch, steps the core, then dispatches
//!   the core's actions. Batching here is what turns many proposals into one append and
//!   one message per peer;
//! - the **persist task**: merges queued persist requests into one store call sequence
//!   (group commit) and reports them durable;
//! - the **apply task**: applies committed entries to the state machine and answers
//!   proposers, off the protocol loop so a slow state machine never delays heartbeats;
//!   it also takes and restores snapshots, whose I/O runs on blocking threads
//!   (`snapshot.rs`);
//! - one **sender task per peer**, calling [`Network::send`] in order;
//! - the **timer task**, which sends a tick when the core's deadline passes.

mod admin;
mod apply;
mod handle;
mod persist;
mod requests;
mod sender;
mod snapshot;
mod timer;
mod timing;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

pub use handle::Raft;

use crate::core::{Action, Input, RaftCore, Role};
use crate::error::ClientError;
use crate::message::{Message, MessageBody};
use crate::network::Network;
use crate::runtime::Runtime;
use crate::session::ClientId;
use crate::snapshot::SnapshotMeta;
use crate::state_machine::StateMachine;
use crate::sync::lock;
use crate::types::{Entry, Instant, LogId, LogIndex, NodeId, Proposal, Term};
use apply::ApplyOp;
use handle::Shared;
use persist::StoreOp;
use requests::Requests;
use sender::Senders;
use timer::Timer;
use timing::Timing;

/// Most events the protocol loop takes in one batch before it acts.
const MAX_BATCH: usize = 4096;

type Responder<SM> = oneshot::Sender<Result<<SM as StateMachine>::Response, ClientError>>;
type ReadResponder = oneshot::Sender<Result<LogIndex, ClientError>>;

/// A caller waiting for a session operation: a command's response, or an opened
/// session's id.
enum Waiter<SM: StateMachine> {
    Command(Responder<SM>),
    Open(oneshot::Sender<Result<ClientId, ClientError>>),
}

impl<SM: StateMachine> Waiter<SM> {
    /// Answers the caller with an error.
    fn fail(self, e: ClientError) {
        match self {
            Waiter::Command(tx) => drop(tx.send(Err(e))),
            Waiter::Open(tx) => drop(tx.send(Err(e))),
        }
    }

    /// Whether the caller gave up.
    fn is_canceled(&self) -> bool {
        match self {
            Waiter::Command(tx) => tx.is_canceled(),
            Waiter::Open(tx) => tx.is_canceled(),
        }
    }
}

/// An input to the protocol loop, from the handle or one of the node's tasks.
enum Event<SM: StateMachine> {
    Message(Message),
    Propose {
        /// A session operation, or (from [`Raft::propose`](crate::Raft::propose) on the
        /// leader) a command outside any session, which only a leader takes.
        op: Proposal,
        tx: Waiter<SM>,
        /// The caller's request span: the proposal's index is recorded on it.
        span: tracing::Span,
    },
    Read {
        tx: ReadResponder,
    },
    /// The timer's deadline passed; the instant is the runtime's clock as the timer task
    /// read it, at or after the deadline.
    Tick(Instant),
    Persisted {
        seq: u64,
    },
    Applied {
        index: LogIndex,
    },
    Loaded {
        peer: NodeId,
        term: Term,
        entries: Result<Vec<Entry>, String>,
    },
    SnapshotTaken(Result<SnapshotMeta, String>),
    Purged {
        prev: LogId,
    },
    ChunkLoaded {
        peer: NodeId,
        term: Term,
        last: LogId,
        offset: u64,
        data: Result<Bytes, String>,
    },
    /// The persist task wrote a received snapshot chunk ending at `next`.
    ChunkWritten {
        last: LogId,
        next: u64,
    },
    TriggerSnapshot,
    PurgeLog(LogIndex),
    /// A membership change to make as leader; answered with the entry's index.
    ChangeMembership {
        change: crate::membership::ConfigChange,
        tx: oneshot::Sender<Result<LogIndex, crate::membership::ConfigError>>,
    },
    /// A leadership transfer to start as leader.
    TransferLeadership {
        to: NodeId,
        tx: oneshot::Sender<Result<(), crate::core::TransferError>>,
    },
    Fatal(String),
    /// Stop; a leader first hands leadership over if `hand_over`.
    Shutdown {
        hand_over: bool,
    },
}

/// The protocol loop's state: the core, the channels to the node's tasks, and the
/// callers waiting for answers.
struct Driver<SM: StateMachine, R: Runtime, N: Network> {
    core: RaftCore,
    rt: R,
    shared: Arc<Shared<SM>>,
    persist_tx: mpsc::UnboundedSender<StoreOp>,
    apply_tx: mpsc::UnboundedSender<ApplyOp<SM>>,
    /// The chunk reader's queue: chunks of the snapshot for peers being sent one.
    chunk_tx: mpsc::UnboundedSender<snapshot::ChunkRequest>,
    timer: Timer,
    senders: Senders<R, N>,
    /// The callers waiting for answers.
    requests: Requests<SM>,
    /// Commit and heartbeat round-trip timings.
    timing: Timing,
    /// The commit index last traced.
    traced_commit: LogIndex,
    /// Shutting down once leadership is handed over, or at this deadline.
    stopping: Option<Instant>,
    /// How long a handover before stopping may take.
    election_timeout_max: std::time::Duration,
    /// The core's configuration generation last told to the network.
    members_told: std::cell::Cell<Option<u64>>,
    /// Whether the core has been told the wall clock in this batch.
    wall_clock_told: bool,
}

impl<SM: StateMachine, R: Runtime, N: Network> Driver<SM, R, N> {
    /// The protocol loop: takes every queued event in one batch, steps the core, then
    /// carries out its actions, until shutdown or a fatal error.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event<SM>>) {
        let mut fatal = None;
        let now = self.rt.now();
        self.tell_members();
        let actions = self.core.take_actions(now);
        self.dispatch(actions);
        'outer: while let Some(first) = rx.next().await {
            let mut now = self.rt.now();
            self.wall_clock_told = false;
            let mut next = Some(first);
            let mut n = 0;
            while let Some(ev) = next.take() {
                match ev {
                    Event::Message(m) => {
                        if matches!(m.body, MessageBody::Forward { .. }) {
                            self.tell_wall_clock();
                        }
                        self.timing.on_receive(&m, now, &self.shared.latencies);
                        self.core.step(now, Input::Message(m))
                    }
                    Event::Propose { op, tx, span } => match op {
                        op if self.core.role() == Role::Leader => self.propose(op, tx, &span),
                        Proposal::Session(op) => self.requests.forward_batch.push((op, tx, span)),
                        // The handle thought this node led: nothing was appended, and it
                        // asks again in its session.
                        Proposal::Command(_) => tx.fail(ClientError::NotLeader { leader: self.core.leader() }),
                    },
                    Event::Read { tx } => self.requests.read_batch.push(tx),
                    Event::Tick(at) => {
                        // A tick sent after this batch began carries a later time than the
                        // batch's: the core must see the deadline passed, or it would not
                        // move its timers, never arm a new deadline, and the timer task
                        // (which ticks once per deadline) would never tick again. Time only
                        // moves forward within the batch.
                        now = now.max(at);
                        self.forget_abandoned_requests();
                        self.core.step(now, Input::Tick);
                    }
                    Event::Persisted { seq } => self.core.step(now, Input::Persisted { seq }),
                    Event::Applied { index } => {
                        self.core.step(now, Input::Applied { index });
                        self.on_applied(index);
                    }
                    Event::Loaded { peer, term, entries } => {
                        self.core.step(now, Input::EntriesLoaded { peer, term, entries })
                    }
                    Event::SnapshotTaken(result) => self.core.step(now, Input::SnapshotTaken { result }),
                    Event::Purged { prev } => self.core.step(now, Input::LogPurged { prev }),
                    Event::ChunkLoaded { peer, term, last, offset, data } => {
                        self.core.step(now, Input::SnapshotChunkLoaded { peer, term, last, offset, data })
                    }
                    Event::ChunkWritten { last, next } => {
                        self.core.step(now, Input::SnapshotChunkWritten { last, next })
                    }
                    ev @ (Event::TriggerSnapshot
                    | Event::PurgeLog(_)
                    | Event::ChangeMembership { .. }
                    | Event::TransferLeadership { .. }) => self.on_operator_request(now, ev),
                    Event::Fatal(e) => {
                        fatal = Some(e);
                        break 'outer;
                    }
                    Event::Shutdown { hand_over } => {
                        if !hand_over || (self.stopping.is_none() && !self.hand_over_before_stopping(now)) {
                            break 'outer;
                        }
                    }
                }
                n += 1;
                if n < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if self.finish_batch(now) {
                break;
            }
        }
        self.stop(fatal).await;
    }

    /// After a batch of events: the client batches, the core's actions, the status.
    /// Returns whether the node stops now (a handover before stopping ended).
    fn finish_batch(&mut self, now: Instant) -> bool {
        // A second round when answers to forwards, arriving in this batch, made room for
        // the proposals held back (the flush then empties the batch).
        loop {
            self.flush_client_batches(now);
            let actions = self.core.take_actions(now);
            self.dispatch(actions);
            if self.requests.forward_batch.is_empty() || !self.core.may_forward(now) {
                break;
            }
        }
        self.timing.after_batch(&self.core, now, &self.shared.latencies);
        let commit = self.core.commit_index();
        if commit > self.traced_commit {
            tracing::debug!(node = self.core.id(), commit, "committed");
            self.traced_commit = commit;
        }
        self.publish_status();
        // Stop once another node leads (this one may have to vote for it first), or at
        // the handover's deadline.
        let me = self.core.id();
        let handed_over = self.core.leader().is_some_and(|l| l != me);
        self.stopping.is_some_and(|deadline| handed_over || now >= deadline)
    }
    /// The operator's requests: snapshots and purges, membership changes, transfers.
    fn on_operator_request(&mut self, now: Instant, ev: Event<SM>) {
        match ev {
            Event::TriggerSnapshot => self.core.trigger_snapshot(),
            Event::PurgeLog(upto) => {
                self.core.purge_log(upto);
            }
            Event::ChangeMembership { change, tx } => {
                let _ = tx.send(self.core.change_membership(&change));
            }
            Event::TransferLeadership { to, tx } => {
                let result = self.core.transfer_leadership(now, to);
                // The caller waits on the status for the transfer to end: it must see it
                // begin first.
                self.publish_status();
                let _ = tx.send(result);
            }
            _ => {}
        }
    }

    /// A leader asked to shut down hands leadership over first (thesis §3.10), so that a
    /// rolling restart has no election gap: to the voter holding the most of the log.
    /// Returns whether the protocol loop goes on until the transfer ends (or an election
    /// timeout passes).
    fn hand_over_before_stopping(&mut self, now: Instant) -> bool {
        if self.core.role() != Role::Leader {
            return false;
        }
        let me = self.core.id();
        let voters = &self.core.membership().voters;
        let best = self.core.match_indexes().filter(|(id, _)| *id != me && voters.contains(id)).max_by_key(|&(_, m)| m);
        let Some((to, _)) = best else { return false };
        match self.core.transfer_leadership(now, to) {
            Ok(()) => {
                tracing::info!(node = me, to, "shutting down: handing leadership over first");
                self.stopping = Some(now.add(self.election_timeout_max));
                true
            }
            Err(e) => {
                tracing::debug!(node = me, error = %e, "shutting down without handing leadership over");
                false
            }
        }
    }

    fn dispatch(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Persist(req) => {
                    let leader = self.core.role() == Role::Leader;
                    let _ = self.persist_tx.unbounded_send(StoreOp::Persist { req, leader });
                }
                Action::LoadEntries { peer, term, start, end } => {
                    let _ = self.persist_tx.unbounded_send(StoreOp::Load { peer, term, start, end });
                }
                Action::Send(msg) => {
                    if let MessageBody::Heartbeat { ctx, .. } = msg.body {
                        self.timing.on_heartbeat_sent(msg.to, ctx, self.rt.now());
                    }
                    self.senders.send(msg)
                }
                Action::Apply(entries) => self.apply(entries),
                Action::Forwarded { id, result } => self.on_forwarded(id, result),
                Action::ReadReady { id, index } => self.on_read_ready(id, index),
                Action::ReadFailed { id } => self.on_read_failed(id),
                Action::SetTimer(t) => self.timer.arm(t),
                Action::TakeSnapshot => {
                    let _ = self.apply_tx.unbounded_send(ApplyOp::TakeSnapshot);
                }
                Action::RestoreSnapshot { meta } => {
                    self.settle_requests_covered_by(meta.last.index);
                    let _ = self.apply_tx.unbounded_send(ApplyOp::Restore(meta));
                }
                Action::PurgeLog { upto } => {
                    let _ = self.persist_tx.unbounded_send(StoreOp::Purge { upto });
                }
                Action::WriteSnapshotChunk { meta, offset, data } => {
                    let _ = self.persist_tx.unbounded_send(StoreOp::Chunk { meta, offset, data });
                }
                Action::LoadSnapshotChunk { peer, term, last, offset, len } => {
                    let request = snapshot::ChunkRequest { peer, term, last, offset, len };
                    let _ = self.chunk_tx.unbounded_send(request);
                }
            }
        }
    }

    /// Tells the network the members to reach (`Network::members_changed`) when they
    /// may have changed: the configuration in effect and the members being removed.
    fn tell_members(&self) {
        let generation = self.core.configs_generation();
        if self.members_told.get() != Some(generation) {
            self.members_told.set(Some(generation));
            self.senders.members_changed(&self.core.reachable_membership());
        }
    }

    /// Tells the core the wall clock, once per batch and only in a batch that may append
    /// session entries (which carry it): reading it costs a clock call, and most batches
    /// append none.
    fn tell_wall_clock(&mut self) {
        if !self.wall_clock_told {
            self.wall_clock_told = true;
            self.core.set_wall_clock(self.rt.wall_clock_ms());
        }
    }

    /// Copies the core's state into the shared status, without allocating in the
    /// common case (this runs after every batch).
    fn publish_status(&self) {
        let core = &self.core;
        *lock(&self.shared.counters) = core.counters();
        let leading = core.role() == Role::Leader;
        // Written only on a change: the handle's callers read it for every proposal.
        if self.shared.leading.load(Ordering::Relaxed) != leading {
            self.shared.leading.store(leading, Ordering::Relaxed);
        }
        let mut s = lock(&self.shared.status);
        let mut watchers = lock(&self.shared.watchers);
        let before = (!watchers.is_empty()).then(|| s.clone());
        s.role = core.role();
        s.term = core.term();
        s.leader = core.leader();
        s.commit_index = core.commit_index();
        s.applied_index = core.applied_index();
        s.last_log_index = core.last_index();
        s.last_log_term = core.last_term();
        s.voted_for = core.voted_for();
        s.durable_index = core.durable_index();
        s.cached_entries = core.cached_entries();
        s.snapshot_index = core.snapshot_meta().map_or(0, |m| m.last.index);
        s.first_log_index = core.first_log_index();
        if s.membership != *core.membership() {
            s.membership = core.membership().clone();
            s.is_voter = s.membership.is_voter(s.id);
        }
        self.tell_members();
        s.config_index = core.config_index();
        s.transferring_to = core.transferring_to();
        if core.role() == Role::Leader {
            for (id, m) in core.match_indexes() {
                *s.match_index.entry(id).or_default() = m;
            }
            if s.match_index.len() != core.match_indexes().count() {
                s.match_index = core.match_indexes().collect();
            }
        } else if !s.match_index.is_empty() {
            s.match_index.clear();
        }
        if before.is_some_and(|b| b != *s) {
            watchers.retain(|w| w.unbounded_send(s.clone()).is_ok());
        }
    }

    async fn stop(mut self, fatal: Option<String>) {
        if let Some(e) = &fatal {
            tracing::error!(node = self.core.id(), error = %e, "raft node stopping after a fatal error");
        } else {
            tracing::debug!(node = self.core.id(), "raft node shutting down");
        }
        {
            let mut s = lock(&self.shared.status);
            s.fatal_error = fatal.clone();
            s.stopped = true;
            // The watchers' streams end with this status.
            for w in std::mem::take(&mut *lock(&self.shared.watchers)) {
                let _ = w.unbounded_send(s.clone());
            }
        }
        let err = match fatal {
            Some(e) => ClientError::Fatal(e),
            None => ClientError::ShuttingDown,
        };
        self.fail_all_requests(&err);
        // Closing these channels ends the persist, apply, timer and sender tasks.
        drop(self.persist_tx);
        drop(self.apply_tx);
        drop(self.timer);
        self.senders.close().await;
    }
}

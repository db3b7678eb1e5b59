//! The async driver and the [`Raft`] handle.
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
//! - one **sender task per peer**, calling [`Network::send`] in order;
//! - the **timer task**, which sends a tick when the core's deadline passes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::{self, BoxFuture, Either, FutureExt};
use futures::StreamExt;

use crate::config::Config;
use crate::core::{Action, Input, PersistRequest, ProposeError, RaftCore, Role};
use crate::error::{ClientError, StartError, StoreError};
use crate::membership::Membership;
use crate::message::Message;
use crate::network::Network;
use crate::runtime::{DynClock, Runtime};
use crate::state_machine::StateMachine;
use crate::storage::LogStore;
use crate::sync::lock;
use crate::types::{Entry, EntryPayload, HardState, Instant, LogIndex, NodeId, Term};

/// Most events the protocol loop takes in one batch before it acts.
const MAX_BATCH: usize = 4096;

type Responder<SM> = oneshot::Sender<Result<<SM as StateMachine>::Response, ClientError>>;
type ReadResponder = oneshot::Sender<Result<LogIndex, ClientError>>;

enum Event<SM: StateMachine> {
    Message(Message),
    Propose { data: Bytes, tx: Responder<SM> },
    Read { tx: ReadResponder },
    Tick,
    Persisted { seq: u64 },
    Applied { index: LogIndex },
    Loaded { peer: NodeId, term: Term, entries: Result<Vec<Entry>, String> },
    Fatal(String),
    Shutdown,
}

/// Work for the apply task: committed entries to apply, in order, with the proposers
/// waiting for them here.
struct ApplyBatch<SM: StateMachine> {
    entries: Vec<Entry>,
    responders: Vec<(LogIndex, Responder<SM>)>,
    /// Keep the responses of these entries that no proposer here waits for (the last
    /// [`KEPT_RESPONSES`]): a forwarded batch's answer may still be on its way.
    keep_unclaimed: bool,
    /// Proposers whose entry was applied before they were registered (a forward's answer
    /// came late), answered from the kept responses: (index, term, proposer).
    claims: Vec<(LogIndex, Term, Responder<SM>)>,
}

/// How many responses the apply task keeps for proposers registered after their entry
/// was applied.
const KEPT_RESPONSES: usize = 4096;

/// A node's externally visible state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Whether this node is a voter in its current configuration (a non-voter is a
    /// learner).
    pub is_voter: bool,
    /// Current term.
    pub term: Term,
    /// The leader of the current term, if known.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: LogIndex,
    /// Highest index applied to the state machine.
    pub applied_index: LogIndex,
    /// Index of the last log entry.
    pub last_log_index: LogIndex,
    /// Highest index durable in the local store.
    pub durable_index: LogIndex,
    /// The membership configuration in effect.
    pub membership: Membership,
    /// When leader: each peer's match index.
    pub match_index: BTreeMap<NodeId, LogIndex>,
    /// Log entries held in memory by the protocol core (the rest is only in the store).
    pub cached_entries: usize,
    /// Set when the node stopped after a fatal error.
    pub fatal_error: Option<String>,
    /// Whether the node has stopped.
    pub stopped: bool,
}

struct Shared<SM> {
    status: Mutex<Status>,
    state_machine: Arc<Mutex<SM>>,
    tasks: Mutex<Vec<BoxFuture<'static, ()>>>,
    clock: Box<dyn DynClock>,
    request_timeout: Duration,
    /// Longest pause between retries while no leader is known.
    retry_max: Duration,
}

/// A handle to a running Raft node. Cheap to clone; all clones refer to the same node.
///
/// The node runs until [`Raft::shutdown`] (or a fatal store error); dropping every handle
/// does not stop it.
pub struct Raft<SM: StateMachine> {
    id: NodeId,
    tx: mpsc::UnboundedSender<Event<SM>>,
    shared: Arc<Shared<SM>>,
}

impl<SM: StateMachine> Clone for Raft<SM> {
    fn clone(&self) -> Self {
        Raft { id: self.id, tx: self.tx.clone(), shared: self.shared.clone() }
    }
}

impl<SM: StateMachine> Raft<SM> {
    /// Creates a new cluster member: writes the initial configuration (`members`, all
    /// voters) as the first log entry, then starts the node. Every initial member must
    /// be bootstrapped with the same `members`. Fails with
    /// [`StartError::AlreadyInitialized`] if the store already holds state; use
    /// [`Raft::restart`] then.
    pub async fn bootstrap<R: Runtime, S: LogStore, N: Network>(
        id: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        config: Config,
        runtime: R,
        mut store: S,
        network: N,
        state_machine: SM,
    ) -> Result<Self, StartError> {
        let members = Membership::new(members);
        if !members.voters.contains(&id) || members.voters.contains(&0) {
            return Err(StartError::Config(format!(
                "node {id} must be one of the members {:?} (and 0 is reserved)",
                members.voters
            )));
        }
        let init = store.initial_state().await?;
        if init.hard_state != HardState::default() || init.last.index != 0 || init.prev.index != 0 {
            return Err(StartError::AlreadyInitialized);
        }
        store.append(&[Entry { term: 0, index: 1, payload: EntryPayload::Membership(Box::new(members)) }]).await?;
        Self::restart(id, config, runtime, store, network, state_machine).await
    }

    /// Starts a node from what `store` holds (a fresh, empty store gives a node that
    /// waits to be contacted by a leader). `state_machine` must be empty: the log is
    /// applied to it from the start as the commit index becomes known.
    pub async fn restart<R: Runtime, S: LogStore, N: Network>(
        id: NodeId,
        config: Config,
        runtime: R,
        mut store: S,
        network: N,
        state_machine: SM,
    ) -> Result<Self, StartError> {
        config.validate()?;
        if id == 0 {
            return Err(StartError::Config("node id 0 is reserved".into()));
        }
        let init = store.initial_state().await?;
        let blocking_store = store.blocks_thread();
        let entries = if init.last.index > init.prev.index {
            store.entries(init.prev.index + 1, init.last.index + 1).await?
        } else {
            Vec::new()
        };
        if entries.len() as u64 != init.last.index - init.prev.index {
            return Err(StoreError::Corrupt(format!(
                "store reported entries {}..={} but returned {}",
                init.prev.index + 1,
                init.last.index,
                entries.len()
            ))
            .into());
        }
        let now = runtime.now();
        let core = RaftCore::new(id, config.clone(), init.hard_state, init.prev, entries, now);
        let cs = core.status();
        let status = Status {
            id,
            role: cs.role,
            is_voter: cs.membership.is_voter(id),
            term: cs.term,
            leader: cs.leader,
            commit_index: cs.commit_index,
            applied_index: cs.applied_index,
            last_log_index: cs.last_log.index,
            durable_index: cs.durable_index,
            membership: cs.membership,
            match_index: BTreeMap::new(),
            cached_entries: cs.cached_entries,
            fatal_error: None,
            stopped: false,
        };
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            state_machine: Arc::new(Mutex::new(state_machine)),
            tasks: Mutex::new(Vec::new()),
            clock: Box::new(runtime.clone()),
            request_timeout: config.request_timeout,
            retry_max: config.heartbeat_interval,
        });
        let (tx, rx) = mpsc::unbounded();
        let (persist_tx, persist_rx) = mpsc::unbounded();
        let (apply_tx, apply_rx) = mpsc::unbounded();
        let (wake_tx, wake_rx) = mpsc::unbounded();
        let timer = Arc::new(TimerShared { deadline: AtomicU64::new(u64::MAX), sleeping_until: AtomicU64::new(0) });

        let mut handles: Vec<BoxFuture<'static, ()>> = Vec::new();
        // The store task runs on the runtime's workers; a store whose calls block has
        // its leader-side work moved to a blocking thread (see `persist_task`).
        let store_task = persist_task::<SM, S, R>(id, store, blocking_store, runtime.clone(), persist_rx, tx.clone());
        handles.push(runtime.spawn(store_task).boxed());
        handles.push(runtime.spawn(apply_task::<SM>(id, shared.state_machine.clone(), apply_rx, tx.clone())).boxed());
        handles.push(runtime.spawn(timer_task::<SM, R>(runtime.clone(), timer.clone(), wake_rx, tx.clone())).boxed());
        let driver = Driver {
            core,
            rt: runtime.clone(),
            network: Arc::new(network),
            shared: shared.clone(),
            persist_tx,
            apply_tx,
            wake_tx,
            timer,
            peers: BTreeMap::new(),
            peer_tasks: Vec::new(),
            pending: VecDeque::new(),
            forward_batch: Vec::new(),
            read_batch: Vec::new(),
            forwards: HashMap::new(),
            reads: HashMap::new(),
            requests_leader: None,
            read_waiters: BTreeMap::new(),
            handed_to_apply: 0,
            applied: 0,
            core_deadline: u64::MAX,
            retry_deadline: None,
        };
        handles.push(runtime.spawn(driver.run(rx)).boxed());
        *lock(&shared.tasks) = handles;
        Ok(Raft { id, tx, shared })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Proposes a command. Resolves to the state machine's response once the command is
    /// committed and applied on this node. Any node accepts proposals: a follower
    /// forwards them to the leader and answers once it has applied them itself.
    ///
    /// Waits at most [`Config::request_timeout`], retrying while no leader is known.
    /// Errors: [`ClientError::NoLeader`] when no leader was found in time (nothing was
    /// appended), [`ClientError::Timeout`] when a leader took the command but no answer
    /// came in time (it may still take effect), [`ClientError::Dropped`] when a different
    /// entry was committed at its position, [`ClientError::Overloaded`] under
    /// back-pressure, [`ClientError::ShuttingDown`] when the node stops first.
    pub async fn propose(&self, command: SM::Command) -> Result<SM::Response, ClientError> {
        let data = encode_command(command)?;
        self.with_retries(|tx| Event::Propose { data: data.clone(), tx }).await
    }

    /// Runs `f` on the state machine once it reflects every write acknowledged before this
    /// call began: a linearizable read by ReadIndex (thesis §6.4). The leader confirms
    /// its leadership with a quorum round (shared by concurrent reads) and reports its
    /// commit index; this node, leader or follower, runs `f` once it has applied up to
    /// that index. Errors as for [`Raft::propose`]; a read has no side effect, so every
    /// error means it was not served.
    pub async fn read<T>(&self, f: impl FnOnce(&SM) -> T) -> Result<T, ClientError> {
        self.read_index().await?;
        Ok(f(&lock(&self.shared.state_machine)))
    }

    /// Waits until this node's state machine reflects every write acknowledged before the
    /// call began (see [`Raft::read`]) and returns the read index it waited for.
    pub async fn read_index(&self) -> Result<LogIndex, ClientError> {
        self.with_retries(|tx| Event::Read { tx }).await
    }

    /// Sends the event made by `make` and waits for its answer, retrying while the
    /// answer is "not the leader", within the request timeout.
    async fn with_retries<T>(
        &self,
        mut make: impl FnMut(oneshot::Sender<Result<T, ClientError>>) -> Event<SM>,
    ) -> Result<T, ClientError> {
        let clock = &self.shared.clock;
        let deadline = clock.now().add(self.shared.request_timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            let (tx, rx) = oneshot::channel();
            self.tx.unbounded_send(make(tx)).map_err(|_| self.stopped_error())?;
            let answer = match future::select(rx, clock.sleep_until(deadline)).await {
                Either::Left((Ok(answer), _)) => answer,
                Either::Left((Err(_), _)) => return Err(self.stopped_error()),
                Either::Right(_) => return Err(ClientError::Timeout),
            };
            match answer {
                Err(ClientError::NotLeader { .. }) => {
                    let now = clock.now();
                    if now >= deadline {
                        return Err(ClientError::NoLeader);
                    }
                    let wake = now.add(pause).min(deadline);
                    clock.sleep_until(wake).await;
                    if wake >= deadline {
                        return Err(ClientError::NoLeader);
                    }
                    pause = (pause * 2).min(self.shared.retry_max);
                }
                other => return other,
            }
        }
    }

    fn stopped_error(&self) -> ClientError {
        match &lock(&self.shared.status).fatal_error {
            Some(e) => ClientError::Fatal(e.clone()),
            None => ClientError::ShuttingDown,
        }
    }

    /// Hands a message from a peer to this node. Never blocks; after shutdown the
    /// message is dropped.
    pub fn receive(&self, message: Message) {
        let _ = self.tx.unbounded_send(Event::Message(message));
    }

    /// The node's current status.
    pub fn status(&self) -> Status {
        lock(&self.shared.status).clone()
    }

    /// Runs `f` on the current status without copying it.
    pub fn with_status<T>(&self, f: impl FnOnce(&Status) -> T) -> T {
        f(&lock(&self.shared.status))
    }

    /// Runs `f` on the local state machine. The state may be stale: it reflects what
    /// this node has applied, which can lag the cluster.
    pub fn read_local_stale<T>(&self, f: impl FnOnce(&SM) -> T) -> T {
        f(&lock(&self.shared.state_machine))
    }

    /// Stops the node: the protocol loop ends, pending proposals fail with
    /// [`ClientError::ShuttingDown`], and every task of the node has finished when this
    /// returns.
    pub async fn shutdown(&self) {
        let _ = self.tx.unbounded_send(Event::Shutdown);
        let tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        future::join_all(tasks).await;
        lock(&self.shared.status).stopped = true;
    }
}

struct TimerShared {
    /// The core's next deadline, in runtime nanoseconds.
    deadline: AtomicU64,
    /// The deadline the timer task is sleeping toward.
    sleeping_until: AtomicU64,
}

struct Driver<SM: StateMachine, R: Runtime, N: Network> {
    core: RaftCore,
    rt: R,
    network: Arc<N>,
    shared: Arc<Shared<SM>>,
    persist_tx: mpsc::UnboundedSender<StoreOp>,
    apply_tx: mpsc::UnboundedSender<ApplyBatch<SM>>,
    wake_tx: mpsc::UnboundedSender<()>,
    timer: Arc<TimerShared>,
    peers: BTreeMap<NodeId, mpsc::UnboundedSender<Message>>,
    peer_tasks: Vec<R::JoinHandle>,
    /// Proposals waiting for their entry to be applied: (index, term, responder), in
    /// index order.
    pending: VecDeque<(LogIndex, Term, Responder<SM>)>,
    /// Proposals made on a follower in the current batch, forwarded together.
    forward_batch: Vec<(Bytes, Responder<SM>)>,
    /// Reads asked for in the current batch; they share one read index.
    read_batch: Vec<ReadResponder>,
    /// Forwarded batches waiting for the leader's answer.
    forwards: HashMap<u64, Forwarded<SM>>,
    /// Read groups waiting for their read index.
    reads: HashMap<u64, ReadGroup>,
    /// The leader known when the waiting forwards and reads were last checked.
    requests_leader: Option<NodeId>,
    /// Reads whose index is known, waiting for the state machine to apply it.
    read_waiters: BTreeMap<LogIndex, Vec<ReadResponder>>,
    /// Last index handed to the apply task.
    handed_to_apply: LogIndex,
    /// Last index the apply task reported applied.
    applied: LogIndex,
    /// The core's timer deadline (runtime nanoseconds), from its last `SetTimer`.
    core_deadline: u64,
    /// When the oldest unanswered forward or read-index request is due to be sent again
    /// (it may have been answered since: then the tick finds nothing to do).
    retry_deadline: Option<Instant>,
}

/// A batch of proposals forwarded to the leader, waiting for its answer.
struct Forwarded<SM: StateMachine> {
    /// The leader it went to.
    to: Option<NodeId>,
    /// When it was first sent.
    sent: Instant,
    /// When it was last sent (first or again).
    resent: Instant,
    /// The commands, to send again if no answer comes.
    commands: Vec<Bytes>,
    /// Its proposers, in the batch's order.
    responders: Vec<Responder<SM>>,
}

/// Reads that share one read index asked of the leader, waiting for its answer.
struct ReadGroup {
    /// The leader asked (this node, on the leader).
    to: Option<NodeId>,
    /// When it was last asked.
    resent: Instant,
    /// The readers.
    waiters: Vec<ReadResponder>,
}

impl<SM: StateMachine, R: Runtime, N: Network> Driver<SM, R, N> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event<SM>>) {
        let mut fatal = None;
        let now = self.rt.now();
        let actions = self.core.take_actions(now);
        self.dispatch(actions);
        'outer: while let Some(first) = rx.next().await {
            let now = self.rt.now();
            let mut next = Some(first);
            let mut n = 0;
            while let Some(ev) = next.take() {
                match ev {
                    Event::Message(m) => self.core.step(now, Input::Message(m)),
                    Event::Propose { data, tx } => {
                        if self.core.role() == Role::Leader {
                            self.propose(data, tx)
                        } else {
                            self.forward_batch.push((data, tx))
                        }
                    }
                    Event::Read { tx } => self.read_batch.push(tx),
                    Event::Tick => {
                        self.core.step(now, Input::Tick);
                        self.forget_abandoned_requests();
                        self.resend_unanswered_requests(now);
                    }
                    Event::Persisted { seq } => self.core.step(now, Input::Persisted { seq }),
                    Event::Applied { index } => {
                        self.core.step(now, Input::Applied { index });
                        self.on_applied(index);
                    }
                    Event::Loaded { peer, term, entries } => {
                        self.core.step(now, Input::EntriesLoaded { peer, term, entries })
                    }
                    Event::Fatal(e) => {
                        fatal = Some(e);
                        break 'outer;
                    }
                    Event::Shutdown => break 'outer,
                }
                n += 1;
                if n < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            // A second round when answers to forwards, arriving in this batch, made room
            // for the proposals held back (the flush then empties the batch).
            loop {
                self.flush_client_batches(now);
                let actions = self.core.take_actions(now);
                self.dispatch(actions);
                if self.forward_batch.is_empty() || !self.may_forward(now) {
                    break;
                }
            }
            self.settle_requests_to_former_leaders();
            self.publish_status();
        }
        self.stop(fatal).await;
    }

    fn propose(&mut self, data: Bytes, tx: Responder<SM>) {
        match self.core.propose(std::iter::once(data)) {
            Ok((index, term)) => self.insert_pending(index, term, tx),
            Err(e) => {
                let _ = tx.send(Err(propose_error(e)));
            }
        }
    }

    /// Records a proposal waiting for (index, term) to be applied. An entry truncated
    /// from this node's log may still be committed by a later leader that holds it, so
    /// a proposal is settled only when its index is applied: by its own entry (the
    /// response) or by another one ([`ClientError::Dropped`]).
    fn insert_pending(&mut self, index: LogIndex, term: Term, tx: Responder<SM>) {
        if index <= self.handed_to_apply {
            // Handed to the apply task before the leader's answer reached us (it came late,
            // or was lost and asked for again): the apply task answers from the responses
            // it kept, if it still has this one.
            let claims = vec![(index, term, tx)];
            let batch = ApplyBatch { entries: Vec::new(), responders: Vec::new(), keep_unclaimed: false, claims };
            let _ = self.apply_tx.unbounded_send(batch);
            return;
        }
        if self.pending.back().is_none_or(|p| p.0 <= index) {
            self.pending.push_back((index, term, tx));
        } else {
            let at = self.pending.partition_point(|p| p.0 <= index);
            self.pending.insert(at, (index, term, tx));
        }
    }

    /// Whether proposals made here may leave now: always on a leader; on a follower while
    /// fewer than `max_forwards_in_flight` forwarded batches, sent within the last two
    /// heartbeat intervals, wait for the leader's answer.
    fn may_forward(&self, now: Instant) -> bool {
        if self.core.role() == Role::Leader {
            return true;
        }
        let lost_after = self.answer_lost_after();
        let waiting = self.forwards.values().filter(|f| now.saturating_since(f.sent) < lost_after).count();
        waiting < self.core.cfg.max_forwards_in_flight
    }

    /// How long a request to the leader waits for its answer before the answer counts as
    /// lost: two heartbeat intervals.
    fn answer_lost_after(&self) -> Duration {
        self.core.cfg.heartbeat_interval * 2
    }

    /// Makes sure a tick comes when a request sent at `sent` is due to be sent again.
    fn schedule_resend(&mut self, sent: Instant) {
        let due = sent.add(self.answer_lost_after());
        if self.retry_deadline.is_none_or(|d| due < d) {
            self.retry_deadline = Some(due);
            self.arm_timer();
        }
    }

    /// Points the timer task at the earlier of the core's deadline and the resend one.
    fn arm_timer(&self) {
        let t = self.retry_deadline.map_or(self.core_deadline, |d| d.as_nanos().min(self.core_deadline));
        if self.timer.deadline.swap(t, Ordering::SeqCst) != t && t < self.timer.sleeping_until.load(Ordering::SeqCst) {
            let _ = self.wake_tx.unbounded_send(());
        }
    }

    /// Sends again the forwards and read-index requests to the current leader that have
    /// had no answer for [`Self::answer_lost_after`] (it was lost with a message or a
    /// connection): the leader answers a repeated forward as it did the first time, or
    /// with "unknown" if it no longer knows it, and serves a repeated read again.
    /// Requests to a former leader are settled by
    /// [`Self::settle_requests_to_former_leaders`] instead.
    fn resend_unanswered_requests(&mut self, now: Instant) {
        if self.retry_deadline.is_none_or(|d| now < d) {
            return;
        }
        self.retry_deadline = None;
        let lost_after = self.answer_lost_after();
        let leader = match self.core.leader() {
            Some(l) if self.core.role() != Role::Leader => l,
            _ => {
                self.arm_timer();
                return;
            }
        };
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        let core = &mut self.core;
        let node = core.id();
        for (&id, f) in self.forwards.iter_mut().filter(|(_, f)| f.to == Some(leader)) {
            let send = || {
                tracing::debug!(node, id, "no answer to a forward: sending it again");
                core.forward_again(id, f.commands.clone()).is_ok()
            };
            if let Some(t) = resend_if_due(&mut f.resent, now, lost_after, send) {
                earliest(t);
            }
        }
        for (&id, r) in self.reads.iter_mut().filter(|(_, r)| r.to == Some(leader)) {
            let send = || {
                tracing::debug!(node, id, "no answer to a read-index request: asking again");
                core.read_index_again(id).is_ok()
            };
            if let Some(t) = resend_if_due(&mut r.resent, now, lost_after, send) {
                earliest(t);
            }
        }
        if let Some(t) = next {
            self.schedule_resend(t);
        } else {
            self.arm_timer();
        }
    }

    /// Sends this batch's follower proposals to the leader as one message (unless
    /// [`Self::may_forward`] holds them back for a later batch), and asks for one read
    /// index for this batch's reads.
    fn flush_client_batches(&mut self, now: Instant) {
        if !self.forward_batch.is_empty() && self.may_forward(now) {
            let batch = std::mem::take(&mut self.forward_batch);
            if self.core.role() == Role::Leader {
                for (data, tx) in batch {
                    self.propose(data, tx);
                }
            } else {
                let (commands, responders): (Vec<Bytes>, Vec<Responder<SM>>) = batch.into_iter().unzip();
                match self.core.forward(commands.clone()) {
                    Ok(id) => {
                        let to = self.core.leader();
                        self.forwards.insert(id, Forwarded { to, sent: now, resent: now, commands, responders });
                        self.schedule_resend(now);
                    }
                    Err(e) => {
                        for tx in responders {
                            let _ = tx.send(Err(propose_error(e)));
                        }
                    }
                }
            }
        }
        if !self.read_batch.is_empty() {
            let batch = std::mem::take(&mut self.read_batch);
            match self.core.read_index() {
                Ok(id) => {
                    self.reads.insert(id, ReadGroup { to: self.core.leader(), resent: now, waiters: batch });
                    if self.core.role() != Role::Leader {
                        self.schedule_resend(now);
                    }
                }
                Err(e) => {
                    for tx in batch {
                        let _ = tx.send(Err(propose_error(e)));
                    }
                }
            }
        }
    }

    fn on_forwarded(&mut self, id: u64, result: Result<(LogIndex, Term), ProposeError>) {
        let Some(Forwarded { responders, .. }) = self.forwards.remove(&id) else { return };
        match result {
            Ok((first, term)) => {
                for (i, tx) in responders.into_iter().enumerate() {
                    self.insert_pending(first + i as u64, term, tx);
                }
            }
            Err(e) => {
                for tx in responders {
                    let _ = tx.send(Err(propose_error(e)));
                }
            }
        }
    }

    fn on_read_ready(&mut self, id: u64, index: LogIndex) {
        let Some(ReadGroup { waiters, .. }) = self.reads.remove(&id) else { return };
        if index <= self.applied {
            for tx in waiters {
                let _ = tx.send(Ok(index));
            }
        } else {
            self.read_waiters.entry(index).or_default().extend(waiters);
        }
    }

    fn on_read_failed(&mut self, id: u64) {
        let Some(ReadGroup { waiters, .. }) = self.reads.remove(&id) else { return };
        let leader = self.core.leader();
        for tx in waiters {
            let _ = tx.send(Err(ClientError::NotLeader { leader }));
        }
    }

    fn on_applied(&mut self, index: LogIndex) {
        self.applied = self.applied.max(index);
        while let Some(entry) = self.read_waiters.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            let read_index = *entry.key();
            for tx in entry.remove() {
                let _ = tx.send(Ok(read_index));
            }
        }
    }

    /// Forgets forwarded batches and read groups whose callers have all given up (the
    /// answer was lost with a message, or the leader died), so they do not accumulate.
    fn forget_abandoned_requests(&mut self) {
        self.forwards.retain(|_, f| f.responders.iter().any(|tx| !tx.is_canceled()));
        self.reads.retain(|_, r| r.waiters.iter().any(|tx| !tx.is_canceled()));
    }

    /// Answers the forwarded batches and reads that went to a node this one no longer
    /// takes for the leader: that leader's answer may never come (it crashed, or lost
    /// its leadership), and waiting for the request timeout would stall every client of
    /// this node for that long after a failover. A forwarded batch may have been appended
    /// by the former leader and still be committed, so it ends as
    /// [`ClientError::Indeterminate`]; a read has no effect and ends as
    /// [`ClientError::NotLeader`], which [`Raft::read`] retries at the new leader.
    fn settle_requests_to_former_leaders(&mut self) {
        let leader = self.core.leader();
        if leader == self.requests_leader {
            return;
        }
        self.requests_leader = leader;
        let former = |to: &Option<NodeId>| *to != leader;
        if self.forwards.values().any(|f| former(&f.to)) {
            let ids: Vec<u64> = self.forwards.iter().filter(|(_, f)| former(&f.to)).map(|(id, _)| *id).collect();
            for id in ids {
                for tx in self.forwards.remove(&id).map(|f| f.responders).unwrap_or_default() {
                    let _ = tx.send(Err(ClientError::Indeterminate));
                }
            }
        }
        if self.reads.values().any(|r| former(&r.to)) {
            let ids: Vec<u64> = self.reads.iter().filter(|(_, r)| former(&r.to)).map(|(id, _)| *id).collect();
            for id in ids {
                for tx in self.reads.remove(&id).map(|r| r.waiters).unwrap_or_default() {
                    let _ = tx.send(Err(ClientError::NotLeader { leader }));
                }
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
                Action::Send(msg) => self.send(msg),
                Action::Apply(entries) => self.apply(entries),
                Action::Forwarded { id, result } => self.on_forwarded(id, result),
                Action::ReadReady { id, index } => self.on_read_ready(id, index),
                Action::ReadFailed { id } => self.on_read_failed(id),
                Action::SetTimer(t) => {
                    self.core_deadline = t.as_nanos();
                    self.arm_timer();
                }
            }
        }
    }

    fn send(&mut self, msg: Message) {
        let to = msg.to;
        tracing::trace!(node = self.core.id(), to, term = msg.term, body = ?MessageKind(&msg), "send");
        let tx = self.peers.entry(to).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded::<Message>();
            let net = self.network.clone();
            let from = self.core.id();
            self.peer_tasks.push(self.rt.spawn(async move {
                while let Some(m) = rx.next().await {
                    if let Err(e) = net.send(to, m).await {
                        tracing::debug!(node = from, peer = to, error = %e, "send failed");
                    }
                }
            }));
            tx
        });
        let _ = tx.unbounded_send(msg);
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let (Some(first), Some(last)) = (entries.first().map(|e| e.index), entries.last().map(|e| e.index)) else {
            return;
        };
        self.handed_to_apply = last;
        let mut responders = Vec::new();
        while self.pending.front().is_some_and(|p| p.0 <= last) {
            let Some((index, term, tx)) = self.pending.pop_front() else { break };
            let same = index >= first && entries.get((index - first) as usize).is_some_and(|e| e.term == term);
            if same {
                responders.push((index, tx));
            } else {
                let _ = tx.send(Err(ClientError::Dropped));
            }
        }
        // Only a follower with forwards unanswered can get a late answer for these entries.
        let keep_unclaimed = !self.forwards.is_empty();
        let batch = ApplyBatch { entries, responders, keep_unclaimed, claims: Vec::new() };
        let _ = self.apply_tx.unbounded_send(batch);
    }

    /// Copies the core's state into the shared status, without allocating in the
    /// common case (this runs after every batch).
    fn publish_status(&self) {
        let core = &self.core;
        let mut s = lock(&self.shared.status);
        s.role = core.role();
        s.term = core.term();
        s.leader = core.leader();
        s.commit_index = core.commit_index();
        s.applied_index = core.applied_index();
        s.last_log_index = core.last_index();
        s.durable_index = core.durable_index();
        s.cached_entries = core.cached_entries();
        if s.membership != *core.membership() {
            s.membership = core.membership().clone();
            s.is_voter = s.membership.is_voter(s.id);
        }
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
        }
        let err = match fatal {
            Some(e) => ClientError::Fatal(e),
            None => ClientError::ShuttingDown,
        };
        for (_, _, tx) in self.pending.drain(..) {
            let _ = tx.send(Err(err.clone()));
        }
        let forwarded = self.forwards.drain().flat_map(|(_, f)| f.responders);
        for tx in self.forward_batch.drain(..).map(|(_, tx)| tx).chain(forwarded) {
            let _ = tx.send(Err(err.clone()));
        }
        let reads = self.reads.drain().flat_map(|(_, r)| r.waiters);
        let waiting = std::mem::take(&mut self.read_waiters).into_values().flatten();
        for tx in self.read_batch.drain(..).chain(reads).chain(waiting) {
            let _ = tx.send(Err(err.clone()));
        }
        // Closing these channels ends the persist, apply, timer and sender tasks.
        self.peers.clear();
        drop(self.persist_tx);
        drop(self.apply_tx);
        drop(self.wake_tx);
        future::join_all(self.peer_tasks).await;
    }
}

/// Sends a request to the leader again with `send` if it has had no answer for
/// `lost_after` since it was last sent at `resent` (then `resent` becomes `now`). Returns
/// when it was last sent, or `None` if the core refused to send it (no leader to send it
/// to: it is settled once this node follows another leader).
fn resend_if_due(
    resent: &mut Instant,
    now: Instant,
    lost_after: Duration,
    send: impl FnOnce() -> bool,
) -> Option<Instant> {
    if now.saturating_since(*resent) >= lost_after {
        if !send() {
            return None;
        }
        *resent = now;
    }
    Some(*resent)
}

/// Encodes a command into a buffer of exactly its size, and drops the command: whatever
/// it holds (often a request's body, which shares the HTTP server's read buffer) is
/// released before the proposal waits for its commit, not after.
fn encode_command<C: serde::Serialize>(command: C) -> Result<Bytes, ClientError> {
    let encode_error = |e: postcard::Error| ClientError::Encode(e.to_string());
    let size = postcard::experimental::serialized_size(&command).map_err(encode_error)?;
    let data = postcard::to_extend(&command, Vec::with_capacity(size)).map_err(encode_error)?;
    Ok(Bytes::from(data))
}

fn propose_error(e: ProposeError) -> ClientError {
    match e {
        ProposeError::NotLeader(leader) => ClientError::NotLeader { leader },
        ProposeError::Overloaded => ClientError::Overloaded,
        ProposeError::OutcomeUnknown => ClientError::Indeterminate,
    }
}

/// A short description of a message for trace logs.
struct MessageKind<'a>(&'a Message);

impl std::fmt::Debug for MessageKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::message::MessageBody as B;
        match &self.0.body {
            B::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                write!(f, "Append(prev={prev_log_index}/{prev_log_term}, n={}, commit={leader_commit})", entries.len())
            }
            other => write!(f, "{other:?}"),
        }
    }
}

/// Work for the task that owns the store.
enum StoreOp {
    /// A write, with whether the node was leader when it asked for it.
    Persist {
        req: PersistRequest,
        leader: bool,
    },
    Load {
        peer: NodeId,
        term: Term,
        start: LogIndex,
        end: LogIndex,
    },
}

/// Carries out the store operations in order, merging queued writes (group commit).
///
/// Where the calls of a store block their thread ([`LogStore::blocks_thread`]), a
/// follower's writes run right here, on the worker that runs this task: a follower acts
/// on nothing while its write is pending (its acknowledgement waits for it), so running
/// it here saves two thread hand-offs on every replicated write's path, and the
/// runtime's other workers go on with everything else. A leader's writes and reads run
/// on a blocking thread ([`Runtime::spawn_blocking_task`]) instead, so that a slow disk
/// never holds up its heartbeats and replication, which go on while it writes.
async fn persist_task<SM: StateMachine, S: LogStore, R: Runtime>(
    id: NodeId,
    store: S,
    blocking: bool,
    rt: R,
    mut rx: mpsc::UnboundedReceiver<StoreOp>,
    tx: mpsc::UnboundedSender<Event<SM>>,
) {
    let mut store = Some(store);
    let mut queue = VecDeque::new();
    while let Some(first) = rx.next().await {
        queue.push_back(first);
        while let Ok(more) = rx.try_recv() {
            queue.push_back(more);
        }
        while let Some(op) = queue.pop_front() {
            // Group commit: persist requests queued meanwhile go to the store together.
            let op = match op {
                StoreOp::Persist { mut req, mut leader } => {
                    while let Some(StoreOp::Persist { .. }) = queue.front() {
                        if let Some(StoreOp::Persist { req: more, leader: l }) = queue.pop_front() {
                            merge_persist(&mut req, more);
                            leader |= l;
                        }
                    }
                    StoreOp::Persist { req, leader }
                }
                load => load,
            };
            let off_thread = blocking && !matches!(op, StoreOp::Persist { leader: false, .. });
            let Some(mut s) = store.take() else { return };
            let ok = if off_thread {
                let (done_tx, done_rx) = oneshot::channel();
                let events = tx.clone();
                drop(rt.spawn_blocking_task(async move {
                    let ok = store_op(id, &mut s, op, &events).await;
                    let _ = done_tx.send((s, ok));
                }));
                match done_rx.await {
                    Ok((s, ok)) => {
                        store = Some(s);
                        ok
                    }
                    Err(_) => {
                        let _ = tx.unbounded_send(Event::Fatal("the log store's thread stopped".into()));
                        false
                    }
                }
            } else {
                let ok = store_op(id, &mut s, op, &tx).await;
                store = Some(s);
                ok
            };
            if !ok {
                return;
            }
        }
    }
}

/// Carries out one store operation; false after a fatal store error.
async fn store_op<SM: StateMachine, S: LogStore>(
    id: NodeId,
    store: &mut S,
    op: StoreOp,
    tx: &mpsc::UnboundedSender<Event<SM>>,
) -> bool {
    match op {
        StoreOp::Persist { req, .. } => persist(id, store, req, tx).await,
        StoreOp::Load { peer, term, start, end } => {
            let entries = store.entries(start, end).await.map_err(|e| e.to_string());
            let _ = tx.unbounded_send(Event::Loaded { peer, term, entries });
            true
        }
    }
}

/// Carries out one persist request; false after a fatal store error.
async fn persist<SM: StateMachine, S: LogStore>(
    id: NodeId,
    store: &mut S,
    req: PersistRequest,
    tx: &mpsc::UnboundedSender<Event<SM>>,
) -> bool {
    {
        let result = async {
            if let Some(hs) = &req.hard_state {
                store.save_hard_state(hs).await?;
            }
            if let Some(from) = req.truncate_from {
                store.truncate(from).await?;
            }
            if !req.entries.is_empty() {
                store.append(&req.entries).await?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                let _ = tx.unbounded_send(Event::Persisted { seq: req.seq });
                true
            }
            Err(e) => {
                tracing::error!(node = id, error = %e, "log store write failed; stopping (fail-stop)");
                let _ = tx.unbounded_send(Event::Fatal(format!("log store write failed: {e}")));
                false
            }
        }
    }
}

/// Folds `later` into `acc` so that carrying out the result equals carrying out both in
/// order.
fn merge_persist(acc: &mut PersistRequest, later: PersistRequest) {
    acc.seq = later.seq;
    if later.hard_state.is_some() {
        acc.hard_state = later.hard_state;
    }
    if let Some(t) = later.truncate_from {
        acc.entries.retain(|e| e.index < t);
        acc.truncate_from = Some(acc.truncate_from.map_or(t, |a| a.min(t)));
    }
    acc.entries.extend(later.entries);
}

async fn apply_task<SM: StateMachine>(
    id: NodeId,
    sm: Arc<Mutex<SM>>,
    mut rx: mpsc::UnboundedReceiver<ApplyBatch<SM>>,
    tx: mpsc::UnboundedSender<Event<SM>>,
) {
    let mut answers = Vec::new();
    // Responses no proposer here waited for, in index order (see `ApplyBatch`).
    let mut kept: VecDeque<(LogIndex, Term, Result<SM::Response, ClientError>)> = VecDeque::new();
    while let Some(batch) = rx.next().await {
        let mut last = 0;
        let mut responders = batch.responders.into_iter().peekable();
        let mut sm = lock(&sm);
        for entry in batch.entries {
            let (index, term) = (entry.index, entry.term);
            last = index;
            let result = match entry.payload {
                EntryPayload::Command(data) => match postcard::from_bytes::<SM::Command>(&data) {
                    Ok(cmd) => Ok(sm.apply(index, cmd)),
                    Err(e) => {
                        tracing::error!(node = id, index, error = %e, "committed command does not decode; skipped");
                        Err(ClientError::Encode(format!("command at index {index} does not decode: {e}")))
                    }
                },
                _ => continue,
            };
            if responders.peek().is_some_and(|(i, _)| *i == index) {
                if let Some((_, r)) = responders.next() {
                    answers.push((r, result));
                }
            } else if batch.keep_unclaimed {
                if kept.len() == KEPT_RESPONSES {
                    kept.pop_front();
                }
                kept.push_back((index, term, result));
            }
        }
        drop(sm);
        for (index, term, r) in batch.claims {
            let result = match kept.binary_search_by_key(&index, |k| k.0) {
                Ok(at) if kept[at].1 == term => kept.remove(at).map_or(Err(ClientError::Indeterminate), |k| k.2),
                // Another entry was committed at that position.
                Ok(_) => Err(ClientError::Dropped),
                // Not kept (or kept too long ago): it may or may not be this one.
                Err(_) => Err(ClientError::Indeterminate),
            };
            answers.push((r, result));
        }
        // The protocol loop hears of the progress first and the proposers last: on a
        // runtime that runs the task it woke last first (tokio's LIFO slot), a client's
        // answer then goes out before the loop's next round of messages, not after it.
        if last > 0 && tx.unbounded_send(Event::Applied { index: last }).is_err() {
            return;
        }
        for (r, result) in answers.drain(..) {
            let _ = r.send(result);
        }
    }
}

async fn timer_task<SM: StateMachine, R: Runtime>(
    rt: R,
    timer: Arc<TimerShared>,
    mut wake_rx: mpsc::UnboundedReceiver<()>,
    tx: mpsc::UnboundedSender<Event<SM>>,
) {
    let mut fired = None;
    loop {
        let deadline = timer.deadline.load(Ordering::SeqCst);
        if fired == Some(deadline) {
            // Already ticked for this deadline: wait for a new one.
            timer.sleeping_until.store(u64::MAX, Ordering::SeqCst);
            if timer.deadline.load(Ordering::SeqCst) != deadline {
                continue;
            }
            if wake_rx.next().await.is_none() {
                return;
            }
            continue;
        }
        timer.sleeping_until.store(deadline, Ordering::SeqCst);
        if timer.deadline.load(Ordering::SeqCst) != deadline {
            continue;
        }
        let sleep = rt.sleep_until(crate::types::Instant::from_nanos(deadline));
        match future::select(Box::pin(sleep), wake_rx.next()).await {
            Either::Left(_) => {
                let now = rt.now().as_nanos();
                let current = timer.deadline.load(Ordering::SeqCst);
                if now >= current {
                    fired = Some(current);
                    if tx.unbounded_send(Event::Tick).is_err() {
                        return;
                    }
                }
            }
            Either::Right((None, _)) => return,
            Either::Right((Some(()), _)) => {}
        }
    }
}

//! [`Raft`], the handle to a running node: start it ([`Raft::bootstrap`],
//! [`Raft::restart`]), propose, read, inspect and stop it. The handle is not generic over
//! the runtime or the store; it talks to the protocol loop through its event channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::{self, BoxFuture, Either, FutureExt};
use futures::stream::{self, Stream, StreamExt};
use tracing::Instrument;

use super::apply::{apply_task, ApplyContext};
use super::persist::persist_task;
use super::requests::Requests;
use super::sender::Senders;
use super::snapshot::{restore_at_start, Applied};
use super::timer::Timer;
use super::{Driver, Event, Waiter};
use crate::config::Config;
use crate::core::RaftCore;
use crate::core::Role;
use crate::error::{ClientError, StartError, StoreError, WaitError};
use crate::membership::Membership;
use crate::message::Message;
use crate::network::Network;
use crate::runtime::{DynClock, Runtime};
use crate::session::{client_for_key, ClientId, SessionOp, IMPLICIT};
use crate::snapshot::SnapshotMeta;
use crate::state_machine::StateMachine;
use crate::status::Status;
use crate::storage::{InitialState, LogStore};
use crate::sync::lock;
use crate::types::{Entry, EntryPayload, LogIndex, NodeId, Proposal};

pub(super) struct Shared<SM> {
    pub(super) status: Mutex<Status>,
    pub(super) counters: Mutex<crate::metrics::Counters>,
    /// The driver's timings, recorded by its tasks.
    pub(super) latencies: Arc<crate::metrics::DriverLatencies>,
    /// The streams of [`Raft::watch`]: each gets every new status.
    pub(super) watchers: Mutex<Vec<mpsc::UnboundedSender<Status>>>,
    pub(super) state_machine: Arc<Mutex<SM>>,
    tasks: Mutex<Vec<BoxFuture<'static, ()>>>,
    pub(super) clock: Box<dyn DynClock>,
    request_timeout: Duration,
    /// [`Config::learner_catch_up_entries`].
    pub(super) learner_catch_up_entries: u64,
    /// Longest pause between retries while no leader is known.
    retry_max: Duration,
    /// The session this node forwards its callers' commands in.
    node_session: Mutex<NodeSession>,
    /// Whether the node led when it last published its status: [`Raft::propose`] then
    /// proposes outside the node's session.
    pub(super) leading: AtomicBool,
}

impl<SM> Shared<SM> {
    /// The state shared by a node's handle and tasks, as `core` starts.
    fn new<R: Runtime>(core: &RaftCore, state_machine: Arc<Mutex<SM>>, runtime: &R, config: &Config) -> Self {
        Shared {
            status: Mutex::new(core.status()),
            counters: Mutex::new(core.counters()),
            latencies: Arc::default(),
            watchers: Mutex::new(Vec::new()),
            state_machine,
            tasks: Mutex::new(Vec::new()),
            clock: Box::new(runtime.clone()),
            request_timeout: config.request_timeout,
            learner_catch_up_entries: config.learner_catch_up_entries,
            retry_max: config.heartbeat_interval,
            node_session: Mutex::new(NodeSession::new(node_session_id(
                core.id(),
                config.rng_seed,
                runtime.wall_clock_ms(),
                runtime.now(),
            ))),
            leading: AtomicBool::new(false),
        }
    }
}

/// The node's own client session (an implicit one, new in every life of the node): each
/// [`Raft::propose`] call that goes through a follower takes the next sequence number,
/// so that the command, however often it is forwarded or proposed again, is applied once.
struct NodeSession {
    client: ClientId,
    /// Every sequence number up to this one has had its answer (or its caller gave up).
    acked: u64,
    /// Whether each sequence number after `acked` has ended, in order; the last is the
    /// latest taken.
    ended: VecDeque<bool>,
}

impl NodeSession {
    fn new(client: ClientId) -> Self {
        NodeSession { client, acked: 0, ended: VecDeque::new() }
    }

    /// The next command's (client, seq, acked).
    fn begin(&mut self) -> (ClientId, u64, u64) {
        self.ended.push_back(false);
        (self.client, self.acked + self.ended.len() as u64, self.acked)
    }

    /// Sequence number `seq` has had its answer, or its caller gave up.
    fn end(&mut self, seq: u64) {
        if let Some(e) = seq.checked_sub(self.acked + 1).and_then(|at| self.ended.get_mut(at as usize)) {
            *e = true;
        }
        while self.ended.front() == Some(&true) {
            self.ended.pop_front();
            self.acked += 1;
        }
    }
}

/// One [`Raft::propose`] call. While this node leads, the command goes into the log
/// outside any session: the leader's log holds its one copy, so when its index is
/// applied it is known to be applied or not ([`ClientError::Dropped`]), and a dropped one
/// is proposed anew. Once an attempt goes through a follower, where a forward or its
/// answer can be lost or repeated, the call takes a sequence number in the node's
/// session and keeps it for every later attempt; it is ended when the call returns or
/// is dropped.
struct NodeCall<'a> {
    session: &'a Mutex<NodeSession>,
    leading: &'a AtomicBool,
    command: Bytes,
    /// The call's session command, once it has one.
    op: Option<SessionOp>,
}

impl NodeCall<'_> {
    /// The next attempt's proposal and which of its outcomes may be retried.
    fn attempt(&mut self) -> (Proposal, Retry) {
        if self.op.is_none() && self.leading.load(Ordering::Relaxed) {
            return (Proposal::Command(self.command.clone()), Retry::Dropped);
        }
        let op = self.op.get_or_insert_with(|| {
            let (client, seq, acked) = lock(self.session).begin();
            SessionOp::Command { client, seq, acked, command: self.command.clone() }
        });
        (Proposal::Session(op.clone()), Retry::Unclear)
    }
}

impl Drop for NodeCall<'_> {
    fn drop(&mut self) {
        if let Some(SessionOp::Command { seq, .. }) = &self.op {
            lock(self.session).end(*seq);
        }
    }
}

/// Which answers of an attempt [`Raft::with_retries`] tries again, besides "not the
/// leader" (nothing appended).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// No other: the answer is final.
    NotLeader,
    /// [`ClientError::Dropped`] as well: the attempt's one copy was replaced, so it will
    /// not be applied.
    Dropped,
    /// Also [`ClientError::Indeterminate`]: a session operation, applied once however
    /// often it is proposed.
    Unclear,
}

/// An implicit session id for this life of node `id`: the configured seed (tests) or
/// the OS's randomness, mixed with the clocks, so that a restarted node never continues
/// an earlier life's sequence.
fn node_session_id(id: NodeId, seed: Option<u64>, wall_ms: u64, now: crate::types::Instant) -> ClientId {
    let mut x = seed.unwrap_or_else(|| fastrand::u64(..))
        ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ wall_ms.rotate_left(29)
        ^ now.as_nanos().rotate_left(7);
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) | IMPLICIT
}

/// A handle to a running Raft node. Cheap to clone; all clones refer to the same node.
///
/// The node runs until [`Raft::shutdown`] (or a fatal store error); dropping every handle
/// does not stop it.
pub struct Raft<SM: StateMachine> {
    id: NodeId,
    pub(super) tx: mpsc::UnboundedSender<Event<SM>>,
    pub(super) shared: Arc<Shared<SM>>,
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
        store: S,
        network: N,
        state_machine: SM,
    ) -> Result<Self, StartError> {
        Self::bootstrap_membership(id, Membership::new(members), config, runtime, store, network, state_machine).await
    }

    /// [`Raft::bootstrap`] with a whole configuration, typically
    /// [`Membership::with_nodes`]: the members' addresses go into the first log entry, so
    /// that every node, and every node added later, learns them from the log.
    pub async fn bootstrap_membership<R: Runtime, S: LogStore, N: Network>(
        id: NodeId,
        members: Membership,
        config: Config,
        runtime: R,
        mut store: S,
        network: N,
        state_machine: SM,
    ) -> Result<Self, StartError> {
        if !members.voters.contains(&id) || members.contains(0) || members.is_joint() {
            return Err(StartError::Config(format!(
                "node {id} must be one of the voters {:?} (0 is reserved; no joint configuration)",
                members.voters
            )));
        }
        let init = store.initial_state().await?;
        if !init.is_empty() || store.snapshots().latest()?.is_some() {
            return Err(StartError::AlreadyInitialized);
        }
        store.append(&[Entry { term: 0, index: 1, payload: EntryPayload::Membership(Box::new(members)) }]).await?;
        Self::restart(id, config, runtime, store, network, state_machine).await
    }

    /// Starts a node from what `store` holds (a fresh, empty store gives a node that
    /// waits to be contacted by a leader). `state_machine` must be empty: it is restored
    /// from the store's latest snapshot, if any, and the log after it is applied to it as
    /// the commit index becomes known. A snapshot that cannot be restored (corrupt, or
    /// refused by [`StateMachine::restore`]) fails the start with
    /// [`StartError::StateMachine`]; the node does not run with a wrong state.
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
        let blocking_store = store.blocks_thread();
        let snapshots = store.snapshots();
        let state_machine = Arc::new(Mutex::new(state_machine));
        let (snapshot, sessions) = restore_at_start(&runtime, &state_machine, &snapshots).await?;
        let (init, entries) = read_log(&mut store, snapshot.as_ref()).await?;
        let position = snapshot.as_ref().map(Applied::at_snapshot).unwrap_or_default();
        let now = runtime.now();
        let core = RaftCore::new(id, config.clone(), init.hard_state, init.prev, snapshot, entries, now);
        let shared = Arc::new(Shared::new(&core, state_machine, &runtime, &config));
        let (tx, rx) = mpsc::unbounded();
        let (persist_tx, persist_rx) = mpsc::unbounded();
        let (apply_tx, apply_rx) = mpsc::unbounded();

        let mut handles: Vec<BoxFuture<'static, ()>> = Vec::new();
        // Every task of the node runs in this span, so its events carry the node id.
        let node_span = tracing::debug_span!("raft_node", node = id);
        // The store task runs on the runtime's workers; a store whose calls block has
        // its leader-side work moved to a blocking thread (see `persist_task`).
        let store_task = persist_task::<SM, S, R>(
            id,
            store,
            blocking_store,
            runtime.clone(),
            shared.latencies.clone(),
            persist_rx,
            tx.clone(),
        );
        handles.push(runtime.spawn(store_task.instrument(node_span.clone())).boxed());
        let context = ApplyContext {
            id,
            sm: shared.state_machine.clone(),
            snapshots: snapshots.clone(),
            rt: runtime.clone(),
            latencies: shared.latencies.clone(),
            tx: tx.clone(),
        };
        let applier = apply_task::<SM, R>(context, position, sessions, apply_rx);
        handles.push(runtime.spawn(applier.instrument(node_span.clone())).boxed());
        let (chunk_tx, chunk_rx) = mpsc::unbounded();
        let chunk_reader =
            super::snapshot::chunk_task::<SM, R>(runtime.clone(), snapshots.clone(), chunk_rx, tx.clone());
        handles.push(runtime.spawn(chunk_reader.instrument(node_span.clone())).boxed());
        let (timer, timer_task) = Timer::start(&runtime, tx.clone());
        handles.push(timer_task.boxed());
        let senders = Senders::new(id, runtime.clone(), network);
        let requests = Requests::new();
        let driver = Driver {
            core,
            rt: runtime.clone(),
            shared: shared.clone(),
            persist_tx,
            apply_tx,
            chunk_tx,
            timer,
            senders,
            requests,
            timing: super::timing::Timing::new(config.election_timeout_max),
            traced_commit: 0,
            stopping: None,
            election_timeout_max: config.election_timeout_max,
            members_told: std::cell::Cell::new(None),
            wall_clock_told: false,
        };
        handles.push(runtime.spawn(driver.run(rx).instrument(node_span.clone())).boxed());
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
    /// The command is applied at most once. On the leader it goes into the log as it is:
    /// the log then holds its only copy, and if a leader change replaces that entry the
    /// node proposes it anew. Through a follower it goes in this node's own client
    /// session ([`crate::session`]), so when its outcome is unclear (a leader change
    /// dropped its entry, the leader it was forwarded to stopped answering, a snapshot
    /// replaced the state first) the node proposes it again under the same sequence
    /// number, and a copy that was applied already answers with its recorded response.
    ///
    /// Waits at most [`Config::request_timeout`], retrying while no leader is known.
    /// Errors: [`ClientError::NoLeader`] when no leader was found in time (nothing was
    /// appended), [`ClientError::Timeout`] when no answer came in time (it may still take
    /// effect, once), [`ClientError::Overloaded`] under back-pressure,
    /// [`ClientError::ShuttingDown`] when the node stops first,
    /// [`ClientError::Indeterminate`] in the one case where the outcome cannot be
    /// learned: this node appended the command as leader and, having lost leadership,
    /// took a snapshot from the new leader before applying it.
    ///
    /// Traced as a `propose` span (at debug level) carrying the node and, once known, the
    /// entry's index: `RUST_LOG=raft=debug` shows each proposal appended, forwarded,
    /// committed, applied and answered.
    pub async fn propose(&self, command: SM::Command) -> Result<SM::Response, ClientError> {
        let command = encode_command(command)?;
        let mut call =
            NodeCall { session: &self.shared.node_session, leading: &self.shared.leading, command, op: None };
        let span = tracing::debug_span!("propose", node = self.id, index = tracing::field::Empty);
        let make = |tx| {
            let (op, retry) = call.attempt();
            (Event::Propose { op, tx: Waiter::Command(tx), span: span.clone() }, retry)
        };
        let answer = self.with_retries(make).instrument(span.clone()).await;
        tracing::debug!(parent: &span, ok = answer.is_ok(), "answered");
        answer
    }

    /// Opens a registered client session and returns its id, for an application whose
    /// clients talk to it over their own protocol and retry: each client command then
    /// goes through [`Raft::propose_in_session`] with the next sequence number. The
    /// session lives in the replicated state (and in snapshots) until it has been idle
    /// for [`Config::session_idle_timeout`]; after that its commands are refused with
    /// [`ClientError::SessionExpired`] rather than risk applying a retry twice. Errors as
    /// for [`Raft::propose`].
    pub async fn open_session(&self) -> Result<ClientId, ClientError> {
        let span = tracing::debug_span!("open_session", node = self.id, index = tracing::field::Empty);
        let make = |tx| {
            let op = SessionOp::Open.into();
            (Event::Propose { op, tx: Waiter::Open(tx), span: span.clone() }, Retry::Unclear)
        };
        let answer = self.with_retries(make).instrument(span.clone()).await;
        tracing::debug!(parent: &span, ok = answer.is_ok(), "answered");
        answer
    }

    /// Proposes `command` as request `seq` of client session `client` (from
    /// [`Raft::open_session`], or an implicit id: one with [`session::IMPLICIT`] set,
    /// created by its first command). The command is applied at most once per (client,
    /// seq), however often it is proposed, through whichever nodes: a repeat gets the
    /// first one's response. `acked` tells the cluster the client has the answers of
    /// every sequence number up to it, so their responses can be dropped; a later call
    /// with one of those numbers gets [`ClientError::StaleRequest`]. Sequence numbers
    /// start at 1. A client keeps calling with the same (client, seq) after any error
    /// that leaves the outcome open ([`ClientError::Timeout`], a lost connection) until
    /// it has an answer.
    ///
    /// [`session::IMPLICIT`]: crate::session::IMPLICIT
    pub async fn propose_in_session(
        &self,
        client: ClientId,
        seq: u64,
        acked: u64,
        command: SM::Command,
    ) -> Result<SM::Response, ClientError> {
        if seq == 0 {
            return Err(ClientError::Encode("session sequence numbers start at 1".into()));
        }
        let command = encode_command(command)?;
        self.propose_op(SessionOp::Command { client, seq, acked, command }).await
    }

    /// Proposes `command` at most once for the idempotency key `key`: the first call
    /// with a key applies it; later calls with the same key, on any node, get the first
    /// call's response without applying it again, for as long as the key is remembered
    /// ([`Config::session_idle_timeout`] after its last use, within
    /// [`Config::max_sessions`]). The key names an implicit session
    /// ([`session::client_for_key`]) holding one request, with a digest of its encoded
    /// command ([`session::command_digest`]): a later call with the same key and another
    /// command is refused with [`ClientError::KeyReused`] and not applied.
    ///
    /// [`session::command_digest`]: crate::session::command_digest
    /// [`session::client_for_key`]: crate::session::client_for_key
    pub async fn propose_once(&self, key: &[u8], command: SM::Command) -> Result<SM::Response, ClientError> {
        let command = encode_command(command)?;
        self.propose_op(SessionOp::once(client_for_key(key), command)).await
    }

    /// Proposes a session command, retrying until its answer or the request timeout.
    async fn propose_op(&self, op: SessionOp) -> Result<SM::Response, ClientError> {
        let span = tracing::debug_span!("propose", node = self.id, index = tracing::field::Empty);
        let make = |tx| {
            let op = op.clone().into();
            (Event::Propose { op, tx: Waiter::Command(tx), span: span.clone() }, Retry::Unclear)
        };
        let answer = self.with_retries(make).instrument(span.clone()).await;
        tracing::debug!(parent: &span, ok = answer.is_ok(), "answered");
        answer
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
    ///
    /// Traced as a `read` span (at debug level) carrying the node and the read index.
    pub async fn read_index(&self) -> Result<LogIndex, ClientError> {
        let span = tracing::debug_span!("read", node = self.id, index = tracing::field::Empty);
        let answer = self.with_retries(|tx| (Event::Read { tx }, Retry::NotLeader)).instrument(span.clone()).await;
        if let Ok(index) = answer {
            span.record("index", index);
        }
        tracing::debug!(parent: &span, ok = answer.is_ok(), "read index reached");
        answer
    }

    /// Sends the event made by `make` and waits for its answer, retrying within the
    /// request timeout while the answer is "not the leader" or another that the
    /// attempt's [`Retry`] names.
    async fn with_retries<T>(
        &self,
        mut make: impl FnMut(oneshot::Sender<Result<T, ClientError>>) -> (Event<SM>, Retry),
    ) -> Result<T, ClientError> {
        let clock = &self.shared.clock;
        let deadline = clock.now().add(self.shared.request_timeout);
        let mut pause = Duration::from_millis(1);
        // Whether an attempt may have been appended: running out of time is then a
        // timeout, not "no leader".
        let mut maybe_appended = false;
        loop {
            let (tx, rx) = oneshot::channel();
            let (event, retry) = make(tx);
            self.tx.unbounded_send(event).map_err(|_| self.stopped_error())?;
            let answer = match future::select(rx, clock.sleep_until(deadline)).await {
                Either::Left((Ok(answer), _)) => answer,
                Either::Left((Err(_), _)) => return Err(self.stopped_error()),
                Either::Right(_) => return Err(ClientError::Timeout),
            };
            match answer {
                Err(ClientError::NotLeader { .. }) => {}
                // Replaced: this attempt will not be applied.
                Err(ClientError::Dropped) if retry == Retry::Dropped => {}
                Err(ClientError::Dropped | ClientError::Indeterminate) if retry == Retry::Unclear => {
                    maybe_appended = true
                }
                other => return other,
            }
            let out_of_time = if maybe_appended { ClientError::Timeout } else { ClientError::NoLeader };
            let now = clock.now();
            if now >= deadline {
                return Err(out_of_time);
            }
            let wake = now.add(pause).min(deadline);
            clock.sleep_until(wake).await;
            if wake >= deadline {
                return Err(out_of_time);
            }
            pause = (pause * 2).min(self.shared.retry_max);
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

    /// Where the node is, what it has done since it started and how long it took: its
    /// [`Status`] and [`Counters`](crate::Counters) as of the protocol loop's last batch,
    /// and its [`Latencies`](crate::Latencies) as recorded so far.
    pub fn metrics(&self) -> crate::Metrics {
        crate::Metrics {
            status: self.status(),
            counters: *lock(&self.shared.counters),
            latencies: self.shared.latencies.snapshot(),
            sessions: self.shared.latencies.sessions(),
        }
    }

    /// The node's status now, then every new status as the protocol loop publishes it
    /// (after each batch that changed it, so intermediate states within one batch are
    /// not seen). Runtime-neutral; the stream ends when the node stops, after a last
    /// status with [`Status::stopped`] set. A stream that is dropped is forgotten.
    pub fn watch(&self) -> impl Stream<Item = Status> + Send + Unpin + 'static {
        let (tx, rx) = mpsc::unbounded();
        let current = {
            // The current status and the registration under one lock, so that no
            // change falls between them.
            let s = lock(&self.shared.status);
            if !s.stopped {
                lock(&self.shared.watchers).push(tx);
            }
            s.clone()
        };
        stream::once(future::ready(current)).chain(rx)
    }

    /// Waits until `condition` holds for this node's status (checked now and at every
    /// change, see [`Raft::watch`]) and returns that status; `what` names the condition
    /// in the error. Fails with [`WaitError::Timeout`] after `timeout`, or
    /// [`WaitError::Stopped`] if the node stops first.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Status) -> bool,
    ) -> Result<Status, WaitError> {
        let deadline = self.shared.clock.sleep(timeout);
        let mut updates = self.watch();
        let mut last = None;
        let check = async {
            while let Some(s) = updates.next().await {
                if condition(&s) {
                    return Ok(s);
                }
                if s.stopped {
                    return Err(WaitError::Stopped { what: what.to_string() });
                }
                last = Some(s);
            }
            Err(WaitError::Stopped { what: what.to_string() })
        };
        match future::select(Box::pin(check), deadline).await {
            Either::Left((result, _)) => result,
            Either::Right(((), _)) => {
                let last = Box::new(last.unwrap_or_else(|| self.status()));
                Err(WaitError::Timeout { what: what.to_string(), last })
            }
        }
    }

    /// Waits until this node knows a leader (itself included) and returns its id.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<NodeId, WaitError> {
        let s = self.wait_for("a known leader", timeout, |s| s.leader.is_some()).await?;
        s.leader.ok_or(WaitError::Stopped { what: "a known leader".into() })
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: LogIndex, timeout: Duration) -> Result<Status, WaitError> {
        self.wait_for(&format!("index {index} applied"), timeout, |s| s.applied_index >= index).await
    }

    /// Waits until this node is in `role`.
    pub async fn wait_role(&self, role: Role, timeout: Duration) -> Result<Status, WaitError> {
        self.wait_for(&format!("role {role:?}"), timeout, |s| s.role == role).await
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

    /// Asks for a snapshot now, whatever the [`Config`] thresholds say (if anything was
    /// applied since the last one). It is taken in the background; the log is then
    /// purged as after an automatic one. [`Status::snapshot_index`] shows when it is
    /// durable.
    pub fn trigger_snapshot(&self) -> Result<(), ClientError> {
        self.tx.unbounded_send(Event::TriggerSnapshot).map_err(|_| self.stopped_error())
    }

    /// Purges the log up to `upto`, capped at the latest snapshot's last index (entries
    /// no snapshot covers are never purged), for example to drop the trailing margin
    /// ([`Config::snapshot_keep_entries`]) at once. [`Status::first_log_index`] shows the
    /// result.
    pub fn purge_log(&self, upto: LogIndex) -> Result<(), ClientError> {
        self.tx.unbounded_send(Event::PurgeLog(upto)).map_err(|_| self.stopped_error())
    }

    /// Stops the node: a leader first hands leadership to the voter holding the most of
    /// the log (thesis §3.10; waiting at most an election timeout for it to win), so a
    /// rolling restart has no election gap; then the protocol loop ends, pending
    /// proposals fail with [`ClientError::ShuttingDown`], and every task of the node has
    /// finished when this returns.
    pub async fn shutdown(&self) {
        self.stop(true).await;
    }

    /// Stops the node at once, without handing leadership over: to the others it looks
    /// like a crash (its store is left consistent). Otherwise as [`Raft::shutdown`].
    pub async fn shutdown_now(&self) {
        self.stop(false).await;
    }

    async fn stop(&self, hand_over: bool) {
        let _ = self.tx.unbounded_send(Event::Shutdown { hand_over });
        let tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        future::join_all(tasks).await;
        let mut s = lock(&self.shared.status);
        s.stopped = true;
        for w in std::mem::take(&mut *lock(&self.shared.watchers)) {
            let _ = w.unbounded_send(s.clone());
        }
    }
}

/// Reads the log a node starts with: the store's bounds, reconciled with the latest
/// snapshot, and every entry after the snapshot (after the log's start without one).
///
/// A crash between finishing a received snapshot and resetting the log to it leaves a
/// log that does not continue the snapshot: it is reset now, as the install would have.
async fn read_log<S: LogStore>(
    store: &mut S,
    snapshot: Option<&SnapshotMeta>,
) -> Result<(InitialState, Vec<Entry>), StartError> {
    let mut init = store.initial_state().await?;
    let mut from = init.prev;
    if let Some(s) = snapshot {
        if s.last.index < init.prev.index {
            return Err(StoreError::Corrupt(format!(
                "the log is purged up to {} but the latest snapshot ends at {}",
                init.prev.index, s.last.index
            ))
            .into());
        }
        let held = if s.last.index == init.prev.index {
            Some(init.prev.term)
        } else if s.last.index <= init.last.index {
            store.entries(s.last.index, s.last.index + 1).await?.first().map(|e| e.term)
        } else {
            None
        };
        if held != Some(s.last.term) {
            tracing::info!(last = ?s.last, "the log does not continue the latest snapshot; resetting it");
            store.reset_to(s.last).await?;
            init = store.initial_state().await?;
        }
        from = s.last;
    } else if init.prev.index > 0 {
        return Err(StoreError::Corrupt(format!(
            "the log is purged up to {} but the store holds no snapshot",
            init.prev.index
        ))
        .into());
    }
    let entries = if init.last.index > from.index {
        store.entries(from.index + 1, init.last.index + 1).await?
    } else {
        Vec::new()
    };
    if entries.len() as u64 != init.last.index.saturating_sub(from.index) {
        return Err(StoreError::Corrupt(format!(
            "store reported entries {}..={} but returned {}",
            from.index + 1,
            init.last.index,
            entries.len()
        ))
        .into());
    }
    Ok((init, entries))
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

#[cfg(test)]
mod tests {
    use super::NodeSession;

    #[test]
    fn the_node_session_acknowledges_every_number_up_to_the_oldest_still_waiting() {
        let mut s = NodeSession::new(9);
        assert_eq!(s.begin(), (9, 1, 0));
        assert_eq!(s.begin(), (9, 2, 0));
        assert_eq!(s.begin(), (9, 3, 0));
        s.end(2);
        assert_eq!(s.begin(), (9, 4, 0), "1 still waits");
        s.end(1);
        assert_eq!(s.begin(), (9, 5, 2));
        s.end(3);
        s.end(4);
        s.end(5);
        s.end(5);
        s.end(99);
        assert_eq!(s.begin(), (9, 6, 5));
        assert_eq!(s.ended.len(), 1);
    }
}

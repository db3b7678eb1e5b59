//! The sans-IO protocol core.
//!
//! [`RaftCore`] is a deterministic state machine: it does no I/O, reads no clock and
//! spawns nothing. Inputs go in through [`RaftCore::step`] and [`RaftCore::propose`]
//! (each with the current time `now`); outputs come out of [`RaftCore::take_actions`]
//! as [`Action`]s for the driver to execute. The same inputs give the same outputs,
//! which is what lets the simulator replay a run from its seed.
//!
//! Durability gating (design invariant 5) lives here: every outgoing message records the
//! persist request it depends on, and is held back until the driver reports that request
//! durable with [`Input::Persisted`]. Votes and append acknowledgements therefore never
//! leave before the term, vote and entries they speak for are on stable storage, while a
//! leader's own appends go out in parallel with its local write.

mod client;
mod election;
pub(crate) mod log;
pub(crate) mod progress;
mod replication;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::quorum::JointQuorum;
use crate::status::Status;
use crate::types::{Entry, EntryPayload, HardState, Instant, LogId, LogIndex, NodeId, Term};
use log::RaftLog;
use progress::Progress;

/// A node's role (paper §5.1, thesis §9.6 for pre-candidate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asking for pre-votes before starting a real election.
    PreCandidate,
    /// Campaigning for votes in its term.
    Candidate,
    /// Leads the cluster in its term.
    Leader,
}

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
    /// (see [`RaftCore::read_index`]).
    ReadReady {
        /// The id given to [`RaftCore::read_index`].
        id: u64,
        /// The read index.
        index: LogIndex,
    },
    /// The read with this id cannot be served by this request (leadership was lost or the
    /// asked node does not lead); the caller may retry.
    ReadFailed {
        /// The id given to [`RaftCore::read_index`].
        id: u64,
    },
    /// The leader's answer to commands forwarded with [`RaftCore::forward`]: the index of
    /// the first command and the term of the entries, or why they were refused.
    Forwarded {
        /// The id given to [`RaftCore::forward`].
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
}

/// Messages with a larger term are malformed and dropped.
const MAX_TERM: Term = u64::MAX / 2;

/// The core trims its in-memory log in chunks of at least this many entries (or a
/// quarter of `Config::max_cached_lag` if that is smaller).
const TRIM_CHUNK: u64 = 1 << 12;

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

/// What accumulates for the next [`PersistRequest`].
#[derive(Debug, Default)]
struct PendingPersist {
    hard_state: bool,
    truncate_from: Option<LogIndex>,
    entries: Vec<Entry>,
}

impl PendingPersist {
    fn is_empty(&self) -> bool {
        !self.hard_state && self.truncate_from.is_none() && self.entries.is_empty()
    }
}

/// The Raft protocol state machine of one node. See the module docs.
pub struct RaftCore {
    pub(crate) id: NodeId,
    pub(crate) cfg: Config,
    rng: fastrand::Rng,
    pub(crate) hs: HardState,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,

    /// Membership entries in the log: the last committed one and every later one, so a
    /// truncation can fall back (thesis §4.1: a configuration takes effect when appended).
    configs: Vec<(LogIndex, Membership)>,
    pub(crate) membership: Membership,
    /// The quorum rule of `membership`, kept beside it so counting votes and the commit
    /// index does not rebuild it on every acknowledgement.
    pub(crate) quorum: JointQuorum,

    // Timers.
    election_deadline: Instant,
    heartbeat_deadline: Instant,
    check_quorum_deadline: Instant,
    last_timer: Option<Instant>,
    /// When this node last heard from the leader of its term.
    last_leader_contact: Option<Instant>,

    // Candidate and leader state.
    votes: BTreeMap<NodeId, bool>,
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Index of the first entry of this leader's term (its blank entry).
    pub(crate) term_start: LogIndex,
    /// Reads waiting for a read index (leader only).
    pub(crate) reads: client::ReadState,
    /// Ids for client requests, and the forwards seen from each follower.
    request_ids: client::RequestIds,
    replicate_dirty: bool,
    /// The commit index advanced; followers should hear of it even without new entries.
    broadcast_commit: bool,
    /// Leader: the highest index announced durable to followers in this term (see
    /// [`MessageBody::Durable`]); a read index is never below it.
    pub(crate) durable_announced: LogIndex,
    /// Follower: the leader's last durability notice, as (term, index, config index).
    leader_durable: Option<(Term, LogIndex, LogIndex)>,
    /// Follower: the highest index known to match the leader's log, with the term.
    matched: (Term, LogIndex),

    // Persistence and durability gating.
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

    // Applying.
    apply_index: LogIndex,
    applied_index: LogIndex,

    actions: Vec<Action>,
}

impl RaftCore {
    /// A core restored from durable state: `hard_state`, and `entries` that follow
    /// `prev` (the snapshot point, or `(0, 0)`). It starts as a follower.
    pub fn new(id: NodeId, cfg: Config, hard_state: HardState, prev: LogId, entries: Vec<Entry>, now: Instant) -> Self {
        let seed = cfg.rng_seed.unwrap_or_else(|| fastrand::u64(..)) ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let rng = fastrand::Rng::with_seed(seed);
        let request_ids = client::RequestIds::new(seed);
        let log = RaftLog::restore(prev, entries);
        let mut configs = Vec::new();
        for i in 1..=log.last_index() {
            if let Some(Entry { payload: EntryPayload::Membership(m), .. }) = log.get(i) {
                configs.push((i, (**m).clone()));
            }
        }
        let membership = configs.last().map(|(_, m)| m.clone()).unwrap_or_default();
        let quorum = membership.quorum();
        let store_last = log.last_index();
        let apply_index = log.commit;
        let mut core = RaftCore {
            id,
            cfg,
            rng,
            hs: hard_state,
            role: Role::Follower,
            leader: None,
            log,
            configs,
            membership,
            quorum,
            election_deadline: now,
            heartbeat_deadline: now,
            check_quorum_deadline: now,
            last_timer: None,
            last_leader_contact: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start: 0,
            durable_announced: 0,
            leader_durable: None,
            matched: (0, 0),
            reads: client::ReadState::default(),
            request_ids,
            replicate_dirty: false,
            broadcast_commit: false,
            pending: PendingPersist::default(),
            next_seq: 1,
            persisted_seq: 0,
            hs_seq: 0,
            store_last,
            issued: VecDeque::new(),
            held: VecDeque::new(),
            apply_index,
            applied_index: apply_index,
            actions: Vec::new(),
        };
        core.reset_election_deadline(now);
        core
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.hs.term
    }

    /// The leader known for the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The core's state for metrics and checks (`fatal_error` and `stopped` are the
    /// driver's to fill in).
    pub fn status(&self) -> Status {
        let last = self.log.last_id();
        Status {
            id: self.id,
            role: self.role,
            is_voter: self.membership.is_voter(self.id),
            term: self.hs.term,
            voted_for: self.hs.voted_for,
            leader: self.leader,
            commit_index: self.log.commit,
            applied_index: self.applied_index,
            last_log_index: last.index,
            last_log_term: last.term,
            durable_index: self.log.durable,
            membership: self.membership.clone(),
            match_index: self.match_indexes().collect(),
            cached_entries: self.log.cached_len(),
            fatal_error: None,
            stopped: false,
        }
    }

    /// The commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.log.commit
    }

    /// The last index the state machine reported applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The highest index known durable in the local store.
    pub fn durable_index(&self) -> LogIndex {
        self.log.durable
    }

    /// How many log entries the core holds in memory.
    pub fn cached_entries(&self) -> usize {
        self.log.cached_len()
    }

    /// The membership configuration in effect.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// When leader, each peer's match index.
    pub fn match_indexes(&self) -> impl Iterator<Item = (NodeId, LogIndex)> + '_ {
        self.progress.iter().map(|(&id, p)| (id, p.match_index))
    }

    /// The term of the entry at `index`, if the core holds it in memory.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The index of the last log entry.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The term of the last log entry.
    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    /// The vote cast in the current term, if any.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.hs.voted_for
    }

    /// The entry at `index`, if the core holds it.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.get(index)
    }

    /// The time at which the core next needs a [`Input::Tick`].
    pub fn next_deadline(&self) -> Instant {
        match self.role {
            Role::Leader => self.heartbeat_deadline.min(self.check_quorum_deadline),
            _ if self.membership.is_voter(self.id) => self.election_deadline,
            // A node outside the configuration never campaigns; wake rarely.
            _ => self.election_deadline.max(self.heartbeat_deadline),
        }
    }

    /// Feeds one input to the core.
    pub fn step(&mut self, now: Instant, input: Input) {
        match input {
            Input::Message(m) => self.step_message(now, m),
            Input::Tick => self.tick(now),
            Input::Persisted { seq } => self.on_persisted(seq),
            Input::Applied { index } => self.applied_index = self.applied_index.max(index),
            Input::EntriesLoaded { peer, term, entries } => self.on_entries_loaded(peer, term, entries),
        }
    }

    /// Appends client commands to the log if this node is the leader (paper §5.3).
    /// Returns the index of the first appended entry and the term; entries follow in
    /// order. Replication is batched: it happens at the next [`RaftCore::take_actions`].
    pub fn propose(&mut self, commands: impl IntoIterator<Item = Bytes>) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader(self.leader));
        }
        if self.log.last_index().saturating_sub(self.log.commit) >= self.cfg.max_uncommitted_entries as u64 {
            return Err(ProposeError::Overloaded);
        }
        let first = self.log.last_index() + 1;
        for data in commands {
            self.append_local(EntryPayload::Command(data));
        }
        Ok((first, self.hs.term))
    }

    /// Runs the deferred work of the inputs since the last call (batched replication,
    /// commitment, the persist request, applying, timers) and returns the actions for
    /// the driver, in the order they should be carried out.
    pub fn take_actions(&mut self, now: Instant) -> Vec<Action> {
        let _ = now;
        if self.role == Role::Leader {
            self.maybe_commit();
            self.announce_durability();
            self.start_read_round();
            if self.replicate_dirty || self.broadcast_commit {
                let if_empty = if self.broadcast_commit {
                    replication::IfNothingNew::Commit
                } else {
                    replication::IfNothingNew::Nothing
                };
                self.replicate_dirty = false;
                self.broadcast_commit = false;
                self.broadcast_append(if_empty);
            }
        }
        self.flush_persist();
        let apply_to = self.log.commit.min(self.log.durable);
        if apply_to > self.apply_index {
            let entries = self.log.range(self.apply_index + 1, apply_to);
            self.apply_index = apply_to;
            self.actions.push(Action::Apply(entries));
        }
        self.maybe_trim();
        let deadline = self.next_deadline();
        if self.last_timer != Some(deadline) {
            self.last_timer = Some(deadline);
            self.actions.push(Action::SetTimer(deadline));
        }
        std::mem::take(&mut self.actions)
    }

    /// Drops applied, durable entries from memory, keeping what peers that are not far
    /// behind still need.
    fn maybe_trim(&mut self) {
        let mut to = self.apply_index.min(self.log.durable);
        if self.role == Role::Leader {
            let slowest = self.progress.values().map(|p| p.match_index).min().unwrap_or(to);
            if to.saturating_sub(slowest) < self.cfg.max_cached_lag {
                to = to.min(slowest);
            }
        }
        let chunk = TRIM_CHUNK.min(self.cfg.max_cached_lag / 4).max(1);
        if to >= self.log.trimmed().index + chunk {
            self.log.trim_to(to);
        }
    }

    // ----- time -----

    fn tick(&mut self, now: Instant) {
        if self.role == Role::Leader {
            if now >= self.check_quorum_deadline {
                self.check_quorum(now);
                if self.role != Role::Leader {
                    return;
                }
            }
            if now >= self.heartbeat_deadline {
                self.heartbeat_deadline = now.add(self.cfg.heartbeat_interval);
                self.send_heartbeats(true);
            }
        } else if now >= self.election_deadline {
            self.reset_election_deadline(now);
            if self.membership.is_voter(self.id) {
                self.campaign(now);
            }
        }
    }

    pub(crate) fn reset_election_deadline(&mut self, now: Instant) {
        let min = self.cfg.election_timeout_min.as_nanos() as u64;
        let max = self.cfg.election_timeout_max.as_nanos() as u64;
        let timeout = self.rng.u64(min..max.max(min + 1));
        self.election_deadline = now.add(std::time::Duration::from_nanos(timeout));
    }

    // ----- messages -----

    fn step_message(&mut self, now: Instant, mut m: Message) {
        if m.to != self.id || m.from == self.id || m.from == 0 {
            tracing::warn!(node = self.id, to = m.to, from = m.from, "dropping misaddressed message");
            return;
        }
        if self.step_client_message(&mut m) {
            return;
        }
        if m.term > MAX_TERM {
            // No real cluster gets near this; it would make term arithmetic overflow.
            tracing::warn!(node = self.id, from = m.from, term = m.term, "dropping message with an absurd term");
            return;
        }
        if m.term > self.hs.term {
            match &m.body {
                // A pre-vote never changes anyone's term (thesis §9.6).
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::RequestVote { .. } if self.in_leader_lease(now) => {
                    tracing::debug!(
                        node = self.id,
                        from = m.from,
                        term = m.term,
                        "ignoring vote request: leader is live"
                    );
                    return;
                }
                MessageBody::AppendEntries { .. }
                | MessageBody::Commit { .. }
                | MessageBody::Durable { .. }
                | MessageBody::Heartbeat { .. } => {
                    self.become_follower(now, m.term, Some(m.from));
                }
                _ => self.become_follower(now, m.term, None),
            }
        } else if m.term < self.hs.term {
            self.on_stale_term(m);
            return;
        }
        match m.body {
            MessageBody::PreVote { last_log_index, last_log_term } => {
                self.on_pre_vote(now, m.from, m.term, last_log_index, last_log_term)
            }
            MessageBody::PreVoteResponse { granted } => self.on_pre_vote_response(now, m.from, m.term, granted),
            MessageBody::RequestVote { last_log_index, last_log_term } => {
                self.on_request_vote(now, m.from, last_log_index, last_log_term)
            }
            MessageBody::RequestVoteResponse { granted } => self.on_vote_response(now, m.from, granted),
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                self.on_append_entries(now, m.from, prev_log_index, prev_log_term, entries, leader_commit, true)
            }
            MessageBody::Commit { prev_log_index, prev_log_term, leader_commit } => {
                self.on_append_entries(now, m.from, prev_log_index, prev_log_term, Vec::new(), leader_commit, false)
            }
            MessageBody::Durable { index, config_index } => self.on_leader_durable(m.from, index, config_index),
            MessageBody::AppendEntriesResponse { success, index, hint } => {
                self.on_append_response(m.from, success, index, hint)
            }
            MessageBody::Heartbeat { commit, ctx } => self.on_heartbeat(now, m.from, commit, ctx),
            MessageBody::HeartbeatResponse { ctx } => self.on_heartbeat_response(m.from, ctx),
            MessageBody::Forward { .. }
            | MessageBody::ForwardResponse { .. }
            | MessageBody::ReadIndex { .. }
            | MessageBody::ReadIndexResponse { .. } => {}
        }
    }

    /// A message from an older term: tell a stale leader or candidate about the newer
    /// term so that it steps down; drop stale responses.
    fn on_stale_term(&mut self, m: Message) {
        let reply = match m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Commit { .. } | MessageBody::Heartbeat { .. } => {
                MessageBody::AppendEntriesResponse { success: false, index: 0, hint: None }
            }
            MessageBody::PreVote { .. } => MessageBody::PreVoteResponse { granted: false },
            MessageBody::RequestVote { .. } => MessageBody::RequestVoteResponse { granted: false },
            _ => return,
        };
        self.send(m.from, reply);
    }

    // ----- role changes -----

    pub(crate) fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        if term > self.hs.term {
            self.hs = HardState { term, voted_for: None };
            self.pending.hard_state = true;
        }
        if self.role != Role::Follower || self.leader != leader {
            tracing::debug!(node = self.id, term, ?leader, "becoming follower");
        }
        if self.role == Role::Leader {
            self.fail_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        if leader.is_some() {
            self.last_leader_contact = Some(now);
        }
        self.votes.clear();
        self.progress.clear();
        self.reset_election_deadline(now);
    }

    // ----- local log -----

    /// Appends one entry in the current term to the local log (leader only) and queues
    /// it for persistence and replication.
    pub(crate) fn append_local(&mut self, payload: EntryPayload) -> LogIndex {
        let index = self.log.last_index() + 1;
        let entry = Entry { term: self.hs.term, index, payload };
        self.push_entry(entry);
        self.replicate_dirty = true;
        index
    }

    /// Adds an entry at the end of the log, tracking membership entries.
    fn push_entry(&mut self, entry: Entry) {
        if let EntryPayload::Membership(m) = &entry.payload {
            self.configs.push((entry.index, (**m).clone()));
            self.set_membership((**m).clone());
        }
        self.pending.entries.push(entry.clone());
        self.log.push(entry);
    }

    /// Removes a conflicting suffix from `from` on (paper §5.3).
    pub(crate) fn truncate_local(&mut self, from: LogIndex) {
        debug_assert!(from > self.log.commit, "committed entries are never truncated");
        self.log.truncate_from(from);
        self.pending.entries.retain(|e| e.index < from);
        let store_last = match self.pending.truncate_from {
            Some(t) => self.store_last.min(t - 1),
            None => self.store_last,
        };
        if from <= store_last {
            self.pending.truncate_from = Some(self.pending.truncate_from.map_or(from, |t| t.min(from)));
        }
        if self.configs.last().is_some_and(|(i, _)| *i >= from) {
            self.configs.retain(|(i, _)| *i < from);
            let m = self.configs.last().map(|(_, m)| m.clone()).unwrap_or_default();
            self.set_membership(m);
        }
    }

    /// Index of the latest membership entry in the log (0: none since the start).
    pub(crate) fn config_index(&self) -> LogIndex {
        self.configs.last().map_or(0, |(i, _)| *i)
    }

    fn set_membership(&mut self, m: Membership) {
        self.quorum = m.quorum();
        self.membership = m;
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            let all = self.membership.all_nodes();
            self.progress.retain(|id, _| all.contains(id));
            for id in all {
                if id != self.id {
                    self.progress.entry(id).or_insert_with(|| Progress::new(next));
                }
            }
        }
    }

    /// Advances the commit index, dropping membership history that can no longer be
    /// truncated.
    pub(crate) fn set_commit(&mut self, commit: LogIndex) {
        if commit <= self.log.commit {
            return;
        }
        self.log.commit = commit;
        let keep_from = self.configs.iter().rposition(|(i, _)| *i <= commit).unwrap_or(0);
        self.configs.drain(..keep_from);
    }

    // ----- durability gating -----

    /// Queues a message; it leaves once everything persisted so far is durable.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let need = if self.pending.is_empty() { self.next_seq - 1 } else { self.next_seq };
        self.send_after(need, to, body);
    }

    /// Queues a leader append: it needs only the hard state durable, not the entries
    /// it carries (the leader writes its log in parallel with replication).
    pub(crate) fn send_leader(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message { from: self.id, to, term: self.hs.term, body };
        self.push_after_hard_state(msg);
    }

    /// Queues a fully formed message that needs only the hard state durable.
    pub(crate) fn push_after_hard_state(&mut self, msg: Message) {
        let need = if self.pending.hard_state { self.next_seq } else { self.hs_seq };
        self.push_after(need, msg);
    }

    /// Queues a pre-vote request, which carries a prospective term.
    pub(crate) fn push_raw(&mut self, msg: Message) {
        self.push_after_hard_state(msg);
    }

    fn send_after(&mut self, need: u64, to: NodeId, body: MessageBody) {
        let msg = Message { from: self.id, to, term: self.hs.term, body };
        self.push_after(need, msg);
    }

    fn push_after(&mut self, need: u64, msg: Message) {
        if need <= self.persisted_seq {
            self.actions.push(Action::Send(msg));
        } else {
            self.held.push_back((need, msg));
        }
    }

    fn flush_persist(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(t) = pending.truncate_from {
            self.store_last = self.store_last.min(t - 1);
        }
        let last = pending.entries.last().map(|e| LogId { term: e.term, index: e.index });
        if let Some(l) = last {
            self.store_last = l.index;
        }
        let hard_state = if pending.hard_state {
            self.hs_seq = seq;
            Some(self.hs)
        } else {
            None
        };
        self.issued.push_back((seq, last));
        self.actions.push(Action::Persist(PersistRequest {
            seq,
            hard_state,
            truncate_from: pending.truncate_from,
            entries: pending.entries,
        }));
    }

    fn on_persisted(&mut self, seq: u64) {
        if seq <= self.persisted_seq || seq >= self.next_seq {
            return;
        }
        self.persisted_seq = seq;
        while let Some(&(s, last)) = self.issued.front() {
            if s > seq {
                break;
            }
            self.issued.pop_front();
            if let Some(l) = last {
                // Entries truncated and rewritten since this request do not count.
                if self.log.term_at(l.index) == Some(l.term) && l.index > self.log.durable {
                    self.log.durable = l.index;
                }
            }
        }
        while let Some((need, _)) = self.held.front() {
            if *need > seq {
                break;
            }
            if let Some((_, msg)) = self.held.pop_front() {
                self.actions.push(Action::Send(msg));
            }
        }
        // A follower whose own write just became durable may now know a commit.
        self.commit_from_leader_durability();
    }
}

impl std::fmt::Debug for RaftCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCore")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("term", &self.hs.term)
            .field("last", &self.log.last_id())
            .field("commit", &self.log.commit)
            .finish()
    }
}

#[cfg(test)]
mod tests;

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

mod config_change;
mod durability;
mod election;
mod fast_commit;
mod forward;
mod io;
mod lease;
pub(crate) mod log;
pub(crate) mod progress;
mod read_index;
mod replication;
mod snapshot;
mod timers;
mod tracker;
mod transfer;

use std::collections::BTreeMap;

use crate::config::Config;
use crate::membership::Membership;
use crate::message::{Message, MessageBody};
use crate::quorum::JointQuorum;
use crate::session::SessionEntry;
use crate::snapshot::SnapshotMeta;
use crate::status::Status;
use crate::types::{Entry, EntryPayload, HardState, Instant, LogId, LogIndex, NodeId, Proposal, Term};
pub use io::{Action, Input, PersistRequest, ProposeError};
use log::RaftLog;
use progress::Progress;
pub use transfer::TransferError;

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

/// Messages with a larger term are malformed and dropped.
const MAX_TERM: Term = u64::MAX / 2;

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
    /// Bumped whenever `configs` changes (see `reachable_membership`).
    configs_generation: u64,
    pub(crate) membership: Membership,
    /// The quorum rule of `membership`, kept beside it so counting votes and the commit
    /// index does not rebuild it on every acknowledgement.
    pub(crate) quorum: JointQuorum,

    /// The core's deadlines.
    pub(crate) timers: timers::Timers,
    /// When this node last heard from the leader of its term.
    last_leader_contact: Option<Instant>,

    // Candidate and leader state.
    votes: BTreeMap<NodeId, bool>,
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Index of the first entry of this leader's term (its blank entry).
    pub(crate) term_start: LogIndex,
    /// Leader: the leadership transfer in progress (`transfer.rs`).
    transfer: Option<transfer::Transfer>,
    /// Reads waiting for a read index (leader only).
    pub(crate) reads: read_index::ReadState,
    /// Ids for client requests, and the forwards seen from each follower.
    request_ids: forward::RequestIds,
    /// Follower: forwards and read-index requests waiting for the leader's answer.
    forwarding: forward::Forwarding,
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

    /// Persistence and durability gating.
    durability: durability::Durability,
    /// Snapshots held, taken and received.
    snapshots: snapshot::Snapshots,

    // Applying.
    apply_index: LogIndex,
    applied_index: LogIndex,

    actions: Vec<Action>,

    /// What this node has done since it started ([`RaftCore::counters`]).
    pub(crate) counters: crate::metrics::Counters,
    /// The last leader this node knew of, for [`Counters::leader_changes`](crate::Counters::leader_changes).
    known_leader: Option<NodeId>,
    /// The wall clock the driver last reported ([`RaftCore::set_wall_clock`]), stamped
    /// into the session entries this node appends as leader.
    wall_clock_ms: u64,
}

impl RaftCore {
    /// A core restored from durable state: `hard_state`, the log starting after `prev`
    /// (the last purged entry, or `(0, 0)`), the latest durable `snapshot`, which the
    /// state machine was restored from, and `entries`: every entry of the log after the
    /// snapshot's last one (after `prev` without a snapshot). It starts as a follower.
    pub fn new(
        id: NodeId,
        cfg: Config,
        hard_state: HardState,
        prev: LogId,
        snapshot: Option<SnapshotMeta>,
        entries: Vec<Entry>,
        now: Instant,
    ) -> Self {
        let seed = cfg.rng_seed.unwrap_or_else(|| fastrand::u64(..)) ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let rng = fastrand::Rng::with_seed(seed);
        let request_ids = forward::RequestIds::new(seed);
        let from = snapshot.as_ref().map_or(prev, |s| s.last);
        let log = RaftLog::restore_after(prev, from, entries);
        let mut configs = Vec::new();
        if let Some(s) = &snapshot {
            configs.push((s.membership_index, s.membership.clone()));
        }
        for i in log.trimmed().index + 1..=log.last_index() {
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
            configs_generation: 0,
            membership,
            quorum,
            timers: timers::Timers::new(now),
            last_leader_contact: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start: 0,
            transfer: None,
            durable_announced: 0,
            leader_durable: None,
            matched: (0, 0),
            reads: read_index::ReadState::default(),
            request_ids,
            forwarding: forward::Forwarding::default(),
            replicate_dirty: false,
            broadcast_commit: false,
            durability: durability::Durability::new(store_last),
            snapshots: snapshot::Snapshots::new(snapshot),
            apply_index,
            applied_index: apply_index,
            actions: Vec::new(),
            counters: crate::metrics::Counters::default(),
            known_leader: None,
            wall_clock_ms: 0,
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
            config_index: self.config_index(),
            transferring_to: self.transferring_to(),
            match_index: self.match_indexes().collect(),
            cached_entries: self.log.cached_len(),
            snapshot_index: self.snapshots.index(),
            first_log_index: self.log.prev().index + 1,
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

    /// The first index the log holds (entries before it were purged).
    pub fn first_log_index(&self) -> LogIndex {
        self.log.prev().index + 1
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

    /// Feeds one input to the core.
    pub fn step(&mut self, now: Instant, input: Input) {
        match input {
            Input::Message(m) => self.step_message(now, m),
            Input::Tick => {
                self.tick(now);
                self.resend_unanswered_requests(now);
            }
            Input::Persisted { seq } => self.on_persisted(seq),
            Input::Applied { index } => self.applied_index = self.applied_index.max(index),
            Input::EntriesLoaded { peer, term, entries } => self.on_entries_loaded(peer, term, entries),
            Input::SnapshotTaken { result } => self.on_snapshot_taken(result),
            Input::LogPurged { prev } => self.on_log_purged(prev),
            Input::SnapshotChunkLoaded { peer, term, last, offset, data } => {
                self.on_snapshot_chunk_loaded(peer, term, last, offset, data)
            }
            Input::SnapshotChunkWritten { last, next } => self.on_snapshot_chunk_written(last, next),
        }
    }

    /// Tells the core the wall clock, in milliseconds since the Unix epoch. The core
    /// reads no clock itself; it stamps this time into the session entries it appends as
    /// leader ([`crate::session::SessionEntry`]), which is how replicas agree on when a
    /// client session expires. The driver reports it before any input of a batch that
    /// may append session entries (a session proposal, a forward).
    pub fn set_wall_clock(&mut self, unix_ms: u64) {
        self.wall_clock_ms = unix_ms;
    }

    /// Appends client proposals to the log if this node is the leader (paper §5.3): a
    /// command as it is, a session operation stamped with the wall clock and the
    /// configured session expiry. Returns the index of the first appended entry and the
    /// term; entries follow in order. Replication is batched: it happens at the next
    /// [`RaftCore::take_actions`].
    pub fn propose<P: Into<Proposal>>(
        &mut self,
        commands: impl IntoIterator<Item = P>,
    ) -> Result<(LogIndex, Term), ProposeError> {
        if self.role != Role::Leader {
            self.counters.proposals_refused_not_leader += 1;
            return Err(ProposeError::NotLeader(self.leader));
        }
        if let Some(to) = self.transferring_to() {
            // Thesis §3.10: no proposals while leadership moves; clients go to the target.
            self.counters.proposals_refused_not_leader += 1;
            return Err(ProposeError::NotLeader(Some(to)));
        }
        if self.log.last_index().saturating_sub(self.log.commit) >= self.cfg.max_uncommitted_entries as u64 {
            self.counters.proposals_refused_overloaded += 1;
            return Err(ProposeError::Overloaded);
        }
        let first = self.log.last_index() + 1;
        for proposal in commands {
            let payload = match proposal.into() {
                Proposal::Command(data) => EntryPayload::Command(data),
                Proposal::Session(op) => EntryPayload::Session(std::sync::Arc::new(SessionEntry {
                    time_ms: self.wall_clock_ms,
                    idle_timeout_ms: u64::try_from(self.cfg.session_idle_timeout.as_millis()).unwrap_or(u64::MAX),
                    max_sessions: self.cfg.max_sessions,
                    op,
                })),
            };
            self.append_local(payload);
            self.counters.proposals_appended += 1;
        }
        Ok((first, self.hs.term))
    }

    /// What this node has done since it started.
    pub fn counters(&self) -> crate::metrics::Counters {
        self.counters
    }

    /// Counts a change to a known leader (`leader`, just learned).
    pub(crate) fn note_leader(&mut self, leader: Option<NodeId>) {
        if leader.is_some() && leader != self.known_leader {
            self.counters.leader_changes += 1;
            self.known_leader = leader;
        }
    }

    /// Runs the deferred work of the inputs since the last call (batched replication,
    /// commitment, the persist request, applying, timers) and returns the actions for
    /// the driver, in the order they should be carried out.
    pub fn take_actions(&mut self, now: Instant) -> Vec<Action> {
        self.settle_requests_to_former_leaders();
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
            // After the commit news went out: a committed joint configuration is left,
            // a leader removed by a committed configuration hands over.
            self.after_config_commit(now);
            if self.replicate_dirty {
                self.replicate_dirty = false;
                self.broadcast_append(replication::IfNothingNew::Nothing);
            }
        }
        self.flush_persist();
        let apply_to = self.log.commit.min(self.log.durable);
        if apply_to > self.apply_index && !self.snapshots.installing() {
            let entries = self.log.range(self.apply_index + 1, apply_to);
            self.apply_index = apply_to;
            self.snapshots.applying(&entries);
            self.actions.push(Action::Apply(entries));
        }
        self.maybe_take_snapshot();
        self.maybe_trim();
        let deadline = self.next_deadline();
        if self.timers.last_set != Some(deadline) {
            self.timers.last_set = Some(deadline);
            self.actions.push(Action::SetTimer(deadline));
        }
        std::mem::take(&mut self.actions)
    }

    // ----- messages -----

    fn step_message(&mut self, now: Instant, mut m: Message) {
        if m.to != self.id || m.from == self.id || m.from == 0 {
            tracing::warn!(node = self.id, to = m.to, from = m.from, "dropping misaddressed message");
            return;
        }
        // Client requests change no term and no role (`forward.rs`, `read_index.rs`).
        match &m.body {
            MessageBody::Forward { .. } => return self.on_forward(&mut m),
            MessageBody::ForwardResponse { id, result } => return self.on_forward_response(*id, m.term, *result),
            MessageBody::ReadIndex { id } => return self.on_read_index_request(m.from, *id),
            MessageBody::ReadIndexResponse { id, index } => return self.on_read_index_response(*id, *index),
            _ => {}
        }
        if m.term > MAX_TERM {
            // No real cluster gets near this; it would make term arithmetic overflow.
            tracing::warn!(node = self.id, from = m.from, term = m.term, "dropping message with an absurd term");
            return;
        }
        if !self.observe_term(now, &m) {
            return;
        }
        match m.body {
            MessageBody::PreVote { last_log_index, last_log_term } => {
                self.on_pre_vote(now, m.from, m.term, last_log_index, last_log_term)
            }
            MessageBody::PreVoteResponse { granted } => self.on_pre_vote_response(now, m.from, m.term, granted),
            MessageBody::TimeoutNow => self.on_timeout_now(now, m.from),
            MessageBody::RequestVote { last_log_index, last_log_term, .. } => {
                self.on_request_vote(now, m.from, last_log_index, last_log_term)
            }
            MessageBody::RequestVoteResponse { granted } => self.on_vote_response(now, m.from, granted),
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                self.on_append_entries(now, m.from, prev_log_index, prev_log_term, entries, leader_commit, true)
            }
            MessageBody::Commit { prev_log_index, prev_log_term, leader_commit } => {
                self.on_commit_news(now, m.from, prev_log_index, prev_log_term, leader_commit)
            }
            MessageBody::Durable { index, config_index } => self.on_leader_durable(m.from, index, config_index),
            MessageBody::AppendEntriesResponse { success, index, hint } => {
                self.on_append_response(m.from, success, index, hint)
            }
            MessageBody::Heartbeat { commit, ctx } => self.on_heartbeat(now, m.from, commit, ctx),
            MessageBody::HeartbeatResponse { ctx } => self.on_heartbeat_response(m.from, ctx),
            MessageBody::InstallSnapshot { meta, offset, data } => {
                self.on_install_snapshot(now, m.from, meta, offset, data)
            }
            MessageBody::InstallSnapshotResponse { last, next_offset, done } => {
                self.on_install_snapshot_response(m.from, last, next_offset, done)
            }
            MessageBody::Forward { .. }
            | MessageBody::ForwardResponse { .. }
            | MessageBody::ReadIndex { .. }
            | MessageBody::ReadIndexResponse { .. } => {}
        }
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

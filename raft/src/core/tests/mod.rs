//! Protocol rules checked on bare cores.
//!
//! The harness below wires a few [`RaftCore`]s together without any I/O: a manual clock,
//! one in-memory store per node whose persist requests the test acknowledges (at once
//! by default, or only when told to), and a single message queue from which the test
//! delivers, drops or reorders messages as it likes. Everything is deterministic: the
//! election timeouts come from a fixed seed and nothing happens unless a test asks.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::{Action, Input, PersistRequest, ProposeError, RaftCore, Role, TransferError};
use crate::config::Config;
use crate::membership::{ConfigChange, ConfigError, Membership, NodeInfo};
use crate::message::{ConflictHint, Message, MessageBody};
use crate::snapshot::SnapshotMeta;
use crate::types::{Entry, EntryPayload, HardState, Instant, LogId, LogIndex, NodeId, Term};

mod bad_input;
mod config_change;
mod durability;
mod election;
mod fast_commit;
mod forward;
mod lease;
mod log;
mod metrics;
mod read_index;
mod replication;
mod snapshot;
mod tracker;
mod transfer;

// ----- harness -----

fn config() -> Config {
    Config { rng_seed: Some(0x5eed), ..Config::default() }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cmd(i: usize) -> Bytes {
    Bytes::from(format!("cmd-{i}"))
}

fn cmds(range: std::ops::Range<usize>) -> Vec<Bytes> {
    range.map(cmd).collect()
}

/// The session client of the commands the tests forward.
const TEST_CLIENT: crate::session::ClientId = crate::session::IMPLICIT | 1;

/// Commands `range` as session commands of [`TEST_CLIENT`], command `i` with sequence
/// number `i + 1`: what a follower forwards.
fn ops(range: std::ops::Range<usize>) -> Vec<crate::session::SessionOp> {
    range
        .map(|i| crate::session::SessionOp::Command {
            client: TEST_CLIENT,
            seq: i as u64 + 1,
            acked: 0,
            command: cmd(i),
        })
        .collect()
}

/// Entry 1 of every bootstrapped log: the initial configuration of nodes `1..=n`.
fn bootstrap_entry(n: u64) -> Entry {
    Entry { term: 0, index: 1, payload: EntryPayload::Membership(Box::new(Membership::new(1..=n))) }
}

/// A bootstrapped log followed by one command entry per element of `terms`, at indexes
/// `2, 3, ...`.
fn log_with_terms(n: u64, terms: &[Term]) -> Vec<Entry> {
    let mut log = vec![bootstrap_entry(n)];
    for (i, &term) in terms.iter().enumerate() {
        let index = i as LogIndex + 2;
        log.push(Entry { term, index, payload: EntryPayload::Command(Bytes::from(format!("old-{term}-{index}"))) });
    }
    log
}

fn hard_state(term: Term) -> HardState {
    HardState { term, voted_for: None }
}

/// One node's durable state, written only when the test acknowledges a persist request.
#[derive(Default)]
struct Store {
    hs: HardState,
    /// The last purged entry.
    prev: LogId,
    /// Contiguous from `prev.index + 1`.
    entries: Vec<Entry>,
    /// The latest snapshot: its metadata and data (the applied entries, postcard).
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// The snapshot being received.
    receiving: Option<(SnapshotMeta, Vec<u8>)>,
    /// Persist requests issued but not yet durable, in order.
    unacked: VecDeque<PersistRequest>,
    /// Every persist request the core ever issued.
    requests: Vec<PersistRequest>,
    last_seq: u64,
    /// Leave persist requests unacknowledged until the test acknowledges them.
    hold: bool,
}

impl Store {
    /// Carries out one request the way a `LogStore` would: hard state, truncation, append.
    fn write(&mut self, r: &PersistRequest) {
        assert_eq!(r.seq, self.last_seq + 1, "persist requests complete in order");
        self.last_seq = r.seq;
        if let Some(hs) = r.hard_state {
            self.hs = hs;
        }
        if let Some(from) = r.truncate_from {
            assert!(from > self.prev.index, "truncation of purged entries");
            assert!(from <= self.last_index(), "truncation of entries the store does not hold");
            self.entries.truncate((from - self.prev.index - 1) as usize);
        }
        for e in &r.entries {
            assert_eq!(e.index, self.last_index() + 1, "appended entries must continue the log");
            self.entries.push(e.clone());
        }
        if let Some(meta) = &r.install {
            let (got, data) = self.receiving.take().expect("an install finishes a received snapshot");
            assert_eq!(&got, meta, "the install finishes the snapshot received");
            assert_eq!(data.len() as u64, meta.size);
            assert_eq!(crc32c::crc32c(&data), meta.checksum, "only a verified snapshot is installed");
            self.snapshot = Some((got, data));
            if self.term_at(meta.last.index) == Some(meta.last.term) {
                self.purge(meta.last.index);
            } else {
                self.entries.clear();
                self.prev = meta.last;
            }
        }
    }

    fn last_index(&self) -> LogIndex {
        self.prev.index + self.entries.len() as LogIndex
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.prev.index {
            return Some(self.prev.term);
        }
        let at = index.checked_sub(self.prev.index + 1)?;
        self.entries.get(at as usize).map(|e| e.term)
    }

    /// The entries `start..end`, if all held.
    fn range(&self, start: LogIndex, end: LogIndex) -> Option<Vec<Entry>> {
        let from = start.checked_sub(self.prev.index + 1)? as usize;
        let to = end.checked_sub(self.prev.index + 1)? as usize;
        self.entries.get(from..to).map(<[Entry]>::to_vec)
    }

    fn purge(&mut self, upto: LogIndex) -> LogId {
        let term = self.term_at(upto).expect("purge up to a held entry");
        let n = (upto - self.prev.index) as usize;
        self.entries.drain(..n);
        self.prev = LogId { index: upto, term };
        self.prev
    }
}

/// The state a harness snapshot holds: the entries applied, encoded.
fn snapshot_of(applied: &[Entry]) -> Vec<u8> {
    postcard::to_allocvec(applied).expect("entries encode")
}

struct Node {
    core: RaftCore,
    store: Store,
    /// Everything handed to the state machine, in order.
    applied: Vec<Entry>,
    /// Answers to client requests (reads and forwarded proposals), in order.
    answers: Vec<Action>,
    /// Snapshots taken, snapshot chunks read, snapshots restored.
    snapshots_taken: usize,
    chunks_loaded: usize,
    restores: usize,
    /// While set, received snapshot chunks are written but not yet reported written
    /// (a slow disk): the reports wait here for `Cluster::report_chunk_writes`.
    unreported_chunks: Option<Vec<(LogId, u64)>>,
}

impl Node {
    /// Carries out a snapshot action the way the driver would; whether it fed the core.
    fn snapshot_action(&mut self, now: Instant, action: Action) -> bool {
        match action {
            Action::TakeSnapshot => {
                let last = self.applied.last().map(|e| LogId { index: e.index, term: e.term }).unwrap_or_default();
                let (membership_index, membership) = self
                    .applied
                    .iter()
                    .rev()
                    .find_map(|e| match &e.payload {
                        EntryPayload::Membership(m) => Some((e.index, (**m).clone())),
                        _ => None,
                    })
                    .or_else(|| self.store.snapshot.as_ref().map(|(m, _)| (m.membership_index, m.membership.clone())))
                    .unwrap_or_default();
                let data = snapshot_of(&self.applied);
                let meta = SnapshotMeta {
                    last,
                    membership,
                    membership_index,
                    size: data.len() as u64,
                    checksum: crc32c::crc32c(&data),
                };
                self.snapshots_taken += 1;
                self.store.snapshot = Some((meta.clone(), data));
                self.core.step(now, Input::SnapshotTaken { result: Ok(meta) });
                true
            }
            Action::PurgeLog { upto } => {
                let prev = self.store.purge(upto);
                self.core.step(now, Input::LogPurged { prev });
                true
            }
            Action::LoadSnapshotChunk { peer, term, last, offset, len } => {
                let data = match &self.store.snapshot {
                    Some((m, d)) if m.last == last => {
                        let start = (offset as usize).min(d.len());
                        let end = (start + len).min(d.len());
                        Ok(Bytes::copy_from_slice(&d[start..end]))
                    }
                    _ => Err("no such snapshot".to_string()),
                };
                self.chunks_loaded += 1;
                self.core.step(now, Input::SnapshotChunkLoaded { peer, term, last, offset, data });
                true
            }
            Action::WriteSnapshotChunk { meta, offset, data } => {
                if offset == 0 {
                    self.store.receiving = Some((meta.clone(), Vec::new()));
                }
                let (m, buf) = self.store.receiving.as_mut().expect("chunks after offset 0");
                assert_eq!(*m, meta, "chunks of one snapshot");
                assert_eq!(buf.len() as u64, offset, "chunks are written in order");
                buf.extend_from_slice(&data);
                let next = buf.len() as u64;
                if let Some(unreported) = &mut self.unreported_chunks {
                    unreported.push((meta.last, next));
                    return false;
                }
                self.core.step(now, Input::SnapshotChunkWritten { last: meta.last, next });
                true
            }
            Action::RestoreSnapshot { meta } => {
                let (held, data) = self.store.snapshot.as_ref().expect("a restored snapshot is held");
                assert_eq!(*held, meta);
                self.applied = postcard::from_bytes(data).expect("harness snapshots decode");
                self.restores += 1;
                self.core.step(now, Input::Applied { index: meta.last.index });
                true
            }
            _ => unreachable!("not a snapshot action"),
        }
    }

    /// Makes the unacknowledged requests up to `upto` durable and reports it.
    fn ack(&mut self, now: Instant, upto: u64) {
        let mut last = None;
        while self.store.unacked.front().is_some_and(|r| r.seq <= upto) {
            if let Some(r) = self.store.unacked.pop_front() {
                self.store.write(&r);
                last = Some(r.seq);
            }
        }
        if let Some(seq) = last {
            self.core.step(now, Input::Persisted { seq });
        }
    }
}

struct Cluster {
    cfg: Config,
    now: Instant,
    nodes: std::collections::BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered or dropped, oldest first.
    queue: VecDeque<Message>,
    /// Every message delivered so far, in delivery order.
    delivered: Vec<Message>,
    /// Directed links that lose every message.
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Cluster {
    /// `n` nodes bootstrapped identically with configuration `1..=n`.
    fn new(n: u64) -> Self {
        Self::with_config(n, config())
    }

    fn with_config(n: u64, cfg: Config) -> Self {
        Self::with_logs(cfg, (1..=n).map(|_| (HardState::default(), vec![bootstrap_entry(n)])).collect())
    }

    /// Nodes `1..=logs.len()` restored from the given durable states.
    fn with_logs(cfg: Config, logs: Vec<(HardState, Vec<Entry>)>) -> Self {
        let mut c = Cluster {
            cfg,
            now: Instant::ZERO,
            nodes: Default::default(),
            queue: VecDeque::new(),
            delivered: Vec::new(),
            cut: BTreeSet::new(),
        };
        for (i, (hs, entries)) in logs.into_iter().enumerate() {
            c.add_node(i as NodeId + 1, hs, entries);
        }
        c
    }

    /// Adds node `id` restored from `hs` and `entries`.
    fn add_node(&mut self, id: NodeId, hs: HardState, entries: Vec<Entry>) {
        let core = RaftCore::new(id, self.cfg.clone(), hs, LogId::default(), None, entries.clone(), self.now);
        let store = Store { hs, entries, ..Store::default() };
        let node = Node {
            core,
            store,
            applied: Vec::new(),
            answers: Vec::new(),
            snapshots_taken: 0,
            chunks_loaded: 0,
            restores: 0,
            unreported_chunks: None,
        };
        self.nodes.insert(id, node);
        self.process(id);
    }

    /// Adds node `id` with an empty store, as a new machine waiting to be added.
    fn add_empty_node(&mut self, id: NodeId) {
        self.add_node(id, HardState::default(), Vec::new());
    }

    /// Asks node `id` to make a membership change and carries out its actions.
    fn change(&mut self, id: NodeId, change: ConfigChange) -> Result<LogIndex, ConfigError> {
        let r = self.node_mut(id).core.change_membership(&change);
        self.process(id);
        r
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    fn core(&self, id: NodeId) -> &RaftCore {
        &self.node(id).core
    }

    fn commit(&self, id: NodeId) -> LogIndex {
        self.core(id).status().commit_index
    }

    fn last(&self, id: NodeId) -> LogId {
        self.core(id).status().last_log()
    }

    /// The entries the core holds, from index 1.
    fn log(&self, id: NodeId) -> Vec<Entry> {
        let core = self.core(id);
        (1..=core.status().last_log_index).map(|i| core.entry(i).cloned().expect("log has a hole")).collect()
    }

    fn terms(&self, id: NodeId) -> Vec<Term> {
        self.log(id).iter().map(|e| e.term).collect()
    }

    /// Runs the core's deferred work and carries out its actions until it settles:
    /// persist requests are acknowledged at once unless the store holds them.
    fn process(&mut self, id: NodeId) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else { return };
        for _ in 0..10_000 {
            let actions = node.core.take_actions(now);
            let mut busy = !actions.is_empty();
            for a in actions {
                match a {
                    Action::Persist(r) => {
                        node.store.requests.push(r.clone());
                        node.store.unacked.push_back(r);
                    }
                    Action::Send(m) => {
                        assert_eq!(m.from, id, "a node sends only in its own name");
                        self.queue.push_back(m);
                    }
                    Action::Apply(entries) => {
                        for e in entries {
                            let expected = node.applied.last().map_or(1, |l| l.index + 1);
                            assert_eq!(e.index, expected, "node {id} applies in order and exactly once");
                            assert!(e.index <= node.core.status().commit_index, "node {id} applies only committed");
                            node.applied.push(e);
                        }
                        if let Some(l) = node.applied.last() {
                            node.core.step(now, Input::Applied { index: l.index });
                        }
                    }
                    Action::SetTimer(_) => {}
                    a @ (Action::ReadReady { .. } | Action::ReadFailed { .. } | Action::Forwarded { .. }) => {
                        node.answers.push(a)
                    }
                    Action::LoadEntries { peer, term, start, end } => {
                        let entries = node
                            .store
                            .range(start, end)
                            .ok_or_else(|| format!("entries {start}..{end} not in the store"));
                        node.core.step(now, Input::EntriesLoaded { peer, term, entries });
                        busy = true;
                    }
                    a @ (Action::TakeSnapshot
                    | Action::PurgeLog { .. }
                    | Action::LoadSnapshotChunk { .. }
                    | Action::WriteSnapshotChunk { .. }
                    | Action::RestoreSnapshot { .. }) => busy |= node.snapshot_action(now, a),
                }
            }
            if !node.store.hold && !node.store.unacked.is_empty() {
                node.ack(now, u64::MAX);
                busy = true;
            }
            if !busy {
                return;
            }
        }
        panic!("node {id} never settles");
    }

    /// Makes node `id`'s disk slow (`true`: chunk writes are not reported) or reports
    /// every write held so far and makes it fast again (`false`).
    fn slow_chunk_writes(&mut self, id: NodeId, slow: bool) {
        let held = std::mem::replace(&mut self.node_mut(id).unreported_chunks, slow.then(Vec::new));
        for (last, next) in held.unwrap_or_default() {
            self.step(id, Input::SnapshotChunkWritten { last, next });
        }
    }

    fn step(&mut self, id: NodeId, input: Input) {
        let now = self.now;
        self.node_mut(id).core.step(now, input);
        self.process(id);
    }

    fn tick(&mut self, id: NodeId) {
        self.step(id, Input::Tick);
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.add(d);
    }

    /// Moves the clock to `id`'s next deadline (if later) and ticks only `id`.
    fn fire_timeout(&mut self, id: NodeId) {
        self.now = self.now.max(self.core(id).next_deadline());
        self.tick(id);
    }

    fn propose(&mut self, id: NodeId, commands: Vec<Bytes>) -> Result<(LogIndex, Term), ProposeError> {
        let r = self.node_mut(id).core.propose(commands);
        self.process(id);
        r
    }

    /// Leaves `id`'s persist requests unacknowledged until [`Cluster::ack`].
    fn hold(&mut self, id: NodeId) {
        self.node_mut(id).store.hold = true;
    }

    /// Acknowledges every outstanding persist request of `id` (the store keeps holding
    /// later ones).
    fn ack(&mut self, id: NodeId) {
        let now = self.now;
        self.node_mut(id).ack(now, u64::MAX);
        self.process(id);
    }

    /// Stops holding `id`'s persist requests and acknowledges the outstanding ones.
    fn release(&mut self, id: NodeId) {
        self.node_mut(id).store.hold = false;
        self.ack(id);
    }

    /// Loses every message between `a` and `b`, both ways.
    fn cut_link(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Loses every message to or from `id`.
    fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            self.cut_link(id, o);
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Hands `m` to its recipient, as if it came off the network (cut links ignored).
    fn inject(&mut self, m: Message) {
        let to = m.to;
        if !self.nodes.contains_key(&to) {
            return;
        }
        self.delivered.push(m.clone());
        self.step(to, Input::Message(m));
    }

    /// Delivers queued messages matching `pred`, oldest first, including any that the
    /// deliveries produce, until none matches. Messages on cut links are lost.
    /// Returns how many were delivered.
    fn deliver_where(&mut self, pred: impl Fn(&Message) -> bool) -> usize {
        let mut n = 0;
        while let Some(pos) = self.queue.iter().position(&pred) {
            let m = self.queue.remove(pos).expect("position is in range");
            if self.cut.contains(&(m.from, m.to)) {
                continue;
            }
            self.inject(m);
            n += 1;
            assert!(n < 1_000_000, "messages never stop");
        }
        n
    }

    fn deliver_all(&mut self) -> usize {
        self.deliver_where(|_| true)
    }

    /// Delivers the oldest queued message matching `pred`, if any.
    fn deliver_one(&mut self, pred: impl Fn(&Message) -> bool) -> Option<Message> {
        let pos = self.queue.iter().position(pred)?;
        let m = self.queue.remove(pos)?;
        self.inject(m.clone());
        Some(m)
    }

    /// Removes the queued messages matching `pred` and returns them undelivered.
    fn take_where(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (taken, kept): (VecDeque<Message>, VecDeque<Message>) =
            std::mem::take(&mut self.queue).into_iter().partition(|m| pred(m));
        self.queue = kept;
        taken.into()
    }

    /// The queued messages matching `pred`.
    fn queued(&self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        self.queue.iter().filter(|m| pred(m)).cloned().collect()
    }

    /// Lets time pass until `end`: every node is ticked at its deadlines, and every
    /// message is delivered (or lost on a cut link) as soon as it is sent.
    fn run_until(&mut self, end: Instant) {
        for _ in 0..100_000 {
            self.deliver_all();
            let next = self.nodes.values().map(|n| n.core.next_deadline()).min().expect("no nodes");
            if next > end {
                self.now = self.now.max(end);
                return;
            }
            self.now = self.now.max(next);
            let due: Vec<NodeId> =
                self.nodes.iter().filter(|(_, n)| n.core.next_deadline() <= self.now).map(|(&id, _)| id).collect();
            for id in due {
                self.tick(id);
            }
        }
        panic!("time does not advance");
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now.add(d);
        self.run_until(end);
    }

    /// Lets `id`'s election timeout fire and delivers everything: `id` wins.
    fn elect(&mut self, id: NodeId) {
        self.fire_timeout(id);
        self.deliver_all();
        assert_eq!(self.core(id).role(), Role::Leader, "node {id} should have won the election");
    }

    /// Rebuilds `id` from its store, as after a crash: unacknowledged writes are lost.
    fn restart(&mut self, id: NodeId) {
        let now = self.now;
        let cfg = self.cfg.clone();
        let node = self.node_mut(id);
        node.store.unacked.clear();
        node.store.last_seq = 0;
        node.store.receiving = None;
        let snapshot = node.store.snapshot.clone();
        node.applied = snapshot.as_ref().map(|(_, d)| postcard::from_bytes(d).expect("decodes")).unwrap_or_default();
        let meta = snapshot.map(|(m, _)| m);
        let store = &node.store;
        let from = meta.as_ref().map_or(store.prev.index, |m| m.last.index);
        let entries = store.range(from + 1, store.last_index() + 1).expect("the log continues the snapshot");
        node.core = RaftCore::new(id, cfg, store.hs, store.prev, meta, entries, now);
        self.process(id);
    }

    /// Rejected appends delivered from `from` so far.
    fn rejections_from(&self, from: NodeId) -> usize {
        self.delivered
            .iter()
            .filter(|m| m.from == from && matches!(m.body, MessageBody::AppendEntriesResponse { success: false, .. }))
            .count()
    }
}

// ----- message helpers -----

fn is_pre_vote_traffic(m: &Message) -> bool {
    matches!(m.body, MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. })
}

fn is_vote_traffic(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::PreVote { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::RequestVote { .. }
            | MessageBody::RequestVoteResponse { .. }
    )
}

fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendEntries { .. })
}

fn is_append_with_entries(m: &Message) -> bool {
    matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())
}

fn appended_indexes(m: &Message) -> Vec<LogIndex> {
    match &m.body {
        MessageBody::AppendEntries { entries, .. } => entries.iter().map(|e| e.index).collect(),
        _ => Vec::new(),
    }
}

fn request_vote(from: NodeId, to: NodeId, term: Term, last: (LogIndex, Term)) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::RequestVote { last_log_index: last.0, last_log_term: last.1, transfer: false },
    }
}

fn pre_vote(from: NodeId, to: NodeId, term: Term, last: (LogIndex, Term)) -> Message {
    Message { from, to, term, body: MessageBody::PreVote { last_log_index: last.0, last_log_term: last.1 } }
}

fn append(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: (LogIndex, Term),
    entries: Vec<Entry>,
    commit: LogIndex,
) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
        },
    }
}

fn blank(index: LogIndex, term: Term) -> Entry {
    Entry { term, index, payload: EntryPayload::Blank }
}

fn vote_granted(m: &Message) -> Option<bool> {
    match m.body {
        MessageBody::RequestVoteResponse { granted } => Some(granted),
        _ => None,
    }
}

/// The single queued message from `from` to `to`, removed from the queue.
fn take_reply(c: &mut Cluster, from: NodeId, to: NodeId) -> Message {
    let mut replies = c.take_where(|m| m.from == from && m.to == to);
    assert_eq!(replies.len(), 1, "expected exactly one message {from} -> {to}, got {replies:?}");
    replies.remove(0)
}

impl Cluster {
    fn read_index(&mut self, id: NodeId) -> Result<u64, ProposeError> {
        let now = self.now;
        let r = self.node_mut(id).core.read_index(now);
        self.process(id);
        r
    }

    fn forward(&mut self, id: NodeId, commands: Vec<crate::session::SessionOp>) -> Result<u64, ProposeError> {
        let now = self.now;
        let r = self.node_mut(id).core.forward(now, commands);
        self.process(id);
        r
    }

    fn forward_again(
        &mut self,
        id: NodeId,
        request: u64,
        commands: Vec<crate::session::SessionOp>,
    ) -> Result<(), ProposeError> {
        let r = self.node_mut(id).core.forward_again(request, commands);
        self.process(id);
        r
    }

    fn read_index_again(&mut self, id: NodeId, request: u64) -> Result<(), ProposeError> {
        let r = self.node_mut(id).core.read_index_again(request);
        self.process(id);
        r
    }

    /// The commands `id` has applied, in order.
    /// The commands `id` applied, plain or in a session, every copy.
    fn applied_commands(&self, id: NodeId) -> Vec<Bytes> {
        let applied = &self.node(id).applied;
        applied
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Command(b) => Some(b.clone()),
                EntryPayload::Session(s) => match &s.op {
                    crate::session::SessionOp::Command { command, .. }
                    | crate::session::SessionOp::Once { command, .. } => Some(command.clone()),
                    crate::session::SessionOp::Open => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The (client, seq) of the session commands `id` applied, every copy, in order.
    fn applied_session_keys(&self, id: NodeId) -> Vec<(crate::session::ClientId, u64)> {
        let applied = &self.node(id).applied;
        applied
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Session(s) => match s.op {
                    crate::session::SessionOp::Command { client, seq, .. } => Some((client, seq)),
                    crate::session::SessionOp::Once { client, .. } => Some((client, 1)),
                    crate::session::SessionOp::Open => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The read indexes `id` was given, as (read id, index).
    fn reads_ready(&self, id: NodeId) -> Vec<(u64, LogIndex)> {
        let answers = &self.node(id).answers;
        answers
            .iter()
            .filter_map(|a| if let Action::ReadReady { id, index } = a { Some((*id, *index)) } else { None })
            .collect()
    }

    fn reads_failed(&self, id: NodeId) -> Vec<u64> {
        let answers = &self.node(id).answers;
        answers.iter().filter_map(|a| if let Action::ReadFailed { id } = a { Some(*id) } else { None }).collect()
    }
}

// ----- helpers shared by the concept files -----

/// Figure 8 of the Raft paper, on five bare cores. Index 2 (term 2) is on S1 and S2;
/// S5 holds a different index 2 (term 3). S1 leads term 4.
fn figure_8_setup() -> Cluster {
    let n = 5;
    let logs = vec![
        (hard_state(3), log_with_terms(n, &[2])),
        (hard_state(3), log_with_terms(n, &[2])),
        (hard_state(3), log_with_terms(n, &[])),
        (hard_state(3), log_with_terms(n, &[])),
        (hard_state(3), log_with_terms(n, &[3])),
    ];
    let mut c = Cluster::with_logs(Config { max_entries_per_message: 1, ..config() }, logs);
    c.isolate(4);
    c.isolate(5);
    c.fire_timeout(1);
    c.deliver_where(is_vote_traffic);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, 4));
    assert_eq!(c.last(1), LogId { term: 4, index: 3 });
    // S2 gets the blank entry (index 3); S3 gets index 2 but loses index 3.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    c.deliver_one(|m| m.to == 3 && is_append(m)); // prev 2: S3 lacks it and rejects
    c.deliver_one(|m| m.from == 3);
    c.deliver_one(|m| m.to == 3 && is_append(m)); // prev 1, carrying index 2
    c.deliver_one(|m| m.from == 3);
    assert_eq!(c.terms(3), vec![0, 2]);
    let lost = c.take_where(|m| m.to == 3);
    assert_eq!(lost.iter().map(appended_indexes).collect::<Vec<_>>(), vec![vec![3]]);
    c
}

fn windowed_config() -> Config {
    Config { max_inflight_messages: 2, max_entries_per_message: 5, ..config() }
}

fn is_heartbeat(m: &Message) -> bool {
    matches!(m.body, MessageBody::Heartbeat { .. })
}

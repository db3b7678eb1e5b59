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

use super::{Action, Input, PersistRequest, ProposeError, RaftCore, Role};
use crate::config::Config;
use crate::membership::Membership;
use crate::message::{ConflictHint, Message, MessageBody};
use crate::types::{Entry, EntryPayload, HardState, Instant, LogId, LogIndex, NodeId, Term};

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
    /// Contiguous from index 1.
    entries: Vec<Entry>,
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
            assert!(from >= 1, "index 0 is not an entry");
            assert!(from as usize <= self.entries.len(), "truncation of entries the store does not hold");
            self.entries.truncate(from as usize - 1);
        }
        for e in &r.entries {
            assert_eq!(e.index, self.entries.len() as LogIndex + 1, "appended entries must continue the log");
            self.entries.push(e.clone());
        }
    }
}

struct Node {
    core: RaftCore,
    store: Store,
    /// Everything handed to the state machine, in order.
    applied: Vec<Entry>,
    /// Answers to client requests (reads and forwarded proposals), in order.
    answers: Vec<Action>,
}

impl Node {
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
            let id = i as NodeId + 1;
            let core = RaftCore::new(id, c.cfg.clone(), hs, LogId::default(), entries.clone(), c.now);
            let store = Store { hs, entries, ..Store::default() };
            c.nodes.insert(id, Node { core, store, applied: Vec::new(), answers: Vec::new() });
            c.process(id);
        }
        c
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
                            .entries
                            .get((start - 1) as usize..(end - 1) as usize)
                            .map(<[Entry]>::to_vec)
                            .ok_or_else(|| format!("entries {start}..{end} not in the store"));
                        node.core.step(now, Input::EntriesLoaded { peer, term, entries });
                        busy = true;
                    }
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
        node.applied.clear();
        node.core = RaftCore::new(id, cfg, node.store.hs, LogId::default(), node.store.entries.clone(), now);
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
    Message { from, to, term, body: MessageBody::RequestVote { last_log_index: last.0, last_log_term: last.1 } }
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

// ----- election -----

#[test]
fn follower_starts_pre_vote_after_election_timeout() {
    let mut c = Cluster::new(3);
    let cfg = config();
    let deadline = c.core(1).next_deadline();
    assert!(deadline >= Instant::ZERO.add(cfg.election_timeout_min));
    assert!(deadline < Instant::ZERO.add(cfg.election_timeout_max));

    c.now = Instant::from_nanos(deadline.as_nanos() - 1);
    c.tick(1);
    assert_eq!(c.core(1).role(), Role::Follower, "nothing happens before the timeout");
    assert!(c.queue.is_empty());

    c.now = deadline;
    c.tick(1);
    assert_eq!(c.core(1).role(), Role::PreCandidate);
    let st = c.core(1).status();
    assert_eq!((st.term, st.voted_for), (0, None), "a pre-candidate keeps its term and vote");
    assert!(c.node(1).store.requests.is_empty(), "a pre-vote round persists nothing");
    let sent = c.queued(|m| m.from == 1);
    assert_eq!(sent.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for m in sent {
        assert_eq!(m.term, 1, "pre-votes carry the prospective term");
        assert_eq!(m.body, MessageBody::PreVote { last_log_index: 1, last_log_term: 0 });
    }
}

#[test]
fn pre_vote_does_not_change_terms() {
    let mut c = Cluster::new(3);
    c.fire_timeout(1);
    assert_eq!(c.deliver_where(|m| matches!(m.body, MessageBody::PreVote { .. })), 2);
    for id in [2, 3] {
        let st = c.core(id).status();
        assert_eq!((st.term, st.voted_for, st.role), (0, None, Role::Follower), "node {id}");
        assert!(c.node(id).store.requests.is_empty(), "node {id} persisted something for a pre-vote");
    }
    let replies = c.queued(|m| m.to == 1);
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!((r.term, &r.body), (1, &MessageBody::PreVoteResponse { granted: true }));
    }
    assert_eq!(c.core(1).term(), 0, "the pre-candidate's own term is unchanged until it wins");

    // A refused pre-vote changes nobody's term either: a candidate with a stale log asks
    // for a far-future term.
    c.inject(pre_vote(3, 2, 9, (0, 0)));
    let r = take_reply(&mut c, 2, 3);
    assert_eq!(r.body, MessageBody::PreVoteResponse { granted: false });
    assert_eq!((c.core(2).term(), c.core(3).term()), (0, 0));

    // Winning the pre-vote starts the real election in the next term.
    c.deliver_one(|m| m.to == 1 && is_pre_vote_traffic(m));
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Candidate, 1));
}

#[test]
fn candidate_with_majority_becomes_leader_and_appends_blank_entry() {
    let mut c = Cluster::new(3);
    c.fire_timeout(1);
    c.deliver_where(is_pre_vote_traffic);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Candidate, 1));

    // Only node 2 hears the vote request; its vote plus the candidate's own is a majority.
    c.deliver_one(|m| m.to == 2 && matches!(m.body, MessageBody::RequestVote { .. }));
    assert_eq!(c.core(1).role(), Role::Candidate, "one vote is not a majority");
    c.deliver_one(|m| m.from == 2 && m.to == 1);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!((c.core(1).term(), c.core(1).leader()), (1, Some(1)));

    let expected = blank(2, 1);
    assert_eq!(c.core(1).entry(2), Some(&expected), "a new leader appends a blank entry of its term");
    let appends = c.queued(is_append);
    assert_eq!(appends.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for m in &appends {
        let MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, .. } = &m.body else { unreachable!() };
        assert_eq!((*prev_log_index, *prev_log_term, entries.clone()), (1, 0, vec![expected.clone()]));
    }

    // Node 3, which never saw the vote request in time, follows the leader's appends;
    // the blank entry commits everything before it.
    c.deliver_all();
    for id in 1..=3 {
        assert_eq!((c.core(id).term(), c.core(id).leader()), (1, Some(1)), "node {id}");
        assert_eq!(c.commit(id), 2, "node {id}");
    }
}

#[test]
fn candidate_increments_term_and_votes_for_itself() {
    let mut c = Cluster::with_config(3, Config { pre_vote: false, ..config() });
    c.hold(1);
    c.fire_timeout(1);
    let st = c.core(1).status();
    assert_eq!((st.role, st.term, st.voted_for), (Role::Candidate, 1, Some(1)));
    let reqs = &c.node(1).store.unacked;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].hard_state, Some(HardState { term: 1, voted_for: Some(1) }));
    assert!(c.queue.is_empty(), "vote requests wait for the new term and self-vote to be durable");

    c.ack(1);
    assert_eq!(c.node(1).store.hs, HardState { term: 1, voted_for: Some(1) });
    let requests = c.queued(|m| m.from == 1);
    assert_eq!(requests.len(), 2);
    for m in requests {
        assert_eq!(m.term, 1);
        assert_eq!(m.body, MessageBody::RequestVote { last_log_index: 1, last_log_term: 0 });
    }
}

#[test]
fn vote_granted_at_most_once_per_term() {
    let mut c = Cluster::new(3);
    c.inject(request_vote(1, 3, 1, (1, 0)));
    assert_eq!(vote_granted(&take_reply(&mut c, 3, 1)), Some(true));
    assert_eq!(c.core(3).status().voted_for, Some(1));

    c.inject(request_vote(2, 3, 1, (1, 0)));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, vote_granted(&r)), (1, Some(false)), "second candidate of the same term is refused");
    assert_eq!(c.core(3).status().voted_for, Some(1));
    assert_eq!(c.node(3).store.hs, HardState { term: 1, voted_for: Some(1) }, "the vote is durable");

    // A retransmitted request from the same candidate gets the same answer.
    c.inject(request_vote(1, 3, 1, (1, 0)));
    assert_eq!(vote_granted(&take_reply(&mut c, 3, 1)), Some(true));

    // A new term brings a new vote.
    c.inject(request_vote(2, 3, 2, (1, 0)));
    assert_eq!(vote_granted(&take_reply(&mut c, 3, 2)), Some(true));
    assert_eq!(c.node(3).store.hs, HardState { term: 2, voted_for: Some(2) });
}

#[test]
fn vote_refused_to_candidate_with_stale_log() {
    let default = (hard_state(0), vec![bootstrap_entry(3)]);
    // Node 3's log ends at index 3, term 2.
    let logs = vec![default.clone(), default, (hard_state(2), log_with_terms(3, &[1, 2]))];
    let mut c = Cluster::with_logs(config(), logs);

    let cases = [
        (3, (5, 1), false, "longer log, older last term"),
        (4, (2, 2), false, "same last term, shorter log"),
        (5, (3, 2), true, "identical last entry"),
        (6, (2, 3), true, "newer last term wins over length"),
    ];
    for (term, last, granted, why) in cases {
        c.inject(request_vote(1, 3, term, last));
        let r = take_reply(&mut c, 3, 1);
        assert_eq!(vote_granted(&r), Some(granted), "{why}");
        assert_eq!(r.term, term, "{why}: the voter adopts the candidate's term either way");
        assert_eq!(c.core(3).status().voted_for, granted.then_some(1), "{why}");
    }
}

#[test]
fn follower_with_live_leader_ignores_vote_requests() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let contact = c.now;
    let min = config().election_timeout_min;
    let last = (c.last(2).index, c.last(2).term);

    c.advance(min - ms(1));
    c.inject(request_vote(2, 3, 2, last));
    assert!(c.queue.is_empty(), "no answer while the leader is live");
    assert_eq!((c.core(3).term(), c.core(3).leader()), (1, Some(1)), "term unchanged");

    // The leader itself ignores it too.
    c.inject(request_vote(2, 1, 2, last));
    assert!(c.queue.is_empty());
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, 1));

    // Once the leader has been silent for the minimum election timeout, the request counts.
    c.now = contact.add(min);
    c.inject(request_vote(2, 3, 2, last));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, vote_granted(&r)), (2, Some(true)));
    assert_eq!(c.core(3).leader(), None);
}

#[test]
fn pre_vote_refused_while_leader_is_live() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let contact = c.now;
    let last = (c.last(2).index, c.last(2).term);

    c.advance(ms(100));
    c.inject(pre_vote(2, 3, 2, last));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, r.body), (1, MessageBody::PreVoteResponse { granted: false }));
    assert_eq!(c.core(3).term(), 1);

    let before = c.core(3).status();
    c.now = contact.add(config().election_timeout_min);
    c.inject(pre_vote(2, 3, 2, last));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, r.body), (2, MessageBody::PreVoteResponse { granted: true }));
    let st = c.core(3).status();
    assert_eq!(
        (st.term, st.voted_for, st.leader),
        (1, before.voted_for, Some(1)),
        "granting a pre-vote changes nothing"
    );
}

#[test]
fn partitioned_follower_does_not_disrupt_leader_on_rejoin() {
    let mut c = Cluster::new(3);
    c.elect(1);
    // Node 2 loses the leader but still reaches node 3, which keeps hearing the leader.
    c.cut_link(1, 2);
    c.run_for(ms(2_000));
    assert_eq!(c.core(2).term(), 1, "pre-votes refused by node 3 never raise node 2's term");
    assert_ne!(c.core(2).role(), Role::Leader);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, 1));

    c.heal();
    c.run_for(ms(500));
    for id in 1..=3 {
        assert_eq!((c.core(id).term(), c.core(id).leader()), (1, Some(1)), "node {id}");
    }
}

#[test]
fn higher_term_message_makes_leader_step_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.inject(Message { from: 2, to: 1, term: 5, body: MessageBody::HeartbeatResponse { ctx: 0 } });
    let st = c.core(1).status();
    assert_eq!((st.role, st.term, st.voted_for, st.leader), (Role::Follower, 5, None, None));
    assert_eq!(c.node(1).store.hs, hard_state(5), "the new term is persisted");
    assert_eq!(c.propose(1, vec![cmd(0)]), Err(ProposeError::NotLeader(None)));

    // An append from a leader of a newer term makes the node follow that leader.
    let mut c = Cluster::new(3);
    c.elect(1);
    let last = c.last(1);
    c.inject(append(2, 1, 3, (last.index, last.term), vec![], last.index));
    assert_eq!((c.core(1).role(), c.core(1).term(), c.core(1).leader()), (Role::Follower, 3, Some(2)));
    let r = take_reply(&mut c, 1, 2);
    assert_eq!(r.term, 3);
    assert!(matches!(r.body, MessageBody::AppendEntriesResponse { success: true, .. }));
}

#[test]
fn candidate_yields_to_leader_of_its_term() {
    let mut c = Cluster::with_config(3, Config { pre_vote: false, ..config() });
    c.fire_timeout(1);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Candidate, 1));
    c.take_where(|_| true);
    // Node 2 won term 1 with node 3's vote; its first append reaches node 1.
    c.inject(append(2, 1, 1, (1, 0), vec![blank(2, 1)], 0));
    assert_eq!((c.core(1).role(), c.core(1).term(), c.core(1).leader()), (Role::Follower, 1, Some(2)));
    assert_eq!(c.last(1), LogId { term: 1, index: 2 });
}

#[test]
fn leader_steps_down_without_quorum_contact() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let max = config().election_timeout_max;

    // With a quorum answering, the leader keeps its term indefinitely.
    c.run_for(ms(3_000));
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, 1));

    // Cut off from both followers, it notices within two check-quorum periods.
    c.isolate(1);
    let cut_at = c.now;
    let mut stepped_down_at = None;
    while c.now < cut_at.add(max * 3) {
        c.run_for(ms(10));
        if c.core(1).role() != Role::Leader {
            stepped_down_at = Some(c.now);
            break;
        }
    }
    let at = stepped_down_at.expect("an isolated leader must step down");
    assert!(at <= cut_at.add(max * 2).add(ms(10)), "stepped down only after {:?}", at.saturating_since(cut_at));
    assert_eq!(c.core(1).term(), 1, "stepping down does not change the term");
    assert_eq!(c.core(1).leader(), None);
    assert_eq!(c.propose(1, vec![cmd(0)]), Err(ProposeError::NotLeader(None)));
}

#[test]
fn stale_term_append_is_answered_with_current_term() {
    let default = (hard_state(0), vec![bootstrap_entry(3)]);
    let mut c = Cluster::with_logs(config(), vec![default.clone(), default, (hard_state(5), vec![bootstrap_entry(3)])]);

    c.inject(append(1, 3, 3, (1, 0), vec![blank(2, 3)], 2));
    let r = take_reply(&mut c, 3, 1);
    assert_eq!(r.term, 5);
    assert!(matches!(r.body, MessageBody::AppendEntriesResponse { success: false, .. }));
    assert_eq!(c.last(3).index, 1, "the stale append is not applied");
    assert_eq!((c.core(3).term(), c.core(3).leader()), (5, None), "nor does its sender become leader");

    c.inject(Message { from: 1, to: 3, term: 3, body: MessageBody::Heartbeat { commit: 1, ctx: 0 } });
    let r = take_reply(&mut c, 3, 1);
    assert_eq!(r.term, 5, "a stale heartbeat gets the current term too");
    assert_eq!(c.commit(3), 0);

    // The stale leader learns the newer term from that answer and steps down.
    let mut c = Cluster::new(3);
    c.elect(1);
    c.inject(request_vote(2, 3, 5, (c.last(3).index, c.last(3).term)));
    // Node 3 ignored it while the leader was live; move past the lease and retry.
    c.advance(config().election_timeout_min);
    c.inject(request_vote(2, 3, 5, (c.last(3).index, c.last(3).term)));
    c.take_where(|_| true);
    assert_eq!(c.core(3).term(), 5);
    c.propose(1, vec![cmd(0)]).unwrap();
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Follower, 5));
}

#[test]
fn split_vote_retries_with_new_term() {
    let mut c = Cluster::new(3);
    c.isolate(3);
    // Both time out together and grant each other's pre-vote before either asks for
    // real votes.
    c.now = c.core(1).next_deadline().max(c.core(2).next_deadline());
    c.tick(1);
    c.tick(2);
    c.deliver_where(|m| matches!(m.body, MessageBody::PreVote { .. }));
    c.deliver_where(|m| matches!(m.body, MessageBody::PreVoteResponse { .. }));
    for id in [1, 2] {
        let st = c.core(id).status();
        assert_eq!((st.role, st.term, st.voted_for), (Role::Candidate, 1, Some(id)), "node {id}");
    }
    // Each has voted for itself, so each refuses the other: nobody wins term 1.
    c.deliver_all();
    for id in [1, 2] {
        assert_eq!((c.core(id).role(), c.core(id).term()), (Role::Candidate, 1), "node {id}");
    }
    assert_ne!(c.core(1).next_deadline(), c.core(2).next_deadline(), "randomized timeouts break the tie");

    // The first to time out again retries in a new term and wins it.
    let first = if c.core(1).next_deadline() < c.core(2).next_deadline() { 1 } else { 2 };
    c.fire_timeout(first);
    c.deliver_all();
    assert_eq!((c.core(first).role(), c.core(first).term()), (Role::Leader, 2));
    let other = 3 - first;
    assert_eq!((c.core(other).role(), c.core(other).term(), c.core(other).leader()), (Role::Follower, 2, Some(first)));
}

// ----- durability gating -----

#[test]
fn vote_response_held_until_hard_state_durable() {
    let mut c = Cluster::new(3);
    c.hold(2);
    c.fire_timeout(1);
    c.deliver_where(is_pre_vote_traffic);
    assert_eq!(c.core(1).role(), Role::Candidate, "a pre-vote answer needs nothing durable");

    c.deliver_one(|m| m.to == 2 && matches!(m.body, MessageBody::RequestVote { .. }));
    assert_eq!(c.core(2).status().voted_for, Some(1));
    assert!(c.queued(|m| m.from == 2).is_empty(), "the vote must not leave before it is durable");
    assert_eq!(
        c.node(2).store.unacked.back().and_then(|r| r.hard_state),
        Some(HardState { term: 1, voted_for: Some(1) })
    );

    c.ack(2);
    let r = take_reply(&mut c, 2, 1);
    assert_eq!((r.term, vote_granted(&r)), (1, Some(true)));
}

#[test]
fn append_ack_held_until_entries_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.hold(2);
    let (index, _) = c.propose(1, vec![cmd(0)]).unwrap();
    c.deliver_one(|m| m.to == 2 && is_append(m));
    assert_eq!(c.last(2).index, index, "the follower holds the entry in memory");
    assert!(c.queued(|m| m.from == 2).is_empty(), "but must not acknowledge it before it is durable");

    c.ack(2);
    assert_eq!(c.node(2).store.entries.last().map(|e| e.index), Some(index));
    let r = take_reply(&mut c, 2, 1);
    assert_eq!(r.body, MessageBody::AppendEntriesResponse { success: true, index, hint: None });
}

#[test]
fn leader_does_not_count_itself_before_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let before = c.commit(1);
    c.hold(1);
    let (index, _) = c.propose(1, vec![cmd(0)]).unwrap();

    // One follower's copy plus the leader's in-memory copy is not a durable majority.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.core(1).status().match_index[&2], index);
    assert_eq!(c.commit(1), before);

    // Two durable follower copies are a majority without the leader's.
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!(c.commit(1), index);
    assert!(
        c.node(1).applied.iter().all(|e| e.index < index),
        "the leader applies only what its own log holds durably"
    );

    c.release(1);
    assert_eq!(c.node(1).applied.last().map(|e| e.index), Some(index));

    // The other way round: the leader's durable copy and one follower's make a majority.
    let (index, _) = c.propose(1, vec![cmd(1)]).unwrap();
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.commit(1), index);
}

#[test]
fn leader_sends_appends_before_its_own_write_is_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.hold(1);
    let (index, _) = c.propose(1, vec![cmd(0)]).unwrap();
    let unacked = &c.node(1).store.unacked;
    assert_eq!(unacked.len(), 1);
    assert_eq!(unacked[0].entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![index]);
    assert!(c.node(1).store.entries.len() < index as usize, "not durable yet");
    let appends = c.queued(is_append_with_entries);
    assert_eq!(appends.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for m in appends {
        assert_eq!(appended_indexes(&m), vec![index]);
    }
}

// ----- replication -----

#[test]
fn entries_replicate_and_commit_on_majority() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let (first, term) = c.propose(1, cmds(0..3)).unwrap();
    assert_eq!((first, term), (3, 1));
    assert_eq!(c.commit(1), 2, "nothing new commits before a follower has it");

    // Node 3 hears nothing; node 2's copy makes a majority.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.commit(1), 5);
    assert_eq!(c.commit(2), 5, "the follower learns the commit index promptly");
    assert_eq!(c.last(3).index, 2);
    assert_eq!(c.commit(3), 2);
    let applied: Vec<EntryPayload> = c.node(1).applied.iter().skip(2).map(|e| e.payload.clone()).collect();
    assert_eq!(applied, cmds(0..3).into_iter().map(EntryPayload::Command).collect::<Vec<_>>());

    c.deliver_all();
    for id in 1..=3 {
        assert_eq!(c.log(id), c.log(1), "node {id}");
        assert_eq!(c.commit(id), 5, "node {id}");
        assert_eq!(c.node(id).store.entries, c.log(1), "node {id}'s store");
    }
}

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

#[test]
fn commit_only_counts_current_term_entries() {
    let mut c = figure_8_setup();
    let st = c.core(1).status();
    assert_eq!((st.match_index[&2], st.match_index[&3]), (3, 2));
    // Index 2 is on S1, S2 and S3, a majority, but it is from term 2: counting replicas
    // must not commit it.
    assert_eq!(c.commit(1), 0);
    assert!(c.node(1).applied.is_empty());

    // Once the term-4 entry is on a majority, it commits, and index 2 with it.
    c.heal();
    c.isolate(4);
    c.isolate(5);
    c.fire_timeout(1);
    c.deliver_all();
    assert_eq!(c.core(1).status().match_index[&3], 3);
    assert_eq!(c.commit(1), 3);
    assert_eq!(c.node(1).applied.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 0), (2, 2), (3, 4)]);
}

#[test]
fn figure_8_replicated_old_term_entry_can_still_be_overwritten() {
    // Why the rule matters: in the same state, S5 can still win an election with the
    // votes of S3 and S4 and overwrite index 2 on S3, so committing it would have been
    // unsafe.
    let mut c = figure_8_setup();
    c.heal();
    c.isolate(1);
    c.isolate(2);
    c.advance(config().election_timeout_max);
    // The first pre-vote round may only teach S5 the current term.
    for _ in 0..3 {
        if c.core(5).role() == Role::Leader {
            break;
        }
        c.fire_timeout(5);
        c.deliver_all();
    }
    assert_eq!((c.core(5).role(), c.core(5).term()), (Role::Leader, 5));
    assert_eq!(c.terms(3), vec![0, 3, 5], "S3's term-2 entry at index 2 was replaced");
    assert_eq!(c.commit(5), 3);
}

#[test]
fn follower_rejects_append_with_mismatched_prev() {
    let default = (hard_state(2), vec![bootstrap_entry(3)]);
    let logs = vec![default.clone(), (hard_state(2), log_with_terms(3, &[1, 1])), default];
    let mut c = Cluster::with_logs(config(), logs);
    let before = c.log(2);

    // Index 3 exists with term 1, not 2.
    c.inject(append(1, 2, 2, (3, 2), vec![blank(4, 2)], 0));
    let r = take_reply(&mut c, 2, 1);
    let MessageBody::AppendEntriesResponse { success, index, hint } = r.body else { panic!("{r:?}") };
    assert!(!success);
    assert_eq!(index, 3, "the rejection names the rejected prev index");
    let hint = hint.expect("a rejection carries a hint");
    assert_eq!(hint.conflict_term, Some(1));
    assert!(hint.index <= 3);
    assert_eq!(c.log(2), before, "a rejected append changes nothing");

    // Index 5 is beyond the follower's log.
    c.inject(append(1, 2, 2, (5, 2), vec![], 0));
    let r = take_reply(&mut c, 2, 1);
    let hint = Some(ConflictHint { conflict_term: None, index: 4 });
    assert_eq!(r.body, MessageBody::AppendEntriesResponse { success: false, index: 5, hint });
    assert_eq!(c.log(2), before);
    assert_eq!(c.core(2).leader(), Some(1), "a rejected append still comes from the leader");
}

#[test]
fn conflicting_suffix_is_truncated_and_replaced() {
    let default = (hard_state(3), vec![bootstrap_entry(3)]);
    let logs = vec![default.clone(), (hard_state(3), log_with_terms(3, &[1, 2, 2])), default];
    let mut c = Cluster::with_logs(config(), logs);
    let requests_before = c.node(2).store.requests.len();

    // Leader of term 3 has index 2 (term 1) in common, then index 3 of term 3.
    let kept = c.log(2)[1].clone();
    c.inject(append(1, 2, 3, (2, 1), vec![blank(3, 3)], 0));
    let r = take_reply(&mut c, 2, 1);
    assert_eq!(r.body, MessageBody::AppendEntriesResponse { success: true, index: 3, hint: None });
    assert_eq!(c.terms(2), vec![0, 1, 3]);
    assert_eq!(c.log(2)[1], kept);

    let req = &c.node(2).store.requests[requests_before];
    assert_eq!(req.truncate_from, Some(3), "the store drops the conflicting suffix");
    assert_eq!(req.entries, vec![blank(3, 3)]);
    assert_eq!(c.node(2).store.entries, c.log(2));

    // The same append again: nothing to truncate or write.
    c.inject(append(1, 2, 3, (2, 1), vec![blank(3, 3)], 0));
    take_reply(&mut c, 2, 1);
    assert!(c.node(2).store.requests[requests_before + 1..].iter().all(|r| r.truncate_from.is_none()));
    assert_eq!(c.terms(2), vec![0, 1, 3]);
}

#[test]
fn lagging_follower_is_repaired_in_few_round_trips() {
    // Nodes 1 and 2 hold 1000 entries that node 3 never received.
    let full = (hard_state(1), log_with_terms(3, &[1; 1000]));
    let logs = vec![full.clone(), full, (hard_state(1), vec![bootstrap_entry(3)])];
    let mut c = Cluster::with_logs(config(), logs);
    c.elect(1);
    assert_eq!(c.log(3), c.log(1));
    assert_eq!(c.commit(3), 1002);
    assert!(c.rejections_from(3) <= 2, "{} probes rejected", c.rejections_from(3));

    // A follower that lost a stream of pipelined appends is repaired as quickly.
    c.isolate(3);
    for round in 0..10 {
        c.propose(1, cmds(round * 100..round * 100 + 100)).unwrap();
        c.deliver_all();
    }
    assert_eq!(c.commit(1), 2002);
    c.heal();
    let rejected_before = c.rejections_from(3);
    c.propose(1, vec![cmd(1000)]).unwrap();
    c.deliver_all();
    assert_eq!(c.log(3), c.log(1));
    assert!(c.rejections_from(3) - rejected_before <= 2, "{} probes rejected", c.rejections_from(3) - rejected_before);
}

#[test]
fn divergent_follower_with_many_stale_terms_repaired_quickly() {
    // Node 2 led terms 2..=39 in turn, each time appending one entry that went nowhere.
    // Nodes 1 and 3 hold 60 entries of term 40 at those indexes.
    let mut leader_terms = vec![1, 1, 1];
    leader_terms.extend([40; 60]);
    let mut stale_terms = vec![1, 1, 1];
    stale_terms.extend(2..=39);
    let logs = vec![
        (hard_state(40), log_with_terms(3, &leader_terms)),
        (hard_state(40), log_with_terms(3, &stale_terms)),
        (hard_state(40), log_with_terms(3, &leader_terms)),
    ];
    let mut c = Cluster::with_logs(config(), logs);
    c.elect(1);
    assert_eq!(c.log(2), c.log(1));
    assert!(c.rejections_from(2) <= 3, "{} probes rejected", c.rejections_from(2));
}

#[test]
fn divergent_follower_with_newer_stale_terms_repaired_quickly() {
    // The mirror image: node 2's stale entries are of terms 3..=40, newer than the term-2
    // entries the leader holds at those indexes.
    let mut leader_terms = vec![1, 1, 1];
    leader_terms.extend([2; 60]);
    let mut stale_terms = vec![1, 1, 1];
    stale_terms.extend(3..=40);
    let logs = vec![
        (hard_state(41), log_with_terms(3, &leader_terms)),
        (hard_state(41), log_with_terms(3, &stale_terms)),
        (hard_state(41), log_with_terms(3, &leader_terms)),
    ];
    let mut c = Cluster::with_logs(config(), logs);
    c.elect(1);
    assert_eq!(c.log(2), c.log(1));
    assert!(c.rejections_from(2) <= 3, "{} probes rejected", c.rejections_from(2));
}

#[test]
fn random_divergent_logs_converge_to_the_leaders() {
    let mut rng = fastrand::Rng::with_seed(0xd1fe);
    for case in 0..300 {
        // A common prefix, then suffixes whose terms are disjoint sets (two logs sharing
        // an entry's term and index would be identical up to it): each term above the
        // prefix goes to the leader's suffix, the follower's, or neither.
        let mut prefix = Vec::new();
        let mut term = 0;
        for _ in 0..rng.usize(0..20) {
            term += rng.u64(0..2);
            prefix.push(term.max(1));
        }
        let base = prefix.last().copied().unwrap_or(1);
        let (mut leader, mut follower) = (prefix.clone(), prefix);
        let top = base + rng.u64(1..30);
        for t in base + 1..=top {
            let run = rng.usize(1..6);
            match rng.u8(0..3) {
                0 => leader.extend(std::iter::repeat_n(t, run)),
                1 => follower.extend(std::iter::repeat_n(t, run)),
                _ => {}
            }
        }
        let leader_log = log_with_terms(3, &leader);
        let logs = vec![
            (hard_state(top), leader_log.clone()),
            (hard_state(top), log_with_terms(3, &follower)),
            (hard_state(top), leader_log),
        ];
        let mut c = Cluster::with_logs(config(), logs);
        c.elect(1);
        assert_eq!(c.terms(2), c.terms(1), "case {case}: leader {leader:?}, follower {follower:?}");
        assert_eq!(c.node(2).store.entries, c.log(1), "case {case}: the follower's store");
        let distinct: BTreeSet<Term> = leader.iter().chain(&follower).copied().collect();
        assert!(
            c.rejections_from(2) <= distinct.len() + 2,
            "case {case}: {} rejections, leader {leader:?}, follower {follower:?}",
            c.rejections_from(2)
        );
    }
}

#[test]
fn many_proposals_batch_into_one_append_per_peer() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let now = c.now;
    let core = &mut c.node_mut(1).core;
    for i in 0..100 {
        core.propose([cmd(i)]).unwrap();
    }
    let actions = core.take_actions(now);
    let persists: Vec<&PersistRequest> =
        actions.iter().filter_map(|a| if let Action::Persist(r) = a { Some(r) } else { None }).collect();
    assert_eq!(persists.len(), 1);
    assert_eq!(persists[0].entries.len(), 100);
    let appends: Vec<&Message> =
        actions.iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect();
    assert_eq!(appends.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3], "one message per peer");
    for m in appends {
        assert_eq!(appended_indexes(m), (3..=102).collect::<Vec<_>>());
    }
}

fn windowed_config() -> Config {
    Config { max_inflight_messages: 2, max_entries_per_message: 5, ..config() }
}

#[test]
fn pipeline_window_bounds_inflight_messages() {
    let mut c = Cluster::with_config(3, windowed_config());
    c.elect(1);
    c.propose(1, cmds(0..30)).unwrap();
    for peer in [2, 3] {
        let out = c.queued(|m| m.to == peer && is_append_with_entries(m));
        assert_eq!(out.len(), 2, "window of 2 to node {peer}");
        assert_eq!(appended_indexes(&out[0]), (3..=7).collect::<Vec<_>>());
        assert_eq!(appended_indexes(&out[1]), (8..=12).collect::<Vec<_>>());
    }
    c.propose(1, cmds(30..40)).unwrap();
    assert_eq!(c.queued(is_append_with_entries).len(), 4, "a full window takes no more");

    // Node 2 answers one append, but the answer is not back yet: still nothing new.
    c.deliver_one(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(c.queued(|m| m.to == 2 && is_append_with_entries(m)).len(), 1);
    // The answer frees exactly one slot.
    c.deliver_one(|m| m.from == 2 && m.to == 1);
    let out = c.queued(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(out.len(), 2);
    assert_eq!(appended_indexes(&out[1]), (13..=17).collect::<Vec<_>>());

    // Delivering in order, appends in flight never exceed the window.
    while let Some(m) = c.queue.pop_front() {
        c.inject(m);
        for peer in [2, 3] {
            let in_flight = c.queue.iter().filter(|m| m.to == peer && is_append_with_entries(m)).count();
            assert!(in_flight <= 2, "{in_flight} appends in flight to node {peer}");
        }
    }
    for id in 2..=3 {
        assert_eq!(c.log(id), c.log(1), "node {id}");
    }
    assert_eq!(c.commit(1), 42);
}

#[test]
fn heartbeats_sent_even_when_window_full() {
    let mut c = Cluster::with_config(3, windowed_config());
    c.elect(1);
    c.propose(1, cmds(0..30)).unwrap();
    assert_eq!(c.queued(is_append_with_entries).len(), 4);
    c.take_where(|_| true);

    c.fire_timeout(1);
    let beats = c.queued(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    assert_eq!(beats.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    assert!(c.queued(is_append_with_entries).is_empty(), "the window is still full");
}

#[test]
fn follower_commit_follows_leader_commit_capped_at_match() {
    // A follower never commits beyond what the append it just checked covers.
    let mut c = Cluster::new(3);
    c.inject(append(1, 2, 1, (1, 0), vec![blank(2, 1)], 7));
    assert_eq!(c.commit(2), 2);

    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, cmds(0..3)).unwrap();
    c.deliver_all();
    assert_eq!((c.commit(1), c.commit(2)), (5, 5));
    assert_eq!(c.core(1).status().match_index[&3], 2);

    // Heartbeats carry the commit index capped at what each follower is known to hold.
    c.heal();
    c.fire_timeout(1);
    let beats = c.queued(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    let commits: Vec<(NodeId, MessageBody)> = beats.into_iter().map(|m| (m.to, m.body)).collect();
    assert_eq!(
        commits,
        vec![(2, MessageBody::Heartbeat { commit: 5, ctx: 1 }), (3, MessageBody::Heartbeat { commit: 2, ctx: 1 })]
    );
    c.deliver_where(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    assert_eq!(c.commit(3), 2, "node 3 does not yet hold entries 3..=5");

    // Once repaired, node 3 catches up with the leader's commit index.
    c.deliver_all();
    assert_eq!(c.commit(3), 5);

    // A heartbeat never pushes the commit index past the end of the follower's log.
    let mut c = Cluster::new(3);
    c.inject(Message { from: 1, to: 2, term: 1, body: MessageBody::Heartbeat { commit: 9, ctx: 0 } });
    assert!(c.commit(2) <= c.last(2).index);
}

#[test]
fn follower_paused_when_commit_advanced_still_learns_it_without_a_heartbeat() {
    let mut c = Cluster::with_config(3, windowed_config());
    c.elect(1);
    c.propose(1, cmds(0..10)).unwrap();
    // Node 2's acknowledgements commit everything while node 3's window is full, so the
    // commit broadcast skips node 3; its appends carry the old commit index.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.commit(1), 12);
    // The leader's durability notices would let node 3 work the commit out alone; this
    // test is about the leader telling it.
    c.take_where(|m| matches!(m.body, MessageBody::Durable { .. }));
    for m in c.queued(|m| m.to == 3) {
        assert!(matches!(m.body, MessageBody::AppendEntries { leader_commit: 2, .. }), "{m:?}");
    }
    // Node 3's acknowledgements bring nothing new to send, yet it must hear of the commit.
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!(c.commit(3), 12);
    assert_eq!(c.node(3).applied, c.log(3));
}

#[test]
fn apply_emits_committed_entries_in_order_once() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for round in 0..5 {
        c.propose(1, cmds(round * 3..round * 3 + 3)).unwrap();
        // Duplicate every message once: applying must not repeat.
        let dup: Vec<Message> = c.queue.iter().cloned().collect();
        c.queue.extend(dup);
        c.deliver_all();
    }
    c.fire_timeout(1);
    c.deliver_all();
    for id in 1..=3 {
        let commit = c.commit(id);
        assert_eq!(commit, 17, "node {id}");
        assert_eq!(c.node(id).applied, c.log(id), "node {id} applied its whole log exactly once, in order");
    }

    // A follower applies only what its own log holds durably, even once it knows the
    // entry committed.
    c.hold(2);
    let (index, _) = c.propose(1, vec![cmd(99)]).unwrap();
    c.deliver_all();
    c.fire_timeout(1);
    c.deliver_all();
    assert_eq!(c.commit(2), index);
    assert_eq!(c.node(2).applied.last().map(|e| e.index), Some(index - 1));
    c.release(2);
    assert_eq!(c.node(2).applied.last().map(|e| e.index), Some(index));
    assert_eq!(c.node(2).applied, c.log(2));
}

#[test]
fn proposal_on_follower_is_refused_with_leader_hint() {
    let mut c = Cluster::new(3);
    assert_eq!(c.propose(2, vec![cmd(0)]), Err(ProposeError::NotLeader(None)));
    c.elect(1);
    assert_eq!(c.propose(2, vec![cmd(0)]), Err(ProposeError::NotLeader(Some(1))));
    assert_eq!(c.last(2).index, 2, "nothing was appended");
    assert!(c.queue.is_empty());
}

#[test]
fn leader_refuses_proposals_beyond_uncommitted_limit() {
    let mut c = Cluster::with_config(3, Config { max_uncommitted_entries: 10, ..config() });
    c.elect(1);
    c.propose(1, cmds(0..10)).unwrap();
    assert_eq!(c.propose(1, vec![cmd(10)]), Err(ProposeError::Overloaded));
    c.deliver_all();
    assert!(c.propose(1, vec![cmd(10)]).is_ok(), "committing makes room again");
}

#[test]
fn duplicate_and_reordered_appends_are_harmless() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for round in 0..3 {
        c.propose(1, vec![cmd(round)]).unwrap();
    }
    // Three appends to node 2 (indexes 3, 4 and 5), delivered newest first, then all
    // of them again.
    let to_2 = c.take_where(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(to_2.iter().map(appended_indexes).collect::<Vec<_>>(), vec![vec![3], vec![4], vec![5]]);
    for m in to_2.iter().rev().chain(to_2.iter()) {
        c.inject(m.clone());
        c.deliver_all();
    }
    c.deliver_all();
    for id in 1..=3 {
        assert_eq!(c.log(id), c.log(1), "node {id}");
        assert_eq!(c.commit(id), 5, "node {id}");
        assert_eq!(c.node(id).store.entries, c.log(1), "node {id}'s store");
    }
    assert!(c.node(2).store.requests.iter().all(|r| r.truncate_from.is_none()), "matching entries never truncated");

    // An old append covering only a prefix leaves the rest of the log alone.
    let old = to_2[0].clone();
    c.inject(old);
    assert_eq!(c.last(2).index, 5);
    c.deliver_all();
    assert_eq!(c.core(1).status().match_index[&2], 5, "a stale acknowledgement does not lower match");
    assert_eq!(c.commit(2), 5);
}

// ----- membership -----

#[test]
fn membership_entry_takes_effect_when_appended() {
    let mut c = Cluster::new(3);
    let four = Membership::new([1, 2, 3, 4]);
    let entry = Entry { term: 1, index: 2, payload: EntryPayload::Membership(Box::new(four.clone())) };
    c.inject(append(1, 2, 1, (1, 0), vec![entry], 0));
    assert_eq!(c.commit(2), 0);
    assert_eq!(c.core(2).status().membership, four, "in effect as soon as it is in the log, uncommitted");

    // A leader of a later term overwrites it: the previous configuration is back.
    c.inject(append(3, 2, 2, (1, 0), vec![blank(2, 2)], 0));
    assert_eq!(c.terms(2), vec![0, 2]);
    assert_eq!(c.core(2).status().membership, Membership::new([1, 2, 3]));

    // On a leader, appending a configuration starts replication to the new node and
    // changes the quorum at once.
    let mut c = Cluster::new(3);
    c.elect(1);
    let index = c.node_mut(1).core.append_local(EntryPayload::Membership(Box::new(four.clone())));
    c.process(1);
    assert_eq!(c.core(1).status().membership, four);
    assert!(c.core(1).status().match_index.contains_key(&4));
    assert_eq!(c.queued(|m| m.to == 4 && is_append(m)).len(), 1, "node 4 is probed");
    // With four voters, the leader and one follower are no longer a majority.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert!(c.commit(1) < index);
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!(c.commit(1), index);
}

#[test]
fn restart_restores_term_vote_and_log_from_the_store() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, cmds(0..3)).unwrap();
    c.deliver_all();
    let before = (c.core(2).term(), c.core(2).status().voted_for, c.log(2));
    c.restart(2);
    assert_eq!((c.core(2).term(), c.core(2).status().voted_for, c.log(2)), before);
    // The restarted node rejoins and catches up on its commit index and applying.
    c.fire_timeout(1);
    c.deliver_all();
    assert_eq!(c.commit(2), 5);
    assert_eq!(c.node(2).applied, c.log(2));
}

// ----- bad input -----

#[test]
fn malformed_appends_are_dropped_without_panic_or_reply() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.core(2).term();
    let last = c.last(2);
    let gap = vec![blank(last.index + 1, term), blank(last.index + 3, term)];
    let decreasing = vec![blank(last.index + 1, term), blank(last.index + 2, term - 1)];
    let future_term = vec![blank(last.index + 1, term + 5)];
    let overflow = vec![blank(0, term)];
    for (prev, entries) in [
        ((last.index, last.term), gap),
        ((last.index, last.term), decreasing),
        ((last.index, last.term), future_term),
        ((u64::MAX, term), overflow),
    ] {
        c.take_where(|_| true);
        c.inject(append(1, 2, term, prev, entries, 0));
        assert!(c.queued(|m| m.from == 2).is_empty(), "no answer to a malformed append");
        assert_eq!(c.last(2), last, "the log is untouched");
    }
    // The node still works.
    c.propose(1, vec![cmd(1)]).unwrap();
    c.deliver_all();
    assert_eq!(c.last(2).index, last.index + 1);
}

#[test]
fn acknowledgement_beyond_the_leaders_log_is_ignored() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let (term, commit) = (c.core(1).term(), c.commit(1));
    c.take_where(|_| true);
    let bogus = MessageBody::AppendEntriesResponse { success: true, index: 1_000_000, hint: None };
    c.inject(Message { from: 2, to: 1, term, body: bogus.clone() });
    c.inject(Message { from: 3, to: 1, term, body: bogus });
    assert_eq!(c.commit(1), commit, "a claim beyond the log commits nothing");
    assert!(c.core(1).status().match_index.get(&2).copied().unwrap_or(0) <= c.last(1).index);
}

#[test]
fn messages_with_absurd_terms_or_senders_are_dropped() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let before = (c.core(2).term(), c.core(2).leader());
    c.take_where(|_| true);
    c.inject(request_vote(3, 2, u64::MAX, (u64::MAX, u64::MAX)));
    c.inject(pre_vote(3, 2, u64::MAX, (1, 1)));
    c.inject(Message { from: 2, to: 2, term: before.0 + 1, body: MessageBody::Heartbeat { commit: 0, ctx: 0 } });
    c.inject(Message { from: 0, to: 2, term: before.0 + 1, body: MessageBody::Heartbeat { commit: 0, ctx: 0 } });
    assert_eq!((c.core(2).term(), c.core(2).leader()), before);
    assert!(c.queued(|m| m.from == 2).is_empty());
}

#[test]
fn heartbeat_answers_free_a_window_slot_only_when_appends_stall() {
    let cfg = Config { max_inflight_messages: 2, max_entries_per_message: 1, ..config() };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    c.deliver_all();
    // Fill the window to node 2 and lose those appends.
    c.propose(1, cmds(0..4)).unwrap();
    let lost = c.take_where(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(lost.len(), 2, "window of two");
    c.deliver_where(|m| m.to != 2 && m.from != 2);
    // A heartbeat round with no acknowledgement since: one slot is freed and the next
    // append goes out; node 2 rejects it (a gap) and the leader probes back.
    c.advance(config().heartbeat_interval);
    c.tick(1);
    c.deliver_all();
    assert_eq!(c.last(2), c.last(1), "node 2 is repaired after the lost appends");
}

// ----- linearizable reads (thesis §6.4) and forwarding -----

impl Cluster {
    fn read_index(&mut self, id: NodeId) -> Result<u64, ProposeError> {
        let r = self.node_mut(id).core.read_index();
        self.process(id);
        r
    }

    fn forward(&mut self, id: NodeId, commands: Vec<Bytes>) -> Result<u64, ProposeError> {
        let r = self.node_mut(id).core.forward(commands);
        self.process(id);
        r
    }

    fn forward_again(&mut self, id: NodeId, request: u64, commands: Vec<Bytes>) -> Result<(), ProposeError> {
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
    fn applied_commands(&self, id: NodeId) -> Vec<Bytes> {
        let applied = &self.node(id).applied;
        applied
            .iter()
            .filter_map(|e| if let EntryPayload::Command(b) = &e.payload { Some(b.clone()) } else { None })
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

fn is_heartbeat(m: &Message) -> bool {
    matches!(m.body, MessageBody::Heartbeat { .. })
}

#[test]
fn read_index_waits_until_leader_commits_an_entry_of_its_term() {
    let mut c = Cluster::new(3);
    c.fire_timeout(1);
    c.deliver_where(is_vote_traffic);
    assert_eq!(c.core(1).role(), Role::Leader);
    let blank = c.last(1).index;
    assert!(c.commit(1) < blank, "the new leader's blank entry is not committed yet");
    let read = c.read_index(1).unwrap();
    assert!(c.reads_ready(1).is_empty(), "no read index before an entry of this term commits");
    assert!(c.queued(is_heartbeat).is_empty(), "no confirmation round yet");
    c.deliver_all();
    assert_eq!(
        c.reads_ready(1),
        vec![(read, blank)],
        "the read index is the commit index, which covers the blank entry"
    );
}

#[test]
fn read_index_is_served_only_after_a_quorum_confirms_leadership() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..3)).unwrap();
    c.deliver_all();
    let commit = c.commit(1);
    c.isolate(1);
    let read = c.read_index(1).unwrap();
    c.deliver_all();
    assert!(c.reads_ready(1).is_empty(), "an isolated leader cannot confirm its leadership");
    // One follower's answer plus the leader's own make a quorum of three.
    c.cut.remove(&(1, 2));
    c.cut.remove(&(2, 1));
    c.advance(config().heartbeat_interval);
    c.tick(1);
    c.deliver_all();
    assert_eq!(c.reads_ready(1), vec![(read, commit)], "the next heartbeat round confirms the pending read");
}

#[test]
fn concurrent_reads_share_one_heartbeat_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let reads: Vec<u64> = (0..5).map(|_| c.node_mut(1).core.read_index().unwrap()).collect();
    c.process(1);
    assert_eq!(c.queued(is_heartbeat).len(), 2, "one heartbeat per follower for all five reads");
    c.deliver_all();
    let commit = c.commit(1);
    assert_eq!(c.reads_ready(1), reads.iter().map(|&r| (r, commit)).collect::<Vec<_>>());
}

#[test]
fn read_index_heartbeats_do_not_count_for_an_earlier_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    // A periodic heartbeat goes out before the read arrives; its answers must not
    // confirm the read's round, which starts later.
    c.advance(config().heartbeat_interval);
    c.tick(1);
    let early = c.take_where(is_heartbeat);
    assert_eq!(early.len(), 2);
    c.read_index(1).unwrap();
    let round = c.take_where(is_heartbeat);
    assert_eq!(round.len(), 2);
    for m in early {
        c.inject(m);
    }
    c.deliver_where(|m| matches!(m.body, MessageBody::HeartbeatResponse { .. }));
    assert!(c.reads_ready(1).is_empty(), "answers to a heartbeat sent before the read do not confirm it");
    c.inject(round[0].clone());
    c.deliver_all();
    assert_eq!(c.reads_ready(1).len(), 1, "one answer to the read's own round makes a quorum");
}

#[test]
fn deposed_leader_fails_its_pending_reads() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.isolate(1);
    let read = c.read_index(1).unwrap();
    c.elect(2);
    c.heal();
    c.advance(config().heartbeat_interval);
    c.tick(2);
    c.deliver_all();
    assert_eq!(c.core(1).role(), Role::Follower);
    assert!(c.reads_ready(1).is_empty(), "a deposed leader never serves the read");
    assert_eq!(c.reads_failed(1), vec![read]);
    assert_eq!(c.core(1).pending_reads(), 0);
}

#[test]
fn follower_read_asks_the_leader_for_its_read_index() {
    let mut c = Cluster::new(3);
    assert_eq!(c.read_index(2), Err(ProposeError::NotLeader(None)), "no leader known: refused at once");
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..2)).unwrap();
    c.deliver_all();
    let read = c.read_index(2).unwrap();
    assert_eq!(c.queued(|m| matches!(m.body, MessageBody::ReadIndex { id } if id == read)).len(), 1);
    c.deliver_all();
    assert_eq!(c.reads_ready(2), vec![(read, c.commit(1))]);
    // A node that does not lead answers a read-index request with a refusal.
    c.inject(Message { from: 2, to: 3, term: 1, body: MessageBody::ReadIndex { id: 5 } });
    c.deliver_all();
    assert_eq!(c.reads_failed(2), vec![5]);
}

#[test]
fn follower_forwards_proposals_to_the_leader_and_learns_their_position() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let term = c.core(1).term();
    let first = c.last(1).index + 1;
    let request = c.forward(2, cmds(0..3)).unwrap();
    // A duplicated copy of the message is answered again, not appended again.
    let copy = c.queued(|m| matches!(m.body, MessageBody::Forward { .. }));
    assert_eq!(copy.len(), 1);
    c.deliver_all();
    for m in copy {
        c.inject(m);
    }
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 2, "the duplicate gets the same answer");
    for answer in &c.node(2).answers {
        assert!(matches!(
            answer,
            Action::Forwarded { id, result: Ok((f, t)) } if (*id, *f, *t) == (request, first, term)
        ));
    }
    assert_eq!(c.applied_commands(2), cmds(0..3), "the follower applies the forwarded commands, once");
    assert_eq!(c.node(2).applied.iter().find(|e| e.index == first).map(|e| e.term), Some(term));
}

#[test]
fn a_retried_forward_whose_answer_was_lost_is_answered_again_in_its_first_term_and_appended_once() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let (term, first) = (c.core(1).term(), c.last(1).index + 1);
    let request = c.forward(2, cmds(0..2)).unwrap();
    c.deliver_one(|m| matches!(m.body, MessageBody::Forward { .. })).expect("the forward");
    let lost = c.take_where(|m| matches!(m.body, MessageBody::ForwardResponse { .. }));
    assert_eq!(lost.len(), 1, "the answer is lost");
    c.deliver_all();
    assert!(c.node(2).answers.is_empty());

    // The leader's term moves on (node 3 leads for a term, then node 1 again) before
    // the retry arrives; node 1 keeps its memory (it does not restart).
    c.elect(3);
    c.deliver_all();
    c.elect(1);
    c.deliver_all();
    assert!(c.core(1).term() > term);
    c.forward_again(2, request, cmds(0..2)).unwrap();
    assert_eq!(c.queued(|m| matches!(m.body, MessageBody::Forward { retry: true, .. })).len(), 1);
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 1);
    assert!(
        matches!(c.node(2).answers[0], Action::Forwarded { id, result: Ok((f, t)) } if (id, f, t) == (request, first, term)),
        "the first answer, with the term the entries were appended in: {:?}",
        c.node(2).answers[0]
    );
    assert_eq!(c.applied_commands(2), cmds(0..2), "appended once");
    assert_eq!(c.applied_commands(1), cmds(0..2));
}

#[test]
fn a_retried_forward_the_leader_has_no_record_of_is_answered_unknown_and_not_appended() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let last = c.last(1);
    let retry = MessageBody::Forward { id: 77, commands: cmds(0..1), retry: true };
    c.inject(Message { from: 2, to: 1, term: c.core(1).term(), body: retry });
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 1);
    assert!(matches!(c.node(2).answers[0], Action::Forwarded { id: 77, result: Err(ProposeError::OutcomeUnknown) }));
    assert_eq!(c.last(1), last, "nothing was appended");
    // The same id as a first attempt (a copy delayed past its retry) is appended.
    let first = MessageBody::Forward { id: 77, commands: cmds(0..1), retry: false };
    c.inject(Message { from: 2, to: 1, term: c.core(1).term(), body: first });
    c.deliver_all();
    assert_eq!(c.last(1).index, last.index + 1);
    assert_eq!(c.applied_commands(2), cmds(0..1));
}

#[test]
fn a_follower_retries_requests_only_while_it_knows_a_leader_other_than_itself() {
    let mut c = Cluster::new(3);
    assert_eq!(c.forward_again(2, 5, cmds(0..1)), Err(ProposeError::NotLeader(None)));
    assert_eq!(c.read_index_again(2, 5), Err(ProposeError::NotLeader(None)));
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.forward_again(1, 5, cmds(0..1)), Err(ProposeError::NotLeader(Some(1))));
    assert_eq!(c.read_index_again(1, 5), Err(ProposeError::NotLeader(Some(1))));
}

#[test]
fn a_read_index_request_whose_answer_was_lost_is_served_again() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..1)).unwrap();
    c.deliver_all();
    let read = c.read_index(2).unwrap();
    c.deliver_where(|m| !matches!(m.body, MessageBody::ReadIndexResponse { .. }));
    assert_eq!(c.take_where(|m| matches!(m.body, MessageBody::ReadIndexResponse { .. })).len(), 1, "lost");
    assert!(c.reads_ready(2).is_empty());
    c.read_index_again(2, read).unwrap();
    c.deliver_all();
    assert_eq!(c.reads_ready(2), vec![(read, c.commit(1))]);
}

#[test]
fn forward_to_a_node_that_does_not_lead_is_refused_with_its_leader_hint() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.forward(1, cmds(0..1)), Err(ProposeError::NotLeader(Some(1))), "the leader proposes instead");
    c.inject(Message {
        from: 2,
        to: 3,
        term: 1,
        body: MessageBody::Forward { id: 6, commands: cmds(0..1), retry: false },
    });
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 1);
    assert!(matches!(c.node(2).answers[0], Action::Forwarded { id: 6, result: Err(ProposeError::NotLeader(Some(1))) }));
    assert_eq!(c.last(3), c.last(1), "nothing was appended for the refused forward");
}

#[test]
fn single_voter_leader_confirms_reads_alone() {
    let mut c = Cluster::new(1);
    c.elect(1);
    let read = c.read_index(1).unwrap();
    assert_eq!(c.reads_ready(1), vec![(read, c.commit(1))]);
}

#[test]
fn commit_news_to_a_replicating_follower_goes_unanswered() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, cmds(0..3)).unwrap();
    // The appends and their answers: the leader commits and tells the followers.
    c.deliver_where(|m| {
        matches!(m.body, MessageBody::AppendEntries { .. } | MessageBody::AppendEntriesResponse { .. })
    });
    let commit = c.commit(1);
    assert_eq!(commit, c.last(1).index);
    let notices = c.queued(|m| matches!(m.body, MessageBody::Commit { .. }));
    assert!(!notices.is_empty(), "the followers hear of the commit");
    for n in &notices {
        assert!(matches!(n.body, MessageBody::Commit { leader_commit, .. } if leader_commit == commit), "{n:?}");
    }
    c.deliver_where(|m| matches!(m.body, MessageBody::Commit { .. }));
    assert_eq!((c.commit(2), c.commit(3)), (commit, commit));
    assert!(c.queued(|m| m.from != 1).is_empty(), "no answer to commit news: {:?}", c.queued(|_| true));
}

#[test]
fn commit_news_failing_the_consistency_check_is_rejected() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let (last, commit, term) = (c.last(2), c.commit(2), c.core(1).term());
    let beyond = last.index + 5;
    c.inject(Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::Commit { prev_log_index: beyond, prev_log_term: term, leader_commit: beyond },
    });
    let r = take_reply(&mut c, 2, 1);
    assert!(matches!(r.body, MessageBody::AppendEntriesResponse { success: false, .. }), "{r:?}");
    assert_eq!(c.commit(2), commit, "the commit index does not move past the follower's log");
}

#[test]
fn a_lost_acknowledgement_is_recovered_after_a_heartbeat_when_nothing_new_is_proposed() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.isolate(3);
    let before = c.commit(1);
    c.propose(1, cmds(0..1)).unwrap();
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. }));
    let lost = c.take_where(|m| m.from == 2 && matches!(m.body, MessageBody::AppendEntriesResponse { .. }));
    assert_eq!(lost.len(), 1, "node 2 acknowledged the entry");
    c.deliver_all();
    assert_eq!(c.commit(1), before, "the acknowledgement was lost");
    // The next heartbeat round shows node 2 behind; the leader must ask again with an
    // append that node 2 answers (commit news alone would never be answered).
    for _ in 0..3 {
        c.fire_timeout(1);
        c.deliver_all();
    }
    assert_eq!(c.commit(1), c.last(1).index, "committed once node 2's answer arrives");
}

#[test]
fn a_follower_commits_what_it_and_the_leader_hold_durably_in_a_three_voter_cluster() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.hold(2);
    c.propose(1, cmds(0..2)).unwrap();
    let last = c.last(1).index;
    // The leader's own write is durable at once; it says so to the voters.
    let notices = c.queued(|m| matches!(m.body, MessageBody::Durable { .. }));
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices.iter().all(|m| matches!(m.body, MessageBody::Durable { index, .. } if index == last)));
    // Node 2 gets the entries and the notice, nothing from node 3, no commit news.
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. } | MessageBody::Durable { .. }));
    assert!(c.commit(2) < last, "not durable on node 2 yet: no majority");
    c.release(2);
    assert_eq!(c.commit(2), last, "node 2 and the leader hold it durably: a majority of 3");
    assert_eq!(c.node(2).applied.last().map(|e| e.index), Some(last));
    assert!(c.commit(1) < last, "the leader has not heard of it yet");
}

#[test]
fn a_read_index_covers_what_followers_may_have_committed_from_the_leaders_durability() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..1)).unwrap();
    let last = c.last(1).index;
    assert!(c.commit(1) < last);
    // A follower may now commit `last` on its own and answer for it; a read the leader
    // takes meanwhile must wait for it.
    let id = c.read_index(1).unwrap();
    c.deliver_where(|m| matches!(m.body, MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. }));
    let ready = c.node(1).answers.iter().find_map(|a| match a {
        Action::ReadReady { id: i, index } if *i == id => Some(*index),
        _ => None,
    });
    assert_eq!(ready, Some(last), "{:?}", c.node(1).answers);
}

#[test]
fn leader_durability_is_not_announced_where_leader_and_one_follower_are_no_majority() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..1)).unwrap();
    assert!(c.queued(|m| matches!(m.body, MessageBody::Durable { .. })).is_empty());
    // Nor does a follower of five take a notice as a majority.
    let (term, last) = (c.core(1).term(), c.last(1).index);
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. }));
    c.inject(Message { from: 1, to: 2, term, body: MessageBody::Durable { index: last, config_index: 1 } });
    assert!(c.commit(2) < last);
}

#[test]
fn leader_durability_in_an_older_configuration_commits_nothing() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.hold(1);
    c.propose(1, cmds(0..1)).unwrap();
    let (term, last) = (c.core(1).term(), c.last(1).index);
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. }));
    // A notice naming a configuration entry other than node 2's latest one.
    c.inject(Message { from: 1, to: 2, term, body: MessageBody::Durable { index: last, config_index: last } });
    assert!(c.commit(2) < last, "configurations differ: no commit");
}

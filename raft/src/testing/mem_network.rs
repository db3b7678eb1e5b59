//! [`MemNetwork`]: an in-memory message hub with fault injection (loss, duplication,
//! delay and reordering, partitions), deterministic for a given seed and runtime.
//!
//! Nodes [`register`](MemNetwork::register) a delivery function; each node sends through
//! its own [`MemEndpoint`], which implements [`Network`]. Every random decision comes from
//! one seeded [`fastrand::Rng`], drawn in the order messages are sent, so that a
//! deterministic runtime reproduces a run exactly.
//!
//! # Delivery
//!
//! A message that passes the fault checks is delivered once (twice when duplicated),
//! each copy after its own delay drawn uniformly from `[min_delay, max_delay]`; different
//! delays reorder messages. A copy with zero delay is delivered synchronously, inside
//! `send`, by calling the receiver's delivery function; a delayed copy is delivered by a
//! task spawned on the runtime, after the network checks again that the receiver is still
//! registered and still reachable (so a partition that starts while a message is in
//! flight cuts it, and a crashed node receives nothing).
//!
//! # Errors
//!
//! `send` never blocks. It returns `Ok` whenever the destination has ever been
//! registered, even if the message is dropped: loss is normal and indistinguishable from
//! success for the sender. It returns [`NetworkError::UnknownPeer`] only for a destination
//! that was never registered, which is a bug in the test rather than a fault.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::NetworkError;
use crate::message::Message;
use crate::network::Network;
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::types::NodeId;

/// A node's delivery function: called with every message delivered to the node. It is
/// called from inside `send` for zero-delay messages, so it should only enqueue the
/// message (it may send messages itself; the network holds no lock while calling it).
pub type DeliverFn = Arc<dyn Fn(Message) + Send + Sync>;

/// Random faults applied to every message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    /// Probability in `[0, 1]` that a message is lost.
    pub drop: f64,
    /// Probability in `[0, 1]` that a message that is not lost is delivered twice.
    pub duplicate: f64,
    /// The smallest delay of a message.
    pub min_delay: Duration,
    /// The largest delay of a message.
    pub max_delay: Duration,
}

impl FaultConfig {
    /// No faults: no loss, no duplication, zero delay (synchronous delivery).
    pub fn none() -> Self {
        FaultConfig { drop: 0.0, duplicate: 0.0, min_delay: Duration::ZERO, max_delay: Duration::ZERO }
    }

    /// The configuration with probabilities clamped to `[0, 1]` (NaN counts as 0) and
    /// the delays ordered.
    fn normalized(self) -> Self {
        let prob = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        FaultConfig {
            drop: prob(self.drop),
            duplicate: prob(self.duplicate),
            min_delay: self.min_delay.min(self.max_delay),
            max_delay: self.min_delay.max(self.max_delay),
        }
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig::none()
    }
}

/// Message counters of a [`MemNetwork`]. Once nothing is in flight,
/// `sent + duplicated == delivered + dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages accepted by `send` (to a destination that was registered at some point).
    pub sent: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Copies handed to a delivery function.
    pub delivered: u64,
    /// Copies that were never delivered: lost at random, cut by a partition, block or
    /// isolation (at send or delivery time), or addressed to a node that was not
    /// registered at send or delivery time.
    pub dropped: u64,
    /// The part of `dropped` that was cut by a partition, block or isolation.
    pub cut: u64,
    /// Copies waiting for their delay to pass.
    pub in_flight: u64,
}

struct NetState {
    rng: fastrand::Rng,
    /// Registered nodes and their delivery functions.
    nodes: BTreeMap<NodeId, DeliverFn>,
    /// Every node that was ever registered.
    known: BTreeSet<NodeId>,
    faults: FaultConfig,
    /// Directed `(from, to)` pairs that cannot communicate.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Nodes cut from every other node.
    isolated: BTreeSet<NodeId>,
    stats: NetStats,
}

impl NetState {
    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        from == to
            || (!self.isolated.contains(&from) && !self.isolated.contains(&to) && !self.blocked.contains(&(from, to)))
    }

    /// Draws `true` with probability `p`, without touching the RNG when `p` is zero.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }

    fn delay(&mut self) -> Duration {
        let (min, max) = (self.faults.min_delay, self.faults.max_delay);
        if max <= min {
            return min;
        }
        let lo = u64::try_from(min.as_nanos()).unwrap_or(u64::MAX);
        let hi = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(lo..=hi))
    }
}

/// An in-memory network connecting the nodes of a test cluster, with fault injection.
/// See the [module documentation](self) for its behaviour.
///
/// Cloning is cheap: clones share the same nodes, faults, RNG and counters.
#[derive(Clone)]
pub struct MemNetwork<R: Runtime> {
    runtime: R,
    state: Arc<Mutex<NetState>>,
}

impl<R: Runtime> MemNetwork<R> {
    /// A network without nodes or faults, using `runtime` for delayed delivery and `seed`
    /// for every random decision.
    pub fn new(runtime: R, seed: u64) -> Self {
        MemNetwork {
            runtime,
            state: Arc::new(Mutex::new(NetState {
                rng: fastrand::Rng::with_seed(seed),
                nodes: BTreeMap::new(),
                known: BTreeSet::new(),
                faults: FaultConfig::none(),
                blocked: BTreeSet::new(),
                isolated: BTreeSet::new(),
                stats: NetStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        lock(&self.state)
    }

    /// Registers node `id`, replacing its previous delivery function if any (a restarted
    /// node). Messages still in flight to `id` are delivered to the new function.
    pub fn register(&self, id: NodeId, deliver: DeliverFn) {
        let mut state = self.lock();
        state.known.insert(id);
        state.nodes.insert(id, deliver);
    }

    /// Unregisters node `id` (a crashed or stopped node): messages to it, including those
    /// in flight, are dropped until it registers again.
    pub fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// The nodes registered now, in increasing order.
    pub fn registered(&self) -> Vec<NodeId> {
        self.lock().nodes.keys().copied().collect()
    }

    /// An endpoint that sends as node `from`.
    pub fn endpoint(&self, from: NodeId) -> MemEndpoint<R> {
        MemEndpoint { network: self.clone(), from }
    }

    /// Replaces the random fault configuration (probabilities are clamped to `[0, 1]` and
    /// the delays ordered). Partitions and blocks are left alone.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.lock().faults = faults.normalized();
    }

    /// The current random fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.lock().faults
    }

    /// Sets the probability that a message is lost.
    pub fn set_drop(&self, probability: f64) {
        let mut state = self.lock();
        state.faults = FaultConfig { drop: probability, ..state.faults }.normalized();
    }

    /// Sets the probability that a message is delivered twice.
    pub fn set_duplicate(&self, probability: f64) {
        let mut state = self.lock();
        state.faults = FaultConfig { duplicate: probability, ..state.faults }.normalized();
    }

    /// Sets the range each message's delay is drawn from.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        let mut state = self.lock();
        state.faults = FaultConfig { min_delay: min, max_delay: max, ..state.faults }.normalized();
    }

    /// Cuts every node of `a` from every node of `b`, in both directions.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut state = self.lock();
        for &x in a {
            for &y in b {
                if x != y {
                    state.blocked.insert((x, y));
                    state.blocked.insert((y, x));
                }
            }
        }
    }

    /// Stops messages from `from` to `to`; the other direction is unaffected.
    pub fn block(&self, from: NodeId, to: NodeId) {
        if from != to {
            self.lock().blocked.insert((from, to));
        }
    }

    /// Undoes [`block`](Self::block) for one direction (also one half of a partition).
    pub fn unblock(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.remove(&(from, to));
    }

    /// Cuts node `id` from every other node, in both directions, including nodes
    /// registered later.
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Removes every partition, block and isolation. Random faults are left alone.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.blocked.clear();
        state.isolated.clear();
    }

    /// Whether a message from `from` to `to` would pass the partitions, blocks and
    /// isolations now (a node always reaches itself).
    pub fn is_reachable(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().reachable(from, to)
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Sends `msg` from `from` to `to`, applying the faults. See the
    /// [module documentation](self) for delivery and errors.
    pub fn send(&self, from: NodeId, to: NodeId, msg: Message) -> Result<(), NetworkError> {
        let (deliver, delays) = {
            let mut state = self.lock();
            if !state.known.contains(&to) {
                return Err(NetworkError::UnknownPeer(to));
            }
            state.stats.sent += 1;
            if !state.reachable(from, to) {
                state.stats.dropped += 1;
                state.stats.cut += 1;
                return Ok(());
            }
            let Some(deliver) = state.nodes.get(&to).cloned() else {
                state.stats.dropped += 1;
                return Ok(());
            };
            let drop_p = state.faults.drop;
            if state.chance(drop_p) {
                state.stats.dropped += 1;
                return Ok(());
            }
            let dup_p = state.faults.duplicate;
            let copies = if state.chance(dup_p) {
                state.stats.duplicated += 1;
                2
            } else {
                1
            };
            let delays: Vec<Duration> = (0..copies).map(|_| state.delay()).collect();
            for d in &delays {
                if d.is_zero() {
                    state.stats.delivered += 1;
                } else {
                    state.stats.in_flight += 1;
                }
            }
            (deliver, delays)
        };
        let now = self.runtime.now();
        for d in delays {
            if d.is_zero() {
                deliver(msg.clone());
                continue;
            }
            let state = Arc::clone(&self.state);
            let runtime = self.runtime.clone();
            let msg = msg.clone();
            let deadline = now.add(d);
            let task = self.runtime.spawn(async move {
                runtime.sleep_until(deadline).await;
                let deliver = {
                    let mut state = lock(&state);
                    state.stats.in_flight -= 1;
                    if !state.reachable(from, to) {
                        state.stats.dropped += 1;
                        state.stats.cut += 1;
                        None
                    } else if let Some(deliver) = state.nodes.get(&to).cloned() {
                        state.stats.delivered += 1;
                        Some(deliver)
                    } else {
                        state.stats.dropped += 1;
                        None
                    }
                };
                if let Some(deliver) = deliver {
                    deliver(msg);
                }
            });
            // Detach the delivery task.
            drop(task);
        }
        Ok(())
    }
}

impl<R: Runtime> fmt::Debug for MemNetwork<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemNetwork")
            .field("nodes", &state.nodes.keys().collect::<Vec<_>>())
            .field("faults", &state.faults)
            .field("blocked", &state.blocked)
            .field("isolated", &state.isolated)
            .field("stats", &state.stats)
            .finish()
    }
}

/// One node's side of a [`MemNetwork`]: a [`Network`] that sends as that node.
///
/// The sender used for partitions and blocks is the endpoint's node, whatever the
/// message's `from` field says.
#[derive(Clone)]
pub struct MemEndpoint<R: Runtime> {
    network: MemNetwork<R>,
    from: NodeId,
}

impl<R: Runtime> MemEndpoint<R> {
    /// The node this endpoint sends as.
    pub fn id(&self) -> NodeId {
        self.from
    }

    /// The network this endpoint belongs to.
    pub fn network(&self) -> &MemNetwork<R> {
        &self.network
    }
}

impl<R: Runtime> fmt::Debug for MemEndpoint<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemEndpoint").field("from", &self.from).finish_non_exhaustive()
    }
}

#[async_trait]
impl<R: Runtime> Network for MemEndpoint<R> {
    async fn send(&self, to: NodeId, msg: Message) -> Result<(), NetworkError> {
        self.network.send(self.from, to, msg)
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::message::MessageBody;
    use crate::runtime::TokioRuntime;

    type Inbox = Arc<Mutex<Vec<Message>>>;

    fn msg(from: NodeId, to: NodeId, ctx: u64) -> Message {
        Message { from, to, term: 1, body: MessageBody::Heartbeat { commit: 0, ctx } }
    }

    fn inbox() -> (DeliverFn, Inbox) {
        let inbox: Inbox = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&inbox);
        (Arc::new(move |m| sink.lock().unwrap_or_else(|e| e.into_inner()).push(m)), inbox)
    }

    fn taken(inbox: &Inbox) -> Vec<u64> {
        let mut v = inbox.lock().unwrap_or_else(|e| e.into_inner());
        v.drain(..)
            .map(|m| match m.body {
                MessageBody::Heartbeat { ctx, .. } => ctx,
                _ => u64::MAX,
            })
            .collect()
    }

    /// A network of nodes `1..=n` with synchronous delivery (no runtime needed).
    fn cluster(n: u64, seed: u64) -> (MemNetwork<TokioRuntime>, Vec<Inbox>) {
        let net = MemNetwork::new(TokioRuntime::default(), seed);
        let inboxes = (1..=n)
            .map(|id| {
                let (deliver, inbox) = inbox();
                net.register(id, deliver);
                inbox
            })
            .collect();
        (net, inboxes)
    }

    /// Sends one message per ordered pair of distinct nodes `1..=n`, with `ctx` encoding
    /// the pair, and returns which pairs were delivered.
    fn delivered_pairs(net: &MemNetwork<TokioRuntime>, inboxes: &[Inbox]) -> BTreeSet<(NodeId, NodeId)> {
        let n = inboxes.len() as u64;
        for from in 1..=n {
            for to in 1..=n {
                if from != to {
                    net.send(from, to, msg(from, to, from * 100 + to)).unwrap();
                }
            }
        }
        inboxes.iter().flat_map(taken).map(|ctx| (ctx / 100, ctx % 100)).collect()
    }

    fn all_pairs_except(n: u64, cut: &[(NodeId, NodeId)]) -> BTreeSet<(NodeId, NodeId)> {
        let mut all = BTreeSet::new();
        for from in 1..=n {
            for to in 1..=n {
                if from != to && !cut.contains(&(from, to)) {
                    all.insert((from, to));
                }
            }
        }
        all
    }

    #[test]
    fn endpoint_delivers_synchronously_without_delay() {
        let (net, inboxes) = cluster(2, 1);
        let ep = net.endpoint(1);
        assert_eq!(ep.id(), 1);
        block_on(ep.send(2, msg(1, 2, 7))).unwrap();
        assert_eq!(taken(&inboxes[1]), vec![7]);
        let stats = net.stats();
        assert_eq!((stats.sent, stats.delivered, stats.dropped), (1, 1, 0));
    }

    #[test]
    fn unknown_and_unregistered_peers() {
        let (net, inboxes) = cluster(2, 1);
        assert!(matches!(net.send(1, 9, msg(1, 9, 0)), Err(NetworkError::UnknownPeer(9))));
        net.unregister(2);
        assert!(net.send(1, 2, msg(1, 2, 0)).is_ok(), "a crashed peer is loss, not an error");
        assert!(taken(&inboxes[1]).is_empty());
        assert_eq!(net.registered(), vec![1]);
        let (deliver, inbox) = inbox();
        net.register(2, deliver);
        net.send(1, 2, msg(1, 2, 3)).unwrap();
        assert_eq!(taken(&inbox), vec![3]);
        let stats = net.stats();
        assert_eq!((stats.sent, stats.delivered, stats.dropped), (2, 1, 1));
    }

    #[test]
    fn drop_one_drops_everything() {
        let (net, inboxes) = cluster(3, 1);
        net.set_drop(1.0);
        assert!(delivered_pairs(&net, &inboxes).is_empty());
        let stats = net.stats();
        assert_eq!((stats.sent, stats.dropped, stats.delivered), (6, 6, 0));
    }

    #[test]
    fn drop_half_is_deterministic_for_a_seed() {
        let run = |seed| {
            let (net, inboxes) = cluster(3, seed);
            net.set_drop(0.5);
            (0..10).map(|_| delivered_pairs(&net, &inboxes)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let total: usize = run(42).iter().map(BTreeSet::len).sum();
        assert!(total > 10 && total < 50, "about half of 60 delivered, got {total}");
    }

    #[test]
    fn partition_cuts_both_ways() {
        let (net, inboxes) = cluster(3, 1);
        net.partition(&[1], &[2, 3]);
        assert_eq!(delivered_pairs(&net, &inboxes), all_pairs_except(3, &[(1, 2), (2, 1), (1, 3), (3, 1)]));
        assert_eq!(net.stats().cut, 4);
        assert!(!net.is_reachable(2, 1) && net.is_reachable(2, 3));
    }

    #[test]
    fn block_is_one_way() {
        let (net, inboxes) = cluster(3, 1);
        net.block(1, 2);
        assert_eq!(delivered_pairs(&net, &inboxes), all_pairs_except(3, &[(1, 2)]));
        net.unblock(1, 2);
        assert_eq!(delivered_pairs(&net, &inboxes), all_pairs_except(3, &[]));
    }

    #[test]
    fn isolate_cuts_a_node_from_everyone() {
        let (net, inboxes) = cluster(3, 1);
        net.isolate(3);
        assert_eq!(delivered_pairs(&net, &inboxes), all_pairs_except(3, &[(1, 3), (3, 1), (2, 3), (3, 2)]));
    }

    #[test]
    fn heal_restores_everything() {
        let (net, inboxes) = cluster(4, 1);
        net.partition(&[1, 2], &[3, 4]);
        net.block(1, 2);
        net.isolate(4);
        assert!(delivered_pairs(&net, &inboxes).len() < 4);
        net.heal();
        assert_eq!(delivered_pairs(&net, &inboxes), all_pairs_except(4, &[]));
    }

    #[test]
    fn duplicate_one_delivers_twice() {
        let (net, inboxes) = cluster(2, 1);
        net.set_duplicate(1.0);
        net.send(1, 2, msg(1, 2, 5)).unwrap();
        assert_eq!(taken(&inboxes[1]), vec![5, 5]);
        let stats = net.stats();
        assert_eq!((stats.sent, stats.duplicated, stats.delivered), (1, 1, 2));
    }

    #[test]
    fn fault_config_is_normalized() {
        let (net, _) = cluster(1, 1);
        net.set_faults(FaultConfig {
            drop: 2.0,
            duplicate: f64::NAN,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(1),
        });
        let f = net.faults();
        assert_eq!((f.drop, f.duplicate), (1.0, 0.0));
        assert_eq!((f.min_delay, f.max_delay), (Duration::from_millis(1), Duration::from_millis(5)));
        net.set_faults(FaultConfig::none());
        assert_eq!(net.faults(), FaultConfig::default());
    }

    /// Waits (in real time) until `cond` holds, for at most five seconds.
    async fn wait_for(cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in time");
    }

    #[tokio::test]
    async fn delay_reorders_messages() {
        let net = MemNetwork::new(TokioRuntime::new(), 3);
        let (deliver, inbox) = inbox();
        net.register(2, deliver);
        net.set_delay(Duration::from_millis(1), Duration::from_millis(60));
        let ep = net.endpoint(1);
        for i in 0..40 {
            ep.send(2, msg(1, 2, i)).await.unwrap();
        }
        assert!(taken(&inbox).is_empty(), "delayed messages are not delivered synchronously");
        assert_eq!(net.stats().in_flight, 40);
        wait_for(|| net.stats().delivered == 40).await;
        let got = taken(&inbox);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>(), "every message arrives once");
        assert_ne!(got, sorted, "random delays reorder messages");
        assert_eq!(net.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn partition_during_flight_cuts_the_message() {
        let net = MemNetwork::new(TokioRuntime::new(), 3);
        let (deliver, inbox) = inbox();
        net.register(1, Arc::new(|_| {}));
        net.register(2, deliver);
        net.set_delay(Duration::from_millis(30), Duration::from_millis(30));
        net.send(1, 2, msg(1, 2, 1)).unwrap();
        net.partition(&[1], &[2]);
        net.send(1, 2, msg(1, 2, 2)).unwrap();
        wait_for(|| net.stats().in_flight == 0).await;
        assert!(taken(&inbox).is_empty());
        let stats = net.stats();
        assert_eq!((stats.sent, stats.dropped, stats.cut, stats.delivered), (2, 2, 2, 0));

        // A node that crashes while a message is in flight does not receive it.
        net.heal();
        net.send(1, 2, msg(1, 2, 3)).unwrap();
        net.unregister(2);
        wait_for(|| net.stats().in_flight == 0).await;
        assert!(taken(&inbox).is_empty());
        assert_eq!(net.stats().dropped, 3);
    }
}

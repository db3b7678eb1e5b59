//! The public handles: [`TcpTransport`] (peers, start, shutdown) and its [`Network`]
//! half, [`TcpNetwork`]. The connections themselves are in `outbound.rs` and
//! `inbound.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared as SharedFuture};
use raft::{Membership, Message, Network, NetworkError, NodeId};
use tracing::warn;

use crate::codec;
use crate::config::TcpConfig;
use crate::error::ConnectionError;
use crate::inbound::run_listener;
use crate::outbound::{run_writer, PeerQueue, PeerStats};
use crate::rt::TcpRuntime;
use crate::sync::lock;

/// The delivery callback: receives every valid incoming message.
pub type Deliver = Arc<dyn Fn(Message) + Send + Sync>;

/// What the handles and the connection tasks share.
pub(crate) struct Shared {
    pub(crate) config: TcpConfig,
    pub(crate) peers: Mutex<HashMap<NodeId, Arc<PeerQueue>>>,
}

struct Inner<R: TcpRuntime> {
    rt: R,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    listener: Mutex<Option<R::Listener>>,
    tasks: Mutex<Vec<R::JoinHandle>>,
    stop_tx: Mutex<Option<oneshot::Sender<()>>>,
    stop_rx: SharedFuture<oneshot::Receiver<()>>,
    /// How many configurations [`TcpTransport::apply_membership`] has applied; held while
    /// one is applied, and while a host name it resolved in the background is set, so
    /// that a late answer never brings back a peer a later configuration removed.
    generation: Mutex<u64>,
}

/// A TCP transport for one node: a listener for incoming connections and one
/// long-lived outgoing connection per peer.
///
/// Usage: [`bind`](TcpTransport::bind), register peers with
/// [`set_peer`](TcpTransport::set_peer), pass [`network`](TcpTransport::network) to
/// the `Raft` node, then [`start`](TcpTransport::start) the listener with a callback
/// that hands messages to `Raft::receive`. Stop with
/// [`shutdown`](TcpTransport::shutdown); dropping every handle also stops all tasks.
///
/// Outgoing messages are queued per peer (bounded by
/// [`TcpConfig::send_queue_len`] and [`TcpConfig::send_queue_bytes`]; when full, the
/// **oldest** queued frame is dropped) and written by the peer's writer task, which
/// batches everything queued into one write and one flush.
pub struct TcpTransport<R: TcpRuntime> {
    inner: Arc<Inner<R>>,
}

impl<R: TcpRuntime> Clone for TcpTransport<R> {
    fn clone(&self) -> Self {
        TcpTransport { inner: self.inner.clone() }
    }
}

impl<R: TcpRuntime> std::fmt::Debug for TcpTransport<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("node_id", &self.inner.shared.config.node_id)
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

/// The [`Network`] half of a [`TcpTransport`], to give to a `Raft` node.
pub struct TcpNetwork<R: TcpRuntime> {
    inner: Arc<Inner<R>>,
}

impl<R: TcpRuntime> Clone for TcpNetwork<R> {
    fn clone(&self) -> Self {
        TcpNetwork { inner: self.inner.clone() }
    }
}

impl<R: TcpRuntime> TcpTransport<R> {
    /// Binds the listening socket (port 0 picks a free port; see
    /// [`local_addr`](TcpTransport::local_addr)). Connections are accepted once
    /// [`start`](TcpTransport::start) is called.
    pub async fn bind(rt: R, config: TcpConfig, addr: SocketAddr) -> std::io::Result<TcpTransport<R>> {
        let listener = rt.bind(addr).await?;
        let local_addr = R::local_addr(&listener)?;
        let (tx, rx) = oneshot::channel();
        Ok(TcpTransport {
            inner: Arc::new(Inner {
                rt,
                shared: Arc::new(Shared { config, peers: Mutex::new(HashMap::new()) }),
                local_addr,
                listener: Mutex::new(Some(listener)),
                tasks: Mutex::new(Vec::new()),
                stop_tx: Mutex::new(Some(tx)),
                stop_rx: rx.shared(),
                generation: Mutex::new(0),
            }),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.inner.shared.config
    }

    /// The [`Network`] to give to the `Raft` node.
    pub fn network(&self) -> TcpNetwork<R> {
        TcpNetwork { inner: self.inner.clone() }
    }

    fn stopped(&self) -> bool {
        lock(&self.inner.stop_tx).is_none()
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let stop = self.inner.stop_rx.clone();
        let h = self.inner.rt.spawn(async move {
            futures::pin_mut!(fut);
            let _ = futures::future::select(fut, stop).await;
        });
        lock(&self.inner.tasks).push(h);
    }

    /// Adds a peer or changes its address. A changed address takes effect at once: the
    /// current connection to the peer is closed and a new one opened. Messages for
    /// this node id are accepted from the peer only once it is added.
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        if self.stopped() {
            return;
        }
        let mut peers = lock(&self.inner.shared.peers);
        if let Some(q) = peers.get(&id) {
            q.set_addr(addr);
            return;
        }
        let q = Arc::new(PeerQueue::new(id, addr));
        peers.insert(id, q.clone());
        drop(peers);
        self.spawn(run_writer(self.inner.rt.clone(), self.inner.shared.config.clone(), q));
    }

    /// Removes a peer: its queue is dropped, its connection closed, and its incoming
    /// connections refused from then on.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(q) = lock(&self.inner.shared.peers).remove(&id) {
            q.remove();
        }
    }

    /// The ids of the current peers, in order.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = lock(&self.inner.shared.peers).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Makes the peers follow `membership` (see [`Network::members_changed`]): every
    /// other node in its [`nodes`](Membership::nodes) with an address is set as a peer,
    /// and, when the configuration carries addresses at all, every peer that is neither a
    /// member nor in `nodes` is removed. An address with a host name is resolved on a
    /// blocking task (the caller, the protocol loop, never waits for DNS) and set when
    /// the answer comes, unless a later configuration was applied meanwhile.
    pub fn apply_membership(&self, membership: &Membership) {
        let me = self.inner.shared.config.node_id;
        let mut generation = lock(&self.inner.generation);
        *generation += 1;
        for (&id, node) in &membership.nodes {
            if id == me {
                continue;
            }
            match node.addr.parse::<SocketAddr>() {
                Ok(addr) => self.set_peer(id, addr),
                Err(_) => self.resolve_in_background(id, node.addr.clone(), *generation),
            }
        }
        if membership.nodes.is_empty() {
            return;
        }
        for id in self.peer_ids() {
            if !membership.contains(id) && !membership.nodes.contains_key(&id) {
                self.remove_peer(id);
                // Its id may be given to a new node (with a new data directory) later.
                if let Some(incarnations) = &self.inner.shared.config.incarnations {
                    incarnations.forget(id);
                }
            }
        }
    }

    /// Resolves peer `id`'s `host:port` on a blocking task and sets it as the peer's
    /// address if configuration `generation` is still the latest applied.
    fn resolve_in_background(&self, id: NodeId, name: String, generation: u64) {
        let t = self.clone();
        drop(self.inner.rt.spawn_blocking_task(async move {
            let me = t.inner.shared.config.node_id;
            match resolve(&name) {
                Some(addr) => {
                    let current = lock(&t.inner.generation);
                    if *current == generation {
                        t.set_peer(id, addr);
                    }
                }
                None => warn!(node = me, peer = id, addr = %name, "member address not usable; peer not set"),
            }
        }));
    }

    /// Connects to `peer` at `addr`, runs the handshake (TLS first when configured) and
    /// closes the connection: `Ok` when the peer accepts this node. A node about to
    /// bootstrap probes its peers so that it learns before it writes anything whether
    /// one of them knows its node id by another data directory
    /// ([`HandshakeError::Refused`](crate::HandshakeError::Refused) with
    /// [`HelloStatus::Replaced`](crate::codec::HelloStatus::Replaced); see
    /// [`crate::incarnation`]). Bounded by the connect and handshake timeouts.
    pub async fn probe(&self, peer: NodeId, addr: SocketAddr) -> Result<(), ConnectionError> {
        crate::outbound::connect(&self.inner.rt, &self.inner.shared.config, peer, addr).await.map(drop)
    }

    /// The counters of a peer's send queue.
    pub fn peer_stats(&self, id: NodeId) -> Option<PeerStats> {
        lock(&self.inner.shared.peers).get(&id).map(|q| q.stats())
    }

    /// The counters of every peer, by id.
    pub fn all_peer_stats(&self) -> Vec<(NodeId, PeerStats)> {
        let mut all: Vec<_> = lock(&self.inner.shared.peers).iter().map(|(&id, q)| (id, q.stats())).collect();
        all.sort_by_key(|&(id, _)| id);
        all
    }

    /// Starts accepting connections; every valid incoming message is passed to
    /// `deliver` (typically `move |m| raft.receive(m)`). Only the first call has an
    /// effect.
    pub fn start(&self, deliver: impl Fn(Message) + Send + Sync + 'static) {
        let Some(listener) = lock(&self.inner.listener).take() else {
            warn!(node = self.inner.shared.config.node_id, "transport already started");
            return;
        };
        let shared = self.inner.shared.clone();
        let rt = self.inner.rt.clone();
        self.spawn(run_listener(rt, shared, listener, Arc::new(deliver)));
    }

    /// Stops the listener, closes every connection and waits for every task to end.
    pub async fn shutdown(&self) {
        drop(lock(&self.inner.stop_tx).take());
        drop(lock(&self.inner.listener).take());
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        futures::future::join_all(tasks).await;
    }
}

impl<R: TcpRuntime> Drop for Inner<R> {
    fn drop(&mut self) {
        // Dropping the sender stops every task.
        drop(lock(&self.stop_tx).take());
    }
}

/// Parses `host:port`; a host that is not an IP address is resolved (the first address
/// wins). `None` if it is not an address or does not resolve.
fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Some(a);
    }
    addr.to_socket_addrs().ok()?.next()
}

#[async_trait]
impl<R: TcpRuntime> Network for TcpNetwork<R> {
    async fn send(&self, to: NodeId, msg: Message) -> Result<(), NetworkError> {
        let config = &self.inner.shared.config;
        let q = lock(&self.inner.shared.peers).get(&to).cloned().ok_or(NetworkError::UnknownPeer(to))?;
        let mut frame = Vec::new();
        codec::encode_frame(&msg, config.max_frame_size, &mut frame).map_err(|e| {
            warn!(peer = to, error = %e, "message not sent");
            NetworkError::Other(e.to_string())
        })?;
        q.push(frame, config);
        Ok(())
    }

    fn members_changed(&self, membership: &Membership) {
        TcpTransport { inner: self.inner.clone() }.apply_membership(membership);
    }
}

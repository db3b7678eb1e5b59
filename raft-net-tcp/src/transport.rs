//! The transport: outgoing connections (the [`Network`] half) and the listener that
//! hands incoming messages to a delivery callback.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared as SharedFuture};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::stream::{FuturesUnordered, StreamExt};
use raft::{Message, Network, NetworkError, NodeId};
use tracing::{debug, info, warn};

use crate::codec::{self, FrameDecoder, Hello, HelloStatus, HELLO_LEN, PROTOCOL_VERSION, REPLY_LEN};
use crate::error::{ConnectionError, FrameError, HandshakeError};
use crate::rt::TcpRuntime;

/// Settings of a [`TcpTransport`]. [`TcpConfig::new`] gives defaults suited to a LAN.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The cluster's id; connections from other clusters are refused.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: NodeId,
    /// The largest frame payload sent or accepted, in bytes.
    pub max_frame_size: u32,
    /// The most frames queued for one peer; beyond it the oldest queued frame is
    /// dropped (Raft tolerates loss and newer messages supersede older ones).
    pub send_queue_len: usize,
    /// The most bytes queued for one peer; beyond it the oldest frames are dropped.
    pub send_queue_bytes: usize,
    /// The most bytes written in one batch (one write and one flush); a single larger
    /// frame is written alone.
    pub max_batch_bytes: usize,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one batch write (including its flush) may take before the connection
    /// is dropped and reopened.
    pub write_timeout: Duration,
    /// How long the handshake may take, on either side.
    pub handshake_timeout: Duration,
    /// The first delay before reconnecting after a failure.
    pub backoff_min: Duration,
    /// The longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// The most concurrent inbound connections; more are closed on accept.
    pub max_inbound_connections: usize,
}

impl TcpConfig {
    /// Defaults: 16 MiB frames, 1024 queued frames or 64 MiB per peer, 1 MiB batches,
    /// 1 s connect and handshake timeouts, 5 s write timeout, backoff from 20 ms to
    /// 1 s, 128 inbound connections.
    pub fn new(cluster_id: u64, node_id: NodeId) -> TcpConfig {
        TcpConfig {
            cluster_id,
            node_id,
            max_frame_size: 16 << 20,
            send_queue_len: 1024,
            send_queue_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_inbound_connections: 128,
        }
    }
}

/// Counters of one peer's send queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Frames queued now.
    pub queued: usize,
    /// Bytes queued now.
    pub queued_bytes: usize,
    /// Frames dropped so far because the queue was full.
    pub dropped: u64,
    /// Frames written to the socket so far.
    pub sent: u64,
}

/// The delivery callback: receives every valid incoming message.
pub type Deliver = Arc<dyn Fn(Message) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct QueueState {
    frames: VecDeque<Vec<u8>>,
    stats: PeerStats,
    addr: SocketAddr,
    addr_gen: u64,
    removed: bool,
    waker: Option<Waker>,
}

/// One peer's bounded send queue, shared by the senders and the peer's writer task.
struct PeerQueue {
    id: NodeId,
    state: Mutex<QueueState>,
}

impl PeerQueue {
    fn wake(st: &mut QueueState) {
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    fn push(&self, frame: Vec<u8>, config: &TcpConfig) {
        let mut st = lock(&self.state);
        st.stats.queued_bytes += frame.len();
        st.frames.push_back(frame);
        while st.frames.len() > config.send_queue_len.max(1) || st.stats.queued_bytes > config.send_queue_bytes {
            let Some(old) = st.frames.pop_front() else { break };
            st.stats.queued_bytes -= old.len();
            st.stats.dropped += 1;
            if st.stats.dropped.is_power_of_two() {
                debug!(peer = self.id, dropped = st.stats.dropped, "send queue full, dropping oldest frames");
            }
        }
        st.stats.queued = st.frames.len();
        Self::wake(&mut st);
    }

    /// Waits until frames are queued, the address changed from `gen`, or the peer was
    /// removed. Returns false when removed.
    async fn wait(&self, gen: Option<u64>) -> bool {
        futures::future::poll_fn(|cx| {
            let mut st = lock(&self.state);
            if st.removed {
                return Poll::Ready(false);
            }
            if !st.frames.is_empty() || gen.is_some_and(|g| g != st.addr_gen) {
                return Poll::Ready(true);
            }
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Moves queued frames into `batch`, up to `max` bytes (at least one frame).
    fn take_batch(&self, batch: &mut Vec<u8>, max: usize) -> u64 {
        let mut st = lock(&self.state);
        let mut n = 0;
        while let Some(f) = st.frames.front() {
            if !batch.is_empty() && batch.len() + f.len() > max {
                break;
            }
            let f = st.frames.pop_front().unwrap_or_default();
            st.stats.queued_bytes -= f.len();
            if batch.is_empty() {
                // The first frame becomes the batch without a copy.
                *batch = f;
            } else {
                batch.extend_from_slice(&f);
            }
            n += 1;
        }
        st.stats.queued = st.frames.len();
        n
    }
}

struct Shared {
    config: TcpConfig,
    peers: Mutex<HashMap<NodeId, Arc<PeerQueue>>>,
}

struct Inner<R: TcpRuntime> {
    rt: R,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    listener: Mutex<Option<R::Listener>>,
    tasks: Mutex<Vec<R::JoinHandle>>,
    stop_tx: Mutex<Option<oneshot::Sender<()>>>,
    stop_rx: SharedFuture<oneshot::Receiver<()>>,
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
            let mut st = lock(&q.state);
            if st.addr != addr {
                info!(peer = id, %addr, "peer address changed");
                st.addr = addr;
                st.addr_gen += 1;
                PeerQueue::wake(&mut st);
            }
            return;
        }
        let q = Arc::new(PeerQueue {
            id,
            state: Mutex::new(QueueState {
                frames: VecDeque::new(),
                stats: PeerStats::default(),
                addr,
                addr_gen: 0,
                removed: false,
                waker: None,
            }),
        });
        peers.insert(id, q.clone());
        drop(peers);
        self.spawn(run_writer(self.inner.rt.clone(), self.inner.shared.config.clone(), q));
    }

    /// Removes a peer: its queue is dropped, its connection closed, and its incoming
    /// connections refused from then on.
    pub fn remove_peer(&self, id: NodeId) {
        if let Some(q) = lock(&self.inner.shared.peers).remove(&id) {
            let mut st = lock(&q.state);
            st.removed = true;
            st.frames.clear();
            PeerQueue::wake(&mut st);
        }
    }

    /// The counters of a peer's send queue.
    pub fn peer_stats(&self, id: NodeId) -> Option<PeerStats> {
        lock(&self.inner.shared.peers).get(&id).map(|q| lock(&q.state).stats)
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
}

/// Connects to `addr` and runs the client side of the handshake.
async fn connect<R: TcpRuntime>(
    rt: &R,
    config: &TcpConfig,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<R::Stream, ConnectionError> {
    let io = |source| ConnectionError::Io { addr, source };
    let mut stream = rt
        .timeout(config.connect_timeout, rt.connect(addr))
        .await
        .ok_or(ConnectionError::Timeout { what: "connect", addr })?
        .map_err(io)?;
    let hello = Hello { version: PROTOCOL_VERSION, cluster_id: config.cluster_id, from: config.node_id, to: peer };
    let mut reply = [0u8; REPLY_LEN];
    rt.timeout(config.handshake_timeout, async {
        stream.write_all(&hello.encode()).await?;
        stream.flush().await?;
        stream.read_exact(&mut reply).await
    })
    .await
    .ok_or(ConnectionError::Handshake { addr, source: HandshakeError::Timeout })?
    .map_err(io)?;
    codec::decode_reply(&reply).map_err(|source| ConnectionError::Handshake { addr, source })?;
    Ok(stream)
}

/// One peer's writer task: connects, writes batches, reconnects with backoff.
async fn run_writer<R: TcpRuntime>(rt: R, config: TcpConfig, q: Arc<PeerQueue>) {
    let mut backoff = config.backoff_min;
    let mut failures = 0u64;
    loop {
        if !q.wait(None).await {
            return;
        }
        let (addr, gen) = {
            let st = lock(&q.state);
            (st.addr, st.addr_gen)
        };
        match connect(&rt, &config, q.id, addr).await {
            Ok(stream) => {
                if failures > 0 {
                    info!(peer = q.id, %addr, "connected after {failures} failed attempts");
                } else {
                    debug!(peer = q.id, %addr, "connected");
                }
                failures = 0;
                backoff = config.backoff_min;
                match pump(&rt, &config, &q, stream, gen, addr).await {
                    Ok(()) => debug!(peer = q.id, %addr, "connection closed"),
                    Err(e) => warn!(peer = q.id, %addr, error = %e, "connection lost"),
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || matches!(e, ConnectionError::Handshake { .. }) {
                    warn!(peer = q.id, %addr, error = %e, "cannot connect to peer");
                } else {
                    debug!(peer = q.id, %addr, error = %e, failures, "cannot connect to peer");
                }
                let jittered = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                rt.sleep(jittered).await;
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

/// Writes queued frames to `stream` until an error, a peer address change or the peer's
/// removal. Also watches the read side so that a closed connection is noticed at once.
async fn pump<R: TcpRuntime>(
    rt: &R,
    config: &TcpConfig,
    q: &PeerQueue,
    stream: R::Stream,
    gen: u64,
    addr: SocketAddr,
) -> Result<(), ConnectionError> {
    let (mut rd, mut wr) = stream.split();
    let watch = async move {
        let mut b = [0u8; 64];
        match rd.read(&mut b).await {
            Ok(_) => Ok(()),
            Err(source) => Err(ConnectionError::Io { addr, source }),
        }
    };
    let write = async move {
        let mut batch = Vec::new();
        loop {
            if !q.wait(Some(gen)).await || lock(&q.state).addr_gen != gen {
                return Ok(());
            }
            batch.clear();
            let n = q.take_batch(&mut batch, config.max_batch_bytes);
            let written = async {
                wr.write_all(&batch).await?;
                wr.flush().await
            };
            futures::pin_mut!(written);
            // A write the socket takes at once (the common case) needs no timer.
            let result = match futures::poll!(written.as_mut()) {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => rt
                    .timeout(config.write_timeout, written)
                    .await
                    .ok_or(ConnectionError::Timeout { what: "write", addr })?,
            };
            result.map_err(|source| ConnectionError::Io { addr, source })?;
            lock(&q.state).stats.sent += n;
        }
    };
    futures::pin_mut!(watch, write);
    match futures::future::select(watch, write).await {
        futures::future::Either::Left((r, _)) => r,
        futures::future::Either::Right((r, _)) => r,
    }
}

/// The accept loop; every connection runs inside this task.
async fn run_listener<R: TcpRuntime>(rt: R, shared: Arc<Shared>, listener: R::Listener, deliver: Deliver) {
    let mut conns = FuturesUnordered::new();
    loop {
        futures::select! {
            r = R::accept(&listener).fuse() => match r {
                Ok((stream, addr)) => {
                    if conns.len() >= shared.config.max_inbound_connections {
                        warn!(node = shared.config.node_id, %addr, "too many inbound connections, closing the new one");
                        continue;
                    }
                    let (rt, shared, deliver) = (rt.clone(), shared.clone(), deliver.clone());
                    conns.push(async move {
                        match serve(&rt, &shared, stream, addr, &deliver).await {
                            Ok(()) => debug!(node = shared.config.node_id, %addr, "inbound connection closed"),
                            Err(e) => warn!(node = shared.config.node_id, %addr, error = %e, "inbound connection closed"),
                        }
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: wait a little rather than spin.
                    warn!(node = shared.config.node_id, error = %e, "accept failed");
                    rt.sleep(Duration::from_millis(50)).await;
                }
            },
            () = conns.select_next_some() => {}
        }
    }
}

fn check_hello(shared: &Shared, hello: &Hello) -> Result<(), (HelloStatus, HandshakeError)> {
    let c = &shared.config;
    if hello.version != PROTOCOL_VERSION {
        return Err((HelloStatus::UnsupportedVersion, HandshakeError::UnsupportedVersion(hello.version)));
    }
    if hello.cluster_id != c.cluster_id {
        return Err((
            HelloStatus::WrongCluster,
            HandshakeError::WrongCluster { expected: c.cluster_id, got: hello.cluster_id },
        ));
    }
    if hello.to != c.node_id {
        return Err((HelloStatus::WrongReceiver, HandshakeError::WrongReceiver { expected: c.node_id, got: hello.to }));
    }
    if hello.from == c.node_id || !lock(&shared.peers).contains_key(&hello.from) {
        return Err((HelloStatus::UnknownSender, HandshakeError::UnknownSender(hello.from)));
    }
    Ok(())
}

/// The server side of one inbound connection.
async fn serve<R: TcpRuntime>(
    rt: &R,
    shared: &Shared,
    mut stream: R::Stream,
    addr: SocketAddr,
    deliver: &Deliver,
) -> Result<(), ConnectionError> {
    let io = |source| ConnectionError::Io { addr, source };
    let config = &shared.config;
    let mut hello = [0u8; HELLO_LEN];
    rt.timeout(config.handshake_timeout, stream.read_exact(&mut hello))
        .await
        .ok_or(ConnectionError::Handshake { addr, source: HandshakeError::Timeout })?
        .map_err(io)?;
    let hello = Hello::decode(&hello).map_err(|source| ConnectionError::Handshake { addr, source })?;
    if let Err((status, source)) = check_hello(shared, &hello) {
        // Tell the peer why, best effort, then close.
        let _ = rt
            .timeout(config.handshake_timeout, async {
                stream.write_all(&codec::encode_reply(status)).await?;
                stream.flush().await
            })
            .await;
        return Err(ConnectionError::Handshake { addr, source });
    }
    rt.timeout(config.handshake_timeout, async {
        stream.write_all(&codec::encode_reply(HelloStatus::Accepted)).await?;
        stream.flush().await
    })
    .await
    .ok_or(ConnectionError::Handshake { addr, source: HandshakeError::Timeout })?
    .map_err(io)?;
    debug!(node = config.node_id, peer = hello.from, %addr, "inbound connection accepted");

    let mut decoder = FrameDecoder::new(config.max_frame_size);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            return match decoder.buffered() {
                0 => Ok(()),
                buffered => Err(ConnectionError::Truncated { addr, buffered }),
            };
        }
        decoder.extend(&buf[..n]);
        while let Some(msg) = decoder.next_message().map_err(|source| ConnectionError::Frame { addr, source })? {
            if msg.from != hello.from || msg.to != config.node_id {
                return Err(ConnectionError::Frame {
                    addr,
                    source: FrameError::Misaddressed {
                        from: msg.from,
                        to: msg.to,
                        expected_from: hello.from,
                        expected_to: config.node_id,
                    },
                });
            }
            deliver(msg);
        }
    }
}

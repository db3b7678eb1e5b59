//! Outgoing connections: one bounded send queue per peer, and the peer's writer task
//! that connects (with the handshake), writes batches of queued frames and reconnects
//! with backoff.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures::io::{AsyncReadExt, AsyncWriteExt};
use raft::NodeId;
use tracing::{debug, info, warn};

use crate::config::TcpConfig;
use crate::error::ConnectionError;
use crate::handshake;
use crate::rt::TcpRuntime;
use crate::stream::Stream;
use crate::sync::lock;

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
    /// The outgoing connection to the peer is up (its handshake was accepted).
    pub connected: bool,
    /// Outgoing connections to the peer established so far.
    pub connects: u64,
    /// Frames received from the peer so far, on its incoming connections.
    pub received: u64,
}

struct QueueState {
    frames: VecDeque<Vec<u8>>,
    stats: PeerStats,
    addr: SocketAddr,
    addr_gen: u64,
    removed: bool,
    waker: Option<Waker>,
}

impl QueueState {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// One peer's bounded send queue, shared by the senders and the peer's writer task.
pub(crate) struct PeerQueue {
    id: NodeId,
    state: Mutex<QueueState>,
    /// Frames received from the peer (counted by its incoming connections).
    received: AtomicU64,
}

impl PeerQueue {
    /// An empty queue for peer `id` at `addr`.
    pub(crate) fn new(id: NodeId, addr: SocketAddr) -> PeerQueue {
        PeerQueue {
            id,
            state: Mutex::new(QueueState {
                frames: VecDeque::new(),
                stats: PeerStats::default(),
                addr,
                addr_gen: 0,
                removed: false,
                waker: None,
            }),
            received: AtomicU64::new(0),
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> PeerStats {
        PeerStats { received: self.received.load(Ordering::Relaxed), ..lock(&self.state).stats }
    }

    /// Counts a frame received from the peer.
    pub(crate) fn note_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes the peer's address: the writer closes its connection and opens one to
    /// the new address.
    pub(crate) fn set_addr(&self, addr: SocketAddr) {
        let mut st = lock(&self.state);
        if st.addr != addr {
            info!(peer = self.id, %addr, "peer address changed");
            st.addr = addr;
            st.addr_gen += 1;
            st.wake();
        }
    }

    /// Marks the peer removed and drops what is queued: the writer task ends.
    pub(crate) fn remove(&self) {
        let mut st = lock(&self.state);
        st.removed = true;
        st.frames.clear();
        st.wake();
    }

    /// Queues a frame, dropping the oldest ones beyond the configured bounds.
    pub(crate) fn push(&self, frame: Vec<u8>, config: &TcpConfig) {
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
        st.wake();
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

/// Connects to `addr`, sets up TLS when configured, and runs the connecting side of the
/// handshake.
pub(crate) async fn connect<R: TcpRuntime>(
    rt: &R,
    config: &TcpConfig,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<Stream<R::Stream>, ConnectionError> {
    let tcp = rt
        .timeout(config.connect_timeout, rt.connect(addr, config.bind_source))
        .await
        .ok_or(ConnectionError::Timeout { what: "connect", addr })?
        .map_err(|source| ConnectionError::Io { addr, source })?;
    #[cfg(feature = "tls")]
    let mut stream = match &config.tls {
        Some(tls) => {
            Stream::Client(Box::new(crate::tls::connect(rt, tls, config.handshake_timeout, tcp, peer, addr).await?))
        }
        None => Stream::Plain(tcp),
    };
    #[cfg(not(feature = "tls"))]
    let mut stream = Stream::Plain(tcp);
    handshake::connect(rt, config, &mut stream, peer, addr).await?;
    Ok(stream)
}

/// One peer's writer task: connects, writes batches, reconnects with backoff.
pub(crate) async fn run_writer<R: TcpRuntime>(rt: R, config: TcpConfig, q: Arc<PeerQueue>) {
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
                {
                    let mut st = lock(&q.state);
                    st.stats.connected = true;
                    st.stats.connects += 1;
                }
                let result = pump(&rt, &config, &q, stream, gen, addr).await;
                lock(&q.state).stats.connected = false;
                match result {
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
    stream: Stream<R::Stream>,
    gen: u64,
    addr: SocketAddr,
) -> Result<(), ConnectionError> {
    let (mut rd, mut wr) = stream.split();
    let watch = async move {
        let mut b = [0u8; 64];
        match rd.read(&mut b).await {
            // A TLS peer that closes without a close_notify alert: closed all the same.
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(source) => Err(ConnectionError::io(addr, source)),
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
                Poll::Ready(r) => r,
                Poll::Pending => rt
                    .timeout(config.write_timeout, written)
                    .await
                    .ok_or(ConnectionError::Timeout { what: "write", addr })?,
            };
            result.map_err(|source| ConnectionError::io(addr, source))?;
            lock(&q.state).stats.sent += n;
        }
    };
    futures::pin_mut!(watch, write);
    match futures::future::select(watch, write).await {
        futures::future::Either::Left((r, _)) => r,
        futures::future::Either::Right((r, _)) => r,
    }
}

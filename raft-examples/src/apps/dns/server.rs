//! The DNS listeners and the expiry task, run as the host's services: UDP on a thread of
//! its own (blocking receive, answer from the local replica, send), TCP on the node's
//! runtime (two-byte length prefix, RFC 1035 §4.2.2), and the leader's expiry proposals.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use raft::Role;
use tracing::{debug, info, warn};

use super::answer::{respond, Transport, Zone, MAX_UDP_SIZE, MIN_UDP_SIZE};
use super::expiry::{ExpiryClock, TICK};
use super::state::Registry;
use crate::host::{AppNode, Service};
use crate::http::HttpRuntime;

/// How long a TCP client may take to send a query.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// How many orders a multi-instance answer cycles through (see [`AnswerCache`]).
const ROTATIONS: usize = 16;
/// The most answers cached for one registry index.
const CACHE_ENTRIES: usize = 16_384;

/// Encoded answers for the registry as of one applied index, keyed by the query without
/// its id, the transport and the rotation: a repeated query costs a copy instead of a
/// decode, a lookup and an encode. Emptied whenever the registry changes.
#[derive(Default)]
struct AnswerCache {
    index: u64,
    answers: HashMap<(Transport, usize, Vec<u8>), Vec<u8>>,
}

/// What the DNS services share: the zone, the answer rotation and the answer cache.
pub(super) struct Dns {
    pub(super) zone: Zone,
    rotate: AtomicUsize,
    cache: Mutex<AnswerCache>,
}

impl Dns {
    pub(super) fn new(zone: Zone) -> Self {
        Dns { zone, rotate: AtomicUsize::new(0), cache: Mutex::new(AnswerCache::default()) }
    }

    fn answer(&self, node: &AppNode<Registry>, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let rotate = self.rotate.fetch_add(1, Ordering::Relaxed) % ROTATIONS;
        node.read_stale(|r| {
            if packet.len() < 12 || packet.len() > MIN_UDP_SIZE {
                return respond(&self.zone, r, packet, transport, rotate);
            }
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.index != r.last_index() {
                cache.answers.clear();
                cache.index = r.last_index();
            }
            let key = (transport, rotate, packet[2..].to_vec());
            if let Some(cached) = cache.answers.get(&key) {
                let mut reply = cached.clone();
                reply[..2].copy_from_slice(&packet[..2]);
                return Some(reply);
            }
            let reply = respond(&self.zone, r, packet, transport, rotate)?;
            // Every answer starts with the query's id (the 12-byte header comes first).
            if reply.len() >= 2 && cache.answers.len() < CACHE_ENTRIES {
                cache.answers.insert(key, reply.clone());
            }
            Some(reply)
        })
    }
}

/// Sets the flag when dropped: the UDP thread's stop signal.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The UDP listener on `addr`: a thread that answers datagrams until the service is dropped.
pub(super) fn udp(dns: Arc<Dns>, node: AppNode<Registry>, addr: SocketAddr) -> Service {
    let socket = match UdpSocket::bind(addr).and_then(|s| s.set_read_timeout(Some(TICK)).map(|()| s)) {
        Ok(s) => s,
        Err(e) => return Box::pin(async move { Err(format!("cannot listen for DNS over UDP on {addr}: {e}")) }),
    };
    info!(%addr, zone = %dns.zone.domain(), "serving DNS over UDP");
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<String>();
    let flag = stop.clone();
    let spawned = std::thread::Builder::new().name("dns-udp".into()).spawn(move || {
        let mut buf = vec![0u8; MAX_UDP_SIZE.max(65_535)];
        while !flag.load(Ordering::Relaxed) {
            let (len, peer) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Errors such as ICMP port unreachable from an earlier send: keep serving.
                    debug!(error = %e, "DNS UDP receive failed");
                    continue;
                }
            };
            if let Some(reply) = dns.answer(&node, &buf[..len], Transport::Udp) {
                if let Err(e) = socket.send_to(&reply, peer) {
                    debug!(error = %e, %peer, "DNS UDP send failed");
                }
            }
        }
        drop(done_tx);
    });
    if let Err(e) = spawned {
        return Box::pin(async move { Err(format!("cannot start the DNS UDP thread: {e}")) });
    }
    Box::pin(async move {
        let _stop = StopOnDrop(stop);
        match done_rx.await {
            Ok(e) => Err(e),
            Err(_) => Ok(()),
        }
    })
}

/// The TCP listener on `addr`, on the node's runtime.
pub(super) fn tcp<R: HttpRuntime>(rt: R, dns: Arc<Dns>, node: AppNode<Registry>, addr: SocketAddr) -> Service {
    Box::pin(async move {
        let listener = rt.bind(addr).await.map_err(|e| format!("cannot listen for DNS over TCP on {addr}: {e}"))?;
        info!(%addr, "serving DNS over TCP");
        let mut connections = FuturesUnordered::new();
        loop {
            futures::select! {
                accepted = R::accept(&listener).fuse() => match accepted {
                    Ok((stream, peer)) => connections.push(serve_tcp(rt.clone(), dns.clone(), node.clone(), stream, peer)),
                    Err(e) => {
                        warn!(error = %e, "DNS TCP accept failed");
                        rt.sleep(TICK).await;
                    }
                },
                () = connections.select_next_some() => {}
            }
        }
    })
}

/// Answers the queries of one TCP connection until it closes, idles or sends garbage.
async fn serve_tcp<R: HttpRuntime>(
    rt: R,
    dns: Arc<Dns>,
    node: AppNode<Registry>,
    mut stream: R::Stream,
    peer: SocketAddr,
) {
    loop {
        let read = async {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut query).await?;
            Ok::<_, std::io::Error>(query)
        };
        let query = futures::select! {
            q = read.fuse() => match q {
                Ok(q) => q,
                Err(_) => return,
            },
            () = rt.sleep(TCP_IDLE).fuse() => return,
        };
        let Some(reply) = dns.answer(&node, &query, Transport::Tcp) else { return };
        let Ok(len) = u16::try_from(reply.len()) else {
            debug!(%peer, len = reply.len(), "DNS answer too large for TCP");
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// The expiry task: ticks the node's [`ExpiryClock`] and, on the leader, proposes the
/// expiries that are due.
pub(super) fn expiry<R: HttpRuntime>(rt: R, node: AppNode<Registry>, clock: Arc<Mutex<ExpiryClock>>) -> Service {
    Box::pin(async move {
        loop {
            rt.sleep(TICK).await;
            let (role, term) = node.raft().with_status(|s| (s.role, s.term));
            let leader_term = (role == Role::Leader).then_some(term);
            let due = node.read_stale(|r| {
                let mut clock = clock.lock().unwrap_or_else(|e| e.into_inner());
                clock.tick(r, Instant::now(), leader_term)
            });
            for command in due {
                debug!(?command, "proposing an expiry");
                if let Err(e) = node.propose(command).await {
                    info!(error = %e, "an expiry was not committed; retrying on the next tick");
                    break;
                }
            }
        }
    })
}

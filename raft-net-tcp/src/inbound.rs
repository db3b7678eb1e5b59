//! Incoming connections: the accept loop, and serving one connection (the handshake,
//! then its frames handed to the delivery callback).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::FutureExt;
use futures::io::{AsyncRead, AsyncReadExt};
use futures::stream::{FuturesUnordered, StreamExt};
use raft::NodeId;
use tracing::{debug, warn};

use crate::codec::FrameDecoder;
use crate::config::TcpConfig;
use crate::error::{ConnectionError, FrameError};
use crate::handshake::{self, Accepted};
use crate::rt::TcpRuntime;
use crate::stream::Stream;
use crate::sync::lock;
use crate::transport::{Deliver, Shared};

/// The accept loop; every connection runs inside this task.
pub(crate) async fn run_listener<R: TcpRuntime>(rt: R, shared: Arc<Shared>, listener: R::Listener, deliver: Deliver) {
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

/// The receiving side of one inbound connection: TLS when configured, the handshake,
/// then its frames.
pub(crate) async fn serve<R: TcpRuntime>(
    rt: &R,
    shared: &Shared,
    tcp: R::Stream,
    addr: SocketAddr,
    deliver: &Deliver,
) -> Result<(), ConnectionError> {
    let is_peer = |id: NodeId| lock(&shared.peers).contains_key(&id);
    #[cfg(feature = "tls")]
    let (mut stream, cert) = match &shared.config.tls {
        Some(tls) => {
            let (s, cert) = crate::tls::accept(rt, tls, shared.config.handshake_timeout, tcp, addr).await?;
            (Stream::Server(Box::new(s)), Some(cert))
        }
        None => (Stream::Plain(tcp), None),
    };
    // On TLS, the hello must claim the node its certificate names.
    #[cfg(feature = "tls")]
    let certified = |id: NodeId| cert.as_ref().is_none_or(|c| c.names(id));
    #[cfg(not(feature = "tls"))]
    let (mut stream, certified) = (Stream::Plain(tcp), |_: NodeId| true);
    let accepted = handshake::accept(rt, &shared.config, is_peer, certified, &mut stream, addr).await?;
    debug!(node = shared.config.node_id, peer = accepted.peer(), %addr, "inbound connection accepted");
    let queue = lock(&shared.peers).get(&accepted.peer()).cloned();
    let count = move || {
        if let Some(q) = &queue {
            q.note_received();
        }
    };
    read_frames(accepted, &shared.config, stream, addr, deliver, count).await
}

/// Reads the frames of a connection whose handshake accepted the peer, and delivers
/// each message, until the peer closes the connection or sends anything invalid.
///
/// **Architecture invariant:** no frame is decoded before the handshake accepted the
/// peer. The decoder of inbound bytes is created only here, and this function takes the
/// [`Accepted`] that only [`handshake::accept`] returns, once it has checked the hello
/// and sent the accepting reply; the handshake reads exactly the hello's bytes, so every
/// byte the decoder sees was sent after it.
async fn read_frames<S: AsyncRead + Unpin>(
    accepted: Accepted,
    config: &TcpConfig,
    mut stream: S,
    addr: SocketAddr,
    deliver: &Deliver,
    count: impl Fn(),
) -> Result<(), ConnectionError> {
    let peer = accepted.peer();
    let mut decoder = FrameDecoder::new(config.max_frame_size);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without a close_notify alert: an end of stream like
            // any other (a frame cut short is still told apart below).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(source) => return Err(ConnectionError::io(addr, source)),
        };
        if n == 0 {
            return match decoder.buffered() {
                0 => Ok(()),
                buffered => Err(ConnectionError::Truncated { addr, buffered }),
            };
        }
        decoder.extend(buf.get(..n).unwrap_or_default());
        while let Some(msg) = decoder.next_message().map_err(|source| ConnectionError::Frame { addr, source })? {
            if msg.from != peer || msg.to != config.node_id {
                return Err(ConnectionError::Frame {
                    addr,
                    source: FrameError::Misaddressed {
                        from: msg.from,
                        to: msg.to,
                        expected_from: peer,
                        expected_to: config.node_id,
                    },
                });
            }
            count();
            deliver(msg);
        }
    }
}

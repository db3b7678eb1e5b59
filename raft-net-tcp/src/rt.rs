//! The runtime-specific part of the transport: TCP sockets on tokio or smol. Everything
//! else is written against [`futures::io`] and [`raft::Runtime`].

use std::io;
use std::net::{IpAddr, SocketAddr};

use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncWrite};
use raft::Runtime;

/// A [`Runtime`] that can open TCP connections and listen for them. Implemented for
/// `TokioRuntime` (feature `tokio`) and `SmolRuntime` (feature `smol`).
pub trait TcpRuntime: Runtime {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound listening socket.
    type Listener: Send + Sync + 'static;

    /// Connects to `addr` with `TCP_NODELAY` set, from `from` (an address of this host,
    /// any port) when given, else from the address the OS picks.
    fn connect(&self, addr: SocketAddr, from: Option<IpAddr>) -> BoxFuture<'static, io::Result<Self::Stream>>;

    /// Binds a listener to `addr`.
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Listener>>;

    /// Accepts one connection, with `TCP_NODELAY` set. Cancel safe.
    fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<(Self::Stream, SocketAddr)>>;

    /// The address the listener is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
}

/// Refuses a connection whose two ends are one socket. Connecting to a local port in
/// the ephemeral range where nothing listens (a peer that is down) can make the kernel
/// pick that very port as the source: the socket connects to itself (TCP simultaneous
/// open), reads back its own bytes, and would take the peer's place for as long as it
/// stays open.
fn refuse_self_connection(local: SocketAddr, peer: SocketAddr) -> io::Result<()> {
    if local == peer {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("{peer} connected to itself: nothing listens there"),
        ));
    }
    Ok(())
}

#[cfg(feature = "tokio")]
mod tokio_impl {
    use super::*;
    use raft::runtime::TokioRuntime;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    impl TcpRuntime for TokioRuntime {
        type Stream = Compat<tokio::net::TcpStream>;
        type Listener = tokio::net::TcpListener;

        fn connect(&self, addr: SocketAddr, from: Option<IpAddr>) -> BoxFuture<'static, io::Result<Self::Stream>> {
            Box::pin(async move {
                let s = match from {
                    None => tokio::net::TcpStream::connect(addr).await?,
                    Some(ip) => {
                        let socket = if addr.is_ipv4() {
                            tokio::net::TcpSocket::new_v4()?
                        } else {
                            tokio::net::TcpSocket::new_v6()?
                        };
                        socket.bind(SocketAddr::new(ip, 0))?;
                        socket.connect(addr).await?
                    }
                };
                refuse_self_connection(s.local_addr()?, s.peer_addr()?)?;
                s.set_nodelay(true)?;
                Ok(s.compat())
            })
        }

        fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Listener>> {
            // Bind inside the runtime, so that callers outside a tokio context (another
            // runtime's thread) can bind too.
            let (tx, rx) = futures::channel::oneshot::channel();
            drop(self.spawn(async move {
                let _ = tx.send(tokio::net::TcpListener::bind(addr).await);
            }));
            Box::pin(async move {
                rx.await.unwrap_or_else(|_| Err(io::Error::other("the tokio runtime stopped before binding")))
            })
        }

        fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<(Self::Stream, SocketAddr)>> {
            Box::pin(async move {
                let (s, addr) = listener.accept().await?;
                s.set_nodelay(true)?;
                Ok((s.compat(), addr))
            })
        }

        fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
            listener.local_addr()
        }
    }
}

#[cfg(feature = "smol")]
mod smol_impl {
    use super::*;
    use raft::runtime::SmolRuntime;

    impl TcpRuntime for SmolRuntime {
        type Stream = smol::net::TcpStream;
        type Listener = smol::net::TcpListener;

        fn connect(&self, addr: SocketAddr, from: Option<IpAddr>) -> BoxFuture<'static, io::Result<Self::Stream>> {
            Box::pin(async move {
                let s = match from {
                    None => smol::net::TcpStream::connect(addr).await?,
                    Some(ip) => connect_from(addr, ip).await?,
                };
                refuse_self_connection(s.local_addr()?, s.peer_addr()?)?;
                s.set_nodelay(true)?;
                Ok(s)
            })
        }

        fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Self::Listener>> {
            Box::pin(smol::net::TcpListener::bind(addr))
        }

        fn accept(listener: &Self::Listener) -> BoxFuture<'_, io::Result<(Self::Stream, SocketAddr)>> {
            Box::pin(async move {
                let (s, addr) = listener.accept().await?;
                s.set_nodelay(true)?;
                Ok((s, addr))
            })
        }

        fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
            listener.local_addr()
        }
    }

    /// A non-blocking connect from `from` (any port): bind, start the connect, and wait
    /// until the socket is writable, which is when the connect has finished either way.
    async fn connect_from(addr: SocketAddr, from: IpAddr) -> io::Result<smol::net::TcpStream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.set_nonblocking(true)?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let stream = smol::Async::new(std::net::TcpStream::from(socket))?;
        stream.writable().await?;
        if let Some(e) = stream.get_ref().take_error()? {
            return Err(e);
        }
        // Fails with NotConnected should the connect have failed without an error set.
        stream.get_ref().peer_addr()?;
        Ok(smol::net::TcpStream::from(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_connected_to_itself_is_refused() {
        let a: SocketAddr = "127.0.0.1:45556".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:45557".parse().unwrap();
        let e = refuse_self_connection(a, a).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().contains("connected to itself"), "{e}");
        assert!(refuse_self_connection(b, a).is_ok());
    }
}

//! A connection's byte stream once it is set up: the TCP stream itself, or a TLS
//! session over it (feature `tls`). The handshake and the frame code read and write it
//! without knowing which.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite, IoSlice};

/// A plaintext or TLS stream over a TCP stream `S`.
pub(crate) enum Stream<S> {
    /// The TCP stream, in plaintext.
    Plain(S),
    /// The connecting side of a TLS session.
    #[cfg(feature = "tls")]
    Client(Box<futures_rustls::client::TlsStream<S>>),
    /// The accepting side of a TLS session.
    #[cfg(feature = "tls")]
    Server(Box<futures_rustls::server::TlsStream<S>>),
}

/// Calls `$call` on the stream inside `$self`, whichever it is.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $call,
            #[cfg(feature = "tls")]
            Stream::Client($s) => $call,
            #[cfg(feature = "tls")]
            Stream::Server($s) => $call,
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_close(cx))
    }
}

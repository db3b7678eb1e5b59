//! The adapter between `futures::io` sockets and hyper ([`HyperIo`]), and the runtimes
//! the server runs on ([`HttpRuntime`]) with hyper's timer on each.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use raft_net_tcp::TcpRuntime;

/// A hyper I/O object over a `futures::io` stream (a socket from [`TcpRuntime`]).
///
/// Reads go through a small buffer of its own, since hyper's read buffer is
/// uninitialized memory that safe code cannot hand out as a slice.
pub struct HyperIo<T> {
    io: T,
    scratch: Box<[u8]>,
}

impl<T> HyperIo<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Self {
        HyperIo { io, scratch: vec![0; 16 * 1024].into_boxed_slice() }
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(this.scratch.len());
        let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.scratch[..want]))?;
        buf.put_slice(&this.scratch[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// A runtime the HTTP server runs on: a [`TcpRuntime`] that also gives hyper a timer
/// (for the header read timeout).
pub trait HttpRuntime: TcpRuntime {
    /// The timer handed to hyper.
    fn hyper_timer(&self) -> impl hyper::rt::Timer + Send + Sync + 'static;

    /// The runtime's name, as shown by `/status`.
    fn name(&self) -> &'static str;
}

#[cfg(feature = "tokio")]
mod tokio_timer {
    use std::time::Instant;

    use super::*;

    /// hyper's timer on tokio.
    pub(super) struct TokioTimer;

    struct TokioSleep(Pin<Box<tokio::time::Sleep>>);

    impl Future for TokioSleep {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.as_mut().poll(cx)
        }
    }

    impl hyper::rt::Sleep for TokioSleep {}

    impl hyper::rt::Timer for TokioTimer {
        fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(TokioSleep(Box::pin(tokio::time::sleep(duration))))
        }

        fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(TokioSleep(Box::pin(tokio::time::sleep_until(deadline.into()))))
        }
    }

    impl HttpRuntime for raft::runtime::TokioRuntime {
        fn hyper_timer(&self) -> impl hyper::rt::Timer + Send + Sync + 'static {
            TokioTimer
        }

        fn name(&self) -> &'static str {
            "tokio"
        }
    }
}

#[cfg(feature = "smol")]
mod smol_timer {
    use std::time::Instant;

    use super::*;

    /// hyper's timer on smol.
    pub(super) struct SmolTimer;

    struct SmolSleep(smol::Timer);

    impl Future for SmolSleep {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            Pin::new(&mut self.0).poll(cx).map(|_| ())
        }
    }

    impl hyper::rt::Sleep for SmolSleep {}

    impl hyper::rt::Timer for SmolTimer {
        fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(SmolSleep(smol::Timer::after(duration)))
        }

        fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
            Box::pin(SmolSleep(smol::Timer::at(deadline)))
        }
    }

    impl HttpRuntime for raft::runtime::SmolRuntime {
        fn hyper_timer(&self) -> impl hyper::rt::Timer + Send + Sync + 'static {
            SmolTimer
        }

        fn name(&self) -> &'static str {
            "smol"
        }
    }
}

//! The [`Runtime`] trait: the only way the driver spawns tasks, sleeps and reads time.
//!
//! Implementations: [`TokioRuntime`] (feature `tokio`), [`SmolRuntime`] (feature
//! `smol`), and the deterministic simulator's runtime (feature `testing`). The runtime
//! is chosen by type, so several can be compiled at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::types::Instant;

#[cfg(feature = "smol")]
mod smol_rt;
#[cfg(feature = "tokio")]
mod tokio_rt;

#[cfg(feature = "smol")]
pub use smol_rt::SmolRuntime;
#[cfg(feature = "tokio")]
pub use tokio_rt::TokioRuntime;

/// An async runtime as the driver needs it.
///
/// # Contract
///
/// - `now` is monotonic: it never goes backwards.
/// - `sleep_until` completes at or after `deadline` as measured by `now`.
/// - `spawn` runs the future to completion concurrently with the caller. Dropping the
///   returned handle detaches the task (it keeps running); awaiting it waits for the
///   task to finish.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A handle to a spawned task.
    type JoinHandle: Future<Output = ()> + Send + Unpin + 'static;
    /// The future returned by [`Runtime::sleep_until`].
    type Sleep: Future<Output = ()> + Send + 'static;

    /// Spawns a task.
    fn spawn<F>(&self, fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static;

    /// Spawns a task that may block its thread: a leader's store calls, for a store
    /// whose calls block ([`LogStore::blocks_thread`](crate::LogStore::blocks_thread),
    /// e.g. the file store's synchronous writes and fsyncs). The default runs it like
    /// [`Runtime::spawn`]; a runtime with a pool for blocking work gives it a thread of
    /// its own, so that a slow disk does not hold a worker that the protocol loop, the
    /// network and the application need.
    fn spawn_blocking_task<F>(&self, fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(fut)
    }

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// The current time.
    fn now(&self) -> Instant;

    /// The wall clock, in milliseconds since the Unix epoch. A leader stamps it into
    /// the client-session entries it appends, to expire idle sessions
    /// ([`crate::session`]); it need not be monotonic (the session table's clock never
    /// goes back). The default reads the system clock; a simulated runtime gives its
    /// virtual time.
    fn wall_clock_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// A future that completes `d` after [`Runtime::now`].
    fn sleep(&self, d: Duration) -> Self::Sleep {
        self.sleep_until(self.now().add(d))
    }

    /// Runs `fut` for at most `d`: the future yields `Some(output)`, or `None` when the
    /// time ran out first (`fut` is then dropped unfinished).
    fn timeout<F: Future>(&self, d: Duration, fut: F) -> Timeout<F, Self::Sleep> {
        Timeout { fut, sleep: self.sleep(d) }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Runtime::timeout`]: no allocation, the future and the sleep are
    /// polled in place.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<F, S> {
        #[pin]
        fut: F,
        #[pin]
        sleep: S,
    }
}

impl<F: Future, S: Future<Output = ()>> Future for Timeout<F, S> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A runtime's clock without the runtime's type, for handles that are not generic over
/// it (the [`Raft`](crate::Raft) handle, an application's HTTP front end). Every
/// [`Runtime`] is one.
///
/// # Contract
///
/// The same as [`Runtime::now`] and [`Runtime::sleep_until`]: `now` is monotonic and
/// the sleep completes at or after `deadline`.
pub trait DynClock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Instant;

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;

    /// A future that completes `d` after [`DynClock::now`].
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.sleep_until(self.now().add(d))
    }
}

impl<R: Runtime> DynClock for R {
    fn now(&self) -> Instant {
        Runtime::now(self)
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Runtime::sleep_until(self, deadline).boxed()
    }
}

/// A process-wide epoch for the wall-clock runtimes, so that their instants are small
/// numbers and comparable across runtimes in one process.
#[cfg(any(feature = "tokio", feature = "smol"))]
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[cfg(any(feature = "tokio", feature = "smol"))]
fn wall_now() -> Instant {
    Instant::from_nanos(u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(any(feature = "tokio", feature = "smol"))]
fn to_std(t: Instant) -> std::time::Instant {
    // Far-future deadlines ("never") are capped at a year so the addition cannot overflow.
    const YEAR_NANOS: u64 = 365 * 24 * 3600 * 1_000_000_000;
    epoch() + std::time::Duration::from_nanos(t.as_nanos().min(YEAR_NANOS))
}

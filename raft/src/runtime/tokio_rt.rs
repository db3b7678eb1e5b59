use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{to_std, wall_now, Runtime};
use crate::types::Instant;

/// The [`Runtime`] on tokio. It spawns onto the runtime that is current when
/// [`TokioRuntime::new`] is called (or, with `Default`, when `spawn` is called).
#[derive(Clone, Debug, Default)]
pub struct TokioRuntime {
    handle: Option<tokio::runtime::Handle>,
}

impl TokioRuntime {
    /// A runtime bound to the current tokio runtime. Panics outside one, like
    /// `tokio::spawn`.
    pub fn new() -> Self {
        TokioRuntime { handle: Some(tokio::runtime::Handle::current()) }
    }

    /// A runtime bound to `handle`.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime { handle: Some(handle) }
    }
}

/// A spawned tokio task; dropping it detaches the task.
#[derive(Debug)]
pub struct TokioJoinHandle(tokio::task::JoinHandle<()>);

impl Future for TokioJoinHandle {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A panicked or cancelled task has finished too.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for TokioRuntime {
    type JoinHandle = TokioJoinHandle;
    type Sleep = tokio::time::Sleep;

    fn spawn<F>(&self, fut: F) -> TokioJoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.handle {
            Some(h) => TokioJoinHandle(h.spawn(fut)),
            None => TokioJoinHandle(tokio::spawn(fut)),
        }
    }

    /// Runs the task on a thread of tokio's blocking pool, driven by `Handle::block_on`
    /// (so tokio's timers and I/O still work inside it).
    fn spawn_blocking_task<F>(&self, fut: F) -> TokioJoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.handle.clone().unwrap_or_else(tokio::runtime::Handle::current);
        let inner = handle.clone();
        TokioJoinHandle(handle.spawn_blocking(move || inner.block_on(fut)))
    }

    fn sleep_until(&self, deadline: Instant) -> tokio::time::Sleep {
        let _guard = self.handle.as_ref().map(|h| h.enter());
        tokio::time::sleep_until(tokio::time::Instant::from_std(to_std(deadline)))
    }

    fn now(&self) -> Instant {
        wall_now()
    }
}

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{to_std, wall_now, Runtime};
use crate::types::Instant;

/// The [`Runtime`] on smol. By default tasks go to smol's global executor; with
/// [`SmolRuntime::with_executor`] they go to an executor the caller drives.
#[derive(Clone, Default)]
pub struct SmolRuntime {
    executor: Option<Arc<smol::Executor<'static>>>,
}

impl std::fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolRuntime").field("own_executor", &self.executor.is_some()).finish()
    }
}

impl SmolRuntime {
    /// A runtime on smol's global executor.
    pub fn new() -> Self {
        SmolRuntime { executor: None }
    }

    /// A runtime that spawns onto `executor`, which the caller must run.
    pub fn with_executor(executor: Arc<smol::Executor<'static>>) -> Self {
        SmolRuntime { executor: Some(executor) }
    }
}

/// A spawned smol task; dropping it detaches the task.
pub struct SmolJoinHandle(Option<smol::Task<()>>);

impl Drop for SmolJoinHandle {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.detach();
        }
    }
}

impl Future for SmolJoinHandle {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            Some(t) => {
                let r = Pin::new(t).poll(cx);
                if r.is_ready() {
                    self.0 = None;
                }
                r
            }
            None => Poll::Ready(()),
        }
    }
}

/// The future returned by [`SmolRuntime::sleep_until`].
pub struct SmolSleep(async_io::Timer);

impl Future for SmolSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for SmolRuntime {
    type JoinHandle = SmolJoinHandle;
    type Sleep = SmolSleep;

    fn spawn<F>(&self, fut: F) -> SmolJoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.executor {
            Some(ex) => SmolJoinHandle(Some(ex.spawn(fut))),
            None => SmolJoinHandle(Some(smol::spawn(fut))),
        }
    }

    fn sleep_until(&self, deadline: Instant) -> SmolSleep {
        SmolSleep(async_io::Timer::at(to_std(deadline)))
    }

    fn now(&self) -> Instant {
        wall_now()
    }
}

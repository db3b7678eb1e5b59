//! The handles the code under test holds: [`SimRuntime`] (spawn, sleep, now), the
//! [`SimJoinHandle`] of a task and the [`SimSleep`] timer future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::shared::Shared;
use crate::runtime::Runtime;
use crate::types::Instant;

/// The [`Runtime`] of a [`Simulation`](super::Simulation): spawns tasks into it, sleeps on its virtual
/// clock and reads it.
///
/// Each handle spawns into one group (see [`Simulation::runtime_in_group`](super::Simulation::runtime_in_group)); clones keep
/// the group. Handles may be used from inside simulated tasks.
#[derive(Clone)]
pub struct SimRuntime {
    pub(super) shared: Arc<Shared>,
    pub(super) group: u64,
}

impl SimRuntime {
    /// The group that tasks spawned through this handle belong to.
    pub fn group(&self) -> u64 {
        self.group
    }
}

impl fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRuntime").field("group", &self.group).finish_non_exhaustive()
    }
}

impl Runtime for SimRuntime {
    type JoinHandle = SimJoinHandle;
    type Sleep = SimSleep;

    /// Queues `fut` as a new ready task in this handle's group. It first runs when the
    /// simulation is next driven.
    fn spawn<F>(&self, fut: F) -> SimJoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shared.spawn(self.group, Box::pin(fut))
    }

    fn sleep_until(&self, deadline: Instant) -> SimSleep {
        SimSleep { shared: Arc::clone(&self.shared), deadline, timer: None }
    }

    fn now(&self) -> Instant {
        self.shared.lock().now
    }

    /// The virtual clock (this runtime's view of it), so that session expiry in a
    /// simulation is as deterministic as the rest of it.
    fn wall_clock_ms(&self) -> u64 {
        self.now().as_nanos() / 1_000_000
    }
}

/// A handle to a simulated task. It resolves when the task completes, panics or is
/// killed with [`Simulation::kill_group`](super::Simulation::kill_group); dropping it detaches the task.
pub struct SimJoinHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
}

impl Future for SimJoinHandle {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.shared.lock();
        match st.tasks.get_mut(&self.id) {
            None => Poll::Ready(()),
            Some(task) => {
                let old = task.join_waker.replace(cx.waker().clone());
                drop(st);
                drop(old);
                Poll::Pending
            }
        }
    }
}

impl Drop for SimJoinHandle {
    fn drop(&mut self) {
        let old = self.shared.lock().tasks.get_mut(&self.id).and_then(|task| task.join_waker.take());
        drop(old);
    }
}

impl fmt::Debug for SimJoinHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimJoinHandle").field("task", &self.id).finish_non_exhaustive()
    }
}

/// The future returned by [`SimRuntime::sleep_until`]. It registers a virtual timer
/// when first polled and completes once the simulation's clock reaches the deadline (at
/// once if it already has). Dropping it cancels the timer.
pub struct SimSleep {
    shared: Arc<Shared>,
    deadline: Instant,
    /// The timer's sequence number, once registered.
    timer: Option<u64>,
}

impl SimSleep {
    /// The instant this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for SimSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut guard = this.shared.lock();
        let st = &mut *guard;
        if st.now >= this.deadline {
            let old = this.timer.take().and_then(|seq| st.timers.remove(&(this.deadline, seq)));
            drop(guard);
            drop(old);
            return Poll::Ready(());
        }
        let seq = match this.timer {
            Some(seq) => seq,
            None => {
                let seq = st.next_timer_seq;
                st.next_timer_seq += 1;
                this.timer = Some(seq);
                seq
            }
        };
        let old = match st.timers.get_mut(&(this.deadline, seq)) {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            Some(waker) => Some(std::mem::replace(waker, cx.waker().clone())),
            None => st.timers.insert((this.deadline, seq), cx.waker().clone()),
        };
        drop(guard);
        drop(old);
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some(seq) = self.timer.take() {
            let old = self.shared.lock().timers.remove(&(self.deadline, seq));
            drop(old);
        }
    }
}

impl fmt::Debug for SimSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSleep").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

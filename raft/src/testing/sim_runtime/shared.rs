//! The executor's state behind one lock: the task table, the ready list, the timers and
//! the clock, with the wakers that put tasks back in the ready list.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;

use super::SimJoinHandle;
use crate::sync::lock;
use crate::types::Instant;

/// A spawned task's future.
pub(super) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One live task.
pub(super) struct Task {
    /// The group the task was spawned in.
    pub(super) group: u64,
    /// The task's future; `None` while it is being polled.
    pub(super) future: Option<BoxFuture>,
    /// The waker handed to the task's future.
    pub(super) waker: Waker,
    /// Whether the task is in the ready list.
    pub(super) queued: bool,
    /// The waker of whoever awaits the task's [`SimJoinHandle`].
    pub(super) join_waker: Option<Waker>,
}

/// The future passed to [`Simulation::block_on`](super::Simulation::block_on), while it runs.
pub(super) struct MainSlot {
    /// The id its waker carries.
    pub(super) id: u64,
    /// Whether it has been woken since it was last polled.
    pub(super) woken: bool,
}

/// Everything the executor knows, behind one lock.
pub(super) struct State {
    /// The virtual clock.
    pub(super) now: Instant,
    /// The scheduler's random number generator.
    pub(super) rng: fastrand::Rng,
    /// Virtual time charged per poll.
    pub(super) poll_cost: Duration,
    /// The next task id; ids are never reused.
    pub(super) next_id: u64,
    /// The next timer sequence number.
    pub(super) next_timer_seq: u64,
    /// Live tasks by id.
    pub(super) tasks: BTreeMap<u64, Task>,
    /// Ids of live tasks that are ready to be polled, each at most once.
    pub(super) ready: Vec<u64>,
    /// Pending timers by `(deadline, sequence)`.
    pub(super) timers: BTreeMap<(Instant, u64), Waker>,
    /// The future being driven by `block_on`, if any.
    pub(super) main: Option<MainSlot>,
    /// Whether a task or the `block_on` future is being polled right now.
    pub(super) polling: bool,
    /// Set once the [`Simulation`](super::Simulation) is dropped: new tasks are dropped at once.
    pub(super) closed: bool,
}

impl State {
    /// Removes and returns the wakers of all timers due at or before `now`.
    pub(super) fn take_due_timers(&mut self) -> Vec<Waker> {
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    /// Charges one poll's worth of virtual time.
    pub(super) fn charge_poll(&mut self) {
        self.now = self.now.add(self.poll_cost);
    }
}

/// State shared by the simulation, its runtime handles, wakers, sleeps and join handles.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A poisoned lock is still used: the state is kept consistent at
    /// every point where a panic can escape.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Marks task `id` (or the `block_on` future) ready. A no-op for a dead task or one
    /// that is already ready.
    pub(super) fn wake(&self, id: u64) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(main) = st.main.as_mut() {
            if main.id == id {
                main.woken = true;
                return;
            }
        }
        if let Some(task) = st.tasks.get_mut(&id) {
            if !task.queued {
                task.queued = true;
                st.ready.push(id);
            }
        }
    }

    /// Wakes the timers that are due. Wakers are called without holding the lock.
    pub(super) fn fire_due_timers(&self) {
        let due = self.lock().take_due_timers();
        for waker in due {
            waker.wake();
        }
    }

    /// Adds a task to `group` and makes it ready.
    pub(super) fn spawn(self: &Arc<Self>, group: u64, future: BoxFuture) -> SimJoinHandle {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        if st.closed {
            drop(st);
            drop(future);
            // The id is not in the task table, so the handle is already complete.
            return SimJoinHandle { shared: Arc::clone(self), id };
        }
        let waker = Waker::from(Arc::new(TaskWaker { shared: Arc::downgrade(self), id }));
        st.tasks.insert(id, Task { group, future: Some(future), waker, queued: true, join_waker: None });
        st.ready.push(id);
        drop(st);
        SimJoinHandle { shared: Arc::clone(self), id }
    }
}

/// The waker of a task or of the `block_on` future: it puts the id in the ready set.
pub(super) struct TaskWaker {
    pub(super) shared: Weak<Shared>,
    pub(super) id: u64,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.wake(self.id);
        }
    }
}

/// What the scheduler decided to do next.
pub(super) enum Choice {
    /// Poll this task, whose future and waker have been taken out of the table.
    Task(u64, BoxFuture, Waker),
    /// Poll the `block_on` future.
    Main,
    /// The clock was advanced to the next timer and its wakers called.
    Advanced,
    /// There is work, but none of it starts at or before the limit.
    Blocked,
    /// No task is ready and no timer is pending.
    Idle,
}

/// Resets the `block_on` state when `block_on` returns or unwinds.
pub(super) struct BlockOnGuard<'a> {
    pub(super) shared: &'a Shared,
}

impl Drop for BlockOnGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.main = None;
        st.polling = false;
    }
}

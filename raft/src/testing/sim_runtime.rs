//! A deterministic, single-threaded executor with virtual time, for simulating a whole
//! cluster (several nodes, each running several tasks) in one thread.
//!
//! A [`Simulation`] owns the tasks, the virtual clock and the timers. [`SimRuntime`]
//! handles, obtained from it, implement [`Runtime`] and are what the code under test
//! uses to spawn, sleep and read the time. Nothing runs unless the harness drives the
//! simulation with [`Simulation::step`], [`Simulation::run_until`],
//! [`Simulation::run_for`] or [`Simulation::block_on`].
//!
//! # Determinism
//!
//! Every decision is derived from the seed passed to [`Simulation::new`]:
//!
//! - When several tasks are ready, the one to poll is drawn from a seeded
//!   [`fastrand::Rng`], so different seeds explore different interleavings and the same
//!   seed replays the same one.
//! - The clock is virtual. It only moves when the executor advances it: to the
//!   earliest pending timer when no task is ready, and by a small fixed *poll cost*
//!   after each poll (1 µs by default, see [`Simulation::set_poll_cost`]). The poll cost
//!   stands for CPU time; it guarantees that [`Simulation::run_until`] and
//!   [`Simulation::block_on`] return even if a task keeps re-waking itself forever. Set it
//!   to zero to make time advance only through timers.
//! - Timers are ordered by `(deadline, registration order)`; all timers sharing the
//!   earliest deadline fire together.
//! - Internal maps are ordered maps; nothing depends on hashing, threads or a real
//!   clock.
//!
//! Tasks stay deterministic as long as they use the simulation for time and randomness
//! (not `std::time`, thread-local random numbers, OS threads or real I/O). Wakers are
//! `Send + Sync`, so a waker may be called from another thread, but the simulation is
//! only deterministic if every wake happens on the thread driving it.
//!
//! # Groups
//!
//! Each task belongs to a group, a `u64` chosen by the harness (typically one per
//! simulated node). [`Simulation::kill_group`] drops every task of a group at once,
//! which is how a process crash is simulated.
//!
//! # Panics
//!
//! A panic inside a task propagates out of the call that polled it (`step`, `run_until`,
//! `run_for` or `block_on`); the task is removed first, so the simulation stays
//! consistent. The stepping methods must not be called from inside a simulated task
//! (they panic if they are).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::runtime::Runtime;
use crate::sync::lock;
use crate::types::Instant;

/// A spawned task's future.
type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The virtual time charged for each poll unless changed with
/// [`Simulation::set_poll_cost`].
const DEFAULT_POLL_COST: Duration = Duration::from_micros(1);

/// Mixed into the seed to derive the harness's random number generator, so that it is
/// independent of the scheduler's.
const HARNESS_SEED_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// One live task.
struct Task {
    /// The group the task was spawned in.
    group: u64,
    /// The task's future; `None` while it is being polled.
    future: Option<BoxFuture>,
    /// The waker handed to the task's future.
    waker: Waker,
    /// Whether the task is in the ready list.
    queued: bool,
    /// The waker of whoever awaits the task's [`SimJoinHandle`].
    join_waker: Option<Waker>,
}

/// The future passed to [`Simulation::block_on`], while it runs.
struct MainSlot {
    /// The id its waker carries.
    id: u64,
    /// Whether it has been woken since it was last polled.
    woken: bool,
}

/// Everything the executor knows, behind one lock.
struct State {
    /// The virtual clock.
    now: Instant,
    /// The scheduler's random number generator.
    rng: fastrand::Rng,
    /// Virtual time charged per poll.
    poll_cost: Duration,
    /// The next task id; ids are never reused.
    next_id: u64,
    /// The next timer sequence number.
    next_timer_seq: u64,
    /// Live tasks by id.
    tasks: BTreeMap<u64, Task>,
    /// Ids of live tasks that are ready to be polled, each at most once.
    ready: Vec<u64>,
    /// Pending timers by `(deadline, sequence)`.
    timers: BTreeMap<(Instant, u64), Waker>,
    /// The future being driven by `block_on`, if any.
    main: Option<MainSlot>,
    /// Whether a task or the `block_on` future is being polled right now.
    polling: bool,
    /// Set once the [`Simulation`] is dropped: new tasks are dropped at once.
    closed: bool,
}

impl State {
    /// Removes and returns the wakers of all timers due at or before `now`.
    fn take_due_timers(&mut self) -> Vec<Waker> {
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
    fn charge_poll(&mut self) {
        self.now = self.now.add(self.poll_cost);
    }
}

/// State shared by the simulation, its runtime handles, wakers, sleeps and join handles.
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A poisoned lock is still used: the state is kept consistent at
    /// every point where a panic can escape.
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Marks task `id` (or the `block_on` future) ready. A no-op for a dead task or one
    /// that is already ready.
    fn wake(&self, id: u64) {
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
    fn fire_due_timers(&self) {
        let due = self.lock().take_due_timers();
        for waker in due {
            waker.wake();
        }
    }

    /// Adds a task to `group` and makes it ready.
    fn spawn(self: &Arc<Self>, group: u64, future: BoxFuture) -> SimJoinHandle {
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
struct TaskWaker {
    shared: Weak<Shared>,
    id: u64,
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
enum Choice {
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
struct BlockOnGuard<'a> {
    shared: &'a Shared,
}

impl Drop for BlockOnGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.main = None;
        st.polling = false;
    }
}

/// A deterministic simulation: tasks, a virtual clock and timers, driven by the caller.
///
/// See the [module documentation](self) for the scheduling and time model. Dropping
/// the simulation drops every remaining task; runtime handles that outlive it drop
/// whatever they are asked to spawn.
pub struct Simulation {
    shared: Arc<Shared>,
    seed: u64,
    harness_rng: Mutex<fastrand::Rng>,
}

impl Simulation {
    /// A simulation at virtual time zero, with no tasks, whose every random decision is
    /// derived from `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State {
            now: Instant::ZERO,
            rng: fastrand::Rng::with_seed(seed),
            poll_cost: DEFAULT_POLL_COST,
            next_id: 0,
            next_timer_seq: 0,
            tasks: BTreeMap::new(),
            ready: Vec::new(),
            timers: BTreeMap::new(),
            main: None,
            polling: false,
            closed: false,
        };
        Simulation {
            shared: Arc::new(Shared { state: Mutex::new(state) }),
            seed,
            harness_rng: Mutex::new(fastrand::Rng::with_seed(seed ^ HARNESS_SEED_MIX)),
        }
    }

    /// The seed the simulation was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A runtime handle whose tasks belong to group `0`.
    pub fn runtime(&self) -> SimRuntime {
        self.runtime_in_group(0)
    }

    /// A runtime handle whose tasks (including those spawned through its clones) belong
    /// to `group`.
    pub fn runtime_in_group(&self, group: u64) -> SimRuntime {
        SimRuntime { shared: Arc::clone(&self.shared), group }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.shared.lock().now
    }

    /// The virtual time charged after each poll.
    pub fn poll_cost(&self) -> Duration {
        self.shared.lock().poll_cost
    }

    /// Sets the virtual time charged after each poll (1 µs by default). With zero, time
    /// only advances through timers, and a task that re-wakes itself forever keeps
    /// [`run_until`](Self::run_until) and [`block_on`](Self::block_on) from returning.
    pub fn set_poll_cost(&self, cost: Duration) {
        self.shared.lock().poll_cost = cost;
    }

    /// Kills every live task of `group`, simulating a crash of the process that ran
    /// them.
    ///
    /// Their futures are dropped without being polled again (which also cancels the
    /// timers they were sleeping on) and their [`SimJoinHandle`]s resolve. A task being
    /// polled when this is called (the caller itself) is dropped as soon as its poll
    /// returns. Tasks spawned in the group later run normally.
    pub fn kill_group(&self, group: u64) {
        let mut futures = Vec::new();
        let mut joiners = Vec::new();
        {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            let ids: Vec<u64> = st.tasks.iter().filter(|(_, t)| t.group == group).map(|(&id, _)| id).collect();
            for id in ids {
                if let Some(task) = st.tasks.remove(&id) {
                    futures.extend(task.future);
                    joiners.extend(task.join_waker);
                }
            }
            let tasks = &st.tasks;
            st.ready.retain(|id| tasks.contains_key(id));
        }
        // Dropping a future may wake other tasks or cancel timers, which takes the lock.
        drop(futures);
        for waker in joiners {
            waker.wake();
        }
    }

    /// The number of live tasks, in all groups.
    pub fn live_tasks(&self) -> usize {
        self.shared.lock().tasks.len()
    }

    /// The number of live tasks in `group`.
    pub fn live_tasks_in_group(&self, group: u64) -> usize {
        self.shared.lock().tasks.values().filter(|t| t.group == group).count()
    }

    /// The number of timers that have not fired yet.
    pub fn pending_timers(&self) -> usize {
        self.shared.lock().timers.len()
    }

    /// Does one unit of work: polls one ready task, chosen at random among the ready
    /// ones; or, if none is ready, advances the clock to the earliest pending timer and
    /// fires every timer with that deadline. Returns `false`, doing nothing, when no task
    /// is ready and no timer is pending.
    ///
    /// # Panics
    ///
    /// If the polled task panics (the panic is propagated), or if called from inside a
    /// simulated task.
    pub fn step(&self) -> bool {
        match self.choose(None, false) {
            Choice::Task(id, future, waker) => {
                self.run_task(id, future, waker);
                true
            }
            Choice::Advanced | Choice::Main | Choice::Blocked => true,
            Choice::Idle => false,
        }
    }

    /// Runs every task whose work starts at or before `deadline`, firing the timers due
    /// by then, and then sets the clock to `deadline`.
    ///
    /// With a non-zero poll cost, the last poll may end past `deadline`; the clock is
    /// then left where that poll put it (at most one poll cost past `deadline`), since
    /// it never goes backwards. A `deadline` before `now()` does nothing.
    ///
    /// # Panics
    ///
    /// If a polled task panics, or if called from inside a simulated task.
    pub fn run_until(&self, deadline: Instant) {
        loop {
            match self.choose(Some(deadline), false) {
                Choice::Task(id, future, waker) => self.run_task(id, future, waker),
                Choice::Advanced | Choice::Main => {}
                Choice::Blocked | Choice::Idle => break,
            }
        }
        self.advance_to(deadline);
    }

    /// [`run_until`](Self::run_until) `now() + d`.
    pub fn run_for(&self, d: Duration) {
        self.run_until(self.now().add(d));
    }

    /// Polls `fut` on the calling thread, interleaved with the simulated tasks, until it
    /// completes; returns its output.
    ///
    /// Returns `None` if virtual time would have to pass `now() + limit` (the clock is
    /// then left at that point, as by [`run_until`](Self::run_until)), or if nothing can
    /// make progress any more: no task is ready, no timer is pending and `fut` is not
    /// woken (the clock is then left where it is).
    ///
    /// `fut` takes part in the random choice of the next thing to poll like any task.
    ///
    /// # Panics
    ///
    /// If `fut` or a polled task panics, if called from inside a simulated task, or if
    /// called from inside another `block_on`.
    pub fn block_on<F: Future>(&self, fut: F, limit: Duration) -> Option<F::Output> {
        let deadline = self.now().add(limit);
        let waker = {
            let mut st = self.shared.lock();
            assert!(!st.polling, "Simulation::block_on called from inside a simulated task");
            assert!(st.main.is_none(), "Simulation::block_on is not reentrant");
            let id = st.next_id;
            st.next_id += 1;
            st.main = Some(MainSlot { id, woken: true });
            Waker::from(Arc::new(TaskWaker { shared: Arc::downgrade(&self.shared), id }))
        };
        let _guard = BlockOnGuard { shared: &self.shared };
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        loop {
            match self.choose(Some(deadline), true) {
                Choice::Main => {
                    let out = fut.as_mut().poll(&mut cx);
                    {
                        let mut st = self.shared.lock();
                        st.polling = false;
                        st.charge_poll();
                    }
                    if let Poll::Ready(output) = out {
                        return Some(output);
                    }
                }
                Choice::Task(id, future, waker) => self.run_task(id, future, waker),
                Choice::Advanced => {}
                Choice::Blocked => {
                    self.advance_to(deadline);
                    return None;
                }
                Choice::Idle => return None,
            }
        }
    }

    /// A random `u64` from the harness's generator (derived from the seed, independent
    /// of the scheduler's choices).
    pub fn random_u64(&self) -> u64 {
        self.with_rng(|rng| rng.u64(..))
    }

    /// Calls `f` with the harness's random number generator (derived from the seed,
    /// independent of the scheduler's choices), for the harness's own random decisions.
    ///
    /// # Panics
    ///
    /// If `f` calls `with_rng` or [`random_u64`](Self::random_u64) again.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        let mut rng = match self.harness_rng.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => panic!("Simulation::with_rng is not reentrant"),
        };
        f(&mut rng)
    }

    /// Moves the clock forward to `t` (never backwards) and fires the timers due by then.
    fn advance_to(&self, t: Instant) {
        {
            let mut st = self.shared.lock();
            st.now = st.now.max(t);
        }
        self.shared.fire_due_timers();
    }

    /// Decides what to do next. Work may start at or before `limit`; `with_main` lets the
    /// `block_on` future be chosen.
    fn choose(&self, limit: Option<Instant>, with_main: bool) -> Choice {
        // Timers can be due without a time jump when polls cost time.
        self.shared.fire_due_timers();
        let mut fired = Vec::new();
        let choice = {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            assert!(!st.polling, "the simulation must not be driven from inside a simulated task");
            let main_ready = with_main && st.main.as_ref().is_some_and(|m| m.woken);
            let candidates = st.ready.len() + usize::from(main_ready);
            let may_start = limit.is_none_or(|l| st.now <= l);
            if candidates > 0 && may_start {
                let pick = st.rng.usize(..candidates);
                if pick == st.ready.len() {
                    if let Some(main) = st.main.as_mut() {
                        main.woken = false;
                    }
                    st.polling = true;
                    Choice::Main
                } else {
                    let id = st.ready.swap_remove(pick);
                    // The ready list only holds live tasks that are not being polled, so
                    // the lookup succeeds; if it did not, dropping the id is still progress.
                    match st.tasks.get_mut(&id) {
                        Some(task) => {
                            task.queued = false;
                            match task.future.take() {
                                Some(future) => {
                                    st.polling = true;
                                    Choice::Task(id, future, task.waker.clone())
                                }
                                None => Choice::Advanced,
                            }
                        }
                        None => Choice::Advanced,
                    }
                }
            } else if candidates > 0 {
                Choice::Blocked
            } else if let Some((&(t, _), _)) = st.timers.first_key_value() {
                if limit.is_some_and(|l| t > l) {
                    Choice::Blocked
                } else {
                    st.now = st.now.max(t);
                    fired = st.take_due_timers();
                    Choice::Advanced
                }
            } else {
                Choice::Idle
            }
        };
        for waker in fired {
            waker.wake();
        }
        choice
    }

    /// Polls task `id` once, without holding the lock, then puts it back, or removes it
    /// if it completed, panicked or was killed meanwhile.
    fn run_task(&self, id: u64, mut future: BoxFuture, waker: Waker) {
        let mut cx = Context::from_waker(&waker);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        let mut leftover = None;
        let mut joiner = None;
        {
            let mut guard = self.shared.lock();
            let st = &mut *guard;
            st.polling = false;
            st.charge_poll();
            if matches!(outcome, Ok(Poll::Pending)) {
                match st.tasks.get_mut(&id) {
                    Some(task) => task.future = Some(future),
                    // Killed while it was being polled.
                    None => leftover = Some(future),
                }
            } else {
                if let Some(task) = st.tasks.remove(&id) {
                    joiner = task.join_waker;
                }
                st.ready.retain(|&r| r != id);
                leftover = Some(future);
            }
        }
        drop(leftover);
        if let Some(joiner) = joiner {
            joiner.wake();
        }
        if let Err(payload) = outcome {
            panic::resume_unwind(payload);
        }
    }
}

impl Drop for Simulation {
    fn drop(&mut self) {
        loop {
            let (tasks, timers) = {
                let mut st = self.shared.lock();
                st.closed = true;
                st.ready.clear();
                (std::mem::take(&mut st.tasks), std::mem::take(&mut st.timers))
            };
            if tasks.is_empty() && timers.is_empty() {
                break;
            }
            // Dropped without the lock: futures may cancel timers or wake tasks.
            drop(tasks);
            drop(timers);
        }
    }
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Simulation")
            .field("seed", &self.seed)
            .field("now", &st.now)
            .field("live_tasks", &st.tasks.len())
            .field("ready", &st.ready.len())
            .field("pending_timers", &st.timers.len())
            .finish()
    }
}

/// The [`Runtime`] of a [`Simulation`]: spawns tasks into it, sleeps on its virtual
/// clock and reads it.
///
/// Each handle spawns into one group (see [`Simulation::runtime_in_group`]); clones keep
/// the group. Handles may be used from inside simulated tasks.
#[derive(Clone)]
pub struct SimRuntime {
    shared: Arc<Shared>,
    group: u64,
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
}

/// A handle to a simulated task. It resolves when the task completes, panics or is
/// killed with [`Simulation::kill_group`]; dropping it detaches the task.
pub struct SimJoinHandle {
    shared: Arc<Shared>,
    id: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::channel::{mpsc, oneshot};
    use futures::{SinkExt, StreamExt};

    fn at(d: Duration) -> Instant {
        Instant::ZERO.add(d)
    }

    /// Completes on its second poll, after waking itself once.
    struct YieldNow(bool);

    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn yield_now() -> YieldNow {
        YieldNow(false)
    }

    /// The order in which four tasks, each yielding five times, get to run.
    fn interleaving(seed: u64) -> Vec<u32> {
        let sim = Simulation::new(seed);
        let rt = sim.runtime();
        let trace = Arc::new(Mutex::new(Vec::new()));
        for name in 0..4u32 {
            let trace = Arc::clone(&trace);
            drop(rt.spawn(async move {
                for _ in 0..5 {
                    lock(&trace).push(name);
                    yield_now().await;
                }
            }));
        }
        while sim.step() {}
        assert_eq!(sim.live_tasks(), 0);
        let out = lock(&trace).clone();
        out
    }

    #[test]
    fn same_seed_replays_the_same_interleaving() {
        for seed in [0, 1, 42, u64::MAX] {
            let first = interleaving(seed);
            assert_eq!(first.len(), 20);
            assert_eq!(first, interleaving(seed));
        }
    }

    #[test]
    fn different_seeds_can_choose_different_interleavings() {
        let base = interleaving(1);
        assert!((2..20).any(|seed| interleaving(seed) != base));
    }

    #[test]
    fn harness_rng_is_deterministic_per_seed() {
        let a = Simulation::new(7);
        let b = Simulation::new(7);
        let c = Simulation::new(8);
        let xs: Vec<u64> = (0..8).map(|_| a.random_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.random_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.random_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_eq!(a.with_rng(|r| r.u32(..)), b.with_rng(|r| r.u32(..)));
    }

    #[test]
    fn timers_fire_in_virtual_time_order() {
        let sim = Simulation::new(3);
        sim.set_poll_cost(Duration::ZERO);
        let rt = sim.runtime();
        let fired = Arc::new(Mutex::new(Vec::new()));
        for ms in [50u64, 10, 40, 20, 30] {
            let (rt2, fired) = (rt.clone(), Arc::clone(&fired));
            drop(rt.spawn(async move {
                rt2.sleep_until(at(Duration::from_millis(ms))).await;
                lock(&fired).push((ms, rt2.now()));
            }));
        }
        while sim.step() {}
        let fired = lock(&fired).clone();
        let expected: Vec<_> = [10u64, 20, 30, 40, 50].iter().map(|&ms| (ms, at(Duration::from_millis(ms)))).collect();
        assert_eq!(fired, expected);
        assert_eq!(sim.now(), at(Duration::from_millis(50)));
    }

    #[test]
    fn hour_long_sleep_finishes_instantly_in_real_time() {
        let sim = Simulation::new(5);
        let rt = sim.runtime();
        let started = std::time::Instant::now();
        let hour = Duration::from_secs(3600);
        let woke_at = sim.block_on(
            async {
                rt.sleep_until(rt.now().add(hour)).await;
                rt.now()
            },
            2 * hour,
        );
        assert_eq!(woke_at, Some(at(hour)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn sleep_in_the_past_completes_at_once() {
        let sim = Simulation::new(5);
        sim.run_for(Duration::from_secs(1));
        let rt = sim.runtime();
        assert_eq!(sim.block_on(rt.sleep_until(Instant::ZERO), Duration::ZERO), Some(()));
        assert_eq!(sim.pending_timers(), 0);
    }

    #[test]
    fn run_until_stops_before_later_timers_and_sets_the_clock() {
        let sim = Simulation::new(9);
        sim.set_poll_cost(Duration::ZERO);
        let rt = sim.runtime();
        let count = Arc::new(AtomicUsize::new(0));
        for s in [1u64, 2, 3] {
            let (rt2, count) = (rt.clone(), Arc::clone(&count));
            drop(rt.spawn(async move {
                rt2.sleep_until(at(Duration::from_secs(s))).await;
                count.fetch_add(1, Ordering::SeqCst);
            }));
        }
        sim.run_until(at(Duration::from_secs(2)));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert_eq!(sim.now(), at(Duration::from_secs(2)));
        assert_eq!(sim.pending_timers(), 1);
        sim.run_for(Duration::from_millis(500));
        assert_eq!(sim.now(), at(Duration::from_millis(2500)));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        sim.run_for(Duration::from_secs(1));
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(sim.live_tasks(), 0);
    }

    #[test]
    fn poll_cost_bounds_a_task_that_never_sleeps() {
        let sim = Simulation::new(11);
        let rt = sim.runtime();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        drop(rt.spawn(async move {
            while !stop2.load(Ordering::SeqCst) {
                yield_now().await;
            }
        }));
        sim.run_for(Duration::from_millis(1));
        assert!(sim.now() >= at(Duration::from_millis(1)));
        assert!(sim.now() <= at(Duration::from_millis(1)).add(sim.poll_cost()));
        stop.store(true, Ordering::SeqCst);
        sim.run_for(Duration::from_millis(1));
        assert_eq!(sim.live_tasks(), 0);
    }

    #[test]
    fn kill_group_cancels_its_tasks_and_timers_and_spares_other_groups() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }

        let sim = Simulation::new(13);
        let finished = [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
        let dropped = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for (group, done) in (1u64..).zip(&finished) {
            let rt = sim.runtime_in_group(group);
            assert_eq!(rt.clone().group(), group);
            let done = Arc::clone(done);
            let guard = (group == 1).then(|| SetOnDrop(Arc::clone(&dropped)));
            let rt2 = rt.clone();
            handles.push(rt.spawn(async move {
                let _guard = guard;
                // A child spawned through a clone of the handle stays in the group.
                drop(rt2.spawn(std::future::pending()));
                rt2.sleep_until(at(Duration::from_secs(10))).await;
                done.store(true, Ordering::SeqCst);
            }));
        }
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.live_tasks_in_group(1), 2);
        assert_eq!(sim.live_tasks_in_group(2), 2);
        assert_eq!(sim.pending_timers(), 2);

        sim.kill_group(1);
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(sim.live_tasks_in_group(1), 0);
        assert_eq!(sim.live_tasks_in_group(2), 2);
        assert_eq!(sim.pending_timers(), 1);

        let mut handles = handles.into_iter();
        let killed = handles.next().expect("two tasks were spawned");
        let survivor = handles.next().expect("two tasks were spawned");
        // The killed task's handle resolves at once.
        assert_eq!(sim.block_on(killed, Duration::ZERO), Some(()));
        assert_eq!(sim.block_on(survivor, Duration::from_secs(20)), Some(()));
        assert!(!finished[0].load(Ordering::SeqCst));
        assert!(finished[1].load(Ordering::SeqCst));
        // Only the other group's pending child is left, and the killed timer never fired.
        assert_eq!(sim.live_tasks(), 1);
        assert_eq!(sim.live_tasks_in_group(2), 1);
        assert_eq!(sim.pending_timers(), 0);
        // The survivor woke at its deadline; only poll costs were added after it.
        assert!(sim.now() >= at(Duration::from_secs(10)));
        assert!(sim.now() <= at(Duration::from_secs(10)).add(Duration::from_micros(10)));

        // A group can be restarted after a crash.
        let restarted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&restarted);
        drop(sim.runtime_in_group(1).spawn(async move { flag.store(true, Ordering::SeqCst) }));
        sim.run_for(Duration::from_secs(1));
        assert!(restarted.load(Ordering::SeqCst));
    }

    #[test]
    fn join_handle_of_a_killed_task_resolves() {
        let sim = Simulation::new(17);
        let victim = sim.runtime_in_group(4).spawn(std::future::pending());
        sim.run_for(Duration::from_secs(1));
        sim.kill_group(4);
        assert_eq!(sim.block_on(victim, Duration::ZERO), Some(()));
    }

    #[test]
    fn killing_a_group_wakes_tasks_waiting_on_it() {
        let sim = Simulation::new(19);
        let (tx, rx) = oneshot::channel::<()>();
        drop(sim.runtime_in_group(1).spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        }));
        sim.run_for(Duration::from_secs(1));
        sim.kill_group(1);
        // The sender was dropped with the killed task, so the receiver sees cancellation.
        assert_eq!(sim.block_on(rx, Duration::from_secs(1)), Some(Err(oneshot::Canceled)));
    }

    #[test]
    fn block_on_returns_the_output() {
        let sim = Simulation::new(23);
        let rt = sim.runtime();
        let out = sim.block_on(
            async {
                rt.sleep_until(at(Duration::from_millis(5))).await;
                40 + 2
            },
            Duration::from_secs(1),
        );
        assert_eq!(out, Some(42));
    }

    #[test]
    fn block_on_returns_none_at_the_limit() {
        let sim = Simulation::new(29);
        let rt = sim.runtime();
        let out = sim.block_on(rt.sleep_until(at(Duration::from_secs(10))), Duration::from_secs(3));
        assert_eq!(out, None);
        assert_eq!(sim.now(), at(Duration::from_secs(3)));
        // The abandoned sleep was dropped, so its timer is gone.
        assert_eq!(sim.pending_timers(), 0);
    }

    #[test]
    fn block_on_returns_none_when_nothing_can_make_progress() {
        let sim = Simulation::new(31);
        let (_tx, rx) = oneshot::channel::<u8>();
        assert_eq!(sim.block_on(rx, Duration::from_secs(3600)), None);
        // Only the cost of polling the receiver once was charged: time did not jump.
        assert_eq!(sim.now(), at(sim.poll_cost()));
    }

    #[test]
    fn tasks_spawned_from_tasks_run() {
        let sim = Simulation::new(37);
        let rt = sim.runtime_in_group(6);
        let count = Arc::new(AtomicUsize::new(0));
        let (rt2, count2) = (rt.clone(), Arc::clone(&count));
        let root = rt.spawn(async move {
            let mut children = Vec::new();
            for _ in 0..3 {
                let (rt3, count3) = (rt2.clone(), Arc::clone(&count2));
                children.push(rt2.spawn(async move {
                    let count4 = Arc::clone(&count3);
                    rt3.spawn(async move {
                        count4.fetch_add(1, Ordering::SeqCst);
                    })
                    .await;
                    count3.fetch_add(1, Ordering::SeqCst);
                }));
            }
            for child in children {
                child.await;
            }
        });
        assert_eq!(sim.block_on(root, Duration::from_secs(1)), Some(()));
        assert_eq!(count.load(Ordering::SeqCst), 6);
        assert_eq!(sim.live_tasks_in_group(6), 0);
    }

    #[test]
    fn join_handle_waits_for_completion() {
        let sim = Simulation::new(41);
        let rt = sim.runtime();
        let done = Arc::new(AtomicBool::new(false));
        let (rt2, done2) = (rt.clone(), Arc::clone(&done));
        let handle = rt.spawn(async move {
            rt2.sleep_until(at(Duration::from_secs(2))).await;
            done2.store(true, Ordering::SeqCst);
        });
        let done3 = Arc::clone(&done);
        let waited = sim.block_on(
            async move {
                handle.await;
                done3.load(Ordering::SeqCst)
            },
            Duration::from_secs(5),
        );
        assert_eq!(waited, Some(true));
        assert!(sim.now() >= at(Duration::from_secs(2)));
    }

    #[test]
    fn dropping_a_join_handle_detaches_the_task() {
        let sim = Simulation::new(43);
        let done = Arc::new(AtomicBool::new(false));
        let done2 = Arc::clone(&done);
        drop(sim.runtime().spawn(async move { done2.store(true, Ordering::SeqCst) }));
        while sim.step() {}
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn oneshot_wakes_a_task_from_another_task() {
        let sim = Simulation::new(47);
        let rt = sim.runtime();
        let (tx, rx) = oneshot::channel();
        let rt2 = rt.clone();
        drop(rt.spawn(async move {
            rt2.sleep_until(at(Duration::from_secs(5))).await;
            let _ = tx.send(rt2.now());
        }));
        let rt3 = rt.clone();
        let receiver = rt.spawn(async move {
            let sent_at = rx.await;
            assert_eq!(sent_at, Ok(at(Duration::from_secs(5))));
            assert!(rt3.now() >= at(Duration::from_secs(5)));
        });
        assert_eq!(sim.block_on(receiver, Duration::from_secs(10)), Some(()));
    }

    #[test]
    fn mpsc_wakes_a_task_from_another_task() {
        let sim = Simulation::new(53);
        let rt = sim.runtime();
        let (mut tx, mut rx) = mpsc::channel::<u32>(1);
        let rt2 = rt.clone();
        drop(rt.spawn(async move {
            for i in 0..10 {
                rt2.sleep_until(rt2.now().add(Duration::from_millis(100))).await;
                if tx.send(i).await.is_err() {
                    return;
                }
            }
        }));
        let (out_tx, out_rx) = oneshot::channel();
        drop(rt.spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.next().await {
                got.push(v);
            }
            let _ = out_tx.send(got);
        }));
        let got = sim.block_on(out_rx, Duration::from_secs(10));
        assert_eq!(got, Some(Ok((0..10).collect::<Vec<_>>())));
        assert_eq!(sim.live_tasks(), 0);
    }

    #[test]
    fn waking_twice_before_a_poll_polls_once() {
        struct Parked {
            polls: Arc<AtomicUsize>,
            waker: Arc<Mutex<Option<Waker>>>,
        }
        impl Future for Parked {
            type Output = ();
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                self.polls.fetch_add(1, Ordering::SeqCst);
                *lock(&self.waker) = Some(cx.waker().clone());
                Poll::Pending
            }
        }

        let sim = Simulation::new(59);
        let polls = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Mutex::new(None));
        drop(sim.runtime().spawn(Parked { polls: Arc::clone(&polls), waker: Arc::clone(&slot) }));
        while sim.step() {}
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        let waker = lock(&slot).clone().expect("the task stored its waker");
        waker.wake_by_ref();
        waker.wake_by_ref();
        while sim.step() {}
        assert_eq!(polls.load(Ordering::SeqCst), 2);

        // Waking a dead task does nothing.
        sim.kill_group(0);
        waker.wake_by_ref();
        assert!(!sim.step());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_panicking_task_propagates_out_of_step() {
        let sim = Simulation::new(61);
        let rt = sim.runtime();
        let handle = rt.spawn(async { panic!("boom") });
        let caught = panic::catch_unwind(AssertUnwindSafe(|| while sim.step() {}));
        assert!(caught.is_err());
        assert_eq!(sim.live_tasks(), 0);
        // The simulation is still usable, and the handle resolves.
        assert_eq!(sim.block_on(handle, Duration::from_millis(1)), Some(()));
        let ok = rt.spawn(async {});
        assert_eq!(sim.block_on(ok, Duration::from_millis(1)), Some(()));
    }

    #[test]
    fn sim_runtime_works_through_the_runtime_trait() {
        async fn sleep_and_spawn<R: Runtime>(rt: R) -> Instant {
            let start = rt.now();
            rt.sleep_until(start.add(Duration::from_millis(250))).await;
            let rt2 = rt.clone();
            rt.spawn(async move { rt2.sleep_until(rt2.now().add(Duration::from_millis(250))).await }).await;
            rt.now()
        }

        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<SimRuntime>();
        assert_send_sync::<Simulation>();

        let sim = Simulation::new(67);
        sim.set_poll_cost(Duration::ZERO);
        let end = sim.block_on(sleep_and_spawn(sim.runtime()), Duration::from_secs(1));
        assert_eq!(end, Some(at(Duration::from_millis(500))));
    }

    #[test]
    fn dropping_the_simulation_drops_its_tasks() {
        let dropped = Arc::new(AtomicBool::new(false));
        let rt;
        {
            let sim = Simulation::new(71);
            rt = sim.runtime();
            let flag = Arc::clone(&dropped);
            struct SetOnDrop(Arc<AtomicBool>);
            impl Drop for SetOnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let rt2 = rt.clone();
            drop(rt.spawn(async move {
                let _guard = SetOnDrop(flag);
                rt2.sleep_until(at(Duration::from_secs(1))).await;
            }));
            sim.run_for(Duration::from_millis(1));
        }
        assert!(dropped.load(Ordering::SeqCst));
        // Spawning after the simulation is gone drops the future; the handle is complete.
        let handle = rt.spawn(async {});
        assert!(futures::FutureExt::now_or_never(handle).is_some());
    }
}

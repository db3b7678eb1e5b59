//! A deterministic, single-threaded executor with virtual time, for simulating a whole
//! cluster (several nodes, each running several tasks) in one thread.
//!
//! A [`Simulation`] owns the tasks, the virtual clock and the timers. [`SimRuntime`]
//! handles, obtained from it, implement [`Runtime`](crate::Runtime) and are what the code under test
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
//! # Per-node clocks
//!
//! [`DriftRuntime`] gives one node a clock of its own ([`DriftClock`]): it runs fast or
//! slow by a fixed rate and can jump forward, while spawning into the same simulation.
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

mod drift;
mod handles;
mod shared;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::types::Instant;

pub use drift::{rate_ppm_for, DriftClock, DriftRuntime, DriftSleep, RATE_ONE_PPM};
pub use handles::{SimJoinHandle, SimRuntime, SimSleep};
use shared::{BlockOnGuard, BoxFuture, Choice, MainSlot, Shared, State, TaskWaker};

/// The virtual time charged for each poll unless changed with
/// [`Simulation::set_poll_cost`].
const DEFAULT_POLL_COST: Duration = Duration::from_micros(1);

/// Mixed into the seed to derive the harness's random number generator, so that it is
/// independent of the scheduler's.
const HARNESS_SEED_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

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

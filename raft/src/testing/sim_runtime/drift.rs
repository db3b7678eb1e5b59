//! A node's own clock on the simulation: [`DriftClock`] runs at a fixed rate relative to
//! virtual time and can jump forward; [`DriftRuntime`] is a [`SimRuntime`] that reads and
//! sleeps on such a clock.
//!
//! # Time model
//!
//! A clock with rate `r` (in parts per million of virtual time, see
//! [`DriftClock::rate_ppm`]) reads `local(v) = a_local + (v - a_virtual) * r / 10^6` at
//! virtual time `v`, where `(a_virtual, a_local)` is its anchor: where it was when it was
//! created or last jumped. A sleep until local instant `t` therefore lasts `d / rate` of
//! virtual time for `d = t - now()`, and ends at the first virtual instant at which the
//! clock reads `t` or more, so that the [`Runtime`] contract holds exactly (integer
//! arithmetic, no rounding below it).
//!
//! A clock only goes forward: it models a monotonic clock, which never goes backwards,
//! but may run fast or slow and may leap ahead (a virtual machine resumed after a pause,
//! a clock slewed in a burst). [`DriftClock::jump`] moves it forward; a sleep whose
//! deadline the jump passes completes at once, so timers computed before the jump fire
//! early in virtual time, as on a real host.
//!
//! At rate 1 without jumps the clock reads exactly the virtual time and every sleep
//! registers the same virtual timer, in the same order, as the plain [`SimRuntime`]:
//! runs replay exactly as on the simulation's own clock.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::{SimJoinHandle, SimRuntime, SimSleep};
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::types::Instant;

/// Rate 1: one nanosecond of the clock per nanosecond of virtual time.
pub const RATE_ONE_PPM: u64 = 1_000_000;

/// The clock of one simulated node. Cheap to share: the node's runtime handles and the
/// harness (which makes it jump) hold the same [`Arc`].
pub struct DriftClock {
    state: Mutex<ClockState>,
}

struct ClockState {
    rate_ppm: u64,
    anchor_virtual: Instant,
    anchor_local: Instant,
    /// How many jumps the clock made; a sleep computed before the last jump recomputes
    /// its virtual deadline.
    jumps: u64,
    /// The wakers of pending sleeps, woken when the clock jumps.
    sleepers: BTreeMap<u64, Waker>,
    next_sleeper: u64,
}

impl DriftClock {
    /// A clock that reads `at` at virtual time `at` and then runs at `rate_ppm` parts
    /// per million of virtual time (clamped to at least 1, so it always moves forward).
    pub fn new(at: Instant, rate_ppm: u64) -> Self {
        DriftClock {
            state: Mutex::new(ClockState {
                rate_ppm: rate_ppm.max(1),
                anchor_virtual: at,
                anchor_local: at,
                jumps: 0,
                sleepers: BTreeMap::new(),
                next_sleeper: 0,
            }),
        }
    }

    /// A clock whose rate is `1 + error` (so `error = 0.05` runs 5% fast, `-0.05` 5%
    /// slow), starting at `at`. `error` is clamped to `[-0.9, 0.9]`; NaN counts as 0.
    pub fn with_error(at: Instant, error: f64) -> Self {
        Self::new(at, rate_ppm_for(error))
    }

    /// The rate in parts per million of virtual time ([`RATE_ONE_PPM`] is exact).
    pub fn rate_ppm(&self) -> u64 {
        lock(&self.state).rate_ppm
    }

    /// The relative rate error: `rate - 1`, e.g. `0.05` for a clock 5% fast.
    pub fn rate_error(&self) -> f64 {
        (self.rate_ppm() as f64 - RATE_ONE_PPM as f64) / RATE_ONE_PPM as f64
    }

    /// How many times the clock jumped.
    pub fn jumps(&self) -> u64 {
        lock(&self.state).jumps
    }

    /// What the clock reads at virtual time `virtual_now`.
    pub fn local(&self, virtual_now: Instant) -> Instant {
        lock(&self.state).local(virtual_now)
    }

    /// The first virtual instant, not before `virtual_now`, at which the clock reads
    /// `local` or more (the far future saturates).
    pub fn virtual_at(&self, virtual_now: Instant, local: Instant) -> Instant {
        lock(&self.state).virtual_at(local).max(virtual_now)
    }

    /// Moves the clock forward by `d` at virtual time `virtual_now`; it then goes on at
    /// the same rate. Every pending sleep is woken, to complete if its deadline has been
    /// passed or to wait for its new virtual deadline.
    pub fn jump(&self, virtual_now: Instant, d: Duration) {
        let sleepers = {
            let mut st = lock(&self.state);
            let local = st.local(virtual_now).add(d);
            st.anchor_virtual = virtual_now;
            st.anchor_local = local;
            st.jumps += 1;
            std::mem::take(&mut st.sleepers)
        };
        for waker in sleepers.into_values() {
            waker.wake();
        }
    }
}

impl ClockState {
    fn local(&self, v: Instant) -> Instant {
        let elapsed = u128::from(v.as_nanos().saturating_sub(self.anchor_virtual.as_nanos()));
        let scaled = elapsed * u128::from(self.rate_ppm) / u128::from(RATE_ONE_PPM);
        Instant::from_nanos(self.anchor_local.as_nanos().saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX)))
    }

    fn virtual_at(&self, local: Instant) -> Instant {
        let ahead = u128::from(local.as_nanos().saturating_sub(self.anchor_local.as_nanos()));
        let rate = u128::from(self.rate_ppm);
        let needed = (ahead * u128::from(RATE_ONE_PPM)).div_ceil(rate);
        Instant::from_nanos(self.anchor_virtual.as_nanos().saturating_add(u64::try_from(needed).unwrap_or(u64::MAX)))
    }
}

impl fmt::Debug for DriftClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("DriftClock").field("rate_ppm", &st.rate_ppm).field("jumps", &st.jumps).finish_non_exhaustive()
    }
}

/// The rate in parts per million for a relative error (see [`DriftClock::with_error`]).
pub fn rate_ppm_for(error: f64) -> u64 {
    let error = if error.is_nan() { 0.0 } else { error.clamp(-0.9, 0.9) };
    // In range by the clamp: between 0.1 and 1.9 million.
    (RATE_ONE_PPM as f64 * (1.0 + error)).round() as u64
}

/// A [`SimRuntime`] whose tasks read and sleep on a [`DriftClock`]: what one simulated
/// node's driver gets. Spawning is unchanged (same simulation, same group).
#[derive(Clone)]
pub struct DriftRuntime {
    sim: SimRuntime,
    clock: Arc<DriftClock>,
}

impl DriftRuntime {
    /// `sim`'s tasks, on `clock`.
    pub fn new(sim: SimRuntime, clock: Arc<DriftClock>) -> Self {
        DriftRuntime { sim, clock }
    }

    /// The clock this runtime reads.
    pub fn clock(&self) -> &Arc<DriftClock> {
        &self.clock
    }
}

impl fmt::Debug for DriftRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriftRuntime").field("sim", &self.sim).field("clock", &self.clock).finish()
    }
}

impl Runtime for DriftRuntime {
    type JoinHandle = SimJoinHandle;
    type Sleep = DriftSleep;

    fn spawn<F>(&self, fut: F) -> SimJoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.sim.spawn(fut)
    }

    /// A sleep until the clock reads `deadline`.
    fn sleep_until(&self, deadline: Instant) -> DriftSleep {
        DriftSleep { sim: self.sim.clone(), clock: self.clock.clone(), deadline, timer: None, sleeper: None }
    }

    fn now(&self) -> Instant {
        self.clock.local(self.sim.now())
    }

    /// The virtual clock (this runtime's view of it), so that session expiry in a
    /// simulation is as deterministic as the rest of it.
    fn wall_clock_ms(&self) -> u64 {
        self.now().as_nanos() / 1_000_000
    }
}

/// The future of [`DriftRuntime::sleep_until`]: completes once the node's clock reads its
/// deadline. It waits on a virtual timer at the matching virtual instant, recomputed
/// after a jump of the clock; dropping it cancels the timer.
pub struct DriftSleep {
    sim: SimRuntime,
    clock: Arc<DriftClock>,
    deadline: Instant,
    /// The virtual timer, with the clock's jump count it was computed for.
    timer: Option<(u64, SimSleep)>,
    /// The key of this sleep's waker in the clock's sleepers, once registered.
    sleeper: Option<u64>,
}

impl DriftSleep {
    /// The instant, on the node's clock, this sleep completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn unregister(&mut self) {
        if let Some(key) = self.sleeper.take() {
            let old = lock(&self.clock.state).sleepers.remove(&key);
            drop(old);
        }
    }
}

impl Future for DriftSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let virtual_now = this.sim.now();
        let (local, jumps, old) = {
            let mut st = lock(&this.clock.state);
            let local = st.local(virtual_now);
            // Registering a waker schedules nothing: until the clock jumps, the virtual
            // timer below is all that wakes the task, as with a plain virtual sleep.
            let old = if local < this.deadline {
                let key = match this.sleeper {
                    Some(key) => key,
                    None => {
                        let key = st.next_sleeper;
                        st.next_sleeper += 1;
                        this.sleeper = Some(key);
                        key
                    }
                };
                st.sleepers.insert(key, cx.waker().clone())
            } else {
                None
            };
            (local, st.jumps, old)
        };
        drop(old);
        if local >= this.deadline {
            this.unregister();
            drop(this.timer.take());
            return Poll::Ready(());
        }
        if this.timer.as_ref().is_none_or(|(j, _)| *j != jumps) {
            let at = this.clock.virtual_at(virtual_now, this.deadline);
            // The old timer (if any) is cancelled when dropped here.
            this.timer = Some((jumps, this.sim.sleep_until(at)));
        }
        match this.timer.as_mut() {
            Some((_, timer)) => match Pin::new(timer).poll(cx) {
                Poll::Ready(()) => {
                    this.unregister();
                    this.timer = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

impl Drop for DriftSleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl fmt::Debug for DriftSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriftSleep").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sim_runtime::Simulation;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(d: Duration) -> Instant {
        Instant::ZERO.add(d)
    }

    /// A simulation without poll cost, and a node runtime on a clock of `rate_ppm`.
    fn node(rate_ppm: u64) -> (Simulation, DriftRuntime) {
        let sim = Simulation::new(1);
        sim.set_poll_cost(Duration::ZERO);
        let rt = DriftRuntime::new(sim.runtime_in_group(7), Arc::new(DriftClock::new(Instant::ZERO, rate_ppm)));
        (sim, rt)
    }

    /// The virtual time at which a sleep of `d` on `rt`, started now, completes.
    fn sleep_ends(sim: &Simulation, rt: &DriftRuntime, d: Duration) -> Option<Instant> {
        let (rt, virt) = (rt.clone(), sim.runtime());
        sim.block_on(
            async move {
                rt.sleep(d).await;
                virt.now()
            },
            Duration::from_secs(100),
        )
    }

    #[test]
    fn a_fast_clock_reads_more_time_and_its_sleeps_last_less_virtual_time() {
        let (sim, rt) = node(1_050_000);
        sim.run_for(Duration::from_secs(1));
        assert_eq!(rt.now(), at(ms(1050)));
        assert_eq!(sleep_ends(&sim, &rt, ms(105)), Some(at(ms(1100))));
        assert_eq!(rt.now(), at(ms(1155)));
        assert!((rt.clock().rate_error() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn a_slow_clock_reads_less_time_and_its_sleeps_last_d_over_rate() {
        let (sim, rt) = node(950_000);
        sim.run_for(Duration::from_secs(2));
        assert_eq!(rt.now(), at(ms(1900)));
        // 100 ms / 0.95 = 105.263157.. ms, rounded up to the first nanosecond at which
        // the clock reads the deadline.
        let end = sleep_ends(&sim, &rt, ms(100));
        assert_eq!(end, Some(at(Duration::from_secs(2) + Duration::from_nanos(105_263_158))));
        assert_eq!(rt.now(), at(ms(2000)));
    }

    #[test]
    fn a_sleep_ends_at_the_first_virtual_instant_its_clock_reads_the_deadline() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..10_000 {
            let start = Instant::from_nanos(rng.u64(..1 << 40));
            let clock = DriftClock::new(start, rng.u64(100_000..1_900_000));
            let deadline = start.add(Duration::from_nanos(rng.u64(1..1 << 36)));
            let v = clock.virtual_at(start, deadline);
            assert!(clock.local(v) >= deadline);
            assert!(clock.local(Instant::from_nanos(v.as_nanos() - 1)) < deadline);
        }
    }

    #[test]
    fn a_clock_at_rate_one_is_the_virtual_clock() {
        let (sim, rt) = node(RATE_ONE_PPM);
        sim.run_for(ms(123));
        assert_eq!(rt.now(), sim.now());
        assert_eq!(sleep_ends(&sim, &rt, ms(50)), Some(at(ms(173))));
        assert_eq!(DriftClock::with_error(Instant::ZERO, 0.0).rate_ppm(), RATE_ONE_PPM);
    }

    #[test]
    fn a_jump_past_a_deadline_fires_the_timer_at_once() {
        let (sim, rt) = node(RATE_ONE_PPM);
        let clock = rt.clock().clone();
        let virt = sim.runtime();
        drop(sim.runtime().spawn(async move {
            virt.sleep(ms(100)).await;
            clock.jump(virt.now(), Duration::from_secs(2));
        }));
        assert_eq!(sleep_ends(&sim, &rt, Duration::from_secs(1)), Some(at(ms(100))));
        assert_eq!(rt.now(), at(ms(2100)));
        assert_eq!(rt.clock().jumps(), 1);
        assert_eq!(sim.pending_timers(), 0);
    }

    #[test]
    fn a_jump_short_of_a_deadline_brings_the_timer_forward() {
        let (sim, rt) = node(1_100_000);
        let clock = rt.clock().clone();
        let virt = sim.runtime();
        drop(sim.runtime().spawn(async move {
            virt.sleep(ms(100)).await;
            clock.jump(virt.now(), ms(440));
        }));
        // At virtual 100 ms the clock reads 110 ms and jumps to 550 ms; the deadline of
        // 1100 ms is 550 ms of clock time, 500 ms of virtual time, away.
        assert_eq!(sleep_ends(&sim, &rt, ms(1100)), Some(at(ms(600))));
        assert_eq!(sim.pending_timers(), 0);
    }

    #[test]
    fn a_clock_never_goes_backwards() {
        let clock = DriftClock::new(Instant::ZERO, 900_000);
        let mut last = Instant::ZERO;
        for step in 1..1000u64 {
            let v = at(Duration::from_micros(step * 997));
            if step % 100 == 0 {
                clock.jump(v, Duration::from_micros(step));
            }
            let now = clock.local(v);
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn a_dropped_sleep_cancels_its_timer_and_leaves_no_waker_behind() {
        let (sim, rt) = node(1_020_000);
        let rt2 = rt.clone();
        let out = sim.block_on(rt.timeout(ms(10), rt2.sleep(ms(500))), Duration::from_secs(1));
        assert_eq!(out, Some(None));
        assert_eq!(sim.pending_timers(), 0);
        assert!(lock(&rt.clock().state).sleepers.is_empty());
    }

    #[test]
    fn rate_errors_out_of_range_are_clamped() {
        assert_eq!(rate_ppm_for(f64::NAN), RATE_ONE_PPM);
        assert_eq!(rate_ppm_for(5.0), 1_900_000);
        assert_eq!(rate_ppm_for(-3.0), 100_000);
        assert_eq!(rate_ppm_for(-0.05), 950_000);
        assert_eq!(DriftClock::new(Instant::ZERO, 0).rate_ppm(), 1);
    }
}

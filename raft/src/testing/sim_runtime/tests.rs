use std::pin::Pin;

use super::*;
use crate::runtime::Runtime;
use crate::sync::lock;

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

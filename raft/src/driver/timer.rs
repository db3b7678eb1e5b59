//! The timer task: sleeps toward the protocol loop's next deadline and sends the loop a
//! tick when it passes (quinn's `drive_timer` in task form).
//!
//! The loop moves the deadline with [`Timer::arm`]; the task is woken only when the new
//! deadline is earlier than the one it sleeps toward, so a deadline pushed later costs
//! one atomic store and no wake-up.
//!
//! **Architecture invariant:** the task never sends two ticks for one deadline, and
//! never sends one before the deadline has passed by the runtime's clock. A tick carries
//! the time the task read, and the protocol loop steps the core with at least that time:
//! a tick stepped at an earlier time (the loop read its clock for the batch before the
//! tick arrived) would move no timer and arm no new deadline, and the task would wait for
//! one forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::channel::mpsc;
use futures::future::{self, Either};
use futures::StreamExt;

use super::Event;
use crate::runtime::Runtime;
use crate::state_machine::StateMachine;
use crate::types::Instant;

/// The deadline shared between the protocol loop and the timer task.
struct Shared {
    /// The next deadline, in runtime nanoseconds.
    deadline: AtomicU64,
    /// The deadline the timer task is sleeping toward.
    sleeping_until: AtomicU64,
}

/// The protocol loop's side of the timer task. Dropping it ends the task.
pub(super) struct Timer {
    shared: Arc<Shared>,
    wake_tx: mpsc::UnboundedSender<()>,
}

impl Timer {
    /// Starts the timer task, which sends [`Event::Tick`] on `tx`, with no deadline set.
    pub(super) fn start<SM: StateMachine, R: Runtime>(
        rt: &R,
        tx: mpsc::UnboundedSender<Event<SM>>,
    ) -> (Self, R::JoinHandle) {
        let shared = Arc::new(Shared { deadline: AtomicU64::new(u64::MAX), sleeping_until: AtomicU64::new(0) });
        let (wake_tx, wake_rx) = mpsc::unbounded();
        let task = rt.spawn(timer_task::<SM, R>(rt.clone(), shared.clone(), wake_rx, tx));
        (Timer { shared, wake_tx }, task)
    }

    /// Sets the deadline of the next tick, waking the task if it sleeps toward a later one.
    pub(super) fn arm(&self, deadline: Instant) {
        let t = deadline.as_nanos();
        if self.shared.deadline.swap(t, Ordering::SeqCst) != t && t < self.shared.sleeping_until.load(Ordering::SeqCst)
        {
            let _ = self.wake_tx.unbounded_send(());
        }
    }
}

async fn timer_task<SM: StateMachine, R: Runtime>(
    rt: R,
    timer: Arc<Shared>,
    mut wake_rx: mpsc::UnboundedReceiver<()>,
    tx: mpsc::UnboundedSender<Event<SM>>,
) {
    let mut fired = None;
    loop {
        let deadline = timer.deadline.load(Ordering::SeqCst);
        if fired == Some(deadline) {
            // Already ticked for this deadline: wait for a new one.
            timer.sleeping_until.store(u64::MAX, Ordering::SeqCst);
            if timer.deadline.load(Ordering::SeqCst) != deadline {
                continue;
            }
            if wake_rx.next().await.is_none() {
                return;
            }
            continue;
        }
        timer.sleeping_until.store(deadline, Ordering::SeqCst);
        if timer.deadline.load(Ordering::SeqCst) != deadline {
            continue;
        }
        let sleep = rt.sleep_until(Instant::from_nanos(deadline));
        match future::select(Box::pin(sleep), wake_rx.next()).await {
            Either::Left(_) => {
                let now = rt.now();
                let current = timer.deadline.load(Ordering::SeqCst);
                if now.as_nanos() >= current {
                    fired = Some(current);
                    if tx.unbounded_send(Event::Tick(now)).is_err() {
                        return;
                    }
                }
            }
            Either::Right((None, _)) => return,
            Either::Right((Some(()), _)) => {}
        }
    }
}

//! The OS scheduling policy of a node's threads.
//!
//! A node works in short bursts: a proposal makes the leader send an append to every
//! follower, hand its own write to the store thread and answer a forward, all within a
//! few microseconds. Under Linux's default policy each `send` to a peer on the same
//! machine wakes that peer's thread, and the woken thread may preempt the sender before
//! it reaches the next peer. `SCHED_BATCH` threads never preempt on wake-up: a woken
//! node runs on an idle CPU, or when the running thread blocks or its time slice ends,
//! so the sender finishes its burst first. Measured with `bench cluster --target kv`
//! (docs/performance.md): one client, 20 alternating pairs of 2 s runs, p50 median
//! 465.5 µs under the default policy against 414 µs under `SCHED_BATCH`; 256 clients,
//! four pairs of 5 s runs, 33,596–35,860 against 35,975–40,323 writes/s. The policy
//! changes no priority and needs no privilege.

use clap::ValueEnum;

/// How a node's threads are scheduled (`--scheduling`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Scheduling {
    /// Linux's `SCHED_BATCH`: the node's threads do not preempt running threads when
    /// they wake up. Elsewhere the same as `normal`.
    #[default]
    Batch,
    /// The OS's default policy, as the node was started.
    Normal,
}

/// Puts the calling thread, and so every thread it starts afterwards, under `policy`.
/// Call it before any other thread is started.
pub fn apply(policy: Scheduling) -> std::io::Result<()> {
    match policy {
        Scheduling::Normal => Ok(()),
        Scheduling::Batch => set_batch(),
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_batch() -> std::io::Result<()> {
    // No crate in the dependency tree offers `sched_setscheduler` without also changing
    // the thread's nice value; the one call is made here.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call; pid 0 names the
    // calling thread; SCHED_BATCH takes priority 0 and no privilege.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The policy of thread `tid` of this process, from field 41 of its `stat`.
    fn policy_of(tid: u32) -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        after_name.split(' ').nth(41 - 3).expect("policy field").parse().expect("a number")
    }

    fn this_tid() -> u32 {
        std::fs::read_link("/proc/thread-self")
            .expect("thread-self")
            .file_name()
            .expect("tid")
            .to_string_lossy()
            .parse()
            .expect("a tid")
    }

    #[test]
    fn batch_applies_to_the_calling_thread_and_the_threads_it_starts() {
        std::thread::spawn(|| {
            apply(Scheduling::Batch).expect("SCHED_BATCH needs no privilege");
            assert_eq!(policy_of(this_tid()), libc::SCHED_BATCH as u32);
            let child = std::thread::spawn(|| policy_of(this_tid())).join().expect("child");
            assert_eq!(child, libc::SCHED_BATCH as u32);
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn normal_leaves_the_policy_as_it_was() {
        std::thread::spawn(|| {
            let before = policy_of(this_tid());
            apply(Scheduling::Normal).expect("nothing to do");
            assert_eq!(policy_of(this_tid()), before);
        })
        .join()
        .expect("thread");
    }
}

//! `bench floor`: what the machine itself charges for one replicated write, measured
//! without Raft. A write through a 3-node cluster on one machine crosses loopback TCP a
//! few times and waits for a majority of `fdatasync`s that run at the same time on the
//! same disk; this measures both, so that a cluster's single-client latency can be set
//! against its floor.
//!
//! - **Round trips**: a 1 KiB request and a 1 KiB answer over a loopback TCP connection
//!   (`TCP_NODELAY`) between two threads that block on their sockets, as an idle server
//!   does. Once with the threads free to run on any CPU (a wake-up usually lands on
//!   the other, idle CPU) and once with both pinned to one CPU (Linux only).
//! - **Syncs**: one append of one entry (1 KiB payload) plus `fdatasync` to a
//!   [`FileStore`], by 1 writer alone and by `writers` writers at once, each with its
//!   own store in its own directory, as the nodes of a local cluster do.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raft::{Entry, EntryPayload, LogStore};
use raft_store_file::{FileStore, FileStoreOptions};

/// Options of `bench floor`.
#[derive(clap::Args, Clone, Debug)]
pub struct FloorArgs {
    /// Round trips per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: u64,
    /// Measured seconds of appends for each writer count.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Concurrent writers in the second sync measurement.
    #[arg(long, default_value_t = 3)]
    pub writers: usize,
    /// Directory to create the stores in (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print a JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Percentiles {
    /// How many were measured.
    pub samples: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            samples: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {} µs, p90 {} µs, p99 {} µs", self.p50_us, self.p90_us, self.p99_us)
    }
}

/// Runs `bench floor` and prints its figures.
pub fn run_floor(args: &FloorArgs) -> Result<(), String> {
    let free = round_trips(args.round_trips, false)?;
    println!("floor: loopback round trip, 1 KiB each way, threads on any CPU: {free}");
    let pinned = if cfg!(target_os = "linux") {
        let p = round_trips(args.round_trips, true)?;
        println!("floor: loopback round trip, 1 KiB each way, both threads on CPU 0: {p}");
        Some(p)
    } else {
        None
    };
    let duration = Duration::from_secs_f64(args.duration);
    let alone = syncs(1, duration, &args.dir)?;
    println!("floor: append + fdatasync of one 1 KiB entry, 1 writer: {alone}");
    let writers = args.writers.max(1);
    let together = syncs(writers, duration, &args.dir)?;
    println!("floor: append + fdatasync of one 1 KiB entry, {writers} writers at once: {together}");
    // The leader's client path crosses loopback four times (client to leader, leader to
    // follower and back, leader to client), two round trips; through a follower, the
    // forward and the commit news add a third. A majority of syncs run meanwhile.
    let leader = 2 * free.p50_us + together.p50_us;
    let follower = 3 * free.p50_us + together.p50_us;
    println!(
        "floor: one write with nothing but these (medians): {leader} µs through the leader, {follower} µs through a follower"
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "round_trip": free, "round_trip_one_cpu": pinned,
                "sync_alone": alone, "sync_together": together, "writers": writers,
                "floor_leader_us": leader, "floor_follower_us": follower,
            })
        );
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn pin_to_cpu0() -> Result<(), String> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(0).map_err(|e| e.to_string())?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("cannot pin a thread to CPU 0: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn pin_to_cpu0() -> Result<(), String> {
    Err("pinning needs Linux".into())
}

/// `n` round trips of 1 KiB each way between an echo thread and this one.
fn round_trips(n: u64, pinned: bool) -> Result<Percentiles, String> {
    const SIZE: usize = 1024;
    let io = |e: std::io::Error| format!("loopback round trip: {e}");
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let echo = std::thread::spawn(move || -> Result<(), String> {
        if pinned {
            pin_to_cpu0()?;
        }
        let (mut s, _) = listener.accept().map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        let mut buf = [0u8; SIZE];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf).map_err(io)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(io(e)),
            }
        }
    });
    let client = std::thread::spawn(move || -> Result<Histogram<u64>, String> {
        if pinned {
            pin_to_cpu0()?;
        }
        let mut s = TcpStream::connect(addr).map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        let mut buf = [0x5au8; SIZE];
        let mut h = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
        for i in 0..n + n / 10 {
            let t = Instant::now();
            s.write_all(&buf).map_err(io)?;
            s.read_exact(&mut buf).map_err(io)?;
            // The first tenth warms up.
            if i >= n / 10 {
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
        }
        Ok(h)
    });
    let h = client.join().map_err(|_| "the round-trip client panicked".to_string())??;
    echo.join().map_err(|_| "the echo thread panicked".to_string())??;
    Ok(Percentiles::of(&h))
}

/// Appends of one entry plus fdatasync by `writers` threads at once for `duration`,
/// each with its own store; the latencies of all of them together.
fn syncs(writers: usize, duration: Duration, base: &Option<PathBuf>) -> Result<Percentiles, String> {
    let start = Arc::new(Barrier::new(writers));
    let mut threads = Vec::new();
    for _ in 0..writers {
        let dir = match base {
            Some(b) => tempfile::tempdir_in(b),
            None => tempfile::tempdir(),
        }
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let start = start.clone();
        threads.push(std::thread::spawn(move || -> Result<Histogram<u64>, String> {
            let mut store = FileStore::open(dir.path(), FileStoreOptions::default()).map_err(|e| e.to_string())?;
            let payload = bytes::Bytes::from(vec![0x5au8; 1024]);
            let mut h = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            start.wait();
            let t0 = Instant::now();
            let mut index = 1;
            while t0.elapsed() < duration {
                let entry = Entry { term: 1, index, payload: EntryPayload::Command(payload.clone()) };
                let t = Instant::now();
                futures::executor::block_on(store.append(std::slice::from_ref(&entry))).map_err(|e| e.to_string())?;
                let _ = h.record(t.elapsed().as_micros() as u64);
                index += 1;
            }
            // Every append must be in the log, in order.
            let state = futures::executor::block_on(store.initial_state()).map_err(|e| e.to_string())?;
            if state.last.index != index - 1 {
                return Err(format!("the store ends at {} after {} appends", state.last.index, index - 1));
            }
            drop(store);
            drop(dir);
            Ok(h)
        }));
    }
    let mut all = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for t in threads {
        let h = t.join().map_err(|_| "a sync writer panicked".to_string())??;
        all.add(&h).map_err(|e| e.to_string())?;
    }
    Ok(Percentiles::of(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_measured_free_and_pinned() {
        let free = round_trips(200, false).unwrap();
        assert_eq!(free.samples, 200);
        if cfg!(target_os = "linux") {
            assert_eq!(round_trips(200, true).unwrap().samples, 200);
        }
    }

    #[test]
    fn concurrent_syncs_each_append_to_their_own_store() {
        let p = syncs(3, Duration::from_millis(200), &None).unwrap();
        assert!(p.samples >= 3, "{p:?}");
    }
}

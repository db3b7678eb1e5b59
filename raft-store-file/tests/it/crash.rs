//! A real crash test: a child process appends and reports each durable index on stdout;
//! the parent kills it with SIGKILL at random moments, reopens the directory, and checks
//! that every reported index is present and intact.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures::executor::block_on;
use raft::{Entry, EntryPayload, HardState, LogStore};
use raft_store_file::{FileStore, FileStoreOptions};

const CHILD_ENV: &str = "RAFT_STORE_FILE_CRASH_CHILD_DIR";

fn opts() -> FileStoreOptions {
    FileStoreOptions { cluster_id: 11, segment_size: 64 << 10, ..Default::default() }
}

fn entry(index: u64) -> Entry {
    let len = (index as usize * 37) % 3000;
    let data: Vec<u8> = (0..len).map(|i| (index as usize).wrapping_mul(7).wrapping_add(i) as u8).collect();
    Entry { term: 1 + index / 100, index, payload: EntryPayload::Command(Bytes::from(data)) }
}

/// The child: appends batches of varying size forever, printing each durable index.
/// Without the environment variable it does nothing (it is run as a test too).
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let mut store = FileStore::open(&dir, opts()).expect("child open");
    let mut next = block_on(store.initial_state()).expect("state").last.index + 1;
    let mut rng = fastrand::Rng::new();
    let mut out = std::io::stdout().lock();
    loop {
        let n = rng.u64(1..=40);
        let batch: Vec<Entry> = (next..next + n).map(entry).collect();
        block_on(store.append(&batch)).expect("child append");
        next += n;
        block_on(store.save_hard_state(&HardState { term: next, voted_for: Some(next) })).expect("hard state");
        writeln!(out, "durable {} {}", next - 1, next).expect("stdout");
        out.flush().expect("flush");
    }
}

/// The child's test name in this test binary: its module path without the crate.
fn child_test_name() -> String {
    let module = module_path!().split_once("::").map_or("", |(_, module)| module);
    format!("{module}::crash_child_process")
}

fn check(dir: &Path, reported: u64, reported_term: u64) -> u64 {
    let mut store = FileStore::open(dir, opts()).expect("reopen after SIGKILL");
    let st = block_on(store.initial_state()).expect("state");
    assert!(st.last.index >= reported, "reported durable up to {reported}, log ends at {}", st.last.index);
    assert!(st.hard_state.term >= reported_term, "hard state {:?} older than reported {reported_term}", st.hard_state);
    let mut i = 1;
    while i <= st.last.index {
        let hi = (i + 500).min(st.last.index + 1);
        let got = block_on(store.entries(i, hi)).expect("read back");
        assert_eq!(got, (i..hi).map(entry).collect::<Vec<_>>(), "entries {i}..{hi}");
        i = hi;
    }
    st.last.index
}

#[test]
fn sigkill_at_random_moments_never_loses_a_reported_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut reported, mut reported_term) = (0u64, 0u64);
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args([child_test_name().as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() == Some("durable") {
                    let idx = parts.next().and_then(|p| p.parse::<u64>().ok());
                    let term = parts.next().and_then(|p| p.parse::<u64>().ok());
                    if let (Some(i), Some(t)) = (idx, term) {
                        last = Some((i, t));
                    }
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(rng.u64(20..300)));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        if let Some((i, t)) = reader.join().expect("reader") {
            reported = reported.max(i);
            reported_term = reported_term.max(t);
        }
        let last = check(dir.path(), reported, reported_term);
        eprintln!("round {round}: reported durable up to {reported}, log ends at {last}");
        assert!(last >= reported, "round {round}");
    }
    assert!(reported > 0, "the child never reported an append");
}

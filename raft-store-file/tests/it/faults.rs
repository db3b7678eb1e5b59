//! Randomized crash tests on the simulated file system `FaultFs` (feature `testing`):
//! random appends, truncates, purges, hard state saves, snapshot saves and log resets,
//! with crashes and failing writes or syncs injected at random operations (between a
//! write and its sync, between a rename and the directory sync, during recovery...).
//! After every crash the store is reopened and must hold exactly a prefix of the model
//! log that contains every entry reported durable, the last hard state and snapshot
//! saved (or the one being saved when the crash came), and never panic.
//!
//! `RAFT_FS_SEED=N` replays one seed; `RAFT_FS_SEEDS=N` runs that many seeds (default
//! 1000). The sweep also checks that faults fired at every kind of file operation.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::executor::block_on;
use raft::SnapshotMeta;
use raft::{Entry, EntryPayload, HardState, LogId, LogStore, Membership, StoreError};
use raft_store_file::testing::FaultFs;
use raft_store_file::{FileStore, FileStoreError, FileStoreOptions};

const DIR: &str = "/data";

type Store = FileStore<FaultFs>;
type Snapshot = Option<(SnapshotMeta, Vec<u8>)>;

fn opts() -> FileStoreOptions {
    FileStoreOptions { cluster_id: 13, segment_size: 500, ..Default::default() }
}

/// What the store holds, as the test believes it (or as a reopen found it).
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    prev: LogId,
    /// The entries after `prev`.
    log: Vec<Entry>,
    hs: HardState,
    snap: Snapshot,
}

impl Model {
    fn last(&self) -> LogId {
        self.log.last().map_or(self.prev, |e| LogId { term: e.term, index: e.index })
    }
}

/// The states a reopen may find after an operation that did not return `Ok`.
struct Allowed {
    /// `(prev, longest log, shortest length)`: the log found must be a prefix of the
    /// longest one, at least that long.
    logs: Vec<(LogId, Vec<Entry>, usize)>,
    hs: Vec<HardState>,
    snaps: Vec<Snapshot>,
}

impl Allowed {
    fn exactly(m: &Model) -> Allowed {
        Allowed { logs: vec![(m.prev, m.log.clone(), m.log.len())], hs: vec![m.hs], snaps: vec![m.snap.clone()] }
    }

    fn check(&self, found: &Model) -> Result<(), String> {
        let log_ok = self.logs.iter().any(|(prev, log, min)| {
            *prev == found.prev
                && found.log.len() >= *min
                && found.log.len() <= log.len()
                && found.log[..] == log[..found.log.len()]
        });
        if !log_ok {
            let want: Vec<String> = self
                .logs
                .iter()
                .map(|(p, l, min)| format!("prev {p:?} with {min}..={} of {} entries", l.len(), l.len()))
                .collect();
            return Err(format!(
                "log: found prev {:?} and {} entries (last {:?}), allowed: {}",
                found.prev,
                found.log.len(),
                found.last(),
                want.join(" or ")
            ));
        }
        if !self.hs.contains(&found.hs) {
            return Err(format!("hard state {:?}, allowed {:?}", found.hs, self.hs));
        }
        if !self.snaps.contains(&found.snap) {
            let meta = |s: &Snapshot| s.as_ref().map(|(m, d)| (m.last, d.len()));
            let allowed: Vec<_> = self.snaps.iter().map(meta).collect();
            return Err(format!("snapshot {:?}, allowed {allowed:?}", meta(&found.snap)));
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Op {
    Append(Vec<Entry>),
    Truncate(u64),
    Purge(u64),
    SaveHardState(HardState),
    SaveSnapshot(SnapshotMeta, Vec<u8>),
    Reset(LogId),
}

fn random_entry(rng: &mut fastrand::Rng, term: u64, index: u64) -> Entry {
    let payload = if rng.u32(..8) == 0 {
        EntryPayload::Blank
    } else {
        EntryPayload::Command(Bytes::from((0..rng.usize(..150)).map(|_| rng.u8(..)).collect::<Vec<u8>>()))
    };
    Entry { term, index, payload }
}

fn random_op(rng: &mut fastrand::Rng, m: &Model, term: &mut u64) -> Op {
    let last = m.last();
    match rng.u32(..100) {
        0..=44 => {
            let n = rng.u64(1..=6);
            Op::Append((1..=n).map(|i| random_entry(rng, *term, last.index + i)).collect())
        }
        45..=54 => {
            *term += 1;
            Op::Truncate(rng.u64(m.prev.index + 1..=last.index + 1))
        }
        55..=64 => Op::Purge(rng.u64(m.prev.index..=last.index)),
        65..=76 => {
            *term += rng.u64(0..=1);
            Op::SaveHardState(HardState { term: *term, voted_for: rng.bool().then(|| rng.u64(1..=5)) })
        }
        77..=90 => {
            let floor = m.snap.as_ref().map_or(0, |(s, _)| s.last.index);
            let index = rng.u64(floor..=floor.max(last.index) + 3);
            let membership = Membership::new((1..=rng.u64(1..=5)).collect::<Vec<_>>());
            let data = (0..rng.usize(..300)).map(|_| rng.u8(..)).collect();
            Op::SaveSnapshot(
                SnapshotMeta { last: LogId { index, term: *term }, membership, ..Default::default() },
                data,
            )
        }
        _ => {
            *term += 1;
            Op::Reset(LogId { index: rng.u64(m.prev.index..=last.index + 5), term: *term })
        }
    }
}

fn run(store: &mut Store, op: &Op) -> Result<(), String> {
    match op {
        Op::Append(b) => block_on(store.append(b)).map_err(|e| e.to_string()),
        Op::Truncate(from) => block_on(store.truncate(*from)).map_err(|e| e.to_string()),
        Op::Purge(upto) => block_on(store.purge(*upto)).map_err(|e| e.to_string()),
        Op::SaveHardState(hs) => block_on(store.save_hard_state(hs)).map_err(|e| e.to_string()),
        Op::SaveSnapshot(meta, data) => store.save_snapshot(meta.clone(), data).map(drop).map_err(|e| e.to_string()),
        Op::Reset(at) => store.reset_to_snapshot(*at).map_err(|e| e.to_string()),
    }
}

/// The model after `op` returned `Ok`.
fn after(m: &Model, op: &Op) -> Model {
    let mut m = m.clone();
    match op {
        Op::Append(b) => m.log.extend(b.iter().cloned()),
        Op::Truncate(from) => m.log.truncate((from - 1 - m.prev.index) as usize),
        Op::Purge(upto) => {
            if *upto > m.prev.index {
                let n = (upto - m.prev.index) as usize;
                let e = &m.log[n - 1];
                m.prev = LogId { term: e.term, index: e.index };
                m.log.drain(..n);
            }
        }
        Op::SaveHardState(hs) => m.hs = *hs,
        Op::SaveSnapshot(meta, data) => {
            let size = data.len() as u64;
            let full = SnapshotMeta { size, checksum: crc32c::crc32c(data), ..meta.clone() };
            m.snap = Some((full, data.clone()))
        }
        Op::Reset(at) => {
            m.prev = *at;
            m.log.clear();
        }
    }
    m
}

/// What a reopen may find if `op` was cut short by a crash or a failure.
fn allowed_if_cut_short(m: &Model, op: &Op) -> Allowed {
    let mut a = Allowed::exactly(m);
    let new = after(m, op);
    match op {
        Op::Append(_) => a.logs = vec![(m.prev, new.log, m.log.len())],
        Op::Truncate(_) => a.logs[0].2 = new.log.len(),
        Op::Purge(_) | Op::Reset(_) => a.logs.push((new.prev, new.log.clone(), new.log.len())),
        Op::SaveHardState(_) => a.hs.push(new.hs),
        Op::SaveSnapshot(..) => a.snaps.push(new.snap),
    }
    a
}

/// Reads everything the store holds.
fn observe(store: &mut Store) -> Model {
    let st = block_on(store.initial_state()).expect("initial_state");
    let log = if st.last.index > st.prev.index {
        block_on(store.entries(st.prev.index + 1, st.last.index + 1)).expect("read the log")
    } else {
        Vec::new()
    };
    let snap = store.load_snapshot().expect("load_snapshot");
    assert_eq!(store.snapshot_meta(), snap.as_ref().map(|(m, _)| m.clone()), "snapshot_meta");
    let m = Model { prev: st.prev, log, hs: st.hard_state, snap };
    assert_eq!(m.last(), st.last, "initial_state().last is the last entry read");
    m
}

/// Opens the store, sometimes crashing during the recovery itself (and then again).
fn reopen(fs: &FaultFs, rng: &mut fastrand::Rng) -> Store {
    for _ in 0..50 {
        if rng.u32(..4) == 0 {
            fs.crash_after(rng.u64(..6));
        }
        match FileStore::open_with(fs.clone(), DIR, opts()) {
            Ok(s) => {
                fs.disarm();
                return s;
            }
            Err(e) => {
                assert!(fs.is_down(), "open failed without an injected crash: {e}");
                fs.crash(rng);
            }
        }
    }
    panic!("the store never opened");
}

/// Prints the seed when the test fails while it runs.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failing seed: {} (replay with RAFT_FS_SEED={})", self.0, self.0);
        }
    }
}

/// The operation at which an injected crash or failure fired, from the error message
/// ("simulated crash at write of /data/...").
fn fault_site(error: &str) -> Option<String> {
    let at = error.find(" at ").or_else(|| error.find("failure of "))?;
    let rest = error[at..].trim_start_matches(" at ").trim_start_matches("failure of ");
    rest.split_whitespace().next().map(|s| s.to_string())
}

/// Runs one seed; returns how often a fault fired at each kind of operation during a
/// store call (crashes and failures together).
fn run_seed(seed: u64, steps: usize) -> BTreeMap<String, usize> {
    let mut sites = BTreeMap::new();
    let _guard = SeedGuard(seed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let fs = FaultFs::new();
    let mut store = reopen(&fs, &mut rng);
    let mut m = Model::default();
    let mut term = 1;
    let trace = std::env::var_os("RAFT_FS_TRACE").is_some();
    for step in 0..steps {
        let op = random_op(&mut rng, &m, &mut term);
        let armed = match rng.u32(..100) {
            0..=14 => {
                fs.crash_after(rng.u64(..8));
                true
            }
            15..=19 => {
                fs.fail_after(rng.u64(..8));
                true
            }
            _ => false,
        };
        let ops_before = fs.ops();
        let result = run(&mut store, &op);
        fs.disarm();
        if trace {
            let short = match &op {
                Op::Append(b) => format!("append {}..={}", b[0].index, b[b.len() - 1].index),
                Op::SaveSnapshot(meta, data) => format!("snapshot {:?} of {} bytes", meta.last, data.len()),
                other => format!("{other:?}"),
            };
            eprintln!("step {step}: {short}: {result:?} after {} fs ops (armed {armed})", fs.ops() - ops_before);
        }
        let allowed = match result {
            Ok(()) => {
                m = after(&m, &op);
                match rng.u32(..100) {
                    // A crash between operations: everything reported durable survives.
                    0..=4 => Allowed::exactly(&m),
                    // A clean restart.
                    5..=7 => {
                        drop(store);
                        store = reopen(&fs, &mut rng);
                        let found = observe(&mut store);
                        assert_eq!(found, m, "step {step}: after a clean reopen");
                        continue;
                    }
                    _ => continue,
                }
            }
            Err(e) => {
                assert!(armed, "step {step}: {op:?} failed without an injected fault: {e}");
                if let Some(site) = fault_site(&e) {
                    *sites.entry(site).or_insert(0) += 1;
                }
                if !fs.is_down() {
                    // An injected I/O error: the store must refuse every later write.
                    let again = block_on(store.save_hard_state(&m.hs));
                    assert!(matches!(again, Err(StoreError::Failed(_))), "step {step}: not fail-stop: {again:?}");
                    let snap = store.save_snapshot(SnapshotMeta::default(), b"");
                    assert!(matches!(snap, Err(FileStoreError::Failed(_))), "step {step}: not fail-stop: {snap:?}");
                }
                allowed_if_cut_short(&m, &op)
            }
        };
        drop(store);
        // An injected error is sometimes followed by a plain restart, without a crash.
        if fs.is_down() || rng.u32(..4) != 0 {
            fs.crash(&mut rng);
        }
        store = reopen(&fs, &mut rng);
        let found = observe(&mut store);
        if let Err(why) = allowed.check(&found) {
            panic!("step {step}, after {op:?}: {why}");
        }
        m = found;
        term = term.max(m.last().term).max(m.hs.term);
    }
    drop(store);
    fs.crash(&mut rng);
    let mut store = reopen(&fs, &mut rng);
    assert_eq!(observe(&mut store), m, "after the final crash");
    sites
}

#[test]
fn random_operations_with_crashes_and_failures_keep_every_durable_record() {
    if let Ok(seed) = std::env::var("RAFT_FS_SEED") {
        let seed: u64 = seed.parse().expect("RAFT_FS_SEED is a number");
        let sites = run_seed(seed, 200);
        eprintln!("seed {seed} passed; faults fired at: {sites:?}");
        return;
    }
    let seeds: u64 = std::env::var("RAFT_FS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let start = std::time::Instant::now();
    let mut sites: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..seeds {
        for (site, n) in run_seed(seed, 200) {
            *sites.entry(site).or_insert(0) += n;
        }
    }
    eprintln!("{seeds} seeds in {:.1} s; faults fired at: {sites:?}", start.elapsed().as_secs_f64());
    if seeds >= 100 {
        // Crashes land between a write and its sync, at a rename before the directory
        // sync, and at every other kind of operation.
        for site in ["create", "write", "sync_data", "sync_all", "rename", "remove", "sync_dir", "set_len"] {
            assert!(sites.get(site).is_some_and(|&n| n > 0), "no fault at {site}: {sites:?}");
        }
    }
}

/// Runs `op` on a store holding a log and a snapshot, with a crash at each of its
/// operations in turn, and several crash outcomes per point.
fn every_crash_point(op: impl Fn(&mut Store) -> Result<(), FileStoreError>, check: impl Fn(&Model) -> bool) {
    let mut points = 0;
    for n in 0.. {
        let mut done = false;
        for seed in 0..8 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let fs = FaultFs::new();
            let mut store = FileStore::open_with(fs.clone(), DIR, opts()).expect("open");
            let batch: Vec<Entry> = (1..=30).map(|i| random_entry(&mut rng, 1 + i / 10, i)).collect();
            for chunk in batch.chunks(4) {
                block_on(store.append(chunk)).expect("append");
            }
            block_on(store.purge(5)).expect("purge");
            let snap = SnapshotMeta {
                last: LogId { index: 5, term: 1 },
                membership: Membership::new([1]),
                ..Default::default()
            };
            store.save_snapshot(snap, b"five").expect("snapshot");
            fs.crash_after(n);
            let r = op(&mut store);
            if r.is_ok() && !fs.is_down() {
                done = true;
                fs.disarm();
            }
            drop(store);
            fs.crash(&mut rng);
            let mut store = reopen(&fs, &mut rng);
            let found = observe(&mut store);
            assert!(check(&found), "crash at operation {n}, seed {seed}: found {found:?}");
        }
        if done {
            break;
        }
        points += 1;
    }
    assert!(points >= 4, "only {points} crash points");
}

#[test]
fn every_crash_point_of_a_reset_leaves_the_old_or_the_new_log() {
    let at = LogId { index: 40, term: 9 };
    every_crash_point(
        |s| s.reset_to_snapshot(at),
        |m| (m.prev.index == 5 && m.last().index == 30) || (m.prev == at && m.log.is_empty()),
    );
}

#[test]
fn every_crash_point_of_a_snapshot_save_leaves_the_old_or_the_new_snapshot() {
    let meta = SnapshotMeta {
        last: LogId { index: 20, term: 3 },
        membership: Membership::new([1, 2, 3]),
        ..Default::default()
    };
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    every_crash_point(
        |s| s.save_snapshot(meta.clone(), &data).map(drop),
        |m| match &m.snap {
            Some((old, d)) if old.last.index == 5 => d == b"five",
            Some((new, d)) => (new.last, &new.membership) == (meta.last, &meta.membership) && *d == data,
            None => false,
        } && m.last().index == 30,
    );
}

#[test]
fn every_crash_point_of_a_purge_keeps_the_entries_after_it() {
    every_crash_point(
        |s| block_on(s.purge(20)).map_err(|e| FileStoreError::Invalid(e.to_string())),
        |m| (m.prev.index == 5 || m.prev.index == 20) && m.last().index == 30,
    );
}

//! Randomized crash tests on the simulated file system `FaultFs` (feature `testing`):
//! random appends, truncates, purges, hard state saves, snapshot saves and log resets,
//! with crashes and failing writes or syncs injected at random operations (between a
//! write and its sync, between a rename and the directory sync, during recovery...), and
//! read faults (bit flips, misdirected reads) armed before operations and opens. After
//! every crash the store is reopened and must hold exactly a prefix of the model log that
//! contains every entry reported durable, the last hard state and snapshot saved (or the
//! one being saved when the crash came), and never panic. A read fault may make an
//! operation or an open fail (the store then refuses writes), never lose or change data.
//!
//! `RAFT_FS_SEED=N` replays one seed; `RAFT_FS_SEEDS=N` runs that many seeds (default
//! 1000). The sweep also checks that faults fired at every kind of file operation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::executor::block_on;
use raft::SnapshotMeta;
use raft::{Entry, EntryPayload, HardState, LogId, LogStore, Membership, StoreError};
use raft_store_file::testing::{FaultFs, Misdirect};
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

/// Arms a read fault: a bit flip or a misdirected read, of the next read of any file or
/// of one file of the directory.
fn arm_read_fault(fs: &FaultFs, rng: &mut fastrand::Rng) {
    let mut files: Vec<PathBuf> = raft_store_file::Vfs::list(fs, Path::new(DIR))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n != "LOCK")
        .map(|n| Path::new(DIR).join(n))
        .collect();
    files.sort();
    let target = if files.is_empty() || rng.bool() { None } else { Some(files[rng.usize(..files.len())].clone()) };
    match rng.u32(..4) {
        0 if !files.is_empty() => {
            let other = files[rng.usize(..files.len())].clone();
            fs.misdirect_next_read(target.as_deref(), Misdirect::OtherFile(other));
        }
        1 => {
            let shift = [4096, -4096, 512, -512][rng.usize(..4)];
            fs.misdirect_next_read(target.as_deref(), Misdirect::Shift(shift));
        }
        _ => fs.flip_bits_on_read(target.as_deref(), rng.u32(1..=3), rng.u64(..)),
    }
}

/// Opens the store, sometimes crashing during the recovery itself (and then again), or
/// with a read fault armed: an open may refuse a read that fails its checksum, never cut
/// or drop records because of one (the caller checks what the store holds).
fn reopen(fs: &FaultFs, rng: &mut fastrand::Rng) -> Store {
    for _ in 0..50 {
        let read_fault = match rng.u32(..8) {
            0 | 1 => {
                fs.crash_after(rng.u64(..6));
                false
            }
            2 => {
                arm_read_fault(fs, rng);
                true
            }
            _ => false,
        };
        match FileStore::open_with(fs.clone(), DIR, opts()) {
            Ok(s) => {
                fs.disarm();
                return s;
            }
            Err(e) if fs.is_down() => {
                assert!(!read_fault, "a crash fired without being armed: {e}");
                fs.crash(rng);
            }
            Err(e) => {
                let refused = matches!(e, FileStoreError::Corrupt { .. }) && fs.read_faults_fired() > 0;
                assert!(read_fault && refused, "open failed without an injected crash or read fault: {e}");
                fs.disarm();
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
    if error.starts_with("storage corruption") {
        // A read fault, detected by a checksum.
        return Some("read".into());
    }
    let at = error.find(" at ").or_else(|| error.find("failure of "))?;
    let rest = error[at..].trim_start_matches(" at ").trim_start_matches("failure of ");
    rest.split_whitespace().next().map(|s| s.to_string())
}

/// Arms a fault for the next operation, sometimes; whether it did.
fn arm_fault(fs: &FaultFs, rng: &mut fastrand::Rng) -> bool {
    match rng.u32(..100) {
        0..=14 => fs.crash_after(rng.u64(..8)),
        15..=19 => fs.fail_after(rng.u64(..8)),
        // Fires only if the operation reads (truncate, purge); fail-stop if it does.
        20..=24 => arm_read_fault(fs, rng),
        _ => return false,
    }
    true
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
        let armed = arm_fault(&fs, &mut rng);
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
        // sync, and at every other kind of operation; read faults hit reads.
        for site in ["create", "write", "sync_data", "sync_all", "rename", "remove", "sync_dir", "set_len", "read"] {
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

// Read faults: bit flips on read, misdirected reads and corruption at rest are detected
// by the checksums, refused on open or fail-stop the store at run time, and never cut
// acknowledged entries as if they were a torn tail.

mod read_faults {
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use futures::executor::block_on;
    use raft::{Entry, HardState, LogId, LogStore, Membership, SnapshotMeta, StoreError};
    use raft_store_file::format::{parse_frame, Frame, SEGMENT_HEADER_LEN};
    use raft_store_file::testing::{FaultFs, Misdirect};
    use raft_store_file::{FileStore, FileStoreError, HARD_STATE_FILE, META_FILE};

    use super::{opts, random_entry, DIR};

    type Store = FileStore<FaultFs>;
    /// Arms a read fault on a file system.
    type ArmFault = Box<dyn Fn(&FaultFs)>;

    fn open(fs: &FaultFs) -> Result<Store, FileStoreError> {
        FileStore::open_with(fs.clone(), DIR, opts())
    }

    fn entries(n: u64) -> Vec<Entry> {
        let mut rng = fastrand::Rng::with_seed(n);
        (1..=n).map(|i| random_entry(&mut rng, 1 + i / 7, i)).collect()
    }

    /// A file system holding entries 1..=n (appended in batches of 3, each synced), a
    /// hard state and a purge marker; returns it with the entries.
    fn filled(n: u64) -> (FaultFs, Vec<Entry>) {
        let fs = FaultFs::new();
        let mut s = open(&fs).expect("open");
        let all = entries(n);
        for batch in all.chunks(3) {
            block_on(s.append(batch)).expect("append");
        }
        block_on(s.save_hard_state(&HardState { term: 5, voted_for: Some(1) })).expect("hard state");
        block_on(s.purge(1)).expect("purge");
        drop(s);
        (fs, all)
    }

    fn segments(fs: &FaultFs) -> Vec<PathBuf> {
        let mut names: Vec<String> = raft_store_file::Vfs::list(fs, Path::new(DIR))
            .expect("list")
            .into_iter()
            .filter(|n| n.ends_with(".seg"))
            .collect();
        names.sort();
        names.into_iter().map(|n| Path::new(DIR).join(n)).collect()
    }

    /// The start offsets of the records of a segment file, then the end of the last.
    fn frames(fs: &FaultFs, path: &Path) -> Vec<u64> {
        let data = raft_store_file::Vfs::read(fs, path).expect("read");
        let mut pos = SEGMENT_HEADER_LEN;
        let mut out = vec![pos as u64];
        while let Some(Frame::Record(_, total)) = data.get(pos..).map(|rest| parse_frame(rest, u32::MAX / 2)) {
            pos += total;
            out.push(pos as u64);
        }
        out
    }

    /// The entries the store holds after `prev`.
    fn held(s: &mut Store) -> Vec<Entry> {
        let st = block_on(s.initial_state()).expect("state");
        if st.last.index <= st.prev.index {
            return Vec::new();
        }
        block_on(s.entries(st.prev.index + 1, st.last.index + 1)).expect("read")
    }

    /// Checks the store holds exactly `want` after `prev` (without printing whole logs).
    #[track_caller]
    fn assert_holds(s: &mut Store, want: &[Entry], what: &str) {
        let got = held(s);
        let last = |v: &[Entry]| v.last().map(|e| e.index);
        assert!(
            got == want,
            "{what}: holds {} entries (last {:?}), want {} (last {:?})",
            got.len(),
            last(&got),
            want.len(),
            last(want)
        );
    }

    fn name(path: &Path) -> String {
        path.file_name().and_then(|n| n.to_str()).expect("name").to_string()
    }

    /// Checks the store refuses every write with `Failed`.
    fn assert_failed(s: &mut Store, next: &[Entry]) {
        assert!(matches!(block_on(s.append(next)), Err(StoreError::Failed(_))), "append after a bad read");
        let hs = block_on(s.save_hard_state(&HardState { term: 9, voted_for: None }));
        assert!(matches!(hs, Err(StoreError::Failed(_))), "save_hard_state after a bad read: {hs:?}");
        assert!(matches!(block_on(s.truncate(3)), Err(StoreError::Failed(_))));
        let snap = s.save_snapshot(SnapshotMeta::default(), b"x");
        assert!(matches!(snap, Err(FileStoreError::Failed(_))), "save_snapshot after a bad read: {snap:?}");
    }

    #[test]
    fn a_bit_flip_in_a_read_entry_is_an_error_and_the_store_is_failed_afterwards() {
        let (fs, all) = filled(40);
        let segs = segments(&fs);
        assert!(segs.len() >= 3, "want several segments");
        // The last segment (indexed on open, read with read_at) and a sealed one (read
        // whole when first indexed).
        for (target, seed) in [(segs.len() - 1, 1), (0, 2), (1, 3)] {
            for bits in [1, 2, 5] {
                let mut s = open(&fs).expect("open");
                fs.flip_bits_on_read(Some(&segs[target]), bits, seed + u64::from(bits));
                match block_on(s.entries(2, 41)) {
                    Err(StoreError::Corrupt(msg)) => {
                        assert!(msg.contains(&name(&segs[target])) && msg.contains("offset"), "{msg}");
                    }
                    other => panic!("segment {target}, {bits} bits: expected a corruption error, got {other:?}"),
                }
                assert_eq!(fs.read_faults_fired(), 1 + 3 * (seed - 1) + u64::from(bits > 1) + u64::from(bits > 2));
                assert_failed(&mut s, &entries(41)[40..]);
                // Reads are checked one by one: a later read of the same entries is right.
                assert_eq!(block_on(s.entries(2, 41)).expect("read again"), all[1..]);
                drop(s);
                // Nothing was written: a restart holds every entry.
                assert_holds(&mut open(&fs).expect("reopen"), &all[1..], "held");
            }
        }
    }

    #[test]
    fn a_misdirected_read_of_an_entry_is_detected() {
        let (fs, all) = filled(40);
        let segs = segments(&fs);
        let last = segs.last().expect("a segment").clone();
        let misdirects = [
            (last.clone(), Misdirect::Shift(4096)),
            (last.clone(), Misdirect::Shift(-4096)),
            (last.clone(), Misdirect::Shift(-(SEGMENT_HEADER_LEN as i64))),
            (last.clone(), Misdirect::OtherFile(segs[0].clone())),
            (segs[1].clone(), Misdirect::OtherFile(segs[0].clone())),
            (segs[0].clone(), Misdirect::OtherFile(last.clone())),
        ];
        for (target, to) in misdirects {
            let mut s = open(&fs).expect("open");
            fs.misdirect_next_read(Some(&target), to.clone());
            match block_on(s.entries(2, 41)) {
                Err(StoreError::Corrupt(msg)) => assert!(msg.contains(&name(&target)), "{msg}"),
                other => panic!("{target:?} misdirected to {to:?}: expected a corruption error, got {other:?}"),
            }
            assert_failed(&mut s, &entries(41)[40..]);
            drop(s);
            assert_holds(&mut open(&fs).expect("reopen"), &all[1..], "held");
        }
    }

    #[test]
    fn corruption_at_rest_in_the_middle_of_the_last_segment_makes_open_refuse() {
        let (fs, _) = filled(40);
        let last = segments(&fs).last().expect("a segment").clone();
        let ends = frames(&fs, &last);
        assert!(ends.len() >= 4, "want several records in the last segment: {ends:?}");
        // One bit of every byte of every record but the last: its length, its checksum,
        // its payload.
        let before_last = ends[ends.len() - 2];
        for offset in SEGMENT_HEADER_LEN as u64..before_last {
            let mask = 1 << (offset % 8);
            fs.corrupt_at_rest(&last, offset, mask).expect("corrupt");
            let len = fs.file_len(&last).expect("len");
            match open(&fs) {
                Err(e @ FileStoreError::Corrupt { .. }) => {
                    let FileStoreError::Corrupt { path, offset: at, .. } = &e else { unreachable!() };
                    assert_eq!(path, &last);
                    let record = ends.iter().rev().find(|&&o| o <= offset).copied();
                    assert_eq!(Some(*at), record, "the offset of the bad record, byte {offset}");
                    let msg = e.to_string();
                    assert!(msg.contains(&name(&last)) && msg.contains(&format!("offset {at}")), "{msg}");
                }
                Err(other) => panic!("byte {offset}: expected a corruption error, got {other:?}"),
                Ok(_) => panic!("byte {offset}: the open accepted a corrupt record before valid ones"),
            }
            assert_eq!(fs.file_len(&last).expect("len"), len, "byte {offset}: the file is not truncated");
            fs.corrupt_at_rest(&last, offset, mask).expect("repair");
        }
        assert_eq!(held(&mut open(&fs).expect("open after the repair")).len(), 39);
    }

    #[test]
    fn a_flip_at_rest_in_the_last_record_of_the_last_segment_is_still_cut_as_a_torn_tail() {
        let (fs, all) = filled(40);
        let last = segments(&fs).last().expect("a segment").clone();
        let ends = frames(&fs, &last);
        let (start, end) = (ends[ends.len() - 2], ends[ends.len() - 1]);
        for offset in start..end {
            let fs2 = fs.clone();
            // Each byte on a fresh copy: the cut is durable.
            let (fs, _) = filled(40);
            drop(fs2);
            fs.corrupt_at_rest(&last, offset, 1 << (offset % 8)).expect("corrupt");
            let mut s = open(&fs).unwrap_or_else(|e| panic!("byte {offset}: {e}"));
            assert_holds(&mut s, &all[1..39], &format!("byte {offset}: the torn last record is cut"));
            block_on(s.append(&all[39..])).expect("the next append goes where the cut was");
            drop(s);
            assert_holds(&mut open(&fs).expect("reopen"), &all[1..], "held");
        }
    }

    #[test]
    fn a_read_fault_during_recovery_never_cuts_acknowledged_entries() {
        let (fs, all) = filled(40);
        let segs = segments(&fs);
        let last = segs.last().expect("a segment").clone();
        let mut refused = 0;
        let mut faults: Vec<ArmFault> = Vec::new();
        for seed in 0..40 {
            let last = last.clone();
            faults.push(Box::new(move |fs| fs.flip_bits_on_read(Some(&last), 1 + (seed % 3) as u32, seed)));
        }
        for to in [Misdirect::Shift(4096), Misdirect::Shift(-4096), Misdirect::OtherFile(segs[0].clone())] {
            let last = last.clone();
            faults.push(Box::new(move |fs| fs.misdirect_next_read(Some(&last), to.clone())));
        }
        for (i, arm) in faults.iter().enumerate() {
            arm(&fs);
            match open(&fs) {
                Ok(mut s) => {
                    fs.disarm();
                    assert_holds(&mut s, &all[1..], &format!("fault {i}: an open that succeeds holds every entry"));
                }
                Err(FileStoreError::Corrupt { path, .. }) => {
                    assert_eq!(path, last, "fault {i}");
                    refused += 1;
                }
                Err(e) => panic!("fault {i}: {e}"),
            }
            assert_holds(&mut open(&fs).expect("a later open"), &all[1..], &format!("fault {i}: nothing was cut"));
        }
        assert!(refused > 0, "some read fault made the open refuse");
    }

    #[test]
    fn a_read_fault_on_any_file_during_open_is_refused_or_harmless() {
        let (fs, all) = filled(40);
        {
            let s = open(&fs).expect("open");
            let meta = SnapshotMeta {
                last: LogId { index: 3, term: 1 },
                membership: Membership::new([1]),
                ..Default::default()
            };
            let mut s = s;
            s.save_snapshot(meta, &[7u8; 2000]).expect("snapshot");
        }
        let names = raft_store_file::Vfs::list(&fs, Path::new(DIR)).expect("list");
        for file in names.iter().filter(|n| *n != "LOCK") {
            let path = Path::new(DIR).join(file);
            for seed in 0..6 {
                fs.flip_bits_on_read(Some(&path), 1, seed);
                if let Ok(mut s) = open(&fs) {
                    fs.disarm();
                    assert_holds(&mut s, &all[1..], &format!("{file}, seed {seed}"));
                    assert_eq!(block_on(s.initial_state()).expect("state").hard_state.term, 5);
                    let snap = s.load_snapshot();
                    assert!(matches!(&snap, Ok(Some((_, d))) if d == &[7u8; 2000]), "{file}, seed {seed}: {snap:?}");
                }
                fs.disarm();
                assert_holds(&mut open(&fs).expect("a later open"), &all[1..], &format!("{file}, seed {seed}"));
            }
        }
    }

    #[test]
    fn after_a_torn_segment_creation_a_bad_last_record_of_the_segment_before_is_corruption() {
        let (fs, _) = filled(40);
        let last = segments(&fs).last().expect("a segment").clone();
        let ends = frames(&fs, &last);
        let count = ends.len() as u64 - 1;
        let first: u64 = name(&last)[..20].parse().expect("first index");
        // The next segment's creation was torn: its name is there, its bytes are zeros.
        let next = Path::new(DIR).join(format!("{:020}.seg", first + count));
        let mut f = raft_store_file::Vfs::create(&fs, &next, true).expect("create");
        raft_store_file::VfsFile::write_at(&mut f, 0, &[0u8; 300]).expect("write");
        raft_store_file::VfsFile::sync_all(&mut f).expect("sync");
        raft_store_file::Vfs::sync_dir(&fs, Path::new(DIR)).expect("sync dir");
        // The segment before it was synced whole before the next one was created: a bad
        // record there is no torn tail.
        let len = fs.file_len(&last).expect("len");
        fs.corrupt_at_rest(&last, ends[ends.len() - 2] + 9, 0x04).expect("corrupt");
        match open(&fs) {
            Err(FileStoreError::Corrupt { path, offset, .. }) => {
                assert_eq!((path, offset), (last.clone(), ends[ends.len() - 2]));
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
        assert_eq!(fs.file_len(&last).expect("len"), len, "nothing was cut");
    }

    fn snapshot_store(fs: &FaultFs, data: &[u8]) -> SnapshotMeta {
        let mut s = open(fs).expect("open");
        let meta = SnapshotMeta {
            last: LogId { index: 10, term: 2 },
            membership: Membership::new([1, 2]),
            ..Default::default()
        };
        s.save_snapshot(meta, data).expect("snapshot")
    }

    fn snapshot_path() -> PathBuf {
        Path::new(DIR).join(raft_store_file::format::snapshot_file_name(10))
    }

    /// Reads the snapshot in chunks of `len` as the leader does; the first error.
    fn read_chunks(s: &Store, meta: &SnapshotMeta, len: usize) -> Result<Vec<u8>, StoreError> {
        let snaps = raft::LogStore::snapshots(s);
        let mut out = Vec::new();
        while (out.len() as u64) < meta.size {
            out.extend(snaps.read_chunk(meta.last, out.len() as u64, len)?);
        }
        Ok(out)
    }

    #[test]
    fn snapshot_data_corrupted_at_rest_is_refused() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        for at in [0u64, 1, 2500, 4999] {
            let fs = FaultFs::new();
            let meta = snapshot_store(&fs, &data);
            let path = snapshot_path();
            let head = fs.file_len(&path).expect("len") - data.len() as u64;
            fs.corrupt_at_rest(&path, head + at, 0x80).expect("corrupt");
            let s = open(&fs).expect("the head is whole: the open succeeds");
            match s.load_snapshot() {
                Err(FileStoreError::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("byte {at}: expected a corruption error, got {other:?}"),
            }
            let mut s = open_again(s, &fs);
            let mut out = Vec::new();
            let r = raft::LogStore::snapshots(&s).open(meta.last).expect("open").read_to_end(&mut out);
            assert!(r.is_err(), "byte {at}: the streamed data fails its checksum");
            let mut s2 = open_again(s, &fs);
            match read_chunks(&s2, &meta, 512) {
                Err(StoreError::Corrupt(msg)) => assert!(msg.contains(&name(&path)), "{msg}"),
                other => panic!("byte {at}: expected the chunks to be refused, got {:?}", other.map(|d| d.len())),
            }
            assert_failed(&mut s2, &entries(1));
            s = s2;
            drop(s);
        }
    }

    /// Drops `s` and opens the store again.
    fn open_again(s: Store, fs: &FaultFs) -> Store {
        drop(s);
        open(fs).expect("reopen")
    }

    #[test]
    fn a_snapshot_head_corrupted_at_rest_makes_open_refuse() {
        let fs = FaultFs::new();
        snapshot_store(&fs, b"some snapshot data");
        let path = snapshot_path();
        let head = fs.file_len(&path).expect("len") - 18;
        for offset in 0..head {
            fs.corrupt_at_rest(&path, offset, 1 << (offset % 8)).expect("corrupt");
            match open(&fs) {
                Err(FileStoreError::Corrupt { path: p, .. }) => assert_eq!(p, path, "byte {offset}"),
                other => panic!("byte {offset}: expected a corruption error, got {other:?}"),
            }
            fs.corrupt_at_rest(&path, offset, 1 << (offset % 8)).expect("repair");
        }
    }

    #[test]
    fn a_bit_flip_or_misdirect_reading_snapshot_chunks_never_completes_a_transfer() {
        // Not periodic: a block 4096 bytes away holds other bytes.
        let mut rng = fastrand::Rng::with_seed(11);
        let data: Vec<u8> = (0..5000).map(|_| rng.u8(..)).collect();
        let fs = FaultFs::new();
        let meta = snapshot_store(&fs, &data);
        let path = snapshot_path();
        for k in 0..14u64 {
            let mut s = open(&fs).expect("open");
            if k < 10 {
                fs.flip_bits_on_read(Some(&path), 1 + (k % 2) as u32, k);
            } else {
                fs.misdirect_next_read(Some(&path), Misdirect::Shift(if k % 2 == 0 { 4096 } else { -512 }));
            }
            // The fault fires on the chunk read after `k % 5` good ones.
            let snaps = raft::LogStore::snapshots(&s);
            let mut out = Vec::new();
            for _ in 0..k % 5 {
                fs.disarm();
                out.extend(snaps.read_chunk(meta.last, out.len() as u64, 512).expect("chunk"));
            }
            if k % 5 != 0 {
                if k < 10 {
                    fs.flip_bits_on_read(Some(&path), 1 + (k % 2) as u32, k);
                } else {
                    fs.misdirect_next_read(Some(&path), Misdirect::Shift(if k % 2 == 0 { 4096 } else { -512 }));
                }
            }
            let mut result = Ok(());
            while (out.len() as u64) < meta.size {
                match snaps.read_chunk(meta.last, out.len() as u64, 512) {
                    Ok(chunk) => out.extend(chunk),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            match result {
                Err(StoreError::Corrupt(msg)) => assert!(msg.contains(&name(&path)), "{msg}"),
                other => panic!("fault {k}: the transfer completed ({other:?}), with right data: {}", out == data),
            }
            assert_failed(&mut s, &entries(1));
            drop(s);
            let s = open(&fs).expect("reopen");
            assert_eq!(read_chunks(&s, &meta, 512).expect("a clean read"), data);
        }
    }

    #[test]
    fn a_corrupt_term_and_vote_file_or_purge_marker_is_refused() {
        let (fs, all) = filled(10);
        for file in [HARD_STATE_FILE, META_FILE] {
            let path = Path::new(DIR).join(file);
            let len = fs.file_len(&path).expect("len");
            for offset in 0..len {
                fs.corrupt_at_rest(&path, offset, 1 << (offset % 8)).expect("corrupt");
                match open(&fs) {
                    Err(e @ FileStoreError::Corrupt { .. }) => assert!(e.to_string().contains(file), "{e}"),
                    other => panic!("{file} byte {offset}: expected a corruption error, got {other:?}"),
                }
                fs.corrupt_at_rest(&path, offset, 1 << (offset % 8)).expect("repair");
            }
            for seed in 0..10 {
                fs.flip_bits_on_read(Some(&path), 1, seed);
                assert!(matches!(open(&fs), Err(FileStoreError::Corrupt { .. })), "{file}: flip on read, seed {seed}");
                fs.misdirect_next_read(Some(&path), Misdirect::OtherFile(segments(&fs)[0].clone()));
                assert!(matches!(open(&fs), Err(FileStoreError::Corrupt { .. })), "{file}: misdirected read");
            }
        }
        let mut s = open(&fs).expect("open");
        assert_holds(&mut s, &all[1..], "held");
        assert_eq!(block_on(s.initial_state()).expect("state").hard_state, HardState { term: 5, voted_for: Some(1) });
    }
}

//! The raft crate's randomized cluster simulator, with every node on a `FileStore` over
//! the simulated file system `FaultFs` (feature `testing`): partitions, message loss,
//! crashes and restarts, with the simulator's invariant checks after every step and a
//! linearizability check of the client history. A crash of a node crashes its file
//! system (unsynced data lost or torn) and its restart runs the store's recovery.
//!
//! `RAFT_FS_SIM_SEEDS=N` runs N seeds in two parts (default 100); `RAFT_FS_SIM_SEED=S`
//! replays one with the simulator's trace printed.
//!
//! A third part adds read faults: now and then the nemesis arms a bit flip or a
//! misdirected read for a running node's next store call that reads (reading entries for
//! a lagging peer, truncate, purge, a snapshot chunk). The store must detect it (an error,
//! never the wrong bytes used) and fail; the node stops on the failed store (fail-stop)
//! and the nemesis restarts it like a crashed one, while the invariants and
//! linearizability hold. `RAFT_FS_SIM_FAULT_SEEDS=N` runs N seeds (default 40) from
//! `RAFT_FS_SIM_FAULT_BASE` (default 1000); `RAFT_FS_SIM_FAULT_SEED=S` replays one.
//!
//! Limit: the store's calls run whole between two simulation steps, so a node's crash
//! never lands inside one; crashes inside a call (between a write and its sync, during a
//! rename) are what `faults.rs` covers.

use std::any::Any;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use futures::FutureExt;
use raft::snapshot::{SnapshotMeta, SnapshotWriter};
use raft::testing::mem_store::DelayFn;
use raft::testing::sim_store::{BoxedStore, SimStore};
use raft::testing::simulator::{run_seed_with_stores, sweep as sweep_seeds, SimOptions};
use raft::{Entry, HardState, InitialState, LogId, LogIndex, LogStore, Membership, SnapshotStore, StoreError};
use raft_store_file::testing::{FaultFs, Misdirect};
use raft_store_file::{FileStore, FileStoreOptions};

const DIR: &str = "/node";

fn opts() -> FileStoreOptions {
    FileStoreOptions { cluster_id: 17, segment_size: 4096, ..Default::default() }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Shared = Arc<Mutex<FileStore<FaultFs>>>;

/// Runs a file store call, which never waits (its I/O is synchronous).
fn now<T>(f: impl std::future::Future<Output = T>) -> T {
    f.now_or_never().expect("file store calls complete without waiting")
}

/// Read faults armed by the nemesis that fired in a node's store call.
static FIRED: AtomicU64 = AtomicU64::new(0);
/// Store calls in which a read fault fired and that returned `Ok` (the wrong bytes used);
/// must stay 0. Snapshot chunk reads are not counted: a damaged chunk in the middle of a
/// transfer is caught at its last chunk.
static SILENT: AtomicU64 = AtomicU64::new(0);

/// A read fault the nemesis armed, waiting for the node's next store call that reads.
#[derive(Clone, Debug)]
enum ReadFault {
    /// One bit flipped, at a position drawn from the seed (always caught by CRC32C).
    Flip(u64),
    /// The bytes of the same file this far on.
    Misdirect(i64),
}

/// A node's pending read fault, shared by its store handles.
struct Faults {
    fs: FaultFs,
    pending: Mutex<Option<ReadFault>>,
}

impl Faults {
    /// Runs the node's store call `f` with the pending fault armed on the file system;
    /// returns its result and whether the fault fired. One that did not fire stays
    /// pending, disarmed in between (the checkers' reads never see it).
    fn around<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        let Some(fault) = lock(&self.pending).take() else { return (f(), false) };
        match &fault {
            ReadFault::Flip(seed) => self.fs.flip_bits_on_read(None, 1, *seed),
            ReadFault::Misdirect(shift) => self.fs.misdirect_next_read(None, Misdirect::Shift(*shift)),
        }
        let out = f();
        let fired = !self.fs.read_fault_armed();
        if fired {
            FIRED.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fs.disarm();
            lock(&self.pending).get_or_insert(fault);
        }
        (out, fired)
    }

    /// Like [`around`](Self::around), for a call that must fail when the fault fired.
    fn checked<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let (out, fired) = self.around(f);
        if fired && out.is_ok() {
            SILENT.fetch_add(1, Ordering::Relaxed);
        }
        out
    }
}

/// One node's storage: a `FaultFs` that outlives the node's incarnations.
struct FileSimStore {
    fs: FaultFs,
    /// The store of the running incarnation (owned by its node; dropped when it stops).
    current: Mutex<Weak<Mutex<FileStore<FaultFs>>>>,
    delay: Mutex<Option<DelayFn>>,
    /// Whether the nemesis may arm read faults.
    read_faults: bool,
    faults: Arc<Faults>,
}

impl FileSimStore {
    fn new(read_faults: bool) -> Self {
        let fs = FaultFs::new();
        let faults = Arc::new(Faults { fs: fs.clone(), pending: Mutex::new(None) });
        FileSimStore { fs, current: Mutex::new(Weak::new()), delay: Mutex::new(None), read_faults, faults }
    }

    /// Runs `f` on the running incarnation's store, or on one opened for the purpose.
    fn inspect<T>(&self, f: impl FnOnce(&mut FileStore<FaultFs>) -> T) -> T {
        let live = lock(&self.current).upgrade();
        match live {
            Some(store) => f(&mut lock(&store)),
            None => {
                let mut store = FileStore::open_with(self.fs.clone(), DIR, opts()).expect("open for inspection");
                f(&mut store)
            }
        }
    }
}

/// The node's handle: delays each write by the simulator's write delay, then runs it,
/// with the pending read fault armed.
struct Handle {
    store: Shared,
    delay: Option<DelayFn>,
    faults: Arc<Faults>,
}

impl Handle {
    async fn delay(&self) {
        if let Some(d) = &self.delay {
            d().await;
        }
    }
}

#[async_trait]
impl LogStore for Handle {
    async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
        now(lock(&self.store).initial_state())
    }

    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.delay().await;
        self.faults.checked(|| now(lock(&self.store).save_hard_state(hs)))
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.delay().await;
        self.faults.checked(|| now(lock(&self.store).append(entries)))
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
        self.delay().await;
        self.faults.checked(|| now(lock(&self.store).truncate(from)))
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
        self.delay().await;
        self.faults.checked(|| now(lock(&self.store).purge(upto)))
    }

    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
        self.faults.checked(|| now(lock(&self.store).entries(start, end)))
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(FaultySnapshots { inner: lock(&self.store).snapshots(), faults: self.faults.clone() })
    }

    async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
        self.delay().await;
        self.faults.checked(|| now(lock(&self.store).reset_to(snapshot)))
    }
}

/// The store's snapshots, with the pending read fault armed around chunk reads.
struct FaultySnapshots {
    inner: Arc<dyn SnapshotStore>,
    faults: Arc<Faults>,
}

impl SnapshotStore for FaultySnapshots {
    fn create(
        &self,
        last: LogId,
        membership: &Membership,
        membership_index: LogIndex,
    ) -> Result<Box<dyn SnapshotWriter>, StoreError> {
        self.inner.create(last, membership, membership_index)
    }

    fn latest(&self) -> Result<Option<SnapshotMeta>, StoreError> {
        self.inner.latest()
    }

    fn open(&self, last: LogId) -> Result<Box<dyn Read + Send>, StoreError> {
        self.inner.open(last)
    }

    fn read_chunk(&self, last: LogId, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        self.faults.around(|| self.inner.read_chunk(last, offset, len)).0
    }
}

impl SimStore for FileSimStore {
    fn open(&self) -> Result<BoxedStore, String> {
        let store = FileStore::open_with(self.fs.clone(), DIR, opts()).map_err(|e| e.to_string())?;
        let store = Arc::new(Mutex::new(store));
        *lock(&self.current) = Arc::downgrade(&store);
        let handle = Handle { store, delay: lock(&self.delay).clone(), faults: self.faults.clone() };
        Ok(BoxedStore(Box::new(handle)))
    }

    fn crash(&self, rng: &mut fastrand::Rng) {
        *lock(&self.current) = Weak::new();
        lock(&self.faults.pending).take();
        self.fs.crash(rng);
    }

    fn inject_fault(&self, rng: &mut fastrand::Rng) -> Option<String> {
        if !self.read_faults {
            return None;
        }
        // Shifts forward only: a read near the start of a file shifted back would read
        // from offset 0 again, the same bytes.
        let fault =
            if rng.bool() { ReadFault::Flip(rng.u64(..)) } else { ReadFault::Misdirect([512, 4096][rng.usize(..2)]) };
        let what = format!("{fault:?} on the next read");
        *lock(&self.faults.pending) = Some(fault);
        Some(what)
    }

    fn disarm_faults(&self) {
        lock(&self.faults.pending).take();
    }

    fn set_write_delay(&self, delay: Option<DelayFn>) {
        *lock(&self.delay) = delay;
    }

    fn entries_in(&self, start: LogIndex, end: LogIndex) -> Vec<Entry> {
        self.inspect(|s| {
            let st = now(s.initial_state()).expect("initial_state");
            let (from, to) = (start.max(st.prev.index + 1), end.min(st.last.index));
            if from > to {
                return Vec::new();
            }
            now(s.entries(from, to + 1)).expect("entries")
        })
    }

    fn entries_snapshot(&self) -> Vec<Entry> {
        self.entries_in(0, LogIndex::MAX - 1)
    }

    fn purged_index(&self) -> LogIndex {
        self.inspect(|s| now(s.initial_state()).expect("initial_state").prev.index)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn make_store(_id: u64) -> Arc<dyn SimStore> {
    Arc::new(FileSimStore::new(false))
}

fn make_store_with_read_faults(_id: u64) -> Arc<dyn SimStore> {
    Arc::new(FileSimStore::new(true))
}

/// Prints the seed when the test panics while it runs (a store check failed).
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failing seed: {} (replay with RAFT_FS_SIM_SEED={})", self.0, self.0);
        }
    }
}

fn sweep(part: u64) {
    if let Some(seed) = env_u64("RAFT_FS_SIM_SEED") {
        if part != 0 {
            return;
        }
        let _guard = SeedGuard(seed);
        let mut opts = SimOptions::for_seed(seed);
        opts.verbose = true;
        match run_seed_with_stores(seed, opts, make_store) {
            Ok(r) => eprintln!("seed {seed} passed: {r:?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let per_part = env_u64("RAFT_FS_SIM_SEEDS").unwrap_or(100) / 2;
    let base = part * per_part;
    let r = sweep_seeds(base..base + per_part, |seed| {
        let _guard = SeedGuard(seed);
        run_seed_with_stores(seed, SimOptions::for_seed(seed), make_store)
    });
    let (ops, crashes, failures) = (r.ops_ok, r.crashes, r.failures);
    eprintln!(
        "file store simulator sweep part {part}: {per_part} seeds ({base}..{}) in {:.1}s; {ops} client ops, {crashes} crashes",
        base + per_part,
        r.seconds
    );
    assert!(failures.is_empty(), "failing seeds (replay each with RAFT_FS_SIM_SEED=<seed>): {failures:?}");
}

#[test]
fn simulator_sweep_on_file_stores_part_0() {
    sweep(0);
}

#[test]
fn simulator_sweep_on_file_stores_part_1() {
    sweep(1);
}

#[test]
fn simulator_sweep_on_file_stores_with_read_faults_fail_stops_the_node() {
    if let Some(seed) = env_u64("RAFT_FS_SIM_FAULT_SEED") {
        let _guard = SeedGuard(seed);
        let mut opts = SimOptions::for_seed(seed);
        opts.verbose = true;
        match run_seed_with_stores(seed, opts, make_store_with_read_faults) {
            Ok(r) => eprintln!("seed {seed} passed: {r:?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let seeds = env_u64("RAFT_FS_SIM_FAULT_SEEDS").unwrap_or(40);
    let base = env_u64("RAFT_FS_SIM_FAULT_BASE").unwrap_or(1000);
    let r = sweep_seeds(base..base + seeds, |seed| {
        let _guard = SeedGuard(seed);
        run_seed_with_stores(seed, SimOptions::for_seed(seed), make_store_with_read_faults)
    });
    let (fired, silent) = (FIRED.load(Ordering::Relaxed), SILENT.load(Ordering::Relaxed));
    eprintln!(
        "file store simulator sweep with read faults: {seeds} seeds ({base}..{}) in {:.1}s; {} client ops, {} crashes, \
         {} read faults armed, {fired} fired, {} nodes fail-stopped and restarted, {silent} faults that went unnoticed",
        base + seeds,
        r.seconds,
        r.ops_ok,
        r.crashes,
        r.store_faults,
        r.fail_stops
    );
    assert!(r.failures.is_empty(), "failing seeds (replay each with RAFT_FS_SIM_FAULT_SEED=<seed>): {:?}", r.failures);
    assert_eq!(silent, 0, "a store call in which a read fault fired returned Ok");
    if seeds >= 20 {
        assert!(fired > 0 && r.fail_stops > 0, "read faults fired ({fired}) and nodes fail-stopped ({})", r.fail_stops);
    }
}

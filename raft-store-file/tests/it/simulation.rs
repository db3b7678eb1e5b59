//! The raft crate's randomized cluster simulator, with every node on a `FileStore` over
//! the simulated file system `FaultFs` (feature `testing`): partitions, message loss,
//! crashes and restarts, with the simulator's invariant checks after every step and a
//! linearizability check of the client history. A crash of a node crashes its file
//! system (unsynced data lost or torn) and its restart runs the store's recovery.
//!
//! `RAFT_FS_SIM_SEEDS=N` runs N seeds in two parts (default 100); `RAFT_FS_SIM_SEED=S`
//! replays one with the simulator's trace printed.
//!
//! Limit: the store's calls run whole between two simulation steps, so a node's crash
//! never lands inside one; crashes inside a call (between a write and its sync, during a
//! rename) are what `faults.rs` covers.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use futures::FutureExt;
use raft::testing::mem_store::DelayFn;
use raft::testing::sim_store::{BoxedStore, SimStore};
use raft::testing::simulator::{run_seed_with_stores, sweep as sweep_seeds, SimOptions};
use raft::{Entry, HardState, InitialState, LogId, LogIndex, LogStore, SnapshotStore, StoreError};
use raft_store_file::testing::FaultFs;
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

/// One node's storage: a `FaultFs` that outlives the node's incarnations.
struct FileSimStore {
    fs: FaultFs,
    /// The store of the running incarnation (owned by its node; dropped when it stops).
    current: Mutex<Weak<Mutex<FileStore<FaultFs>>>>,
    delay: Mutex<Option<DelayFn>>,
}

impl FileSimStore {
    fn new() -> Self {
        FileSimStore { fs: FaultFs::new(), current: Mutex::new(Weak::new()), delay: Mutex::new(None) }
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

/// The node's handle: delays each write by the simulator's write delay, then runs it.
struct Handle {
    store: Shared,
    delay: Option<DelayFn>,
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
        now(lock(&self.store).save_hard_state(hs))
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.delay().await;
        now(lock(&self.store).append(entries))
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
        self.delay().await;
        now(lock(&self.store).truncate(from))
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
        self.delay().await;
        now(lock(&self.store).purge(upto))
    }

    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
        now(lock(&self.store).entries(start, end))
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        lock(&self.store).snapshots()
    }

    async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
        self.delay().await;
        now(lock(&self.store).reset_to(snapshot))
    }
}

impl SimStore for FileSimStore {
    fn open(&self) -> Result<BoxedStore, String> {
        let store = FileStore::open_with(self.fs.clone(), DIR, opts()).map_err(|e| e.to_string())?;
        let store = Arc::new(Mutex::new(store));
        *lock(&self.current) = Arc::downgrade(&store);
        Ok(BoxedStore(Box::new(Handle { store, delay: lock(&self.delay).clone() })))
    }

    fn crash(&self, rng: &mut fastrand::Rng) {
        *lock(&self.current) = Weak::new();
        self.fs.crash(rng);
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
    Arc::new(FileSimStore::new())
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

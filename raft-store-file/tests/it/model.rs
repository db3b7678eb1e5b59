//! A randomized model test with simulated crashes: random appends, truncates, purges and
//! hard state saves against a model log; at random points the process "crashes" during an
//! append, which is simulated by cutting the bytes that append wrote (never synced, as far
//! as the caller knows) at a random offset. After every reopen the store must hold a
//! prefix of the model that contains everything reported durable.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::executor::block_on;
use raft::{Entry, EntryPayload, HardState, LogId, LogStore};
use raft_store_file::{FileStore, FileStoreOptions};

fn opts() -> FileStoreOptions {
    FileStoreOptions { cluster_id: 5, segment_size: 600, ..Default::default() }
}

fn segments(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| {
            let len = std::fs::metadata(&p).expect("metadata").len();
            (p, len)
        })
        .collect();
    v.sort();
    v
}

fn entry(rng: &mut fastrand::Rng, term: u64, index: u64) -> Entry {
    let data: Vec<u8> = (0..rng.usize(..120)).map(|_| rng.u8(..)).collect();
    Entry { term, index, payload: EntryPayload::Command(Bytes::from(data)) }
}

struct Model {
    prev: LogId,
    /// Entries after `prev`.
    log: Vec<Entry>,
    hs: HardState,
}

impl Model {
    fn last(&self) -> LogId {
        self.log.last().map_or(self.prev, |e| LogId { term: e.term, index: e.index })
    }
}

/// Checks the store against the model; `at_least` is the last index reported durable.
fn check(store: &mut FileStore, m: &mut Model, at_least: u64) {
    let st = block_on(store.initial_state()).expect("state");
    assert_eq!(st.prev, m.prev, "prev");
    assert_eq!(st.hard_state, m.hs, "hard state");
    assert!(st.last.index >= at_least, "lost entries reported durable: last {} < {at_least}", st.last.index);
    assert!(st.last.index <= m.last().index, "entries that were never written");
    let keep = (st.last.index - m.prev.index) as usize;
    m.log.truncate(keep);
    assert_eq!(st.last, m.last(), "last");
    if !m.log.is_empty() {
        let got = block_on(store.entries(m.prev.index + 1, st.last.index + 1)).expect("read");
        assert_eq!(got, m.log, "entries");
    }
}

#[test]
fn random_operations_with_torn_appends_keep_a_durable_prefix() {
    for seed in 0..30 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FileStore::open(dir.path(), opts()).expect("open");
        let mut m = Model { prev: LogId::default(), log: Vec::new(), hs: HardState::default() };
        let mut term = 1;
        for _ in 0..150 {
            match rng.u32(..100) {
                0..=54 => {
                    let last = m.last().index;
                    let batch: Vec<Entry> = (1..=rng.u64(1..=6)).map(|i| entry(&mut rng, term, last + i)).collect();
                    let crash = rng.u32(..6) == 0;
                    let before = segments(dir.path());
                    block_on(store.append(&batch)).expect("append");
                    m.log.extend(batch);
                    if crash {
                        drop(store);
                        let after = segments(dir.path());
                        // The file the append wrote: a new segment, or the grown last one.
                        let (path, len) = after.last().expect("a segment").clone();
                        let old_len = before.iter().find(|(p, _)| *p == path).map_or(0, |(_, l)| *l);
                        let cut = rng.u64(old_len..=len);
                        let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open segment");
                        f.set_len(cut).expect("cut");
                        drop(f);
                        store = FileStore::open(dir.path(), opts()).expect("reopen after a torn append");
                        check(&mut store, &mut m, last);
                    }
                }
                55..=69 => {
                    let last = m.last().index;
                    let from = rng.u64(m.prev.index + 1..=last + 1);
                    block_on(store.truncate(from)).expect("truncate");
                    m.log.truncate((from - 1 - m.prev.index) as usize);
                    term += 1;
                }
                70..=79 => {
                    let upto = rng.u64(m.prev.index..=m.last().index);
                    block_on(store.purge(upto)).expect("purge");
                    if upto > m.prev.index {
                        let n = (upto - m.prev.index) as usize;
                        let purged: Vec<Entry> = m.log.drain(..n).collect();
                        if let Some(e) = purged.last() {
                            m.prev = LogId { term: e.term, index: e.index };
                        }
                    }
                }
                80..=89 => {
                    term += 1;
                    m.hs = HardState { term, voted_for: rng.bool().then(|| rng.u64(1..=5)) };
                    block_on(store.save_hard_state(&m.hs)).expect("save_hard_state");
                }
                _ => {
                    drop(store);
                    store = FileStore::open(dir.path(), opts()).expect("reopen");
                    let last = m.last().index;
                    check(&mut store, &mut m, last);
                }
            }
        }
        drop(store);
        let mut store = FileStore::open(dir.path(), opts()).expect("final reopen");
        let last = m.last().index;
        check(&mut store, &mut m, last);
    }
}

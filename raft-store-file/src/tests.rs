//! Tests that need the internal fault-injection hook.

use futures::executor::block_on;
use raft::testing::conformance::sample_entries;

use super::*;

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, FileStoreOptions::default()).expect("open")
}

#[test]
fn a_failed_append_sync_stops_every_later_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    block_on(s.append(&sample_entries(1, 1..=3))).expect("append");
    s.fail_next_sync = true;
    assert!(matches!(block_on(s.append(&sample_entries(1, 4..=5))), Err(StoreError::Io(_))));
    assert!(matches!(block_on(s.append(&sample_entries(1, 4..=5))), Err(StoreError::Failed(_))));
    assert!(matches!(block_on(s.truncate(2)), Err(StoreError::Failed(_))));
    assert!(matches!(block_on(s.purge(1)), Err(StoreError::Failed(_))));
    assert!(matches!(block_on(s.save_hard_state(&HardState { term: 2, voted_for: None })), Err(StoreError::Failed(_))));
    drop(s);
    // After a restart the durable prefix is there.
    let mut s = open(dir.path());
    let st = block_on(s.initial_state()).expect("state");
    assert!(st.last.index >= 3);
    assert_eq!(block_on(s.entries(1, 4)).expect("read"), sample_entries(1, 1..=3));
}

#[test]
fn a_failed_truncate_sync_stops_every_later_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    block_on(s.append(&sample_entries(1, 1..=6))).expect("append");
    s.fail_next_sync = true;
    assert!(block_on(s.truncate(3)).is_err());
    assert!(matches!(block_on(s.append(&sample_entries(2, 3..=3))), Err(StoreError::Failed(_))));
}

#[test]
fn reading_many_sealed_segments_keeps_few_indexes_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = FileStoreOptions { segment_size: 1, ..Default::default() };
    let mut s = FileStore::open(dir.path(), opts.clone()).expect("open");
    for i in 1..=40 {
        block_on(s.append(&sample_entries(1, i..=i))).expect("append");
    }
    drop(s);
    let mut s = FileStore::open(dir.path(), opts).expect("reopen");
    assert_eq!(s.segments.iter().filter(|s| s.index.is_some()).count(), 1, "only the last segment is indexed");
    for i in 1..=40 {
        assert_eq!(block_on(s.entries(i, i + 1)).expect("read"), sample_entries(1, i..=i));
    }
    assert_eq!(block_on(s.entries(1, 41)).expect("read"), sample_entries(1, 1..=40));
    let indexed = s.segments.iter().filter(|s| s.index.is_some()).count();
    assert!(indexed <= MAX_INDEXED_SEALED + 1, "{indexed} segments indexed");
    block_on(s.truncate(3)).expect("truncate");
    assert_eq!(block_on(s.entries(1, 3)).expect("read"), sample_entries(1, 1..=2));
}

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

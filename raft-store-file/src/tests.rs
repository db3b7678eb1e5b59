//! Tests that look at the store's internals, or inject faults through `FaultFs`.

use futures::executor::block_on;
use raft::testing::conformance::sample_entries;

use super::*;
use crate::segment::MAX_INDEXED_SEALED;
use crate::testing::FaultFs;

fn open_fault(fs: &FaultFs) -> FileStore<FaultFs> {
    FileStore::open_with(fs.clone(), "/data", FileStoreOptions::default()).expect("open")
}

#[test]
fn a_failed_append_sync_stops_every_later_write() {
    let fs = FaultFs::new();
    let mut s = open_fault(&fs);
    block_on(s.append(&sample_entries(1, 1..=3))).expect("append");
    fs.fail_next_sync();
    assert!(matches!(block_on(s.append(&sample_entries(1, 4..=5))), Err(StoreError::Io(_))));
    assert!(matches!(block_on(s.append(&sample_entries(1, 4..=5))), Err(StoreError::Failed(_))));
    assert!(matches!(block_on(s.truncate(2)), Err(StoreError::Failed(_))));
    assert!(matches!(block_on(s.purge(1)), Err(StoreError::Failed(_))));
    assert!(matches!(block_on(s.save_hard_state(&HardState { term: 2, voted_for: None })), Err(StoreError::Failed(_))));
    assert!(matches!(s.reset_to_snapshot(LogId { index: 9, term: 1 }), Err(FileStoreError::Failed(_))));
    // Reads keep working.
    assert_eq!(block_on(s.entries(1, 4)).expect("read"), sample_entries(1, 1..=3));
    drop(s);
    // After a restart the durable prefix is there.
    fs.crash(&mut fastrand::Rng::with_seed(1));
    let mut s = open_fault(&fs);
    let st = block_on(s.initial_state()).expect("state");
    assert!(st.last.index >= 3);
    assert_eq!(block_on(s.entries(1, 4)).expect("read"), sample_entries(1, 1..=3));
}

#[test]
fn a_failed_truncate_sync_stops_every_later_write() {
    let fs = FaultFs::new();
    let mut s = open_fault(&fs);
    block_on(s.append(&sample_entries(1, 1..=6))).expect("append");
    fs.fail_next_sync();
    assert!(block_on(s.truncate(3)).is_err());
    assert!(matches!(block_on(s.append(&sample_entries(2, 3..=3))), Err(StoreError::Failed(_))));
}

/// Streams `data` into a snapshot ending at `last`.
fn save_snapshot(s: &FileStore<FaultFs>, last: LogId, data: &[u8]) -> Result<raft::SnapshotMeta, StoreError> {
    use std::io::Write;
    let mut w = s.snapshots().create(last, &raft::Membership::default(), 0)?;
    w.write_all(data)?;
    w.finish()
}

#[test]
fn a_failed_reset_stops_every_later_write() {
    for n in 0..12 {
        let fs = FaultFs::new();
        let mut s = open_fault(&fs);
        block_on(s.append(&sample_entries(1, 1..=6))).expect("append");
        fs.fail_after(n);
        let r = s.reset_to_snapshot(LogId { index: 4, term: 2 });
        fs.disarm();
        if r.is_ok() {
            // The call needed fewer than n + 1 operations.
            continue;
        }
        assert!(matches!(block_on(s.append(&sample_entries(1, 7..=7))), Err(StoreError::Failed(_))));
    }
}

#[test]
fn a_failed_snapshot_write_refuses_later_snapshots_and_keeps_the_previous_one() {
    let mut failures = 0;
    for n in 0..12 {
        let fs = FaultFs::new();
        let s = open_fault(&fs);
        save_snapshot(&s, LogId { index: 2, term: 1 }, b"two").expect("first snapshot");
        fs.fail_after(n);
        let r = save_snapshot(&s, LogId { index: 4, term: 1 }, &[9; 3000]);
        fs.disarm();
        if r.is_ok() {
            continue;
        }
        failures += 1;
        assert!(matches!(save_snapshot(&s, LogId { index: 5, term: 1 }, b"five"), Err(StoreError::Failed(_))));
        // Reopened, the store holds one of the two, whole.
        drop(s);
        fs.crash(&mut fastrand::Rng::with_seed(n));
        let s = open_fault(&fs);
        let meta = s.snapshot_meta().expect("a snapshot survives");
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut s.snapshots().open(meta.last).expect("open"), &mut data).expect("read");
        match meta.last.index {
            2 => assert_eq!(data, b"two"),
            4 => assert_eq!(data, vec![9; 3000]),
            i => panic!("a snapshot at {i}"),
        }
    }
    assert!(failures > 0, "some injected failure hit the save");
}

#[test]
fn a_read_that_fails_its_checksum_stops_every_later_write_and_snapshot() {
    let fs = FaultFs::new();
    let mut s = open_fault(&fs);
    block_on(s.append(&sample_entries(1, 1..=6))).expect("append");
    fs.flip_bits_on_read(None, 1, 5);
    assert!(matches!(block_on(s.entries(2, 5)), Err(StoreError::Corrupt(_))));
    assert!(matches!(block_on(s.append(&sample_entries(1, 7..=7))), Err(StoreError::Failed(_))));
    assert!(matches!(block_on(s.purge(2)), Err(StoreError::Failed(_))));
    assert!(matches!(save_snapshot(&s, LogId { index: 2, term: 1 }, b"two"), Err(StoreError::Failed(_))));
    // Every read is checked on its own: the next one returns the right entries.
    assert_eq!(block_on(s.entries(1, 7)).expect("read"), sample_entries(1, 1..=6));
}

#[test]
fn a_failed_log_write_also_refuses_snapshots() {
    let fs = FaultFs::new();
    let mut s = open_fault(&fs);
    block_on(s.append(&sample_entries(1, 1..=3))).expect("append");
    fs.fail_next_sync();
    assert!(block_on(s.append(&sample_entries(1, 4..=4))).is_err());
    assert!(matches!(save_snapshot(&s, LogId { index: 2, term: 1 }, b"two"), Err(StoreError::Failed(_))));
}

#[test]
fn appending_across_many_segments_keeps_few_indexes_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = FileStoreOptions { segment_size: 1, ..Default::default() };
    let mut s = FileStore::open(dir.path(), opts).expect("open");
    for i in 1..=40 {
        block_on(s.append(&sample_entries(1, i..=i))).expect("append");
        let indexed = s.segments.iter().filter(|s| s.index.is_some()).count();
        assert!(indexed <= MAX_INDEXED_SEALED + 1, "{indexed} segments indexed after {i} appends");
    }
    assert_eq!(s.segments.len(), 40);
    // The segment sealed last kept its offsets; every entry still reads back.
    assert!(s.segments[38].index.is_some());
    assert_eq!(block_on(s.entries(1, 41)).expect("read"), sample_entries(1, 1..=40));
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

//! Snapshot files and the log reset, on real directories: round trips, replacement,
//! reopen, corruption (every byte flipped, every truncation), leftovers of crashes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::executor::block_on;
use raft::{Entry, EntryPayload, HardState, LogId, LogStore, Membership, SnapshotMeta, StoreError};
use raft_store_file::format::{self, RESET_MAGIC};
use raft_store_file::{FileStore, FileStoreError, FileStoreOptions, RESET_FILE};

fn opts() -> FileStoreOptions {
    FileStoreOptions { cluster_id: 21, segment_size: 700, ..Default::default() }
}

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, opts()).expect("open")
}

fn entry(term: u64, index: u64) -> Entry {
    let data: Vec<u8> = (0..30 + index as usize % 50).map(|i| (index as usize + i) as u8).collect();
    Entry { term, index, payload: EntryPayload::Command(Bytes::from(data)) }
}

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| entry(term, i)).collect()
}

fn membership() -> Membership {
    let mut membership = Membership::new([1, 2, 3]);
    membership.learners.insert(4);
    membership
}

/// Streams `data` into a new snapshot ending at (index, term), in small writes.
fn save(s: &FileStore, index: u64, term: u64, data: &[u8]) -> Result<SnapshotMeta, StoreError> {
    let mut w = s.snapshots().create(LogId { index, term }, &membership(), 1)?;
    for piece in data.chunks(1000) {
        w.write_all(piece)?;
    }
    w.finish()
}

/// The latest snapshot's (last entry, membership) and data, read back through the store.
fn load(s: &FileStore) -> Result<Option<(LogId, Membership, Vec<u8>)>, std::io::Error> {
    let Some(meta) = s.snapshots().latest().map_err(std::io::Error::other)? else { return Ok(None) };
    let mut data = Vec::new();
    s.snapshots().open(meta.last).map_err(std::io::Error::other)?.read_to_end(&mut data)?;
    Ok(Some((meta.last, meta.membership, data)))
}

fn at(index: u64, term: u64) -> LogId {
    LogId { index, term }
}

fn held(s: &FileStore) -> Option<LogId> {
    s.snapshot_meta().map(|m| m.last)
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
        .collect();
    v.sort();
    v
}

#[test]
fn a_saved_snapshot_loads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    assert_eq!(s.snapshot_meta(), None);
    assert!(load(&s).expect("load").is_none());
    let meta = save(&s, 7, 2, b"the state machine").expect("save");
    assert_eq!((meta.size, meta.checksum), (17, crc32c::crc32c(b"the state machine")));
    assert_eq!(s.snapshot_meta(), Some(meta));
    assert_eq!(load(&s).expect("load"), Some((at(7, 2), membership(), b"the state machine".to_vec())));
    // An empty snapshot is fine too.
    save(&s, 9, 2, b"").expect("save");
    assert_eq!(load(&s).expect("load"), Some((at(9, 2), membership(), Vec::new())));
}

#[test]
fn a_snapshot_survives_a_reopen_and_is_read_in_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    let mut s = open(dir.path());
    block_on(s.append(&entries(1, 1..=10))).expect("append");
    save(&s, 5, 1, &data).expect("save");
    drop(s);
    let s = open(dir.path());
    assert_eq!(held(&s), Some(at(5, 1)));
    assert_eq!(load(&s).expect("load"), Some((at(5, 1), membership(), data.clone())));
    let snaps = s.snapshots();
    assert_eq!(snaps.read_chunk(at(5, 1), 1_000_000, 10).expect("chunk"), data[1_000_000..1_000_010]);
    assert_eq!(snaps.read_chunk(at(5, 1), 2_999_990, 100).expect("chunk"), data[2_999_990..], "short at the end");
    assert!(snaps.read_chunk(at(5, 1), 3_000_000, 100).expect("chunk").is_empty());
    assert!(snaps.read_chunk(at(5, 1), u64::MAX, 100).expect("chunk").is_empty(), "no overflow far past the end");
    assert!(matches!(snaps.read_chunk(at(6, 1), 0, 1), Err(StoreError::Unavailable { .. })));
    assert!(matches!(snaps.open(at(5, 2)), Err(StoreError::Unavailable { .. })));
}

#[test]
fn a_newer_snapshot_replaces_the_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    save(&s, 5, 1, b"five").expect("save");
    save(&s, 9, 2, b"nine").expect("save");
    assert_eq!(files_with(dir.path(), ".snap"), vec![dir.path().join(format::snapshot_file_name(9))]);
    // The same index again replaces it in place.
    save(&s, 9, 2, b"nine again").expect("save");
    assert_eq!(files_with(dir.path(), ".snap").len(), 1);
    // An older one is refused and changes nothing.
    assert!(matches!(save(&s, 8, 2, b"eight"), Err(StoreError::Invalid(_))));
    assert!(files_with(dir.path(), ".tmp").is_empty(), "the refused one's temp file is gone");
    block_on(s.append(&entries(1, 1..=2))).expect("the store still takes writes");
    drop(s);
    let s = open(dir.path());
    assert_eq!(load(&s).expect("load"), Some((at(9, 2), membership(), b"nine again".to_vec())));
}

#[test]
fn an_unfinished_snapshot_leaves_the_previous_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    save(&s, 5, 1, b"five").expect("save");
    let mut w = s.snapshots().create(at(9, 2), &membership(), 1).expect("create");
    w.write_all(&[7; 5000]).expect("write");
    drop(w);
    assert!(files_with(dir.path(), ".tmp").is_empty(), "the abandoned temp file is removed");
    assert_eq!(load(&s).expect("load"), Some((at(5, 1), membership(), b"five".to_vec())));
}

#[test]
fn an_older_snapshot_left_by_a_crash_is_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    save(&s, 5, 1, b"five").expect("save");
    let five = std::fs::read(dir.path().join(format::snapshot_file_name(5))).expect("read");
    save(&s, 9, 2, b"nine").expect("save");
    drop(s);
    // As if the crash came after the new snapshot's rename but before the old one's delete.
    std::fs::write(dir.path().join(format::snapshot_file_name(5)), five).expect("write");
    let s = open(dir.path());
    assert_eq!(held(&s), Some(at(9, 2)));
    assert_eq!(files_with(dir.path(), ".snap"), vec![dir.path().join(format::snapshot_file_name(9))]);
}

#[test]
fn after_a_reset_the_log_continues_at_the_snapshot_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    block_on(s.append(&entries(1, 1..=30))).expect("append");
    block_on(s.save_hard_state(&HardState { term: 3, voted_for: Some(2) })).expect("hard state");
    let at = LogId { index: 50, term: 3 };
    save(&s, 50, 3, b"fifty").expect("save");
    s.reset_to_snapshot(at).expect("reset");
    assert!(files_with(dir.path(), ".seg").is_empty(), "every segment is deleted");
    assert!(!dir.path().join(RESET_FILE).exists(), "the reset marker is removed");
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!((st.prev, st.last), (at, at));
    assert!(matches!(block_on(s.entries(30, 31)), Err(StoreError::Unavailable { .. })));
    assert!(matches!(block_on(s.append(&entries(3, 31..=31))), Err(StoreError::Invalid(_))));
    block_on(s.append(&entries(3, 51..=60))).expect("append after the reset");
    drop(s);
    let mut s = open(dir.path());
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!(st.hard_state, HardState { term: 3, voted_for: Some(2) });
    assert_eq!((st.prev, st.last), (at, LogId { index: 60, term: 3 }));
    assert_eq!(block_on(s.entries(51, 61)).expect("read"), entries(3, 51..=60));
    assert_eq!(held(&s), Some(at));
}

#[test]
fn a_reset_survives_a_reopen_with_an_empty_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    block_on(s.append(&entries(1, 1..=30))).expect("append");
    // Reset to a point inside the old log, with another term: every old entry goes.
    let at = LogId { index: 12, term: 4 };
    s.reset_to_snapshot(at).expect("reset");
    drop(s);
    let mut s = open(dir.path());
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!((st.prev, st.last), (at, at));
    block_on(s.append(&entries(4, 13..=14))).expect("append");
    assert_eq!(block_on(s.entries(13, 15)).expect("read"), entries(4, 13..=14));
}

#[test]
fn purges_and_resets_interleave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    block_on(s.append(&entries(1, 1..=40))).expect("append");
    block_on(s.purge(10)).expect("purge");
    s.reset_to_snapshot(LogId { index: 25, term: 2 }).expect("reset");
    // Purging at or below the reset point is a no-op; beyond the (empty) log it is refused.
    block_on(s.purge(25)).expect("purge at prev");
    assert!(matches!(block_on(s.purge(26)), Err(StoreError::Invalid(_))));
    block_on(s.append(&entries(2, 26..=60))).expect("append");
    block_on(s.purge(45)).expect("purge after the reset");
    drop(s);
    let mut s = open(dir.path());
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!((st.prev, st.last), (LogId { index: 45, term: 2 }, LogId { index: 60, term: 2 }));
    assert_eq!(block_on(s.entries(46, 61)).expect("read"), entries(2, 46..=60));
    s.reset_to_snapshot(LogId { index: 70, term: 5 }).expect("second reset");
    block_on(s.truncate(71)).expect("truncate past the end is a no-op");
    drop(s);
    let mut s = open(dir.path());
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!((st.prev, st.last), (LogId { index: 70, term: 5 }, LogId { index: 70, term: 5 }));
}

#[test]
fn an_interrupted_reset_is_finished_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    block_on(s.append(&entries(1, 1..=40))).expect("append");
    drop(s);
    // The state a crash right after the reset marker became durable leaves behind.
    let mut body = Vec::new();
    body.extend_from_slice(&33u64.to_le_bytes());
    body.extend_from_slice(&6u64.to_le_bytes());
    let marker = format::encode_small_file(RESET_MAGIC, opts().cluster_id, &body);
    std::fs::write(dir.path().join(RESET_FILE), marker).expect("write marker");
    let mut s = open(dir.path());
    let at = LogId { index: 33, term: 6 };
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!((st.prev, st.last), (at, at));
    assert!(files_with(dir.path(), ".seg").is_empty());
    assert!(!dir.path().join(RESET_FILE).exists());
}

/// Builds a directory with a small snapshot; returns its path and bytes.
fn small_snapshot(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut s = open(dir);
    block_on(s.append(&entries(1, 1..=5))).expect("append");
    save(&s, 3, 1, b"abc").expect("save");
    drop(s);
    let path = dir.join(format::snapshot_file_name(3));
    let bytes = std::fs::read(&path).expect("read");
    (path, bytes)
}

fn expect_corrupt_naming(dir: &Path, path: &Path, what: &str) {
    match FileStore::open(dir, opts()) {
        Err(FileStoreError::Corrupt { path: p, offset, .. }) => {
            assert_eq!(p, path, "{what}");
            let len = std::fs::metadata(path).expect("metadata").len();
            assert!(offset <= len.max(1), "{what}: offset {offset} is inside the file of {len} bytes");
        }
        other => panic!("{what}: expected a corruption error, got {other:?}"),
    }
}

#[test]
fn every_bit_flip_in_a_snapshot_is_caught_at_open_or_when_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, clean) = small_snapshot(dir.path());
    let data_at = clean.len() - 3;
    for byte in 0..clean.len() {
        for bit in [0, 3, 7] {
            let mut d = clean.clone();
            d[byte] ^= 1 << bit;
            std::fs::write(&path, &d).expect("write");
            let what = format!("flip of bit {bit} of byte {byte}");
            if byte < data_at {
                // The head is checked when the store opens.
                expect_corrupt_naming(dir.path(), &path, &what);
            } else {
                // The data is checked by its reader.
                let s = open(dir.path());
                let e = load(&s).expect_err(&what);
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{what}");
            }
        }
    }
    std::fs::write(&path, &clean).expect("restore");
    assert_eq!(held(&open(dir.path())), Some(at(3, 1)));
}

#[test]
fn every_truncation_of_a_snapshot_fails_the_open_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, clean) = small_snapshot(dir.path());
    for cut in 0..clean.len() {
        std::fs::write(&path, &clean[..cut]).expect("write");
        expect_corrupt_naming(dir.path(), &path, &format!("cut at {cut}"));
    }
}

#[test]
fn a_snapshot_corrupted_after_the_open_fails_the_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, mut bytes) = small_snapshot(dir.path());
    let s = open(dir.path());
    let at = bytes.len() - 2;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write");
    let e = load(&s).expect_err("a flipped byte");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn a_snapshot_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    small_snapshot(dir.path());
    std::fs::remove_file(dir.path().join(raft_store_file::HARD_STATE_FILE)).ok();
    for seg in files_with(dir.path(), ".seg") {
        std::fs::remove_file(seg).expect("remove");
    }
    let other = FileStoreOptions { cluster_id: 22, ..opts() };
    assert!(matches!(FileStore::open(dir.path(), other), Err(FileStoreError::ClusterMismatch { .. })));
}

#[test]
fn temp_files_left_by_a_crash_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, clean) = small_snapshot(dir.path());
    let tmp = dir.path().join(format!("{}.tmp", format::snapshot_file_name(8)));
    std::fs::write(&tmp, &clean[..clean.len() / 2]).expect("write");
    let reset_tmp = dir.path().join(format!("{RESET_FILE}.tmp"));
    std::fs::write(&reset_tmp, b"torn").expect("write");
    let s = open(dir.path());
    assert!(!tmp.exists() && !reset_tmp.exists(), "temp files are removed");
    assert_eq!(held(&s), Some(at(3, 1)), "a temp file is never taken for a snapshot");
}

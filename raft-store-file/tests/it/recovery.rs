//! Byte-level recovery tests on real files: torn tails, bit flips, zero-filled tails,
//! corrupt earlier segments and hard state, torn segment creation, the directory lock.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::executor::block_on;
use raft::{Entry, EntryPayload, HardState, LogStore, StoreError};
use raft_store_file::format::{parse_frame, Frame, SEGMENT_HEADER_LEN};
use raft_store_file::{FileStore, FileStoreError, FileStoreOptions};

const SEGMENT_SIZE: u64 = 800;

fn opts() -> FileStoreOptions {
    FileStoreOptions { cluster_id: 3, segment_size: SEGMENT_SIZE, ..Default::default() }
}

fn entry(index: u64) -> Entry {
    let len = 20 + (index as usize * 7) % 90;
    let data: Vec<u8> = (0..len).map(|i| (index as usize * 13 + i) as u8).collect();
    Entry { term: 1 + index / 10, index, payload: EntryPayload::Command(Bytes::from(data)) }
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(entry).collect()
}

/// Writes entries 1..=n in batches of 3 and returns the segment files, sorted.
fn build(dir: &Path, n: u64) -> Vec<PathBuf> {
    let mut s = FileStore::open(dir, opts()).expect("open");
    let mut i = 1;
    while i <= n {
        let hi = (i + 2).min(n);
        block_on(s.append(&entries(i..=hi))).expect("append");
        i = hi + 1;
    }
    block_on(s.save_hard_state(&HardState { term: 4, voted_for: Some(2) })).expect("hard state");
    drop(s);
    segments(dir)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// The end offsets of the records in a segment file's bytes.
fn record_ends(data: &[u8]) -> Vec<usize> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut ends = Vec::new();
    while let Frame::Record(_, total) = parse_frame(&data[pos..], u32::MAX / 2) {
        pos += total;
        ends.push(pos);
    }
    ends
}

/// Opens `dir` and checks it holds exactly entries 1..=n.
fn check_holds(dir: &Path, n: u64) {
    let mut s = FileStore::open(dir, opts()).expect("reopen");
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!(st.last.index, n, "last index");
    assert_eq!(st.hard_state, HardState { term: 4, voted_for: Some(2) });
    if n > 0 {
        assert_eq!(st.last.term, entry(n).term);
        assert_eq!(block_on(s.entries(1, n + 1)).expect("read"), entries(1..=n));
    }
    assert!(matches!(block_on(s.entries(n + 1, n + 2)), Err(StoreError::Unavailable { .. })));
    // The store accepts the next append after recovery.
    block_on(s.append(&entries(n + 1..=n + 1))).expect("append after recovery");
}

#[test]
fn truncating_the_last_segment_at_every_offset_recovers_the_whole_records_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 40);
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    let last = segs.last().expect("a segment").clone();
    let data = std::fs::read(&last).expect("read");
    let ends = record_ends(&data);
    let before_last_seg = 40 - ends.len() as u64;
    // Every cut inside the last four records (and the header area, which is a torn creation).
    let from = ends.len().checked_sub(5).map_or(0, |i| ends[i]);
    for cut in from..=data.len() {
        std::fs::write(&last, &data[..cut]).expect("write");
        let whole = ends.iter().filter(|&&e| e <= cut).count() as u64;
        check_holds(dir.path(), before_last_seg + whole);
        std::fs::write(&last, &data).expect("restore");
        // The check appended one entry: remove any segment it created past the original.
        for p in segments(dir.path()) {
            if !segs.contains(&p) {
                std::fs::remove_file(p).expect("remove");
            }
        }
    }
}

#[test]
fn a_torn_segment_creation_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 40);
    let last = segs.last().expect("a segment");
    let data = std::fs::read(last).expect("read");
    let ends = record_ends(&data);
    let before = 40 - ends.len() as u64;
    for cut in 0..SEGMENT_HEADER_LEN {
        std::fs::write(last, &data[..cut]).expect("write");
        let mut s = FileStore::open(dir.path(), opts()).expect("reopen");
        assert_eq!(block_on(s.initial_state()).expect("state").last.index, before);
        drop(s);
        assert!(!last.exists(), "the torn segment is removed");
    }
}

#[test]
fn a_zero_filled_tail_ends_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 20);
    let last = segs.last().expect("a segment");
    let mut data = std::fs::read(last).expect("read");
    let end = *record_ends(&data).last().expect("records") as u64;
    assert!(data.len() as u64 > end, "appends leave zero-filled space after the records");
    assert!(data[end as usize..].iter().all(|&b| b == 0));
    data.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(last, &data).expect("write");
    check_holds(dir.path(), 20);
    let after = std::fs::read(last).expect("read");
    assert_eq!(record_ends(&after).len(), record_ends(&data).len() + 1, "the next append went after the records");
}

#[test]
fn anything_but_zeros_after_the_last_record_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 20);
    let last = segs.last().expect("a segment");
    let data = std::fs::read(last).expect("read");
    let end = *record_ends(&data).last().expect("records");
    assert!(data.len() > end + 64, "want zero-filled space after the records");
    // Every bit of the first 64 bytes after the records, then one bit of every later byte.
    let bits = (end * 8..(end + 64) * 8).chain(((end + 64)..data.len()).map(|b| b * 8 + 3));
    for bit in bits {
        let mut d = data.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(last, &d).expect("write");
        let mut s = FileStore::open(dir.path(), opts()).expect("reopen");
        assert_eq!(block_on(s.initial_state()).expect("state").last.index, 20);
        drop(s);
        assert_eq!(std::fs::metadata(last).expect("meta").len(), end as u64, "cut at the last record");
        std::fs::write(last, &data).expect("restore");
    }
    check_holds(dir.path(), 20);
}

#[test]
fn every_bit_flip_in_the_last_record_truncates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 20);
    let last = segs.last().expect("a segment");
    let data = std::fs::read(last).expect("read");
    let ends = record_ends(&data);
    let start = ends[ends.len() - 2];
    for bit in start * 8..ends[ends.len() - 1] * 8 {
        let mut d = data.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(last, &d).expect("write");
        check_holds(dir.path(), 19);
        std::fs::write(last, &data).expect("restore");
    }
}

#[test]
fn a_bit_flip_before_valid_records_of_the_last_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 20);
    let last = segs.last().expect("a segment");
    let mut data = std::fs::read(last).expect("read");
    let ends = record_ends(&data);
    assert!(ends.len() >= 3);
    let at = ends[0] + 12; // inside the payload of the second record
    data[at] ^= 0x10;
    std::fs::write(last, &data).expect("write");
    match FileStore::open(dir.path(), opts()) {
        Err(FileStoreError::Corrupt { path, offset, .. }) => {
            assert_eq!(&path, last);
            assert_eq!(offset, ends[0] as u64);
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn a_bit_flip_in_an_earlier_segment_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 40);
    let first = &segs[0];
    let clean = std::fs::read(first).expect("read");
    let end = *record_ends(&clean).last().expect("records");
    assert_eq!(clean.len(), end, "a sealed segment ends with its last record");
    // Zero-filled space after the records (a segment sealed before it filled up keeps
    // it) is the end of a sealed segment too.
    let mut padded = clean.clone();
    padded.extend([0u8; 64]);
    std::fs::write(first, &padded).expect("write");
    let mut s = FileStore::open(dir.path(), opts()).expect("open");
    assert_eq!(block_on(s.entries(1, 41)).expect("read").len(), 40);
    drop(s);
    // A flipped bit in the last record, and in zero-filled space after it.
    for (base, at) in [(&clean, end - 3), (&padded, end + 20)] {
        let mut data = base.clone();
        data[at] ^= 0x01;
        std::fs::write(first, &data).expect("write");
        // Sealed segments are indexed lazily: the open succeeds, the read reports the file.
        let mut s = FileStore::open(dir.path(), opts()).expect("open");
        match block_on(s.entries(1, 2)) {
            Err(StoreError::Corrupt(msg)) => {
                let name = first.file_name().and_then(|n| n.to_str()).expect("name");
                assert!(msg.contains(name) && msg.contains("offset"), "message names file and offset: {msg}");
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
        // The file is untouched: corruption outside the tail is never truncated.
        drop(s);
        assert_eq!(std::fs::read(first).expect("read"), data);
    }
}

#[test]
fn a_corrupt_header_of_an_earlier_segment_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 40);
    let mut data = std::fs::read(&segs[1]).expect("read");
    data[21] ^= 0x04;
    std::fs::write(&segs[1], &data).expect("write");
    match FileStore::open(dir.path(), opts()) {
        Err(FileStoreError::Corrupt { path, .. }) => assert_eq!(path, segs[1]),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn a_corrupt_hard_state_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), 5);
    let hs = dir.path().join(raft_store_file::HARD_STATE_FILE);
    let clean = std::fs::read(&hs).expect("read");
    for bit in 0..clean.len() * 8 {
        let mut d = clean.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&hs, &d).expect("write");
        match FileStore::open(dir.path(), opts()) {
            Err(FileStoreError::Corrupt { path, .. }) => assert_eq!(path, hs),
            other => panic!("bit {bit}: expected a corruption error, got {other:?}"),
        }
    }
    std::fs::write(&hs, &clean[..clean.len() - 1]).expect("write");
    assert!(matches!(FileStore::open(dir.path(), opts()), Err(FileStoreError::Corrupt { .. })));
}

#[test]
fn another_cluster_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), 5);
    let other = FileStoreOptions { cluster_id: 4, ..opts() };
    assert!(matches!(FileStore::open(dir.path(), other), Err(FileStoreError::ClusterMismatch { .. })));
}

#[test]
fn a_second_open_of_the_same_directory_fails_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = FileStore::open(dir.path(), opts()).expect("open");
    match FileStore::open(dir.path(), opts()) {
        Err(e @ FileStoreError::Locked { .. }) => assert!(e.to_string().contains("locked")),
        other => panic!("expected a lock error, got {other:?}"),
    }
    drop(first);
    FileStore::open(dir.path(), opts()).expect("open after the first store is dropped");
}

#[test]
fn purged_segments_are_deleted_and_prev_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 40);
    let mut s = FileStore::open(dir.path(), opts()).expect("open");
    block_on(s.purge(30)).expect("purge");
    let left = segments(dir.path());
    assert!(left.len() < segs.len(), "whole segments below the purge point are deleted");
    drop(s);
    let mut s = FileStore::open(dir.path(), opts()).expect("reopen");
    let st = block_on(s.initial_state()).expect("state");
    assert_eq!((st.prev.index, st.prev.term, st.last.index), (30, entry(30).term, 40));
    assert_eq!(block_on(s.entries(31, 41)).expect("read"), entries(31..=40));
}

#[test]
fn truncating_across_segments_then_reopening_keeps_the_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 40);
    let mut s = FileStore::open(dir.path(), opts()).expect("open");
    block_on(s.truncate(8)).expect("truncate");
    assert!(segments(dir.path()).len() < segs.len());
    block_on(s.append(&entries(8..=12))).expect("append");
    drop(s);
    check_holds(dir.path(), 12);
}

#[test]
fn random_garbage_in_any_file_never_panics() {
    let mut rng = fastrand::Rng::with_seed(99);
    let dir = tempfile::tempdir().expect("tempdir");
    let segs = build(dir.path(), 40);
    let targets: Vec<PathBuf> = vec![
        segs[0].clone(),
        segs[segs.len() - 1].clone(),
        dir.path().join(raft_store_file::HARD_STATE_FILE),
        dir.path().join(raft_store_file::META_FILE),
    ];
    let originals: Vec<Option<Vec<u8>>> = targets.iter().map(|p| std::fs::read(p).ok()).collect();
    for round in 0..400 {
        let t = rng.usize(..targets.len());
        let mut data = originals[t].clone().unwrap_or_default();
        match round % 4 {
            // Pure garbage.
            0 => data = (0..rng.usize(..300)).map(|_| rng.u8(..)).collect(),
            // Random byte changes.
            1 => {
                for _ in 0..rng.usize(1..8) {
                    if !data.is_empty() {
                        let i = rng.usize(..data.len());
                        data[i] = rng.u8(..);
                    }
                }
            }
            // Garbage appended.
            2 => data.extend((0..rng.usize(..200)).map(|_| rng.u8(..))),
            // Cut short.
            _ => data.truncate(rng.usize(..=data.len())),
        }
        std::fs::write(&targets[t], &data).expect("write");
        if let Ok(mut s) = FileStore::open(dir.path(), opts()) {
            if let Ok(st) = block_on(s.initial_state()) {
                let _ = block_on(s.entries(st.prev.index + 1, st.last.index + 1));
            }
        }
        // Restore every file (recovery may have cut or removed the last segment).
        for (p, o) in targets.iter().zip(&originals) {
            match o {
                Some(o) => std::fs::write(p, o).expect("restore"),
                None => {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

#[test]
fn appends_write_into_zero_filled_space_kept_ahead_of_the_records() {
    for preallocate in [0u64, 100, 4096] {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = FileStoreOptions { cluster_id: 3, segment_size: 1 << 20, preallocate, ..Default::default() };
        let mut s = FileStore::open(dir.path(), o.clone()).expect("open");
        for i in 1..=60 {
            block_on(s.append(&entries(i..=i))).expect("append");
            let segs = segments(dir.path());
            assert_eq!(segs.len(), 1);
            let data = std::fs::read(&segs[0]).expect("read");
            let ends = record_ends(&data);
            assert_eq!(ends.len() as u64, i, "preallocate {preallocate}");
            let end = *ends.last().expect("records");
            assert!(data[end..].iter().all(|&b| b == 0), "only zeros after the records");
            if preallocate == 0 {
                assert_eq!(data.len(), end, "no space kept without preallocation");
            } else {
                assert!(data.len() > end && data.len() as u64 <= end as u64 + preallocate, "{} vs {end}", data.len());
            }
        }
        drop(s);
        let mut s = FileStore::open(dir.path(), o).expect("reopen");
        assert_eq!(block_on(s.initial_state()).expect("state").last.index, 60);
        assert_eq!(block_on(s.entries(1, 61)).expect("read"), entries(1..=60));
    }
}

//! The `LogStore` and snapshot conformance suites, on real directories.

use std::path::Path;

use futures::executor::block_on;
use raft::testing::conformance::{run_conformance, run_reopen_conformance};
use raft::testing::snapshot_conformance::{
    corrupted_snapshot_fails_its_reader, run_snapshot_conformance, run_snapshot_reopen_conformance,
};
use raft::SnapshotMeta;
use raft_store_file::{format, FileStore, FileStoreOptions};

fn opts(segment_size: u64) -> FileStoreOptions {
    FileStoreOptions { cluster_id: 9, segment_size, ..Default::default() }
}

/// A store together with the temp dir that must outlive it.
fn fresh(segment_size: u64, dirs: &mut Vec<tempfile::TempDir>) -> FileStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(dir.path(), opts(segment_size)).expect("open");
    dirs.push(dir);
    store
}

#[test]
fn passes_the_suite_with_default_segments() {
    let mut dirs = Vec::new();
    block_on(run_conformance(|| std::future::ready(fresh(64 << 20, &mut dirs))));
}

#[test]
fn passes_the_suite_with_tiny_segments() {
    // Every append starts a new segment: truncates and purges cross segment boundaries.
    let mut dirs = Vec::new();
    block_on(run_conformance(|| std::future::ready(fresh(1, &mut dirs))));
}

fn reopen(store: FileStore, segment_size: u64) -> FileStore {
    let dir = store.dir().to_path_buf();
    drop(store);
    FileStore::open(dir, opts(segment_size)).expect("reopen")
}

#[test]
fn passes_the_reopen_suite() {
    for seg in [64 << 20, 5000, 1] {
        let mut dirs = Vec::new();
        block_on(run_reopen_conformance(
            || std::future::ready(fresh(seg, &mut dirs)),
            |s| std::future::ready(reopen(s, seg)),
        ));
    }
}

/// The names of the temp files in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

/// Checks that no check left a temp file behind (finished, refused and dropped writers
/// all remove theirs).
fn no_temp_files_in(dirs: &[tempfile::TempDir]) {
    for dir in dirs {
        let left = temp_files(dir.path());
        assert!(left.is_empty(), "temp files left in {}: {left:?}", dir.path().display());
    }
}

#[test]
fn passes_the_snapshot_suite() {
    for seg in [64 << 20, 1] {
        let mut dirs = Vec::new();
        block_on(run_snapshot_conformance(|| std::future::ready(fresh(seg, &mut dirs))));
        no_temp_files_in(&dirs);
    }
}

#[test]
fn passes_the_snapshot_reopen_suite() {
    for seg in [64 << 20, 5000, 1] {
        let mut dirs = Vec::new();
        block_on(run_snapshot_reopen_conformance(
            || std::future::ready(fresh(seg, &mut dirs)),
            |s| std::future::ready(reopen(s, seg)),
        ));
        no_temp_files_in(&dirs);
    }
}

/// Flips one bit of the `k`th byte of `meta`'s data in its file (the data ends the file).
fn flip_data_byte(store: &FileStore, meta: &SnapshotMeta, k: u64) {
    let path = store.dir().join(format::snapshot_file_name(meta.last.index));
    let mut bytes = std::fs::read(&path).expect("read the snapshot file");
    assert!(k < meta.size && meta.size <= bytes.len() as u64, "byte {k} of {} bytes of data", meta.size);
    let at = bytes.len() - meta.size as usize + k as usize;
    bytes[at] ^= 0x04;
    std::fs::write(&path, bytes).expect("write the snapshot file");
}

#[test]
fn detects_a_corrupted_snapshot() {
    for k in [0, 1, 65_535, 65_536, 99_999] {
        let mut dirs = Vec::new();
        block_on(corrupted_snapshot_fails_its_reader(
            fresh(64 << 20, &mut dirs),
            |s: &FileStore, meta: &SnapshotMeta| flip_data_byte(s, meta, k),
        ));
    }
}

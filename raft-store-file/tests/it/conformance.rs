//! The `LogStore` conformance suites, on real directories.

use futures::executor::block_on;
use raft::testing::conformance::{run_conformance, run_reopen_conformance};
use raft_store_file::{FileStore, FileStoreOptions};

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

//! A durable, segmented, append-only file log implementing [`raft::LogStore`].
//!
//! The log lives in one directory: segment files named by the index of their first
//! record, a hard state file (term and vote), a purge marker (the position before the
//! first entry held), at most one snapshot file and a lock file. The byte layout and the
//! recovery rules are in `docs/storage-format.md`.
//!
//! - **Durability:** `append` writes the whole batch with one `write` and one
//!   `fdatasync` (the driver merges queued appends into one call: group commit);
//!   `truncate`, `purge` and `save_hard_state` return only when durable. New, renamed and
//!   deleted files are followed by an `fsync` of the directory.
//! - **Recovery:** only the last segment is scanned on open; a torn tail of it (a bad
//!   record with no valid record anywhere after it, in a segment no later segment
//!   follows) is cut back to the last whole record, after a second read agreed with the
//!   first. Corruption anywhere else is a [`FileStoreError::Corrupt`] naming the file and
//!   the byte offset, and the open refuses. Earlier segments are indexed lazily, on their
//!   first read.
//! - **Fail-stop:** after a failed write or sync, and after a read that failed its
//!   checksum (a bit flip, a misdirected read, corruption at rest), every later write
//!   returns [`raft::StoreError::Failed`]. Reads are checked one by one and keep working.
//! - **One process per directory:** the directory is locked while a store is open.
//! - **Snapshots** (inherent methods, until [`raft::LogStore`] has them):
//!   [`FileSnapshots`], the store's [`raft::SnapshotStore`], streams a snapshot into a
//!   temp file and renames it into place once synced, keeping only the newest;
//!   [`FileStore::reset_to_snapshot`] discards the log so that it continues after a
//!   snapshot, crash-safely.
//!
//! The store uses blocking `std::fs` calls (through the [`Vfs`] trait, [`StdFs`] by
//! default) inside its `async` methods: it needs no runtime and works under tokio and smol
//! alike, but each call blocks the task's thread for the duration of its I/O (the driver
//! runs the store in its own persist task).
//!
//! ```no_run
//! use raft_store_file::{FileStore, FileStoreOptions};
//!
//! let store = FileStore::open("/var/lib/myapp/raft", FileStoreOptions { cluster_id: 7, ..Default::default() })?;
//! # Ok::<(), raft_store_file::FileStoreError>(())
//! ```

// These modules parse bytes from disk: bad bytes are an error, never a panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::unwrap_used))]

// The store by stage: `recovery` opens and recovers, `segment` holds the log's records
// (index, read, append, truncate, purge), `meta` the hard state and the two position
// markers, `snapshot` the snapshot file and the log reset, `fs` the helpers they share;
// this file holds the state and the `LogStore` methods' argument checks.
mod error;
pub mod format;
mod fs;
mod meta;
mod options;
mod recovery;
mod segment;
mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vfs;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use raft::{Entry, HardState, InitialState, LogId, LogIndex, LogStore, StoreError};

pub use crate::error::FileStoreError;
pub use crate::options::FileStoreOptions;
use crate::segment::Segment;
pub use crate::snapshot::FileSnapshots;
pub use crate::vfs::{StdFs, Vfs, VfsFile};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the hard state (term and vote) file.
pub const HARD_STATE_FILE: &str = "hardstate";
/// Name of the purge marker file.
pub const META_FILE: &str = "meta";
/// Name of the reset marker file, present only while a log reset is being carried out.
pub const RESET_FILE: &str = "reset";

/// A durable file-backed [`LogStore`]. See the [crate documentation](crate).
///
/// `F` is the file system it runs on: the real one ([`StdFs`]) unless a test supplies a
/// simulated one through [`FileStore::open_with`].
#[derive(Debug)]
pub struct FileStore<F: Vfs = StdFs> {
    fs: F,
    dir: PathBuf,
    opts: FileStoreOptions,
    /// Holds the directory lock while the store is open.
    _lock: F::Lock,
    hard_state: HardState,
    prev: LogId,
    last: LogId,
    /// Sorted by `first`; the last one is the active segment and is always indexed.
    segments: Vec<Segment>,
    /// Open write handle of the active segment.
    active: Option<F::File>,
    /// How far the active segment is written (records, then zero-filled space), as far as
    /// this store wrote it through `active`.
    active_len: u64,
    /// The snapshot files, shared with the driver's threads; they also hold why the
    /// store refuses writes (fail-stop), shared by the log and the snapshots.
    snapshots: FileSnapshots<F>,
}

impl<F: Vfs> FileStore<F> {
    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_writable(&self) -> Result<(), FileStoreError> {
        match self.snapshots.failure() {
            Some(why) => Err(FileStoreError::Failed(why)),
            None => Ok(()),
        }
    }

    /// Records a failed write, or a read that returned corrupt data: the store refuses
    /// every later write (and snapshot).
    fn fail(&mut self, op: &str, e: FileStoreError) -> FileStoreError {
        tracing::error!(dir = %self.dir.display(), error = %e, "{op} failed; the store refuses further writes");
        self.snapshots.set_failed(format!("{op} failed: {e}"));
        self.active = None;
        e
    }
}

#[async_trait]
impl<F: Vfs> LogStore for FileStore<F> {
    /// Writes and `fsync`s run synchronously inside the calls: the driver gives the store
    /// a thread of its own where the runtime has one.
    fn blocks_thread(&self) -> bool {
        true
    }

    async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
        Ok(InitialState { hard_state: self.hard_state, prev: self.prev, last: self.last })
    }

    async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        self.check_writable()?;
        match meta::write_hard_state(&self.fs, &self.dir, self.opts.cluster_id, hs) {
            Ok(()) => {
                self.hard_state = *hs;
                Ok(())
            }
            Err(e) => Err(self.fail("save_hard_state", e).into()),
        }
    }

    async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.check_writable()?;
        let Some(first) = entries.first() else {
            return Err(StoreError::Invalid("append of no entries".into()));
        };
        if first.index != self.last.index + 1 {
            return Err(StoreError::Invalid(format!(
                "append starts at {}, the log ends at {}",
                first.index, self.last.index
            )));
        }
        let (buf, offsets) = segment::encode_batch(entries, first.index, self.opts.max_record_size)?;
        match self.append_records(first.index, &buf, &offsets) {
            Ok(()) => {
                if let Some(l) = entries.last() {
                    self.last = LogId { term: l.term, index: l.index };
                }
                Ok(())
            }
            Err(e) => Err(self.fail("append", e).into()),
        }
    }

    async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
        self.check_writable()?;
        if from <= self.prev.index {
            return Err(StoreError::Invalid(format!(
                "truncate({from}) at or below the purged index {}",
                self.prev.index
            )));
        }
        if from > self.last.index {
            return Ok(());
        }
        Ok(self.truncate_segments(from).map_err(|e| self.fail("truncate", e))?)
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
        self.check_writable()?;
        if upto > self.last.index {
            return Err(StoreError::Invalid(format!("purge({upto}) beyond the last index {}", self.last.index)));
        }
        if upto <= self.prev.index {
            return Ok(());
        }
        Ok(self.purge_segments(upto).map_err(|e| self.fail("purge", e))?)
    }

    fn snapshots(&self) -> std::sync::Arc<dyn raft::SnapshotStore> {
        std::sync::Arc::new(self.snapshots.clone())
    }

    async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
        if snapshot.index <= self.prev.index {
            return Ok(());
        }
        let held = if snapshot.index <= self.last.index {
            self.entries(snapshot.index, snapshot.index + 1).await?.first().map(|e| e.term)
        } else {
            None
        };
        if held == Some(snapshot.term) {
            return self.purge(snapshot.index).await;
        }
        Ok(self.reset_to_snapshot(snapshot)?)
    }

    async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
        if start > end {
            return Err(StoreError::Invalid(format!("entries range {start}..{end} is reversed")));
        }
        if start == end {
            return Ok(Vec::new());
        }
        if start <= self.prev.index || end > self.last.index + 1 {
            return Err(StoreError::Unavailable { start, end });
        }
        // A read that fails its checksum (or the disk's read) is fail-stop, like a failed
        // write: the disk returned wrong bytes once and may do so again.
        self.read_entries(start, end).map_err(|e| self.fail("read", e).into())
    }
}

#[cfg(test)]
mod tests;

//! Snapshot files, and the log reset that installing a snapshot needs (paper §7).
//!
//! The directory holds at most one snapshot, `NNNNNNNNNNNNNNNNNNNN.snap` named by its last
//! included index (the byte layout is in `docs/storage-format.md`). A new snapshot is
//! written to a temp file, synced, renamed and the directory synced; only then is the
//! older snapshot file deleted.

use std::path::PathBuf;

use raft::{LogId, Membership};

use crate::format;
use crate::fs::{remove, sync_dir, write_atomic};
use crate::meta::{self, Marker};
use crate::vfs::Vfs;
use crate::{FileStore, FileStoreError};

/// What a snapshot covers: the position of the last entry it includes and the membership
/// in effect there (paper §7, thesis §5.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log entry the snapshot includes (its index and term).
    pub last: LogId,
    /// The membership configuration in effect at `last`.
    pub membership: Membership,
}

impl<F: Vfs> FileStore<F> {
    fn snapshot_path(&self, index: u64) -> PathBuf {
        self.dir.join(format::snapshot_file_name(index))
    }

    /// Durably stores a snapshot, replacing the one held: the file is written under a
    /// temp name, synced, renamed and the directory synced; then the older snapshot file
    /// is deleted and the directory synced again. The log is not changed (see
    /// [`reset_to_snapshot`](Self::reset_to_snapshot) and
    /// [`purge`](raft::LogStore::purge)).
    ///
    /// A snapshot older than the one held (a smaller last index) is
    /// [`FileStoreError::Invalid`]. A failed write or sync makes the store refuse every
    /// later write (fail-stop).
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<(), FileStoreError> {
        self.check_writable()?;
        if let Some(held) = &self.snapshot {
            if meta.last.index < held.last.index {
                return Err(FileStoreError::Invalid(format!(
                    "snapshot at index {} is older than the one held at index {}",
                    meta.last.index, held.last.index
                )));
            }
        }
        let membership = postcard::to_allocvec(&meta.membership)
            .map_err(|e| FileStoreError::Invalid(format!("the membership cannot be encoded: {e}")))?;
        let head = format::encode_snapshot_head(
            self.opts.cluster_id,
            meta.last.index,
            meta.last.term,
            &membership,
            data.len() as u64,
        );
        let crc = format::snapshot_crc(&head, data).to_le_bytes();
        let name = format::snapshot_file_name(meta.last.index);
        let older = self.snapshot.as_ref().map(|m| m.last.index).filter(|&i| i != meta.last.index);
        if let Err(e) = write_atomic(&self.fs, &self.dir, &name, &[&head, data, &crc]) {
            return Err(self.fail("save_snapshot", e));
        }
        self.snapshot = Some(meta);
        if let Some(i) = older {
            let path = self.snapshot_path(i);
            if let Err(e) = remove(&self.fs, &path).and_then(|()| sync_dir(&self.fs, &self.dir)) {
                return Err(self.fail("save_snapshot", e));
            }
        }
        Ok(())
    }

    /// The metadata of the snapshot held, if any (read and verified when the store was
    /// opened, or the last one saved since).
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot.clone()
    }

    /// Reads the snapshot held, if any, verifying its checksum again.
    ///
    /// Corruption (the file changed on disk since it was verified) is
    /// [`FileStoreError::Corrupt`] naming the file and the offset.
    pub fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, FileStoreError> {
        let Some(meta) = &self.snapshot else { return Ok(None) };
        let path = self.snapshot_path(meta.last.index);
        let mut bytes = crate::fs::read(&self.fs, &path)?;
        let (found, offset, len) = self.decode_snapshot_file(&path, meta.last.index, &bytes)?;
        bytes.truncate(offset + len);
        bytes.drain(..offset);
        Ok(Some((found, bytes)))
    }

    /// Decodes and checks a snapshot file's bytes; returns its metadata and the data's
    /// offset and length.
    fn decode_snapshot_file(
        &self,
        path: &std::path::Path,
        index: u64,
        bytes: &[u8],
    ) -> Result<(SnapshotMeta, usize, usize), FileStoreError> {
        let s = format::decode_snapshot(bytes).map_err(|(at, why)| FileStoreError::corrupt(path, at, why))?;
        if s.cluster_id != self.opts.cluster_id {
            return Err(FileStoreError::ClusterMismatch {
                path: path.into(),
                expected: self.opts.cluster_id,
                found: s.cluster_id,
            });
        }
        if s.last_index != index {
            return Err(FileStoreError::corrupt(
                path,
                20,
                format!("snapshot holds last index {}, the file name says {index}", s.last_index),
            ));
        }
        let membership: Membership = postcard::from_bytes(s.membership).map_err(|e| {
            FileStoreError::corrupt(path, format::SNAPSHOT_HEAD_LEN as u64, format!("bad membership: {e}"))
        })?;
        let meta = SnapshotMeta { last: LogId { index: s.last_index, term: s.last_term }, membership };
        Ok((meta, s.data_offset, s.data_len))
    }

    /// On open: verifies the newest of the snapshot files found (by their indexes) and
    /// deletes the older ones, which a crash left behind after a newer one was durable.
    pub(crate) fn recover_snapshot(&mut self, mut indexes: Vec<u64>) -> Result<(), FileStoreError> {
        indexes.sort_unstable();
        let Some(newest) = indexes.pop() else { return Ok(()) };
        let path = self.snapshot_path(newest);
        let bytes = crate::fs::read(&self.fs, &path)?;
        let (meta, _, _) = self.decode_snapshot_file(&path, newest, &bytes)?;
        drop(bytes);
        for &i in &indexes {
            let old = self.snapshot_path(i);
            tracing::info!(file = %old.display(), "removing a snapshot replaced by a newer one");
            remove(&self.fs, &old)?;
        }
        if !indexes.is_empty() {
            sync_dir(&self.fs, &self.dir)?;
        }
        self.snapshot = Some(meta);
        Ok(())
    }

    /// Discards the whole log and makes it start after `last`: afterwards the log is empty
    /// and `prev` = `last` = `last`, so the next append is at `last.index + 1`. Used when a
    /// snapshot is installed whose last entry the log does not match (paper §7).
    ///
    /// Crash-safe: the reset marker file (`reset`, holding `last`) is written atomically
    /// first; once it is durable the reset is decided, and an open that finds the marker
    /// finishes it. Then every segment is deleted, the directory synced, the purge marker
    /// rewritten with `last` and the reset marker removed. A crash therefore leaves either
    /// the old log or the empty one, never a log with a gap. Returns once durable; a
    /// failure makes the store refuse every later write (fail-stop).
    pub fn reset_to_snapshot(&mut self, last: LogId) -> Result<(), FileStoreError> {
        self.check_writable()?;
        let r = meta::write_position(&self.fs, &self.dir, self.opts.cluster_id, Marker::Reset, last)
            .and_then(|()| self.finish_reset(last));
        r.map_err(|e| self.fail("reset_to_snapshot", e))
    }

    /// The part of a reset after its marker is durable: delete every segment, record
    /// `last` as the purge point, remove the marker. Also run on open when a crash left
    /// the marker behind.
    pub(crate) fn finish_reset(&mut self, last: LogId) -> Result<(), FileStoreError> {
        self.active = None;
        while let Some(s) = self.segments.pop() {
            remove(&self.fs, &s.path)?;
        }
        sync_dir(&self.fs, &self.dir)?;
        meta::write_position(&self.fs, &self.dir, self.opts.cluster_id, Marker::Purge, last)?;
        self.prev = last;
        self.last = last;
        let marker = self.dir.join(crate::RESET_FILE);
        remove(&self.fs, &marker)?;
        sync_dir(&self.fs, &self.dir)
    }
}

/// The snapshot store of a file store until streamed snapshot files land: it holds
/// none and refuses to create one, with an error that says so.
pub(crate) struct Unsupported;

impl raft::SnapshotStore for Unsupported {
    fn create(
        &self,
        _last: LogId,
        _membership: &Membership,
        _membership_index: u64,
    ) -> Result<Box<dyn raft::SnapshotWriter>, raft::StoreError> {
        Err(raft::StoreError::Invalid("the file store does not hold streamed snapshots yet".into()))
    }
    fn latest(&self) -> Result<Option<raft::SnapshotMeta>, raft::StoreError> {
        Ok(None)
    }
    fn open(&self, last: LogId) -> Result<Box<dyn std::io::Read + Send>, raft::StoreError> {
        Err(raft::StoreError::Unavailable { start: last.index, end: last.index })
    }
    fn read_chunk(&self, last: LogId, _offset: u64, _len: usize) -> Result<Vec<u8>, raft::StoreError> {
        Err(raft::StoreError::Unavailable { start: last.index, end: last.index })
    }
}

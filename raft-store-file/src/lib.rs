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
//! - **Recovery:** only the last segment is scanned on open; a torn or corrupt tail of it
//!   is cut back to the last whole record. Corruption anywhere else is a
//!   [`FileStoreError::Corrupt`] naming the file and the byte offset. Earlier segments are
//!   indexed lazily, on their first read.
//! - **Fail-stop:** after a failed write or sync every later write returns
//!   [`raft::StoreError::Failed`].
//! - **One process per directory:** the directory is locked while a store is open.
//! - **Snapshots** (inherent methods, until [`raft::LogStore`] has them):
//!   [`FileStore::save_snapshot`] writes a checksummed snapshot file atomically and keeps
//!   only the newest; [`FileStore::reset_to_snapshot`] discards the log so that it
//!   continues after a snapshot, crash-safely.
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

mod error;
pub mod format;
mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vfs;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use raft::{Entry, HardState, InitialState, LogId, LogIndex, LogStore, StoreError};

pub use crate::error::FileStoreError;
use crate::format::{Frame, SegmentHeader, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
pub use crate::snapshot::SnapshotMeta;
pub use crate::vfs::{StdFs, Vfs, VfsFile};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the hard state (term and vote) file.
pub const HARD_STATE_FILE: &str = "hardstate";
/// Name of the purge marker file.
pub const META_FILE: &str = "meta";
/// Name of the reset marker file, present only while a log reset is being carried out.
pub const RESET_FILE: &str = "reset";

const HARD_STATE_BODY_LEN: usize = 17;
/// How many sealed segments keep their record offsets in memory at once.
const MAX_INDEXED_SEALED: usize = 8;
const META_BODY_LEN: usize = 16;
/// Zeros written to preallocate segment space, a piece at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Options of a [`FileStore`].
#[derive(Clone, Debug)]
pub struct FileStoreOptions {
    /// The cluster id written into every file and checked on open.
    pub cluster_id: u64,
    /// A segment is sealed and a new one started once it holds at least this many bytes
    /// (checked before each append; one append never spans two segments).
    pub segment_size: u64,
    /// The largest encoded entry accepted, in bytes. Larger entries are rejected with
    /// [`StoreError::Invalid`]; larger frames on disk are corruption.
    pub max_record_size: u32,
    /// Zero-filled space kept written ahead of the last record of the active segment, in
    /// bytes (0: none). An append then overwrites space the file already has, so its
    /// `fdatasync` need not commit a new file size to the file system's journal: on ext4
    /// this roughly halves the sync time of small appends. The space is extended by this
    /// much whenever an append reaches its end; recovery reads the zeros as the end of the
    /// log.
    pub preallocate: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions { cluster_id: 0, segment_size: 64 << 20, max_record_size: 64 << 20, preallocate: 1 << 20 }
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// Index of its first record (from the file name, checked against the header).
    first: LogIndex,
    path: PathBuf,
    /// Byte offsets of each record's frame, followed by the end of the last record; `None`
    /// until the segment is first read (sealed segments are indexed lazily).
    index: Option<Vec<u64>>,
}

impl Segment {
    fn count(&self) -> u64 {
        self.index.as_ref().map_or(0, |ix| ix.len() as u64 - 1)
    }

    fn end_offset(&self) -> u64 {
        self.index.as_ref().and_then(|ix| ix.last().copied()).unwrap_or(SEGMENT_HEADER_LEN as u64)
    }
}

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
    /// Why the store refuses writes, once a write has failed.
    failed: Option<String>,
    /// The metadata of the snapshot held, if any.
    snapshot: Option<SnapshotMeta>,
}

fn sync_dir<F: Vfs>(fs: &F, dir: &Path) -> Result<(), FileStoreError> {
    fs.sync_dir(dir).map_err(|e| FileStoreError::io(dir, e))
}

fn remove<F: Vfs>(fs: &F, path: &Path) -> Result<(), FileStoreError> {
    fs.remove(path).map_err(|e| FileStoreError::io(path, e))
}

/// Writes `parts` (concatenated) to `dir/name` atomically: temp file, fsync, rename,
/// directory fsync.
fn write_atomic<F: Vfs>(fs: &F, dir: &Path, name: &str, parts: &[&[u8]]) -> Result<(), FileStoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = fs.create(&tmp, false).map_err(|e| FileStoreError::io(&tmp, e))?;
    let mut at = 0u64;
    for part in parts {
        f.write_at(at, part).map_err(|e| FileStoreError::io(&tmp, e))?;
        at += part.len() as u64;
    }
    f.sync_all().map_err(|e| FileStoreError::io(&tmp, e))?;
    drop(f);
    fs.rename(&tmp, &dst).map_err(|e| FileStoreError::io(&dst, e))?;
    sync_dir(fs, dir)
}

/// Reads a small checksummed file; `None` if it does not exist.
fn read_small<F: Vfs>(
    fs: &F,
    path: &Path,
    magic: [u8; 8],
    body_len: usize,
    cluster_id: u64,
) -> Result<Option<Vec<u8>>, FileStoreError> {
    let bytes = match fs.read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileStoreError::io(path, e)),
    };
    let (cid, body) = format::decode_small_file(magic, &bytes, body_len)
        .map_err(|(offset, reason)| FileStoreError::corrupt(path, offset, reason))?;
    if cid != cluster_id {
        return Err(FileStoreError::ClusterMismatch { path: path.into(), expected: cluster_id, found: cid });
    }
    Ok(Some(body.to_vec()))
}

/// The result of scanning a segment's records.
struct Scan {
    /// Record offsets plus the end offset.
    index: Vec<u64>,
    /// Term of the last record.
    last_term: Option<u64>,
    /// Where a torn tail starts, if the scan stopped at one (last segment only).
    torn_at: Option<(u64, String)>,
}

/// Decodes one record payload and checks that it holds the entry at `want`.
fn decode_entry(path: &Path, offset: u64, payload: &[u8], want: LogIndex) -> Result<Entry, FileStoreError> {
    let entry: Entry = postcard::from_bytes(payload)
        .map_err(|e| FileStoreError::corrupt(path, offset, format!("record does not decode as an entry: {e}")))?;
    if entry.index != want {
        return Err(FileStoreError::corrupt(
            path,
            offset,
            format!("record holds index {}, expected index {want}", entry.index),
        ));
    }
    Ok(entry)
}

/// Scans the records of a segment file's bytes. Zero bytes from the first position where
/// no record starts to the end of the file are preallocated space, the end of the
/// records. In the last segment (`tail_allowed`) a torn or corrupt tail ends the scan;
/// anywhere else it is an error.
fn scan_records(
    path: &Path,
    data: &[u8],
    first: LogIndex,
    max_record: u32,
    tail_allowed: bool,
) -> Result<Scan, FileStoreError> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut index = vec![pos as u64];
    let mut last_term = None;
    let mut next = first;
    loop {
        let reason = match format::parse_frame(&data[pos..], max_record) {
            Frame::Record(payload, total) => {
                let entry = decode_entry(path, pos as u64, payload, next)?;
                last_term = Some(entry.term);
                next += 1;
                pos += total;
                index.push(pos as u64);
                continue;
            }
            Frame::Incomplete if pos == data.len() => return Ok(Scan { index, last_term, torn_at: None }),
            // Zero-filled space written ahead of the records (`preallocate`): the end.
            _ if data[pos..].iter().all(|&b| b == 0) => return Ok(Scan { index, last_term, torn_at: None }),
            Frame::Incomplete => "incomplete record at the end of the file".to_string(),
            Frame::Bad(reason) => {
                // A bad frame followed by a valid one is not a torn tail: the bytes after a
                // torn write were never synced, so nothing valid can follow it.
                let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
                let after = pos.saturating_add(FRAME_HEADER_LEN).saturating_add(len as usize);
                if tail_allowed
                    && len > 0
                    && len <= max_record
                    && after < data.len()
                    && matches!(format::parse_frame(&data[after..], max_record), Frame::Record(..))
                {
                    return Err(FileStoreError::corrupt(
                        path,
                        pos as u64,
                        format!("{reason}, followed by valid records"),
                    ));
                }
                reason
            }
        };
        if !tail_allowed {
            return Err(FileStoreError::corrupt(path, pos as u64, reason));
        }
        return Ok(Scan { index, last_term, torn_at: Some((pos as u64, reason)) });
    }
}

fn read_header(path: &Path, data: &[u8], want_first: LogIndex, cluster_id: u64) -> Result<(), FileStoreError> {
    let h = SegmentHeader::decode(data).map_err(|reason| FileStoreError::corrupt(path, 0, reason))?;
    if h.cluster_id != cluster_id {
        return Err(FileStoreError::ClusterMismatch { path: path.into(), expected: cluster_id, found: h.cluster_id });
    }
    if h.first_index != want_first {
        return Err(FileStoreError::corrupt(
            path,
            20,
            format!("header names first index {}, file name says {want_first}", h.first_index),
        ));
    }
    Ok(())
}

impl FileStore<StdFs> {
    /// Opens the store in `dir`, creating the directory if needed, and recovers it: the
    /// tail of the last segment is scanned and a torn tail cut off; the snapshot is read
    /// and verified whole; every other file is checked as far as its header. A reset that
    /// a crash interrupted is finished.
    ///
    /// Fails with [`FileStoreError::Locked`] if the directory is held by another open
    /// store, and with [`FileStoreError::Corrupt`] on corruption that is not a torn tail.
    pub fn open(dir: impl AsRef<Path>, opts: FileStoreOptions) -> Result<FileStore, FileStoreError> {
        FileStore::open_with(StdFs, dir, opts)
    }
}

impl<F: Vfs> FileStore<F> {
    /// Like [`FileStore::open`], on the file system `fs` (tests pass a simulated one).
    pub fn open_with(fs: F, dir: impl AsRef<Path>, opts: FileStoreOptions) -> Result<FileStore<F>, FileStoreError> {
        let dir = dir.as_ref().to_path_buf();
        if opts.segment_size == 0 {
            return Err(FileStoreError::Options("segment_size must be positive".into()));
        }
        if opts.max_record_size == 0 || opts.max_record_size > u32::MAX / 2 {
            return Err(FileStoreError::Options(format!("max_record_size {} is out of range", opts.max_record_size)));
        }
        fs.create_dir_all(&dir).map_err(|e| FileStoreError::io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = match fs.try_lock(&lock_path) {
            Ok(Some(lock)) => lock,
            Ok(None) => return Err(FileStoreError::Locked { path: lock_path }),
            Err(e) => return Err(FileStoreError::io(&lock_path, e)),
        };

        let mut seg_firsts = Vec::new();
        let mut snapshots = Vec::new();
        for name in fs.list(&dir).map_err(|e| FileStoreError::io(&dir, e))? {
            if let Some(first) = format::parse_segment_file_name(&name) {
                seg_firsts.push(first);
            } else if let Some(index) = format::parse_snapshot_file_name(&name) {
                snapshots.push(index);
            } else if name.ends_with(".tmp") {
                // An atomic write that did not reach its rename.
                remove(&fs, &dir.join(&name))?;
            }
        }
        seg_firsts.sort_unstable();

        let hard_state = match read_small(
            &fs,
            &dir.join(HARD_STATE_FILE),
            format::HARD_STATE_MAGIC,
            HARD_STATE_BODY_LEN,
            opts.cluster_id,
        )? {
            None => HardState::default(),
            Some(b) => {
                let voted_for = match b[8] {
                    0 => None,
                    1 => Some(format::read_u64(&b, 9)),
                    other => {
                        return Err(FileStoreError::corrupt(
                            dir.join(HARD_STATE_FILE),
                            28,
                            format!("bad vote flag {other}"),
                        ))
                    }
                };
                HardState { term: format::read_u64(&b, 0), voted_for }
            }
        };
        let prev = match read_small(&fs, &dir.join(META_FILE), format::META_MAGIC, META_BODY_LEN, opts.cluster_id)? {
            None => LogId::default(),
            Some(b) => LogId { index: format::read_u64(&b, 0), term: format::read_u64(&b, 8) },
        };

        let mut store = FileStore {
            fs,
            dir,
            opts,
            _lock: lock,
            hard_state,
            prev,
            last: prev,
            segments: seg_firsts.iter().map(|&first| Segment { first, path: PathBuf::new(), index: None }).collect(),
            active: None,
            active_len: 0,
            failed: None,
            snapshot: None,
        };
        for s in &mut store.segments {
            s.path = store.dir.join(format::segment_file_name(s.first));
        }
        store.recover_snapshot(snapshots)?;
        store.recover_reset()?;
        store.recover()?;
        // Make every file name this open relied on durable (a rename or create whose
        // directory sync failed in an earlier process would otherwise be visible now and
        // lost in a later crash).
        sync_dir(&store.fs, &store.dir)?;
        Ok(store)
    }

    /// Checks the headers of sealed segments and scans the last one.
    fn recover(&mut self) -> Result<(), FileStoreError> {
        // The last segment: drop it if its creation was torn, else scan it.
        let mut last_term = None;
        while let Some(seg) = self.segments.last_mut() {
            let data = self.fs.read(&seg.path).map_err(|e| FileStoreError::io(&seg.path, e))?;
            let head = &data[..data.len().min(SEGMENT_HEADER_LEN)];
            if data.len() < SEGMENT_HEADER_LEN || head.iter().all(|&b| b == 0) {
                tracing::warn!(file = %seg.path.display(), "removing a segment whose creation was torn");
                remove(&self.fs, &seg.path)?;
                sync_dir(&self.fs, &self.dir)?;
                self.segments.pop();
                continue;
            }
            read_header(&seg.path, &data, seg.first, self.opts.cluster_id)?;
            let scan = scan_records(&seg.path, &data, seg.first, self.opts.max_record_size, true)?;
            // The tail is synced even when whole: a process that stopped after a failed
            // sync may have left written but unsynced records, which this open is about
            // to report as held (durable).
            let mut f = self.fs.open_write(&seg.path).map_err(|e| FileStoreError::io(&seg.path, e))?;
            if let Some((at, reason)) = &scan.torn_at {
                tracing::warn!(file = %seg.path.display(), offset = at, reason = %reason, "truncating a torn tail");
                f.set_len(*at).map_err(|e| FileStoreError::io(&seg.path, e))?;
            }
            f.sync_all().map_err(|e| FileStoreError::io(&seg.path, e))?;
            last_term = scan.last_term.map(|t| (t, seg.first + scan.index.len() as u64 - 2));
            seg.index = Some(scan.index);
            break;
        }
        let n = self.segments.len();
        for i in 0..n.saturating_sub(1) {
            let seg = &self.segments[i];
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let got = self.fs.read_at(&seg.path, 0, &mut head).map_err(|e| FileStoreError::io(&seg.path, e))?;
            read_header(&seg.path, &head[..got], seg.first, self.opts.cluster_id)?;
        }
        // The last record: in the last segment, or (if it is empty) in an earlier one.
        let mut last_rec = last_term.map(|(term, index)| LogId { term, index });
        if last_rec.is_none() && n >= 2 {
            let i = n - 2;
            self.ensure_indexed(i)?;
            let seg = &self.segments[i];
            let count = seg.count();
            if count > 0 {
                let index = seg.first + count - 1;
                let e = self.read_entries(index, index + 1)?;
                last_rec = e.first().map(|e| LogId { term: e.term, index: e.index });
            }
        }
        self.last = match last_rec {
            Some(l) if l.index > self.prev.index => l,
            _ => self.prev,
        };
        if self.last.index > self.prev.index {
            if let Some(s) = self.segments.first() {
                if s.first > self.prev.index + 1 {
                    return Err(FileStoreError::corrupt(
                        &s.path,
                        0,
                        format!("the log starts at {} but entries after {} are missing", s.first, self.prev.index),
                    ));
                }
            }
        }
        tracing::debug!(dir = %self.dir.display(), prev = ?self.prev, last = ?self.last, "opened file store");
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Builds the record index of sealed segment `i` by reading it whole.
    fn ensure_indexed(&mut self, i: usize) -> Result<(), FileStoreError> {
        if self.segments[i].index.is_some() {
            return Ok(());
        }
        let expected = self.segments.get(i + 1).map(|n| n.first - self.segments[i].first);
        let seg = &self.segments[i];
        let data = self.fs.read(&seg.path).map_err(|e| FileStoreError::io(&seg.path, e))?;
        read_header(&seg.path, &data, seg.first, self.opts.cluster_id)?;
        let scan = scan_records(&seg.path, &data, seg.first, self.opts.max_record_size, false)?;
        let count = scan.index.len() as u64 - 1;
        if let Some(expected) = expected {
            if count != expected {
                return Err(FileStoreError::corrupt(
                    &seg.path,
                    scan.index.last().copied().unwrap_or(0),
                    format!("sealed segment holds {count} records, expected {expected}"),
                ));
            }
        }
        self.segments[i].index = Some(scan.index);
        self.bound_sealed_indexes(i);
        Ok(())
    }

    /// Bounds memory: once more than MAX_INDEXED_SEALED sealed segments hold their
    /// record offsets (8 bytes per entry), drops all of them but segment `keep`'s; they
    /// are rebuilt from the file when needed again.
    fn bound_sealed_indexes(&mut self, keep: usize) {
        let last = self.segments.len() - 1;
        let indexed = self.segments[..last].iter().filter(|s| s.index.is_some()).count();
        if indexed > MAX_INDEXED_SEALED {
            for (j, s) in self.segments[..last].iter_mut().enumerate() {
                if j != keep {
                    s.index = None;
                }
            }
        }
    }

    /// Reads entries `start..end` from disk; the caller checked the range is held.
    fn read_entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, FileStoreError> {
        let mut out = Vec::with_capacity((end - start).min(4096) as usize);
        let mut idx = start;
        while idx < end {
            let i = self.segments.partition_point(|s| s.first <= idx);
            if i == 0 {
                let path = self.segments.first().map_or_else(|| self.dir.clone(), |s| s.path.clone());
                return Err(FileStoreError::corrupt(path, 0, format!("no segment holds index {idx}")));
            }
            let i = i - 1;
            self.ensure_indexed(i)?;
            let seg = &self.segments[i];
            let ix = seg.index.as_deref().unwrap_or(&[]);
            let count = ix.len().saturating_sub(1) as u64;
            if idx - seg.first >= count {
                return Err(FileStoreError::corrupt(
                    &seg.path,
                    seg.end_offset(),
                    format!("segment ends before index {idx}"),
                ));
            }
            let hi = end.min(seg.first + count);
            let from = ix[(idx - seg.first) as usize];
            let to = ix[(hi - seg.first) as usize];
            let mut buf = vec![0u8; (to - from) as usize];
            let got = self.fs.read_at(&seg.path, from, &mut buf).map_err(|e| FileStoreError::io(&seg.path, e))?;
            if got < buf.len() {
                return Err(FileStoreError::corrupt(&seg.path, from + got as u64, "segment shorter than indexed"));
            }
            let mut pos = 0usize;
            while idx < hi {
                let at = from + pos as u64;
                match format::parse_frame(&buf[pos..], self.opts.max_record_size) {
                    Frame::Record(payload, total) => {
                        out.push(decode_entry(&seg.path, at, payload, idx)?);
                        pos += total;
                        idx += 1;
                    }
                    Frame::Incomplete => {
                        return Err(FileStoreError::corrupt(&seg.path, at, "record shorter than indexed"))
                    }
                    Frame::Bad(reason) => return Err(FileStoreError::corrupt(&seg.path, at, reason)),
                }
            }
        }
        Ok(out)
    }

    fn check_writable(&self) -> Result<(), FileStoreError> {
        match &self.failed {
            Some(why) => Err(FileStoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Records a failed write: the store refuses every later write.
    fn fail(&mut self, op: &str, e: FileStoreError) -> FileStoreError {
        tracing::error!(dir = %self.dir.display(), error = %e, "{op} failed; the store refuses further writes");
        self.failed = Some(format!("{op} failed: {e}"));
        self.active = None;
        e
    }

    fn append_inner(&mut self, first: LogIndex, buf: &[u8], offsets: &[u64]) -> Result<(), FileStoreError> {
        let roll = match self.segments.last() {
            None => true,
            Some(s) => s.first + s.count() != first || s.end_offset() >= self.opts.segment_size,
        };
        if roll {
            if let Some(s) = self.segments.last() {
                if s.count() == 0 {
                    // An empty active segment that cannot take this batch.
                    self.active = None;
                    remove(&self.fs, &s.path)?;
                    self.segments.pop();
                }
            }
            self.active = None;
            let path = self.dir.join(format::segment_file_name(first));
            let mut data = Vec::with_capacity(SEGMENT_HEADER_LEN + buf.len());
            data.extend_from_slice(&SegmentHeader { cluster_id: self.opts.cluster_id, first_index: first }.encode());
            data.extend_from_slice(buf);
            let mut f = self.fs.create(&path, true).map_err(|e| FileStoreError::io(&path, e))?;
            f.write_at(0, &data).map_err(|e| FileStoreError::io(&path, e))?;
            self.active_len = data.len() as u64;
            self.preallocate(&mut f, &path, data.len() as u64)?;
            f.sync_data().map_err(|e| FileStoreError::io(&path, e))?;
            sync_dir(&self.fs, &self.dir)?;
            let base = SEGMENT_HEADER_LEN as u64;
            let mut index = vec![base];
            index.extend(offsets.iter().map(|o| o + base));
            self.segments.push(Segment { first, path, index: Some(index) });
            // The segment just sealed keeps its offsets: the entries most likely to be
            // read back (for a follower that lags a little) are in it.
            self.bound_sealed_indexes(self.segments.len().saturating_sub(2));
            self.active = Some(f);
            return Ok(());
        }
        let Some(seg) = self.segments.last() else { return Ok(()) };
        let path = seg.path.clone();
        let base = seg.end_offset();
        let mut f = match self.active.take() {
            Some(f) => f,
            None => {
                // The file's length is not known here: zero-fill again from the records' end.
                self.active_len = base;
                self.fs.open_write(&path).map_err(|e| FileStoreError::io(&path, e))?
            }
        };
        let end = base + buf.len() as u64;
        self.preallocate(&mut f, &path, end)?;
        f.write_at(base, buf).map_err(|e| FileStoreError::io(&path, e))?;
        f.sync_data().map_err(|e| FileStoreError::io(&path, e))?;
        self.active = Some(f);
        if let Some(ix) = self.segments.last_mut().and_then(|s| s.index.as_mut()) {
            ix.extend(offsets.iter().map(|o| o + base));
        }
        Ok(())
    }

    /// Makes sure the active segment `f` has zero-filled space after `end` (where the
    /// records will end): when `end` reaches past what was zero-filled, writes
    /// `opts.preallocate` zero bytes after it, but not past the segment size (a segment
    /// that long takes no more appends). The caller's sync makes them durable.
    fn preallocate(&mut self, f: &mut F::File, path: &Path, end: u64) -> Result<(), FileStoreError> {
        let until = end.saturating_add(self.opts.preallocate).min(self.opts.segment_size);
        if end < self.active_len || until <= end {
            return Ok(());
        }
        let mut at = end;
        while at < until {
            let n = (until - at).min(ZEROS.len() as u64);
            f.write_at(at, &ZEROS[..n as usize]).map_err(|e| FileStoreError::io(path, e))?;
            at += n;
        }
        self.active_len = until;
        Ok(())
    }

    fn truncate_inner(&mut self, from: LogIndex) -> Result<(), FileStoreError> {
        self.active = None;
        let k = self.segments.partition_point(|s| s.first < from);
        if k > 0 {
            self.ensure_indexed(k - 1)?;
        }
        // Delete whole later segments from the highest down, so a crash at any point
        // leaves a prefix of the log.
        let removed = self.segments.len() > k;
        while self.segments.len() > k {
            if let Some(s) = self.segments.pop() {
                remove(&self.fs, &s.path)?;
            }
        }
        if removed {
            sync_dir(&self.fs, &self.dir)?;
        }
        if let Some(seg) = self.segments.last_mut() {
            let keep = (from - seg.first) as usize;
            if let Some(ix) = seg.index.as_mut() {
                if keep + 1 < ix.len() {
                    let len = ix[keep];
                    let mut f = self.fs.open_write(&seg.path).map_err(|e| FileStoreError::io(&seg.path, e))?;
                    f.set_len(len).map_err(|e| FileStoreError::io(&seg.path, e))?;
                    let path = seg.path.clone();
                    ix.truncate(keep + 1);
                    f.sync_all().map_err(|e| FileStoreError::io(&path, e))?;
                }
            }
        }
        self.last = if from - 1 > self.prev.index {
            let e = self.read_entries(from - 1, from)?;
            e.first().map_or(self.prev, |e| LogId { term: e.term, index: e.index })
        } else {
            self.prev
        };
        Ok(())
    }

    fn purge_inner(&mut self, upto: LogIndex) -> Result<(), FileStoreError> {
        let e = self.read_entries(upto, upto + 1)?;
        let Some(e) = e.first() else {
            return Err(FileStoreError::corrupt(&self.dir, 0, format!("entry {upto} missing")));
        };
        let new_prev = LogId { term: e.term, index: e.index };
        let mut body = [0u8; META_BODY_LEN];
        body[0..8].copy_from_slice(&new_prev.index.to_le_bytes());
        body[8..16].copy_from_slice(&new_prev.term.to_le_bytes());
        write_atomic(
            &self.fs,
            &self.dir,
            META_FILE,
            &[&format::encode_small_file(format::META_MAGIC, self.opts.cluster_id, &body)],
        )?;
        self.prev = new_prev;
        // Delete whole segments that hold nothing after `upto` (never the active one).
        let mut removed = false;
        while self.segments.len() >= 2 && self.segments[1].first <= upto + 1 {
            let s = self.segments.remove(0);
            remove(&self.fs, &s.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.fs, &self.dir)?;
        }
        Ok(())
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
        let mut body = [0u8; HARD_STATE_BODY_LEN];
        body[0..8].copy_from_slice(&hs.term.to_le_bytes());
        if let Some(v) = hs.voted_for {
            body[8] = 1;
            body[9..17].copy_from_slice(&v.to_le_bytes());
        }
        let bytes = format::encode_small_file(format::HARD_STATE_MAGIC, self.opts.cluster_id, &body);
        match write_atomic(&self.fs, &self.dir, HARD_STATE_FILE, &[&bytes]) {
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
        let mut buf = Vec::with_capacity(entries.iter().map(|e| e.approx_size() + 16).sum());
        let mut offsets = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if e.index != first.index + i as u64 {
                return Err(StoreError::Invalid(format!("append is not contiguous at index {}", e.index)));
            }
            let len = format::encode_frame_with(&mut buf, |out| {
                *out = postcard::to_extend(e, std::mem::take(out))?;
                Ok::<(), postcard::Error>(())
            })
            .map_err(|err| StoreError::Invalid(format!("entry {} cannot be encoded: {err}", e.index)))?;
            if len > self.opts.max_record_size as usize {
                return Err(StoreError::Invalid(format!(
                    "entry {} encodes to {len} bytes, over the maximum record size {}",
                    e.index, self.opts.max_record_size
                )));
            }
            offsets.push(buf.len() as u64);
        }
        match self.append_inner(first.index, &buf, &offsets) {
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
        Ok(self.truncate_inner(from).map_err(|e| self.fail("truncate", e))?)
    }

    async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
        self.check_writable()?;
        if upto > self.last.index {
            return Err(StoreError::Invalid(format!("purge({upto}) beyond the last index {}", self.last.index)));
        }
        if upto <= self.prev.index {
            return Ok(());
        }
        Ok(self.purge_inner(upto).map_err(|e| self.fail("purge", e))?)
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
        Ok(self.read_entries(start, end)?)
    }
}

#[cfg(test)]
mod tests;

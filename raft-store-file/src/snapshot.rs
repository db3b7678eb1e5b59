//! Snapshot files (paper §7) and the log reset that installing a snapshot needs.
//!
//! The directory holds at most one snapshot, `NNNNNNNNNNNNNNNNNNNN.snap` named by its last
//! included index: a head (metadata with the data's size and CRC-32C, itself
//! checksummed) followed by the data (the byte layout is in `docs/storage-format.md`).
//! [`FileSnapshots`] streams a new snapshot into a temp file through a buffer (never
//! holding the data in memory), writes the head last, syncs, renames it into place and
//! syncs the directory; only then is the older snapshot file deleted. An open verifies
//! the newest file's head and that its data is all there; the data's checksum is checked
//! by every reader as it reads ([`raft::snapshot::ChecksumReader`]), so a restart reads a
//! large snapshot once, not twice. Chunk reads (a leader sending the snapshot) carry the
//! checksum along from chunk to chunk and refuse the last chunk of a transfer whose data
//! does not match it, so a follower never completes a snapshot a read fault damaged. A
//! snapshot read that fails its checksum stops the store (fail-stop).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use raft::snapshot::{ChecksumReader, SnapshotMeta, SnapshotStore, SnapshotWriter};
use raft::{LogId, LogIndex, Membership, StoreError};

use crate::format::{self, SnapshotHead};
use crate::fs::{remove, sync_dir};
use crate::meta::{self, Marker};
use crate::vfs::{Vfs, VfsFile};
use crate::{FileStore, FileStoreError};

/// Bytes a snapshot writer gathers before it writes them out.
const WRITE_BUFFER: usize = 1 << 20;
/// How many chunk end offsets the chunk checksums remember (12 bytes each).
const MAX_CHUNK_CRCS: usize = 1 << 16;
/// Bytes read at a time when a chunk read checks the data before it.
const VERIFY_BUFFER: usize = 1 << 16;

/// The snapshot files of one store directory: the [`SnapshotStore`] of a [`FileStore`]
/// (see the trait for the contract), shared by the store and the driver's threads.
/// Cloning shares the same state.
#[derive(Debug)]
pub struct FileSnapshots<F: Vfs>(Arc<SnapshotDir<F>>);

impl<F: Vfs> Clone for FileSnapshots<F> {
    fn clone(&self) -> Self {
        FileSnapshots(Arc::clone(&self.0))
    }
}

impl<F: Vfs> FileSnapshots<F> {
    pub(crate) fn new(fs: F, dir: PathBuf, cluster_id: u64) -> Self {
        FileSnapshots(Arc::new(SnapshotDir {
            fs,
            dir,
            cluster_id,
            latest: Mutex::new(None),
            next_temp: AtomicU64::new(0),
            failed: Mutex::new(None),
            chunk_crcs: Mutex::new(None),
        }))
    }

    /// Why the store refuses writes, if it does (fail-stop).
    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.0.failed).clone()
    }

    /// Makes the store refuse every later write and snapshot.
    pub(crate) fn set_failed(&self, why: String) {
        lock(&self.0.failed).get_or_insert(why);
    }

    /// See [`SnapshotDir::recover`].
    pub(crate) fn recover(&self, indexes: Vec<u64>) -> Result<(), FileStoreError> {
        self.0.recover(indexes)
    }

    /// The metadata of the latest snapshot, if any.
    pub fn meta(&self) -> Option<SnapshotMeta> {
        lock(&self.0.latest).as_ref().map(|(m, _)| m.clone())
    }
}

/// The state behind [`FileSnapshots`].
#[derive(Debug)]
pub(crate) struct SnapshotDir<F: Vfs> {
    fs: F,
    dir: PathBuf,
    cluster_id: u64,
    /// The latest finished snapshot and where its data starts in its file.
    latest: Mutex<Option<(SnapshotMeta, u64)>>,
    /// Distinguishes the temp files of writers running at the same time.
    next_temp: AtomicU64,
    /// Why the store refuses writes and snapshots, after a failed write or sync or a
    /// read that returned corrupt data (fail-stop); shared with the log.
    failed: Mutex<Option<String>>,
    /// What chunk reads of the latest snapshot read so far.
    chunk_crcs: Mutex<Option<ChunkCrcs>>,
}

/// The CRC-32C of the data before each offset at which a chunk read of the snapshot
/// ending at `last` ended (and 0 at offset 0): each chunk read continues the checksum of
/// the chunk before it, and a transfer's last chunk is handed out only if the data read
/// matches the snapshot's checksum.
#[derive(Debug)]
struct ChunkCrcs {
    last: LogId,
    at: BTreeMap<u64, u32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<F: Vfs> SnapshotDir<F> {
    fn path(&self, index: u64) -> PathBuf {
        self.dir.join(format::snapshot_file_name(index))
    }

    /// The latest snapshot's metadata and data offset, if it is the one ending at `last`.
    fn held(&self, last: LogId) -> Result<(SnapshotMeta, u64), StoreError> {
        match &*lock(&self.latest) {
            Some((meta, offset)) if meta.last == last => Ok((meta.clone(), *offset)),
            _ => Err(StoreError::Unavailable { start: last.index, end: last.index }),
        }
    }

    fn fail(&self, e: FileStoreError) -> StoreError {
        tracing::error!(dir = %self.dir.display(), error = %e, "a snapshot write failed; the store refuses writes from now on");
        lock(&self.failed).get_or_insert_with(|| e.to_string());
        e.into()
    }

    /// Records a snapshot read that returned corrupt data: the store refuses every later
    /// write and snapshot (fail-stop).
    fn fail_read(&self, e: FileStoreError) -> FileStoreError {
        tracing::error!(dir = %self.dir.display(), error = %e, "a snapshot read failed its checksum; the store refuses writes from now on");
        lock(&self.failed).get_or_insert_with(|| format!("snapshot read failed: {e}"));
        e
    }

    /// Checks the chunk `buf` read at `offset` of the data of the snapshot `meta` (whose
    /// data starts at `start` of its file): against an earlier read of the same bytes,
    /// and, if it is the last chunk, the data read against the snapshot's checksum.
    fn check_chunk(&self, meta: &SnapshotMeta, start: u64, offset: u64, buf: &[u8]) -> Result<(), FileStoreError> {
        let path = self.path(meta.last.index);
        let end = offset + buf.len() as u64;
        let mut guard = lock(&self.chunk_crcs);
        let crcs = match &mut *guard {
            Some(c) if c.last == meta.last => c,
            other => other.insert(ChunkCrcs { last: meta.last, at: BTreeMap::from([(0, 0)]) }),
        };
        let after = crcs.at.get(&offset).map(|&before| crc32c::crc32c_append(before, buf));
        if let Some(crc) = after {
            if crcs.at.get(&end).is_some_and(|&seen| seen != crc) {
                return Err(FileStoreError::corrupt(
                    &path,
                    start + offset,
                    "a snapshot chunk read back differently from an earlier read of the same bytes",
                ));
            }
            if crcs.at.len() >= MAX_CHUNK_CRCS {
                crcs.at.retain(|&o, _| o == 0);
            }
            crcs.at.insert(end, crc);
        }
        drop(guard);
        if end != meta.size {
            return Ok(());
        }
        let crc = match after {
            Some(crc) => crc,
            // The chunks before were not read in order from the start: read them now.
            None => crc32c::crc32c_append(self.data_crc(&path, start, offset)?, buf),
        };
        if crc != meta.checksum {
            return Err(FileStoreError::corrupt(
                &path,
                start,
                format!("the snapshot data read has checksum {crc:08x}, its head says {:08x}", meta.checksum),
            ));
        }
        Ok(())
    }

    /// The CRC-32C of the first `len` bytes of the data of snapshot file `path`, which
    /// starts at `start`.
    fn data_crc(&self, path: &Path, start: u64, len: u64) -> Result<u32, FileStoreError> {
        let mut data = DataReader { fs: self.fs.clone(), path: path.to_path_buf(), at: start, end: start + len };
        let mut buf = vec![0u8; VERIFY_BUFFER];
        let mut crc = 0;
        loop {
            let n = data.read(&mut buf).map_err(|e| FileStoreError::io(path, e))?;
            let Some(read) = buf.get(..n).filter(|r| !r.is_empty()) else { break };
            crc = crc32c::crc32c_append(crc, read);
        }
        if data.at != data.end {
            return Err(FileStoreError::corrupt(path, data.at, "the snapshot file ends early"));
        }
        Ok(crc)
    }

    /// On open: verifies the newest of the snapshot files found (by their indexes) and
    /// deletes the older ones, which a crash left behind after a newer one was durable.
    pub(crate) fn recover(&self, mut indexes: Vec<u64>) -> Result<(), FileStoreError> {
        indexes.sort_unstable();
        let Some(newest) = indexes.pop() else { return Ok(()) };
        let path = self.path(newest);
        let (meta, offset) = self.verify(&path, newest)?;
        for &i in &indexes {
            let old = self.path(i);
            tracing::info!(file = %old.display(), "removing a snapshot replaced by a newer one");
            remove(&self.fs, &old)?;
        }
        if !indexes.is_empty() {
            sync_dir(&self.fs, &self.dir)?;
        }
        *lock(&self.latest) = Some((meta, offset));
        Ok(())
    }

    /// Reads and checks a snapshot file's head, and that its data is all there.
    fn verify(&self, path: &Path, index: u64) -> Result<(SnapshotMeta, u64), FileStoreError> {
        let corrupt = |(at, why): (u64, String)| FileStoreError::corrupt(path, at, why);
        let mut fixed = vec![0u8; format::SNAPSHOT_FIXED_LEN];
        let n = self.fs.read_at(path, 0, &mut fixed).map_err(|e| FileStoreError::io(path, e))?;
        fixed.truncate(n);
        let len = SnapshotHead::len_from_fixed(&fixed).map_err(corrupt)?;
        let mut bytes = vec![0u8; len];
        let n = self.fs.read_at(path, 0, &mut bytes).map_err(|e| FileStoreError::io(path, e))?;
        bytes.truncate(n);
        let head = SnapshotHead::decode(&bytes).map_err(corrupt)?;
        if head.cluster_id != self.cluster_id {
            return Err(FileStoreError::ClusterMismatch {
                path: path.into(),
                expected: self.cluster_id,
                found: head.cluster_id,
            });
        }
        if head.last_index != index {
            return Err(corrupt((
                20,
                format!("snapshot holds last index {}, the file name says {index}", head.last_index),
            )));
        }
        let membership: Membership = postcard::from_bytes(&head.membership)
            .map_err(|e| corrupt((format::SNAPSHOT_FIXED_LEN as u64, format!("bad membership: {e}"))))?;
        let offset = len as u64;
        if head.data_size > 0 {
            let mut last = [0u8; 1];
            let end = offset + head.data_size - 1;
            let n = self.fs.read_at(path, end, &mut last).map_err(|e| FileStoreError::io(path, e))?;
            if n != 1 {
                return Err(corrupt((offset, format!("the file ends before its {} bytes of data", head.data_size))));
            }
        }
        let meta = SnapshotMeta {
            last: LogId { index: head.last_index, term: head.last_term },
            membership,
            membership_index: head.membership_index,
            size: head.data_size,
            checksum: head.data_crc,
        };
        Ok((meta, offset))
    }
}

impl<F: Vfs + Clone> SnapshotStore for FileSnapshots<F> {
    fn create(
        &self,
        last: LogId,
        membership: &Membership,
        membership_index: LogIndex,
    ) -> Result<Box<dyn SnapshotWriter>, StoreError> {
        let owner = self.clone();
        let d = &*self.0;
        if let Some(why) = &*lock(&d.failed) {
            return Err(StoreError::Failed(why.clone()));
        }
        let membership_bytes = postcard::to_allocvec(membership)
            .map_err(|e| StoreError::Invalid(format!("the membership cannot be encoded: {e}")))?;
        if membership_bytes.len() > format::MAX_SNAPSHOT_MEMBERSHIP {
            return Err(StoreError::Invalid(format!("a membership of {} bytes", membership_bytes.len())));
        }
        let head = SnapshotHead {
            cluster_id: d.cluster_id,
            last_index: last.index,
            last_term: last.term,
            membership_index,
            data_size: 0,
            data_crc: 0,
            membership: membership_bytes,
        };
        let n = d.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = d.dir.join(format!("{}.{n}.tmp", format::snapshot_file_name(last.index)));
        let file = d.fs.create(&temp, false).map_err(|e| d.fail(FileStoreError::io(&temp, e)))?;
        let at = head.encoded_len() as u64;
        Ok(Box::new(FileSnapshotWriter {
            owner,
            temp,
            file: Some(file),
            head,
            membership: membership.clone(),
            buf: Vec::with_capacity(WRITE_BUFFER),
            at,
            size: 0,
            crc: 0,
        }))
    }

    fn latest(&self) -> Result<Option<SnapshotMeta>, StoreError> {
        Ok(self.meta())
    }

    fn open(&self, last: LogId) -> Result<Box<dyn Read + Send>, StoreError> {
        let d = &*self.0;
        let (meta, offset) = d.held(last)?;
        let data = DataReader { fs: d.fs.clone(), path: d.path(last.index), at: offset, end: offset + meta.size };
        let checked = ChecksumReader::new(io::BufReader::with_capacity(1 << 16, data), &meta);
        Ok(Box::new(FailOnCorrupt { inner: checked, owner: self.clone(), path: d.path(last.index) }))
    }

    fn read_chunk(&self, last: LogId, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let d = &*self.0;
        let (meta, start) = d.held(last)?;
        let want = (len as u64).min(meta.size.saturating_sub(offset)) as usize;
        if want == 0 {
            // At or past the end (where `start + offset` may not even fit in a u64).
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; want];
        let path = d.path(last.index);
        let n = d.fs.read_at(&path, start + offset, &mut buf).map_err(|e| FileStoreError::io(&path, e))?;
        if n != want {
            let e = FileStoreError::corrupt(&path, start + offset + n as u64, "the snapshot file ends early");
            return Err(d.fail_read(e).into());
        }
        d.check_chunk(&meta, start, offset, &buf).map_err(|e| d.fail_read(e))?;
        Ok(buf)
    }
}

/// A snapshot being written: see [`SnapshotStore::create`].
struct FileSnapshotWriter<F: Vfs> {
    owner: FileSnapshots<F>,
    temp: PathBuf,
    /// `None` once finished.
    file: Option<F::File>,
    head: SnapshotHead,
    membership: Membership,
    buf: Vec<u8>,
    /// Where the next write goes in the file.
    at: u64,
    size: u64,
    crc: u32,
}

impl<F: Vfs> FileSnapshotWriter<F> {
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else { return Err(io::Error::other("the snapshot is finished")) };
        file.write_at(self.at, &self.buf)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish_file(&mut self) -> Result<SnapshotMeta, FileStoreError> {
        let owner = self.owner.clone();
        let d = &*owner.0;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| FileStoreError::io(&path, e)
        };
        self.flush_buf().map_err(io(&self.temp))?;
        self.head.data_size = self.size;
        self.head.data_crc = self.crc;
        let head = self.head.encode();
        let mut file = self.file.take().ok_or_else(|| FileStoreError::Invalid("the snapshot is finished".into()))?;
        file.write_at(0, &head).map_err(io(&self.temp))?;
        file.sync_all().map_err(io(&self.temp))?;
        drop(file);
        let last = LogId { index: self.head.last_index, term: self.head.last_term };
        let meta = SnapshotMeta {
            last,
            membership: self.membership.clone(),
            membership_index: self.head.membership_index,
            size: self.size,
            checksum: self.crc,
        };
        // One snapshot is published at a time: check, rename, drop the older one.
        let mut latest = lock(&d.latest);
        if let Some((held, _)) = &*latest {
            if held.last.index > last.index {
                let _ = d.fs.remove(&self.temp);
                return Err(FileStoreError::Invalid(format!(
                    "snapshot at index {} is older than the one held at index {}",
                    last.index, held.last.index
                )));
            }
        }
        let path = d.path(last.index);
        d.fs.rename(&self.temp, &path).map_err(io(&path))?;
        sync_dir(&d.fs, &d.dir)?;
        let older = latest.as_ref().map(|(m, _)| m.last.index).filter(|&i| i != last.index);
        *latest = Some((meta.clone(), head.len() as u64));
        drop(latest);
        if let Some(i) = older {
            let old = d.path(i);
            remove(&d.fs, &old)?;
            sync_dir(&d.fs, &d.dir)?;
        }
        Ok(meta)
    }
}

impl<F: Vfs> Write for FileSnapshotWriter<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<F: Vfs> SnapshotWriter for FileSnapshotWriter<F> {
    fn finish(mut self: Box<Self>) -> Result<SnapshotMeta, StoreError> {
        match self.finish_file() {
            Ok(meta) => Ok(meta),
            Err(FileStoreError::Invalid(why)) => Err(StoreError::Invalid(why)),
            Err(e) => Err(self.owner.0.fail(e)),
        }
    }
}

impl<F: Vfs> Drop for FileSnapshotWriter<F> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Abandoned before `finish`: the temp file goes (an open removes any left).
            let _ = self.owner.0.fs.remove(&self.temp);
        }
    }
}

/// A snapshot data reader that stops the store (fail-stop) when the data read fails its
/// checksum.
struct FailOnCorrupt<R, F: Vfs> {
    inner: R,
    owner: FileSnapshots<F>,
    path: PathBuf,
}

impl<R: Read, F: Vfs> Read for FailOnCorrupt<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData {
                self.owner.0.fail_read(FileStoreError::corrupt(&self.path, 0, e.to_string()));
            }
        })
    }
}

/// Reads a snapshot's data, `at..end` of its file.
struct DataReader<F: Vfs> {
    fs: F,
    path: PathBuf,
    at: u64,
    end: u64,
}

impl<F: Vfs> Read for DataReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.at).min(buf.len() as u64) as usize;
        let Some(dst) = buf.get_mut(..want) else { return Ok(0) };
        if dst.is_empty() {
            return Ok(0);
        }
        let n = self.fs.read_at(&self.path, self.at, dst)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl<F: Vfs> FileStore<F> {
    /// The metadata of the latest snapshot held, if any.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshots.meta()
    }

    /// Stores a snapshot held in memory whole: [`SnapshotStore::create`] with `meta`'s
    /// last entry and membership, the data, [`SnapshotWriter::finish`]. Returns the
    /// metadata with the size and checksum. For small states and tests; the driver
    /// streams through [`raft::LogStore::snapshots`]. A failure other than an older
    /// snapshot makes the store refuse every later write (fail-stop).
    pub fn save_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<SnapshotMeta, FileStoreError> {
        self.check_writable()?;
        let result = (|| {
            let mut w = self.snapshots.create(meta.last, &meta.membership, meta.membership_index)?;
            w.write_all(data)?;
            w.finish()
        })();
        match result {
            Ok(m) => Ok(m),
            Err(StoreError::Invalid(why)) => Err(FileStoreError::Invalid(why)),
            Err(e) => Err(self.fail("save_snapshot", FileStoreError::Invalid(e.to_string()))),
        }
    }

    /// Reads the latest snapshot whole, checking its data against its checksum (a
    /// mismatch is [`FileStoreError::Corrupt`] naming the file).
    pub fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, FileStoreError> {
        let Some(meta) = self.snapshots.meta() else { return Ok(None) };
        let path = self.dir.join(format::snapshot_file_name(meta.last.index));
        let mut data = Vec::new();
        let read =
            self.snapshots.open(meta.last).map_err(|e| FileStoreError::Invalid(e.to_string()))?.read_to_end(&mut data);
        match read {
            Ok(_) => Ok(Some((meta, data))),
            // The reader stopped the store if the data failed its checksum.
            Err(e) => Err(FileStoreError::corrupt(&path, 0, e.to_string())),
        }
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

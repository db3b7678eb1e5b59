//! Opening a store: the options check, the directory lock, the directory listing, the
//! metadata files, the snapshot, a reset that a crash interrupted, and the recovery of
//! the segments (the last one scanned and a torn tail cut off, the others checked as far
//! as their headers).

use std::path::Path;

use raft::{LogId, LogIndex};

use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::fs::{remove, sync_dir, IoContext};
use crate::meta::{self, Marker};
use crate::segment::{read_header, scan_records, Segment};
use crate::vfs::{StdFs, Vfs, VfsFile};
use crate::{FileSnapshots, FileStore, FileStoreError, FileStoreOptions, LOCK_FILE};

/// The files of a data directory, by kind, from their names.
struct Listing {
    /// First indexes of the segment files, sorted.
    segments: Vec<LogIndex>,
    /// Last included indexes of the snapshot files.
    snapshots: Vec<u64>,
}

/// Lists `dir`, removing the temp files of atomic writes that did not reach their rename.
fn list_dir<F: Vfs>(fs: &F, dir: &Path) -> Result<Listing, FileStoreError> {
    let mut listing = Listing { segments: Vec::new(), snapshots: Vec::new() };
    for name in fs.list(dir).at(dir)? {
        if let Some(first) = format::parse_segment_file_name(&name) {
            listing.segments.push(first);
        } else if let Some(index) = format::parse_snapshot_file_name(&name) {
            listing.snapshots.push(index);
        } else if name.ends_with(".tmp") {
            // An atomic write that did not reach its rename.
            remove(fs, &dir.join(&name))?;
        }
    }
    listing.segments.sort_unstable();
    Ok(listing)
}

/// Whether a last segment's bytes are those of a creation a crash tore: shorter than a
/// header, or all zeros (the size reached the disk, the data did not). A zeroed header
/// before bytes that are not zeros is corruption: the header is written with the first
/// records, in one write.
fn torn_creation(path: &Path, data: &[u8]) -> Result<bool, FileStoreError> {
    let Some(head) = data.get(..SEGMENT_HEADER_LEN) else { return Ok(true) };
    if head.iter().any(|&b| b != 0) {
        return Ok(false);
    }
    match data.iter().position(|&b| b != 0) {
        None => Ok(true),
        Some(at) => Err(FileStoreError::corrupt(path, 0, format!("zeroed segment header before data at offset {at}"))),
    }
}

/// Takes the directory lock.
fn lock_dir<F: Vfs>(fs: &F, dir: &Path) -> Result<F::Lock, FileStoreError> {
    let lock_path = dir.join(LOCK_FILE);
    match fs.try_lock(&lock_path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(FileStoreError::Locked { path: lock_path }),
        Err(e) => Err(FileStoreError::io(&lock_path, e)),
    }
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
        opts.check()?;
        fs.create_dir_all(&dir).at(&dir)?;
        let lock = lock_dir(&fs, &dir)?;
        let listing = list_dir(&fs, &dir)?;
        let hard_state = meta::read_hard_state(&fs, &dir, opts.cluster_id)?;
        let prev = meta::read_position(&fs, &dir, opts.cluster_id, Marker::Purge)?.unwrap_or_default();
        let segments = listing.segments.iter().map(|&first| Segment::new(&dir, first, None)).collect();
        let snapshots = FileSnapshots::new(fs.clone(), dir.clone(), opts.cluster_id);
        let mut store = FileStore {
            fs,
            dir,
            opts,
            _lock: lock,
            hard_state,
            prev,
            last: prev,
            segments,
            active: None,
            active_len: 0,
            snapshots,
        };
        store.snapshots.recover(listing.snapshots)?;
        store.recover_reset()?;
        store.recover()?;
        // Make every file name this open relied on durable (a rename or create whose
        // directory sync failed in an earlier process would otherwise be visible now and
        // lost in a later crash).
        sync_dir(&store.fs, &store.dir)?;
        Ok(store)
    }

    /// On open: finishes a reset whose marker a crash left behind.
    fn recover_reset(&mut self) -> Result<(), FileStoreError> {
        let Some(last) = meta::read_position(&self.fs, &self.dir, self.opts.cluster_id, Marker::Reset)? else {
            return Ok(());
        };
        tracing::warn!(dir = %self.dir.display(), ?last, "finishing a log reset interrupted by a crash");
        self.finish_reset(last)
    }

    /// Scans the last segment, checks the headers of the sealed ones, and finds the last
    /// entry held.
    fn recover(&mut self) -> Result<(), FileStoreError> {
        let last_in_active = self.recover_last_segment()?;
        let Some((_active, sealed)) = self.segments.split_last() else {
            return self.recovered(None);
        };
        for seg in sealed {
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let got = self.fs.read_at(&seg.path, 0, &mut head).at(&seg.path)?;
            read_header(&seg.path, head.get(..got).unwrap_or_default(), seg.first, self.opts.cluster_id)?;
        }
        // The last record: in the last segment, or (if it is empty) in an earlier one.
        let last_rec = match last_in_active {
            Some(l) => Some(l),
            None => self.last_sealed_record()?,
        };
        self.recovered(last_rec)
    }

    /// Drops the last segment if its creation was torn (repeatedly), else scans it, cuts
    /// off a torn tail and syncs it; returns its last record.
    ///
    /// A segment is created only once the one before it is synced whole: once a later
    /// segment was dropped, a bad record in the new last one is corruption, not a torn
    /// tail. Dropping a segment or cutting a tail deletes data, so each is done only when
    /// a second read of the file returns the same bytes (a read fault is not taken for a
    /// torn write).
    fn recover_last_segment(&mut self) -> Result<Option<LogId>, FileStoreError> {
        let mut later_dropped = false;
        while let Some(seg) = self.segments.last() {
            let (path, first) = (seg.path.clone(), seg.first);
            let data = crate::fs::read(&self.fs, &path)?;
            if torn_creation(&path, &data)? {
                self.confirm_read(&path, &data)?;
                tracing::warn!(file = %path.display(), "removing a segment whose creation was torn");
                remove(&self.fs, &path)?;
                sync_dir(&self.fs, &self.dir)?;
                self.segments.pop();
                later_dropped = true;
                continue;
            }
            read_header(&path, &data, first, self.opts.cluster_id)?;
            let scan = scan_records(&path, &data, first, self.opts.max_record_size, !later_dropped)?;
            // The tail is synced even when whole: a process that stopped after a failed
            // sync may have left written but unsynced records, which this open is about
            // to report as held (durable).
            let mut f = self.fs.open_write(&path).at(&path)?;
            if let Some((at, reason)) = &scan.torn_at {
                self.confirm_read(&path, &data)?;
                tracing::warn!(file = %path.display(), offset = at, reason = %reason, "truncating a torn tail");
                f.set_len(*at).at(&path)?;
            }
            f.sync_all().at(&path)?;
            let last = scan.last_term.map(|term| LogId { term, index: first + scan.index.len() as u64 - 2 });
            if let Some(seg) = self.segments.last_mut() {
                seg.index = Some(scan.index);
            }
            return Ok(last);
        }
        Ok(None)
    }

    /// Reads `path` again and checks it returns `data`: a read that returned wrong bytes
    /// once (a flipped bit, a misdirected block) is unlikely to return the same again.
    fn confirm_read(&self, path: &Path, data: &[u8]) -> Result<(), FileStoreError> {
        let again = crate::fs::read(&self.fs, path)?;
        if again == data {
            return Ok(());
        }
        let at = data.iter().zip(&again).position(|(a, b)| a != b).unwrap_or(data.len().min(again.len()));
        Err(FileStoreError::corrupt(
            path,
            at as u64,
            "the file read back differently on a second read (a read fault); nothing was cut",
        ))
    }

    /// The last record of the last sealed segment, if there is one and it holds any.
    fn last_sealed_record(&mut self) -> Result<Option<LogId>, FileStoreError> {
        let Some(i) = self.segments.len().checked_sub(2) else { return Ok(None) };
        self.ensure_indexed(i)?;
        let seg = self.segment(i)?;
        let count = seg.count();
        if count == 0 {
            return Ok(None);
        }
        let index = seg.first + count - 1;
        let e = self.read_entries(index, index + 1)?;
        Ok(e.first().map(|e| LogId { term: e.term, index: e.index }))
    }

    /// Sets the last entry held from the last record found, and refuses a log with a gap
    /// after the purge point.
    fn recovered(&mut self, last_rec: Option<LogId>) -> Result<(), FileStoreError> {
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
}

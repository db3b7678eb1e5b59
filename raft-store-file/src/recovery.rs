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
            failed: None,
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
    fn recover_last_segment(&mut self) -> Result<Option<LogId>, FileStoreError> {
        while let Some(seg) = self.segments.last_mut() {
            let data = crate::fs::read(&self.fs, &seg.path)?;
            if data.get(..SEGMENT_HEADER_LEN).is_none_or(|head| head.iter().all(|&b| b == 0)) {
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
            let mut f = self.fs.open_write(&seg.path).at(&seg.path)?;
            if let Some((at, reason)) = &scan.torn_at {
                tracing::warn!(file = %seg.path.display(), offset = at, reason = %reason, "truncating a torn tail");
                f.set_len(*at).at(&seg.path)?;
            }
            f.sync_all().at(&seg.path)?;
            let last = scan.last_term.map(|term| LogId { term, index: seg.first + scan.index.len() as u64 - 2 });
            seg.index = Some(scan.index);
            return Ok(last);
        }
        Ok(None)
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

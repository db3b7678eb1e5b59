//! Segment files: the in-memory record index of each, the scan that builds it, reading
//! entries back, and the write path (append, roll to a new segment, preallocation,
//! truncation and purge of whole segments).
//!
//! A segment is a header ([`SegmentHeader`]) followed by record frames, one entry each,
//! with consecutive indexes from the index in the file name; zero bytes after the last
//! record are preallocated space.

use std::path::{Path, PathBuf};

use raft::{Entry, LogId, LogIndex, StoreError};

use crate::format::{self, Frame, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::fs::{remove, sync_dir, IoContext};
use crate::meta::{self, Marker};
use crate::vfs::{Vfs, VfsFile};
use crate::{FileStore, FileStoreError};

/// How many sealed segments keep their record offsets in memory at once.
pub(crate) const MAX_INDEXED_SEALED: usize = 8;
/// Zeros written to preallocate segment space, a piece at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Index of its first record (from the file name, checked against the header).
    pub(crate) first: LogIndex,
    pub(crate) path: PathBuf,
    /// Byte offsets of each record's frame, followed by the end of the last record; `None`
    /// until the segment is first read (sealed segments are indexed lazily).
    pub(crate) index: Option<Vec<u64>>,
}

impl Segment {
    /// The segment of `dir` whose first record is `first`.
    pub(crate) fn new(dir: &Path, first: LogIndex, index: Option<Vec<u64>>) -> Segment {
        Segment { first, path: dir.join(format::segment_file_name(first)), index }
    }

    /// How many records it holds (0 while not indexed).
    pub(crate) fn count(&self) -> u64 {
        self.index.as_ref().map_or(0, |ix| (ix.len() as u64).saturating_sub(1))
    }

    /// Where its last record ends.
    pub(crate) fn end_offset(&self) -> u64 {
        self.index.as_ref().and_then(|ix| ix.last().copied()).unwrap_or(SEGMENT_HEADER_LEN as u64)
    }

    /// The offset of record `idx`'s frame, or the end offset for the index after the
    /// last; `None` if not indexed or out of range.
    fn offset_of(&self, idx: LogIndex) -> Option<u64> {
        let at = usize::try_from(idx.checked_sub(self.first)?).ok()?;
        self.index.as_ref()?.get(at).copied()
    }
}

/// The result of scanning a segment's records.
pub(crate) struct Scan {
    /// Record offsets plus the end offset.
    pub(crate) index: Vec<u64>,
    /// Term of the last record.
    pub(crate) last_term: Option<u64>,
    /// Where a torn tail starts, if the scan stopped at one (last segment only).
    pub(crate) torn_at: Option<(u64, String)>,
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
/// records. In the last segment (`tail_allowed`) a torn tail ends the scan: a bad or
/// incomplete record with no valid record anywhere after it. Anything else bad is an
/// error naming the offset of the bad record.
pub(crate) fn scan_records(
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
        let rest = data.get(pos..).unwrap_or_default();
        let reason = match format::parse_frame(rest, max_record) {
            Frame::Record(payload, total) => {
                let entry = decode_entry(path, pos as u64, payload, next)?;
                last_term = Some(entry.term);
                next += 1;
                pos += total;
                index.push(pos as u64);
                continue;
            }
            Frame::Incomplete if rest.is_empty() => return Ok(Scan { index, last_term, torn_at: None }),
            // Zero-filled space written ahead of the records (`preallocate`): the end.
            _ if rest.iter().all(|&b| b == 0) => return Ok(Scan { index, last_term, torn_at: None }),
            Frame::Incomplete => "incomplete record at the end of the file".to_string(),
            Frame::Bad(reason) => reason,
        };
        if !tail_allowed {
            return Err(FileStoreError::corrupt(path, pos as u64, reason));
        }
        if let Some(at) = valid_record_after(rest, next, max_record) {
            return Err(FileStoreError::corrupt(
                path,
                pos as u64,
                format!("{reason}, followed by a valid record at offset {}", pos + at),
            ));
        }
        return Ok(Scan { index, last_term, torn_at: Some((pos as u64, reason)) });
    }
}

/// Where in `rest`, which starts with a bad or incomplete record, a valid record starts
/// that holds an entry at index `next` or later, if one does at any byte offset. A torn
/// write leaves nothing valid after the point where it was torn (the bytes after it were
/// never synced, and a later write waits for the sync of this one), so such a record means
/// the bad one was written and synced whole, then damaged: corruption, not a torn tail.
/// The bad record's own length field is not trusted (the damage may be in it).
fn valid_record_after(rest: &[u8], next: LogIndex, max_record: u32) -> Option<usize> {
    // A record starts with a non-zero length, so none starts in the trailing zeros.
    let end = rest.iter().rposition(|&b| b != 0)? + 1;
    (1..end).find(|&at| match format::parse_frame(rest.get(at..).unwrap_or_default(), max_record) {
        Frame::Record(payload, _) => postcard::from_bytes::<Entry>(payload).is_ok_and(|e| e.index >= next),
        Frame::Incomplete | Frame::Bad(_) => false,
    })
}

/// Checks a segment header: its own checksum, the cluster and the first index the file
/// name gives.
pub(crate) fn read_header(
    path: &Path,
    data: &[u8],
    want_first: LogIndex,
    cluster_id: u64,
) -> Result<(), FileStoreError> {
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

/// Encodes `entries` (which must follow each other from `first`) as record frames;
/// returns the bytes and the end offset of each record in them.
pub(crate) fn encode_batch(
    entries: &[Entry],
    first: LogIndex,
    max_record: u32,
) -> Result<(Vec<u8>, Vec<u64>), StoreError> {
    let mut buf = Vec::with_capacity(entries.iter().map(|e| e.approx_size() + 16).sum());
    let mut offsets = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if e.index != first + i as u64 {
            return Err(StoreError::Invalid(format!("append is not contiguous at index {}", e.index)));
        }
        let len = format::encode_frame_with(&mut buf, |out| {
            *out = postcard::to_extend(e, std::mem::take(out))?;
            Ok::<(), postcard::Error>(())
        })
        .map_err(|err| StoreError::Invalid(format!("entry {} cannot be encoded: {err}", e.index)))?;
        if len > max_record as usize {
            return Err(StoreError::Invalid(format!(
                "entry {} encodes to {len} bytes, over the maximum record size {max_record}",
                e.index
            )));
        }
        offsets.push(buf.len() as u64);
    }
    Ok((buf, offsets))
}

/// Decodes the records `idx..hi` from `buf`, the bytes of a segment from offset `from`
/// on, into `out`.
fn decode_records(
    path: &Path,
    from: u64,
    buf: &[u8],
    (mut idx, hi): (LogIndex, LogIndex),
    max_record: u32,
    out: &mut Vec<Entry>,
) -> Result<(), FileStoreError> {
    let mut pos = 0usize;
    while idx < hi {
        let at = from + pos as u64;
        match format::parse_frame(buf.get(pos..).unwrap_or_default(), max_record) {
            Frame::Record(payload, total) => {
                out.push(decode_entry(path, at, payload, idx)?);
                pos += total;
                idx += 1;
            }
            Frame::Incomplete => {
                return Err(FileStoreError::corrupt(path, at, "record length reaches past where the index ends it"));
            }
            Frame::Bad(reason) => return Err(FileStoreError::corrupt(path, at, reason)),
        }
    }
    Ok(())
}

impl<F: Vfs> FileStore<F> {
    /// Segment `i`; an error naming the directory if there is none (a broken invariant,
    /// never a panic).
    pub(crate) fn segment(&self, i: usize) -> Result<&Segment, FileStoreError> {
        self.segments.get(i).ok_or_else(|| {
            FileStoreError::corrupt(&self.dir, 0, format!("segment {i} of {} is not there", self.segments.len()))
        })
    }

    /// Builds the record index of sealed segment `i` by reading it whole.
    pub(crate) fn ensure_indexed(&mut self, i: usize) -> Result<(), FileStoreError> {
        let seg = self.segment(i)?;
        if seg.index.is_some() {
            return Ok(());
        }
        let expected = self.segments.get(i + 1).map(|n| n.first - seg.first);
        let data = crate::fs::read(&self.fs, &seg.path)?;
        read_header(&seg.path, &data, seg.first, self.opts.cluster_id)?;
        let scan = scan_records(&seg.path, &data, seg.first, self.opts.max_record_size, false)?;
        let count = (scan.index.len() as u64).saturating_sub(1);
        if let Some(expected) = expected {
            if count != expected {
                return Err(FileStoreError::corrupt(
                    &seg.path,
                    scan.index.last().copied().unwrap_or(0),
                    format!("sealed segment holds {count} records, expected {expected}"),
                ));
            }
        }
        if let Some(seg) = self.segments.get_mut(i) {
            seg.index = Some(scan.index);
        }
        self.bound_sealed_indexes(i);
        Ok(())
    }

    /// Bounds memory: once more than MAX_INDEXED_SEALED sealed segments hold their
    /// record offsets (8 bytes per entry), drops all of them but segment `keep`'s; they
    /// are rebuilt from the file when needed again.
    fn bound_sealed_indexes(&mut self, keep: usize) {
        let Some((_active, sealed)) = self.segments.split_last_mut() else { return };
        if sealed.iter().filter(|s| s.index.is_some()).count() > MAX_INDEXED_SEALED {
            for (j, s) in sealed.iter_mut().enumerate() {
                if j != keep {
                    s.index = None;
                }
            }
        }
    }

    /// Reads entries `start..end` from disk; the caller checked the range is held.
    pub(crate) fn read_entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, FileStoreError> {
        let mut out = Vec::with_capacity((end - start).min(4096) as usize);
        let mut idx = start;
        while idx < end {
            let Some(i) = self.segments.partition_point(|s| s.first <= idx).checked_sub(1) else {
                let path = self.segments.first().map_or_else(|| self.dir.clone(), |s| s.path.clone());
                return Err(FileStoreError::corrupt(path, 0, format!("no segment holds index {idx}")));
            };
            self.ensure_indexed(i)?;
            let seg = self.segment(i)?;
            let count = seg.count();
            let hi = end.min(seg.first + count);
            let (Some(from), Some(to)) = (seg.offset_of(idx).filter(|_| idx - seg.first < count), seg.offset_of(hi))
            else {
                return Err(FileStoreError::corrupt(
                    &seg.path,
                    seg.end_offset(),
                    format!("segment ends before index {idx}"),
                ));
            };
            let mut buf = vec![0u8; to.saturating_sub(from) as usize];
            let got = self.fs.read_at(&seg.path, from, &mut buf).at(&seg.path)?;
            if got < buf.len() {
                return Err(FileStoreError::corrupt(&seg.path, from + got as u64, "segment shorter than indexed"));
            }
            decode_records(&seg.path, from, &buf, (idx, hi), self.opts.max_record_size, &mut out)?;
            idx = hi;
        }
        Ok(out)
    }

    /// Writes the encoded records `buf` (their end offsets in `offsets`), which start at
    /// index `first`, and syncs them: into the active segment, or into a new one when the
    /// active one is full or does not end just before `first`.
    pub(crate) fn append_records(
        &mut self,
        first: LogIndex,
        buf: &[u8],
        offsets: &[u64],
    ) -> Result<(), FileStoreError> {
        let roll = match self.segments.last() {
            None => true,
            Some(s) => s.first + s.count() != first || s.end_offset() >= self.opts.segment_size,
        };
        if roll {
            self.roll(first, buf, offsets)
        } else {
            self.append_to_active(buf, offsets)
        }
    }

    /// Starts a new active segment holding the records `buf`, from index `first`.
    fn roll(&mut self, first: LogIndex, buf: &[u8], offsets: &[u64]) -> Result<(), FileStoreError> {
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
        let mut f = self.fs.create(&path, true).at(&path)?;
        f.write_at(0, &data).at(&path)?;
        self.active_len = data.len() as u64;
        self.preallocate(&mut f, &path, data.len() as u64)?;
        f.sync_data().at(&path)?;
        sync_dir(&self.fs, &self.dir)?;
        let base = SEGMENT_HEADER_LEN as u64;
        let mut index = vec![base];
        index.extend(offsets.iter().map(|o| o + base));
        self.segments.push(Segment { first, path, index: Some(index) });
        // The segment just sealed keeps its offsets: the entries most likely to be
        // read back (for a follower that lags a little) are in it.
        self.bound_sealed_indexes(self.segments.len().saturating_sub(2));
        self.active = Some(f);
        Ok(())
    }

    /// Writes the records `buf` after the last record of the active segment.
    fn append_to_active(&mut self, buf: &[u8], offsets: &[u64]) -> Result<(), FileStoreError> {
        let Some(seg) = self.segments.last() else { return Ok(()) };
        let path = seg.path.clone();
        let base = seg.end_offset();
        let mut f = match self.active.take() {
            Some(f) => f,
            None => {
                // The file's length is not known here: zero-fill again from the records' end.
                self.active_len = base;
                self.fs.open_write(&path).at(&path)?
            }
        };
        let end = base + buf.len() as u64;
        self.preallocate(&mut f, &path, end)?;
        f.write_at(base, buf).at(&path)?;
        f.sync_data().at(&path)?;
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
            f.write_at(at, ZEROS.get(..n as usize).unwrap_or_default()).at(path)?;
            at += n;
        }
        self.active_len = until;
        Ok(())
    }

    /// Deletes the entries from `from` on: whole later segments from the highest down,
    /// then the tail of the segment holding `from - 1`.
    pub(crate) fn truncate_segments(&mut self, from: LogIndex) -> Result<(), FileStoreError> {
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
                if let Some(&len) = ix.get(keep).filter(|_| keep + 1 < ix.len()) {
                    let mut f = self.fs.open_write(&seg.path).at(&seg.path)?;
                    f.set_len(len).at(&seg.path)?;
                    ix.truncate(keep + 1);
                    f.sync_all().at(&seg.path)?;
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

    /// Moves the purge point to `upto` (the purge marker first), then deletes the whole
    /// segments that hold nothing after it.
    pub(crate) fn purge_segments(&mut self, upto: LogIndex) -> Result<(), FileStoreError> {
        let e = self.read_entries(upto, upto + 1)?;
        let Some(e) = e.first() else {
            return Err(FileStoreError::corrupt(&self.dir, 0, format!("entry {upto} missing")));
        };
        let new_prev = LogId { term: e.term, index: e.index };
        meta::write_position(&self.fs, &self.dir, self.opts.cluster_id, Marker::Purge, new_prev)?;
        self.prev = new_prev;
        // Delete whole segments that hold nothing after `upto` (never the active one).
        let mut removed = false;
        while self.segments.get(1).is_some_and(|s| s.first <= upto + 1) {
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

//! Snapshot storage (paper §7): the [`SnapshotStore`] contract, the metadata of a
//! snapshot, and the checksumming reader and writer every store can build on.
//!
//! A snapshot is a byte stream written by [`StateMachine::write_snapshot`] and read back
//! by [`StateMachine::restore`], stored with its [`SnapshotMeta`]. Streams are written
//! and read through [`std::io`] on a blocking thread
//! ([`Runtime::spawn_blocking_task`]), never on the protocol loop, so a state of any size
//! is written and sent in bounded memory.
//!
//! [`StateMachine::write_snapshot`]: crate::StateMachine::write_snapshot
//! [`StateMachine::restore`]: crate::StateMachine::restore
//! [`Runtime::spawn_blocking_task`]: crate::Runtime::spawn_blocking_task

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::membership::Membership;
use crate::types::{LogId, LogIndex};

/// What a snapshot covers and how to check it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log entry the snapshot includes (its index and term).
    pub last: LogId,
    /// The membership configuration in effect at `last` (thesis §5.1).
    pub membership: Membership,
    /// The index of the log entry that holds `membership` (0 if none did).
    pub membership_index: LogIndex,
    /// The length of the data in bytes.
    pub size: u64,
    /// CRC-32C of the data.
    pub checksum: u32,
}

/// Durable storage for snapshots, shared between the tasks of one node.
///
/// # Contract
///
/// - Every method may block its thread (file I/O and `fsync`); the driver calls them on a
///   blocking thread ([`Runtime::spawn_blocking_task`](crate::Runtime::spawn_blocking_task))
///   and may call them from several threads at once (hence `&self`).
/// - [`create`](Self::create) starts a new snapshot; nothing is visible until its
///   writer's [`finish`](SnapshotWriter::finish) returns `Ok`. From then on the snapshot
///   is durable and is the one [`latest`](Self::latest) reports, unless a snapshot with a
///   larger last index was finished before (an older one is refused with
///   [`StoreError::Invalid`] and discarded). A writer dropped without `finish`, or
///   interrupted by a crash, leaves nothing behind but the previous snapshot, which stays
///   usable.
/// - A store may delete snapshots older than the latest once a newer one is finished;
///   readers opened before keep working or fail with an error, never with wrong data.
/// - Reading checks the data against [`SnapshotMeta::checksum`]: a torn or corrupt
///   snapshot is reported as an error ([`io::ErrorKind::InvalidData`] from the reader,
///   [`StoreError::Corrupt`] from the other methods), never handed out as valid.
pub trait SnapshotStore: Send + Sync + 'static {
    /// Starts writing a snapshot that covers the log up to `last`, with the membership in
    /// effect there.
    /// `membership_index` is the index of the entry holding it.
    fn create(
        &self,
        last: LogId,
        membership: &Membership,
        membership_index: LogIndex,
    ) -> Result<Box<dyn SnapshotWriter>, StoreError>;

    /// The metadata of the latest finished snapshot, if any.
    fn latest(&self) -> Result<Option<SnapshotMeta>, StoreError>;

    /// Opens the snapshot whose last entry is `last` for reading from its start. The
    /// reader fails with [`io::ErrorKind::InvalidData`] at the end of the data if its
    /// checksum or length does not match. A snapshot the store no longer holds is
    /// [`StoreError::Unavailable`].
    fn open(&self, last: LogId) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Reads up to `len` bytes of the data of snapshot `last` from `offset` (fewer only at
    /// the end of the data), for sending it to a peer in chunks. The receiver checks the
    /// whole stream against the checksum. A snapshot the store no longer holds is
    /// [`StoreError::Unavailable`].
    fn read_chunk(&self, last: LogId, offset: u64, len: usize) -> Result<Vec<u8>, StoreError>;
}

/// A snapshot being written; see [`SnapshotStore`]. Data goes in through [`Write`].
pub trait SnapshotWriter: Write + Send {
    /// Makes the snapshot durable and the latest one (see [`SnapshotStore`]) and returns
    /// its metadata, with the size and checksum of what was written.
    fn finish(self: Box<Self>) -> Result<SnapshotMeta, StoreError>;
}

/// A [`Write`] adapter that counts and checksums what passes through it (CRC-32C), for
/// snapshot writers and for checking a stream received from a peer.
#[derive(Debug)]
pub struct ChecksumWriter<W> {
    inner: W,
    size: u64,
    crc: u32,
}

impl<W: Write> ChecksumWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        ChecksumWriter { inner, size: 0, crc: 0 }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// CRC-32C of the bytes written so far.
    pub fn checksum(&self) -> u32 {
        self.crc
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.crc = crc32c::crc32c_append(self.crc, done);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A [`Read`] adapter that checks the data it passes on against a snapshot's size and
/// checksum: the read that reaches the end fails with [`io::ErrorKind::InvalidData`] if
/// they do not match, and so does a read past `size` bytes.
#[derive(Debug)]
pub struct ChecksumReader<R> {
    inner: R,
    expected_size: u64,
    expected_crc: u32,
    size: u64,
    crc: u32,
}

impl<R: Read> ChecksumReader<R> {
    /// Wraps `inner`, which must yield exactly `meta.size` bytes with `meta.checksum`.
    pub fn new(inner: R, meta: &SnapshotMeta) -> Self {
        ChecksumReader { inner, expected_size: meta.size, expected_crc: meta.checksum, size: 0, crc: 0 }
    }
}

impl<R: Read> Read for ChecksumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // An empty read says nothing about the data (an empty `inner` read is not its end).
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.expected_size - self.size;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            if self.crc != self.expected_crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot checksum mismatch: expected {:08x}, read {:08x}", self.expected_crc, self.crc),
                ));
            }
            // Nothing may follow the data.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? != 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot data is longer than its size"));
            }
            return Ok(0);
        }
        let Some(dst) = buf.get_mut(..want) else { return Ok(0) };
        let n = self.inner.read(dst)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot data ends after {} of {} bytes", self.size, self.expected_size),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, dst.get(..n).unwrap_or(dst));
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(data: &[u8]) -> SnapshotMeta {
        let mut w = ChecksumWriter::new(Vec::new());
        w.write_all(data).unwrap();
        SnapshotMeta { size: w.size(), checksum: w.checksum(), ..Default::default() }
    }

    #[test]
    fn reader_passes_matching_data_and_refuses_flipped_short_or_long_data() {
        let data = b"a snapshot's bytes".to_vec();
        let meta = meta_of(&data);
        let mut out = Vec::new();
        ChecksumReader::new(&data[..], &meta).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);

        // An empty read in the middle is no end of the data.
        let mut r = ChecksumReader::new(&data[..], &meta);
        let mut first = [0u8; 4];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.read(&mut []).unwrap(), 0);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!([&first[..], &rest[..]].concat(), data);

        let mut flipped = data.clone();
        flipped[3] ^= 1;
        let e = ChecksumReader::new(&flipped[..], &meta).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let e = ChecksumReader::new(&data[..5], &meta).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let mut long = data.clone();
        long.push(0);
        let e = ChecksumReader::new(&long[..], &meta).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn writer_checksum_does_not_depend_on_how_the_data_is_split() {
        let mut a = ChecksumWriter::new(Vec::new());
        a.write_all(b"hello world").unwrap();
        let mut b = ChecksumWriter::new(Vec::new());
        b.write_all(b"hello").unwrap();
        b.write_all(b" world").unwrap();
        assert_eq!((a.size(), a.checksum()), (b.size(), b.checksum()));
        assert_eq!(a.checksum(), crc32c::crc32c(b"hello world"));
    }
}

//! The byte layout of the files (see `docs/storage-format.md`). Pure functions, no I/O.

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RAFTSEG\0";
/// Magic bytes at the start of the hard state file.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"RAFTHS\0\0";
/// Magic bytes at the start of the purge marker file.
pub const META_MAGIC: [u8; 8] = *b"RAFTMETA";
/// Magic bytes at the start of the reset marker file.
pub const RESET_MAGIC: [u8; 8] = *b"RAFTRSET";
/// Magic bytes at the start of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTSNAP";
/// The format version written into every file.
pub const FORMAT_VERSION: u32 = 2;
/// Size of a segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Size of a record frame's header (length and checksum) in bytes.
pub const FRAME_HEADER_LEN: usize = 8;

/// The header at the start of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The cluster the segment belongs to.
    pub cluster_id: u64,
    /// Index of the first record in the segment.
    pub first_index: u64,
}

/// The `N` bytes of `b` from `at` on, if `b` holds them.
fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..)?.first_chunk::<N>().copied()
}

/// The little-endian `u32` at `at` of `b`, if `b` holds it.
pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    array_at(b, at).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `at` of `b`, if `b` holds it.
pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    array_at(b, at).map(u64::from_le_bytes)
}

impl SegmentHeader {
    /// Encodes the header: magic, version, cluster id, first index, CRC32C of the above.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[20..28].copy_from_slice(&self.first_index.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header from the first [`SEGMENT_HEADER_LEN`] bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        // All of these are there exactly when `b` holds a whole header.
        let fields = (b.get(0..8), b.get(0..28), u32_at(b, 28), u32_at(b, 8), u64_at(b, 12), u64_at(b, 20));
        let (Some(magic), Some(covered), Some(crc), Some(version), Some(cluster_id), Some(first_index)) = fields else {
            return Err(format!("segment header is {} bytes, want {SEGMENT_HEADER_LEN}", b.len()));
        };
        if magic != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        if crc32c::crc32c(covered) != crc {
            return Err("segment header checksum mismatch".into());
        }
        if version != FORMAT_VERSION {
            return Err(format!("unsupported segment format version {version}"));
        }
        Ok(SegmentHeader { cluster_id, first_index })
    }
}

/// The checksum of a frame: CRC32C over the 4 length bytes followed by the payload.
fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), payload)
}

/// Appends one record frame for `payload` to `out`: `u32` length (LE), `u32` CRC32C (LE)
/// of the length bytes and the payload, then the payload.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    // Callers check the length against the maximum record size (far below u32::MAX).
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one record frame to `out` for the bytes that `write_payload` appends, with no
/// intermediate copy; returns the payload length. The frame header is filled in after the
/// payload is written.
pub fn encode_frame_with<E>(
    out: &mut Vec<u8>,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<usize, E> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    write_payload(out)?;
    let payload_len = out.len() - start - FRAME_HEADER_LEN;
    let len = payload_len as u32;
    let crc = frame_crc(len, out.get(start + FRAME_HEADER_LEN..).unwrap_or_default());
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    if let Some(at) = out.get_mut(start..start + FRAME_HEADER_LEN) {
        at.copy_from_slice(&header);
    }
    Ok(payload_len)
}

/// What [`parse_frame`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, valid frame: its payload and its total length including the header.
    Record(&'a [u8], usize),
    /// The buffer ends inside the frame (or is empty).
    Incomplete,
    /// The frame is invalid (zero or oversized length, checksum mismatch).
    Bad(String),
}

/// Parses the frame at the start of `buf`, accepting payloads of `1..=max_len` bytes.
pub fn parse_frame(buf: &[u8], max_len: u32) -> Frame<'_> {
    let (Some(len), Some(crc)) = (u32_at(buf, 0), u32_at(buf, 4)) else {
        return Frame::Incomplete;
    };
    if len == 0 {
        return Frame::Bad("zero record length".into());
    }
    if len > max_len {
        return Frame::Bad(format!("record length {len} exceeds the maximum {max_len}"));
    }
    let total = FRAME_HEADER_LEN + len as usize;
    let Some(payload) = buf.get(FRAME_HEADER_LEN..total) else {
        return Frame::Incomplete;
    };
    if frame_crc(len, payload) != crc {
        return Frame::Bad("record checksum mismatch".into());
    }
    Frame::Record(payload, total)
}

/// Encodes a small checksummed file: magic, version, cluster id, `body`, CRC32C of all that.
pub fn encode_small_file(magic: [u8; 8], cluster_id: u64, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + body.len());
    b.extend_from_slice(&magic);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&cluster_id.to_le_bytes());
    b.extend_from_slice(body);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a small file written by [`encode_small_file`] whose body is `body_len` bytes;
/// returns the cluster id and the body, or `(offset, reason)` of the first problem.
pub fn decode_small_file(magic: [u8; 8], b: &[u8], body_len: usize) -> Result<(u64, &[u8]), (u64, String)> {
    let want = 20 + body_len + 4;
    let wrong_len = || (0, format!("file is {} bytes, want {want}", b.len()));
    if b.len() != want {
        return Err(wrong_len());
    }
    let crc_at = 20 + body_len;
    // All of these are inside a file of the right length.
    let fields = (b.get(0..8), b.get(..crc_at), u32_at(b, crc_at), u32_at(b, 8), u64_at(b, 12), b.get(20..crc_at));
    let (Some(found_magic), Some(covered), Some(crc), Some(version), Some(cluster_id), Some(body)) = fields else {
        return Err(wrong_len());
    };
    if found_magic != magic {
        return Err((0, "bad magic".into()));
    }
    if crc32c::crc32c(covered) != crc {
        return Err((crc_at as u64, "checksum mismatch".into()));
    }
    if version != FORMAT_VERSION {
        return Err((8, format!("unsupported format version {version}")));
    }
    Ok((cluster_id, body))
}

/// Reads a little-endian `u64` at `at` of `b` (which the caller sized).
///
/// # Panics
///
/// If `b` holds fewer than `at + 8` bytes. The store itself reads through checked
/// helpers that never panic.
pub fn read_u64(b: &[u8], at: usize) -> u64 {
    match u64_at(b, at) {
        Some(v) => v,
        None => panic!("read_u64: {} bytes hold no u64 at offset {at}", b.len()),
    }
}

/// The format version of snapshot files (version 1 held the data in memory-sized
/// files checked as a whole; version 2 is streamed, with the data checksum in the head).
pub const SNAPSHOT_VERSION: u32 = 3;
/// Size of the fixed part of a snapshot file's head, before the membership: magic,
/// version, cluster id, last included index and term, membership index, data size, data
/// checksum, membership length.
pub const SNAPSHOT_FIXED_LEN: usize = 60;
/// The largest membership a snapshot head may claim.
pub const MAX_SNAPSHOT_MEMBERSHIP: usize = 1 << 24;

/// The head of a snapshot file: everything but the data, which follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHead {
    /// The cluster the snapshot belongs to.
    pub cluster_id: u64,
    /// Index of the last entry the snapshot covers.
    pub last_index: u64,
    /// Term of that entry.
    pub last_term: u64,
    /// Index of the entry holding the membership.
    pub membership_index: u64,
    /// Length of the data.
    pub data_size: u64,
    /// CRC-32C of the data.
    pub data_crc: u32,
    /// The membership bytes (postcard of `raft::Membership`).
    pub membership: Vec<u8>,
}

impl SnapshotHead {
    /// The encoded length of the head (where the data starts).
    pub fn encoded_len(&self) -> usize {
        SNAPSHOT_FIXED_LEN + self.membership.len() + 4
    }

    /// Encodes the head, its CRC-32C last.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.encoded_len());
        b.extend_from_slice(&SNAPSHOT_MAGIC);
        b.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        for v in [self.cluster_id, self.last_index, self.last_term, self.membership_index, self.data_size] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.data_crc.to_le_bytes());
        // Callers keep the membership below MAX_SNAPSHOT_MEMBERSHIP bytes.
        b.extend_from_slice(&(self.membership.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.membership);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// The whole head's length, read from its fixed part (the first
    /// [`SNAPSHOT_FIXED_LEN`] bytes of the file); `(offset, reason)` on a problem.
    pub fn len_from_fixed(fixed: &[u8]) -> Result<usize, (u64, String)> {
        if fixed.len() < SNAPSHOT_FIXED_LEN {
            return Err((0, format!("file is {} bytes, shorter than a snapshot head", fixed.len())));
        }
        if fixed.get(0..8) != Some(&SNAPSHOT_MAGIC[..]) {
            return Err((0, "bad magic".into()));
        }
        let m = u32_at(fixed, 56).unwrap_or(u32::MAX) as usize;
        if m > MAX_SNAPSHOT_MEMBERSHIP {
            return Err((56, format!("membership length {m} is implausible")));
        }
        Ok(SNAPSHOT_FIXED_LEN + m + 4)
    }

    /// Decodes a head (exactly its bytes), checking its magic, version and checksum;
    /// `(offset, reason)` of the first problem.
    pub fn decode(b: &[u8]) -> Result<SnapshotHead, (u64, String)> {
        let len = Self::len_from_fixed(b)?;
        if b.len() != len {
            return Err((0, format!("the head is {} bytes, its fields say {len}", b.len())));
        }
        let crc_at = len - 4;
        let (Some(covered), Some(crc)) = (b.get(..crc_at), u32_at(b, crc_at)) else {
            return Err((0, "the head is cut short".into()));
        };
        if crc32c::crc32c(covered) != crc {
            return Err((crc_at as u64, "head checksum mismatch".into()));
        }
        let version = u32_at(b, 8).unwrap_or_default();
        if version != SNAPSHOT_VERSION {
            return Err((8, format!("unsupported snapshot format version {version}")));
        }
        let field = |at| u64_at(b, at).unwrap_or_default();
        Ok(SnapshotHead {
            cluster_id: field(12),
            last_index: field(20),
            last_term: field(28),
            membership_index: field(36),
            data_size: field(44),
            data_crc: u32_at(b, 52).unwrap_or_default(),
            membership: b.get(SNAPSHOT_FIXED_LEN..crc_at).unwrap_or_default().to_vec(),
        })
    }
}

/// The file name of the snapshot whose last included index is `index`.
pub fn snapshot_file_name(index: u64) -> String {
    format!("{index:020}.snap")
}

/// Parses a snapshot file name back into its last included index.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    parse_index_name(name, ".snap")
}

fn parse_index_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of the segment whose first index is `first`.
pub fn segment_file_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// Parses a segment file name back into its first index.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_index_name(name, ".seg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode_frame(b"hello world", &mut buf);
        assert_eq!(parse_frame(&buf, 1024), Frame::Record(b"hello world", buf.len()));
        let mut other = Vec::new();
        let n = encode_frame_with(&mut other, |o| {
            o.extend_from_slice(b"hello world");
            Ok::<(), ()>(())
        });
        assert_eq!((n, &other), (Ok(11), &buf));
        for cut in 0..buf.len() {
            assert_eq!(parse_frame(&buf[..cut], 1024), Frame::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_bit_flip_in_a_frame_is_detected() {
        let mut buf = Vec::new();
        encode_frame(b"some payload bytes", &mut buf);
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(parse_frame(&b, 1024), Frame::Record(..)), "flip of bit {bit} not detected");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 40) as usize;
            let b: Vec<u8> = (0..len).map(|i| (rng >> (i % 8 * 8)) as u8).collect();
            let _ = parse_frame(&b, 16);
            let _ = SegmentHeader::decode(&b);
            let _ = decode_small_file(META_MAGIC, &b, 16);
            let _ = SnapshotHead::decode(&b);
        }
    }

    #[test]
    fn snapshot_head_roundtrips_and_every_bit_flip_and_cut_is_detected() {
        let h = SnapshotHead {
            cluster_id: 7,
            last_index: 42,
            last_term: 3,
            membership_index: 40,
            data_size: 13,
            data_crc: 0xdead_beef,
            membership: b"mm".to_vec(),
        };
        let b = h.encode();
        assert_eq!(b.len(), h.encoded_len());
        assert_eq!(SnapshotHead::len_from_fixed(&b[..SNAPSHOT_FIXED_LEN]), Ok(b.len()));
        assert_eq!(SnapshotHead::decode(&b), Ok(h));
        for bit in 0..b.len() * 8 {
            let mut c = b.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SnapshotHead::decode(&c).is_err(), "flip of bit {bit} not detected");
        }
        for cut in 0..b.len() {
            assert!(SnapshotHead::decode(&b[..cut]).is_err(), "cut at {cut} not detected");
        }
    }

    #[test]
    fn header_and_names_roundtrip() {
        let h = SegmentHeader { cluster_id: 7, first_index: 42 };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("1.seg"), None);
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(9)), Some(9));
        assert_eq!(parse_snapshot_file_name(&segment_file_name(9)), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Parses `buf` frame by frame: the payloads of the leading whole frames, and what
        /// stopped the parse.
        fn parse_all(mut buf: &[u8], max_len: u32) -> (Vec<Vec<u8>>, Frame<'_>) {
            let mut out = Vec::new();
            loop {
                match parse_frame(buf, max_len) {
                    Frame::Record(p, n) => {
                        out.push(p.to_vec());
                        buf = &buf[n..];
                    }
                    end => return (out, end),
                }
            }
        }

        fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..20)
        }

        proptest! {
            #[test]
            fn concatenated_frames_parse_back_in_order(records in payloads()) {
                let mut buf = Vec::new();
                for r in &records {
                    encode_frame(r, &mut buf);
                }
                let (parsed, end) = parse_all(&buf, 1024);
                prop_assert_eq!(parsed, records);
                prop_assert_eq!(end, Frame::Incomplete);
            }

            #[test]
            fn a_cut_anywhere_yields_exactly_the_whole_frames_before_it(records in payloads(), cut in any::<prop::sample::Index>()) {
                let mut buf = Vec::new();
                let mut ends = Vec::new();
                for r in &records {
                    encode_frame(r, &mut buf);
                    ends.push(buf.len());
                }
                let cut = cut.index(buf.len() + 1);
                let (parsed, end) = parse_all(&buf[..cut], 1024);
                let whole = ends.iter().filter(|&&e| e <= cut).count();
                prop_assert_eq!(&parsed[..], &records[..whole]);
                prop_assert_eq!(end, Frame::Incomplete, "a torn tail reads as incomplete, never as bad or as a record");
            }

            #[test]
            fn arbitrary_input_never_panics_and_records_re_encode_to_their_bytes(buf in proptest::collection::vec(any::<u8>(), 0..512), max in 1u32..300) {
                if let Frame::Record(payload, n) = parse_frame(&buf, max) {
                    prop_assert!(n <= buf.len() && !payload.is_empty() && payload.len() as u32 <= max);
                    let mut again = Vec::new();
                    encode_frame(payload, &mut again);
                    prop_assert_eq!(&again[..], &buf[..n]);
                }
                let _ = SegmentHeader::decode(&buf);
                let _ = decode_small_file(META_MAGIC, &buf, 64);
                let _ = SnapshotHead::decode(&buf);
            }
        }
    }
}

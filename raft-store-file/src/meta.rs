//! The small metadata files: the hard state (term and vote), the purge marker (the
//! position before the first entry held) and the reset marker (present only while a log
//! reset is carried out). Each is one checksummed record
//! ([`format::encode_small_file`]) replaced atomically; the two markers hold a log
//! position, `(index, term)`, with one encoding.

use std::path::Path;

use raft::{HardState, LogId};

use crate::format;
use crate::fs::{read_small, write_atomic};
use crate::vfs::Vfs;
use crate::{FileStoreError, HARD_STATE_FILE, META_FILE, RESET_FILE};

/// Length of the hard state body: term, vote flag, vote.
const HARD_STATE_BODY_LEN: usize = 17;
/// Length of a position body: index, then term.
const POSITION_BODY_LEN: usize = 16;
/// Offset of the hard state's vote flag in its file (after the 20-byte small-file head).
const VOTE_FLAG_OFFSET: u64 = 20 + 8;

/// A file that holds one log position.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Marker {
    /// The purge marker: the position before the first entry held.
    Purge,
    /// The reset marker: the position a reset that is being carried out starts the log
    /// after.
    Reset,
}

impl Marker {
    fn file(self) -> &'static str {
        match self {
            Marker::Purge => META_FILE,
            Marker::Reset => RESET_FILE,
        }
    }

    fn magic(self) -> [u8; 8] {
        match self {
            Marker::Purge => format::META_MAGIC,
            Marker::Reset => format::RESET_MAGIC,
        }
    }
}

fn encode_hard_state(hs: &HardState) -> [u8; HARD_STATE_BODY_LEN] {
    let mut body = [0u8; HARD_STATE_BODY_LEN];
    body[0..8].copy_from_slice(&hs.term.to_le_bytes());
    if let Some(v) = hs.voted_for {
        body[8] = 1;
        body[9..17].copy_from_slice(&v.to_le_bytes());
    }
    body
}

/// Decodes a hard state body; `(offset in the file, reason)` if it is invalid.
fn decode_hard_state(body: &[u8]) -> Result<HardState, (u64, String)> {
    let short = || (0, format!("hard state body is {} bytes, want {HARD_STATE_BODY_LEN}", body.len()));
    let term = format::u64_at(body, 0).ok_or_else(short)?;
    let voted_for = match body.get(8).copied().ok_or_else(short)? {
        0 => None,
        1 => Some(format::u64_at(body, 9).ok_or_else(short)?),
        other => return Err((VOTE_FLAG_OFFSET, format!("bad vote flag {other}"))),
    };
    Ok(HardState { term, voted_for })
}

fn encode_position(at: LogId) -> [u8; POSITION_BODY_LEN] {
    let mut body = [0u8; POSITION_BODY_LEN];
    body[0..8].copy_from_slice(&at.index.to_le_bytes());
    body[8..16].copy_from_slice(&at.term.to_le_bytes());
    body
}

fn decode_position(body: &[u8]) -> Option<LogId> {
    Some(LogId { index: format::u64_at(body, 0)?, term: format::u64_at(body, 8)? })
}

/// Reads the hard state; the default one if the file does not exist.
pub(crate) fn read_hard_state<F: Vfs>(fs: &F, dir: &Path, cluster_id: u64) -> Result<HardState, FileStoreError> {
    let path = dir.join(HARD_STATE_FILE);
    match read_small(fs, &path, format::HARD_STATE_MAGIC, HARD_STATE_BODY_LEN, cluster_id)? {
        None => Ok(HardState::default()),
        Some(body) => decode_hard_state(&body).map_err(|(at, why)| FileStoreError::corrupt(path, at, why)),
    }
}

/// Replaces the hard state file, durably.
pub(crate) fn write_hard_state<F: Vfs>(
    fs: &F,
    dir: &Path,
    cluster_id: u64,
    hs: &HardState,
) -> Result<(), FileStoreError> {
    let bytes = format::encode_small_file(format::HARD_STATE_MAGIC, cluster_id, &encode_hard_state(hs));
    write_atomic(fs, dir, HARD_STATE_FILE, &[&bytes])
}

/// Reads the position a marker file holds; `None` if the file does not exist.
pub(crate) fn read_position<F: Vfs>(
    fs: &F,
    dir: &Path,
    cluster_id: u64,
    marker: Marker,
) -> Result<Option<LogId>, FileStoreError> {
    let path = dir.join(marker.file());
    let Some(body) = read_small(fs, &path, marker.magic(), POSITION_BODY_LEN, cluster_id)? else {
        return Ok(None);
    };
    match decode_position(&body) {
        Some(at) => Ok(Some(at)),
        None => Err(FileStoreError::corrupt(path, 0, format!("position body is {} bytes", body.len()))),
    }
}

/// Replaces a marker file with one holding `at`, durably.
pub(crate) fn write_position<F: Vfs>(
    fs: &F,
    dir: &Path,
    cluster_id: u64,
    marker: Marker,
    at: LogId,
) -> Result<(), FileStoreError> {
    let bytes = format::encode_small_file(marker.magic(), cluster_id, &encode_position(at));
    write_atomic(fs, dir, marker.file(), &[&bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_roundtrip() {
        for hs in [HardState::default(), HardState { term: 7, voted_for: Some(u64::MAX) }] {
            assert_eq!(decode_hard_state(&encode_hard_state(&hs)), Ok(hs));
        }
        let at = LogId { index: 42, term: 3 };
        assert_eq!(decode_position(&encode_position(at)), Some(at));
        let mut bad = encode_hard_state(&HardState { term: 1, voted_for: None });
        bad[8] = 2;
        assert_eq!(decode_hard_state(&bad), Err((VOTE_FLAG_OFFSET, "bad vote flag 2".to_string())));
        assert!(decode_hard_state(&[0; 3]).is_err());
        assert_eq!(decode_position(&[0; 15]), None);
    }
}

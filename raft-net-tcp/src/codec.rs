//! The wire format: the connection handshake and length-prefixed frames.
//!
//! The byte layout is specified in `docs/wire-protocol.md`; this module is its
//! implementation. Everything here is pure (no I/O) so that it can be tested on
//! arbitrary bytes.

use raft::{Message, NodeId};

use crate::error::{FrameError, HandshakeError};

/// The four bytes that open every connection: ASCII `RFTN`.
pub const MAGIC: [u8; 4] = *b"RFTN";

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 4;

/// The size of the client's hello: magic (4), version (2), reserved (2), cluster id (8),
/// sender id (8), receiver id (8), sender's incarnation (8).
pub const HELLO_LEN: usize = 40;

/// The size of the server's reply: magic (4), version (2), status (1), reserved (1),
/// receiver's incarnation (8).
pub const REPLY_LEN: usize = 16;

/// The size of a frame's length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The first message on a connection, sent by the connecting node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the sender speaks.
    pub version: u16,
    /// The cluster the sender belongs to.
    pub cluster_id: u64,
    /// The sending (connecting) node.
    pub from: NodeId,
    /// The node the sender means to reach.
    pub to: NodeId,
    /// The sender's data-directory incarnation (0: none; see `incarnation.rs`).
    pub incarnation: u64,
}

impl Hello {
    /// Encodes the hello in its fixed 40-byte form.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_be_bytes());
        // b[6..8] reserved, zero.
        b[8..16].copy_from_slice(&self.cluster_id.to_be_bytes());
        b[16..24].copy_from_slice(&self.from.to_be_bytes());
        b[24..32].copy_from_slice(&self.to.to_be_bytes());
        b[32..40].copy_from_slice(&self.incarnation.to_be_bytes());
        b
    }

    /// Decodes a hello. Checks only the magic; the receiver checks the rest. Bytes that
    /// start like a TLS record are [`HandshakeError::PeerSentTls`].
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, HandshakeError> {
        if b[0..4] != MAGIC {
            if looks_like_tls(b) {
                return Err(HandshakeError::PeerSentTls);
            }
            return Err(HandshakeError::BadMagic);
        }
        Ok(Hello {
            version: u16::from_be_bytes([b[4], b[5]]),
            cluster_id: u64_at(b, 8),
            from: u64_at(b, 16),
            to: u64_at(b, 24),
            incarnation: u64_at(b, 32),
        })
    }
}

/// Whether `bytes` start like a TLS record: a content type from change-cipher-spec (20)
/// to application data (23), then major version 3. No hello or reply starts so (their
/// magic starts with `R`), so a node can tell a peer that speaks TLS when it does not.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, ..])
}

/// The big-endian `u64` at `at` of a fixed-size message; the callers' offsets are
/// constants inside it.
fn u64_at<const N: usize>(b: &[u8; N], at: usize) -> u64 {
    let mut x = [0u8; 8];
    for (to, from) in x.iter_mut().zip(b.iter().skip(at)) {
        *to = *from;
    }
    u64::from_be_bytes(x)
}

/// The receiving node's answer to a [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HelloStatus {
    /// Accepted: frames may follow.
    Accepted = 0,
    /// The protocol version is not supported.
    UnsupportedVersion = 1,
    /// The cluster id differs.
    WrongCluster = 2,
    /// The receiver id is not the receiving node's id.
    WrongReceiver = 3,
    /// The sender id is not a known peer of the receiving node.
    UnknownSender = 4,
    /// The receiver has too many connections.
    Busy = 5,
    /// The sender's TLS certificate does not name the sender id of its hello (only on a
    /// TLS connection: see `docs/security.md`).
    NotCertified = 6,
    /// The receiver recorded another data-directory incarnation for the sender: the
    /// sender lost its data and may not come back under its old node id.
    Replaced = 7,
}

impl HelloStatus {
    fn from_byte(b: u8) -> Option<HelloStatus> {
        Some(match b {
            0 => HelloStatus::Accepted,
            1 => HelloStatus::UnsupportedVersion,
            2 => HelloStatus::WrongCluster,
            3 => HelloStatus::WrongReceiver,
            4 => HelloStatus::UnknownSender,
            5 => HelloStatus::Busy,
            6 => HelloStatus::NotCertified,
            7 => HelloStatus::Replaced,
            _ => return None,
        })
    }
}

/// Encodes the server's reply, with the server's incarnation (0: none).
pub fn encode_reply(status: HelloStatus, incarnation: u64) -> [u8; REPLY_LEN] {
    let mut b = [0u8; REPLY_LEN];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    b[6] = status as u8;
    b[8..16].copy_from_slice(&incarnation.to_be_bytes());
    b
}

/// Decodes the server's reply: `Ok` with the server's incarnation only when the
/// connection was accepted. Bytes that start like a TLS record are
/// [`HandshakeError::PeerExpectsTls`].
pub fn decode_reply(b: &[u8; REPLY_LEN]) -> Result<u64, HandshakeError> {
    if b[0..4] != MAGIC {
        if looks_like_tls(b) {
            return Err(HandshakeError::PeerExpectsTls);
        }
        return Err(HandshakeError::BadMagic);
    }
    match HelloStatus::from_byte(b[6]) {
        Some(HelloStatus::Accepted) => Ok(u64_at(b, 8)),
        Some(status) => Err(HandshakeError::Refused(status)),
        None => Err(HandshakeError::BadStatus(b[6])),
    }
}

/// Appends one frame (a big-endian `u32` length, then the payload) holding `msg` to
/// `out`. Fails, leaving `out` unchanged, when the payload exceeds `max_frame_size`.
pub fn encode_frame(msg: &Message, max_frame_size: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    // Encoded in place after a length prefix that is filled in afterwards.
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    msg.encode_into(out);
    let payload_len = out.len() - start - LENGTH_PREFIX_LEN;
    match u32::try_from(payload_len).ok().filter(|l| *l <= max_frame_size) {
        Some(len) => {
            if let Some(prefix) = out.get_mut(start..start + LENGTH_PREFIX_LEN) {
                prefix.copy_from_slice(&len.to_be_bytes());
            }
            Ok(())
        }
        None => {
            out.truncate(start);
            Err(FrameError::TooLarge { len: payload_len as u64, max: max_frame_size })
        }
    }
}

/// Appends one frame with the given payload to `out`; see [`encode_frame`].
pub fn encode_payload(payload: &[u8], max_frame_size: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= max_frame_size)
        .ok_or(FrameError::TooLarge { len: payload.len() as u64, max: max_frame_size })?;
    out.reserve(LENGTH_PREFIX_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// An incremental frame decoder: feed it bytes as they arrive with
/// [`FrameDecoder::extend`], take complete frames with [`FrameDecoder::next_frame`].
///
/// It never holds more than one frame's worth of bytes beyond what it was fed: an
/// oversized length prefix is reported as soon as the prefix is complete.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame_size: u32,
}

impl FrameDecoder {
    /// A decoder refusing frames whose payload exceeds `max_frame_size` bytes.
    pub fn new(max_frame_size: u32) -> FrameDecoder {
        FrameDecoder { buf: Vec::new(), start: 0, max_frame_size }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame's payload, `None` if more bytes are needed, or an error
    /// when the stream is invalid (the connection must then be closed).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = self.buf.get(self.start..).unwrap_or_default();
        let Some(&prefix) = avail.first_chunk::<LENGTH_PREFIX_LEN>() else {
            self.compact();
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix);
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge { len: u64::from(len), max: self.max_frame_size });
        }
        let len = len as usize;
        if avail.len() < LENGTH_PREFIX_LEN + len {
            self.compact();
            return Ok(None);
        }
        let from = self.start + LENGTH_PREFIX_LEN;
        self.start = from + len;
        // Inside the buffer: its length was checked above.
        Ok(self.buf.get(from..from + len))
    }

    /// The next complete frame decoded as a message; see [`FrameDecoder::next_frame`].
    ///
    /// The frame is copied once into a buffer of its own, and the commands the message
    /// carries are views of that buffer ([`Message::decode_shared`]): one allocation per
    /// message instead of one per command, and no read buffer kept alive by them.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        match self.next_frame()? {
            Some(payload) => {
                let frame = bytes::Bytes::copy_from_slice(payload);
                Ok(Some(Message::decode_shared(&frame).map_err(FrameError::Decode)?))
            }
            None => Ok(None),
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_roundtrips() {
        let h = Hello { version: PROTOCOL_VERSION, cluster_id: 0xdead_beef, from: 1, to: u64::MAX, incarnation: 0xab };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(matches!(Hello::decode(&bad), Err(HandshakeError::BadMagic)));
    }

    #[test]
    fn reply_roundtrips() {
        assert_eq!(decode_reply(&encode_reply(HelloStatus::Accepted, 0xcd)).unwrap(), 0xcd);
        assert!(matches!(
            decode_reply(&encode_reply(HelloStatus::WrongCluster, 0)),
            Err(HandshakeError::Refused(HelloStatus::WrongCluster))
        ));
        assert!(matches!(
            decode_reply(&encode_reply(HelloStatus::Replaced, 0)),
            Err(HandshakeError::Refused(HelloStatus::Replaced))
        ));
        let mut b = encode_reply(HelloStatus::Accepted, 0);
        b[6] = 200;
        assert!(matches!(decode_reply(&b), Err(HandshakeError::BadStatus(200))));
    }

    #[test]
    fn oversize_payload_is_refused_on_encode() {
        let mut out = vec![1];
        assert!(encode_payload(&[0; 11], 10, &mut out).is_err());
        assert_eq!(out, vec![1]);
    }

    fn append_of(n: usize) -> Message {
        let entries = (1..=n as u64)
            .map(|i| raft::Entry { term: 1, index: i, payload: raft::EntryPayload::Command(vec![i as u8; 100].into()) })
            .collect();
        Message {
            from: 1,
            to: 2,
            term: 1,
            body: raft::MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, entries, leader_commit: 0 },
        }
    }

    #[test]
    fn frames_encoded_in_place_decode_back_in_order() {
        let mut out = vec![];
        let msgs: Vec<Message> = (0..5).map(append_of).collect();
        for m in &msgs {
            encode_frame(m, 1 << 20, &mut out).unwrap();
        }
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(&out);
        for m in &msgs {
            assert_eq!(d.next_message().unwrap().as_ref(), Some(m));
        }
        assert!(d.next_message().unwrap().is_none());
    }

    #[test]
    fn oversize_message_is_refused_on_encode_leaving_the_buffer_as_it_was() {
        let mut out = vec![1, 2, 3];
        let m = append_of(20);
        assert!(matches!(encode_frame(&m, 500, &mut out), Err(FrameError::TooLarge { max: 500, .. })));
        assert_eq!(out, vec![1, 2, 3]);
        encode_frame(&append_of(1), 500, &mut out).unwrap();
        let mut d = FrameDecoder::new(500);
        d.extend(&out[3..]);
        assert_eq!(d.next_message().unwrap(), Some(append_of(1)));
    }

    #[test]
    fn oversize_prefix_is_refused_before_the_payload_arrives() {
        let mut d = FrameDecoder::new(10);
        d.extend(&11u32.to_be_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { len: 11, max: 10 })));
    }
}

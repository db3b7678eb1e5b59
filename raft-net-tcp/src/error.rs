//! Error types of the transport.

use std::net::SocketAddr;

use crate::codec::HelloStatus;

/// A connection handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The bytes do not start with the protocol's magic.
    #[error("bad magic: not a raft-net-tcp peer")]
    BadMagic,
    /// The peer speaks a protocol version this node does not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The peer belongs to another cluster.
    #[error("wrong cluster id: expected {expected:#x}, got {got:#x}")]
    WrongCluster {
        /// This node's cluster id.
        expected: u64,
        /// The peer's cluster id.
        got: u64,
    },
    /// The peer means to reach another node.
    #[error("wrong receiver: this is node {expected}, the peer wants node {got}")]
    WrongReceiver {
        /// This node's id.
        expected: u64,
        /// The id the peer asked for.
        got: u64,
    },
    /// The peer's node id is not a known peer.
    #[error("unknown sender node {0}")]
    UnknownSender(u64),
    /// The remote node refused the connection.
    #[error("refused by the remote node: {0:?}")]
    Refused(HelloStatus),
    /// The remote node answered with an unknown status byte.
    #[error("unknown handshake status {0}")]
    BadStatus(u8),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
}

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame's length is over the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The frame's length.
        len: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The payload is not a valid message.
    #[error("undecodable frame: {0}")]
    Decode(#[from] raft::DecodeError),
    /// A message's sender or receiver does not match the connection's handshake.
    #[error("message from {from} to {to} does not match the connection ({expected_from} to {expected_to})")]
    Misaddressed {
        /// The message's sender.
        from: u64,
        /// The message's receiver.
        to: u64,
        /// The sender named in the handshake.
        expected_from: u64,
        /// This node.
        expected_to: u64,
    },
}

/// Why a connection ended, logged with the peer address.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// An I/O error.
    #[error("I/O error with {addr}: {source}")]
    Io {
        /// The peer's address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A connect, read or write did not finish in time.
    #[error("{what} with {addr} timed out")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The peer's address.
        addr: SocketAddr,
    },
    /// The handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// The reason.
        source: HandshakeError,
    },
    /// The peer sent an invalid frame.
    #[error("bad frame from {addr}: {source}")]
    Frame {
        /// The peer's address.
        addr: SocketAddr,
        /// The reason.
        source: FrameError,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection from {addr} closed in the middle of a frame ({buffered} bytes pending)")]
    Truncated {
        /// The peer's address.
        addr: SocketAddr,
        /// Bytes of the unfinished frame.
        buffered: usize,
    },
}

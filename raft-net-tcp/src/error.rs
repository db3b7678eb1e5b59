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
    /// The peer's TLS certificate does not name the node id its hello claims (DNS SAN
    /// `node-<id>`): a member trying to pass for another.
    #[error("the peer's certificate does not name node {claimed}, the sender its hello claims")]
    NotCertified {
        /// The sender id of the hello.
        claimed: u64,
    },
    /// The peer answered the hello with the start of a TLS record: it expects TLS and
    /// this node connected in plaintext.
    #[error("the peer answered with TLS: it expects a TLS connection, this node has no TLS configured")]
    PeerExpectsTls,
    /// The hello starts like a TLS handshake record: the peer connected with TLS to a
    /// node that has no TLS configured.
    #[error("the peer started a TLS handshake, this node has no TLS configured")]
    PeerSentTls,
    /// The peer presented another data-directory incarnation than the one this node
    /// recorded for its node id: it lost its data (a wiped or replaced directory) and
    /// may not come back under that id (see `incarnation.rs`).
    #[error(
        "node {peer} presents incarnation {presented:016x} but was known as {recorded:016x}: \
         its data directory was wiped or replaced, and a node that lost its data may not rejoin \
         under its old id (remove it and add a node with a new id)"
    )]
    Replaced {
        /// The peer's node id.
        peer: u64,
        /// The incarnation recorded for it.
        recorded: u64,
        /// The incarnation it presented.
        presented: u64,
    },
}

/// The incarnation files of a data directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IncarnationError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds something else than incarnations.
    #[error("{}: not an incarnation record: {line:?}", path.display())]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// The offending line.
        line: String,
    },
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
    /// The TLS session could not be set up, or the peer's certificate was refused.
    #[cfg(feature = "tls")]
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The peer's address.
        addr: SocketAddr,
        /// The reason.
        source: TlsError,
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

impl ConnectionError {
    /// An I/O error on the connection with `addr`. On a TLS session, an error of the TLS
    /// layer (an alert from the peer, a corrupt record) is told as a TLS error.
    pub(crate) fn io(addr: SocketAddr, source: std::io::Error) -> ConnectionError {
        #[cfg(feature = "tls")]
        if let Some(e) = crate::tls::rustls_error(&source) {
            return ConnectionError::Tls { addr, source: TlsError::Refused(e.clone()) };
        }
        ConnectionError::Io { addr, source }
    }
}

/// The TLS session with a peer could not be set up (feature `tls`).
#[cfg(feature = "tls")]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the handshake: a certificate not issued by the cluster's CA, an
    /// expired certificate, a server certificate that does not name the node this node
    /// meant to reach, no client certificate, or a peer that does not speak TLS 1.3.
    #[error("{0}")]
    Refused(rustls::Error),
    /// The peer closed the connection during the TLS handshake: it refused this node's
    /// certificate, or it does not speak TLS (a plaintext port).
    #[error("the peer closed the connection during the TLS handshake (it refused this node's certificate, or its port is plaintext)")]
    Closed,
    /// An I/O error during the TLS handshake.
    #[error("I/O error during the TLS handshake: {0}")]
    Io(std::io::Error),
    /// The TLS handshake did not finish within the handshake timeout.
    #[error("the TLS handshake timed out")]
    Timeout,
    /// The peer completed the handshake without a certificate.
    #[error("the peer presented no certificate")]
    NoCertificate,
}

/// A [`TlsConfig`](crate::TlsConfig) could not be built from its PEM files.
#[cfg(feature = "tls")]
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        /// Which file: "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// The file's path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The PEM text is malformed.
    #[error("malformed PEM in the {what}: {source}")]
    Pem {
        /// Which input: "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// The parser's error.
        source: rustls::pki_types::pem::Error,
    },
    /// The PEM text holds no item of the kind expected.
    #[error("no {what} found in the PEM input")]
    Missing {
        /// What is missing: "certificate", "private key" or "CA certificate".
        what: &'static str,
    },
    /// A CA certificate could not be used as a trust anchor.
    #[error("unusable CA certificate: {0}")]
    Ca(rustls::Error),
    /// The TLS configuration was refused (e.g. the private key does not match the
    /// certificate, or is of an unsupported type).
    #[error("invalid TLS configuration: {0}")]
    Invalid(rustls::Error),
    /// The client-certificate verifier could not be built from the CA certificates.
    #[error("cannot verify client certificates with the CA: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
}

//! A TCP transport for the `raft` framework, on tokio (feature `tokio`) or smol
//! (feature `smol`); both may be enabled, and nodes on either runtime interoperate
//! since the wire format is the same (see `docs/wire-protocol.md`).
//!
//! - [`TcpTransport`]: binds a listener, keeps one long-lived outgoing connection per
//!   peer, and hands incoming messages to a callback (`Raft::receive`).
//! - [`TcpNetwork`]: its [`raft::Network`] half.
//! - [`codec`]: the handshake and frame format, without I/O.
//!
//! With the feature `tls`, `TcpConfig::tls` makes every connection a mutual TLS 1.3
//! session: both nodes present a certificate from the cluster's CA, and a node's
//! certificate must name the node id it claims (DNS name `node-<id>`; see
//! `docs/security.md`).
//!
//! Bad input from the network (garbage, oversized or truncated frames, undecodable
//! messages, a handshake that never finishes, a wrong cluster id) closes only the
//! connection it arrived on, with a log line naming the peer address.

// These modules parse bytes from the network: bad bytes close a connection, never panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::unwrap_used))]

pub mod codec;
mod config;
pub mod error;
mod handshake;
mod inbound;
pub mod incarnation;
mod outbound;
mod rt;
mod stream;
mod sync;
#[cfg(feature = "tls")]
mod tls;
mod transport;

pub use config::TcpConfig;
pub use error::{ConnectionError, FrameError, HandshakeError, IncarnationError};
#[cfg(feature = "tls")]
pub use error::{TlsConfigError, TlsError};
pub use incarnation::Incarnations;
pub use outbound::PeerStats;
pub use rt::TcpRuntime;
#[cfg(feature = "tls")]
pub use tls::{node_name, TlsConfig};
pub use transport::{Deliver, TcpNetwork, TcpTransport};

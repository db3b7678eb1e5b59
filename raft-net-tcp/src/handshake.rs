//! The connection handshake (byte layout in `docs/wire-protocol.md`): the connecting node
//! sends a [`Hello`], the receiving node checks it and answers with a reply, and frames
//! follow only after an accepting reply.
//!
//! The decisions are pure functions ([`hello_to`], [`check_hello`]); [`connect`] and
//! [`accept`] only carry the two fixed-size messages over the stream, each side under
//! [`TcpConfig::handshake_timeout`].

use std::io;
use std::net::SocketAddr;

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use raft::{NodeId, Runtime};

use crate::codec::{self, Hello, HelloStatus, HELLO_LEN, PROTOCOL_VERSION, REPLY_LEN};
use crate::config::TcpConfig;
use crate::error::{ConnectionError, HandshakeError};
use crate::incarnation::Seen;

/// The hello this node sends to reach `peer`.
pub(crate) fn hello_to(config: &TcpConfig, peer: NodeId) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        cluster_id: config.cluster_id,
        from: config.node_id,
        to: peer,
        incarnation: own_incarnation(config),
    }
}

fn own_incarnation(config: &TcpConfig) -> u64 {
    config.incarnations.as_ref().map_or(0, |i| i.own())
}

/// Checks the incarnation `peer` presented against the one this node recorded for it
/// (recording it the first time); the error to log when it was replaced.
pub(crate) fn check_incarnation(config: &TcpConfig, peer: NodeId, presented: u64) -> Result<(), HandshakeError> {
    match config.incarnations.as_ref().map(|i| i.check(peer, presented)) {
        Some(Seen::Replaced { recorded }) => Err(HandshakeError::Replaced { peer, recorded, presented }),
        Some(Seen::Known) | None => Ok(()),
    }
}

/// Checks a received hello against this node's configuration; `is_peer` says whether a
/// node id is a known peer, and `certified` whether the connection's peer proved it is
/// that node (on TLS, its certificate names it; always true in plaintext). On refusal,
/// the status to answer with and the error to log.
pub(crate) fn check_hello(
    config: &TcpConfig,
    is_peer: impl FnOnce(NodeId) -> bool,
    certified: impl FnOnce(NodeId) -> bool,
    hello: &Hello,
) -> Result<(), (HelloStatus, HandshakeError)> {
    if hello.version != PROTOCOL_VERSION {
        return Err((HelloStatus::UnsupportedVersion, HandshakeError::UnsupportedVersion(hello.version)));
    }
    if hello.cluster_id != config.cluster_id {
        return Err((
            HelloStatus::WrongCluster,
            HandshakeError::WrongCluster { expected: config.cluster_id, got: hello.cluster_id },
        ));
    }
    if hello.to != config.node_id {
        return Err((
            HelloStatus::WrongReceiver,
            HandshakeError::WrongReceiver { expected: config.node_id, got: hello.to },
        ));
    }
    if hello.from == config.node_id || !is_peer(hello.from) {
        return Err((HelloStatus::UnknownSender, HandshakeError::UnknownSender(hello.from)));
    }
    if !certified(hello.from) {
        return Err((HelloStatus::NotCertified, HandshakeError::NotCertified { claimed: hello.from }));
    }
    Ok(())
}

/// A peer whose hello this node accepted, and told so. Only [`accept`] makes one, so
/// holding it proves that the handshake of the connection accepted the peer.
#[derive(Debug)]
pub(crate) struct Accepted {
    peer: NodeId,
}

impl Accepted {
    /// The node id the peer's hello named as the sender.
    pub(crate) fn peer(&self) -> NodeId {
        self.peer
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// The connecting side: sends the hello for `peer` and reads the reply; `Ok` only when
/// the peer accepted and presented the incarnation recorded for it (if any).
pub(crate) async fn connect<R: Runtime, S: AsyncRead + AsyncWrite + Unpin>(
    rt: &R,
    config: &TcpConfig,
    stream: &mut S,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<(), ConnectionError> {
    let hello = hello_to(config, peer).encode();
    let mut reply = [0u8; REPLY_LEN];
    let got = rt
        .timeout(config.handshake_timeout, async {
            send(stream, &hello).await?;
            read_up_to(stream, &mut reply).await
        })
        .await
        .ok_or(ConnectionError::Handshake { addr, source: HandshakeError::Timeout })?
        .map_err(|source| ConnectionError::io(addr, source))?;
    if got < REPLY_LEN {
        // A TLS server answers a plaintext hello with an alert record, shorter than a
        // reply, and closes.
        let source = if codec::looks_like_tls(reply.get(..got).unwrap_or_default()) {
            HandshakeError::PeerExpectsTls
        } else {
            return Err(ConnectionError::Io { addr, source: io::ErrorKind::UnexpectedEof.into() });
        };
        return Err(ConnectionError::Handshake { addr, source });
    }
    let handshake = |source| ConnectionError::Handshake { addr, source };
    let incarnation = codec::decode_reply(&reply).map_err(handshake)?;
    check_incarnation(config, peer, incarnation).map_err(handshake)
}

/// Reads into `buf` until it is full or the stream ends; returns the bytes read.
async fn read_up_to<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match stream.read(rest).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// The receiving side: reads exactly the hello (no byte after it), checks it (with
/// `certified`: see [`check_hello`]) and the sender's incarnation, and answers.
/// On refusal the reason is sent back, best effort, and the connection is to be closed.
pub(crate) async fn accept<R: Runtime, S: AsyncRead + AsyncWrite + Unpin>(
    rt: &R,
    config: &TcpConfig,
    is_peer: impl FnOnce(NodeId) -> bool,
    certified: impl FnOnce(NodeId) -> bool,
    stream: &mut S,
    addr: SocketAddr,
) -> Result<Accepted, ConnectionError> {
    let io = |source| ConnectionError::io(addr, source);
    let mut hello = [0u8; HELLO_LEN];
    rt.timeout(config.handshake_timeout, stream.read_exact(&mut hello))
        .await
        .ok_or(ConnectionError::Handshake { addr, source: HandshakeError::Timeout })?
        .map_err(io)?;
    let hello = Hello::decode(&hello).map_err(|source| ConnectionError::Handshake { addr, source })?;
    let checked = check_hello(config, is_peer, certified, &hello).and_then(|()| {
        check_incarnation(config, hello.from, hello.incarnation).map_err(|e| (HelloStatus::Replaced, e))
    });
    let own = own_incarnation(config);
    if let Err((status, source)) = checked {
        // Tell the peer why, best effort, then close.
        let _ = rt.timeout(config.handshake_timeout, send(stream, &codec::encode_reply(status, own))).await;
        return Err(ConnectionError::Handshake { addr, source });
    }
    rt.timeout(config.handshake_timeout, send(stream, &codec::encode_reply(HelloStatus::Accepted, own)))
        .await
        .ok_or(ConnectionError::Handshake { addr, source: HandshakeError::Timeout })?
        .map_err(io)?;
    Ok(Accepted { peer: hello.from })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TcpConfig {
        TcpConfig::new(7, 1)
    }

    #[test]
    fn a_hello_built_for_a_peer_passes_that_peers_check() {
        let hello = hello_to(&TcpConfig::new(7, 2), 1);
        assert!(check_hello(&config(), |id| id == 2, |_| true, &hello).is_ok());
    }

    #[test]
    fn each_wrong_field_is_refused_with_its_status() {
        let good = hello_to(&TcpConfig::new(7, 2), 1);
        let cases = [
            (Hello { version: PROTOCOL_VERSION + 1, ..good }, HelloStatus::UnsupportedVersion),
            (Hello { cluster_id: 8, ..good }, HelloStatus::WrongCluster),
            (Hello { to: 3, ..good }, HelloStatus::WrongReceiver),
            (Hello { from: 3, ..good }, HelloStatus::UnknownSender),
            (Hello { from: 1, ..good }, HelloStatus::UnknownSender),
        ];
        for (hello, want) in cases {
            let got = check_hello(&config(), |id| id == 2 || id == 1, |_| true, &hello).map_err(|(status, _)| status);
            assert_eq!(got, Err(want), "{hello:?}");
        }
    }

    #[test]
    fn a_recorded_incarnation_must_be_presented_again() {
        let mut c = config();
        c.incarnations = Some(std::sync::Arc::new(crate::Incarnations::in_memory(0x11)));
        assert_eq!(hello_to(&c, 2).incarnation, 0x11);
        assert_eq!(hello_to(&config(), 2).incarnation, 0, "no incarnations: none sent");
        assert!(check_incarnation(&c, 2, 0x22).is_ok(), "first seen: recorded");
        assert!(check_incarnation(&c, 2, 0x22).is_ok());
        assert!(matches!(
            check_incarnation(&c, 2, 0x33),
            Err(HandshakeError::Replaced { peer: 2, recorded: 0x22, presented: 0x33 })
        ));
        assert!(check_incarnation(&config(), 2, 0x33).is_ok(), "no incarnations: nothing checked");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4096, ..Default::default() })]

        /// Bounded fuzzing of the receiving side's parser and checks: arbitrary bytes
        /// (half of them behind a valid magic, so the checks run) are decoded and checked
        /// against arbitrary peers and certificate names. Never panics, and a hello is
        /// accepted exactly when every field is right.
        #[test]
        fn the_hello_parser_and_checks_never_panic_and_accept_only_a_right_hello(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), HELLO_LEN),
            with_magic in proptest::prelude::any::<bool>(),
            small_ids in proptest::prelude::any::<bool>(),
            peers in proptest::collection::vec(0u64..6, 0..4),
            certified in proptest::option::of(0u64..6),
        ) {
            let mut bytes: [u8; HELLO_LEN] = bytes.try_into().unwrap();
            if with_magic {
                bytes[..4].copy_from_slice(&codec::MAGIC);
            }
            if small_ids {
                // Small ids and a right version and cluster, so that acceptance is reached.
                bytes[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
                bytes[8..16].copy_from_slice(&7u64.to_be_bytes());
                for at in [16, 24] {
                    let id = u64::from(bytes[at + 7] % 6);
                    bytes[at..at + 8].copy_from_slice(&id.to_be_bytes());
                }
            }
            let Ok(hello) = Hello::decode(&bytes) else {
                proptest::prop_assert!(bytes[..4] != codec::MAGIC);
                return Ok(());
            };
            let is_peer = |id| peers.contains(&id);
            let names = |id| certified.is_none_or(|c| c == id);
            let result = check_hello(&config(), is_peer, names, &hello);
            let right = hello.version == PROTOCOL_VERSION
                && hello.cluster_id == 7
                && hello.to == 1
                && hello.from != 1
                && peers.contains(&hello.from)
                && certified.is_none_or(|c| c == hello.from);
            proptest::prop_assert_eq!(result.is_ok(), right, "{:?}", hello);
            if let Err((status, _)) = result {
                let reply = codec::encode_reply(status, 0);
                proptest::prop_assert!(matches!(codec::decode_reply(&reply), Err(HandshakeError::Refused(s)) if s == status));
            }
        }
    }
}

//! Mutual TLS between members (feature `tls`): the configuration built from PEM files,
//! and the TLS handshake on each side of a connection, which runs before the hello.
//!
//! Both sides present a certificate and verify the other's against the cluster's CA
//! (client authentication is required on the listener). A node's certificate names its
//! node id as the DNS subject alternative name `node-<id>`:
//!
//! - the connecting node asks for the server name `node-<peer>`, so rustls refuses a
//!   server whose certificate does not name the node it meant to reach;
//! - the accepting node keeps the client's certificate, and the hello that follows
//!   inside the session is refused (`NotCertified`) unless the certificate names the
//!   hello's sender id (`handshake::check_hello`).
//!
//! Only TLS 1.3 is offered, with rustls's ring provider. Session resumption is off:
//! every connection runs a full handshake, so every accepted connection has the peer's
//! certificate in hand. See `docs/security.md` for the threat model.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::{client, server, TlsAcceptor, TlsConnector};
use raft::{NodeId, Runtime};
use rustls::client::Resumption;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{ConnectionError, TlsConfigError, TlsError};

/// The DNS subject alternative name that a node's certificate carries: `node-<id>`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// A node's TLS identity and trust: its certificate chain and private key, and the
/// cluster's CA certificates that every peer's certificate must chain to. Set it as
/// [`TcpConfig::tls`](crate::TcpConfig::tls) on every node of the cluster.
///
/// The node's certificate must name it with the DNS subject alternative name
/// `node-<id>` ([`node_name`]), and, if it has an extended key usage extension, allow
/// both `serverAuth` and `clientAuth` (a node is server and client).
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig").field("protocol", &"TLS 1.3").finish_non_exhaustive()
    }
}

fn parse_certs(pem_text: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Missing { what });
    }
    Ok(certs)
}

fn parse_key(pem_text: &[u8]) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    const WHAT: &str = "private key";
    PrivateKeyDer::from_pem_slice(pem_text).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsConfigError::Missing { what: WHAT },
        source => TlsConfigError::Pem { what: WHAT, source },
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read { what, path: path.to_path_buf(), source })
}

impl TlsConfig {
    /// Builds the configuration from PEM text: `cert_chain` holds the node's certificate
    /// first, then any intermediates; `key` its private key (PKCS#8, PKCS#1 or SEC1);
    /// `ca` one or more CA certificates (several during a CA rotation: see
    /// `docs/security.md`).
    pub fn from_pem(cert_chain: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsConfig, TlsConfigError> {
        let chain = parse_certs(cert_chain, "certificate")?;
        let key = parse_key(key)?;
        let mut roots = RootCertStore::empty();
        for ca in parse_certs(ca, "CA certificate")? {
            roots.add(ca).map_err(TlsConfigError::Ca)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = [&rustls::version::TLS13];

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(TlsConfigError::Verifier)?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(TlsConfigError::Invalid)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(TlsConfigError::Invalid)?;
        // Full handshakes only: a resumed session would not carry the client certificate.
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(TlsConfigError::Invalid)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(TlsConfigError::Invalid)?;
        client.resumption = Resumption::disabled();

        Ok(TlsConfig { client: Arc::new(client), server: Arc::new(server) })
    }

    /// Reads the three PEM files and builds the configuration: see
    /// [`from_pem`](TlsConfig::from_pem).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsConfigError> {
        let cert_chain = read(cert_chain.as_ref(), "certificate")?;
        let key = read(key.as_ref(), "private key")?;
        let ca = read(ca.as_ref(), "CA certificate")?;
        TlsConfig::from_pem(&cert_chain, &key, &ca)
    }
}

/// The rustls error inside an I/O error from a TLS stream, if there is one.
pub(crate) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Why a TLS handshake failed, from the I/O error futures-rustls returned.
fn classify(e: io::Error) -> TlsError {
    if let Some(r) = rustls_error(&e) {
        return TlsError::Refused(r.clone());
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TlsError::Closed,
        _ => TlsError::Io(e),
    }
}

/// The connecting side: the TLS handshake, asking for the server name `node-<peer>`.
pub(crate) async fn connect<R: Runtime, S: AsyncRead + AsyncWrite + Unpin>(
    rt: &R,
    tls: &TlsConfig,
    timeout: std::time::Duration,
    stream: S,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<client::TlsStream<S>, ConnectionError> {
    let err = |source| ConnectionError::Tls { addr, source };
    let name = DnsName::try_from(node_name(peer))
        .map_err(|e| err(TlsError::Io(io::Error::new(io::ErrorKind::InvalidInput, e))))?;
    let connector = TlsConnector::from(tls.client.clone());
    rt.timeout(timeout, connector.connect(ServerName::DnsName(name), stream))
        .await
        .ok_or(err(TlsError::Timeout))?
        .map_err(|e| err(classify(e)))
}

/// The certificate a peer presented on an inbound TLS connection, verified against the
/// CA by the handshake.
#[derive(Debug)]
pub(crate) struct PeerCertificate(CertificateDer<'static>);

impl PeerCertificate {
    /// Whether the certificate names node `id` (DNS subject alternative name `node-<id>`).
    pub(crate) fn names(&self, id: NodeId) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.0) else {
            return false;
        };
        let Ok(name) = DnsName::try_from(node_name(id)) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&ServerName::DnsName(name)).is_ok()
    }
}

/// The accepting side: the TLS handshake (the client's certificate is required and
/// verified), and the certificate the client presented.
pub(crate) async fn accept<R: Runtime, S: AsyncRead + AsyncWrite + Unpin>(
    rt: &R,
    tls: &TlsConfig,
    timeout: std::time::Duration,
    stream: S,
    addr: SocketAddr,
) -> Result<(server::TlsStream<S>, PeerCertificate), ConnectionError> {
    let err = |source| ConnectionError::Tls { addr, source };
    let acceptor = TlsAcceptor::from(tls.server.clone());
    let stream = rt
        .timeout(timeout, acceptor.accept(stream))
        .await
        .ok_or(err(TlsError::Timeout))?
        .map_err(|e| err(classify(e)))?;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.clone().into_owned())
        .ok_or(err(TlsError::NoCertificate))?;
    Ok((stream, PeerCertificate(cert)))
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;

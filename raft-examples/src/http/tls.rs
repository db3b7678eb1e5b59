//! HTTPS for the API: the server's rustls configuration from the node's certificate and
//! key (PEM), and the TLS handshake of one connection before hyper serves it.

use std::sync::Arc;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The API's TLS settings: TLS 1.3 with rustls's ring provider, the node's certificate,
/// no client certificates (clients are authenticated, where it matters, by the admin
/// token: see `docs/security.md`).
#[derive(Clone)]
pub struct HttpsConfig {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for HttpsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConfig").finish_non_exhaustive()
    }
}

/// How long a client may take over the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpsConfig {
    /// The configuration serving `cert_chain` (PEM, the certificate first) with `key`
    /// (PEM); an error says what is wrong with which input.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<HttpsConfig, String> {
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("malformed PEM in the certificate: {e}"))?;
        if chain.is_empty() {
            return Err("no certificate in the certificate file".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("no usable private key: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("invalid certificate or key: {e}"))?;
        Ok(HttpsConfig { config: Arc::new(config) })
    }

    /// Runs the server side of the TLS handshake on `stream`.
    pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> std::io::Result<futures_rustls::server::TlsStream<S>> {
        futures_rustls::TlsAcceptor::from(self.config.clone()).accept(stream).await
    }
}

//! Test certificates made with rcgen: a cluster CA, node certificates it issues (valid,
//! expired, naming any node), and the `TlsConfig` of a node. Shared by the crate's unit
//! tests (included by path) and the integration tests.

#![allow(dead_code, unreachable_pub)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
// The includer brings `node_name` and `TlsConfig` into scope.
use super::{node_name, TlsConfig};

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A node's certificate and its private key, in PEM.
pub struct NodeCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-signed CA").pem();
        Ca { params, key, pem }
    }

    /// The CA's certificate in PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    fn sign(&self, params: &CertificateParams) -> NodeCert {
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key)).expect("sign");
        NodeCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn params(names: &[String]) -> CertificateParams {
        let mut params = CertificateParams::new(names.to_vec()).expect("node params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params
    }

    /// A valid certificate for node `id` (DNS name `node-<id>`).
    pub fn issue(&self, id: u64) -> NodeCert {
        self.sign(&Ca::params(&[node_name(id)]))
    }

    /// A certificate with the given DNS names.
    pub fn issue_names(&self, names: &[&str]) -> NodeCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.sign(&Ca::params(&names))
    }

    /// A certificate for node `id` that expired in 2021.
    pub fn issue_expired(&self, id: u64) -> NodeCert {
        let mut params = Ca::params(&[node_name(id)]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(&params)
    }

    /// The TLS configuration of a node holding `cert` and trusting this CA.
    pub fn tls(&self, cert: &NodeCert) -> TlsConfig {
        TlsConfig::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), self.pem.as_bytes()).expect("TLS config")
    }

    /// The TLS configuration of node `id` with a fresh valid certificate from this CA.
    pub fn node(&self, id: u64) -> TlsConfig {
        self.tls(&self.issue(id))
    }
}

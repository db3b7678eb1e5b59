//! Throwaway certificates for `cluster --tls` and the process tests: a fresh CA and one
//! certificate per node, written as PEM files under `<dir>/tls/`.
//!
//! Node N's certificate names it `node-N` (what the Raft transport checks) and also
//! carries the hosts its HTTPS API is reached at (`localhost`, `127.0.0.1`, ...), so a
//! client that trusts `ca.pem` can verify it: `curl --cacert <dir>/tls/ca.pem
//! https://127.0.0.1:8001/status`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::client::HttpsTrust;

/// The files of a generated CA and its node certificates.
#[derive(Clone, Debug)]
pub struct ClusterCerts {
    dir: PathBuf,
}

/// Writes `body` to `path`; a private key is readable by its owner only.
fn write(path: &Path, body: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(body.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl ClusterCerts {
    /// Makes a new CA and a certificate for each of `ids` naming `node-<id>` and every one
    /// of `hosts` (DNS names or IP addresses), into `<dir>/tls/`, replacing what is there.
    pub fn generate(dir: &Path, ids: &[u64], hosts: &[String]) -> Result<ClusterCerts, String> {
        let fail = |e: rcgen::Error| format!("cannot make the certificates: {e}");
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| format!("cannot create {}: {e}", tls.display()))?;

        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, "raft-examples throwaway cluster CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(fail)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
        write(&tls.join("ca.pem"), &ca_cert.pem(), false)?;
        let issuer = Issuer::from_params(&ca, &ca_key);

        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        for h in hosts {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        for &id in ids {
            let mut all = vec![raft_net_tcp::node_name(id)];
            all.extend(names.iter().cloned());
            let mut params = CertificateParams::new(all).map_err(fail)?;
            params.distinguished_name.push(DnType::CommonName, raft_net_tcp::node_name(id));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().map_err(fail)?;
            let cert = params.signed_by(&key, &issuer).map_err(fail)?;
            write(&tls.join(format!("node-{id}.pem")), &cert.pem(), false)?;
            write(&tls.join(format!("node-{id}.key")), &key.serialize_pem(), true)?;
        }
        Ok(ClusterCerts { dir: tls })
    }

    /// The certificates [`ClusterCerts::generate`] made in `dir` before; fails if the
    /// CA certificate or node `id`'s certificate is not there.
    pub fn existing(dir: &Path, id: u64) -> Result<ClusterCerts, String> {
        let certs = ClusterCerts { dir: dir.join("tls") };
        for file in [certs.ca(), certs.dir.join(format!("node-{id}.pem")), certs.dir.join(format!("node-{id}.key"))] {
            if !file.is_file() {
                return Err(format!("{} is missing: was the cluster started with --tls?", file.display()));
            }
        }
        Ok(certs)
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Node `id`'s flags: `--tls-cert`, `--tls-key` and `--tls-ca` with its files.
    pub fn node_args(&self, id: u64) -> Vec<String> {
        let file = |name: String| self.dir.join(name).display().to_string();
        vec![
            format!("--tls-cert={}", file(format!("node-{id}.pem"))),
            format!("--tls-key={}", file(format!("node-{id}.key"))),
            format!("--tls-ca={}", self.ca().display()),
        ]
    }

    /// An HTTPS client trust that accepts the nodes' certificates.
    pub fn https_trust(&self) -> Result<HttpsTrust, String> {
        let pem = std::fs::read(self.ca()).map_err(|e| format!("cannot read {}: {e}", self.ca().display()))?;
        HttpsTrust::from_ca_pem(&pem)
    }
}

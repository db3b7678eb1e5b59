//! The command line every app node takes (`NodeArgs`), the `--peers` list, the runtime
//! choice and the security flags (`SecurityArgs`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use raft::{Config, NodeId};
use raft_store_file::FileStoreOptions;

use super::sched::Scheduling;
use crate::http::{AdminToken, HttpsConfig};

/// The async runtime a node runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// tokio, multi-threaded (feature `tokio`).
    #[cfg(feature = "tokio")]
    Tokio,
    /// smol, on an executor driven by two threads (feature `smol`).
    #[cfg(feature = "smol")]
    Smol,
}

impl Default for RuntimeChoice {
    fn default() -> Self {
        #[cfg(feature = "tokio")]
        return RuntimeChoice::Tokio;
        #[cfg(not(feature = "tokio"))]
        return RuntimeChoice::Smol;
    }
}

/// The command line of an app node: every app takes these flags (an app with flags of its
/// own adds them through [`super::main_with_args`]).
#[derive(Clone, Debug, Parser)]
#[command(version)]
pub struct NodeArgs {
    /// This node's id: one of the ids in `--peers`.
    #[arg(long)]
    pub id: NodeId,
    /// The address to listen on for Raft traffic from the other nodes (host:port).
    #[arg(long)]
    pub listen: String,
    /// The address to serve the HTTP API on (host:port).
    #[arg(long)]
    pub http: String,
    /// Every member's Raft address, this node's included: `1=host:port,2=host:port,...`.
    /// They make up the cluster when the data directory is empty; after that the
    /// membership (with every member's address) comes from the log and these addresses
    /// are only used to reach the peers until it is read. Not needed with --join.
    #[arg(long, value_parser = parse_peers, required_unless_present = "join", conflicts_with = "join")]
    pub peers: Option<Peers>,
    /// The HTTP address of the other members, `1=host:port,...`, written with --peers
    /// into the first configuration so that any node can forward an admin request to
    /// the leader (this node's own is --http). A member without one is still a member;
    /// requests are then not forwarded to it.
    #[arg(long, value_parser = parse_peers)]
    pub peers_http: Option<Peers>,
    /// Join a running cluster instead of bootstrapping one: `1=host:port,...`, the Raft
    /// address of one or more members. With an empty data directory the node starts
    /// without a configuration and waits for the leader to add it
    /// (`POST /cluster/learners`); it accepts Raft traffic from the members given.
    #[arg(long, value_parser = parse_peers)]
    pub join: Option<Peers>,
    /// The directory holding this node's log; it is created if missing.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The local address this node's Raft connections to its peers are made from (any
    /// port), e.g. `127.0.0.2`; by default the OS picks it. With each node of a cluster
    /// on one machine given an address of its own (for --listen too), a firewall can cut
    /// the traffic between chosen nodes: the process tests make network partitions so.
    #[arg(long, value_name = "IP")]
    pub bind_source: Option<std::net::IpAddr>,
    /// The async runtime to run on (the choices are the runtimes compiled in).
    #[arg(long, value_enum, default_value_t = RuntimeChoice::default())]
    pub runtime: RuntimeChoice,
    /// The largest value (request body) accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_value_size: usize,
    /// How the OS schedules the node's threads (see the `sched` module): `batch` keeps a
    /// node from being preempted mid-burst by the peers it wakes.
    #[arg(long, value_enum, default_value_t = Scheduling::default())]
    pub scheduling: Scheduling,
    /// The size at which the log starts a new segment file, in bytes; compaction deletes
    /// whole segments, so the log on disk holds at most about one segment more than the
    /// snapshot thresholds keep.
    #[arg(long, default_value_t = FileStoreOptions::default().segment_size)]
    pub log_segment_size: u64,
    /// When the node compacts its log.
    #[command(flatten)]
    pub snapshots: SnapshotArgs,
    /// Peer authentication, HTTPS and the admin token.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// The security flags (see `docs/security.md`): mutual TLS between the nodes, HTTPS for
/// the API, and the admin token.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct SecurityArgs {
    /// This node's certificate chain (PEM) for mutual TLS on the Raft port; it must name
    /// the node with the DNS name `node-<id>`. Needs --tls-key and --tls-ca. The HTTP
    /// API is then served over HTTPS with the same certificate (see --http-plain).
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM), for --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate(s) (PEM): every peer's certificate must be issued by
    /// one of them.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the HTTP API in plaintext even with the TLS flags.
    #[arg(long)]
    pub http_plain: bool,
    /// The token that requests changing membership or leadership (any request under
    /// `/cluster/` but a GET) must carry as `Authorization: Bearer <token>`. Visible to
    /// other local users in the process list: prefer --admin-token-file.
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// A file holding the admin token (surrounding whitespace is ignored).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// What [`SecurityArgs`] load into.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// Mutual TLS with the peers, when the TLS flags are given.
    pub peer_tls: Option<raft_net_tcp::TlsConfig>,
    /// HTTPS for the API: with the TLS flags, unless --http-plain.
    pub https: Option<HttpsConfig>,
    /// The admin token, when given.
    pub admin_token: Option<AdminToken>,
}

impl SecurityArgs {
    /// Reads the certificate, key, CA and token files; an error says which flag or file
    /// is wrong.
    pub fn load(&self) -> Result<Security, String> {
        let mut security = Security::default();
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => {}
            (Some(cert), Some(key), Some(ca)) => {
                security.peer_tls = Some(
                    raft_net_tcp::TlsConfig::from_pem_files(cert, key, ca)
                        .map_err(|e| format!("--tls-cert/--tls-key/--tls-ca: {e}"))?,
                );
                if !self.http_plain {
                    let read = |flag: &str, path: &PathBuf| {
                        std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
                    };
                    security.https = Some(
                        HttpsConfig::from_pem(&read("--tls-cert", cert)?, &read("--tls-key", key)?)
                            .map_err(|e| format!("HTTPS with --tls-cert/--tls-key: {e}"))?,
                    );
                }
            }
            (cert, key, ca) => {
                let missing: Vec<&str> =
                    [(cert.is_none(), "--tls-cert"), (key.is_none(), "--tls-key"), (ca.is_none(), "--tls-ca")]
                        .into_iter()
                        .filter_map(|(m, flag)| m.then_some(flag))
                        .collect();
                return Err(format!(
                    "--tls-cert, --tls-key and --tls-ca go together (all three or none): missing {}",
                    missing.join(" and ")
                ));
            }
        }
        let token = match (&self.admin_token, &self.admin_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => {
                Some(std::fs::read_to_string(path).map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?)
            }
            (None, None) => None,
        };
        security.admin_token =
            token.map(|t| AdminToken::new(&t).map_err(|e| format!("--admin-token: {e}"))).transpose()?;
        Ok(security)
    }
}

/// When a node takes a snapshot and how much log it keeps behind one (the
/// [`raft::Config`] fields of the same names; the defaults are the framework's).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct SnapshotArgs {
    /// Take a snapshot once this many entries were applied since the last one (0: never
    /// for this reason).
    #[arg(long, default_value_t = Config::default().snapshot_after_entries)]
    pub snapshot_after_entries: u64,
    /// Take a snapshot once the entries applied since the last one hold this many bytes
    /// (0: never for this reason).
    #[arg(long, default_value_t = Config::default().snapshot_after_bytes)]
    pub snapshot_after_bytes: u64,
    /// Entries kept in the log before a snapshot's last one, for followers a little
    /// behind.
    #[arg(long, default_value_t = Config::default().snapshot_keep_entries)]
    pub snapshot_keep_entries: u64,
    /// Bytes per InstallSnapshot chunk sent to a follower.
    #[arg(long, default_value_t = Config::default().snapshot_chunk_size)]
    pub snapshot_chunk_size: usize,
    /// Most InstallSnapshot chunks in flight to one follower.
    #[arg(long, default_value_t = Config::default().snapshot_max_inflight_chunks)]
    pub snapshot_max_inflight_chunks: usize,
}

impl SnapshotArgs {
    /// `config` with these thresholds.
    pub fn apply(&self, config: Config) -> Config {
        Config {
            snapshot_after_entries: self.snapshot_after_entries,
            snapshot_after_bytes: self.snapshot_after_bytes,
            snapshot_keep_entries: self.snapshot_keep_entries,
            snapshot_chunk_size: self.snapshot_chunk_size,
            snapshot_max_inflight_chunks: self.snapshot_max_inflight_chunks,
            ..config
        }
    }
}

/// The `--peers` list: node id to Raft address, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<NodeId, String>);

/// Parses `1=host:port,2=host:port,...`.
pub fn parse_peers(s: &str) -> Result<Peers, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("`{part}` is not of the form ID=HOST:PORT"))?;
        let id: NodeId = id.trim().parse().map_err(|_| format!("`{id}` is not a node id"))?;
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(Peers(peers))
}

pub(crate) fn resolve(what: &str, addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{what} `{addr}`: {e}"))?
        .next()
        .ok_or_else(|| format!("{what} `{addr}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_lists_are_refused() {
        let p = parse_peers("1=127.0.0.1:7001, 2=localhost:7002,3=[::1]:7003").unwrap();
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.0[&2], "localhost:7002");
        assert!(parse_peers("").is_err());
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("0=a:1").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("127.0.0.1:7001").is_err());
    }

    #[test]
    fn join_replaces_peers() {
        let base = ["kv", "--id=4", "--listen=127.0.0.1:7004", "--http=127.0.0.1:8004", "--data-dir=/tmp/x"];
        let join = NodeArgs::try_parse_from(base.iter().chain(&["--join=1=127.0.0.1:7001"])).unwrap();
        assert_eq!(join.join.unwrap().0.len(), 1);
        assert!(join.peers.is_none());
        assert!(NodeArgs::try_parse_from(base).is_err(), "--peers or --join");
        assert!(NodeArgs::try_parse_from(base.iter().chain(&["--join=1=a:1", "--peers=4=b:1"])).is_err());
        let http = NodeArgs::try_parse_from(base.iter().chain(&["--peers=4=a:1,5=b:1", "--peers-http=5=b:2"])).unwrap();
        assert_eq!(http.peers_http.unwrap().0[&5], "b:2");
    }

    #[test]
    fn bind_source_takes_an_ip_address() {
        let base = ["kv", "--id=4", "--listen=127.0.0.4:7004", "--http=127.0.0.4:8004", "--data-dir=/tmp/x"];
        let peers = base.iter().chain(&["--peers=4=127.0.0.4:7004"]);
        assert_eq!(NodeArgs::try_parse_from(peers.clone()).unwrap().bind_source, None);
        let bound = NodeArgs::try_parse_from(peers.clone().chain(&["--bind-source=127.0.0.4"])).unwrap();
        assert_eq!(bound.bind_source, Some(std::net::IpAddr::from([127, 0, 0, 4])));
        assert!(NodeArgs::try_parse_from(peers.chain(&["--bind-source=127.0.0.4:7004"])).is_err(), "no port");
    }

    #[test]
    fn the_command_line_is_the_documented_one() {
        let args = NodeArgs::try_parse_from([
            "kv",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:7002",
            "--http",
            "127.0.0.1:8002",
            "--peers",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(args.id, 2);
        assert_eq!(args.runtime, RuntimeChoice::default());
        assert_eq!(args.max_value_size, 1 << 20);
        let defaults = Config::default();
        assert_eq!(args.snapshots.apply(Config::default()).snapshot_after_entries, defaults.snapshot_after_entries);
        let args = NodeArgs::try_parse_from([
            "kv",
            "--id=1",
            "--listen=127.0.0.1:7001",
            "--http=127.0.0.1:8001",
            "--peers=1=127.0.0.1:7001",
            "--data-dir=/tmp/x",
            "--snapshot-after-entries=500",
            "--snapshot-after-bytes=0",
            "--snapshot-keep-entries=50",
        ])
        .unwrap();
        let config = args.snapshots.apply(Config::default());
        assert_eq!(
            (config.snapshot_after_entries, config.snapshot_after_bytes, config.snapshot_keep_entries),
            (500, 0, 50)
        );
        assert_eq!(config.snapshot_chunk_size, defaults.snapshot_chunk_size);
        assert!(NodeArgs::try_parse_from(["kv", "--id", "1"]).is_err());
    }

    fn security(flags: &[&str]) -> Result<Security, String> {
        let base = [
            "kv",
            "--id=1",
            "--listen=127.0.0.1:7001",
            "--http=127.0.0.1:8001",
            "--peers=1=127.0.0.1:7001",
            "--data-dir=/tmp/x",
        ];
        let args = NodeArgs::try_parse_from(base.iter().chain(flags)).map_err(|e| e.to_string())?;
        args.security.load()
    }

    #[test]
    fn the_tls_flags_go_together_and_files_are_checked() {
        let s = security(&[]).unwrap();
        assert!(s.peer_tls.is_none() && s.https.is_none() && s.admin_token.is_none());
        let e = security(&["--tls-cert=/c.pem"]).unwrap_err();
        assert!(e.contains("all three or none") && e.contains("missing --tls-key and --tls-ca"), "{e}");
        let e = security(&["--tls-cert=/c.pem", "--tls-ca=/ca.pem"]).unwrap_err();
        assert!(e.contains("missing --tls-key"), "{e}");
        let e = security(&[
            "--tls-cert=/nonexistent/c.pem",
            "--tls-key=/nonexistent/k.pem",
            "--tls-ca=/nonexistent/ca.pem",
        ])
        .unwrap_err();
        assert!(e.contains("/nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn certificates_from_the_launcher_load_for_raft_and_https() {
        let dir = tempfile::tempdir().unwrap();
        let certs = crate::launch::certs::ClusterCerts::generate(dir.path(), &[1], &["127.0.0.1".to_string()]).unwrap();
        let flags: Vec<String> = certs.node_args(1);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let s = security(&flags).unwrap();
        assert!(s.peer_tls.is_some() && s.https.is_some());
        let mut plain = flags.clone();
        plain.push("--http-plain");
        let s = security(&plain).unwrap();
        assert!(s.peer_tls.is_some() && s.https.is_none());
        // The key is not a certificate.
        let mut wrong = flags.clone();
        let key = format!("--tls-cert={}", dir.path().join("tls/node-1.key").display());
        wrong.push(&key);
        assert!(security(&wrong).is_err());
    }

    #[test]
    fn the_admin_token_comes_from_the_flag_or_a_file() {
        let s = security(&["--admin-token=abc"]).unwrap();
        assert_eq!(s.admin_token, Some(AdminToken::new("abc").unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let s = security(&[&format!("--admin-token-file={}", file.display())]).unwrap();
        assert_eq!(s.admin_token, Some(AdminToken::new("from-file").unwrap()));
        assert!(security(&["--admin-token=a", &format!("--admin-token-file={}", file.display())]).is_err());
        assert!(security(&["--admin-token-file=/nonexistent/token"]).unwrap_err().contains("/nonexistent/token"));
        assert!(security(&["--admin-token= "]).is_err());
    }
}

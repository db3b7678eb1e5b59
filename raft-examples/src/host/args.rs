//! The command line every app node takes (`NodeArgs`), the `--peers` list and the
//! runtime choice.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use raft::{Config, NodeId};
use raft_store_file::FileStoreOptions;

use super::sched::Scheduling;

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
    /// membership comes from the log and the addresses are only used to reach the peers.
    #[arg(long, value_parser = parse_peers)]
    pub peers: Peers,
    /// The directory holding this node's log; it is created if missing.
    #[arg(long)]
    pub data_dir: PathBuf,
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
}

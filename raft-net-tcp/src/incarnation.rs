//! Data-directory incarnations: how a node that lost its data cannot come back under its
//! old node id.
//!
//! A Raft node's durable state (its vote, its log) is part of the protocol's safety: a
//! node that restarts with an empty data directory under the id it had may vote twice in
//! a term, or help elect a leader that lacks entries it had acknowledged. So each data
//! directory draws a random 64-bit *incarnation* when it is first used, every hello and
//! every handshake reply carries it, and each node records, durably, the incarnation it
//! first saw from each peer. A connection from or to a peer presenting another
//! incarnation than the recorded one is refused ([`HelloStatus::Replaced`]
//! on the receiving side, [`HandshakeError::Replaced`] on the connecting side): the
//! wiped node is shut out by every node that ever talked to it, and
//! [`TcpTransport::probe`](crate::TcpTransport::probe) lets it find that out before it
//! bootstraps. A node removed from the configuration is forgotten, so its id may be given
//! to a new node later.
//!
//! Incarnation 0 means "none" (a transport without [`Incarnations`]): it is never
//! recorded, and is refused only from a peer whose incarnation is recorded.
//!
//! [`HelloStatus::Replaced`]: crate::codec::HelloStatus::Replaced
//! [`HandshakeError::Replaced`]: crate::HandshakeError::Replaced

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use raft::NodeId;
use tracing::{info, warn};

use crate::error::IncarnationError;
use crate::sync::lock;

/// The file, in the node's directory, that holds its own incarnation.
pub const OWN_FILE: &str = "incarnation";
/// The file, in the node's directory, that holds the peers' incarnations.
pub const PEERS_FILE: &str = "peer-incarnations";

/// This node's incarnation and those recorded for its peers, kept in a directory (the
/// node's data directory) or only in memory.
#[derive(Debug)]
pub struct Incarnations {
    own: u64,
    dir: Option<PathBuf>,
    peers: Mutex<BTreeMap<NodeId, u64>>,
}

/// What [`Incarnations::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The peer presented its recorded incarnation, or none is recorded and the one it
    /// presented is recorded now.
    Known,
    /// The peer presented another incarnation than the recorded one.
    Replaced {
        /// The recorded incarnation.
        recorded: u64,
    },
}

impl Incarnations {
    /// Opens the incarnations kept in `dir`: this node's (drawn and written, durably, if
    /// the directory has none yet) and the peers' recorded so far.
    pub fn open(dir: &Path) -> Result<Incarnations, IncarnationError> {
        let own_path = dir.join(OWN_FILE);
        let own = match std::fs::read_to_string(&own_path) {
            Ok(text) => parse_hex(text.trim()).ok_or_else(|| IncarnationError::Corrupt {
                path: own_path.clone(),
                line: text.trim().chars().take(64).collect(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let own = loop {
                    let n = fastrand::u64(..);
                    if n != 0 {
                        break n;
                    }
                };
                write_durably(dir, OWN_FILE, &format!("{own:016x}\n"))?;
                info!(incarnation = %format!("{own:016x}"), dir = %dir.display(), "new data directory: drew its incarnation");
                own
            }
            Err(source) => return Err(IncarnationError::Io { path: own_path, source }),
        };
        let peers_path = dir.join(PEERS_FILE);
        let mut peers = BTreeMap::new();
        match std::fs::read_to_string(&peers_path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let corrupt = || IncarnationError::Corrupt { path: peers_path.clone(), line: line.to_string() };
                    let (id, inc) = line.trim().split_once(' ').ok_or_else(corrupt)?;
                    let id: NodeId = id.parse().map_err(|_| corrupt())?;
                    let inc = parse_hex(inc.trim()).filter(|&i| i != 0).ok_or_else(corrupt)?;
                    peers.insert(id, inc);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(IncarnationError::Io { path: peers_path, source }),
        }
        Ok(Incarnations { own, dir: Some(dir.to_path_buf()), peers: Mutex::new(peers) })
    }

    /// Incarnations kept in memory only (tests, or a node without a data directory):
    /// `own` must not be 0.
    pub fn in_memory(own: u64) -> Incarnations {
        Incarnations { own, dir: None, peers: Mutex::new(BTreeMap::new()) }
    }

    /// This node's incarnation.
    pub fn own(&self) -> u64 {
        self.own
    }

    /// The incarnations recorded for the peers, by node id.
    pub fn recorded(&self) -> BTreeMap<NodeId, u64> {
        lock(&self.peers).clone()
    }

    /// Checks the incarnation `peer` presented against the recorded one, recording it
    /// (durably, before answering) if none is recorded yet. Incarnation 0 is never
    /// recorded. A failure to write the record is logged and the peer accepted: the
    /// check is then as if the record had been lost.
    pub fn check(&self, peer: NodeId, presented: u64) -> Seen {
        let mut peers = lock(&self.peers);
        match peers.get(&peer) {
            Some(&recorded) if recorded == presented => Seen::Known,
            Some(&recorded) => Seen::Replaced { recorded },
            None if presented == 0 => Seen::Known,
            None => {
                peers.insert(peer, presented);
                self.persist(&peers);
                Seen::Known
            }
        }
    }

    /// Forgets `peer`'s incarnation (it left the configuration; its id may be reused).
    pub fn forget(&self, peer: NodeId) {
        let mut peers = lock(&self.peers);
        if peers.remove(&peer).is_some() {
            self.persist(&peers);
        }
    }

    fn persist(&self, peers: &BTreeMap<NodeId, u64>) {
        let Some(dir) = &self.dir else { return };
        let text: String = peers.iter().map(|(id, inc)| format!("{id} {inc:016x}\n")).collect();
        if let Err(e) = write_durably(dir, PEERS_FILE, &text) {
            warn!(error = %e, "cannot record the peers' incarnations");
        }
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok().filter(|&n| n != 0)
}

/// Writes `name` in `dir` so that a crash leaves the old or the new content: a temporary
/// file, synced, renamed over it, and the directory synced.
fn write_durably(dir: &Path, name: &str, text: &str) -> Result<(), IncarnationError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IncarnationError::Io { path, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_its_incarnation_and_the_peers_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Incarnations::open(dir.path()).unwrap();
        assert_ne!(a.own(), 0);
        assert_eq!(a.check(2, 0x22), Seen::Known);
        assert_eq!(a.check(3, 0), Seen::Known, "no incarnation: not recorded");
        drop(a);
        let b = Incarnations::open(dir.path()).unwrap();
        assert_eq!(b.recorded(), BTreeMap::from([(2, 0x22)]));
        assert_eq!(b.check(2, 0x22), Seen::Known);
        assert_eq!(b.check(2, 0x23), Seen::Replaced { recorded: 0x22 });
        assert_eq!(b.check(2, 0), Seen::Replaced { recorded: 0x22 }, "a recorded peer must present it");
        b.forget(2);
        assert_eq!(Incarnations::open(dir.path()).unwrap().recorded(), BTreeMap::new());
        assert_eq!(b.check(2, 0x23), Seen::Known, "a forgotten id may come back as a new node");
    }

    #[test]
    fn a_wiped_directory_draws_a_new_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let first = Incarnations::open(dir.path()).unwrap().own();
        assert_eq!(Incarnations::open(dir.path()).unwrap().own(), first);
        std::fs::remove_file(dir.path().join(OWN_FILE)).unwrap();
        assert_ne!(Incarnations::open(dir.path()).unwrap().own(), first);
    }

    #[test]
    fn corrupt_files_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OWN_FILE), "not hex\n").unwrap();
        let e = Incarnations::open(dir.path()).unwrap_err();
        assert!(matches!(&e, IncarnationError::Corrupt { line, .. } if line == "not hex"), "{e}");
        std::fs::write(dir.path().join(OWN_FILE), "00000000000000ab\n").unwrap();
        std::fs::write(dir.path().join(PEERS_FILE), "2 00000000000000cd\nthree 12\n").unwrap();
        let e = Incarnations::open(dir.path()).unwrap_err();
        assert!(matches!(&e, IncarnationError::Corrupt { line, .. } if line == "three 12"), "{e}");
    }
}

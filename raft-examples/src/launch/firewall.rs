//! Network partitions between real processes on one machine, with nftables: each node of
//! a [`Ports::Loopback`](super::Ports::Loopback) cluster has a loopback
//! address of its own, and a [`Firewall`] drops the packets from one address to another
//! in a table of its own (removed when it is dropped). Packets are dropped on input, so a
//! sender sees silence (retransmissions, then timeouts), as across a real partition, not
//! an error.
//!
//! Over TCP a one-way block cuts both directions of every connection between the two
//! nodes (the other side's acknowledgements or replies are lost too), but unlike a
//! symmetric partition it leaves the blocked side's connections half alive: data is
//! accepted into socket buffers and retransmitted into the void.

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A table of drop rules; the rules go when it is dropped. Needs `nft` (Debian's
/// nftables) and root.
#[derive(Debug)]
pub struct Firewall {
    table: String,
}

static TABLES: AtomicU64 = AtomicU64::new(0);

/// Runs `nft` with `args`; the error is its output.
fn nft(args: &[&str]) -> Result<(), String> {
    let out = Command::new("nft").args(args).output().map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft {}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stderr), out.status))
    }
}

impl Firewall {
    /// A new empty table, or why there cannot be one (no `nft`, not root).
    pub fn new() -> Result<Firewall, String> {
        let table = format!("raft_test_{}_{}", std::process::id(), TABLES.fetch_add(1, Ordering::SeqCst));
        nft(&["add", "table", "ip", &table])?;
        let firewall = Firewall { table };
        nft(&[
            "add",
            "chain",
            "ip",
            &firewall.table,
            "input",
            "{ type filter hook input priority 0 ; policy accept ; }",
        ])?;
        Ok(firewall)
    }

    /// Drops every packet from `from` to `to` (one way).
    pub fn block(&self, from: IpAddr, to: IpAddr) -> Result<(), String> {
        let (from, to) = (from.to_string(), to.to_string());
        nft(&["add", "rule", "ip", &self.table, "input", "ip", "saddr", &from, "ip", "daddr", &to, "drop"])
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn cut(&self, a: IpAddr, b: IpAddr) -> Result<(), String> {
        self.block(a, b)?;
        self.block(b, a)
    }

    /// Cuts every address of `side` from every address of `other`.
    pub fn partition(&self, side: &[IpAddr], other: &[IpAddr]) -> Result<(), String> {
        for &a in side {
            for &b in other {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Removes every rule: the network is whole again.
    pub fn heal(&self) -> Result<(), String> {
        nft(&["flush", "chain", "ip", &self.table, "input"])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(e) = nft(&["delete", "table", "ip", &self.table]) {
            eprintln!("could not remove the firewall's table: {e}");
        }
    }
}

//! The benchmarks of the raft workspace, behind the `bench` binary (`src/main.rs`, the
//! command line only).
//!
//! - [`inproc`]: real `Raft` nodes in one process with the in-memory store and network.
//! - [`net`]: the TCP transport against a raw socket with the same framing.
//! - [`store`]: the file log against raw `write` + `fdatasync`.
//! - [`floor`]: what the machine charges for one replicated write, without Raft.
//! - [`cluster`]: real clusters of the `kv` app and of etcd on loopback, started with the
//!   apps' launcher (`raft_examples::launch`) and driven over HTTP by one load generator;
//!   reports and charts.
//! - [`dns`]: the `dns` app's DNS answers against NSD (with dnsperf) and its
//!   registrations against etcd puts.
//! - [`snapshot`]: restart from a snapshot against a full log replay, and
//!   InstallSnapshot between `kv` processes against raw loopback TCP.
//!
//! The cluster benchmarks run the `kv` binary of `raft-examples`, found next to the
//! `bench` executable: build both with `cargo build --release -p raft-examples -p
//! raft-bench`.

pub mod cluster;
pub mod dns;
pub mod floor;
pub mod inproc;
pub mod net;
pub mod snapshot;
pub mod store;

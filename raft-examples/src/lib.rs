//! Example applications built on the `raft` framework.
//!
//! - [`kv`]: a replicated key-value store ([`kv::KvStore`]); the `kv` binary serves it
//!   over HTTP ([`kv_app`]).
//! - [`counter`]: a replicated counter; the `counter` binary serves it over HTTP
//!   ([`counter_app`]).
//! - [`node`]: what both binaries share: the command line, the file store, the TCP
//!   transport, the HTTP server with `/status`, and a clean stop on SIGTERM or SIGINT.
//! - [`http`]: hyper on either runtime, and the JSON error answers.
//! - [`sched`]: the OS scheduling policy of a node's threads (`--scheduling`).
//! - `bench` (feature `tokio`): the cluster benchmarks of the `bench` binary: kv and
//!   etcd clusters on loopback driven by one HTTP load generator, reports and charts.
//!
//! The binaries: `kv` and `counter` (one node each), `cluster` (a local three-node
//! cluster of either, with a live status table), `demo` (an in-process counter cluster
//! showing failover) and `bench` (benchmarks).

#[cfg(feature = "tokio")]
pub mod bench;
pub mod counter;
pub mod counter_app;
pub mod http;
pub mod kv;
pub mod kv_app;
pub mod node;
pub mod sched;

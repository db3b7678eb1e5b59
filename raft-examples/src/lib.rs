//! Example applications built on the `raft` framework, and the host they run in.
//!
//! - [`apps`]: the apps, each a state machine and its HTTP routes:
//!   [`apps::kv`] (a replicated key-value store) and [`apps::counter`] (a replicated
//!   counter).
//! - [`host`]: what every app node shares: the command line, the file store, the TCP
//!   transport, the HTTP server with `/status`, the app's extra services, the scheduling
//!   policy and a clean stop on SIGTERM or SIGINT. An app plugs in through
//!   [`host::App`].
//! - [`http`]: the HTTP server on either runtime, the JSON error answers and the
//!   adapter between `futures` sockets and hyper.
//! - [`launch`]: a cluster of node processes on this machine (ports, data directories,
//!   kill, pause, restart, `/status` polling), used by the `cluster` binary and the
//!   process tests.
//! - `bench` (feature `tokio`): the cluster benchmarks of the `bench` binary: kv and
//!   etcd clusters on loopback driven by one HTTP load generator, reports and charts.
//!
//! The binaries: `kv` and `counter` (one node each), `cluster` (a local three-node
//! cluster of either, with a live status table), `demo` (an in-process counter cluster
//! showing failover) and `bench` (benchmarks).

pub mod apps;
#[cfg(feature = "tokio")]
pub mod bench;
pub mod host;
pub mod http;
pub mod launch;

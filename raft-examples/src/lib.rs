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
//!   kill, pause, restart, `/status` polling, reading `/metrics`), used by the `cluster`
//!   binary, the benchmarks (`raft-bench`) and the process tests.
//!
//! The binaries: `kv` and `counter` (one node each) and `cluster` (a local three-node
//! cluster of either, with a live status table). The in-process `demo` is an example
//! (`cargo run -p raft-examples --example demo`); the benchmarks are the `bench` binary
//! of the `raft-bench` crate.

pub mod apps;
pub mod host;
pub mod http;
pub mod launch;

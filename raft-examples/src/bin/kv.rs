//! One node of the replicated key-value store, with an HTTP API.
//!
//! ```text
//! kv --id <N> --listen <raft-host:port> --http <http-host:port> \
//!    --peers 1=<raft-addr>,2=<raft-addr>,3=<raft-addr> --data-dir <DIR>
//! ```
//!
//! See the `raft_examples::apps::kv` module for the API, and the README for examples.

use std::process::ExitCode;

use raft_examples::apps::kv::KvApp;

fn main() -> ExitCode {
    raft_examples::host::main(|args| KvApp::new(args.max_value_size))
}

//! One node of the replicated counter, with an HTTP API.
//!
//! ```text
//! counter --id <N> --listen <raft-host:port> --http <http-host:port> \
//!         --peers 1=<raft-addr>,2=<raft-addr>,3=<raft-addr> --data-dir <DIR>
//! ```
//!
//! See the `raft_examples::counter_app` module for the API, and the README for examples.

use std::process::ExitCode;

use raft_examples::counter_app::CounterApp;

fn main() -> ExitCode {
    raft_examples::node::main(|_| CounterApp)
}

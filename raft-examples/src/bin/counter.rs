//! One node of the replicated counter, with an HTTP API.
//!
//! ```text
//! counter --id <N> --listen <raft-host:port> --http <http-host:port> \
//!         --peers 1=<raft-addr>,2=<raft-addr>,3=<raft-addr> --data-dir <DIR>
//! ```
//!
//! See the `raft_examples::apps::counter` module for the API, and the README for examples.

use std::process::ExitCode;

use raft_examples::apps::counter::CounterApp;

fn main() -> ExitCode {
    raft_examples::host::main(|_| CounterApp)
}

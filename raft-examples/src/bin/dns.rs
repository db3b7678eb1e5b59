//! One node of the replicated service registry, with an HTTP registration API and a DNS
//! server (UDP and TCP) answering from the node's replica.
//!
//! ```text
//! dns --id <N> --listen <raft-host:port> --http <http-host:port> --dns <host:port> \
//!     --peers 1=<raft-addr>,2=<raft-addr>,3=<raft-addr> --data-dir <DIR> [--domain service.local.]
//! ```
//!
//! See the `raft_examples::apps::dns` module for the API, and the README for examples.

use std::process::ExitCode;

use raft_examples::apps::dns::{DnsApp, DnsArgs};

fn main() -> ExitCode {
    raft_examples::host::main_with_args(|_, args: DnsArgs| match DnsApp::new(&args) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("dns: {e}");
            std::process::exit(2)
        }
    })
}

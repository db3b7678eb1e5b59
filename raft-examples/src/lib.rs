//! Example applications built on the `raft` framework, and the benchmark tool.

pub mod bench;
pub mod counter;

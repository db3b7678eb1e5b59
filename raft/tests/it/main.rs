//! The raft crate's integration tests, in one binary: each module is one topic, gated on
//! the features it needs (all of them on `testing`; `forwarding` and `stalled_store` also
//! on `tokio`).
//!
//! Replay one simulator seed with its event trace:
//! `RAFT_SIM_SEED=42 cargo test -p raft --all-features --test it simulator_sweep -- --nocapture`.

mod forwarding;
mod membership;
mod observability;
mod runtimes;
mod scenarios;
mod sessions;
mod simulation;
mod stalled_store;
mod timers;

//! The example apps, one directory each: the routes and the [`crate::host::App`] impl in
//! `mod.rs`, the replicated state machine in `state.rs`.

pub mod counter;
pub mod dns;
pub mod kv;

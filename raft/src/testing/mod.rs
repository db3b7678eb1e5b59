//! Test support, usable by users' own tests (feature `testing`): an in-memory
//! [`LogStore`](crate::LogStore) that can lose unsynced writes on a simulated crash, an
//! in-memory [`Network`](crate::Network) with fault injection, conformance suites for
//! `LogStore`s and their snapshots, a deterministic simulated runtime, a cluster simulator (which runs on any store
//! implementing [`sim_store::SimStore`]) and a linearizability checker.

pub mod conformance;
pub mod helpers;
pub mod linearizability;
pub mod mem_network;
pub mod mem_store;
pub mod sim_runtime;
pub mod sim_store;
pub mod simulator;
pub mod snapshot_conformance;

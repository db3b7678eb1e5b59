//! The randomized simulator sweep: many seeds, each a full cluster run with faults,
//! invariant checks after every step and a linearizability check of the client history.
//!
//! - `RAFT_SIM_SEEDS=N` runs N seeds per sweep part (default 250 in each of 4 parts).
//! - `RAFT_SIM_SEED=S` replays one seed exactly and prints its event trace (add
//!   `RUST_LOG=raft=trace` for the nodes' own logs).
//! - `RAFT_SIM_BASE=B` shifts the seed range.
#![cfg(feature = "testing")]

use raft::testing::simulator::{run_seed, sweep as sweep_seeds, SimOptions};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn sweep(part: u64) {
    if let Some(seed) = env_u64("RAFT_SIM_SEED") {
        if part != 0 {
            return;
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .with_test_writer()
            .try_init();
        let mut opts = SimOptions::for_seed(seed);
        opts.verbose = true;
        eprintln!("replaying seed {seed} with {opts:?}");
        match run_seed(seed, opts) {
            Ok(r) => eprintln!("seed {seed} passed: {r:?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let per_part = env_u64("RAFT_SIM_SEEDS").unwrap_or(250);
    let base = env_u64("RAFT_SIM_BASE").unwrap_or(0) + part * per_part;
    let r = sweep_seeds(base..base + per_part, |seed| run_seed(seed, SimOptions::for_seed(seed)));
    let (ops, crashes, secs, failures) = (r.ops_ok, r.crashes, r.seconds, r.failures);
    let (changes, transfers) = (r.membership_changes, r.transfers);
    eprintln!(
        "simulator part {part}: {per_part} seeds ({base}..{}) in {secs:.1}s = {:.1} seeds/s; {ops} client ops, {crashes} crashes, \
         {changes} membership changes, {transfers} leadership transfers",
        base + per_part,
        per_part as f64 / secs
    );
    assert!(failures.is_empty(), "failing seeds (replay each with RAFT_SIM_SEED=<seed>): {failures:?}");
}

#[test]
fn simulator_sweep_part_0() {
    sweep(0);
}

#[test]
fn simulator_sweep_part_1() {
    sweep(1);
}

#[test]
fn simulator_sweep_part_2() {
    sweep(2);
}

#[test]
fn simulator_sweep_part_3() {
    sweep(3);
}

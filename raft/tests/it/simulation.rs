//! The randomized simulator sweep: many seeds, each a full cluster run with faults,
//! invariant checks after every step and a linearizability check of the client history.
//!
//! - `RAFT_SIM_SEEDS=N` runs N seeds per sweep part (default 200 in each of 5 parts).
//!   The last part, `simulator_sweep_drift`, gives every node a clock that drifts by up
//!   to ±5% and makes clocks jump forward.
//! - `RAFT_SIM_SEED=S` replays one seed exactly and prints its event trace (add
//!   `RUST_LOG=raft=trace` for the nodes' own logs); `RAFT_SIM_DRIFT=D` and
//!   `RAFT_SIM_JUMPS=1` replay it with drifting and jumping clocks, as a failure of the
//!   drift part says.
//! - `RAFT_SIM_BASE=B` shifts the seed range.
#![cfg(feature = "testing")]

use raft::testing::simulator::{run_seed, sweep as sweep_seeds, SimOptions};

/// Seeds per part unless `RAFT_SIM_SEEDS` says otherwise.
const SEEDS_PER_PART: u64 = 200;

/// The drift part's bound on clock rate errors: ±5%.
const DRIFT: f64 = 0.05;

/// The sweep's parts: four with each seed's own options, and one with drifting and
/// jumping clocks on top of them.
const DRIFT_PART: u64 = 4;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The options of `seed` in `part`.
fn options(part: u64, seed: u64) -> SimOptions {
    let opts = SimOptions::for_seed(seed);
    if part == DRIFT_PART {
        opts.with_clock_faults(DRIFT)
    } else {
        opts
    }
}

/// The options of a replayed seed: its own, with the clocks `RAFT_SIM_DRIFT` and
/// `RAFT_SIM_JUMPS` ask for.
fn replay_options(seed: u64) -> SimOptions {
    let mut opts = SimOptions::for_seed(seed);
    if let Some(drift) = std::env::var("RAFT_SIM_DRIFT").ok().and_then(|v| v.parse().ok()) {
        opts.clock_drift = drift;
    }
    opts.clock_jumps = std::env::var("RAFT_SIM_JUMPS").is_ok_and(|v| v == "1");
    opts
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
        let mut opts = replay_options(seed);
        opts.verbose = true;
        eprintln!("replaying seed {seed} with {opts:?}");
        match run_seed(seed, opts) {
            Ok(r) => eprintln!("seed {seed} passed: {r:?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let per_part = env_u64("RAFT_SIM_SEEDS").unwrap_or(SEEDS_PER_PART);
    let base = env_u64("RAFT_SIM_BASE").unwrap_or(0) + part * per_part;
    let r = sweep_seeds(base..base + per_part, |seed| run_seed(seed, options(part, seed)));
    let (ops, crashes, secs, failures) = (r.ops_ok, r.crashes, r.seconds, r.failures);
    let (changes, transfers) = (r.membership_changes, r.transfers);
    let clocks = if part == DRIFT_PART {
        format!(", {} clock jumps, clock rates up to {:.1}% apart", r.clock_jumps, r.clock_spread * 100.0)
    } else {
        String::new()
    };
    let (unknown, retried, resolved, node) = (r.ops_unknown, r.ops_retried, r.ops_resolved, r.ops_node_unclear);
    eprintln!(
        "simulator part {part}: {per_part} seeds ({base}..{}) in {secs:.1}s = {:.1} seeds/s; {ops} client ops, {crashes} crashes, \
         {changes} membership changes, {transfers} leadership transfers{clocks}; {retried} ops retried after an unclear \
         outcome, {resolved} of them answered by a retry, {unknown} ops left unknown ({node} of them through \
         Raft::propose)",
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

#[test]
fn simulator_sweep_drift() {
    sweep(DRIFT_PART);
}

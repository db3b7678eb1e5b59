//! Drifting and jumping node clocks in the simulator: how rates are drawn, that runs
//! with them replay exactly, and what a jump does to a node's timers.

use std::time::Duration;

use super::{run_seed, SimCluster, SimOptions};
use crate::testing::sim_runtime::RATE_ONE_PPM;
use crate::types::{NodeId, Term};
use crate::Role;

fn cluster(seed: u64, opts: SimOptions) -> SimCluster {
    SimCluster::new(seed, opts).unwrap_or_else(|f| panic!("{f}"))
}

fn max_term(c: &SimCluster) -> Term {
    c.state.statuses().iter().map(|s| s.3).max().unwrap_or(0)
}

fn a_follower(c: &SimCluster, leader: NodeId) -> NodeId {
    c.ids().into_iter().find(|&id| id != leader).unwrap_or_else(|| panic!("a follower"))
}

#[test]
fn without_drift_every_node_reads_the_virtual_clock() {
    let mut c = cluster(5, SimOptions::default());
    c.run_for(Duration::from_millis(777)).unwrap_or_else(|f| panic!("{f}"));
    for id in c.ids() {
        let clock = c.clock(id).unwrap_or_else(|| panic!("node {id} has a clock"));
        assert_eq!(clock.rate_ppm(), RATE_ONE_PPM);
        assert_eq!(clock.local(c.now()), c.now());
    }
    assert_eq!(c.clock_spread(), 0.0);
}

#[test]
fn clock_rates_are_drawn_per_node_within_the_bound_and_apart_from_other_random_choices() {
    let drifting = cluster(11, SimOptions { nodes: 5, clock_drift: 0.05, ..SimOptions::default() });
    let again = cluster(11, SimOptions { nodes: 5, clock_drift: 0.05, ..SimOptions::default() });
    let plain = cluster(11, SimOptions { nodes: 5, ..SimOptions::default() });
    let rates = |c: &SimCluster| c.ids().iter().map(|&id| c.clock(id).map(|k| k.rate_ppm())).collect::<Vec<_>>();
    let drawn = rates(&drifting);
    assert_eq!(drawn, rates(&again), "the same seed draws the same rates");
    for rate in drawn.iter().flatten() {
        assert!((950_000..=1_050_000).contains(rate), "rate {rate} ppm is within ±5%");
    }
    assert!(drifting.clock_spread() > 0.0 && drifting.clock_spread() <= 0.1);
    // The rates come from a generator of their own: the simulation's stays where it is.
    assert_eq!(drifting.sim().random_u64(), plain.sim().random_u64());
}

#[test]
fn a_seed_with_drifting_and_jumping_clocks_replays_exactly() {
    let opts = SimOptions::for_seed(3).with_clock_faults(0.05);
    let first = run_seed(3, opts.clone()).unwrap_or_else(|f| panic!("{f}"));
    let second = run_seed(3, opts).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(first, second);
    assert!(first.clock_jumps > 0, "{first:?}");
    assert!(first.clock_spread > 0.0, "{first:?}");
}

#[test]
fn zero_drift_without_jumps_replays_the_seeds_own_run() {
    let own = run_seed(8, SimOptions::for_seed(8)).unwrap_or_else(|f| panic!("{f}"));
    let zero = SimOptions { clock_drift: 0.0, clock_jumps: false, ..SimOptions::for_seed(8) };
    assert_eq!(run_seed(8, zero).unwrap_or_else(|f| panic!("{f}")), own);
    assert_eq!((own.clock_jumps, own.clock_spread), (0, 0.0));
    // Drift alone changes the run, and injects no jumps.
    let drift = SimOptions { clock_drift: 0.05, ..SimOptions::for_seed(8) };
    let drifted = run_seed(8, drift).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(drifted.clock_jumps, 0);
    assert_ne!(drifted, own);
}

#[test]
fn a_clock_jump_past_the_election_timeout_makes_a_follower_campaign_at_once() {
    let mut opts = SimOptions::default();
    opts.config.pre_vote = false;
    opts.config.check_quorum = false;
    let mut c = cluster(21, opts);
    let leader = c.wait_for_leader(Duration::from_secs(3)).unwrap_or_else(|f| panic!("{f}"));
    let leader = leader.unwrap_or_else(|| panic!("a leader within 3 s"));
    c.run_for(Duration::from_millis(500)).unwrap_or_else(|f| panic!("{f}"));
    let term = max_term(&c);
    let follower = a_follower(&c, leader);
    assert!(c.jump_clock(follower, Duration::from_secs(1)));
    // Well within a heartbeat interval: only the jump can have fired its election timer.
    c.run_for(Duration::from_millis(5)).unwrap_or_else(|f| panic!("{f}"));
    assert!(max_term(&c) > term, "node {follower} campaigned after its clock jumped");
}

#[test]
fn with_pre_vote_and_check_quorum_a_followers_clock_jump_leaves_the_leader_in_place() {
    let mut c = cluster(21, SimOptions::default());
    let leader = c.wait_for_leader(Duration::from_secs(3)).unwrap_or_else(|f| panic!("{f}"));
    let leader = leader.unwrap_or_else(|| panic!("a leader within 3 s"));
    c.run_for(Duration::from_millis(500)).unwrap_or_else(|f| panic!("{f}"));
    let term = max_term(&c);
    let follower = a_follower(&c, leader);
    for _ in 0..5 {
        assert!(c.jump_clock(follower, Duration::from_secs(1)));
        c.run_for(Duration::from_millis(200)).unwrap_or_else(|f| panic!("{f}"));
    }
    assert_eq!(max_term(&c), term, "the pre-vote of node {follower} was refused");
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.node(leader).map(|r| r.status().role), Some(Role::Leader));
}

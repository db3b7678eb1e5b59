//! The core's counters ([`crate::Counters`]) move as the protocol does.

use super::*;

#[test]
fn an_election_counts_the_rounds_and_a_leader_change_on_every_node() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let won = c.core(1).counters();
    assert_eq!((won.pre_votes_started, won.elections_started, won.became_leader), (1, 1, 1), "{won:?}");
    for id in 1..=3 {
        assert_eq!(c.core(id).counters().leader_changes, 1, "node {id} learned of leader 1");
    }
    assert_eq!(c.core(2).counters().elections_started, 0);

    // Another leader: every node counts the change, and 2 its own election.
    c.elect(2);
    for id in 1..=3 {
        assert_eq!(c.core(id).counters().leader_changes, 2, "node {id} learned of leader 2");
    }
    assert_eq!(c.core(2).counters().became_leader, 1);
    assert_eq!(c.core(1).counters().became_leader, 1, "counters only grow");
}

#[test]
fn proposals_are_counted_when_appended_and_when_refused() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, cmds(0..3)).expect("the leader takes proposals");
    assert!(c.propose(2, vec![cmd(9)]).is_err(), "a follower does not append");
    c.deliver_all();
    assert_eq!(c.core(1).counters().proposals_appended, 3);
    assert_eq!(c.core(2).counters().proposals_refused_not_leader, 1);
    assert_eq!(c.core(2).counters().proposals_appended, 0);
}

#[test]
fn a_read_index_round_is_counted_on_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let before = c.core(1).counters().read_index_rounds;
    let now = c.now;
    for _ in 0..2 {
        c.node_mut(1).core.read_index(now).expect("the leader takes reads");
    }
    c.process(1);
    c.deliver_all();
    assert_eq!(c.core(1).counters().read_index_rounds, before + 1, "two reads queued together share one round");
}

//! Leadership transfer (thesis §3.10).

use super::*;

/// Asks leader `from` to hand over to `to`, and carries out its actions.
fn transfer(c: &mut Cluster, from: NodeId, to: NodeId) -> Result<(), TransferError> {
    let now = c.now;
    let r = c.node_mut(from).core.transfer_leadership(now, to);
    c.process(from);
    r
}

fn led_by_1() -> Cluster {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c
}

/// Thesis §3.10: the target, told to time out, campaigns at once without a pre-vote, and
/// the other voters grant its vote although they heard from the leader within the lease.
#[test]
fn timeout_now_skips_pre_vote_and_the_lease() {
    let mut c = led_by_1();
    let term = c.core(1).term();
    let pre_votes = c.core(2).counters().pre_votes_started;
    transfer(&mut c, 1, 2).expect("transfer starts");
    assert_eq!(c.queued(|m| m.body == MessageBody::TimeoutNow).len(), 1, "2 is up to date: told at once");
    c.deliver_all();
    assert_eq!(c.core(2).role(), Role::Leader, "node 2 won");
    assert_eq!(c.core(2).term(), term + 1);
    assert_eq!(c.core(2).counters().pre_votes_started, pre_votes, "no pre-vote");
    assert_eq!(c.core(1).role(), Role::Follower);
    assert_eq!(c.core(3).leader(), Some(2));
}

/// Thesis §3.10: the leader brings the target up to date before telling it to campaign.
#[test]
fn a_transfer_waits_for_the_target_to_catch_up() {
    let mut c = led_by_1();
    c.cut_link(1, 2);
    c.propose(1, cmds(0..3)).expect("leader");
    c.deliver_all();
    transfer(&mut c, 1, 2).expect("transfer starts");
    c.deliver_all();
    assert!(!c.delivered.iter().any(|m| m.body == MessageBody::TimeoutNow), "not while node 2 lacks entries");
    c.heal();
    c.run_for(ms(100));
    assert!(c.delivered.iter().any(|m| m.to == 2 && m.body == MessageBody::TimeoutNow));
    assert_eq!(c.core(2).role(), Role::Leader);
    assert_eq!(c.last(2), c.last(1), "the new leader holds everything the old one had");
}

/// Thesis §3.10: no proposals while leadership moves; callers are pointed at the target.
#[test]
fn proposals_are_refused_during_a_transfer() {
    let mut c = led_by_1();
    c.cut_link(1, 2);
    c.propose(1, cmds(0..1)).expect("leader");
    transfer(&mut c, 1, 2).expect("transfer starts");
    assert_eq!(c.propose(1, cmds(1..2)), Err(ProposeError::NotLeader(Some(2))));
    assert_eq!(c.change(1, ConfigChange::Remove { id: 3 }), Err(ConfigError::Transferring));
}

/// Thesis §3.10: a transfer that has not ended within an election timeout is given up
/// and the leader takes proposals again.
#[test]
fn a_transfer_aborts_after_an_election_timeout() {
    let mut c = led_by_1();
    c.isolate(2);
    transfer(&mut c, 1, 2).expect("transfer starts");
    assert_eq!(c.core(1).transferring_to(), Some(2));
    c.run_for(c.cfg.election_timeout_max + ms(10));
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).transferring_to(), None, "given up");
    assert_eq!(c.core(1).counters().transfers_aborted, 1);
    assert!(c.propose(1, cmds(0..1)).is_ok(), "proposals are taken again");
}

/// Only a voter of the configuration in effect can take over.
#[test]
fn a_transfer_to_a_non_voter_is_refused() {
    let mut c = led_by_1();
    assert_eq!(transfer(&mut c, 1, 9), Err(TransferError::NotAVoter(9)));
    assert_eq!(transfer(&mut c, 2, 3), Err(TransferError::NotLeader(Some(1))));
    assert_eq!(transfer(&mut c, 1, 1), Ok(()), "to itself: nothing to do");
    assert_eq!(c.core(1).transferring_to(), None);
}

//! Membership changes (thesis chapter 4): learners, single-server changes, joint
//! consensus, one change at a time, a removed leader, a removed server.

use super::*;

fn info(id: NodeId) -> NodeInfo {
    NodeInfo::new(format!("10.0.0.{id}:7000"))
}

fn voters(ids: &[NodeId]) -> ConfigChange {
    ConfigChange::SetVoters { voters: ids.iter().copied().collect() }
}

/// A 3-node cluster led by node 1 with its blank entry committed.
fn led_by_1() -> Cluster {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    assert!(c.core(1).may_change_membership());
    c
}

/// `led_by_1` plus empty nodes `ids` added as learners and caught up.
fn with_learners(ids: &[NodeId]) -> Cluster {
    let mut c = led_by_1();
    for &id in ids {
        c.add_empty_node(id);
        let index = c.change(1, ConfigChange::AddLearner { id, node: info(id) }).expect("a learner is added");
        c.deliver_all();
        assert!(c.commit(1) >= index);
    }
    c
}

/// Thesis §4.2.1: a learner gets the log, with the members' addresses, but its
/// acknowledgements never count toward commitment.
#[test]
fn a_learner_receives_the_log_but_never_counts_for_commitment() {
    let mut c = with_learners(&[4]);
    let m = c.core(4).membership().clone();
    assert!(m.learners.contains(&4) && !m.is_voter(4), "node 4 knows it is a learner: {m:?}");
    assert_eq!(m.nodes.get(&4), Some(&info(4)), "the address travels in the entry");
    assert_eq!(c.last(4), c.last(1), "the learner holds the whole log");

    // The leader and the learner alone are no quorum of {1, 2, 3}.
    c.cut_link(1, 2);
    c.cut_link(1, 3);
    let (index, _) = c.propose(1, cmds(0..1)).expect("leader");
    c.deliver_all();
    assert_eq!(c.last(4).index, index, "the learner acknowledged the entry");
    assert!(c.commit(1) < index, "a learner's acknowledgement counts for nothing");
    c.heal();
    c.run_for(ms(100));
    assert_eq!(c.commit(1), index);
}

/// Thesis §4.2.1: a learner never campaigns, however long it hears from no leader.
#[test]
fn a_learner_never_campaigns() {
    let mut c = with_learners(&[4]);
    c.isolate(1);
    c.run_for(ms(3_000));
    assert_eq!(c.core(4).role(), Role::Follower);
    assert_eq!(c.core(4).counters().pre_votes_started + c.core(4).counters().elections_started, 0);
    assert_ne!(c.core(2).leader(), Some(4));
}

/// Thesis §4.1 with the 2015 correction: a new leader makes no change before it has
/// committed an entry of its own term.
#[test]
fn a_change_waits_for_a_commit_in_the_leaders_term() {
    let mut c = Cluster::new(3);
    c.fire_timeout(1);
    c.deliver_where(is_vote_traffic);
    assert_eq!(c.core(1).role(), Role::Leader);
    // The blank entry of term 1 is not committed: the appends are still queued.
    assert!(c.commit(1) < c.last(1).index);
    assert_eq!(c.change(1, ConfigChange::AddLearner { id: 4, node: info(4) }), Err(ConfigError::NotReady));
    c.deliver_all();
    assert!(c.change(1, ConfigChange::AddLearner { id: 4, node: info(4) }).is_ok());
}

/// Thesis §4.1: one change at a time; the next may start once the last is committed.
#[test]
fn one_membership_change_at_a_time() {
    let mut c = led_by_1();
    c.add_empty_node(4);
    let first = c.change(1, ConfigChange::AddLearner { id: 4, node: info(4) }).expect("first change");
    assert_eq!(c.change(1, ConfigChange::AddLearner { id: 5, node: info(5) }), Err(ConfigError::InProgress));
    c.deliver_all();
    assert!(c.commit(1) >= first);
    assert!(c.change(1, ConfigChange::AddLearner { id: 5, node: info(5) }).is_ok());
}

/// Thesis §4.1: adding or removing one voter is one entry, never a joint configuration.
#[test]
fn a_single_server_change_is_one_entry() {
    let mut c = with_learners(&[4]);
    let index = c.change(1, voters(&[1, 2, 3, 4])).expect("promotion");
    assert!(!c.core(1).membership().is_joint());
    assert_eq!(c.core(1).membership().voters, [1, 2, 3, 4].into());
    assert!(c.core(1).membership().learners.is_empty(), "the learner became a voter");
    c.deliver_all();
    assert!(c.commit(1) >= index);
    assert_eq!(c.last(1).index, index, "no second entry follows a single-server change");
    // With four voters, the leader and one follower are no longer a quorum.
    c.cut_link(1, 3);
    c.cut_link(1, 4);
    let (i, _) = c.propose(1, cmds(0..1)).expect("leader");
    c.deliver_all();
    assert!(c.commit(1) < i);
}

/// Thesis §4.3: a change of several voters goes through C_old,new, where commitment
/// needs a majority of both sets, and the leader then appends C_new by itself.
#[test]
fn several_voters_change_through_a_joint_configuration() {
    let mut c = with_learners(&[4, 5]);
    // Lose the new voters' answers: only the old set can acknowledge.
    c.cut.insert((4, 1));
    c.cut.insert((5, 1));
    let joint = c.change(1, voters(&[1, 4, 5])).expect("joint change");
    let m = c.core(1).membership().clone();
    assert_eq!((m.voters.clone(), m.voters_outgoing.clone()), ([1, 4, 5].into(), Some([1, 2, 3].into())));
    c.deliver_all();
    assert!(c.commit(1) < joint, "a majority of C_old alone does not commit C_old,new");
    c.heal();
    c.run_for(ms(100));
    assert!(c.commit(1) > joint, "committed once C_new's majority answered");
    let last = c.log(1).last().cloned().expect("entries");
    let EntryPayload::Membership(final_config) = &last.payload else { panic!("C_new follows: {last:?}") };
    assert_eq!(final_config.voters, [1, 4, 5].into());
    assert!(!final_config.is_joint() && !final_config.contains(2) && !final_config.contains(3));
    assert!(c.commit(1) >= last.index, "C_new commits");
    assert!(c.core(1).may_change_membership());

    // Elections now need a majority of {1, 4, 5}: nodes 2 and 3 cannot elect anyone.
    c.isolate(1);
    c.run_for(ms(2_000));
    let leaders: Vec<_> = [4, 5].into_iter().filter(|&id| c.core(id).role() == Role::Leader).collect();
    assert_eq!(leaders.len(), 1, "one of the new voters leads");
    assert_ne!(c.core(2).role(), Role::Leader);
    assert_ne!(c.core(3).role(), Role::Leader);
}

/// Thesis §4.3: in C_old,new a candidate needs a majority of both sets.
#[test]
fn a_joint_configuration_needs_both_majorities_to_elect() {
    let mut c = with_learners(&[4, 5]);
    c.change(1, voters(&[1, 4, 5])).expect("joint change");
    // Everyone holds the joint entry; C_new is not appended: the new voters' answers
    // are lost, so the joint entry does not commit.
    c.cut.insert((4, 1));
    c.cut.insert((5, 1));
    c.deliver_all();
    assert!(c.core(4).membership().is_joint(), "{:?} {:?}", c.core(4).membership(), c.log(4).last());
    // Node 4 campaigns with only the new set reachable: 4 and 5 are a majority of
    // C_new, not of C_old.
    for id in [1, 2, 3] {
        c.isolate(id);
    }
    c.run_for(ms(2_000));
    assert_ne!(c.core(4).role(), Role::Leader);
    assert_ne!(c.core(5).role(), Role::Leader);
}

/// Thesis §4.2.2: a leader outside C_new leads until C_new commits, then hands over to
/// an up-to-date voter and steps down.
#[test]
fn a_leader_removed_from_the_configuration_steps_down_after_the_change_commits() {
    let mut c = led_by_1();
    let index = c.change(1, ConfigChange::Remove { id: 1 }).expect("removal");
    assert_eq!(c.core(1).role(), Role::Leader, "still leading while C_new is uncommitted");
    assert!(!c.core(1).membership().is_voter(1));
    c.deliver_all();
    assert!(c.commit(1) >= index);
    assert_eq!(c.core(1).role(), Role::Follower, "stepped down once C_new committed");
    assert!(c.delivered.iter().any(|m| m.from == 1 && m.body == MessageBody::TimeoutNow), "handed over");
    let leader = [2, 3].into_iter().find(|&id| c.core(id).role() == Role::Leader);
    assert!(leader.is_some(), "the handover elected a new leader at once");
    let campaigns = c.core(1).counters().pre_votes_started;
    c.run_for(ms(2_000));
    assert_ne!(c.core(1).role(), Role::Leader, "a removed node never campaigns");
    assert_eq!(c.core(1).counters().pre_votes_started, campaigns);
}

/// A leader deposed before its own removal commits may hold the only up-to-date log:
/// with voters {1, 2} and C_new = {2} on node 1 alone, node 2 cannot win without node
/// 1's vote. Node 1 campaigns under C_new (needing node 2, not counting itself), commits
/// the removal and hands over. (Found by the simulator's membership nemesis, seed 155:
/// without it neither node ever led again.)
#[test]
fn a_leader_deposed_before_its_removal_commits_still_finishes_it() {
    let mut c = led_by_1();
    c.change(1, ConfigChange::Remove { id: 3 }).expect("removal of 3");
    c.deliver_all();
    c.cut_link(1, 2);
    let index = c.change(1, ConfigChange::Remove { id: 1 }).expect("removal of 1");
    c.run_for(ms(1_000));
    assert_ne!(c.core(1).role(), Role::Leader, "no contact with a quorum: stepped down");
    assert!(c.commit(1) < index && !c.core(1).membership().is_voter(1));
    c.heal();
    c.run_for(ms(3_000));
    assert_eq!(c.core(2).role(), Role::Leader, "node 2 leads after the handover");
    assert!(c.commit(2) >= index, "the removal committed");
    assert_eq!(c.core(2).membership().voters, [2].into());
    assert_ne!(c.core(1).role(), Role::Leader);
}

/// Thesis §4.2.3: a removed server that never learned of its removal campaigns, but
/// pre-vote and the lease keep it from disturbing the leader.
#[test]
fn a_removed_server_cannot_disrupt_the_cluster() {
    let mut c = led_by_1();
    c.isolate(3);
    let index = c.change(1, ConfigChange::Remove { id: 3 }).expect("removal");
    c.deliver_all();
    assert!(c.commit(1) >= index, "1 and 2 are a majority of {{1, 2}}");
    c.heal();
    let term = c.core(1).term();
    c.run_for(ms(3_000));
    assert!(c.core(3).counters().pre_votes_started > 0, "node 3 tried");
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!(c.core(1).term(), term, "the leader's term did not move");
}

/// Changes that cannot be made are refused with the reason.
#[test]
fn invalid_membership_changes_are_refused() {
    let mut c = led_by_1();
    assert_eq!(c.change(2, ConfigChange::Remove { id: 3 }), Err(ConfigError::NotLeader(Some(1))));
    assert_eq!(c.change(1, voters(&[])), Err(ConfigError::NoVoters));
    assert_eq!(c.change(1, voters(&[1, 2, 9])), Err(ConfigError::UnknownNode(9)));
    assert_eq!(c.change(1, voters(&[1, 2, 3])), Err(ConfigError::NoChange));
    assert_eq!(c.change(1, ConfigChange::Remove { id: 9 }), Err(ConfigError::NoChange));
    assert_eq!(c.change(1, ConfigChange::AddLearner { id: 0, node: info(0) }), Err(ConfigError::InvalidId(0)));
    let last = c.last(1);
    assert_eq!(c.log(1).len() as u64, last.index, "nothing was appended");
}

/// Thesis §4.2.2: a member being removed is still to be reached (its address stays in
/// `reachable_membership`, which the driver hands the network) until the entry that
/// removes it commits, so that a leader removing itself can still commit that entry.
#[test]
fn a_member_being_removed_stays_reachable_until_its_removal_commits() {
    let mut c = with_learners(&[4]);
    assert_eq!(c.core(1).reachable_membership().nodes.get(&4), Some(&info(4)));
    let before = c.core(2).configs_generation();
    c.change(1, ConfigChange::Remove { id: 4 }).expect("removal");
    c.deliver_where(|m| matches!(m.body, crate::message::MessageBody::AppendEntries { .. }));
    for id in [1, 2] {
        let m = c.core(id).reachable_membership();
        assert!(!m.contains(4) && !c.core(id).membership().nodes.contains_key(&4), "node {id}: out of C_new");
        assert_eq!(m.nodes.get(&4), Some(&info(4)), "node {id}: still reached while uncommitted");
    }
    assert_ne!(c.core(2).configs_generation(), before, "the network is told again");
    c.deliver_all();
    for id in [1, 2, 3] {
        assert!(c.commit(id) >= c.core(id).config_index());
        assert!(!c.core(id).reachable_membership().nodes.contains_key(&4), "node {id}: dropped once committed");
    }
}

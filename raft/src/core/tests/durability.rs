//! Durability gating: nothing is said before what it depends on is durable; the leader writes in parallel with replication (paper §5.1 figure 2, thesis §10.2.1; design invariant 5).

use super::*;

#[test]
fn vote_response_held_until_hard_state_durable() {
    let mut c = Cluster::new(3);
    c.hold(2);
    c.fire_timeout(1);
    c.deliver_where(is_pre_vote_traffic);
    assert_eq!(c.core(1).role(), Role::Candidate, "a pre-vote answer needs nothing durable");

    c.deliver_one(|m| m.to == 2 && matches!(m.body, MessageBody::RequestVote { .. }));
    assert_eq!(c.core(2).status().voted_for, Some(1));
    assert!(c.queued(|m| m.from == 2).is_empty(), "the vote must not leave before it is durable");
    assert_eq!(
        c.node(2).store.unacked.back().and_then(|r| r.hard_state),
        Some(HardState { term: 1, voted_for: Some(1) })
    );

    c.ack(2);
    let r = take_reply(&mut c, 2, 1);
    assert_eq!((r.term, vote_granted(&r)), (1, Some(true)));
}

#[test]
fn append_ack_held_until_entries_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.hold(2);
    let (index, _) = c.propose(1, vec![cmd(0)]).unwrap();
    c.deliver_one(|m| m.to == 2 && is_append(m));
    assert_eq!(c.last(2).index, index, "the follower holds the entry in memory");
    assert!(c.queued(|m| m.from == 2).is_empty(), "but must not acknowledge it before it is durable");

    c.ack(2);
    assert_eq!(c.node(2).store.entries.last().map(|e| e.index), Some(index));
    let r = take_reply(&mut c, 2, 1);
    assert_eq!(r.body, MessageBody::AppendEntriesResponse { success: true, index, hint: None });
}

#[test]
fn leader_does_not_count_itself_before_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let before = c.commit(1);
    c.hold(1);
    let (index, _) = c.propose(1, vec![cmd(0)]).unwrap();

    // One follower's copy plus the leader's in-memory copy is not a durable majority.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.core(1).status().match_index[&2], index);
    assert_eq!(c.commit(1), before);

    // Two durable follower copies are a majority without the leader's.
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!(c.commit(1), index);
    assert!(
        c.node(1).applied.iter().all(|e| e.index < index),
        "the leader applies only what its own log holds durably"
    );

    c.release(1);
    assert_eq!(c.node(1).applied.last().map(|e| e.index), Some(index));

    // The other way round: the leader's durable copy and one follower's make a majority.
    let (index, _) = c.propose(1, vec![cmd(1)]).unwrap();
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.commit(1), index);
}

#[test]
fn leader_sends_appends_before_its_own_write_is_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.hold(1);
    let (index, _) = c.propose(1, vec![cmd(0)]).unwrap();
    let unacked = &c.node(1).store.unacked;
    assert_eq!(unacked.len(), 1);
    assert_eq!(unacked[0].entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![index]);
    assert!(c.node(1).store.entries.len() < index as usize, "not durable yet");
    let appends = c.queued(is_append_with_entries);
    assert_eq!(appends.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for m in appends {
        assert_eq!(appended_indexes(&m), vec![index]);
    }
}

//! The leader lease that ignores disruptive candidates, and check-quorum (thesis §6.2, §4.2.3).

use super::*;

#[test]
fn follower_with_live_leader_ignores_vote_requests() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let contact = c.now;
    let min = config().election_timeout_min;
    let last = (c.last(2).index, c.last(2).term);

    c.advance(min - ms(1));
    c.inject(request_vote(2, 3, 2, last));
    assert!(c.queue.is_empty(), "no answer while the leader is live");
    assert_eq!((c.core(3).term(), c.core(3).leader()), (1, Some(1)), "term unchanged");

    // The leader itself ignores it too.
    c.inject(request_vote(2, 1, 2, last));
    assert!(c.queue.is_empty());
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, 1));

    // Once the leader has been silent for the minimum election timeout, the request counts.
    c.now = contact.add(min);
    c.inject(request_vote(2, 3, 2, last));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, vote_granted(&r)), (2, Some(true)));
    assert_eq!(c.core(3).leader(), None);
}

#[test]
fn pre_vote_refused_while_leader_is_live() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let contact = c.now;
    let last = (c.last(2).index, c.last(2).term);

    c.advance(ms(100));
    c.inject(pre_vote(2, 3, 2, last));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, r.body), (1, MessageBody::PreVoteResponse { granted: false }));
    assert_eq!(c.core(3).term(), 1);

    let before = c.core(3).status();
    c.now = contact.add(config().election_timeout_min);
    c.inject(pre_vote(2, 3, 2, last));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, r.body), (2, MessageBody::PreVoteResponse { granted: true }));
    let st = c.core(3).status();
    assert_eq!(
        (st.term, st.voted_for, st.leader),
        (1, before.voted_for, Some(1)),
        "granting a pre-vote changes nothing"
    );
}

#[test]
fn partitioned_follower_does_not_disrupt_leader_on_rejoin() {
    let mut c = Cluster::new(3);
    c.elect(1);
    // Node 2 loses the leader but still reaches node 3, which keeps hearing the leader.
    c.cut_link(1, 2);
    c.run_for(ms(2_000));
    assert_eq!(c.core(2).term(), 1, "pre-votes refused by node 3 never raise node 2's term");
    assert_ne!(c.core(2).role(), Role::Leader);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, 1));

    c.heal();
    c.run_for(ms(500));
    for id in 1..=3 {
        assert_eq!((c.core(id).term(), c.core(id).leader()), (1, Some(1)), "node {id}");
    }
}

#[test]
fn leader_steps_down_without_quorum_contact() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let max = config().election_timeout_max;

    // With a quorum answering, the leader keeps its term indefinitely.
    c.run_for(ms(3_000));
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Leader, 1));

    // Cut off from both followers, it notices within two check-quorum periods.
    c.isolate(1);
    let cut_at = c.now;
    let mut stepped_down_at = None;
    while c.now < cut_at.add(max * 3) {
        c.run_for(ms(10));
        if c.core(1).role() != Role::Leader {
            stepped_down_at = Some(c.now);
            break;
        }
    }
    let at = stepped_down_at.expect("an isolated leader must step down");
    assert!(at <= cut_at.add(max * 2).add(ms(10)), "stepped down only after {:?}", at.saturating_since(cut_at));
    assert_eq!(c.core(1).term(), 1, "stepping down does not change the term");
    assert_eq!(c.core(1).leader(), None);
    assert_eq!(c.propose(1, vec![cmd(0)]), Err(ProposeError::NotLeader(None)));
}

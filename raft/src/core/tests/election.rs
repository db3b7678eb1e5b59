//! Leader election: term observation, pre-vote, votes and the election restriction (paper §5.1, §5.2, §5.4.1; thesis §9.6).

use super::*;

#[test]
fn follower_starts_pre_vote_after_election_timeout() {
    let mut c = Cluster::new(3);
    let cfg = config();
    let deadline = c.core(1).next_deadline();
    assert!(deadline >= Instant::ZERO.add(cfg.election_timeout_min));
    assert!(deadline < Instant::ZERO.add(cfg.election_timeout_max));

    c.now = Instant::from_nanos(deadline.as_nanos() - 1);
    c.tick(1);
    assert_eq!(c.core(1).role(), Role::Follower, "nothing happens before the timeout");
    assert!(c.queue.is_empty());

    c.now = deadline;
    c.tick(1);
    assert_eq!(c.core(1).role(), Role::PreCandidate);
    let st = c.core(1).status();
    assert_eq!((st.term, st.voted_for), (0, None), "a pre-candidate keeps its term and vote");
    assert!(c.node(1).store.requests.is_empty(), "a pre-vote round persists nothing");
    let sent = c.queued(|m| m.from == 1);
    assert_eq!(sent.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for m in sent {
        assert_eq!(m.term, 1, "pre-votes carry the prospective term");
        assert_eq!(m.body, MessageBody::PreVote { last_log_index: 1, last_log_term: 0 });
    }
}

#[test]
fn pre_vote_does_not_change_terms() {
    let mut c = Cluster::new(3);
    c.fire_timeout(1);
    assert_eq!(c.deliver_where(|m| matches!(m.body, MessageBody::PreVote { .. })), 2);
    for id in [2, 3] {
        let st = c.core(id).status();
        assert_eq!((st.term, st.voted_for, st.role), (0, None, Role::Follower), "node {id}");
        assert!(c.node(id).store.requests.is_empty(), "node {id} persisted something for a pre-vote");
    }
    let replies = c.queued(|m| m.to == 1);
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!((r.term, &r.body), (1, &MessageBody::PreVoteResponse { granted: true }));
    }
    assert_eq!(c.core(1).term(), 0, "the pre-candidate's own term is unchanged until it wins");

    // A refused pre-vote changes nobody's term either: a candidate with a stale log asks
    // for a far-future term.
    c.inject(pre_vote(3, 2, 9, (0, 0)));
    let r = take_reply(&mut c, 2, 3);
    assert_eq!(r.body, MessageBody::PreVoteResponse { granted: false });
    assert_eq!((c.core(2).term(), c.core(3).term()), (0, 0));

    // Winning the pre-vote starts the real election in the next term.
    c.deliver_one(|m| m.to == 1 && is_pre_vote_traffic(m));
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Candidate, 1));
}

#[test]
fn candidate_with_majority_becomes_leader_and_appends_blank_entry() {
    let mut c = Cluster::new(3);
    c.fire_timeout(1);
    c.deliver_where(is_pre_vote_traffic);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Candidate, 1));

    // Only node 2 hears the vote request; its vote plus the candidate's own is a majority.
    c.deliver_one(|m| m.to == 2 && matches!(m.body, MessageBody::RequestVote { .. }));
    assert_eq!(c.core(1).role(), Role::Candidate, "one vote is not a majority");
    c.deliver_one(|m| m.from == 2 && m.to == 1);
    assert_eq!(c.core(1).role(), Role::Leader);
    assert_eq!((c.core(1).term(), c.core(1).leader()), (1, Some(1)));

    let expected = blank(2, 1);
    assert_eq!(c.core(1).entry(2), Some(&expected), "a new leader appends a blank entry of its term");
    let appends = c.queued(is_append);
    assert_eq!(appends.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    for m in &appends {
        let MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, .. } = &m.body else { unreachable!() };
        assert_eq!((*prev_log_index, *prev_log_term, entries.clone()), (1, 0, vec![expected.clone()]));
    }

    // Node 3, which never saw the vote request in time, follows the leader's appends;
    // the blank entry commits everything before it.
    c.deliver_all();
    for id in 1..=3 {
        assert_eq!((c.core(id).term(), c.core(id).leader()), (1, Some(1)), "node {id}");
        assert_eq!(c.commit(id), 2, "node {id}");
    }
}

#[test]
fn candidate_increments_term_and_votes_for_itself() {
    let mut c = Cluster::with_config(3, Config { pre_vote: false, ..config() });
    c.hold(1);
    c.fire_timeout(1);
    let st = c.core(1).status();
    assert_eq!((st.role, st.term, st.voted_for), (Role::Candidate, 1, Some(1)));
    let reqs = &c.node(1).store.unacked;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].hard_state, Some(HardState { term: 1, voted_for: Some(1) }));
    assert!(c.queue.is_empty(), "vote requests wait for the new term and self-vote to be durable");

    c.ack(1);
    assert_eq!(c.node(1).store.hs, HardState { term: 1, voted_for: Some(1) });
    let requests = c.queued(|m| m.from == 1);
    assert_eq!(requests.len(), 2);
    for m in requests {
        assert_eq!(m.term, 1);
        assert_eq!(m.body, MessageBody::RequestVote { last_log_index: 1, last_log_term: 0, transfer: false });
    }
}

#[test]
fn vote_granted_at_most_once_per_term() {
    let mut c = Cluster::new(3);
    c.inject(request_vote(1, 3, 1, (1, 0)));
    assert_eq!(vote_granted(&take_reply(&mut c, 3, 1)), Some(true));
    assert_eq!(c.core(3).status().voted_for, Some(1));

    c.inject(request_vote(2, 3, 1, (1, 0)));
    let r = take_reply(&mut c, 3, 2);
    assert_eq!((r.term, vote_granted(&r)), (1, Some(false)), "second candidate of the same term is refused");
    assert_eq!(c.core(3).status().voted_for, Some(1));
    assert_eq!(c.node(3).store.hs, HardState { term: 1, voted_for: Some(1) }, "the vote is durable");

    // A retransmitted request from the same candidate gets the same answer.
    c.inject(request_vote(1, 3, 1, (1, 0)));
    assert_eq!(vote_granted(&take_reply(&mut c, 3, 1)), Some(true));

    // A new term brings a new vote.
    c.inject(request_vote(2, 3, 2, (1, 0)));
    assert_eq!(vote_granted(&take_reply(&mut c, 3, 2)), Some(true));
    assert_eq!(c.node(3).store.hs, HardState { term: 2, voted_for: Some(2) });
}

#[test]
fn vote_refused_to_candidate_with_stale_log() {
    let default = (hard_state(0), vec![bootstrap_entry(3)]);
    // Node 3's log ends at index 3, term 2.
    let logs = vec![default.clone(), default, (hard_state(2), log_with_terms(3, &[1, 2]))];
    let mut c = Cluster::with_logs(config(), logs);

    let cases = [
        (3, (5, 1), false, "longer log, older last term"),
        (4, (2, 2), false, "same last term, shorter log"),
        (5, (3, 2), true, "identical last entry"),
        (6, (2, 3), true, "newer last term wins over length"),
    ];
    for (term, last, granted, why) in cases {
        c.inject(request_vote(1, 3, term, last));
        let r = take_reply(&mut c, 3, 1);
        assert_eq!(vote_granted(&r), Some(granted), "{why}");
        assert_eq!(r.term, term, "{why}: the voter adopts the candidate's term either way");
        assert_eq!(c.core(3).status().voted_for, granted.then_some(1), "{why}");
    }
}

#[test]
fn higher_term_message_makes_leader_step_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.inject(Message { from: 2, to: 1, term: 5, body: MessageBody::HeartbeatResponse { ctx: 0 } });
    let st = c.core(1).status();
    assert_eq!((st.role, st.term, st.voted_for, st.leader), (Role::Follower, 5, None, None));
    assert_eq!(c.node(1).store.hs, hard_state(5), "the new term is persisted");
    assert_eq!(c.propose(1, vec![cmd(0)]), Err(ProposeError::NotLeader(None)));

    // An append from a leader of a newer term makes the node follow that leader.
    let mut c = Cluster::new(3);
    c.elect(1);
    let last = c.last(1);
    c.inject(append(2, 1, 3, (last.index, last.term), vec![], last.index));
    assert_eq!((c.core(1).role(), c.core(1).term(), c.core(1).leader()), (Role::Follower, 3, Some(2)));
    let r = take_reply(&mut c, 1, 2);
    assert_eq!(r.term, 3);
    assert!(matches!(r.body, MessageBody::AppendEntriesResponse { success: true, .. }));
}

#[test]
fn candidate_yields_to_leader_of_its_term() {
    let mut c = Cluster::with_config(3, Config { pre_vote: false, ..config() });
    c.fire_timeout(1);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Candidate, 1));
    c.take_where(|_| true);
    // Node 2 won term 1 with node 3's vote; its first append reaches node 1.
    c.inject(append(2, 1, 1, (1, 0), vec![blank(2, 1)], 0));
    assert_eq!((c.core(1).role(), c.core(1).term(), c.core(1).leader()), (Role::Follower, 1, Some(2)));
    assert_eq!(c.last(1), LogId { term: 1, index: 2 });
}

#[test]
fn stale_term_append_is_answered_with_current_term() {
    let default = (hard_state(0), vec![bootstrap_entry(3)]);
    let mut c = Cluster::with_logs(config(), vec![default.clone(), default, (hard_state(5), vec![bootstrap_entry(3)])]);

    c.inject(append(1, 3, 3, (1, 0), vec![blank(2, 3)], 2));
    let r = take_reply(&mut c, 3, 1);
    assert_eq!(r.term, 5);
    assert!(matches!(r.body, MessageBody::AppendEntriesResponse { success: false, .. }));
    assert_eq!(c.last(3).index, 1, "the stale append is not applied");
    assert_eq!((c.core(3).term(), c.core(3).leader()), (5, None), "nor does its sender become leader");

    c.inject(Message { from: 1, to: 3, term: 3, body: MessageBody::Heartbeat { commit: 1, ctx: 0 } });
    let r = take_reply(&mut c, 3, 1);
    assert_eq!(r.term, 5, "a stale heartbeat gets the current term too");
    assert_eq!(c.commit(3), 0);

    // The stale leader learns the newer term from that answer and steps down.
    let mut c = Cluster::new(3);
    c.elect(1);
    c.inject(request_vote(2, 3, 5, (c.last(3).index, c.last(3).term)));
    // Node 3 ignored it while the leader was live; move past the lease and retry.
    c.advance(config().election_timeout_min);
    c.inject(request_vote(2, 3, 5, (c.last(3).index, c.last(3).term)));
    c.take_where(|_| true);
    assert_eq!(c.core(3).term(), 5);
    c.propose(1, vec![cmd(0)]).unwrap();
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!((c.core(1).role(), c.core(1).term()), (Role::Follower, 5));
}

#[test]
fn split_vote_retries_with_new_term() {
    let mut c = Cluster::new(3);
    c.isolate(3);
    // Both time out together and grant each other's pre-vote before either asks for
    // real votes.
    c.now = c.core(1).next_deadline().max(c.core(2).next_deadline());
    c.tick(1);
    c.tick(2);
    c.deliver_where(|m| matches!(m.body, MessageBody::PreVote { .. }));
    c.deliver_where(|m| matches!(m.body, MessageBody::PreVoteResponse { .. }));
    for id in [1, 2] {
        let st = c.core(id).status();
        assert_eq!((st.role, st.term, st.voted_for), (Role::Candidate, 1, Some(id)), "node {id}");
    }
    // Each has voted for itself, so each refuses the other: nobody wins term 1.
    c.deliver_all();
    for id in [1, 2] {
        assert_eq!((c.core(id).role(), c.core(id).term()), (Role::Candidate, 1), "node {id}");
    }
    assert_ne!(c.core(1).next_deadline(), c.core(2).next_deadline(), "randomized timeouts break the tie");

    // The first to time out again retries in a new term and wins it.
    let first = if c.core(1).next_deadline() < c.core(2).next_deadline() { 1 } else { 2 };
    c.fire_timeout(first);
    c.deliver_all();
    assert_eq!((c.core(first).role(), c.core(first).term()), (Role::Leader, 2));
    let other = 3 - first;
    assert_eq!((c.core(other).role(), c.core(other).term(), c.core(other).leader()), (Role::Follower, 2, Some(first)));
}

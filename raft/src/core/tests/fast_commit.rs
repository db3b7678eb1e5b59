//! Not in the paper: commit news and leader durability notices (`core/fast_commit.rs`).

use super::*;

#[test]
fn commit_news_to_a_replicating_follower_goes_unanswered() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, cmds(0..3)).unwrap();
    // The appends and their answers: the leader commits and tells the followers.
    c.deliver_where(|m| {
        matches!(m.body, MessageBody::AppendEntries { .. } | MessageBody::AppendEntriesResponse { .. })
    });
    let commit = c.commit(1);
    assert_eq!(commit, c.last(1).index);
    let notices = c.queued(|m| matches!(m.body, MessageBody::Commit { .. }));
    assert!(!notices.is_empty(), "the followers hear of the commit");
    for n in &notices {
        assert!(matches!(n.body, MessageBody::Commit { leader_commit, .. } if leader_commit == commit), "{n:?}");
    }
    c.deliver_where(|m| matches!(m.body, MessageBody::Commit { .. }));
    assert_eq!((c.commit(2), c.commit(3)), (commit, commit));
    assert!(c.queued(|m| m.from != 1).is_empty(), "no answer to commit news: {:?}", c.queued(|_| true));
}

#[test]
fn commit_news_failing_the_consistency_check_is_rejected() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let (last, commit, term) = (c.last(2), c.commit(2), c.core(1).term());
    let beyond = last.index + 5;
    c.inject(Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::Commit { prev_log_index: beyond, prev_log_term: term, leader_commit: beyond },
    });
    let r = take_reply(&mut c, 2, 1);
    assert!(matches!(r.body, MessageBody::AppendEntriesResponse { success: false, .. }), "{r:?}");
    assert_eq!(c.commit(2), commit, "the commit index does not move past the follower's log");
}

#[test]
fn a_follower_commits_what_it_and_the_leader_hold_durably_in_a_three_voter_cluster() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.hold(2);
    c.propose(1, cmds(0..2)).unwrap();
    let last = c.last(1).index;
    // The leader's own write is durable at once; it says so to the voters.
    let notices = c.queued(|m| matches!(m.body, MessageBody::Durable { .. }));
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices.iter().all(|m| matches!(m.body, MessageBody::Durable { index, .. } if index == last)));
    // Node 2 gets the entries and the notice, nothing from node 3, no commit news.
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. } | MessageBody::Durable { .. }));
    assert!(c.commit(2) < last, "not durable on node 2 yet: no majority");
    c.release(2);
    assert_eq!(c.commit(2), last, "node 2 and the leader hold it durably: a majority of 3");
    assert_eq!(c.node(2).applied.last().map(|e| e.index), Some(last));
    assert!(c.commit(1) < last, "the leader has not heard of it yet");
}

#[test]
fn leader_durability_is_not_announced_where_leader_and_one_follower_are_no_majority() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..1)).unwrap();
    assert!(c.queued(|m| matches!(m.body, MessageBody::Durable { .. })).is_empty());
    // Nor does a follower of five take a notice as a majority.
    let (term, last) = (c.core(1).term(), c.last(1).index);
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. }));
    c.inject(Message { from: 1, to: 2, term, body: MessageBody::Durable { index: last, config_index: 1 } });
    assert!(c.commit(2) < last);
}

#[test]
fn leader_durability_in_an_older_configuration_commits_nothing() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.hold(1);
    c.propose(1, cmds(0..1)).unwrap();
    let (term, last) = (c.core(1).term(), c.last(1).index);
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. }));
    // A notice naming a configuration entry other than node 2's latest one.
    c.inject(Message { from: 1, to: 2, term, body: MessageBody::Durable { index: last, config_index: last } });
    assert!(c.commit(2) < last, "configurations differ: no commit");
}

#[test]
fn follower_paused_when_commit_advanced_still_learns_it_without_a_heartbeat() {
    let mut c = Cluster::with_config(3, windowed_config());
    c.elect(1);
    c.propose(1, cmds(0..10)).unwrap();
    // Node 2's acknowledgements commit everything while node 3's window is full, so the
    // commit broadcast skips node 3; its appends carry the old commit index.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.commit(1), 12);
    // The leader's durability notices would let node 3 work the commit out alone; this
    // test is about the leader telling it.
    c.take_where(|m| matches!(m.body, MessageBody::Durable { .. }));
    for m in c.queued(|m| m.to == 3) {
        assert!(matches!(m.body, MessageBody::AppendEntries { leader_commit: 2, .. }), "{m:?}");
    }
    // Node 3's acknowledgements bring nothing new to send, yet it must hear of the commit.
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!(c.commit(3), 12);
    assert_eq!(c.node(3).applied, c.log(3));
}

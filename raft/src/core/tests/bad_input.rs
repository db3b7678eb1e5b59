//! Malformed or hostile messages are dropped without a panic or a reply (design invariant 8).

use super::*;

#[test]
fn malformed_appends_are_dropped_without_panic_or_reply() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.core(2).term();
    let last = c.last(2);
    let gap = vec![blank(last.index + 1, term), blank(last.index + 3, term)];
    let decreasing = vec![blank(last.index + 1, term), blank(last.index + 2, term - 1)];
    let future_term = vec![blank(last.index + 1, term + 5)];
    let overflow = vec![blank(0, term)];
    for (prev, entries) in [
        ((last.index, last.term), gap),
        ((last.index, last.term), decreasing),
        ((last.index, last.term), future_term),
        ((u64::MAX, term), overflow),
    ] {
        c.take_where(|_| true);
        c.inject(append(1, 2, term, prev, entries, 0));
        assert!(c.queued(|m| m.from == 2).is_empty(), "no answer to a malformed append");
        assert_eq!(c.last(2), last, "the log is untouched");
    }
    // The node still works.
    c.propose(1, vec![cmd(1)]).unwrap();
    c.deliver_all();
    assert_eq!(c.last(2).index, last.index + 1);
}

#[test]
fn acknowledgement_beyond_the_leaders_log_is_ignored() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let (term, commit) = (c.core(1).term(), c.commit(1));
    c.take_where(|_| true);
    let bogus = MessageBody::AppendEntriesResponse { success: true, index: 1_000_000, hint: None };
    c.inject(Message { from: 2, to: 1, term, body: bogus.clone() });
    c.inject(Message { from: 3, to: 1, term, body: bogus });
    assert_eq!(c.commit(1), commit, "a claim beyond the log commits nothing");
    assert!(c.core(1).status().match_index.get(&2).copied().unwrap_or(0) <= c.last(1).index);
}

#[test]
fn messages_with_absurd_terms_or_senders_are_dropped() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let before = (c.core(2).term(), c.core(2).leader());
    c.take_where(|_| true);
    c.inject(request_vote(3, 2, u64::MAX, (u64::MAX, u64::MAX)));
    c.inject(pre_vote(3, 2, u64::MAX, (1, 1)));
    c.inject(Message { from: 2, to: 2, term: before.0 + 1, body: MessageBody::Heartbeat { commit: 0, ctx: 0 } });
    c.inject(Message { from: 0, to: 2, term: before.0 + 1, body: MessageBody::Heartbeat { commit: 0, ctx: 0 } });
    assert_eq!((c.core(2).term(), c.core(2).leader()), before);
    assert!(c.queued(|m| m.from == 2).is_empty());
}

#[test]
fn duplicate_and_reordered_appends_are_harmless() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for round in 0..3 {
        c.propose(1, vec![cmd(round)]).unwrap();
    }
    // Three appends to node 2 (indexes 3, 4 and 5), delivered newest first, then all
    // of them again.
    let to_2 = c.take_where(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(to_2.iter().map(appended_indexes).collect::<Vec<_>>(), vec![vec![3], vec![4], vec![5]]);
    for m in to_2.iter().rev().chain(to_2.iter()) {
        c.inject(m.clone());
        c.deliver_all();
    }
    c.deliver_all();
    for id in 1..=3 {
        assert_eq!(c.log(id), c.log(1), "node {id}");
        assert_eq!(c.commit(id), 5, "node {id}");
        assert_eq!(c.node(id).store.entries, c.log(1), "node {id}'s store");
    }
    assert!(c.node(2).store.requests.iter().all(|r| r.truncate_from.is_none()), "matching entries never truncated");

    // An old append covering only a prefix leaves the rest of the log alone.
    let old = to_2[0].clone();
    c.inject(old);
    assert_eq!(c.last(2).index, 5);
    c.deliver_all();
    assert_eq!(c.core(1).status().match_index[&2], 5, "a stale acknowledgement does not lower match");
    assert_eq!(c.commit(2), 5);
}

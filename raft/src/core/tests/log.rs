//! The local log: truncating a conflicting suffix, applying in order, restoring from the store (paper §5.3, §5.5).

use super::*;

#[test]
fn restart_restores_term_vote_and_log_from_the_store() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, cmds(0..3)).unwrap();
    c.deliver_all();
    let before = (c.core(2).term(), c.core(2).status().voted_for, c.log(2));
    c.restart(2);
    assert_eq!((c.core(2).term(), c.core(2).status().voted_for, c.log(2)), before);
    // The restarted node rejoins and catches up on its commit index and applying.
    c.fire_timeout(1);
    c.deliver_all();
    assert_eq!(c.commit(2), 5);
    assert_eq!(c.node(2).applied, c.log(2));
}

#[test]
fn conflicting_suffix_is_truncated_and_replaced() {
    let default = (hard_state(3), vec![bootstrap_entry(3)]);
    let logs = vec![default.clone(), (hard_state(3), log_with_terms(3, &[1, 2, 2])), default];
    let mut c = Cluster::with_logs(config(), logs);
    let requests_before = c.node(2).store.requests.len();

    // Leader of term 3 has index 2 (term 1) in common, then index 3 of term 3.
    let kept = c.log(2)[1].clone();
    c.inject(append(1, 2, 3, (2, 1), vec![blank(3, 3)], 0));
    let r = take_reply(&mut c, 2, 1);
    assert_eq!(r.body, MessageBody::AppendEntriesResponse { success: true, index: 3, hint: None });
    assert_eq!(c.terms(2), vec![0, 1, 3]);
    assert_eq!(c.log(2)[1], kept);

    let req = &c.node(2).store.requests[requests_before];
    assert_eq!(req.truncate_from, Some(3), "the store drops the conflicting suffix");
    assert_eq!(req.entries, vec![blank(3, 3)]);
    assert_eq!(c.node(2).store.entries, c.log(2));

    // The same append again: nothing to truncate or write.
    c.inject(append(1, 2, 3, (2, 1), vec![blank(3, 3)], 0));
    take_reply(&mut c, 2, 1);
    assert!(c.node(2).store.requests[requests_before + 1..].iter().all(|r| r.truncate_from.is_none()));
    assert_eq!(c.terms(2), vec![0, 1, 3]);
}

#[test]
fn apply_emits_committed_entries_in_order_once() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for round in 0..5 {
        c.propose(1, cmds(round * 3..round * 3 + 3)).unwrap();
        // Duplicate every message once: applying must not repeat.
        let dup: Vec<Message> = c.queue.iter().cloned().collect();
        c.queue.extend(dup);
        c.deliver_all();
    }
    c.fire_timeout(1);
    c.deliver_all();
    for id in 1..=3 {
        let commit = c.commit(id);
        assert_eq!(commit, 17, "node {id}");
        assert_eq!(c.node(id).applied, c.log(id), "node {id} applied its whole log exactly once, in order");
    }

    // A follower applies only what its own log holds durably, even once it knows the
    // entry committed.
    c.hold(2);
    let (index, _) = c.propose(1, vec![cmd(99)]).unwrap();
    c.deliver_all();
    c.fire_timeout(1);
    c.deliver_all();
    assert_eq!(c.commit(2), index);
    assert_eq!(c.node(2).applied.last().map(|e| e.index), Some(index - 1));
    c.release(2);
    assert_eq!(c.node(2).applied.last().map(|e| e.index), Some(index));
    assert_eq!(c.node(2).applied, c.log(2));
}

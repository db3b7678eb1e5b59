//! The configuration history: a membership entry takes effect when appended (thesis §4.1).

use super::*;

#[test]
fn membership_entry_takes_effect_when_appended() {
    let mut c = Cluster::new(3);
    let four = Membership::new([1, 2, 3, 4]);
    let entry = Entry { term: 1, index: 2, payload: EntryPayload::Membership(Box::new(four.clone())) };
    c.inject(append(1, 2, 1, (1, 0), vec![entry], 0));
    assert_eq!(c.commit(2), 0);
    assert_eq!(c.core(2).status().membership, four, "in effect as soon as it is in the log, uncommitted");

    // A leader of a later term overwrites it: the previous configuration is back.
    c.inject(append(3, 2, 2, (1, 0), vec![blank(2, 2)], 0));
    assert_eq!(c.terms(2), vec![0, 2]);
    assert_eq!(c.core(2).status().membership, Membership::new([1, 2, 3]));

    // On a leader, appending a configuration starts replication to the new node and
    // changes the quorum at once.
    let mut c = Cluster::new(3);
    c.elect(1);
    let index = c.node_mut(1).core.append_local(EntryPayload::Membership(Box::new(four.clone())));
    c.process(1);
    assert_eq!(c.core(1).status().membership, four);
    assert!(c.core(1).status().match_index.contains_key(&4));
    assert_eq!(c.queued(|m| m.to == 4 && is_append(m)).len(), 1, "node 4 is probed");
    // With four voters, the leader and one follower are no longer a majority.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert!(c.commit(1) < index);
    c.deliver_where(|m| m.to == 3 || m.from == 3);
    assert_eq!(c.commit(1), index);
}

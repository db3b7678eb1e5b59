//! Linearizable reads with ReadIndex (thesis §6.4, §6.4.1).

use super::*;

#[test]
fn read_index_waits_until_leader_commits_an_entry_of_its_term() {
    let mut c = Cluster::new(3);
    c.fire_timeout(1);
    c.deliver_where(is_vote_traffic);
    assert_eq!(c.core(1).role(), Role::Leader);
    let blank = c.last(1).index;
    assert!(c.commit(1) < blank, "the new leader's blank entry is not committed yet");
    let read = c.read_index(1).unwrap();
    assert!(c.reads_ready(1).is_empty(), "no read index before an entry of this term commits");
    assert!(c.queued(is_heartbeat).is_empty(), "no confirmation round yet");
    c.deliver_all();
    assert_eq!(
        c.reads_ready(1),
        vec![(read, blank)],
        "the read index is the commit index, which covers the blank entry"
    );
}

#[test]
fn read_index_is_served_only_after_a_quorum_confirms_leadership() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..3)).unwrap();
    c.deliver_all();
    let commit = c.commit(1);
    c.isolate(1);
    let read = c.read_index(1).unwrap();
    c.deliver_all();
    assert!(c.reads_ready(1).is_empty(), "an isolated leader cannot confirm its leadership");
    // One follower's answer plus the leader's own make a quorum of three.
    c.cut.remove(&(1, 2));
    c.cut.remove(&(2, 1));
    c.advance(config().heartbeat_interval);
    c.tick(1);
    c.deliver_all();
    assert_eq!(c.reads_ready(1), vec![(read, commit)], "the next heartbeat round confirms the pending read");
}

#[test]
fn concurrent_reads_share_one_heartbeat_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let now = c.now;
    let reads: Vec<u64> = (0..5).map(|_| c.node_mut(1).core.read_index(now).unwrap()).collect();
    c.process(1);
    assert_eq!(c.queued(is_heartbeat).len(), 2, "one heartbeat per follower for all five reads");
    c.deliver_all();
    let commit = c.commit(1);
    assert_eq!(c.reads_ready(1), reads.iter().map(|&r| (r, commit)).collect::<Vec<_>>());
}

#[test]
fn read_index_heartbeats_do_not_count_for_an_earlier_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    // A periodic heartbeat goes out before the read arrives; its answers must not
    // confirm the read's round, which starts later.
    c.advance(config().heartbeat_interval);
    c.tick(1);
    let early = c.take_where(is_heartbeat);
    assert_eq!(early.len(), 2);
    c.read_index(1).unwrap();
    let round = c.take_where(is_heartbeat);
    assert_eq!(round.len(), 2);
    for m in early {
        c.inject(m);
    }
    c.deliver_where(|m| matches!(m.body, MessageBody::HeartbeatResponse { .. }));
    assert!(c.reads_ready(1).is_empty(), "answers to a heartbeat sent before the read do not confirm it");
    c.inject(round[0].clone());
    c.deliver_all();
    assert_eq!(c.reads_ready(1).len(), 1, "one answer to the read's own round makes a quorum");
}

#[test]
fn deposed_leader_fails_its_pending_reads() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.isolate(1);
    let read = c.read_index(1).unwrap();
    c.elect(2);
    c.heal();
    c.advance(config().heartbeat_interval);
    c.tick(2);
    c.deliver_all();
    assert_eq!(c.core(1).role(), Role::Follower);
    assert!(c.reads_ready(1).is_empty(), "a deposed leader never serves the read");
    assert_eq!(c.reads_failed(1), vec![read]);
    assert_eq!(c.core(1).pending_reads(), 0);
}

#[test]
fn follower_read_asks_the_leader_for_its_read_index() {
    let mut c = Cluster::new(3);
    assert_eq!(c.read_index(2), Err(ProposeError::NotLeader(None)), "no leader known: refused at once");
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..2)).unwrap();
    c.deliver_all();
    let read = c.read_index(2).unwrap();
    assert_eq!(c.queued(|m| matches!(m.body, MessageBody::ReadIndex { id } if id == read)).len(), 1);
    c.deliver_all();
    assert_eq!(c.reads_ready(2), vec![(read, c.commit(1))]);
    // A node that does not lead answers a read-index request with a refusal.
    c.inject(Message { from: 2, to: 3, term: 1, body: MessageBody::ReadIndex { id: 5 } });
    c.deliver_all();
    assert_eq!(c.reads_failed(2), vec![5]);
}

#[test]
fn single_voter_leader_confirms_reads_alone() {
    let mut c = Cluster::new(1);
    c.elect(1);
    let read = c.read_index(1).unwrap();
    assert_eq!(c.reads_ready(1), vec![(read, c.commit(1))]);
}

#[test]
fn a_read_index_covers_what_followers_may_have_committed_from_the_leaders_durability() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..1)).unwrap();
    let last = c.last(1).index;
    assert!(c.commit(1) < last);
    // A follower may now commit `last` on its own and answer for it; a read the leader
    // takes meanwhile must wait for it.
    let id = c.read_index(1).unwrap();
    c.deliver_where(|m| matches!(m.body, MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. }));
    let ready = c.node(1).answers.iter().find_map(|a| match a {
        Action::ReadReady { id: i, index } if *i == id => Some(*index),
        _ => None,
    });
    assert_eq!(ready, Some(last), "{:?}", c.node(1).answers);
}

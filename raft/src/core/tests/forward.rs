//! Forwarding from followers to the leader: the window, resending lost requests, copies appended under the same session keys, settling requests to a former leader (`core/forward.rs`; not in the paper).

use super::*;

#[test]
fn follower_forwards_proposals_to_the_leader_and_learns_their_position() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let term = c.core(1).term();
    let first = c.last(1).index + 1;
    let request = c.forward(2, ops(0..3)).unwrap();
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 1);
    assert!(matches!(
        c.node(2).answers[0],
        Action::Forwarded { id, result: Ok((f, t)) } if (id, f, t) == (request, first, term)
    ));
    assert_eq!(c.applied_commands(2), cmds(0..3), "the follower applies the forwarded commands");
    assert_eq!(c.node(2).applied.iter().find(|e| e.index == first).map(|e| e.term), Some(term));
}

#[test]
fn a_duplicated_forward_is_appended_again_under_the_same_session_keys() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let first = c.last(1).index + 1;
    let request = c.forward(2, ops(0..2)).unwrap();
    let copy = c.queued(|m| matches!(m.body, MessageBody::Forward { .. }));
    assert_eq!(copy.len(), 1);
    c.deliver_all();
    for m in copy {
        c.inject(m);
    }
    c.deliver_all();
    // No leader keeps a memory of forwards: the copy is appended too, with the same
    // (client, seq), and the session layer applies each key once (`session.rs`).
    let answers = &c.node(2).answers;
    assert_eq!(answers.len(), 2);
    assert!(matches!(answers[0], Action::Forwarded { id, result: Ok((f, _)) } if (id, f) == (request, first)));
    assert!(matches!(answers[1], Action::Forwarded { id, result: Ok((f, _)) } if (id, f) == (request, first + 2)));
    let keys = [(TEST_CLIENT, 1), (TEST_CLIENT, 2)];
    assert_eq!(c.applied_session_keys(2), [keys, keys].concat());
}

#[test]
fn a_retried_forward_reaches_a_later_leader_and_is_appended_under_the_same_session_keys() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let request = c.forward(2, ops(0..2)).unwrap();
    c.deliver_one(|m| matches!(m.body, MessageBody::Forward { .. })).expect("the forward");
    let lost = c.take_where(|m| matches!(m.body, MessageBody::ForwardResponse { .. }));
    assert_eq!(lost.len(), 1, "the answer is lost");
    c.deliver_all();
    assert!(c.node(2).answers.is_empty());

    // The leader's term moves on (node 3 leads for a term, then node 1 again) before
    // the retry arrives.
    let term = c.core(1).term();
    c.elect(3);
    c.deliver_all();
    c.elect(1);
    c.deliver_all();
    assert!(c.core(1).term() > term);
    assert!(
        matches!(c.node(2).answers[..], [Action::Forwarded { id, result: Err(ProposeError::OutcomeUnknown) }] if id == request),
        "node 2 settled its forward when it saw another leader: {:?}",
        c.node(2).answers
    );
    c.node_mut(2).answers.clear();
    let first = c.last(1).index + 1;
    c.forward_again(2, request, ops(0..2)).unwrap();
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 1);
    let now = c.core(1).term();
    assert!(
        matches!(c.node(2).answers[0], Action::Forwarded { id, result: Ok((f, t)) } if (id, f, t) == (request, first, now)),
        "the new copy's position: {:?}",
        c.node(2).answers[0]
    );
    let keys = [(TEST_CLIENT, 1), (TEST_CLIENT, 2)];
    assert_eq!(c.applied_session_keys(1), [keys, keys].concat(), "both copies, with the same keys");
}

#[test]
fn a_follower_retries_requests_only_while_it_knows_a_leader_other_than_itself() {
    let mut c = Cluster::new(3);
    assert_eq!(c.forward_again(2, 5, ops(0..1)), Err(ProposeError::NotLeader(None)));
    assert_eq!(c.read_index_again(2, 5), Err(ProposeError::NotLeader(None)));
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.forward_again(1, 5, ops(0..1)), Err(ProposeError::NotLeader(Some(1))));
    assert_eq!(c.read_index_again(1, 5), Err(ProposeError::NotLeader(Some(1))));
}

#[test]
fn a_read_index_request_whose_answer_was_lost_is_served_again() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.propose(1, cmds(0..1)).unwrap();
    c.deliver_all();
    let read = c.read_index(2).unwrap();
    c.deliver_where(|m| !matches!(m.body, MessageBody::ReadIndexResponse { .. }));
    assert_eq!(c.take_where(|m| matches!(m.body, MessageBody::ReadIndexResponse { .. })).len(), 1, "lost");
    assert!(c.reads_ready(2).is_empty());
    c.read_index_again(2, read).unwrap();
    c.deliver_all();
    assert_eq!(c.reads_ready(2), vec![(read, c.commit(1))]);
}

#[test]
fn forward_to_a_node_that_does_not_lead_is_refused_with_its_leader_hint() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.forward(1, ops(0..1)), Err(ProposeError::NotLeader(Some(1))), "the leader proposes instead");
    c.inject(Message { from: 2, to: 3, term: 1, body: MessageBody::Forward { id: 6, requests: ops(0..1) } });
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 1);
    assert!(matches!(c.node(2).answers[0], Action::Forwarded { id: 6, result: Err(ProposeError::NotLeader(Some(1))) }));
    assert_eq!(c.last(3), c.last(1), "nothing was appended for the refused forward");
}

#[test]
fn proposal_on_follower_is_refused_with_leader_hint() {
    let mut c = Cluster::new(3);
    assert_eq!(c.propose(2, vec![cmd(0)]), Err(ProposeError::NotLeader(None)));
    c.elect(1);
    assert_eq!(c.propose(2, vec![cmd(0)]), Err(ProposeError::NotLeader(Some(1))));
    assert_eq!(c.last(2).index, 2, "nothing was appended");
    assert!(c.queue.is_empty());
}

/// Two heartbeat intervals: how long a request waits before its answer counts as lost.
fn lost_after() -> Duration {
    config().heartbeat_interval * 2
}

#[test]
fn a_follower_keeps_at_most_max_forwards_in_flight_unanswered() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    assert_eq!(config().max_forwards_in_flight, 2);
    assert!(c.core(2).may_forward(c.now));
    c.forward(2, ops(0..1)).unwrap();
    assert!(c.core(2).may_forward(c.now), "one of two in flight");
    c.forward(2, ops(1..2)).unwrap();
    assert!(!c.core(2).may_forward(c.now), "the window is full");
    assert!(c.core(1).may_forward(c.now), "a leader proposes itself: no window");
    // One answer frees one slot.
    c.deliver_one(|m| matches!(m.body, MessageBody::Forward { .. })).expect("the first forward");
    c.deliver_one(|m| matches!(m.body, MessageBody::ForwardResponse { .. })).expect("its answer");
    assert!(c.core(2).may_forward(c.now));
    assert_eq!(c.core(2).requests_in_flight(), 1);
}

#[test]
fn a_forward_unanswered_for_two_heartbeat_intervals_no_longer_counts_in_the_window() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.forward(2, ops(0..1)).unwrap();
    c.forward(2, ops(1..2)).unwrap();
    let lost = c.take_where(|m| matches!(m.body, MessageBody::Forward { .. }));
    assert_eq!(lost.len(), 2, "both forwards are lost");
    c.advance(lost_after() - Duration::from_nanos(1));
    assert!(!c.core(2).may_forward(c.now), "still within two heartbeat intervals");
    c.advance(Duration::from_nanos(1));
    assert!(c.core(2).may_forward(c.now), "their answers count as lost");
}

#[test]
fn an_unanswered_forward_is_sent_again_after_two_heartbeat_intervals_under_the_same_keys() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let request = c.forward(2, ops(0..2)).unwrap();
    let sent_at = c.now;
    assert!(c.core(2).next_deadline() <= sent_at.add(lost_after()), "the core's timer covers the resend");
    c.deliver_one(|m| matches!(m.body, MessageBody::Forward { .. })).expect("the forward");
    let lost = c.take_where(|m| matches!(m.body, MessageBody::ForwardResponse { .. }));
    assert_eq!(lost.len(), 1, "the answer is lost");

    // A tick before the deadline sends nothing again.
    c.advance(lost_after() - Duration::from_nanos(1));
    c.tick(2);
    assert!(c.queued(|m| matches!(m.body, MessageBody::Forward { .. })).is_empty());
    // At the deadline the same request goes again, with the same session keys.
    c.advance(Duration::from_nanos(1));
    c.tick(2);
    let again = c.queued(|m| matches!(m.body, MessageBody::Forward { .. }));
    assert_eq!(again.len(), 1);
    assert!(
        matches!(&again[0].body, MessageBody::Forward { id, requests } if *id == request && *requests == ops(0..2))
    );
    c.deliver_all();
    assert_eq!(c.node(2).answers.len(), 1, "answered once");
    assert!(matches!(c.node(2).answers[0], Action::Forwarded { id, result: Ok(_) } if id == request));
    let keys = [(TEST_CLIENT, 1), (TEST_CLIENT, 2)];
    assert_eq!(c.applied_session_keys(1), [keys, keys].concat(), "appended twice, applied once by the session layer");
    assert_eq!(c.core(2).requests_in_flight(), 0);
    // Answered: never sent again.
    c.advance(lost_after() * 3);
    c.tick(2);
    assert!(c.queued(|m| matches!(m.body, MessageBody::Forward { .. })).is_empty());
}

#[test]
fn an_unanswered_read_index_request_is_asked_again_after_two_heartbeat_intervals() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let read = c.read_index(2).unwrap();
    let lost = c.take_where(|m| matches!(m.body, MessageBody::ReadIndex { .. }));
    assert_eq!(lost.len(), 1, "the request is lost");
    c.advance(lost_after());
    c.tick(2);
    let again = c.queued(|m| matches!(m.body, MessageBody::ReadIndex { .. }));
    assert_eq!(again.len(), 1);
    assert!(matches!(again[0].body, MessageBody::ReadIndex { id } if id == read));
    c.deliver_all();
    assert_eq!(c.reads_ready(2).iter().map(|r| r.0).collect::<Vec<_>>(), vec![read]);
}

#[test]
fn requests_to_a_former_leader_are_settled_once_another_leader_is_known() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let forward = c.forward(2, ops(0..1)).unwrap();
    let read = c.read_index(2).unwrap();
    let lost = c.take_where(|m| matches!(m.body, MessageBody::Forward { .. } | MessageBody::ReadIndex { .. }));
    assert_eq!(lost.len(), 2);
    assert!(c.node(2).answers.is_empty());
    c.elect(3);
    c.deliver_all();
    assert_eq!(c.core(2).leader(), Some(3));
    // The forward may have been appended by node 1 and may still commit: its outcome is
    // unknown. The read had no effect: it fails, and its caller retries.
    let answers = &c.node(2).answers;
    assert!(answers
        .iter()
        .any(|a| matches!(a, Action::Forwarded { id, result: Err(ProposeError::OutcomeUnknown) } if *id == forward)));
    assert!(answers.iter().any(|a| matches!(a, Action::ReadFailed { id } if *id == read)));
    assert_eq!(answers.len(), 2);
    assert_eq!(c.core(2).requests_in_flight(), 0, "nothing is sent again to the former leader");
}

#[test]
fn an_abandoned_request_is_neither_counted_nor_sent_again() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    let first = c.forward(2, ops(0..1)).unwrap();
    c.forward(2, ops(1..2)).unwrap();
    c.take_where(|m| matches!(m.body, MessageBody::Forward { .. }));
    assert!(!c.core(2).may_forward(c.now));
    c.node_mut(2).core.abandon_request(first);
    assert!(c.core(2).may_forward(c.now), "its callers gave up: it frees its slot");
    c.advance(lost_after());
    c.tick(2);
    let again = c.queued(|m| matches!(m.body, MessageBody::Forward { .. }));
    assert_eq!(again.len(), 1, "only the request still waited for is sent again");
    assert!(matches!(again[0].body, MessageBody::Forward { id, .. } if id != first));
}

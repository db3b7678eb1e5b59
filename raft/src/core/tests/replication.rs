//! Log replication: the consistency check, conflict hints, pipelining within a window, heartbeats, the commit rule (paper §5.3, §5.4.2; thesis §5.3).

use super::*;

#[test]
fn entries_replicate_and_commit_on_majority() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let (first, term) = c.propose(1, cmds(0..3)).unwrap();
    assert_eq!((first, term), (3, 1));
    assert_eq!(c.commit(1), 2, "nothing new commits before a follower has it");

    // Node 3 hears nothing; node 2's copy makes a majority.
    c.deliver_where(|m| m.to == 2 || m.from == 2);
    assert_eq!(c.commit(1), 5);
    assert_eq!(c.commit(2), 5, "the follower learns the commit index promptly");
    assert_eq!(c.last(3).index, 2);
    assert_eq!(c.commit(3), 2);
    let applied: Vec<EntryPayload> = c.node(1).applied.iter().skip(2).map(|e| e.payload.clone()).collect();
    assert_eq!(applied, cmds(0..3).into_iter().map(EntryPayload::Command).collect::<Vec<_>>());

    c.deliver_all();
    for id in 1..=3 {
        assert_eq!(c.log(id), c.log(1), "node {id}");
        assert_eq!(c.commit(id), 5, "node {id}");
        assert_eq!(c.node(id).store.entries, c.log(1), "node {id}'s store");
    }
}

#[test]
fn commit_only_counts_current_term_entries() {
    let mut c = figure_8_setup();
    let st = c.core(1).status();
    assert_eq!((st.match_index[&2], st.match_index[&3]), (3, 2));
    // Index 2 is on S1, S2 and S3, a majority, but it is from term 2: counting replicas
    // must not commit it.
    assert_eq!(c.commit(1), 0);
    assert!(c.node(1).applied.is_empty());

    // Once the term-4 entry is on a majority, it commits, and index 2 with it.
    c.heal();
    c.isolate(4);
    c.isolate(5);
    c.fire_timeout(1);
    c.deliver_all();
    assert_eq!(c.core(1).status().match_index[&3], 3);
    assert_eq!(c.commit(1), 3);
    assert_eq!(c.node(1).applied.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(1, 0), (2, 2), (3, 4)]);
}

#[test]
fn figure_8_replicated_old_term_entry_can_still_be_overwritten() {
    // Why the rule matters: in the same state, S5 can still win an election with the
    // votes of S3 and S4 and overwrite index 2 on S3, so committing it would have been
    // unsafe.
    let mut c = figure_8_setup();
    c.heal();
    c.isolate(1);
    c.isolate(2);
    c.advance(config().election_timeout_max);
    // The first pre-vote round may only teach S5 the current term.
    for _ in 0..3 {
        if c.core(5).role() == Role::Leader {
            break;
        }
        c.fire_timeout(5);
        c.deliver_all();
    }
    assert_eq!((c.core(5).role(), c.core(5).term()), (Role::Leader, 5));
    assert_eq!(c.terms(3), vec![0, 3, 5], "S3's term-2 entry at index 2 was replaced");
    assert_eq!(c.commit(5), 3);
}

#[test]
fn follower_rejects_append_with_mismatched_prev() {
    let default = (hard_state(2), vec![bootstrap_entry(3)]);
    let logs = vec![default.clone(), (hard_state(2), log_with_terms(3, &[1, 1])), default];
    let mut c = Cluster::with_logs(config(), logs);
    let before = c.log(2);

    // Index 3 exists with term 1, not 2.
    c.inject(append(1, 2, 2, (3, 2), vec![blank(4, 2)], 0));
    let r = take_reply(&mut c, 2, 1);
    let MessageBody::AppendEntriesResponse { success, index, hint } = r.body else { panic!("{r:?}") };
    assert!(!success);
    assert_eq!(index, 3, "the rejection names the rejected prev index");
    let hint = hint.expect("a rejection carries a hint");
    assert_eq!(hint.conflict_term, Some(1));
    assert!(hint.index <= 3);
    assert_eq!(c.log(2), before, "a rejected append changes nothing");

    // Index 5 is beyond the follower's log.
    c.inject(append(1, 2, 2, (5, 2), vec![], 0));
    let r = take_reply(&mut c, 2, 1);
    let hint = Some(ConflictHint { conflict_term: None, index: 4 });
    assert_eq!(r.body, MessageBody::AppendEntriesResponse { success: false, index: 5, hint });
    assert_eq!(c.log(2), before);
    assert_eq!(c.core(2).leader(), Some(1), "a rejected append still comes from the leader");
}

#[test]
fn lagging_follower_is_repaired_in_few_round_trips() {
    // Nodes 1 and 2 hold 1000 entries that node 3 never received.
    let full = (hard_state(1), log_with_terms(3, &[1; 1000]));
    let logs = vec![full.clone(), full, (hard_state(1), vec![bootstrap_entry(3)])];
    let mut c = Cluster::with_logs(config(), logs);
    c.elect(1);
    assert_eq!(c.log(3), c.log(1));
    assert_eq!(c.commit(3), 1002);
    assert!(c.rejections_from(3) <= 2, "{} probes rejected", c.rejections_from(3));

    // A follower that lost a stream of pipelined appends is repaired as quickly.
    c.isolate(3);
    for round in 0..10 {
        c.propose(1, cmds(round * 100..round * 100 + 100)).unwrap();
        c.deliver_all();
    }
    assert_eq!(c.commit(1), 2002);
    c.heal();
    let rejected_before = c.rejections_from(3);
    c.propose(1, vec![cmd(1000)]).unwrap();
    c.deliver_all();
    assert_eq!(c.log(3), c.log(1));
    assert!(c.rejections_from(3) - rejected_before <= 2, "{} probes rejected", c.rejections_from(3) - rejected_before);
}

#[test]
fn divergent_follower_with_many_stale_terms_repaired_quickly() {
    // Node 2 led terms 2..=39 in turn, each time appending one entry that went nowhere.
    // Nodes 1 and 3 hold 60 entries of term 40 at those indexes.
    let mut leader_terms = vec![1, 1, 1];
    leader_terms.extend([40; 60]);
    let mut stale_terms = vec![1, 1, 1];
    stale_terms.extend(2..=39);
    let logs = vec![
        (hard_state(40), log_with_terms(3, &leader_terms)),
        (hard_state(40), log_with_terms(3, &stale_terms)),
        (hard_state(40), log_with_terms(3, &leader_terms)),
    ];
    let mut c = Cluster::with_logs(config(), logs);
    c.elect(1);
    assert_eq!(c.log(2), c.log(1));
    assert!(c.rejections_from(2) <= 3, "{} probes rejected", c.rejections_from(2));
}

#[test]
fn divergent_follower_with_newer_stale_terms_repaired_quickly() {
    // The mirror image: node 2's stale entries are of terms 3..=40, newer than the term-2
    // entries the leader holds at those indexes.
    let mut leader_terms = vec![1, 1, 1];
    leader_terms.extend([2; 60]);
    let mut stale_terms = vec![1, 1, 1];
    stale_terms.extend(3..=40);
    let logs = vec![
        (hard_state(41), log_with_terms(3, &leader_terms)),
        (hard_state(41), log_with_terms(3, &stale_terms)),
        (hard_state(41), log_with_terms(3, &leader_terms)),
    ];
    let mut c = Cluster::with_logs(config(), logs);
    c.elect(1);
    assert_eq!(c.log(2), c.log(1));
    assert!(c.rejections_from(2) <= 3, "{} probes rejected", c.rejections_from(2));
}

#[test]
fn random_divergent_logs_converge_to_the_leaders() {
    let mut rng = fastrand::Rng::with_seed(0xd1fe);
    for case in 0..300 {
        // A common prefix, then suffixes whose terms are disjoint sets (two logs sharing
        // an entry's term and index would be identical up to it): each term above the
        // prefix goes to the leader's suffix, the follower's, or neither.
        let mut prefix = Vec::new();
        let mut term = 0;
        for _ in 0..rng.usize(0..20) {
            term += rng.u64(0..2);
            prefix.push(term.max(1));
        }
        let base = prefix.last().copied().unwrap_or(1);
        let (mut leader, mut follower) = (prefix.clone(), prefix);
        let top = base + rng.u64(1..30);
        for t in base + 1..=top {
            let run = rng.usize(1..6);
            match rng.u8(0..3) {
                0 => leader.extend(std::iter::repeat_n(t, run)),
                1 => follower.extend(std::iter::repeat_n(t, run)),
                _ => {}
            }
        }
        let leader_log = log_with_terms(3, &leader);
        let logs = vec![
            (hard_state(top), leader_log.clone()),
            (hard_state(top), log_with_terms(3, &follower)),
            (hard_state(top), leader_log),
        ];
        let mut c = Cluster::with_logs(config(), logs);
        c.elect(1);
        assert_eq!(c.terms(2), c.terms(1), "case {case}: leader {leader:?}, follower {follower:?}");
        assert_eq!(c.node(2).store.entries, c.log(1), "case {case}: the follower's store");
        let distinct: BTreeSet<Term> = leader.iter().chain(&follower).copied().collect();
        assert!(
            c.rejections_from(2) <= distinct.len() + 2,
            "case {case}: {} rejections, leader {leader:?}, follower {follower:?}",
            c.rejections_from(2)
        );
    }
}

#[test]
fn many_proposals_batch_into_one_append_per_peer() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let now = c.now;
    let core = &mut c.node_mut(1).core;
    for i in 0..100 {
        core.propose([cmd(i)]).unwrap();
    }
    let actions = core.take_actions(now);
    let persists: Vec<&PersistRequest> =
        actions.iter().filter_map(|a| if let Action::Persist(r) = a { Some(r) } else { None }).collect();
    assert_eq!(persists.len(), 1);
    assert_eq!(persists[0].entries.len(), 100);
    let appends: Vec<&Message> =
        actions.iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect();
    assert_eq!(appends.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3], "one message per peer");
    for m in appends {
        assert_eq!(appended_indexes(m), (3..=102).collect::<Vec<_>>());
    }
}

#[test]
fn pipeline_window_bounds_inflight_messages() {
    let mut c = Cluster::with_config(3, windowed_config());
    c.elect(1);
    c.propose(1, cmds(0..30)).unwrap();
    for peer in [2, 3] {
        let out = c.queued(|m| m.to == peer && is_append_with_entries(m));
        assert_eq!(out.len(), 2, "window of 2 to node {peer}");
        assert_eq!(appended_indexes(&out[0]), (3..=7).collect::<Vec<_>>());
        assert_eq!(appended_indexes(&out[1]), (8..=12).collect::<Vec<_>>());
    }
    c.propose(1, cmds(30..40)).unwrap();
    assert_eq!(c.queued(is_append_with_entries).len(), 4, "a full window takes no more");

    // Node 2 answers one append, but the answer is not back yet: still nothing new.
    c.deliver_one(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(c.queued(|m| m.to == 2 && is_append_with_entries(m)).len(), 1);
    // The answer frees exactly one slot.
    c.deliver_one(|m| m.from == 2 && m.to == 1);
    let out = c.queued(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(out.len(), 2);
    assert_eq!(appended_indexes(&out[1]), (13..=17).collect::<Vec<_>>());

    // Delivering in order, appends in flight never exceed the window.
    while let Some(m) = c.queue.pop_front() {
        c.inject(m);
        for peer in [2, 3] {
            let in_flight = c.queue.iter().filter(|m| m.to == peer && is_append_with_entries(m)).count();
            assert!(in_flight <= 2, "{in_flight} appends in flight to node {peer}");
        }
    }
    for id in 2..=3 {
        assert_eq!(c.log(id), c.log(1), "node {id}");
    }
    assert_eq!(c.commit(1), 42);
}

#[test]
fn heartbeats_sent_even_when_window_full() {
    let mut c = Cluster::with_config(3, windowed_config());
    c.elect(1);
    c.propose(1, cmds(0..30)).unwrap();
    assert_eq!(c.queued(is_append_with_entries).len(), 4);
    c.take_where(|_| true);

    c.fire_timeout(1);
    let beats = c.queued(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    assert_eq!(beats.iter().map(|m| m.to).collect::<Vec<_>>(), vec![2, 3]);
    assert!(c.queued(is_append_with_entries).is_empty(), "the window is still full");
}

#[test]
fn follower_commit_follows_leader_commit_capped_at_match() {
    // A follower never commits beyond what the append it just checked covers.
    let mut c = Cluster::new(3);
    c.inject(append(1, 2, 1, (1, 0), vec![blank(2, 1)], 7));
    assert_eq!(c.commit(2), 2);

    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, cmds(0..3)).unwrap();
    c.deliver_all();
    assert_eq!((c.commit(1), c.commit(2)), (5, 5));
    assert_eq!(c.core(1).status().match_index[&3], 2);

    // Heartbeats carry the commit index capped at what each follower is known to hold.
    c.heal();
    c.fire_timeout(1);
    let beats = c.queued(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    let commits: Vec<(NodeId, MessageBody)> = beats.into_iter().map(|m| (m.to, m.body)).collect();
    assert_eq!(
        commits,
        vec![(2, MessageBody::Heartbeat { commit: 5, ctx: 1 }), (3, MessageBody::Heartbeat { commit: 2, ctx: 1 })]
    );
    c.deliver_where(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    assert_eq!(c.commit(3), 2, "node 3 does not yet hold entries 3..=5");

    // Once repaired, node 3 catches up with the leader's commit index.
    c.deliver_all();
    assert_eq!(c.commit(3), 5);

    // A heartbeat never pushes the commit index past the end of the follower's log.
    let mut c = Cluster::new(3);
    c.inject(Message { from: 1, to: 2, term: 1, body: MessageBody::Heartbeat { commit: 9, ctx: 0 } });
    assert!(c.commit(2) <= c.last(2).index);
}

#[test]
fn leader_refuses_proposals_beyond_uncommitted_limit() {
    let mut c = Cluster::with_config(3, Config { max_uncommitted_entries: 10, ..config() });
    c.elect(1);
    c.propose(1, cmds(0..10)).unwrap();
    assert_eq!(c.propose(1, vec![cmd(10)]), Err(ProposeError::Overloaded));
    c.deliver_all();
    assert!(c.propose(1, vec![cmd(10)]).is_ok(), "committing makes room again");
}

#[test]
fn heartbeat_answers_free_a_window_slot_only_when_appends_stall() {
    let cfg = Config { max_inflight_messages: 2, max_entries_per_message: 1, ..config() };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    c.deliver_all();
    // Fill the window to node 2 and lose those appends.
    c.propose(1, cmds(0..4)).unwrap();
    let lost = c.take_where(|m| m.to == 2 && is_append_with_entries(m));
    assert_eq!(lost.len(), 2, "window of two");
    c.deliver_where(|m| m.to != 2 && m.from != 2);
    // A heartbeat round with no acknowledgement since: one slot is freed and the next
    // append goes out; node 2 rejects it (a gap) and the leader probes back.
    c.advance(config().heartbeat_interval);
    c.tick(1);
    c.deliver_all();
    assert_eq!(c.last(2), c.last(1), "node 2 is repaired after the lost appends");
}

#[test]
fn a_lost_acknowledgement_is_recovered_after_a_heartbeat_when_nothing_new_is_proposed() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.deliver_all();
    c.isolate(3);
    let before = c.commit(1);
    c.propose(1, cmds(0..1)).unwrap();
    c.deliver_where(|m| m.to == 2 && matches!(m.body, MessageBody::AppendEntries { .. }));
    let lost = c.take_where(|m| m.from == 2 && matches!(m.body, MessageBody::AppendEntriesResponse { .. }));
    assert_eq!(lost.len(), 1, "node 2 acknowledged the entry");
    c.deliver_all();
    assert_eq!(c.commit(1), before, "the acknowledgement was lost");
    // The next heartbeat round shows node 2 behind; the leader must ask again with an
    // append that node 2 answers (commit news alone would never be answered).
    for _ in 0..3 {
        c.fire_timeout(1);
        c.deliver_all();
    }
    assert_eq!(c.commit(1), c.last(1).index, "committed once node 2's answer arrives");
}

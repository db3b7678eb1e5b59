//! Snapshots and log compaction (paper §7): compaction after the thresholds, the
//! InstallSnapshot transfer under loss, duplication, reordering and a leader change,
//! and how an install treats the follower's log.

use super::*;

/// Snapshots every `every` applied entries, keeping 2 entries of margin, in chunks of
/// 64 bytes, 2 in flight.
fn snap_config(every: u64) -> Config {
    Config {
        snapshot_after_entries: every,
        snapshot_after_bytes: 0,
        snapshot_keep_entries: 2,
        snapshot_chunk_size: 64,
        snapshot_max_inflight_chunks: 2,
        ..config()
    }
}

fn is_chunk(m: &Message) -> bool {
    matches!(m.body, MessageBody::InstallSnapshot { .. })
}

/// Proposes `n` commands on `leader`, one per round, delivering everything.
fn write(c: &mut Cluster, leader: NodeId, from: usize, n: usize) {
    for i in from..from + n {
        c.propose(leader, vec![cmd(i)]).expect("the leader takes proposals");
        c.deliver_all();
    }
}

fn status(c: &Cluster, id: NodeId) -> crate::status::Status {
    c.core(id).status()
}

/// Lets leader 1 notice that 3 needs a snapshot (a heartbeat round) and start sending
/// it, delivering everything but the chunks.
fn start_transfer(c: &mut Cluster) {
    c.advance(ms(60));
    c.tick(1);
    c.deliver_where(|m| !is_chunk(m));
}

/// A 3-node cluster led by 1, where 3 was cut off for 40 writes: 1 has compacted its log
/// past everything 3 holds.
fn follower_behind_the_purge_point() -> Cluster {
    let mut c = Cluster::with_config(3, snap_config(10));
    c.elect(1);
    write(&mut c, 1, 0, 3);
    c.isolate(3);
    write(&mut c, 1, 3, 40);
    c.heal();
    let s = status(&c, 1);
    assert!(s.first_log_index > status(&c, 3).last_log_index + 1, "the leader purged what 3 needs: {s:?}");
    c
}

#[test]
fn compaction_snapshots_after_the_threshold_and_purges_up_to_the_margin() {
    let mut c = Cluster::with_config(3, snap_config(10));
    c.elect(1);
    write(&mut c, 1, 0, 35);
    for id in 1..=3 {
        let s = status(&c, id);
        let n = c.node(id);
        assert!(n.snapshots_taken >= 3, "node {id} took {} snapshots", n.snapshots_taken);
        assert!(s.snapshot_index >= 30, "node {id}: {s:?}");
        assert_eq!(s.first_log_index, s.snapshot_index - 2 + 1, "node {id} keeps 2 entries before the snapshot");
        assert_eq!(n.store.prev.index, s.snapshot_index - 2, "node {id}'s store is purged");
        let (meta, _) = n.store.snapshot.as_ref().expect("a snapshot is held");
        assert_eq!(meta.last.index, s.snapshot_index);
        assert_eq!(meta.membership, Membership::new(1..=3), "the snapshot records the membership");
        assert_eq!(meta.membership_index, 1);
    }
    assert_eq!(c.applied_commands(2), cmds(0..35));
}

#[test]
fn a_follower_behind_the_purge_point_gets_the_snapshot_and_then_the_log() {
    let mut c = follower_behind_the_purge_point();
    c.run_for(ms(200));
    assert_eq!(c.node(3).restores, 1, "node 3 installed one snapshot");
    assert!(c.delivered.iter().any(is_chunk), "the snapshot went in chunks");
    let size = c.node(1).store.snapshot.as_ref().map_or(0, |(m, _)| m.size);
    let (sent, received) = (c.core(1).counters(), c.core(3).counters());
    assert_eq!(sent.snapshots_sent, 1, "{sent:?}");
    assert!(sent.snapshot_bytes_sent >= size, "{sent:?}, snapshot of {size} bytes");
    assert_eq!((received.snapshots_installed, received.snapshot_bytes_received), (1, size), "{received:?}");
    assert!(sent.snapshots_taken >= 1, "{sent:?}");
    assert_eq!(c.applied_commands(3), cmds(0..43), "the restored state plus the entries after it");
    let s3 = status(&c, 3);
    let held = c.node(3).store.snapshot.as_ref().map(|(m, _)| m.last.index);
    assert_eq!(held, Some(s3.snapshot_index));
    // Replication goes on by appends afterwards.
    write(&mut c, 1, 43, 5);
    c.run_for(ms(100));
    assert_eq!(c.applied_commands(3), cmds(0..48));
    assert_eq!(c.node(3).restores, 1);
}

#[test]
fn heartbeats_and_other_followers_go_on_during_a_transfer() {
    let mut c = follower_behind_the_purge_point();
    // Let the leader start the transfer, then hold every chunk back.
    start_transfer(&mut c);
    assert!(!c.queued(is_chunk).is_empty(), "a transfer started");
    let before = c.commit(2);
    c.propose(1, vec![cmd(100)]).expect("the leader takes proposals");
    c.deliver_where(|m| !is_chunk(m));
    assert!(c.commit(2) > before, "node 2 keeps committing while node 3 is sent a snapshot");
    assert_eq!(c.core(3).role(), Role::Follower);
    assert_eq!(c.core(3).leader(), Some(1), "node 3 keeps its leader: heartbeats still reach it");
}

#[test]
fn a_follower_answers_a_chunk_only_once_its_store_wrote_it() {
    let mut c = follower_behind_the_purge_point();
    c.slow_chunk_writes(3, true);
    c.advance(ms(60));
    c.tick(1);
    // However long the leader waits, no more than its window is on the way to 3's store.
    for _ in 0..10 {
        c.deliver_all();
        c.advance(ms(60));
        c.tick(1);
    }
    let received = c.node(3).store.receiving.as_ref().map_or(0, |(_, b)| b.len());
    assert!(received > 0, "the transfer started");
    assert!(received <= 2 * 64, "{received} bytes reached node 3's store, more than the window of 2 chunks of 64");
    let claims: Vec<u64> = c
        .delivered
        .iter()
        .filter(|m| m.from == 3)
        .filter_map(|m| match m.body {
            MessageBody::InstallSnapshotResponse { next_offset, done, .. } => {
                Some(if done { u64::MAX } else { next_offset })
            }
            _ => None,
        })
        .collect();
    assert!(claims.iter().all(|&n| n == 0), "node 3 acknowledged bytes its store had not written: {claims:?}");
    // Once the writes are reported, the transfer goes on to the install.
    c.slow_chunk_writes(3, false);
    c.run_for(ms(400));
    assert_eq!(c.node(3).restores, 1);
    assert_eq!(c.applied_commands(3), cmds(0..43));
}

#[test]
fn lost_chunks_are_sent_again_from_what_the_follower_acknowledged() {
    let mut c = follower_behind_the_purge_point();
    start_transfer(&mut c);
    let lost = c.take_where(is_chunk);
    assert!(!lost.is_empty());
    c.run_for(ms(400));
    assert_eq!(c.node(3).restores, 1);
    assert_eq!(c.applied_commands(3), cmds(0..43));
}

#[test]
fn duplicated_and_reordered_chunks_still_install_one_correct_snapshot() {
    let mut c = follower_behind_the_purge_point();
    start_transfer(&mut c);
    for _ in 0..30 {
        let mut chunks = c.take_where(is_chunk);
        if chunks.is_empty() {
            break;
        }
        chunks.reverse();
        for m in chunks.iter().chain(chunks.iter()) {
            c.inject(m.clone());
        }
        c.deliver_where(|m| !is_chunk(m));
    }
    c.run_for(ms(300));
    assert_eq!(c.node(3).restores, 1, "one install, whatever the order");
    assert_eq!(c.applied_commands(3), cmds(0..43));
}

#[test]
fn a_new_leader_mid_transfer_sends_its_own_snapshot_from_the_start() {
    let mut c = follower_behind_the_purge_point();
    start_transfer(&mut c);
    // One chunk arrives from leader 1, then 1 is cut off and 2 takes over.
    c.deliver_one(is_chunk).expect("a chunk");
    c.take_where(|m| m.from == 1);
    c.isolate(1);
    c.elect(2);
    c.run_for(ms(400));
    assert_eq!(c.core(2).role(), Role::Leader);
    assert_eq!(c.node(3).restores, 1);
    assert!(c.delivered.iter().any(|m| m.from == 2 && is_chunk(m)), "the new leader sent its snapshot");
    assert_eq!(c.applied_commands(3)[..43], cmds(0..43)[..]);
}

/// The leader's held snapshot, as one InstallSnapshot message from `from` to `to`.
fn whole_snapshot(c: &Cluster, from: NodeId, to: NodeId) -> Message {
    let (meta, data) = c.node(from).store.snapshot.clone().expect("a snapshot");
    let term = c.core(from).term();
    Message { from, to, term, body: MessageBody::InstallSnapshot { meta, offset: 0, data: Bytes::from(data) } }
}

#[test]
fn a_snapshot_the_follower_already_covers_is_answered_done_and_not_installed() {
    let mut c = Cluster::with_config(3, snap_config(10));
    c.elect(1);
    write(&mut c, 1, 0, 15);
    let m = whole_snapshot(&c, 1, 2);
    let last = match &m.body {
        MessageBody::InstallSnapshot { meta, .. } => meta.last,
        _ => unreachable!(),
    };
    c.inject(m);
    let reply = take_reply(&mut c, 2, 1);
    assert!(
        matches!(reply.body, MessageBody::InstallSnapshotResponse { done: true, last: l, .. } if l == last),
        "{reply:?}"
    );
    assert_eq!(c.node(2).restores, 0, "nothing is installed");
    assert!(c.node(2).store.receiving.is_none(), "nothing is written");
}

/// A follower with `log` (after the bootstrap entry) at term 3, sent a snapshot ending at
/// `last` by leader 1 of term 3.
fn install_on(log_terms: &[Term], last: LogId) -> Cluster {
    let logs = vec![(hard_state(3), log_with_terms(2, &[1; 8])), (hard_state(3), log_with_terms(2, log_terms))];
    let mut c = Cluster::with_logs(config(), logs);
    let applied: Vec<Entry> = log_with_terms(2, &[1; 8]).into_iter().take(last.index as usize).collect();
    let data = snapshot_of(&applied);
    let meta = SnapshotMeta {
        last,
        membership: Membership::new(1..=2),
        membership_index: 1,
        size: data.len() as u64,
        checksum: crc32c::crc32c(&data),
    };
    c.inject(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::InstallSnapshot { meta, offset: 0, data: data.into() },
    });
    c
}

#[test]
fn an_install_keeps_the_log_that_extends_the_snapshot() {
    let c = install_on(&[1; 8], LogId { index: 5, term: 1 });
    let n = c.node(2);
    assert_eq!(n.restores, 1);
    assert_eq!(n.store.prev, LogId { index: 5, term: 1 });
    assert_eq!(n.store.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![6, 7, 8, 9], "the suffix stays");
    assert_eq!(status(&c, 2).last_log_index, 9);
    assert_eq!(status(&c, 2).commit_index, 5, "the snapshot is committed");
}

#[test]
fn an_install_discards_a_log_that_conflicts_with_the_snapshot() {
    let c = install_on(&[1, 1, 1, 2, 2, 2, 2, 2], LogId { index: 5, term: 1 });
    let n = c.node(2);
    assert_eq!(n.restores, 1);
    assert_eq!(n.store.prev, LogId { index: 5, term: 1 });
    assert!(n.store.entries.is_empty(), "entries of another history are gone");
    let s = status(&c, 2);
    assert_eq!((s.last_log_index, s.last_log_term), (5, 1));
    let shorter = install_on(&[1, 1], LogId { index: 5, term: 1 });
    assert!(shorter.node(2).store.entries.is_empty(), "a log shorter than the snapshot is replaced");
    assert_eq!(status(&shorter, 2).last_log_index, 5);
}

#[test]
fn a_snapshot_that_fails_its_checksum_is_not_installed_and_starts_over() {
    let mut c = Cluster::with_logs(config(), vec![(hard_state(3), vec![bootstrap_entry(2)]); 2]);
    let data = snapshot_of(&log_with_terms(2, &[1; 4]));
    let meta = SnapshotMeta {
        last: LogId { index: 5, term: 1 },
        membership: Membership::new(1..=2),
        membership_index: 1,
        size: data.len() as u64,
        checksum: crc32c::crc32c(&data) ^ 1,
    };
    c.inject(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::InstallSnapshot { meta, offset: 0, data: data.into() },
    });
    let reply = take_reply(&mut c, 2, 1);
    assert!(
        matches!(reply.body, MessageBody::InstallSnapshotResponse { done: false, next_offset: 0, .. }),
        "{reply:?}"
    );
    assert_eq!(c.node(2).restores, 0);
    assert!(c.node(2).store.snapshot.is_none());
    assert_eq!(status(&c, 2).last_log_index, 1, "the log is untouched");
}

#[test]
fn nothing_after_the_snapshot_is_applied_before_the_install_is_durable() {
    let mut c = follower_behind_the_purge_point();
    c.hold(3);
    c.run_for(ms(300));
    let applied_before = c.node(3).applied.len();
    assert_eq!(c.node(3).restores, 0, "the install waits for its persist request");
    write(&mut c, 1, 43, 3);
    assert_eq!(c.node(3).applied.len(), applied_before, "no entry is applied ahead of the restore");
    c.release(3);
    c.run_for(ms(200));
    assert_eq!(c.node(3).restores, 1);
    assert_eq!(c.applied_commands(3), cmds(0..46));
}

#[test]
fn a_restarted_node_comes_back_from_its_snapshot_and_the_log_after_it() {
    let mut c = Cluster::with_config(3, snap_config(10));
    c.elect(1);
    write(&mut c, 1, 0, 25);
    let before = c.applied_commands(2);
    c.restart(2);
    let s = status(&c, 2);
    assert!(s.snapshot_index >= 20);
    assert_eq!(s.commit_index, s.snapshot_index, "the snapshot is committed, the rest is learnt again");
    assert!(c.applied_commands(2).len() as u64 <= s.snapshot_index, "only the snapshot's state so far");
    c.run_for(ms(200));
    assert_eq!(c.applied_commands(2), before, "the entries after the snapshot are applied again, once");
    write(&mut c, 1, 25, 2);
    assert_eq!(c.applied_commands(2), cmds(0..27));
}

#[test]
fn trigger_snapshot_and_purge_log_work_without_thresholds() {
    let mut c = Cluster::with_config(3, snap_config(0));
    c.elect(1);
    write(&mut c, 1, 0, 8);
    assert_eq!(c.node(1).snapshots_taken, 0, "no threshold, no snapshot");
    c.node_mut(1).core.trigger_snapshot();
    c.process(1);
    let s = status(&c, 1);
    assert_eq!(c.node(1).snapshots_taken, 1);
    assert_eq!(s.snapshot_index, s.applied_index);
    assert_eq!(s.first_log_index, s.snapshot_index - 2 + 1, "purged up to the margin");
    let purged = c.node_mut(1).core.purge_log(u64::MAX);
    c.process(1);
    assert_eq!(purged, Some(s.snapshot_index), "capped at the snapshot");
    assert_eq!(status(&c, 1).first_log_index, s.snapshot_index + 1);
    assert_eq!(c.node_mut(1).core.purge_log(3), None, "already purged");
}

//! Named scenario tests for the classic Raft situations, on the deterministic simulator
//! (real `Raft` nodes, simulated time, network and storage). Every scenario also runs
//! the simulator's invariant checks after each step and a full log check at the end.
#![cfg(feature = "testing")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::testing::linearizability::{KvInput, KvOutput};
use raft::testing::simulator::{KvCommand, SimCluster, SimFailure, SimOptions};
use raft::{ClientError, NodeId, Role, Runtime};

const SEC: Duration = Duration::from_secs(1);

fn cluster(seed: u64, nodes: u64) -> SimCluster {
    let opts = SimOptions { nodes, ..SimOptions::default() };
    SimCluster::new(seed, opts).unwrap_or_else(|f| panic!("{f}"))
}

fn put(key: &str, value: &str) -> KvInput {
    KvInput::Put { key: key.into(), value: value.into() }
}

fn get(key: &str) -> KvInput {
    KvInput::Get { key: key.into() }
}

fn ok<T>(r: Result<T, SimFailure>) -> T {
    r.unwrap_or_else(|f| panic!("{f}"))
}

fn leader_of(c: &mut SimCluster) -> NodeId {
    ok(c.wait_for_leader(3 * SEC)).expect("a leader is elected within 3 s")
}

fn role(c: &SimCluster, id: NodeId) -> Option<Role> {
    c.node(id).map(|r| r.status().role)
}

/// Proposes `n` writes concurrently through `via`; returns how many succeeded.
fn propose_many(c: &mut SimCluster, via: NodeId, n: usize, prefix: &str) -> usize {
    let raft = c.node(via).expect("node is running");
    let done = Arc::new(Mutex::new(0usize));
    for i in 0..n {
        let raft = raft.clone();
        let done = done.clone();
        let cmd = KvCommand { op: (7 << 50) + i as u64, action: put(&format!("{prefix}{}", i % 16), &format!("v{i}")) };
        drop(c.sim().runtime().spawn(async move {
            if raft.propose(cmd).await.is_ok() {
                *done.lock().unwrap() += 1;
            }
        }));
    }
    ok(c.run_until(10 * SEC, |_| *done.lock().unwrap() == n));
    let count = *done.lock().unwrap();
    count
}

#[test]
fn first_election_elects_exactly_one_stable_leader() {
    let mut c = cluster(1, 3);
    let leader = leader_of(&mut c);
    let term = c.node(leader).unwrap().status().term;
    ok(c.run_for(2 * SEC));
    assert_eq!(c.leader(), Some(leader), "leadership is stable without faults");
    for id in c.ids() {
        let s = c.node(id).unwrap().status();
        assert_eq!(s.term, term, "no further elections on node {id}");
        assert_eq!(s.leader, Some(leader), "node {id} knows the leader");
        assert_eq!(s.role == Role::Leader, id == leader);
    }
    ok(c.check_all());
}

#[test]
fn new_leader_is_elected_after_leader_crash_and_old_leader_catches_up() {
    let mut c = cluster(2, 3);
    let old = leader_of(&mut c);
    assert_eq!(ok(c.propose_anywhere(put("a", "1"), 2 * SEC)), Some(KvOutput::Ok));
    c.crash(old);
    let new = leader_of(&mut c);
    assert_ne!(new, old);
    assert_eq!(ok(c.propose_anywhere(put("a", "2"), 2 * SEC)), Some(KvOutput::Ok));
    ok(c.restart(old));
    let caught_up = ok(c.run_until(3 * SEC, |c| c.values("a").values().all(|v| v.as_deref() == Some("2"))));
    assert!(caught_up, "restarted node applies the new leader's writes: {:?}", c.values("a"));
    assert_eq!(role(&c, old), Some(Role::Follower));
    ok(c.check_all());
}

#[test]
fn no_leader_and_no_commit_without_a_quorum() {
    let mut c = cluster(3, 3);
    leader_of(&mut c);
    assert_eq!(ok(c.propose_anywhere(put("k", "before"), 2 * SEC)), Some(KvOutput::Ok));
    let commit_before = c.max_commit();
    // Every node alone: nobody can win an election or commit.
    c.network().partition(&[1], &[2, 3]);
    c.network().partition(&[2], &[1, 3]);
    ok(c.run_for(2 * SEC));
    assert_eq!(c.leader(), None, "check-quorum deposes the leader and nobody else wins");
    for id in c.ids() {
        let r = ok(c.propose(id, put("k", "lost"), SEC));
        assert!(
            matches!(r, None | Some(Err(ClientError::NotLeader { .. }))),
            "a proposal without quorum does not succeed on node {id}: {r:?}"
        );
    }
    assert_eq!(c.max_commit(), commit_before, "nothing commits without a quorum");
    c.network().heal();
    leader_of(&mut c);
    assert_eq!(ok(c.propose_anywhere(put("k", "after"), 3 * SEC)), Some(KvOutput::Ok));
    ok(c.check_all());
}

#[test]
fn lagging_follower_is_caught_up_from_the_store() {
    let mut opts = SimOptions { nodes: 3, ..SimOptions::default() };
    opts.config.max_cached_lag = 1000;
    let mut c = SimCluster::new(4, opts).unwrap_or_else(|f| panic!("{f}"));
    let leader = leader_of(&mut c);
    let lagging = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.network().isolate(lagging);
    // More than the core keeps in memory, so the tail is read back from the store.
    let n = 6000;
    assert_eq!(propose_many(&mut c, leader, n, "lag"), n);
    let cached = c.node(leader).unwrap().status().cached_entries;
    assert!(cached < n / 2, "the leader does not keep the lagging peer's backlog in memory ({cached} entries)");
    c.network().heal();
    let target = c.node(leader).unwrap().status().commit_index;
    let caught_up = ok(c.run_until(10 * SEC, |c| c.node(lagging).unwrap().status().applied_index >= target));
    assert!(caught_up, "lagging follower reaches the leader's commit index {target}");
    assert_eq!(c.values("lag3")[&lagging], c.values("lag3")[&leader]);
    ok(c.check_all());
}

#[test]
fn divergent_follower_has_its_uncommitted_suffix_replaced() {
    let mut c = cluster(5, 3);
    let old = leader_of(&mut c);
    assert_eq!(ok(c.propose_anywhere(put("d", "committed"), 2 * SEC)), Some(KvOutput::Ok));
    // The old leader, alone, appends entries nobody else gets.
    c.network().isolate(old);
    let raft = c.node(old).unwrap();
    for i in 0..20 {
        let raft = raft.clone();
        let cmd = KvCommand { op: (9 << 50) + i, action: put("d", &format!("doomed{i}")) };
        drop(c.sim().runtime().spawn(async move {
            let _ = raft.propose(cmd).await;
        }));
    }
    ok(c.run_for(SEC));
    let old_last = c.node(old).unwrap().status().last_log_index;
    // The majority moves on.
    let others: Vec<NodeId> = c.ids().into_iter().filter(|&id| id != old).collect();
    ok(c.run_until(3 * SEC, |c| c.leader().is_some_and(|l| l != old)));
    assert_eq!(ok(c.propose_anywhere(put("d", "new"), 3 * SEC)), Some(KvOutput::Ok));
    c.network().heal();
    let repaired = ok(c.run_until(5 * SEC, |c| c.values("d").values().all(|v| v.as_deref() == Some("new"))));
    assert!(repaired, "old leader's divergent suffix (up to index {old_last}) is replaced: {:?}", c.values("d"));
    assert!(others.iter().all(|&id| c.values("d")[&id].as_deref() == Some("new")));
    ok(c.check_all());
}

#[test]
fn partitioned_old_leader_rejoins_as_follower_without_disruption() {
    let mut c = cluster(6, 5);
    let old = leader_of(&mut c);
    c.network().isolate(old);
    ok(c.run_until(3 * SEC, |c| c.leader().is_some_and(|l| l != old)));
    let new = c.leader().unwrap();
    ok(c.run_for(SEC));
    assert_ne!(role(&c, old), Some(Role::Leader), "isolated leader steps down (check-quorum)");
    let new_term = c.node(new).unwrap().status().term;
    c.network().heal();
    ok(c.run_for(2 * SEC));
    assert_eq!(c.leader(), Some(new), "the rejoining node does not depose the new leader");
    assert_eq!(c.node(new).unwrap().status().term, new_term, "pre-vote keeps the term stable");
    assert_eq!(c.node(old).unwrap().status().leader, Some(new));
    assert_eq!(ok(c.propose_anywhere(put("p", "1"), 2 * SEC)), Some(KvOutput::Ok));
    ok(c.check_all());
}

#[test]
fn many_concurrent_proposals_all_commit_in_one_order() {
    let mut c = cluster(7, 3);
    let leader = leader_of(&mut c);
    assert_eq!(propose_many(&mut c, leader, 500, "m"), 500);
    let target = c.node(leader).unwrap().status().commit_index;
    ok(c.run_until(3 * SEC, |c| c.ids().iter().all(|&id| c.node(id).unwrap().status().applied_index >= target)));
    for k in 0..16 {
        let vals = c.values(&format!("m{k}"));
        let first = vals.values().next().cloned().flatten();
        assert!(vals.values().all(|v| *v == first), "replicas agree on m{k}: {vals:?}");
    }
    ok(c.check_all());
}

#[test]
fn full_cluster_crash_and_recovery_keeps_acknowledged_writes() {
    let mut c = cluster(8, 3);
    leader_of(&mut c);
    for i in 0..20 {
        assert_eq!(ok(c.propose_anywhere(put(&format!("f{i}"), &format!("{i}")), 2 * SEC)), Some(KvOutput::Ok));
    }
    for id in c.ids() {
        c.crash(id);
    }
    ok(c.run_for(SEC));
    for id in c.ids() {
        ok(c.restart(id));
    }
    leader_of(&mut c);
    for i in 0..20 {
        let v = ok(c.propose_anywhere(get(&format!("f{i}")), 3 * SEC));
        assert_eq!(v, Some(KvOutput::Value(Some(format!("{i}")))), "acknowledged write f{i} survives");
    }
    ok(c.check_all());
}

/// The situation of the Raft paper's figure 8, driven repeatedly: leaders crash right
/// after accepting entries, so entries of old terms sit on some nodes while new leaders
/// come and go. A leader must never commit an old-term entry by counting replicas, so no
/// acknowledged write is ever lost or overwritten.
#[test]
fn figure_8_leader_crashes_never_lose_acknowledged_writes() {
    let mut c = cluster(9, 5);
    let mut acked = Vec::new();
    for round in 0..25u64 {
        let Some(leader) = ok(c.wait_for_leader(3 * SEC)) else { continue };
        let key = format!("r{round}");
        if let Some(Ok(KvOutput::Ok)) = ok(c.propose(leader, put(&key, "x"), Duration::from_millis(30))) {
            acked.push(key);
        }
        let delay = c.sim().random_u64() % 40;
        ok(c.run_for(Duration::from_millis(delay)));
        if let Some(l) = c.leader() {
            c.crash(l);
        }
        let down: Vec<NodeId> = c.ids().into_iter().filter(|&id| c.node(id).is_none()).collect();
        if down.len() >= 2 {
            for id in down {
                ok(c.restart(id));
            }
        }
    }
    for id in c.ids() {
        if c.node(id).is_none() {
            ok(c.restart(id));
        }
    }
    leader_of(&mut c);
    assert!(!acked.is_empty(), "some writes were acknowledged");
    for key in &acked {
        let v = ok(c.propose_anywhere(get(key), 5 * SEC));
        assert_eq!(v, Some(KvOutput::Value(Some("x".into()))), "acknowledged {key} survives");
    }
    ok(c.check_all());
}

/// Runs `request` on the simulation until it finishes (or `limit` of virtual time passes).
fn run_request<T: Send + 'static>(
    c: &mut SimCluster,
    limit: Duration,
    request: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let out = Arc::new(Mutex::new(None));
    let out2 = out.clone();
    drop(c.sim().runtime().spawn(async move {
        let r = request.await;
        *out2.lock().unwrap() = Some(r);
    }));
    ok(c.run_until(limit, |_| out.lock().unwrap().is_some()));
    let r = out.lock().unwrap().take();
    r
}

fn read_key(c: &mut SimCluster, via: NodeId, key: &str) -> Option<Result<Option<String>, ClientError>> {
    let raft = c.node(via).expect("node is running");
    let key = key.to_string();
    run_request(c, 10 * SEC, async move { raft.read(move |kv| kv.get(&key).cloned()).await })
}

fn write_via(c: &mut SimCluster, via: NodeId, op: u64, action: KvInput) -> Option<Result<KvOutput, ClientError>> {
    let raft = c.node(via).expect("node is running");
    run_request(c, 10 * SEC, async move { raft.propose(KvCommand { op, action }).await })
}

#[test]
fn follower_forwards_writes_and_serves_linearizable_reads() {
    let mut c = cluster(21, 3);
    let leader = leader_of(&mut c);
    let followers: Vec<NodeId> = c.ids().into_iter().filter(|&id| id != leader).collect();
    for (i, &f) in followers.iter().enumerate() {
        let value = format!("from-{f}");
        assert_eq!(write_via(&mut c, f, 100 + i as u64, put("k", &value)), Some(Ok(KvOutput::Ok)));
        // Every node, the other follower included, reads the write just acknowledged.
        for id in c.ids() {
            assert_eq!(read_key(&mut c, id, "k"), Some(Ok(Some(value.clone()))), "linearizable read on node {id}");
        }
    }
    assert_eq!(c.leader(), Some(leader), "forwarding did not disturb the leader");
    ok(c.check_all());
}

#[test]
fn isolated_old_leader_never_serves_a_stale_read() {
    let mut c = cluster(22, 3);
    let old = leader_of(&mut c);
    assert_eq!(write_via(&mut c, old, 1, put("k", "old")), Some(Ok(KvOutput::Ok)));
    let others: Vec<NodeId> = c.ids().into_iter().filter(|&id| id != old).collect();
    c.network().partition(&[old], &others);
    // The majority elects a new leader and accepts a newer write.
    let new = ok(c.run_until(5 * SEC, |c| c.leader().is_some_and(|l| l != old)));
    assert!(new, "the majority side elects a new leader");
    assert_eq!(write_via(&mut c, others[0], 2, put("k", "new")), Some(Ok(KvOutput::Ok)));
    // The old leader cannot confirm leadership: its read ends in an error, never "old".
    let read = read_key(&mut c, old, "k");
    assert!(matches!(read, Some(Err(ClientError::NoLeader | ClientError::Timeout))), "got {read:?}");
    c.network().heal();
    ok(c.run_for(2 * SEC));
    assert_eq!(read_key(&mut c, old, "k"), Some(Ok(Some("new".into()))), "after healing it reads the newer write");
    ok(c.check_all());
}

#[test]
fn requests_without_a_quorum_end_with_timeout_or_no_leader() {
    let mut c = cluster(23, 3);
    let leader = leader_of(&mut c);
    for id in c.ids() {
        if id != leader {
            c.crash(id);
        }
    }
    // The leader appends but cannot commit: the outcome is unknown when time runs out.
    let start = c.now();
    let r = write_via(&mut c, leader, 1, put("k", "v"));
    assert_eq!(r, Some(Err(ClientError::Timeout)));
    let waited = c.now().saturating_since(start);
    assert!(waited >= 5 * SEC && waited < 6 * SEC, "answered at the request timeout, after {waited:?}");
    // Check-quorum has made it step down by now: no leader is known, so nothing is
    // appended and reads are refused.
    assert_ne!(role(&c, leader), Some(Role::Leader));
    assert_eq!(write_via(&mut c, leader, 2, put("k", "w")), Some(Err(ClientError::NoLeader)));
    assert_eq!(read_key(&mut c, leader, "k"), Some(Err(ClientError::NoLeader)));
}

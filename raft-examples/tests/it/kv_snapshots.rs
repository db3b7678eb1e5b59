//! Three real `kv` processes with small snapshot thresholds (paper §7): a follower that
//! was down while the others compacted their logs catches up by InstallSnapshot over TCP
//! and serves linearizable reads; the whole cluster killed after 200,000 writes comes
//! back from its snapshots; the log on disk stays bounded by the thresholds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use raft_examples::launch::client::Connection;

use crate::support::{wait_until, Cluster, PATIENCE};

const KV: &str = env!("CARGO_BIN_EXE_kv");

/// A snapshot after this many applied entries.
const AFTER: u64 = 10_000;
/// Entries kept behind a snapshot.
const KEEP: u64 = 1_000;
/// Log segment size: small, so that compaction deletes segments within the test.
const SEGMENT: u64 = 1 << 20;
/// Bytes per value.
const VALUE_LEN: usize = 200;
/// Distinct keys: every round overwrites them several times (a multiple of `WRITERS`).
const KEYS: u64 = 4_800;
/// Writes per round.
const WRITES: u64 = 100_000;
/// Concurrent writers.
const WRITERS: u64 = 16;

fn node_args(_id: u64) -> Vec<String> {
    vec![
        format!("--snapshot-after-entries={AFTER}"),
        format!("--snapshot-keep-entries={KEEP}"),
        format!("--log-segment-size={SEGMENT}"),
    ]
}

/// The value write `n` of `round` puts.
fn value(round: u64, n: u64) -> Vec<u8> {
    let mut v = format!("r{round}-w{n}-").into_bytes();
    v.resize(VALUE_LEN, b'.');
    v
}

fn key(n: u64) -> String {
    format!("k{}", n % KEYS)
}

/// Field `name` of node `i`'s `/status` as a number.
fn status_u64(c: &Cluster, i: usize, name: &str) -> Option<u64> {
    c.status(i)?.get(name)?.as_u64()
}

/// `WRITES` puts of `round` through the nodes in `via` (spread over them), then deletes
/// of every key whose number is `round` modulo `delete_every`; `expected` becomes the
/// state every replica must end with. Writer `w` writes the keys congruent to `w` modulo
/// `WRITERS`, in order, so the last value of every key is known.
fn write_round(c: &Cluster, via: &[usize], round: u64, delete_every: u64, expected: &mut BTreeMap<String, Vec<u8>>) {
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let http = c.nodes[via[w as usize % via.len()]].http.to_string();
            s.spawn(move || {
                let mut conn = Connection::new(&http, Duration::from_secs(15)).expect("address");
                for n in (w..WRITES).step_by(WRITERS as usize) {
                    let path = format!("/kv/{}", key(n));
                    let body = value(round, n);
                    wait_until(&format!("PUT {path} (round {round}) to succeed"), PATIENCE, || {
                        let r = conn.request("PUT", &path, Some(&body));
                        match r.status {
                            200 => Some(()),
                            0 | 503 => None,
                            _ => panic!("PUT {path}: {} {}", r.status, r.text()),
                        }
                    });
                }
            });
        }
    });
    for n in WRITES - KEYS..WRITES {
        expected.insert(key(n), value(round, n));
    }
    for k in (round % delete_every..KEYS).step_by(delete_every as usize) {
        let r = c.request(via[0], "DELETE", &format!("/kv/k{k}"), None);
        assert_eq!(r.status, 200, "DELETE k{k}: {}", r.text());
        expected.remove(&format!("k{k}"));
    }
}

/// Checks that node `i` holds exactly `expected` once it has applied the leader's
/// commit index: every key by a stale (local) read, and a sample by linearizable reads.
fn check_replica(c: &Cluster, i: usize, expected: &BTreeMap<String, Vec<u8>>) {
    let leader = c.wait_leader(None);
    let commit = wait_until("the leader's commit index", PATIENCE, || status_u64(c, leader, "commit_index"));
    let caught_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(&format!("node {} to apply index {commit}", i + 1), PATIENCE, || {
            (status_u64(c, i, "applied_index")? >= commit).then_some(())
        })
    }));
    if let Err(e) = caught_up {
        for j in 0..3 {
            eprintln!("node {} status: {:?}", j + 1, c.status(j));
            let metrics = c.request(j, "GET", "/metrics", None).text();
            let peers = metrics.lines().filter(|l| l.starts_with("raft_peer_") || l.starts_with("raft_pre_votes"));
            eprintln!("node {} metrics:\n{}", j + 1, peers.collect::<Vec<_>>().join("\n"));
        }
        std::panic::resume_unwind(e);
    }
    let mut conn = Connection::new(&c.nodes[i].http.to_string(), Duration::from_secs(15)).expect("address");
    for k in 0..KEYS {
        let key = key(k);
        let linearizable = k % 50 == 0;
        let path = if linearizable { format!("/kv/{key}") } else { format!("/kv/{key}?stale") };
        let r = wait_until(&format!("GET {path} on node {}", i + 1), PATIENCE, || {
            let r = conn.request("GET", &path, None);
            matches!(r.status, 200 | 404).then_some(r)
        });
        let got = (r.status == 200).then_some(r.body);
        assert_eq!(got.as_ref(), expected.get(&key), "node {} GET {path}", i + 1);
    }
}

/// Bytes in the log segments (`*.seg`) of a data directory, and the number of snapshot
/// files (`*.snap`) in it.
fn log_bytes_and_snapshots(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut snaps = 0;
    for e in std::fs::read_dir(dir).expect("read the data directory") {
        let e = e.expect("directory entry");
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".seg") {
            bytes += e.metadata().expect("metadata").len();
        } else if name.ends_with(".snap") {
            snaps += 1;
        }
    }
    (bytes, snaps)
}

#[test]
fn a_follower_behind_the_purge_point_catches_up_by_snapshot_and_a_restarted_cluster_recovers_from_snapshots() {
    let mut c = Cluster::start(KV, 3, node_args);
    let leader = c.wait_leader(None);
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.put(leader, "before", b"the follower has this one");
    wait_until("the follower to apply the first write", PATIENCE, || {
        (status_u64(&c, follower, "applied_index")? >= status_u64(&c, leader, "commit_index")?).then_some(())
    });
    let follower_last = status_u64(&c, follower, "last_log_index").expect("status");
    c.kill9(follower);

    // Round 1 with the follower down: the others compact past what it holds.
    let mut expected = BTreeMap::new();
    write_round(&c, &[leader, other], 1, 7, &mut expected);
    expected.insert("before".into(), b"the follower has this one".to_vec());
    for i in [leader, other] {
        let first = status_u64(&c, i, "first_log_index").expect("status");
        assert!(
            first > follower_last + 1,
            "node {} purged its log only to {first}, the follower held up to {follower_last}",
            i + 1
        );
        assert!(status_u64(&c, i, "snapshot_index").expect("status") >= AFTER, "node {} took no snapshot", i + 1);
    }

    // The follower comes back: the entries it needs are gone, so it gets a snapshot.
    c.spawn(follower);
    c.wait_serving(follower);
    check_replica(&c, follower, &expected);
    let snapshot = status_u64(&c, follower, "snapshot_index").expect("status");
    let first = status_u64(&c, follower, "first_log_index").expect("status");
    assert!(snapshot > follower_last && first > follower_last + 1, "no snapshot installed: {:?}", c.status(follower));
    let log = c.log_tail(follower, 10_000);
    assert!(log.contains("state machine restored from a snapshot"), "the follower's log:\n{log}");

    // Round 2 with everyone up, then every node killed at once.
    let leader = c.wait_leader(None);
    write_round(&c, &[leader, (leader + 1) % 3, (leader + 2) % 3], 2, 5, &mut expected);
    expected.insert("before".into(), b"the follower has this one".to_vec());
    let commit = status_u64(&c, leader, "commit_index").expect("status");
    assert!(commit > 2 * WRITES, "commit index {commit} after two rounds");
    let mut snapshots = Vec::new();
    for i in 0..3 {
        wait_until(&format!("node {} to apply index {commit}", i + 1), PATIENCE, || {
            (status_u64(&c, i, "applied_index")? >= commit).then_some(())
        });
        snapshots.push(status_u64(&c, i, "snapshot_index").expect("status"));
    }
    for i in 0..3 {
        c.kill9(i);
    }

    // The log on disk holds at most the entries since the last snapshot (fewer than
    // AFTER, or a snapshot would be due), the KEEP entries kept behind it, and one
    // segment: the one holding the purge point, which is deleted only once wholly
    // purged, or the zero-filled space preallocated ahead of the last record (1 MiB,
    // SEGMENT here). One snapshot file each.
    let entry_max = VALUE_LEN as u64 + 64;
    let bound = (AFTER + KEEP) * entry_max + 2 * SEGMENT;
    for i in 0..3 {
        let (bytes, snaps) = log_bytes_and_snapshots(&c.nodes[i].data_dir);
        assert!(bytes <= bound, "node {} keeps {bytes} bytes of log, more than {bound}", i + 1);
        assert_eq!(snaps, 1, "node {} keeps {snaps} snapshot files", i + 1);
    }

    // Everyone restarts from a snapshot and applies only the log after it.
    for i in 0..3 {
        c.spawn(i);
    }
    for i in 0..3 {
        c.wait_serving(i);
    }
    for (i, &had) in snapshots.iter().enumerate() {
        let s = c.status(i).expect("status");
        let restored = s["snapshot_index"].as_u64().unwrap();
        assert!(restored >= had, "node {} came back with snapshot {restored}, had {had}", i + 1);
        assert!(s["first_log_index"].as_u64().unwrap() > 1, "node {} replays from index 1: {s}", i + 1);
    }
    for i in 0..3 {
        check_replica(&c, i, &expected);
    }
}

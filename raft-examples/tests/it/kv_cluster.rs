//! Three real `kv` processes on loopback: writes and linearizable reads through any node,
//! the leader killed with SIGKILL, the whole cluster killed and restarted, and a node
//! paused with SIGSTOP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{wait_until, Cluster, ReplyJson, PATIENCE};

const KV: &str = env!("CARGO_BIN_EXE_kv");

fn start() -> Cluster {
    let c = Cluster::start(KV, 3, |_| Vec::new());
    c.wait_leader(None);
    c
}

#[test]
fn writes_and_linearizable_reads_through_any_node() {
    let c = start();
    let s = c.status(0).expect("status");
    for field in ["id", "role", "term", "leader", "commit_index", "applied_index"] {
        assert!(s.get(field).is_some(), "/status lacks {field}: {s}");
    }
    let runtime = if cfg!(feature = "tokio") { "tokio" } else { "smol" };
    assert_eq!(s["runtime"], runtime, "the app runs on the runtime its features choose");
    let roles: Vec<String> = (0..3).map(|i| c.status(i).unwrap()["role"].as_str().unwrap().to_string()).collect();
    assert_eq!(roles.iter().filter(|r| *r == "leader").count(), 1, "{roles:?}");

    // Every write through one node is visible to a linearizable read through the next,
    // right after the write is acknowledged.
    for i in 0..30usize {
        let key = format!("key{i}");
        let value = format!("value-{i}");
        let r = c.put(i % 3, &key, value.as_bytes());
        assert_eq!(r.json()["ok"], true, "{}", r.text());
        assert_eq!(c.get((i + 1) % 3, &key).as_deref(), Some(value.as_bytes()), "read of {key} after its write");
    }
    // Overwrites too.
    for i in 0..9usize {
        let value = format!("round-{i}");
        c.put(i % 3, "hot", value.as_bytes());
        for j in 0..3 {
            assert_eq!(c.get(j, "hot").as_deref(), Some(value.as_bytes()));
        }
    }

    // Compare-and-set and delete through followers as well as the leader.
    for i in 0..3 {
        let key = format!("cas{i}");
        let r = c.request(i, "POST", &format!("/kv/{key}/cas"), Some(br#"{"expected": null, "new": "one"}"#));
        assert_eq!(r.status, 200, "{}", r.text());
        let r = c.request((i + 1) % 3, "POST", &format!("/kv/{key}/cas"), Some(br#"{"expected": null, "new": "x"}"#));
        assert_eq!(r.status, 409, "{}", r.text());
        assert_eq!(r.json()["current"], "one");
        let r =
            c.request((i + 2) % 3, "POST", &format!("/kv/{key}/cas"), Some(br#"{"expected": "one", "new": "two"}"#));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(c.get(i, &key).as_deref(), Some(&b"two"[..]));
        let r = c.request((i + 1) % 3, "DELETE", &format!("/kv/{key}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(c.get((i + 2) % 3, &key), None);
        let r = c.request(i, "POST", &format!("/kv/{key}/cas"), Some(br#"{"expected": "two", "new": "three"}"#));
        assert_eq!(r.status, 409, "{}", r.text());
        assert_eq!(r.json()["current"], serde_json::Value::Null);
    }

    // Binary values and percent-encoded keys come back as they went in.
    let binary: Vec<u8> = (0..=255u8).collect();
    c.put(1, "bin%2Fary%20key", &binary);
    assert_eq!(c.get(2, "bin%2Fary%20key"), Some(binary));

    // A stale read answers from the local replica; once the replicas caught up it agrees.
    wait_until("every replica to hold key29", PATIENCE, || {
        (0..3).all(|i| c.request(i, "GET", "/kv/key29?stale", None).body == b"value-29").then_some(())
    });

    // Every node reports the same commit index once idle, and has applied it.
    wait_until("the replicas to converge", PATIENCE, || {
        let s: Vec<_> = (0..3).map(|i| c.status(i).unwrap()).collect();
        let commit = s[0]["commit_index"].as_u64();
        s.iter().all(|x| x["commit_index"].as_u64() == commit && x["applied_index"].as_u64() == commit).then_some(())
    });
}

#[test]
fn killed_leader_is_replaced_writes_continue_and_it_catches_up_after_restart() {
    let mut c = start();
    for i in 0..20 {
        c.put(i % 3, &format!("before{i}"), b"x");
    }
    let old = c.wait_leader(None);
    let killed_at = Instant::now();
    c.kill9(old);
    let new = c.wait_leader(Some(old));
    let took = killed_at.elapsed();
    eprintln!("node {} took over {took:?} after node {} was killed", new + 1, old + 1);
    assert!(took < Duration::from_secs(10), "a new leader took {took:?}");
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for i in 0..20 {
        c.put(others[i % 2], &format!("after{i}"), format!("v{i}").as_bytes());
    }
    for i in 0..20 {
        assert_eq!(c.get(others[(i + 1) % 2], &format!("after{i}")).as_deref(), Some(format!("v{i}").as_bytes()));
    }
    assert_ne!(new, old);

    // The old leader restarts from its data directory and catches up.
    c.spawn(old);
    c.wait_serving(old);
    let target = c.status(new).expect("leader status")["commit_index"].as_u64().expect("commit index");
    wait_until("the restarted node to apply everything", PATIENCE, || {
        c.status(old).and_then(|s| s["applied_index"].as_u64()).filter(|&a| a >= target)
    });
    for i in 0..20 {
        let r = c.request(old, "GET", &format!("/kv/after{i}?stale"), None);
        assert_eq!((r.status, r.body), (200, format!("v{i}").into_bytes()));
    }
    // And serves linearizable reads and writes again.
    c.put(old, "back", b"yes");
    assert_eq!(c.get(old, "back").as_deref(), Some(&b"yes"[..]));
    assert_eq!(c.get(old, "before3").as_deref(), Some(&b"x"[..]));
}

#[test]
fn all_nodes_killed_and_restarted_keep_every_acknowledged_write() {
    let mut c = start();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = (0..3).map(|i| c.url(i, "")).collect();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (acked, stop, base) = (acked.clone(), stop.clone(), urls[w].clone());
            std::thread::spawn(move || {
                let agent = crate::support::client();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (key, value) = (format!("w{w}-{n}"), format!("value {w} {n}"));
                    let r = crate::support::request(&agent, "PUT", &format!("{base}/kv/{key}"), Some(value.as_bytes()));
                    if r.status == 200 {
                        acked.lock().unwrap().insert(key, value);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    wait_until("some writes to be acknowledged", PATIENCE, || (acked.lock().unwrap().len() >= 150).then_some(()));
    // Kill every node while writes are in flight.
    for i in 0..3 {
        c.kill9(i);
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().expect("writer thread");
    }
    let acked = acked.lock().unwrap().clone();

    for i in 0..3 {
        c.spawn(i);
    }
    for i in 0..3 {
        c.wait_serving(i);
    }
    c.wait_leader(None);
    for (n, (key, value)) in acked.iter().enumerate() {
        assert_eq!(c.get(n % 3, key).as_deref(), Some(value.as_bytes()), "acknowledged write {key} lost");
    }
    // The restarted cluster takes new writes.
    c.put(2, "after-restart", b"ok");
    assert_eq!(c.get(0, "after-restart").as_deref(), Some(&b"ok"[..]));
}

/// Pauses node `paused` while writes go on through the others, resumes it, and checks
/// that every linearizable read it answers is current (it may answer 503 while it finds
/// its place, never a missing or old value), and that it soon answers them all.
fn pause_writes_resume_and_read(c: &mut Cluster, paused: usize, round: usize) {
    c.pause(paused);
    let others: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    let mut expected = BTreeMap::new();
    // Each key is written once (retries repeat the same value), so a write whose first
    // attempt timed out cannot be mistaken for a newer one.
    for i in 0..20 {
        let key = format!("p{round}-{i}");
        let value = format!("r{round}-{i}");
        c.put(others[i % 2], &key, value.as_bytes());
        expected.insert(key, value);
    }
    c.resume(paused);
    for (key, value) in &expected {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = c.request(paused, "GET", &format!("/kv/{key}"), None);
            match r.status {
                200 => {
                    assert_eq!(r.text(), *value, "node {} served a stale value for {key}", paused + 1);
                    break;
                }
                404 => panic!("node {} answered 404 for {key}, which holds {value}", paused + 1),
                0 | 503 => {
                    assert!(Instant::now() < deadline, "node {} did not answer for {key}: {}", paused + 1, r.text());
                    std::thread::sleep(Duration::from_millis(25));
                }
                s => panic!("GET {key}: {s} {}", r.text()),
            }
        }
    }
    c.wait_leader(None);
}

#[test]
fn paused_node_resumes_and_serves_only_current_linearizable_reads() {
    let mut c = start();
    for i in 0..5 {
        c.put(i % 3, &format!("before{i}"), b"x");
    }
    // First the leader: on waking it may still believe it leads.
    let leader = c.wait_leader(None);
    pause_writes_resume_and_read(&mut c, leader, 0);
    // Then a follower.
    let leader = c.wait_leader(None);
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    pause_writes_resume_and_read(&mut c, follower, 1);
}

#[test]
fn sigterm_stops_a_node_cleanly_and_it_restarts_from_its_data() {
    let mut c = start();
    c.put(0, "kept", b"across a clean restart");
    let leader = c.wait_leader(None);
    assert!(c.terminate(leader), "the node did not exit cleanly on SIGTERM");
    c.wait_leader(Some(leader));
    c.spawn(leader);
    c.wait_serving(leader);
    assert_eq!(c.get(leader, "kept").as_deref(), Some(&b"across a clean restart"[..]));
}

/// With both runtimes compiled, nodes on tokio and on smol form one cluster.
#[cfg(all(feature = "tokio", feature = "smol"))]
#[test]
fn nodes_on_tokio_and_smol_form_one_cluster() {
    let c = Cluster::start(KV, 3, |id| vec!["--runtime".into(), if id == 3 { "smol" } else { "tokio" }.into()]);
    c.wait_leader(None);
    assert_eq!(c.status(2).expect("status")["runtime"], "smol");
    assert_eq!(c.status(0).expect("status")["runtime"], "tokio");
    for i in 0..9usize {
        c.put(i % 3, &format!("k{i}"), b"v");
        assert_eq!(c.get((i + 1) % 3, &format!("k{i}")).as_deref(), Some(&b"v"[..]));
    }
}

/// The scheduling policy (`stat` field 41) of every thread of process `pid`.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task list") {
        let path = task.expect("task").path().join("stat");
        let Ok(stat) = std::fs::read_to_string(&path) else { continue };
        let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
        out.push(after_name.split(' ').nth(41 - 3).expect("policy field").parse().expect("a number"));
    }
    out
}

/// A node's threads, the runtime's workers and store threads included, run under
/// SCHED_BATCH (3) by default, and under the normal policy (0) with `--scheduling normal`.
#[cfg(target_os = "linux")]
#[test]
fn node_threads_are_batch_scheduled_unless_asked_otherwise() {
    let c = Cluster::start(KV, 3, |id| if id == 3 { vec!["--scheduling".into(), "normal".into()] } else { Vec::new() });
    c.wait_leader(None);
    for i in 0..20usize {
        c.put(i % 3, &format!("k{i}"), b"v");
    }
    for (i, want) in [(0, 3), (1, 3), (2, 0)] {
        let policies = thread_policies(c.pid(i).as_raw() as u32);
        assert!(policies.len() >= 3, "node {i} has threads {policies:?}");
        assert!(policies.iter().all(|&p| p == want), "node {i}: policies {policies:?}, want all {want}");
    }
}

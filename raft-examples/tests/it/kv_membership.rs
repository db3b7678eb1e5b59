//! Changing a running `kv` cluster through the admin API: three nodes bootstrap, a
//! fourth starts empty with `--join`, is added as a learner and promoted, takes
//! leadership, and node 1 is removed and stopped, all while writes go on; every
//! acknowledged write is readable at the end.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_examples::launch::{app_command_line, client, Member, Spec};

use crate::support::{wait_until, Cluster, Reply, ReplyJson, PATIENCE};

const KV: &str = env!("CARGO_BIN_EXE_kv");
const TOKEN: &str = "membership-test-token";

/// Nodes 1..=3 bootstrap; node 4 joins through them.
fn command_line(members: &[Member], i: usize) -> Vec<String> {
    let founders = &members[..3];
    let mut args = if i < 3 {
        app_command_line(founders, i)
    } else {
        let join = founders.iter().map(|m| format!("{}={}", m.id, m.raft)).collect::<Vec<_>>().join(",");
        let m = &members[i];
        vec![
            "--id".into(),
            m.id.to_string(),
            "--listen".into(),
            m.raft.to_string(),
            "--http".into(),
            m.http.to_string(),
            "--join".into(),
            join,
            "--data-dir".into(),
            m.data_dir.display().to_string(),
        ]
    };
    args.push(format!("--admin-token={TOKEN}"));
    args
}

/// An admin request to node index `i` with the token.
fn admin(c: &Cluster, i: usize, method: &str, path: &str, body: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    let addr = c.nodes[i].http.to_string();
    client::request_with_headers(
        None,
        &addr,
        method,
        path,
        &[("Authorization", &auth)],
        Some(body.as_bytes()),
        Duration::from_secs(30),
    )
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect()).unwrap_or_default()
}

/// Writes keys through nodes 2 and 3 until `stop`, keeping the acknowledged ones.
fn writer(c: &Cluster, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    let addrs = [c.nodes[1].http.to_string(), c.nodes[2].http.to_string()];
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("w{n}");
            let r =
                client::request(&addrs[n as usize % 2], "PUT", &format!("/kv/{key}"), Some(key.as_bytes()), PATIENCE);
            match r.status {
                200 => acked.lock().unwrap().push(key),
                0 | 503 => std::thread::sleep(Duration::from_millis(20)),
                s => panic!("PUT {key}: {s} {}", r.text()),
            }
            n += 1;
        }
    })
}

#[test]
fn a_joined_node_is_added_promoted_leads_and_the_first_is_removed() {
    let mut spec = Spec::app(KV, 4);
    spec.command_line = Arc::new(command_line);
    let mut c = Cluster::start_spec(spec);
    c.wait_leader(None);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(&c, stop.clone(), acked.clone());

    // Errors first: no token, a malformed body, an unknown voter.
    let r = c.request(0, "POST", "/cluster/voters", Some(br#"{"voters": [1, 2, 3, 4]}"#));
    assert_eq!(r.status, 401, "{}", r.text());
    let r = admin(&c, 1, "POST", "/cluster/learners", r#"{"id": 4}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = admin(&c, 1, "POST", "/cluster/voters", r#"{"voters": [1, 2, 3, 4]}"#);
    assert_eq!(r.status, 409, "{}", r.text());

    // Add node 4 as a learner, through a node that may be a follower.
    let body = format!(r#"{{"id": 4, "raft": "{}", "http": "{}"}}"#, c.nodes[3].raft, c.nodes[3].http);
    let r = admin(&c, 1, "POST", "/cluster/learners", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ok"], true);
    assert!(r.json()["index"].as_u64().is_some_and(|i| i > 1), "{}", r.text());

    let r = admin(&c, 2, "POST", "/cluster/voters", r#"{"voters": [1, 2, 3, 4]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for i in 0..4 {
        let shown = wait_until(&format!("node {} to show four voters", i + 1), PATIENCE, || {
            let s = c.request(i, "GET", "/cluster", None).json();
            (ids(&s["voters"]) == [1, 2, 3, 4] && s["joint"].is_null()).then_some(s)
        });
        assert_eq!(ids(&shown["learners"]), Vec::<u64>::new());
        for m in &c.nodes {
            let node = &shown["nodes"][m.id.to_string()];
            assert_eq!(node["raft"], m.raft.to_string(), "{shown}");
            assert_eq!(node["http"], m.http.to_string(), "{shown}");
        }
    }

    let r = admin(&c, 0, "POST", "/cluster/transfer-leader", r#"{"to": 4}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["leader"], 4);
    wait_until("node 4 to lead", PATIENCE, || (c.status(3)?["role"] == "leader").then_some(()));

    let r = admin(&c, 1, "DELETE", "/cluster/nodes/1", "");
    assert_eq!(r.status, 200, "{}", r.text());
    for i in 1..4 {
        wait_until(&format!("node {} to drop node 1", i + 1), PATIENCE, || {
            let s = c.request(i, "GET", "/cluster", None).json();
            (ids(&s["voters"]) == [2, 3, 4] && s["nodes"].get("1").is_none()).then_some(())
        });
    }
    assert!(c.terminate(0), "node 1 stops cleanly");

    // Writes go on without node 1; then every acknowledged one is there.
    let before = acked.lock().unwrap().len();
    wait_until("more writes after node 1 left", PATIENCE, || (acked.lock().unwrap().len() > before + 5).then_some(()));
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    let distinct: BTreeSet<&String> = acked.iter().collect();
    for key in distinct {
        assert_eq!(c.get(3, key).as_deref(), Some(key.as_bytes()), "acknowledged {key} lost");
    }
}

/// Safe start: a node whose data directory was wiped and that is started again under its
/// old id with `--peers` is refused by the peers that know its earlier directory: it
/// exits, before bootstrapping, with a message that says to add it as a new node, and the
/// cluster goes on without it.
#[test]
fn a_wiped_node_restarted_under_its_old_id_is_refused() {
    let mut c = Cluster::start(KV, 3, |_| vec![]);
    let l = c.wait_leader(None);
    c.put(l, "before", b"1");
    let victim = (l + 1) % 3;
    assert_eq!(c.get(victim, "before").as_deref(), Some(&b"1"[..]), "the victim took part");
    assert!(c.terminate(victim), "node {} stops cleanly", victim + 1);
    let dir = c.nodes[victim].data_dir.clone();
    std::fs::remove_dir_all(&dir).expect("wipe the data directory");

    c.spawn(victim);
    let status = wait_until("the wiped node to exit", PATIENCE, || c.exited(victim));
    assert!(!status.success(), "refused: {status}");
    let log = std::fs::read_to_string(&c.nodes[victim].log).expect("the node's log");
    let id = c.nodes[victim].id;
    assert!(log.contains(&format!("may not rejoin as node {id}")) && log.contains("--join"), "{log}");
    assert_eq!(log.matches("bootstrapping the cluster").count(), 1, "only the first start bootstraps: {log}");

    // The others still make progress, and the refusal is lasting: a second try fails too.
    c.put(l, "after", b"2");
    assert_eq!(c.get((victim + 1) % 3, "after").as_deref(), Some(&b"2"[..]));
    c.kill9(victim); // reaps the exited process
    c.spawn(victim);
    let status = wait_until("the wiped node to exit again", PATIENCE, || c.exited(victim));
    assert!(!status.success(), "refused again: {status}");
}

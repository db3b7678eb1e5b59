//! Changing a running `kv` cluster through the admin API, while writes go on: nodes 1..=3
//! bootstrap, the others start empty with `--join` and are added as learners and
//! promoted; leadership moves, the leader itself is removed, a killed node is replaced by
//! a new one, the cluster grows to five and shrinks back; a wiped node is refused under
//! its old id. Every acknowledged write is readable at the end.

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
    writer_through(c, &[1, 2], "w", stop, acked)
}

/// Writes keys named `prefix<n>` through the nodes of index `through` in turn until
/// `stop`, keeping the acknowledged ones; a refused or lost request (503, no connection)
/// is retried with the next key.
fn writer_through(
    c: &Cluster,
    through: &[usize],
    prefix: &str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    let addrs: Vec<String> = through.iter().map(|&i| c.nodes[i].http.to_string()).collect();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{prefix}{n}");
            let addr = &addrs[n as usize % addrs.len()];
            let r = client::request(addr, "PUT", &format!("/kv/{key}"), Some(key.as_bytes()), PATIENCE);
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

/// The leader as the nodes of index `among` see it: one of them leads and a majority of
/// them name it in its term.
fn leader_among(c: &Cluster, among: &[usize]) -> Option<usize> {
    let statuses: Vec<(usize, serde_json::Value)> = among.iter().filter_map(|&i| Some((i, c.status(i)?))).collect();
    let (i, s) = statuses.iter().find(|(_, s)| s["role"] == "leader")?;
    let agree = statuses.iter().filter(|(_, o)| o["leader"] == s["id"] && o["term"] == s["term"]).count();
    (agree * 2 > among.len()).then_some(*i)
}

fn wait_leader_among(c: &Cluster, among: &[usize]) -> usize {
    wait_until(&format!("a leader among nodes {among:?}"), PATIENCE, || leader_among(c, among))
}

/// Waits until every node of index `on` shows `voters` (not joint) and no learner.
fn wait_voters(c: &Cluster, on: &[usize], voters: &[u64]) {
    for &i in on {
        wait_until(&format!("node {} to show voters {voters:?}", i + 1), PATIENCE, || {
            let s = c.request(i, "GET", "/cluster", None).json();
            (ids(&s["voters"]) == voters && s["joint"].is_null() && ids(&s["learners"]).is_empty()).then_some(())
        });
    }
}

fn add_learner(c: &Cluster, through: usize, i: usize) {
    let body = format!(r#"{{"id": {}, "raft": "{}", "http": "{}"}}"#, c.nodes[i].id, c.nodes[i].raft, c.nodes[i].http);
    let r = admin(c, through, "POST", "/cluster/learners", &body);
    assert_eq!(r.status, 200, "adding node {} as a learner: {}", i + 1, r.text());
}

fn set_voters(c: &Cluster, through: usize, voters: &[u64]) {
    let r = admin(c, through, "POST", "/cluster/voters", &format!(r#"{{"voters": {voters:?}}}"#));
    assert_eq!(r.status, 200, "voters {voters:?}: {}", r.text());
}

/// Stops the writers and checks every acknowledged key through node index `i`.
fn stop_and_check(
    c: &Cluster,
    i: usize,
    stop: &AtomicBool,
    writers: Vec<std::thread::JoinHandle<()>>,
    acked: &Mutex<Vec<String>>,
) {
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    for key in &acked {
        assert_eq!(c.get(i, key).as_deref(), Some(key.as_bytes()), "acknowledged {key} lost");
    }
}

fn wait_more_writes(acked: &Mutex<Vec<String>>, what: &str) {
    let before = acked.lock().unwrap().len();
    wait_until(what, PATIENCE, || (acked.lock().unwrap().len() >= before + 20).then_some(()));
}

/// A node killed for good is replaced by a new machine (a new id and an empty data
/// directory, started with `--join`): the dead node is removed, the new one added as a
/// learner and promoted, all while writes go on; the new voter then counts for commit.
#[test]
fn a_killed_node_is_replaced_by_a_new_one_while_writes_go_on() {
    let mut spec = Spec::app(KV, 4);
    spec.command_line = Arc::new(command_line);
    let mut c = Cluster::start_spec(spec);
    let l = wait_leader_among(&c, &[0, 1, 2]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let survivors: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let w = writer_through(&c, &survivors, "r", stop.clone(), acked.clone());
    wait_more_writes(&acked, "writes before the kill");

    // The leader's machine dies.
    c.kill9(l);
    let dead = c.nodes[l].id;
    let new_leader = wait_leader_among(&c, &survivors);
    wait_more_writes(&acked, "writes under the new leader");
    let r = admin(&c, survivors[0], "DELETE", &format!("/cluster/nodes/{dead}"), "");
    assert_eq!(r.status, 200, "removing the dead node: {}", r.text());
    add_learner(&c, survivors[1], 3);
    let mut voters: Vec<u64> = survivors.iter().map(|&i| c.nodes[i].id).chain([c.nodes[3].id]).collect();
    voters.sort_unstable();
    set_voters(&c, new_leader, &voters);
    let members: Vec<usize> = survivors.iter().copied().chain([3]).collect();
    wait_voters(&c, &members, &voters);
    wait_more_writes(&acked, "writes with the new voter");

    // The new node now counts: with one of the survivors stopped, the other and the new
    // node are the majority.
    let other = survivors.iter().copied().find(|&i| i != new_leader).expect("a follower");
    assert!(c.terminate(other), "node {} stops cleanly", other + 1);
    wait_more_writes(&acked, "writes committed by the leader and the new node");
    stop_and_check(&c, 3, &stop, vec![w], &acked);
}

/// The cluster grows from three voters to five (two learners promoted at once: a joint
/// configuration), its leader is removed (it hands over and steps down), and it shrinks
/// back to three (another joint change), while writes go on through the new nodes.
#[test]
fn a_cluster_grows_to_five_removes_its_leader_and_shrinks_back_to_three() {
    let mut spec = Spec::app(KV, 5);
    spec.command_line = Arc::new(command_line);
    let mut c = Cluster::start_spec(spec);
    let l = wait_leader_among(&c, &[0, 1, 2]);
    add_learner(&c, 0, 3);
    add_learner(&c, 1, 4);
    set_voters(&c, 2, &[1, 2, 3, 4, 5]);
    wait_voters(&c, &[0, 1, 2, 3, 4], &[1, 2, 3, 4, 5]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer_through(&c, &[3, 4], "g", stop.clone(), acked.clone());
    wait_more_writes(&acked, "writes on five voters");

    // The leader removes itself: it keeps leading until the change commits, then hands
    // over to another voter and steps down.
    let old = c.nodes[l].id;
    let term = c.status(l).expect("status")["term"].as_u64().expect("term");
    let r = admin(&c, 3, "DELETE", &format!("/cluster/nodes/{old}"), "");
    assert_eq!(r.status, 200, "removing the leader: {}", r.text());
    let rest: Vec<usize> = (0..5).filter(|&i| i != l).collect();
    let next = wait_leader_among(&c, &rest);
    let s = c.status(next).expect("status");
    assert_eq!(s["term"].as_u64(), Some(term + 1), "one election, started by the handover: {s}");
    let four: Vec<u64> = rest.iter().map(|&i| c.nodes[i].id).collect();
    wait_voters(&c, &rest, &four);
    assert!(c.terminate(l), "the removed leader stops cleanly");
    wait_more_writes(&acked, "writes after the leader left");

    // Back to three voters: the two founders left go (a joint change).
    let keep: Vec<u64> = vec![c.nodes[3].id, c.nodes[4].id, c.nodes[rest[0]].id]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    set_voters(&c, 3, &keep);
    let staying: Vec<usize> = (0..5).filter(|&i| keep.contains(&c.nodes[i].id)).collect();
    wait_voters(&c, &staying, &keep);
    for i in 0..5 {
        if !keep.contains(&c.nodes[i].id) && i != l {
            assert!(c.terminate(i), "removed node {} stops cleanly", i + 1);
        }
    }
    wait_leader_among(&c, &staying);
    wait_more_writes(&acked, "writes on three voters again");
    stop_and_check(&c, 3, &stop, vec![w], &acked);
}

/// Leadership moves on request while eight clients write as fast as they can: each
/// transfer completes with one election, and no acknowledged write is lost.
#[test]
fn leadership_moves_under_heavy_write_load() {
    let mut spec = Spec::app(KV, 3);
    spec.command_line = Arc::new(command_line);
    let c = Cluster::start_spec(spec);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|t| writer_through(&c, &[t % 3, (t + 1) % 3], &format!("t{t}-"), stop.clone(), acked.clone()))
        .collect();
    wait_more_writes(&acked, "writes before the transfers");
    for round in 0..3 {
        let l = wait_leader_among(&c, &[0, 1, 2]);
        let to = (l + 1 + round % 2) % 3;
        let term = c.status(l).expect("status")["term"].as_u64().expect("term");
        let r = admin(&c, to, "POST", "/cluster/transfer-leader", &format!(r#"{{"to": {}}}"#, c.nodes[to].id));
        assert_eq!(r.status, 200, "transfer {round} to node {}: {}", to + 1, r.text());
        assert_eq!(r.json()["leader"].as_u64(), Some(c.nodes[to].id));
        let s = c.status(to).expect("status");
        assert_eq!(s["term"].as_u64(), Some(term + 1), "one election per transfer: {s}");
        wait_more_writes(&acked, "writes under the new leader");
    }
    stop_and_check(&c, 0, &stop, writers, &acked);
}

//! Real network partitions between the processes of a `kv` cluster: every node has a
//! loopback address of its own and nftables drops the packets between chosen nodes
//! ([`Firewall`]). An isolated leader is replaced and its writes are lost, never
//! acknowledged; a node that sees both halves keeps the cluster writable; and clients
//! see a linearizable history while partitions, one-way blocks, bridges, SIGKILL and
//! SIGSTOP come and go. Without nftables or root the tests skip with a message (`.ci/run`
//! installs nftables and runs as root).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use raft_examples::launch::firewall::Firewall;
use raft_examples::launch::{Ports, Spec};

use crate::kv_linearizability::Clients;
use crate::support::{wait_until, Cluster, PATIENCE};

const KV: &str = env!("CARGO_BIN_EXE_kv");

/// The firewall, or `None` after saying why the test skips.
fn firewall(test: &str) -> Option<Firewall> {
    match Firewall::new() {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("skipping {test}: no nftables here ({e}); install Debian's nftables and run as root");
            None
        }
    }
}

/// `n` kv nodes, node N on the loopback address 127.a.b.N of its own (a and b picked at
/// random, so that tests running at once do not share addresses), and those addresses.
fn start(n: usize) -> (Cluster, Vec<IpAddr>) {
    let net = [fastrand::u8(100..=250), fastrand::u8(1..=254)];
    let mut spec = Spec::app(KV, n);
    spec.ports = Ports::Loopback { net };
    let c = Cluster::start_spec(spec);
    let ips = c.nodes.iter().map(|m| m.source.expect("a node address of its own")).collect();
    (c, ips)
}

/// The addresses of every node but `i`.
fn others(ips: &[IpAddr], i: usize) -> Vec<IpAddr> {
    ips.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &ip)| ip).collect()
}

/// Writes a fresh key through every node (retrying on 503 until each succeeds) and
/// reads every key back through every node; returns how long the writes took.
fn every_node_writes_and_agrees(c: &Cluster, tag: &str, expect: &[(&str, Option<&[u8]>)]) -> Duration {
    let started = Instant::now();
    for i in 0..c.nodes.len() {
        c.put(i, &format!("{tag}-{i}"), tag.as_bytes());
    }
    let took = started.elapsed();
    for i in 0..c.nodes.len() {
        for j in 0..c.nodes.len() {
            assert_eq!(c.get(i, &format!("{tag}-{j}")).as_deref(), Some(tag.as_bytes()), "node {}", i + 1);
        }
        for (key, value) in expect {
            assert_eq!(c.get(i, key).as_deref(), *value, "{key} through node {}", i + 1);
        }
    }
    took
}

/// Thesis §6.2 and §9.6: a leader cut off from every other node stops being the leader
/// (check-quorum) and a write sent to it is never acknowledged; the others elect a
/// leader and take writes; once the network heals every node takes writes again, the
/// old leader's unacknowledged write is gone and the majority's writes are everywhere.
#[test]
fn an_isolated_leader_is_replaced_and_its_writes_are_never_acknowledged() {
    let Some(fw) = firewall("an_isolated_leader_is_replaced_and_its_writes_are_never_acknowledged") else {
        return;
    };
    let (c, ips) = start(3);
    let old = c.wait_leader(None);
    c.put(old, "before", b"1");

    fw.partition(&[ips[old]], &others(&ips, old)).expect("nft");
    let new = c.wait_leader(Some(old));
    c.put(new, "during", b"2");
    let r = c.request(old, "PUT", "/kv/lost", Some(b"3"));
    assert_ne!(r.status, 200, "an isolated node acknowledged a write: {}", r.text());
    wait_until("the isolated leader to step down", PATIENCE, || {
        c.status(old).filter(|s| s["role"] != "leader").map(|_| ())
    });

    fw.heal().expect("nft");
    let took = every_node_writes_and_agrees(
        &c,
        "after",
        &[("before", Some(b"1".as_slice())), ("during", Some(b"2".as_slice())), ("lost", None)],
    );
    eprintln!("after healing, writes through all three nodes took {took:?}");
}

/// A bridge (thesis §9.6, pre-vote): with nodes A and C unable to reach each other but
/// both reaching B, the cluster stays writable through B the whole time, whoever leads;
/// after healing every node takes writes.
#[test]
fn a_node_that_sees_both_halves_keeps_the_cluster_writable() {
    let Some(fw) = firewall("a_node_that_sees_both_halves_keeps_the_cluster_writable") else {
        return;
    };
    let (c, ips) = start(3);
    let leader = c.wait_leader(None);
    // Cut the leader from one follower; the other is the bridge.
    let (cut, bridge) = ((leader + 1) % 3, (leader + 2) % 3);
    let term_before = c.status(leader).and_then(|s| s["term"].as_u64()).expect("the leader's term");
    fw.cut(ips[leader], ips[cut]).expect("nft");
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 0u64;
    while Instant::now() < until {
        c.put(bridge, &format!("bridged-{n}"), b"b");
        n += 1;
    }
    eprintln!(
        "{n} writes through the bridge (node {}) while nodes {} and {} were cut",
        bridge + 1,
        leader + 1,
        cut + 1
    );
    assert!(n > 0);
    // The cut really cut: unless an election took place (a machine so loaded that the
    // bridge missed the leader's heartbeats for an election timeout), the node cut from
    // the leader got none of those writes, since only a leader sends entries, and it is
    // trying to be elected (pre-vote: the bridge, hearing the leader, refuses it).
    let status = |i: usize| c.status(i).expect("status");
    let term = |i: usize| status(i)["term"].as_u64().expect("term");
    let applied = |i: usize| status(i)["applied_index"].as_u64().expect("applied_index");
    let (at_cut, at_bridge) = (applied(cut), applied(bridge));
    eprintln!("terms: before {term_before}, leader {}, bridge {}, cut {}", term(leader), term(bridge), term(cut));
    if term(bridge) == term_before {
        assert!(at_cut + n <= at_bridge, "node {} applied {at_cut}, the bridge {at_bridge}", cut + 1);
        assert_eq!(status(cut)["role"], "candidate");
    }
    fw.heal().expect("nft");
    let last = format!("bridged-{}", n - 1);
    every_node_writes_and_agrees(&c, "healed", &[(&last, Some(b"b".as_slice()))]);
}

/// One fault of the nemesis, undone after a while.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// One node cut from the other two, both ways.
    Minority(usize),
    /// The leader cut from the others.
    IsolatedLeader,
    /// Packets from one node to another dropped, one way.
    OneWay(usize, usize),
    /// Two nodes cut from each other, the third seeing both.
    Bridge(usize),
    /// A node SIGKILLed and restarted afterwards.
    Kill(usize),
    /// A node SIGSTOPped and resumed afterwards.
    Pause(usize),
}

/// Jepsen-style: four clients read, write and compare-and-set through every node while
/// a nemesis mixes symmetric partitions, an isolated leader, one-way blocks, bridges,
/// kill -9 with restart and SIGSTOP with resume; after healing, writes succeed through
/// every node again and the history is linearizable (a check that runs out of budget
/// fails the test).
#[test]
fn clients_see_a_linearizable_history_through_partitions_kills_and_pauses() {
    let Some(fw) = firewall("clients_see_a_linearizable_history_through_partitions_kills_and_pauses") else {
        return;
    };
    let seed =
        std::env::var("KV_PARTITION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (KV_PARTITION_SEED={seed} replays the faults chosen, not the timing)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut c, ips) = start(3);
    c.wait_leader(None);

    let start = Instant::now();
    let urls: Vec<String> = (0..3).map(|i| c.url(i, "")).collect();
    let clients = Clients::start(&urls, &mut rng);

    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(rng.u64(300..800)));
        let fault = match rng.u8(..6) {
            0 => Fault::Minority(rng.usize(..3)),
            1 => Fault::IsolatedLeader,
            2 => {
                let from = rng.usize(..3);
                Fault::OneWay(from, (from + rng.usize(1..3)) % 3)
            }
            3 => Fault::Bridge(rng.usize(..3)),
            4 => Fault::Kill(rng.usize(..3)),
            _ => Fault::Pause(rng.usize(..3)),
        };
        eprintln!("{:>6.1?}: {fault:?}", start.elapsed());
        match fault {
            Fault::Minority(i) => fw.partition(&[ips[i]], &others(&ips, i)).expect("nft"),
            Fault::IsolatedLeader => {
                if let Some(l) = c.leader() {
                    fw.partition(&[ips[l]], &others(&ips, l)).expect("nft");
                }
            }
            Fault::OneWay(from, to) => fw.block(ips[from], ips[to]).expect("nft"),
            Fault::Bridge(b) => fw.cut(ips[(b + 1) % 3], ips[(b + 2) % 3]).expect("nft"),
            Fault::Kill(i) => c.kill9(i),
            Fault::Pause(i) => c.pause(i),
        }
        std::thread::sleep(Duration::from_millis(rng.u64(800..2500)));
        match fault {
            Fault::Kill(i) => {
                c.spawn(i);
                c.wait_serving(i);
            }
            Fault::Pause(i) => c.resume(i),
            _ => fw.heal().expect("nft"),
        }
    }

    // Healed: writes go through every node again.
    let healed = Instant::now();
    for i in 0..3 {
        c.put(i, &format!("healed-{i}"), b"h");
    }
    eprintln!("after the last fault, writes through all three nodes took {:?}", healed.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    clients.stop_and_check(seed);
}

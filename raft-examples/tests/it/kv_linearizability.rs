//! Concurrent clients read, write and compare-and-set a few keys through every node of a
//! real three-process `kv` cluster while nodes are killed with SIGKILL (and restarted)
//! and paused with SIGSTOP (and resumed); the clients' history is then checked for
//! linearizability.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{request, Cluster, ReplyJson};
use raft::testing::linearizability::{check_kv, KvInput, KvOutput, Operation};

const KV: &str = env!("CARGO_BIN_EXE_kv");
const KEYS: [&str; 3] = ["x", "y", "z"];
const CLIENTS: u64 = 4;

type History = Vec<Operation<KvInput, KvOutput>>;

/// One client: random operations on random keys through random nodes until `stop`.
fn client(id: u64, seed: u64, urls: Vec<String>, start: Instant, stop: Arc<AtomicBool>, history: Arc<Mutex<History>>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let agent = crate::support::client();
    let nanos = || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = KEYS[rng.usize(..KEYS.len())].to_string();
        let url = format!("{}/kv/{key}", urls[rng.usize(..urls.len())]);
        let input = match rng.u8(..4) {
            0 | 1 => KvInput::Get { key },
            2 => KvInput::Put { key, value: format!("c{id}-{n}") },
            _ => {
                let expected =
                    if rng.bool() { None } else { Some(format!("c{}-{}", rng.u64(..CLIENTS), rng.u64(..n))) };
                KvInput::Cas { key, expected, new: format!("c{id}-{n}") }
            }
        };
        let call = nanos();
        let r = match &input {
            KvInput::Get { .. } => request(&agent, "GET", &url, None),
            KvInput::Put { value, .. } => request(&agent, "PUT", &url, Some(value.as_bytes())),
            KvInput::Cas { expected, new, .. } => {
                let body = serde_json::json!({ "expected": expected, "new": new }).to_string();
                request(&agent, "POST", &format!("{url}/cas"), Some(body.as_bytes()))
            }
            KvInput::Delete { .. } => unreachable!("the clients do not delete"),
        };
        let ret = nanos();
        if r.status == 0 && r.text().contains("Connection refused") {
            // The node was down: the request was never sent.
            continue;
        }
        let output = match (&input, r.status) {
            (KvInput::Get { .. }, 200) => Some(KvOutput::Value(Some(r.text()))),
            (KvInput::Get { .. }, 404) => Some(KvOutput::Value(None)),
            (KvInput::Put { .. }, 200) => Some(KvOutput::Ok),
            (KvInput::Cas { new, .. }, 200) => Some(KvOutput::CasResult { ok: true, current: Some(new.clone()) }),
            (KvInput::Cas { .. }, 409) => {
                Some(KvOutput::CasResult { ok: false, current: r.json()["current"].as_str().map(str::to_string) })
            }
            (_, 0 | 503) => None,
            (_, s) => panic!("{input:?} answered {s}: {}", r.text()),
        };
        let op = match output {
            Some(output) => Operation { client: id, input, call, ret: Some(ret), output: Some(output) },
            // A read that did not answer had no effect: leave it out.
            None if matches!(input, KvInput::Get { .. }) => continue,
            // A write that did not answer may or may not take effect.
            None => Operation { client: id, input, call, ret: None, output: None },
        };
        history.lock().unwrap().push(op);
        std::thread::sleep(Duration::from_millis(rng.u64(2..15)));
    }
}

/// [`CLIENTS`] clients running [`client`] against `urls`, and their history.
pub(crate) struct Clients {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    /// Starts the clients, each with a seed drawn from `rng`.
    pub(crate) fn start(urls: &[String], rng: &mut fastrand::Rng) -> Clients {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let history: Arc<Mutex<History>> = Arc::default();
        let threads = (0..CLIENTS)
            .map(|id| {
                let (urls, stop, history) = (urls.to_vec(), stop.clone(), history.clone());
                let seed = rng.u64(..);
                std::thread::spawn(move || client(id, seed, urls, start, stop, history))
            })
            .collect();
        Clients { stop, history, threads }
    }

    /// Stops the clients and checks their history for linearizability (running out of
    /// the checker's budget fails too), naming `seed` on failure.
    pub(crate) fn stop_and_check(self, seed: u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("client thread");
        }
        let history = self.history.lock().unwrap().clone();
        let known = history.iter().filter(|o| o.ret.is_some()).count();
        let reads = history.iter().filter(|o| matches!(o.input, KvInput::Get { .. })).count();
        eprintln!(
            "{} operations: {known} answered ({reads} reads), {} with unknown outcome",
            history.len(),
            history.len() - known
        );
        assert!(known >= 100, "too few operations answered ({known}) for the check to mean much");
        let verdict = check_kv(&history, 5_000_000);
        assert!(verdict.is_linearizable(), "seed {seed}: {verdict}");
    }
}

#[test]
fn concurrent_clients_see_a_linearizable_history_while_nodes_are_killed_and_paused() {
    let seed = std::env::var("KV_LIN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (KV_LIN_SEED={seed} replays the choices, not the timing)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut c = Cluster::start(KV, 3, |_| Vec::new());
    c.wait_leader(None);

    let urls: Vec<String> = (0..3).map(|i| c.url(i, "")).collect();
    let clients = Clients::start(&urls, &mut rng);

    // The nemesis: alternately kill a node (restarting it a second later) and pause one
    // (resuming it after a second and a half).
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(800));
        let victim = rng.usize(..3);
        if round % 2 == 0 {
            eprintln!("killing node {}", victim + 1);
            c.kill9(victim);
            std::thread::sleep(Duration::from_secs(1));
            c.spawn(victim);
            c.wait_serving(victim);
        } else {
            eprintln!("pausing node {}", victim + 1);
            c.pause(victim);
            std::thread::sleep(Duration::from_millis(1500));
            c.resume(victim);
        }
    }
    c.wait_leader(None);
    std::thread::sleep(Duration::from_secs(1));
    clients.stop_and_check(seed);
}

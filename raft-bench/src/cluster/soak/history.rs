//! A sampled linearizability check: for one window of the soak, a few clients read,
//! write and compare-and-set three keys of the window's own (so they start absent)
//! through random nodes, and the history is checked with
//! `raft::testing::linearizability::check_kv`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::testing::linearizability::{check_kv, CheckResult, KvInput, KvOutput, Operation};

use super::http::{call, Answer};
use crate::cluster::load::KeyRng;

/// The outcome of one window.
#[derive(Debug)]
pub(super) struct Window {
    /// Operations in the history.
    pub ops: usize,
    /// Writes whose outcome is unknown (no answer).
    pub unknown: usize,
    /// The checker's verdict.
    pub verdict: CheckResult,
}

type History = Arc<Mutex<Vec<Operation<KvInput, KvOutput>>>>;

/// Runs `clients` clients for `length` on keys `<tag>-x`, `<tag>-y`, `<tag>-z` and
/// checks their history.
pub(super) async fn window(endpoints: &[SocketAddr], tag: &str, clients: u64, length: Duration, seed: u64) -> Window {
    let start = Instant::now();
    let history: History = Arc::default();
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let (endpoints, history, tag) = (endpoints.to_vec(), history.clone(), tag.to_string());
            tokio::spawn(client(id, clients, KeyRng::new(seed ^ (id + 1)), endpoints, tag, start, length, history))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let history = std::mem::take(&mut *history.lock().expect("history lock"));
    let unknown = history.iter().filter(|o| o.ret.is_none()).count();
    let verdict = tokio::task::spawn_blocking({
        let history = history.clone();
        move || check_kv(&history, 5_000_000)
    })
    .await
    .unwrap_or(CheckResult::Unknown);
    Window { ops: history.len(), unknown, verdict }
}

/// The next operation of client `id`'s `n`th call.
fn next_input(rng: &mut KeyRng, tag: &str, id: u64, clients: u64, n: u64) -> KvInput {
    let key = format!("{tag}-{}", ["x", "y", "z"][(rng.next_u64() % 3) as usize]);
    match rng.next_u64() % 4 {
        0 | 1 => KvInput::Get { key },
        2 => KvInput::Put { key, value: format!("c{id}-{n}") },
        _ => {
            let expected = (rng.next_u64() & 1 == 0)
                .then(|| format!("c{}-{}", rng.next_u64() % clients, rng.next_u64() % n.max(1)));
            KvInput::Cas { key, expected, new: format!("c{id}-{n}") }
        }
    }
}

/// Sends `input` to `addr`; `None` if it was never sent.
async fn send(addr: SocketAddr, input: &KvInput) -> Option<Option<KvOutput>> {
    let timeout = Duration::from_secs(5);
    let answer = match input {
        KvInput::Get { key } => call(addr, "GET", &format!("/kv/{key}"), b"", timeout).await,
        KvInput::Put { key, value } => call(addr, "PUT", &format!("/kv/{key}"), value.as_bytes(), timeout).await,
        KvInput::Cas { key, expected, new } => {
            let body = serde_json::json!({ "expected": expected, "new": new }).to_string();
            call(addr, "POST", &format!("/kv/{key}/cas"), body.as_bytes(), timeout).await
        }
        KvInput::Delete { .. } => return None,
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some(match (input, answer) {
        (_, Answer::NotSent) => return None,
        (KvInput::Get { .. }, Answer::Got(200, body)) => Some(KvOutput::Value(Some(text(&body)))),
        (KvInput::Get { .. }, Answer::Got(404, _)) => Some(KvOutput::Value(None)),
        (KvInput::Put { .. }, Answer::Got(200, _)) => Some(KvOutput::Ok),
        (KvInput::Cas { new, .. }, Answer::Got(200, _)) => {
            Some(KvOutput::CasResult { ok: true, current: Some(new.clone()) })
        }
        (KvInput::Cas { .. }, Answer::Got(409, body)) => {
            let current = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["current"].as_str().map(str::to_string));
            Some(KvOutput::CasResult { ok: false, current })
        }
        _ => None,
    })
}

/// One client: operations until `length` has passed since `start`.
#[allow(clippy::too_many_arguments)]
async fn client(
    id: u64,
    clients: u64,
    mut rng: KeyRng,
    endpoints: Vec<SocketAddr>,
    tag: String,
    start: Instant,
    length: Duration,
    history: History,
) {
    let nanos = || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut n = 0;
    while start.elapsed() < length {
        n += 1;
        let input = next_input(&mut rng, &tag, id, clients, n);
        let addr = endpoints[(rng.next_u64() % endpoints.len() as u64) as usize];
        let call = nanos();
        let Some(output) = send(addr, &input).await else { continue };
        let ret = nanos();
        let op = match output {
            Some(output) => Operation { client: id, input, call, ret: Some(ret), output: Some(output) },
            // A read without an answer had no effect.
            None if matches!(input, KvInput::Get { .. }) => continue,
            // A write without an answer may or may not take effect.
            None => Operation { client: id, input, call, ret: None, output: None },
        };
        history.lock().expect("history lock").push(op);
        tokio::time::sleep(Duration::from_millis(2 + rng.next_u64() % 10)).await;
    }
}

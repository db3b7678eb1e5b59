//! The lost-write audit. Each writer owns [`KEYS_PER_WRITER`] keys
//! (`audit-<writer>-<slot>`) and writes them in turn, one write at a time, with values
//! never used twice (`<n>` for its `n`th write), through the nodes in turn. Per key it
//! remembers the last acknowledged value and the values of the writes whose outcome it
//! does not know (no answer, or an error that may hide an effect). At the end every key
//! is read back (linearizable reads): it must hold its last acknowledged value, or the
//! value of a write of unknown outcome (which may take effect at any time after it was
//! sent, even after a later write). Anything else, an older acknowledged value or none,
//! is a lost acknowledged write: the writes of one writer to a key are sequential, so an
//! acknowledged write finished before the next one began. The keys are reused, so the
//! audit adds no more than a fixed amount of state however long the soak runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{call, Answer};

/// Keys each writer cycles through.
pub(super) const KEYS_PER_WRITER: u64 = 1000;

/// What one key may hold.
#[derive(Debug, Default)]
struct KeyLedger {
    /// The last acknowledged value.
    acked: Option<u64>,
    /// The values of writes whose outcome is unknown.
    unknown: Vec<u64>,
}

/// Per (writer, slot).
type Ledger = HashMap<(usize, u64), KeyLedger>;

/// Running audit writers.
pub(super) struct Audit {
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    attempts: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the read-back found.
#[derive(Debug)]
pub(super) struct AuditResult {
    /// Writes sent.
    pub attempts: u64,
    /// Writes acknowledged with 200.
    pub acked: u64,
    /// Keys read back.
    pub keys: usize,
    /// Keys that hold less than their last acknowledged value (or nothing), with what
    /// was read.
    pub lost: Vec<String>,
}

/// The value of writer `w`'s `n`th write: what it sends and what the read-back compares.
fn value(n: u64) -> String {
    n.to_string()
}

impl Audit {
    /// Starts `writers` writers against `endpoints`.
    pub(super) fn start(endpoints: Vec<SocketAddr>, writers: usize) -> Audit {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        let attempts = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (endpoints, stop, ledger) = (endpoints.clone(), stop.clone(), ledger.clone());
                let (attempts, acked) = (attempts.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let slot = n % KEYS_PER_WRITER;
                        let addr = endpoints[(n as usize + w) % endpoints.len()];
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let path = format!("/kv/audit-{w}-{slot}");
                        let answer = call(addr, "PUT", &path, value(n).as_bytes(), Duration::from_secs(5)).await;
                        let ok = matches!(answer, Answer::Got(200, _));
                        {
                            let mut ledger = ledger.lock().expect("audit lock");
                            let key = ledger.entry((w, slot)).or_default();
                            match answer {
                                Answer::Got(200, _) => {
                                    key.acked = Some(n);
                                    acked.fetch_add(1, Ordering::Relaxed);
                                }
                                Answer::NotSent => {}
                                Answer::Lost | Answer::Got(..) => key.unknown.push(n),
                            }
                        }
                        if !ok {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Audit { stop, ledger, attempts, acked, tasks }
    }

    /// Writes acknowledged so far.
    pub(super) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops the writers and reads every key with an acknowledged write back through
    /// `endpoints` (retrying each read for up to 30 s while the cluster answers 503 or
    /// nothing).
    pub(super) async fn stop_and_verify(self, endpoints: &[SocketAddr]) -> AuditResult {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let ledger = std::mem::take(&mut *self.ledger.lock().expect("audit lock"));
        let keys: Vec<((usize, u64), KeyLedger)> = ledger.into_iter().filter(|(_, l)| l.acked.is_some()).collect();
        let keys = Arc::new(keys);
        let lost = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..32)
            .map(|r| {
                let (keys, lost, next, endpoints) = (keys.clone(), lost.clone(), next.clone(), endpoints.to_vec());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(((w, slot), ledger)) = keys.get(i) else { break };
                        if let Some(wrong) = read_back(&endpoints, r + i, *w, *slot, ledger).await {
                            lost.lock().expect("audit lock").push(wrong);
                        }
                    }
                })
            })
            .collect();
        for r in readers {
            let _ = r.await;
        }
        let lost = std::mem::take(&mut *lost.lock().expect("audit lock"));
        AuditResult {
            attempts: self.attempts.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            keys: keys.len(),
            lost,
        }
    }
}

/// Whether `read` is a value the key may hold (see the module docs).
fn may_hold(read: &[u8], ledger: &KeyLedger) -> bool {
    std::str::from_utf8(read)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|v| ledger.acked == Some(v) || ledger.unknown.contains(&v))
}

/// Reads `audit-w-slot` back; `None` if it holds a value it may hold, else what was found.
async fn read_back(endpoints: &[SocketAddr], first: usize, w: usize, slot: u64, ledger: &KeyLedger) -> Option<String> {
    let acked = ledger.acked.unwrap_or(0);
    let path = format!("/kv/audit-{w}-{slot}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = first;
    loop {
        let addr = endpoints[k % endpoints.len()];
        k += 1;
        match call(addr, "GET", &path, b"", Duration::from_secs(5)).await {
            Answer::Got(200, body) if may_hold(&body, ledger) => return None,
            Answer::Got(200, body) => {
                return Some(format!("{path} holds {:?}, but {acked} was acknowledged", String::from_utf8_lossy(&body)))
            }
            Answer::Got(404, _) => return Some(format!("{path} is missing, but {acked} was acknowledged")),
            _ if Instant::now() > deadline => return Some(format!("{path} could not be read within 30 s")),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{may_hold, KeyLedger};

    #[test]
    fn a_key_must_hold_its_last_acknowledged_value_or_one_of_unknown_outcome() {
        let ledger = KeyLedger { acked: Some(7), unknown: vec![3, 9] };
        assert!(may_hold(b"7", &ledger));
        assert!(may_hold(b"9", &ledger), "a later write without an answer may have landed");
        assert!(may_hold(b"3", &ledger), "an earlier write without an answer may land late");
        assert!(!may_hold(b"5", &ledger), "an older acknowledged value: the last acknowledged write is lost");
        assert!(!may_hold(b"10", &ledger), "never sent");
        assert!(!may_hold(b"x", &ledger));
    }
}

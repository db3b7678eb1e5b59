//! The lost-write audit: writers put keys no one else writes (`audit-<writer>-<n>` =
//! `<n>`) through the nodes in turn and keep the ones acknowledged; at the end every
//! acknowledged key is read back (linearizable reads) and must hold its value.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{call, Answer};

/// Running audit writers.
pub(super) struct Audit {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(usize, u64)>>>,
    attempts: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the read-back found.
#[derive(Debug)]
pub(super) struct AuditResult {
    /// Writes sent.
    pub attempts: u64,
    /// Writes acknowledged with 200.
    pub acked: usize,
    /// Acknowledged keys missing or holding another value, with what was read.
    pub lost: Vec<String>,
}

impl Audit {
    /// Starts `writers` writers against `endpoints`.
    pub(super) fn start(endpoints: Vec<SocketAddr>, writers: usize) -> Audit {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicU64::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (endpoints, stop, acked, attempts) =
                    (endpoints.clone(), stop.clone(), acked.clone(), attempts.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let addr = endpoints[(n as usize + w) % endpoints.len()];
                        let path = format!("/kv/audit-{w}-{n}");
                        attempts.fetch_add(1, Ordering::Relaxed);
                        match call(addr, "PUT", &path, n.to_string().as_bytes(), Duration::from_secs(5)).await {
                            Answer::Got(200, _) => acked.lock().expect("audit lock").push((w, n)),
                            Answer::NotSent | Answer::Got(..) => tokio::time::sleep(Duration::from_millis(20)).await,
                            Answer::Lost => {}
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Audit { stop, acked, attempts, tasks }
    }

    /// Writes acknowledged so far.
    pub(super) fn acked(&self) -> usize {
        self.acked.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Stops the writers and reads every acknowledged key back through `endpoints`
    /// (retrying each read for up to 30 s while the cluster answers 503 or nothing).
    pub(super) async fn stop_and_verify(self, endpoints: &[SocketAddr]) -> AuditResult {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("audit lock"));
        let lost = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(acked);
        let readers: Vec<_> = (0..32)
            .map(|r| {
                let (acked, lost, next, endpoints) = (acked.clone(), lost.clone(), next.clone(), endpoints.to_vec());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(&(w, n)) = acked.get(i) else { break };
                        if let Some(wrong) = read_back(&endpoints, r + i, w, n).await {
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
        AuditResult { attempts: self.attempts.load(Ordering::Relaxed), acked: acked.len(), lost }
    }
}

/// Reads `audit-w-n` back; `None` if it holds `n`, else what was found.
async fn read_back(endpoints: &[SocketAddr], first: usize, w: usize, n: u64) -> Option<String> {
    let path = format!("/kv/audit-{w}-{n}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = first;
    loop {
        let addr = endpoints[k % endpoints.len()];
        k += 1;
        match call(addr, "GET", &path, b"", Duration::from_secs(5)).await {
            Answer::Got(200, body) if body.as_ref() == n.to_string().as_bytes() => return None,
            Answer::Got(200, body) => return Some(format!("{path} holds {:?}", String::from_utf8_lossy(&body))),
            Answer::Got(404, _) => return Some(format!("{path} is missing")),
            _ if Instant::now() > deadline => return Some(format!("{path} could not be read within 30 s")),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

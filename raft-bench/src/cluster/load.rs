//! The HTTP load generator used for every target.
//!
//! N client tasks, each with its own keep-alive HTTP/1.1 connection, spread round-robin
//! over the nodes, each with one request outstanding. A client whose connection fails
//! moves on to the next node. Latencies of successful requests inside the measured
//! window go into an HDR histogram; responses other than 2xx and failed requests are
//! counted as errors.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::http_client::Conn;
use super::target::{Op, RequestBuilder, Target, Workload};

/// What the load looks like.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// System the requests are built for.
    pub target: Target,
    /// HTTP addresses of the nodes; client `i` starts on node `i % len`.
    pub endpoints: Vec<SocketAddr>,
    /// Concurrent clients (connections).
    pub clients: usize,
    /// The operation mix.
    pub workload: Workload,
    /// Bytes per written value.
    pub value_size: usize,
    /// Keys are drawn uniformly from `0..keyspace`.
    pub keyspace: u64,
    /// A request without an answer by then counts as an error and its connection is dropped.
    pub request_timeout: Duration,
}

/// Counters shared by the clients, readable while the load runs.
#[derive(Debug)]
pub struct LoadCounters {
    base: Instant,
    stop: AtomicBool,
    measuring: AtomicBool,
    ops: AtomicU64,
    errors: AtomicU64,
    mark_ns: AtomicU64,
    first_ok_ns: AtomicU64,
    /// When the latest successful operation completed (0: none yet).
    last_ok_ns: AtomicU64,
    /// The longest time between two successive completions since the last reset.
    max_gap_ns: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl LoadCounters {
    fn new() -> Self {
        LoadCounters {
            base: Instant::now(),
            stop: AtomicBool::new(false),
            measuring: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            mark_ns: AtomicU64::new(u64::MAX),
            first_ok_ns: AtomicU64::new(u64::MAX),
            last_ok_ns: AtomicU64::new(0),
            max_gap_ns: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Successful operations so far (warm-up included).
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Failed operations so far (warm-up included).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The most recent error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e);
        }
    }
}

/// Latency of every successful operation in the measured window, and the error count.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
    /// Failed operations in the measured window.
    pub errors: u64,
    /// Length of the measured window.
    pub measured: Duration,
}

/// A running load; [`Load::finish`] stops it.
pub struct Load {
    counters: Arc<LoadCounters>,
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>,
    measure_start: Option<Instant>,
}

/// A small deterministic generator (SplitMix64) for keys and the operation mix.
#[derive(Clone, Debug)]
pub struct KeyRng(u64);

impl KeyRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        KeyRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next operation of `workload` on a key below `keyspace`.
    pub fn op(&mut self, workload: Workload, keyspace: u64) -> Op {
        let r = self.next_u64();
        let key = (r >> 1) % keyspace.max(1);
        match workload {
            Workload::Write => Op::Put(key),
            Workload::Read => Op::Get(key),
            Workload::Mixed if r & 1 == 0 => Op::Put(key),
            Workload::Mixed => Op::Get(key),
            Workload::LocalRead => Op::LocalGet(key),
        }
    }
}

impl Load {
    /// Starts the clients on the current tokio runtime. Nothing is measured until
    /// [`Load::begin_measuring`].
    pub fn start(cfg: &LoadConfig) -> Load {
        let counters = Arc::new(LoadCounters::new());
        let builder = Arc::new(RequestBuilder::new(cfg.target, cfg.value_size));
        let tasks =
            (0..cfg.clients).map(|i| tokio::spawn(client(i, cfg.clone(), builder.clone(), counters.clone()))).collect();
        Load { counters, tasks, measure_start: None }
    }

    /// The live counters (for progress output).
    pub fn counters(&self) -> Arc<LoadCounters> {
        self.counters.clone()
    }

    /// Starts the measured window (ends the warm-up).
    pub fn begin_measuring(&mut self) {
        self.measure_start = Some(Instant::now());
        self.counters.errors.store(0, Ordering::Relaxed);
        self.counters.measuring.store(true, Ordering::Relaxed);
    }

    /// Marks this instant: [`Load::first_ok_since_mark`] then reports when the first
    /// operation sent after it succeeded.
    pub fn mark(&self) -> Instant {
        let now = Instant::now();
        self.mark_at(now);
        now
    }

    /// Like [`Load::mark`], for an instant already passed (operations sent after `at`
    /// count).
    pub fn mark_at(&self, at: Instant) {
        self.counters.first_ok_ns.store(u64::MAX, Ordering::SeqCst);
        self.counters.mark_ns.store(at.duration_since(self.counters.base).as_nanos() as u64, Ordering::SeqCst);
    }

    /// Starts a new window for [`Load::max_gap`]: gaps are counted from the latest
    /// success before now.
    pub fn reset_gap(&self) {
        self.counters.max_gap_ns.store(0, Ordering::SeqCst);
    }

    /// The longest time between two successive successful operations (by completion)
    /// since [`Load::reset_gap`], including the time since the latest one: the write
    /// unavailability the clients saw.
    pub fn max_gap(&self) -> Duration {
        let last = self.counters.last_ok_ns.load(Ordering::SeqCst);
        let open = if last == 0 { 0 } else { self.counters.now_ns().saturating_sub(last) };
        Duration::from_nanos(self.counters.max_gap_ns.load(Ordering::SeqCst).max(open))
    }

    /// Time from the last mark to the completion of the first operation that was sent
    /// after it and succeeded; `None` while there is none.
    pub fn first_ok_since_mark(&self) -> Option<Duration> {
        let mark = self.counters.mark_ns.load(Ordering::SeqCst);
        let ok = self.counters.first_ok_ns.load(Ordering::SeqCst);
        (mark != u64::MAX && ok != u64::MAX).then(|| Duration::from_nanos(ok.saturating_sub(mark)))
    }

    /// Stops the clients and merges what they measured.
    pub async fn finish(self) -> Result<LoadOutcome, String> {
        self.counters.measuring.store(false, Ordering::Relaxed);
        let measured = self.measure_start.map(|t| t.elapsed()).unwrap_or_default();
        let errors = self.counters.errors();
        self.counters.stop.store(true, Ordering::Relaxed);
        let mut hist = new_histogram();
        for t in self.tasks {
            let (h, _) = t.await.map_err(|e| format!("client task failed: {e}"))?;
            hist.add(&h).map_err(|e| e.to_string())?;
        }
        Ok(LoadOutcome { hist, errors, measured })
    }
}

/// A histogram of microseconds from 1 µs to one hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

async fn client(
    id: usize,
    cfg: LoadConfig,
    builder: Arc<RequestBuilder>,
    counters: Arc<LoadCounters>,
) -> (Histogram<u64>, u64) {
    let mut hist = new_histogram();
    let mut ok = 0u64;
    let n = cfg.endpoints.len().max(1);
    let mut node = id % n;
    let mut conn: Option<Conn> = None;
    let mut rng = KeyRng::new(0x5eed ^ (id as u64).wrapping_mul(0x1000_0000_01b3));
    // One timer per client, moved forward for every request.
    let timer = tokio::time::sleep(cfg.request_timeout);
    tokio::pin!(timer);
    while !counters.stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(cfg.endpoints[node]).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    counters.error(e);
                    node = (node + 1) % n;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let op = rng.op(cfg.workload, cfg.keyspace);
        let start_ns = counters.now_ns();
        let t = Instant::now();
        timer.as_mut().reset(tokio::time::Instant::from_std(t) + cfg.request_timeout);
        let answer = tokio::select! {
            biased;
            r = c.send(|host, out| builder.build(host, op, out)) => Some(r),
            () = &mut timer => None,
        };
        match answer {
            Some(Ok((status, _body))) if status.is_success() => {
                let us = t.elapsed().as_micros() as u64;
                ok += 1;
                counters.ops.fetch_add(1, Ordering::Relaxed);
                if counters.measuring.load(Ordering::Relaxed) {
                    let _ = hist.record(us.max(1));
                }
                let done_ns = counters.now_ns();
                if start_ns >= counters.mark_ns.load(Ordering::Relaxed) {
                    counters.first_ok_ns.fetch_min(done_ns, Ordering::SeqCst);
                }
                let prev = counters.last_ok_ns.fetch_max(done_ns, Ordering::SeqCst);
                if prev != 0 && done_ns > prev {
                    counters.max_gap_ns.fetch_max(done_ns - prev, Ordering::SeqCst);
                }
            }
            Some(Ok((status, body))) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                counters.error(format!("HTTP {status}: {text}"));
                // The node answered; a short pause keeps a node without a leader from
                // being flooded.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Some(Err(e)) => {
                counters.error(e);
                conn = None;
                node = (node + 1) % n;
            }
            None => {
                counters.error(format!("no answer within {:?}", cfg.request_timeout));
                conn = None;
                node = (node + 1) % n;
            }
        }
        // A server that ended the connection after its answer gets a new one.
        if conn.as_ref().is_some_and(|c| !c.is_reusable()) {
            conn = None;
        }
    }
    (hist, ok)
}

/// Writes every key of `cfg.keyspace` once, with `concurrency` connections, so that
/// reads find data. Each key is retried a few times before giving up.
pub async fn populate(cfg: &LoadConfig, concurrency: usize) -> Result<(), String> {
    let builder = Arc::new(RequestBuilder::new(cfg.target, cfg.value_size));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..concurrency.max(1) {
        let (builder, next, endpoints) = (builder.clone(), next.clone(), cfg.endpoints.clone());
        let (keyspace, timeout) = (cfg.keyspace, cfg.request_timeout);
        tasks.push(tokio::spawn(async move {
            let mut node = i % endpoints.len().max(1);
            let mut conn: Option<Conn> = None;
            loop {
                let key = next.fetch_add(1, Ordering::Relaxed);
                if key >= keyspace {
                    return Ok::<(), String>(());
                }
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let result = async {
                        if conn.is_none() {
                            conn = Some(Conn::connect(endpoints[node]).await?);
                        }
                        let c = conn.as_mut().ok_or("no connection")?;
                        let send = c.send(|h, out| builder.build(h, Op::Put(key), out));
                        let result = match tokio::time::timeout(timeout, send).await {
                            Ok(Ok((s, _))) if s.is_success() => Ok(()),
                            Ok(Ok((s, body))) => Err(format!("HTTP {s}: {}", String::from_utf8_lossy(body))),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err("timeout".to_string()),
                        };
                        // A server that ended the connection after its answer gets a new one.
                        if !c.is_reusable() {
                            conn = None;
                        }
                        result
                    }
                    .await;
                    match result {
                        Ok(()) => break,
                        Err(e) if attempt >= 5 => return Err(format!("writing key {key}: {e}")),
                        Err(_) => {
                            conn = None;
                            node = (node + 1) % endpoints.len().max(1);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("populate task failed: {e}"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rng_stays_in_the_keyspace_and_mixes_half_and_half() {
        let mut rng = KeyRng::new(1);
        let (mut puts, mut gets) = (0, 0);
        for _ in 0..10_000 {
            match rng.op(Workload::Mixed, 100) {
                Op::Put(k) => {
                    assert!(k < 100);
                    puts += 1;
                }
                Op::Get(k) => {
                    assert!(k < 100);
                    gets += 1;
                }
                Op::LocalGet(_) => panic!("a mixed load reads linearizably"),
            }
        }
        assert!((4_000..6_000).contains(&puts), "{puts} puts, {gets} gets");
        assert!(matches!(rng.op(Workload::Write, 10), Op::Put(_)));
        assert!(matches!(rng.op(Workload::Read, 10), Op::Get(_)));
        assert!(matches!(rng.op(Workload::LocalRead, 10), Op::LocalGet(k) if k < 10));
    }

    #[test]
    fn mark_reports_nothing_before_a_success() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cfg = LoadConfig {
                target: Target::Kv,
                endpoints: vec![],
                clients: 0,
                workload: Workload::Write,
                value_size: 8,
                keyspace: 10,
                request_timeout: Duration::from_secs(1),
            };
            let mut load = Load::start(&cfg);
            assert_eq!(load.first_ok_since_mark(), None);
            load.mark();
            assert_eq!(load.first_ok_since_mark(), None);
            load.begin_measuring();
            let out = load.finish().await.unwrap();
            assert_eq!((out.hist.len(), out.errors), (0, 0));
        });
    }

    /// A tiny HTTP server on loopback that answers every request with 200, or with 503
    /// for every third; the generator must count both.
    #[test]
    fn load_counts_successes_and_errors_against_a_local_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let addr = serve_locally(|mut s| async move {
                let mut buf = vec![0u8; 8192];
                let mut pending = Vec::new();
                let mut n_req = 0u64;
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    // Requests from the generator carry a body of a known length.
                    while let Some(end) = find(&pending, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if pending.len() < end + 4 + len {
                            break;
                        }
                        pending.drain(..end + 4 + len);
                        n_req += 1;
                        let resp: &[u8] = if n_req.is_multiple_of(3) {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
                        };
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                }
            })
            .await;
            let cfg = LoadConfig {
                target: Target::Kv,
                endpoints: vec![addr],
                clients: 4,
                workload: Workload::Mixed,
                value_size: 64,
                keyspace: 100,
                request_timeout: Duration::from_secs(2),
            };
            let mut load = Load::start(&cfg);
            tokio::time::sleep(Duration::from_millis(100)).await;
            load.begin_measuring();
            load.mark();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(load.first_ok_since_mark().is_some());
            let out = load.finish().await.unwrap();
            assert!(out.hist.len() > 10, "{} successes", out.hist.len());
            assert!(out.errors > 0, "every third answer is a 503");
        });
    }

    /// A server that answers one request per connection and closes it: the clients open
    /// a new connection after each answer, without counting errors.
    #[test]
    fn load_reconnects_after_connection_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let connections = Arc::new(AtomicU64::new(0));
            let accepted = connections.clone();
            let addr = serve_locally(move |mut s| {
                accepted.fetch_add(1, Ordering::Relaxed);
                async move {
                    let mut buf = vec![0u8; 8192];
                    let mut pending = Vec::new();
                    // Reads use GET only: no body follows the head.
                    while find(&pending, b"\r\n\r\n").is_none() {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    let resp = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
                    let _ = s.write_all(resp).await;
                }
            })
            .await;
            let cfg = LoadConfig {
                target: Target::Kv,
                endpoints: vec![addr],
                clients: 2,
                workload: Workload::Read,
                value_size: 8,
                keyspace: 100,
                request_timeout: Duration::from_secs(2),
            };
            let mut load = Load::start(&cfg);
            load.begin_measuring();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let out = load.finish().await.unwrap();
            assert!(out.hist.len() > 10, "{} successes", out.hist.len());
            assert_eq!(out.errors, 0);
            assert!(connections.load(Ordering::Relaxed) >= out.hist.len());
        });
    }

    /// Listens on a free loopback port and serves each connection with `on_connection`
    /// in a task of its own; returns the address.
    async fn serve_locally<F, Fut>(on_connection: F) -> std::net::SocketAddr
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(on_connection(s));
            }
        });
        addr
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}

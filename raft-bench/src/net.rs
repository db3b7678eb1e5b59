//! `bench net --payload BYTES --duration SECS [--tls] [--json]`: AppendEntries-shaped
//! messages with one entry of BYTES sent one way over loopback through `raft-net-tcp`,
//! and in the same run over a plain TCP socket with the same framing written in a tight
//! loop. Prints messages/s and MB/s of both and their ratio. With `--tls`, also the
//! transport with mutual TLS between the two nodes, and the round trip of one message
//! and an empty answer (ping-pong, one at a time) in plaintext and with TLS, in
//! alternating rounds: the latency TLS adds to each hop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use raft::runtime::TokioRuntime;
use raft::{Entry, EntryPayload, Message, MessageBody, Network};
use raft_examples::launch::certs::ClusterCerts;
use raft_net_tcp::codec::{encode_frame, FrameDecoder};
use raft_net_tcp::{TcpConfig, TcpTransport, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_FRAME: u32 = 16 << 20;

fn message(payload: usize) -> Message {
    Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::AppendEntries {
            prev_log_index: 100,
            prev_log_term: 3,
            entries: vec![Entry {
                term: 3,
                index: 101,
                payload: EntryPayload::Command(bytes::Bytes::from(vec![7u8; payload])),
            }],
            leader_commit: 100,
        },
    }
}

/// Counts messages received during the measured window.
async fn measure(received: &AtomicU64, duration: Duration) -> (u64, f64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    let n = received.load(Ordering::Relaxed) - start;
    (n, t0.elapsed().as_secs_f64())
}

/// Nodes 1 and 2 on loopback, peers of each other, with mutual TLS when `certs` is given.
async fn pair(certs: Option<&ClusterCerts>) -> Result<[TcpTransport<TokioRuntime>; 2], String> {
    let rt = TokioRuntime::new();
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut out = Vec::new();
    for id in [1, 2] {
        let mut c = TcpConfig::new(1, id);
        c.max_frame_size = MAX_FRAME;
        if let Some(certs) = certs {
            let file = |name: String| certs.ca().with_file_name(name);
            let tls =
                TlsConfig::from_pem_files(file(format!("node-{id}.pem")), file(format!("node-{id}.key")), certs.ca())
                    .map_err(|e| e.to_string())?;
            c.tls = Some(tls);
        }
        out.push(TcpTransport::bind(rt.clone(), c, local).await.map_err(|e| e.to_string())?);
    }
    let [a, b]: [TcpTransport<TokioRuntime>; 2] = out.try_into().map_err(|_| "two transports".to_string())?;
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    Ok([a, b])
}

async fn transport(msg: &Message, duration: Duration, certs: Option<&ClusterCerts>) -> Result<(u64, f64), String> {
    let [a, b] = pair(certs).await?;
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    b.start(move |_m| {
        r.fetch_add(1, Ordering::Relaxed);
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (net, s, m, a2) = (a.network(), stop.clone(), msg.clone(), a.clone());
    let high_water = a.config().send_queue_len / 2;
    let sender = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            // Back off while the queue is half full so the benchmark measures
            // delivery, not drops.
            while a2.peer_stats(2).is_some_and(|st| st.queued >= high_water) {
                tokio::task::yield_now().await;
            }
            let _ = net.send(2, m.clone()).await;
        }
    });
    let result = measure(&received, duration).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;
    a.shutdown().await;
    b.shutdown().await;
    Ok(result)
}

async fn raw(msg: &Message, duration: Duration) -> Result<(u64, f64), String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let r = received.clone();
    let reader = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else { return };
        let _ = s.set_nodelay(true);
        let mut dec = FrameDecoder::new(MAX_FRAME);
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
            dec.extend(&buf[..n]);
            while let Ok(Some(_m)) = dec.next_message() {
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let (st, m) = (stop.clone(), msg.clone());
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        while !st.load(Ordering::Relaxed) {
            batch.clear();
            while batch.len() < 64 * 1024 {
                let _ = encode_frame(&m, MAX_FRAME, &mut batch);
            }
            if s.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let result = measure(&received, duration).await;
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let _ = reader.await;
    Ok(result)
}

/// Round trips of `msg` from node 1 to node 2 and an empty AppendEntries back, one at a
/// time, for `duration`: their latencies in microseconds.
async fn ping_pong(msg: &Message, duration: Duration, certs: Option<&ClusterCerts>) -> Result<Histogram<u64>, String> {
    let [a, b] = pair(certs).await?;
    let (to_b, mut at_b) = futures::channel::mpsc::unbounded::<Message>();
    let (to_a, mut at_a) = futures::channel::mpsc::unbounded::<Message>();
    b.start(move |m| {
        let _ = to_b.unbounded_send(m);
    });
    a.start(move |m| {
        let _ = to_a.unbounded_send(m);
    });
    let answer = Message {
        from: 2,
        to: 1,
        term: 3,
        body: MessageBody::AppendEntries {
            prev_log_index: 101,
            prev_log_term: 3,
            entries: Vec::new(),
            leader_commit: 101,
        },
    };
    let net_b = b.network();
    let echo = tokio::spawn(async move {
        while at_b.next().await.is_some() {
            let _ = net_b.send(1, answer.clone()).await;
        }
    });
    let net_a = a.network();
    let mut hist = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let warm_up = Instant::now() + Duration::from_millis(300);
    let end = warm_up + duration;
    loop {
        let t = Instant::now();
        if t >= end {
            break;
        }
        net_a.send(2, msg.clone()).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), at_a.next()).await {
            Ok(Some(_)) => {}
            _ => return Err("no answer within 5 s".into()),
        }
        if t >= warm_up {
            let _ = hist.record(t.elapsed().as_micros() as u64);
        }
    }
    a.shutdown().await;
    b.shutdown().await;
    echo.abort();
    Ok(hist)
}

/// `--tls`: the transport's throughput with TLS, and ping-pong round trips in plaintext
/// and with TLS in alternating rounds (the medians of the rounds' percentiles).
async fn tls_comparison(msg: &Message, duration: Duration, mps: f64, json: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let certs = ClusterCerts::generate(dir.path(), &[1, 2], &[])?;
    let (n, secs) = transport(msg, duration, Some(&certs)).await?;
    let tls_mps = n as f64 / secs;
    println!(
        "net TLS: transport with mutual TLS {tls_mps:.0} msgs/s, {:.2}x plaintext ({mps:.0} msgs/s)",
        tls_mps / mps.max(1.0)
    );
    const ROUNDS: usize = 6;
    let mut rounds: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for tls in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let h = ping_pong(msg, duration / 2, tls.then_some(&certs)).await?;
            let (p50, p99) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
            let name = if tls { "TLS" } else { "plaintext" };
            println!("net round trip, round {} ({name}): {} trips, p50 {p50} us, p99 {p99} us", round + 1, h.len());
            rounds[usize::from(tls)].push((p50, p99));
        }
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let [plain, tls] = rounds.map(|r| {
        let (mut p50, mut p99): (Vec<u64>, Vec<u64>) = r.into_iter().unzip();
        (median(&mut p50), median(&mut p99))
    });
    println!(
        "net round trip, median of {ROUNDS} rounds: plaintext p50 {} us, p99 {} us; TLS p50 {} us, p99 {} us; TLS adds {} us at p50 per round trip",
        plain.0,
        plain.1,
        tls.0,
        tls.1,
        tls.0 as i64 - plain.0 as i64
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "tls_msgs_per_sec": tls_mps, "plain_msgs_per_sec": mps,
                "rtt_plain_p50_us": plain.0, "rtt_plain_p99_us": plain.1,
                "rtt_tls_p50_us": tls.0, "rtt_tls_p99_us": tls.1,
            })
        );
    }
    Ok(())
}

/// Runs the measurements and prints the comparison.
pub async fn run(payload: usize, duration: Duration, tls: bool, json: bool) -> Result<(), String> {
    let msg = message(payload);
    let frame_bytes = 4 + msg.encode().len();
    let (n, secs) = transport(&msg, duration, None).await?;
    let (rn, rsecs) = raw(&msg, duration).await?;
    let mps = n as f64 / secs;
    let raw_mps = rn as f64 / rsecs;
    let ratio = if raw_mps > 0.0 { mps / raw_mps } else { 0.0 };
    let mb = |m: f64| m * frame_bytes as f64 / 1e6;
    println!(
        "net: payload {payload} B ({frame_bytes} B frames): transport {mps:.0} msgs/s ({:.1} MB/s), raw socket {raw_mps:.0} msgs/s ({:.1} MB/s), ratio {ratio:.2}",
        mb(mps),
        mb(raw_mps)
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "payload": payload, "frame_bytes": frame_bytes,
                "msgs_per_sec": mps, "mb_per_sec": mb(mps),
                "raw_msgs_per_sec": raw_mps, "raw_mb_per_sec": mb(raw_mps),
                "ratio_vs_raw": ratio,
            })
        );
    }
    if tls {
        tls_comparison(&msg, duration, mps, json).await?;
    }
    Ok(())
}

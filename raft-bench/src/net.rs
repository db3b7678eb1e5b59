//! `bench net --payload BYTES --duration SECS [--json]`: AppendEntries-shaped messages
//! with one entry of BYTES sent one way over loopback through `raft-net-tcp`, and in the
//! same run over a plain TCP socket with the same framing written in a tight loop.
//! Prints messages/s and MB/s of both and their ratio.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::runtime::TokioRuntime;
use raft::{Entry, EntryPayload, Message, MessageBody, Network};
use raft_net_tcp::codec::{encode_frame, FrameDecoder};
use raft_net_tcp::{TcpConfig, TcpTransport};
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

async fn transport(msg: &Message, duration: Duration) -> Result<(u64, f64), String> {
    let rt = TokioRuntime::new();
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut c1 = TcpConfig::new(1, 1);
    c1.max_frame_size = MAX_FRAME;
    let mut c2 = TcpConfig::new(1, 2);
    c2.max_frame_size = MAX_FRAME;
    let a = TcpTransport::bind(rt.clone(), c1, local).await.map_err(|e| e.to_string())?;
    let b = TcpTransport::bind(rt.clone(), c2, local).await.map_err(|e| e.to_string())?;
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
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

/// Runs both measurements and prints the comparison.
pub async fn run(payload: usize, duration: Duration, json: bool) -> Result<(), String> {
    let msg = message(payload);
    let frame_bytes = 4 + msg.encode().len();
    let (n, secs) = transport(&msg, duration).await?;
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
    Ok(())
}

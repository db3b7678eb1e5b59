//! `bench store --entry-size BYTES --batch N --duration SECS [--json]`: appends batches
//! of N entries to a fresh `raft-store-file` log in a temp dir, then runs a raw loop of
//! the same writes (one write and one fdatasync per batch on a plain file); prints
//! entries/s and MB/s of both, their ratio, and the time to open a log of 1,000,000
//! entries of that size.

use std::io::Write;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use raft::{LogIndex, LogStore};
use raft_store_file::{FileStore, FileStoreOptions};

fn temp_dir(base: &Option<std::path::PathBuf>) -> Result<tempfile::TempDir, String> {
    match base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("cannot create a temp dir: {e}"))
}

fn store_entries(first: LogIndex, n: usize, size: usize) -> Vec<raft::Entry> {
    let payload = bytes::Bytes::from(vec![0x5au8; size]);
    (0..n as u64)
        .map(|i| raft::Entry { term: 1, index: first + i, payload: raft::EntryPayload::Command(payload.clone()) })
        .collect()
}

/// Runs the benchmark and prints its figures.
pub fn run(
    entry_size: usize,
    batch: usize,
    duration: Duration,
    base: Option<std::path::PathBuf>,
    skip_open: bool,
    json: bool,
) -> Result<(), String> {
    // The file store and the raw loop run alternately in short rounds, so that noise
    // from the machine hits both. The raw loop writes the same bytes per batch (8-byte
    // frame header + encoded entry) with one write and one fdatasync per batch.
    let one = store_entries(1, 1, entry_size);
    let encoded = 8 + postcard::to_allocvec(&one[0]).map_err(|e| e.to_string())?.len();
    let dir = temp_dir(&base)?;
    let mut store = FileStore::open(dir.path(), FileStoreOptions::default()).map_err(|e| e.to_string())?;
    let raw_dir = temp_dir(&base)?;
    let path = raw_dir.path().join("raw.log");
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; encoded * batch];
    let rounds = 10u32;
    let round = duration / rounds;
    let mut next: LogIndex = 1;
    let (mut store_secs, mut raw_secs, mut raw_n) = (0.0, 0.0, 0u64);
    for _ in 0..rounds {
        let t0 = Instant::now();
        while t0.elapsed() < round {
            let entries = store_entries(next, batch, entry_size);
            block_on(store.append(&entries)).map_err(|e| e.to_string())?;
            next += batch as u64;
        }
        store_secs += t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        while t0.elapsed() < round {
            f.write_all(&buf).and_then(|()| f.sync_data()).map_err(|e| e.to_string())?;
            raw_n += batch as u64;
        }
        raw_secs += t0.elapsed().as_secs_f64();
    }
    let store_entries_n = next - 1;
    drop((store, dir, f, raw_dir));

    let eps = store_entries_n as f64 / store_secs;
    let raw_eps = raw_n as f64 / raw_secs;
    let mbps = eps * encoded as f64 / 1e6;
    let raw_mbps = raw_eps * encoded as f64 / 1e6;
    let ratio = eps / raw_eps;
    println!(
        "store: entry {entry_size} B, batch {batch}: file store {eps:.0} entries/s ({mbps:.1} MB/s), raw {raw_eps:.0} entries/s ({raw_mbps:.1} MB/s), ratio {ratio:.3}"
    );

    // Time to open a log of 1,000,000 entries.
    let open_ms = if skip_open {
        None
    } else {
        let dir = temp_dir(&base)?;
        let mut store = FileStore::open(dir.path(), FileStoreOptions::default()).map_err(|e| e.to_string())?;
        let total: u64 = 1_000_000;
        let chunk = 4096u64;
        let mut i = 1;
        while i <= total {
            let n = chunk.min(total - i + 1);
            block_on(store.append(&store_entries(i, n as usize, entry_size))).map_err(|e| e.to_string())?;
            i += n;
        }
        drop(store);
        let t = Instant::now();
        let mut store = FileStore::open(dir.path(), FileStoreOptions::default()).map_err(|e| e.to_string())?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let st = block_on(store.initial_state()).map_err(|e| e.to_string())?;
        if st.last.index != total {
            return Err(format!("reopened log ends at {}, want {total}", st.last.index));
        }
        println!("store: open of a log of {total} entries of {entry_size} B: {ms:.1} ms");
        Some(ms)
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "entry_size": entry_size, "batch": batch,
                "entries_per_sec": eps, "raw_entries_per_sec": raw_eps, "ratio_vs_raw": ratio,
                "mb_per_sec": mbps, "raw_mb_per_sec": raw_mbps, "open_ms_1m": open_ms,
            })
        );
    }
    Ok(())
}

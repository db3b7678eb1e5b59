//! A status line on stderr while a load runs: elapsed time, operations so far, the
//! current rate and errors. On a terminal the line is rewritten every second; otherwise
//! a line is printed every ten seconds.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::LoadCounters;

/// A running status line; stops (and clears the line) when dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    tty: bool,
}

/// The text of one status line.
pub fn status_line(label: &str, elapsed: Duration, total: Duration, ops: u64, rate: f64, errors: u64) -> String {
    format!(
        "{label}: {:>4.0}/{:.0} s, {ops} ops, {rate:.0} ops/s, {errors} errors",
        elapsed.as_secs_f64(),
        total.as_secs_f64()
    )
}

impl Progress {
    /// Starts reporting `counters` under `label` for a run of about `total`.
    pub fn start(label: String, total: Duration, counters: Arc<LoadCounters>) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let every = if tty { 1 } else { 10 };
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (start, counters.ops());
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tick += 1;
                let now = Instant::now();
                let ops = counters.ops();
                let rate = (ops - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
                last = (now, ops);
                if !tick.is_multiple_of(every) {
                    continue;
                }
                let line = status_line(&label, start.elapsed(), total, ops, rate, counters.errors());
                let mut err = std::io::stderr().lock();
                let _ = if tty { write!(err, "\r\x1b[2K{line}") } else { writeln!(err, "{line}") };
                let _ = err.flush();
            }
        });
        Progress { task, tty }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_progress_rate_and_errors() {
        let s =
            status_line("etcd write 16 clients", Duration::from_secs(3), Duration::from_secs(10), 12_345, 4_001.4, 2);
        assert_eq!(s, "etcd write 16 clients:    3/10 s, 12345 ops, 4001 ops/s, 2 errors");
    }
}

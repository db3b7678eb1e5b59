//! [`Counters`] and [`Metrics`]: what a node's protocol has done since it started, for
//! operators and programs that watch it (see [`Raft::metrics`](crate::Raft::metrics)).
//!
//! The core keeps the counters as plain integers in its own state: no registry, no
//! clock, nothing global, so it stays deterministic. They count from 0 at every start
//! (they are not persisted); a monitoring system treats a drop as a restart, as it does
//! for any process counter.
//!
//! The driver adds [`Latencies`]: how long its store writes, applies, commits,
//! read-index rounds and heartbeat round trips take, as [`Histogram`]s. It measures them
//! with the runtime's clock, outside the core.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::status::Status;
use crate::types::NodeId;

/// Event counts of one node since it started. Every field only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pre-vote rounds this node started (thesis §9.6).
    pub pre_votes_started: u64,
    /// Elections this node started: terms it became a candidate in (paper §5.2).
    pub elections_started: u64,
    /// Times this node became leader.
    pub became_leader: u64,
    /// Times the leader this node knows changed to another known node (itself
    /// included); losing a leader without learning a new one is not counted.
    pub leader_changes: u64,
    /// Client commands appended to the log as leader.
    pub proposals_appended: u64,
    /// Client commands this node forwarded to the leader as a follower.
    pub proposals_forwarded: u64,
    /// Proposals refused because this node was not the leader.
    pub proposals_refused_not_leader: u64,
    /// Proposals refused because too many entries were uncommitted (back-pressure).
    pub proposals_refused_overloaded: u64,
    /// Read-index confirmation rounds started as leader (each serves a batch of reads).
    pub read_index_rounds: u64,
    /// Snapshots this node took of its own state machine.
    pub snapshots_taken: u64,
    /// Snapshot transfers started to followers behind the purge point.
    pub snapshots_sent: u64,
    /// Bytes of snapshot chunks sent to followers.
    pub snapshot_bytes_sent: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Bytes of snapshot chunks received in order from a leader.
    pub snapshot_bytes_received: u64,
    /// Membership changes this node appended as leader (a joint change counts once).
    pub membership_changes: u64,
    /// Leadership transfers this node started as leader.
    pub transfers_started: u64,
    /// Leadership transfers given up after an election timeout.
    pub transfers_aborted: u64,
}

/// Everything [`Raft::metrics`](crate::Raft::metrics) reports: where the node is
/// ([`Status`]: role, term, leader, indexes, each peer's match index when leader), what
/// it has done ([`Counters`]), how long it took ([`Latencies`]) and what its client
/// session table holds ([`SessionStats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// Where the node is now.
    pub status: Status,
    /// What it has done since it started.
    pub counters: Counters,
    /// How long its work took, since it started.
    pub latencies: Latencies,
    /// Its client session table, as the last applied batch left it.
    pub sessions: SessionStats,
}

/// The size of a node's replicated client session table ([`crate::session`]): what
/// bounds its memory (docs/client-requests.md gives the bytes per session and per
/// response). Every replica holds the same table at the same applied index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Client sessions held (registered, implicit and idempotency keys), at most
    /// [`Config::max_sessions`](crate::Config::max_sessions).
    pub sessions: u64,
    /// Responses held over all sessions: applied commands whose client has not yet
    /// acknowledged them.
    pub responses: u64,
}

/// The driver's timings since the node started. Durations are in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Each write to the log store (one group-committed batch: entries, hard state, or
    /// both, until durable), in microseconds.
    pub log_write: Histogram,
    /// Entries in each log store write that had entries.
    pub log_write_entries: Histogram,
    /// Each batch of committed entries applied to the state machine, in microseconds.
    pub apply: Histogram,
    /// Leader: from a proposal's append to its commit, in microseconds, one sample per
    /// proposal.
    pub commit: Histogram,
    /// Leader: from asking for a read index to its confirmation by a quorum, in
    /// microseconds, one sample per round (thesis §6.4).
    pub read_index: Histogram,
    /// Leader: the round trip of periodic heartbeats to each peer, in microseconds.
    pub peer_rtt: BTreeMap<NodeId, Histogram>,
}

/// Values below this one have a bucket each.
const LINEAR: u64 = 8;
/// Buckets per power of two above [`LINEAR`].
const PER_OCTAVE: usize = 4;
/// The highest power of two with buckets of its own; larger values share the last one.
const TOP_OCTAVE: u32 = 40;
/// Number of buckets.
const BUCKETS: usize = LINEAR as usize + (TOP_OCTAVE as usize - 2) * PER_OCTAVE;

/// The bucket that holds `v`.
fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros();
    if octave > TOP_OCTAVE {
        return BUCKETS - 1;
    }
    let sub = ((v >> (octave - 2)) & 3) as usize;
    LINEAR as usize + (octave as usize - 3) * PER_OCTAVE + sub
}

/// The values bucket `b` holds: `[low, high)`.
fn bucket_range(b: usize) -> (u64, u64) {
    if b < LINEAR as usize {
        return (b as u64, b as u64 + 1);
    }
    let octave = 3 + (b - LINEAR as usize) / PER_OCTAVE;
    let sub = ((b - LINEAR as usize) % PER_OCTAVE) as u64;
    let width = 1u64 << (octave - 2);
    let low = (1u64 << octave) + sub * width;
    (low, low + width)
}

/// A distribution of non-negative integer samples (the unit is the field's: most are
/// microseconds), in buckets a quarter of a power of two wide (exact below 8), so a
/// quantile is within 19% of the true one. Two histograms of the same counter taken at
/// different times give the distribution in between ([`Histogram::since`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], count: 0, sum: 0 }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl Histogram {
    /// Records one sample of `v`.
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Records `n` samples of `v`.
    pub fn record_n(&mut self, v: u64, n: u64) {
        self.counts[bucket_of(v)] += n;
        self.count += n;
        self.sum = self.sum.saturating_add(v.saturating_mul(n));
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the samples (saturating).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The `q`-quantile (`q` in 0..=1, clamped), interpolated within its bucket; 0
    /// without samples.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // The rank of the sample wanted, 1-based.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if seen + n >= rank {
                let (low, high) = bucket_range(b);
                let within = (rank - seen) as f64 / n as f64;
                return low + ((high - low - 1) as f64 * within) as u64;
            }
            seen += n;
        }
        self.max()
    }

    /// The upper end of the highest bucket with a sample; 0 without samples.
    pub fn max(&self) -> u64 {
        self.counts.iter().rposition(|&n| n > 0).map_or(0, |b| bucket_range(b).1 - 1)
    }

    /// The `q`-quantile of a histogram of microseconds, as a duration.
    pub fn quantile_duration(&self, q: f64) -> Duration {
        Duration::from_micros(self.quantile(q))
    }

    /// The samples recorded after `earlier`, a copy of this histogram taken before
    /// (buckets that went down, as after a restart, count as empty).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let counts: Vec<u64> = self.counts.iter().zip(&earlier.counts).map(|(a, b)| a.saturating_sub(*b)).collect();
        let count = counts.iter().sum();
        Histogram { counts, count, sum: self.sum.saturating_sub(earlier.sum) }
    }

    /// Adds the samples of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// The counts at each power of two: `(bound, samples below bound)` for bounds 1, 2,
    /// 4, ... up to 2^41, cumulative (what a Prometheus histogram's `le` buckets hold, with
    /// a sample of `v` counted as `v` plus less than one unit). Samples above the last
    /// bound are only in [`Histogram::count`].
    pub fn cumulative_at_powers_of_two(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut cumulative = 0;
        let mut b = 0;
        (0..=TOP_OCTAVE + 1).map(move |k| {
            let bound = 1u64 << k;
            while b < BUCKETS && bucket_range(b).1 <= bound {
                cumulative += self.counts[b];
                b += 1;
            }
            (bound, cumulative)
        })
    }
}

/// `d` in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A [`Histogram`] the driver's tasks record into concurrently.
pub(crate) struct AtomicHistogram {
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records `n` samples of `v`.
    pub(crate) fn record_n(&self, v: u64, n: u64) {
        self.counts[bucket_of(v)].fetch_add(n, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum.fetch_add(v.saturating_mul(n), Ordering::Relaxed);
    }

    /// Records one sample of `d` in microseconds.
    pub(crate) fn record_duration(&self, d: Duration) {
        self.record_n(micros(d), 1);
    }

    /// A copy of what is recorded now.
    pub(crate) fn snapshot(&self) -> Histogram {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        Histogram { count: counts.iter().sum(), counts, sum: self.sum.load(Ordering::Relaxed) }
    }
}

/// The driver's latency histograms, shared by its tasks, and the session table's size,
/// which the apply task sets after each batch.
#[derive(Default)]
pub(crate) struct DriverLatencies {
    pub(crate) log_write: AtomicHistogram,
    pub(crate) log_write_entries: AtomicHistogram,
    pub(crate) apply: AtomicHistogram,
    pub(crate) commit: AtomicHistogram,
    pub(crate) read_index: AtomicHistogram,
    /// Recorded by the protocol loop only.
    pub(crate) peer_rtt: std::sync::Mutex<BTreeMap<NodeId, Histogram>>,
    /// [`SessionStats::sessions`].
    pub(crate) sessions: AtomicU64,
    /// [`SessionStats::responses`].
    pub(crate) session_responses: AtomicU64,
}

impl DriverLatencies {
    /// A copy of everything recorded now.
    pub(crate) fn snapshot(&self) -> Latencies {
        Latencies {
            log_write: self.log_write.snapshot(),
            log_write_entries: self.log_write_entries.snapshot(),
            apply: self.apply.snapshot(),
            commit: self.commit.snapshot(),
            read_index: self.read_index.snapshot(),
            peer_rtt: crate::sync::lock(&self.peer_rtt).clone(),
        }
    }

    /// The session table's size as last set.
    pub(crate) fn sessions(&self) -> SessionStats {
        SessionStats {
            sessions: self.sessions.load(Ordering::Relaxed),
            responses: self.session_responses.load(Ordering::Relaxed),
        }
    }

    /// Sets the session table's size.
    pub(crate) fn set_sessions(&self, sessions: usize, responses: usize) {
        self.sessions.store(sessions as u64, Ordering::Relaxed);
        self.session_responses.store(responses as u64, Ordering::Relaxed);
    }
}

impl Metrics {
    /// When leader: how many entries each peer's log is behind this node's last one
    /// (empty otherwise).
    pub fn replication_lag(&self) -> impl Iterator<Item = (crate::NodeId, u64)> + '_ {
        let last = self.status.last_log_index;
        self.status.match_index.iter().map(move |(&id, &m)| (id, last.saturating_sub(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_without_gaps() {
        let mut expect_low = 0;
        for b in 0..BUCKETS {
            let (low, high) = bucket_range(b);
            assert_eq!(low, expect_low, "bucket {b} starts where the one before ended");
            assert!(high > low);
            assert_eq!(bucket_of(low), b);
            assert_eq!(bucket_of(high - 1), b);
            expect_low = high;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1, "huge values saturate into the last bucket");
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_true_value() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.sum(), 10_000 * 10_001 / 2);
        for (q, truth) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - truth).abs() / truth < 0.19, "q{q}: {got} against {truth}");
        }
        assert_eq!(h.quantile(0.0), 1);
        assert!(h.max() >= 10_000 && h.max() < 12_288);
        assert_eq!(Histogram::default().quantile(0.99), 0, "empty");
    }

    #[test]
    fn since_gives_the_samples_in_between() {
        let mut h = Histogram::default();
        h.record_n(100, 10);
        let before = h.clone();
        h.record_n(5_000, 3);
        let d = h.since(&before);
        assert_eq!(d.count(), 3);
        assert_eq!(d.sum(), 15_000);
        assert!(d.quantile(0.5) >= 4_096 && d.quantile(0.5) < 5_120);
        let mut merged = before.clone();
        merged.merge(&d);
        assert_eq!(merged, h);
    }

    #[test]
    fn cumulative_counts_at_powers_of_two_match_the_samples_below() {
        let mut h = Histogram::default();
        for v in [0, 1, 3, 4, 7, 8, 1000, 1 << 20] {
            h.record(v);
        }
        let at: BTreeMap<u64, u64> = h.cumulative_at_powers_of_two().collect();
        assert_eq!(at[&1], 1, "0 is below 1");
        assert_eq!(at[&4], 3);
        assert_eq!(at[&8], 5);
        assert_eq!(at[&1024], 7);
        assert_eq!(at[&(1 << 21)], 8);
        assert!(at.values().zip(at.values().skip(1)).all(|(a, b)| a <= b), "cumulative");
    }

    #[test]
    fn the_atomic_histogram_records_what_the_plain_one_does() {
        let a = AtomicHistogram::default();
        let mut h = Histogram::default();
        for v in [3u64, 90, 90, 70_000] {
            a.record_n(v, 2);
            h.record_n(v, 2);
        }
        a.record_duration(Duration::from_millis(2));
        h.record(2_000);
        assert_eq!(a.snapshot(), h);
    }
}

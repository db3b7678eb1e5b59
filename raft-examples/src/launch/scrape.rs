//! Reading a node's `GET /metrics` page: the Prometheus text format and OpenMetrics (which
//! the apps serve, see [`crate::host::metrics`]), enough for the launcher's table and the
//! benchmarks to read gauges and histograms.
//!
//! [`Scrape::parse`] reads every sample line of a page once; [`Scrape::value`] finds a
//! gauge (or counter) and [`Scrape::histogram`] gathers one histogram's `_bucket`, `_sum`
//! and `_count` lines. Two scrapes of a histogram give what was recorded in between
//! ([`ScrapedHistogram::since`]), and its quantiles are estimated from the bucket counts
//! ([`ScrapedHistogram::quantile`]) the way Prometheus' `histogram_quantile` does: linear
//! interpolation within the bucket that holds the quantile. Malformed text is a
//! [`ScrapeError`], never a panic.

use std::fmt;

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name (for a histogram: the metric's name with `_bucket`, `_sum` or
    /// `_count`).
    pub name: String,
    /// Its labels, in the order of the line.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether the sample has every label of `filter` with its value (other labels may
    /// be there too).
    fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// The samples of one `/metrics` page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// Every sample line, in page order (comments and blank lines are left out).
    pub samples: Vec<Sample>,
}

/// What is wrong with a page, or with what was asked of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// A line that is not a sample, a comment or blank.
    #[error("line {line}: {reason}: {text:?}")]
    Malformed {
        /// The line's number, from 1.
        line: usize,
        /// What is wrong.
        reason: &'static str,
        /// The line (its first 200 characters).
        text: String,
    },
    /// No sample of that name and those labels.
    #[error("no series {0}")]
    Missing(String),
    /// A histogram asked for matches more than one series (say, one per peer).
    #[error("{0} matches several series: add a label filter")]
    Ambiguous(String),
    /// A histogram whose lines do not add up.
    #[error("{series}: {reason}")]
    Inconsistent {
        /// The histogram, with its labels.
        series: String,
        /// What does not add up.
        reason: String,
    },
    /// Two scrapes of a histogram with different bucket bounds.
    #[error("{0}: the two scrapes have different buckets")]
    DifferentBuckets(String),
    /// A histogram with fewer samples than in the earlier scrape: the node restarted in
    /// between (everything in the later scrape was then recorded since the restart).
    #[error("{0}: fewer samples than in the earlier scrape (the node restarted?)")]
    Reset(String),
}

/// A histogram read from a page: cumulative bucket counts, sum and count.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapedHistogram {
    /// The metric's name and labels, as in `name{peer="2"}` (for error messages).
    pub series: String,
    /// `(le, samples <= le)` by increasing `le`; the last bound is `+Inf`, its count
    /// equals [`ScrapedHistogram::count`].
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the samples.
    pub sum: f64,
    /// Number of samples.
    pub count: u64,
}

/// How a series is named in messages: `name{k="v",...}`.
fn describe(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Rust also reads `inf`, `infinity` and `nan` in any case: the format does not.
        _ if s.bytes().any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) => None,
        _ => s.parse().ok(),
    }
}

/// A count: a finite, non-negative whole number (exact in an f64).
pub(crate) fn as_count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_992.0).then_some(v as u64)
}

/// Reads one sample line (not a comment, not blank).
fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let is_name_char =
        |c: char, first: bool| c == '_' || c == ':' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit());
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    if !name.chars().enumerate().all(|(i, c)| is_name_char(c, i == 0)) {
        return Err("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value");
    }
    // The value, an optional timestamp and an optional exemplar (`# {...} ...`).
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_number(value).ok_or("bad value")?;
    match fields.next() {
        None | Some("#") => {}
        Some(ts) => {
            parse_number(ts).ok_or("bad timestamp")?;
            if fields.next().is_some_and(|f| f != "#") {
                return Err("unexpected text after the timestamp");
            }
        }
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

/// A sample's labels, as read.
type Labels = Vec<(String, String)>;

/// A series' labels other than `le`, sorted.
type SeriesLabels<'a> = Vec<(&'a str, &'a str)>;

/// The labels after a `{`, up to and including the `}`; and what follows it.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let name_end = s.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).ok_or("unterminated labels")?;
        let name = &s[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("bad label name");
        }
        s = s[name_end..].trim_start().strip_prefix('=').ok_or("no `=` after a label name")?;
        s = s.trim_start().strip_prefix('"').ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("unterminated label value")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return Err("bad escape in a label value"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return Err("no `,` or `}` after a label");
        }
    }
}

impl Scrape {
    /// Reads a page in the Prometheus text format or OpenMetrics: every sample line;
    /// comments (`# HELP`, `# TYPE`, `# EOF`, ...) and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Scrape, ScrapeError> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample = parse_line(line).map_err(|reason| ScrapeError::Malformed {
                line: i + 1,
                reason,
                text: line.chars().take(200).collect(),
            })?;
            samples.push(sample);
        }
        Ok(Scrape { samples })
    }

    /// The value of the first sample named `name` that has the labels of `filter`
    /// (`&[]`: any labels): a gauge such as `raft_is_leader`, or
    /// `raft_replication_lag_entries` with `&[("peer", "2")]`, or a counter (with its
    /// `_total`).
    pub fn value(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.samples.iter().find(|s| s.name == name && s.matches(filter)).map(|s| s.value)
    }

    /// The histogram `name` (without `_bucket`) whose series has the labels of `filter`;
    /// fails if none or several series match, or if its lines do not add up (buckets
    /// that are not cumulative, no `+Inf` bucket, a count that differs from it).
    pub fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Result<ScrapedHistogram, ScrapeError> {
        let asked = describe(name, filter);
        let bucket = format!("{name}_bucket");
        // The series' labels other than `le`, sorted, and their buckets.
        let mut series: Vec<(SeriesLabels<'_>, Vec<(f64, f64)>)> = Vec::new();
        for s in self.samples.iter().filter(|s| s.name == bucket && s.matches(filter)) {
            let inconsistent =
                |reason: &str| ScrapeError::Inconsistent { series: asked.clone(), reason: reason.into() };
            let le = s.label("le").ok_or_else(|| inconsistent("a bucket without `le`"))?;
            let le = parse_number(le).filter(|v| !v.is_nan()).ok_or_else(|| inconsistent("a bad `le`"))?;
            let mut others: Vec<(&str, &str)> =
                s.labels.iter().filter(|(k, _)| k != "le").map(|(k, v)| (k.as_str(), v.as_str())).collect();
            others.sort_unstable();
            match series.iter_mut().find(|(l, _)| *l == others) {
                Some((_, buckets)) => buckets.push((le, s.value)),
                None => series.push((others, vec![(le, s.value)])),
            }
        }
        let (labels, raw) = match series.len() {
            0 => return Err(ScrapeError::Missing(asked)),
            1 => series.remove(0),
            _ => return Err(ScrapeError::Ambiguous(asked)),
        };
        let found = describe(name, &labels);
        let inconsistent = |reason: String| ScrapeError::Inconsistent { series: found.clone(), reason };
        // Its `_sum` and `_count`: the samples with exactly the same other labels.
        let same_series = |suffix: &str| {
            let wanted = format!("{name}{suffix}");
            self.samples
                .iter()
                .filter(|s| s.name == wanted)
                .find(|s| {
                    let mut l: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    l.sort_unstable();
                    l == labels
                })
                .map(|s| s.value)
                .ok_or_else(|| ScrapeError::Missing(describe(&wanted, &labels)))
        };
        let sum = same_series("_sum")?;
        let count = same_series("_count")?;
        let count = as_count(count).ok_or_else(|| inconsistent(format!("a bad count {count}")))?;
        let buckets = cumulative(raw, count).map_err(inconsistent)?;
        Ok(ScrapedHistogram { series: found, buckets, sum, count })
    }
}

/// The buckets `(le, count)` of a histogram of `count` samples, sorted by `le`, checked
/// and with whole counts; or what does not add up.
fn cumulative(mut raw: Vec<(f64, f64)>, count: u64) -> Result<Vec<(f64, u64)>, String> {
    raw.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(raw.len());
    for (le, n) in raw {
        let n = as_count(n).ok_or_else(|| format!("a bad bucket count {n}"))?;
        if let Some(&(prev_le, prev_n)) = buckets.last() {
            if prev_le == le {
                return Err(format!("two buckets with le={le}"));
            }
            if n < prev_n {
                return Err(format!("bucket le={le} holds fewer samples than le={prev_le}"));
            }
        }
        buckets.push((le, n));
    }
    match buckets.last() {
        Some(&(le, n)) if le == f64::INFINITY && n == count => Ok(buckets),
        Some(&(le, n)) if le == f64::INFINITY => {
            Err(format!("the +Inf bucket holds {n} samples, the count is {count}"))
        }
        _ => Err("no +Inf bucket".into()),
    }
}

impl ScrapedHistogram {
    /// What was recorded after `earlier`, an earlier scrape of the same histogram:
    /// bucket by bucket, the later count minus the earlier one. Fails if the buckets
    /// differ, or with [`ScrapeError::Reset`] if any count went down (the node
    /// restarted: then this scrape alone holds what was recorded since the restart).
    pub fn since(&self, earlier: &ScrapedHistogram) -> Result<ScrapedHistogram, ScrapeError> {
        let same_bounds = self.buckets.len() == earlier.buckets.len()
            && self.buckets.iter().zip(&earlier.buckets).all(|(a, b)| a.0 == b.0);
        if !same_bounds {
            return Err(ScrapeError::DifferentBuckets(self.series.clone()));
        }
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (&(le, n), &(_, before)) in self.buckets.iter().zip(&earlier.buckets) {
            buckets.push((le, n.checked_sub(before).ok_or_else(|| ScrapeError::Reset(self.series.clone()))?));
        }
        let count = self.count.checked_sub(earlier.count).ok_or_else(|| ScrapeError::Reset(self.series.clone()))?;
        Ok(ScrapedHistogram { series: self.series.clone(), buckets, sum: (self.sum - earlier.sum).max(0.0), count })
    }

    /// The mean of the samples; `None` without samples.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// The `q`-quantile (`q` in 0..=1) estimated from the buckets: the bucket that holds
    /// the sample of rank `q * count` is found, and the value is interpolated linearly
    /// between its lower and upper bounds (from 0 for the first bucket), as Prometheus'
    /// `histogram_quantile` does; a quantile in the `+Inf` bucket is the highest finite
    /// bound. The estimate is within the bucket that holds the true quantile: within a
    /// factor of 2 for buckets at powers of two. `None` without samples, for `q` outside
    /// 0..=1, or without a finite bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count as f64;
        let (mut low, mut below) = (0.0, 0u64);
        for &(le, n) in &self.buckets {
            // The first bucket that reaches the rank and holds a sample (rank 0: the
            // lowest sample's bucket).
            if n > below && n as f64 >= rank {
                if le == f64::INFINITY {
                    return self.buckets.iter().rev().find(|b| b.0.is_finite()).map(|b| b.0);
                }
                if le <= 0.0 {
                    return Some(le);
                }
                let within = (rank - below as f64).max(0.0) / (n - below) as f64;
                return Some(low + (le - low) * within);
            }
            (low, below) = (le, n);
        }
        None
    }
}

impl fmt::Display for ScrapedHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} samples, sum {}", self.series, self.count, self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::metrics::render;
    use proptest::prelude::*;
    use raft::{Histogram, Latencies, Metrics, Role};

    fn metrics(latencies: Latencies) -> Metrics {
        let status = raft::Status {
            id: 1,
            role: Role::Leader,
            is_voter: true,
            term: 4,
            voted_for: Some(1),
            leader: Some(1),
            commit_index: 20,
            applied_index: 19,
            last_log_index: 20,
            last_log_term: 4,
            durable_index: 20,
            membership: raft::Membership::new(1..=3),
            config_index: 1,
            transferring_to: None,
            match_index: [(2, 20), (3, 14)].into_iter().collect(),
            cached_entries: 0,
            snapshot_index: 0,
            first_log_index: 1,
            fatal_error: None,
            stopped: false,
        };
        Metrics { status, counters: raft::Counters::default(), latencies, sessions: raft::SessionStats::default() }
    }

    fn latencies() -> Latencies {
        let mut l = Latencies::default();
        l.log_write.record_n(300, 90);
        l.log_write.record_n(5_000, 10);
        l.log_write_entries.record_n(4, 100);
        l.commit.record_n(1_200, 50);
        l.commit.record_n(40_000, 2);
        l.peer_rtt.entry(2).or_default().record_n(80, 5);
        l.peer_rtt.entry(3).or_default().record_n(3_000, 7);
        l
    }

    /// `ours` is within the power-of-two bucket resolution (a factor of 2) of the
    /// in-process histogram's quantile, in microseconds.
    fn close(ours_seconds: f64, theirs_us: u64) {
        let ours = ours_seconds * 1e6;
        let theirs = theirs_us as f64;
        assert!(ours >= theirs / 2.0 && ours <= theirs * 2.0, "scraped {ours} µs against {theirs} µs");
    }

    #[test]
    fn a_rendered_page_gives_the_gauges_and_the_histograms_counts() {
        let m = metrics(latencies());
        let s = Scrape::parse(&render(&m, "kv", &[])).unwrap();
        assert_eq!(s.value("raft_is_leader", &[]), Some(1.0));
        assert_eq!(s.value("raft_term", &[]), Some(4.0));
        assert_eq!(s.value("raft_role", &[("role", "leader")]), Some(1.0));
        assert_eq!(s.value("raft_replication_lag_entries", &[("peer", "3")]), Some(6.0));
        assert_eq!(s.value("raft_replication_lag_entries", &[("peer", "2")]), Some(0.0));
        assert_eq!(s.value("raft_replication_lag_entries", &[("peer", "9")]), None);
        assert_eq!(s.value("raft_node_info", &[("app", "kv"), ("node", "1")]), Some(1.0));

        let w = s.histogram("raft_log_write_seconds", &[]).unwrap();
        assert_eq!(w.count, 100);
        assert!((w.sum - (300.0 * 90.0 + 5_000.0 * 10.0) * 1e-6).abs() < 1e-9, "{w}");
        assert_eq!(w.buckets.len(), 43, "2^0..=2^41 µs and +Inf");
        let at = |le: f64| w.buckets.iter().find(|b| (b.0 - le).abs() < le * 1e-9).map(|b| b.1);
        assert_eq!(at(256e-6), Some(0));
        assert_eq!(at(512e-6), Some(90));
        assert_eq!(at(4096e-6), Some(90));
        assert_eq!(at(8192e-6), Some(100));
        assert_eq!(w.buckets.last(), Some(&(f64::INFINITY, 100)));
        for q in [0.1, 0.5, 0.9, 0.95, 0.99, 1.0] {
            close(w.quantile(q).unwrap(), m.latencies.log_write.quantile(q));
        }
        let c = s.histogram("raft_commit_seconds", &[]).unwrap();
        assert_eq!(c.count, 52);
        close(c.quantile(0.5).unwrap(), m.latencies.commit.quantile(0.5));
        close(c.quantile(0.99).unwrap(), m.latencies.commit.quantile(0.99));
        let e = s.histogram("raft_log_write_entries", &[]).unwrap();
        assert_eq!((e.count, e.mean()), (100, Some(4.0)));

        let rtt = s.histogram("raft_peer_rtt_seconds", &[("peer", "3")]).unwrap();
        assert_eq!(rtt.count, 7);
        assert_eq!(rtt.series, "raft_peer_rtt_seconds{peer=\"3\"}");
        close(rtt.quantile(0.99).unwrap(), 3_000);
        assert!(matches!(s.histogram("raft_peer_rtt_seconds", &[]), Err(ScrapeError::Ambiguous(_))));
        assert!(matches!(s.histogram("raft_peer_rtt_seconds", &[("peer", "4")]), Err(ScrapeError::Missing(_))));
        assert!(matches!(s.histogram("raft_nothing_seconds", &[]), Err(ScrapeError::Missing(_))));

        // Without samples: counts of 0 and no quantile.
        let empty = s.histogram("raft_apply_seconds", &[]).unwrap();
        assert_eq!((empty.count, empty.quantile(0.5), empty.mean()), (0, None, None));
    }

    #[test]
    fn two_scrapes_give_what_was_recorded_in_between() {
        let before = latencies();
        let mut after = before.clone();
        after.log_write.record_n(2_000, 30);
        after.log_write.record_n(150, 70);
        let scrape = |l: &Latencies| Scrape::parse(&render(&metrics(l.clone()), "kv", &[])).unwrap();
        let (s0, s1) = (scrape(&before), scrape(&after));
        let (h0, h1) = (
            s0.histogram("raft_log_write_seconds", &[]).unwrap(),
            s1.histogram("raft_log_write_seconds", &[]).unwrap(),
        );
        let d = h1.since(&h0).unwrap();
        let theirs: Histogram = after.log_write.since(&before.log_write);
        assert_eq!(d.count, 100);
        assert_eq!(d.count, theirs.count());
        assert!((d.sum - theirs.sum() as f64 * 1e-6).abs() < 1e-9, "{d}");
        for q in [0.5, 0.7, 0.9, 0.99] {
            close(d.quantile(q).unwrap(), theirs.quantile(q));
        }
        // Nothing new: no samples; the other way round: a restart.
        assert_eq!(h1.since(&h1).unwrap().count, 0);
        assert!(matches!(h0.since(&h1), Err(ScrapeError::Reset(_))));
        let mut fewer = h0.clone();
        fewer.buckets.pop();
        assert!(matches!(h1.since(&fewer), Err(ScrapeError::DifferentBuckets(_))));
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = |buckets: Vec<(f64, u64)>| {
            let count = buckets.last().unwrap().1;
            ScrapedHistogram { series: "h".into(), buckets, sum: 0.0, count }
        };
        // 10 samples in (1, 2], 10 in (2, 4].
        let two = h(vec![(1.0, 0), (2.0, 10), (4.0, 20), (f64::INFINITY, 20)]);
        assert_eq!(two.quantile(0.25), Some(1.5));
        assert_eq!(two.quantile(0.5), Some(2.0));
        assert_eq!(two.quantile(0.75), Some(3.0));
        assert_eq!(two.quantile(1.0), Some(4.0));
        assert_eq!(two.quantile(0.0), Some(1.0), "the lowest sample's bucket, from below");
        assert_eq!(two.quantile(1.5), None);
        assert_eq!(two.quantile(f64::NAN), None);
        // The first bucket starts at 0; a quantile in +Inf is the highest finite bound.
        assert_eq!(h(vec![(8.0, 4), (f64::INFINITY, 4)]).quantile(0.5), Some(4.0));
        assert_eq!(h(vec![(8.0, 1), (f64::INFINITY, 4)]).quantile(0.9), Some(8.0));
        assert_eq!(h(vec![(f64::INFINITY, 4)]).quantile(0.5), None);
    }

    #[test]
    fn the_prometheus_text_format_is_read_too() {
        let text = "\
# HELP disk_fsync_seconds The latency of fsync.
# TYPE disk_fsync_seconds histogram
disk_fsync_seconds_bucket{le=\"0.001\"} 10
disk_fsync_seconds_bucket{le=\"0.002\"} 18
disk_fsync_seconds_bucket{le=\"0.004\"} 20
disk_fsync_seconds_bucket{le=\"+Inf\"} 20
disk_fsync_seconds_sum 0.0215
disk_fsync_seconds_count 20
up{job=\"a\\\"b\\\\c\\nd\", instance = \"x\"} 1 1700000000000
leader_changes_total 3.0
tiny 1.5e-05
";
        let s = Scrape::parse(text).unwrap();
        let h = s.histogram("disk_fsync_seconds", &[]).unwrap();
        assert_eq!((h.count, h.buckets.len()), (20, 4));
        assert!((h.quantile(0.5).unwrap() - 0.001).abs() < 1e-12, "{h}");
        assert!((h.quantile(0.9).unwrap() - 0.002).abs() < 1e-12, "{h}");
        assert_eq!(s.value("up", &[("job", "a\"b\\c\nd"), ("instance", "x")]), Some(1.0));
        assert_eq!(s.value("leader_changes_total", &[]), Some(3.0));
        assert_eq!(s.value("tiny", &[]), Some(1.5e-5));
    }

    #[test]
    fn malformed_text_is_an_error_naming_the_line() {
        for bad in [
            "x{le=\"1\" 3",
            "x{le=1} 3",
            "x{le=\"1} 3",
            "x{=\"1\"} 3",
            "x{a=\"1\"b=\"2\"} 3",
            "x{a=\"\\q\"} 3",
            "x three",
            "x 3 yesterday",
            "x 3 4 5",
            "x",
            "x{}",
            "{a=\"b\"} 1",
            "9x 1",
            "x-y 1",
            "x 0x10",
            "x inf",
            "x{a=\"é\" 1",
        ] {
            let text = format!("# TYPE ok gauge\nok 1\n{bad}\n");
            match Scrape::parse(&text) {
                Err(ScrapeError::Malformed { line: 3, .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let inconsistent = [
            "h_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 4",
            "h_bucket{le=\"1\"} 4\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 5",
            "h_bucket{le=\"1\"} 4\nh_bucket{le=\"2\"} 4\nh_sum 1\nh_count 4",
            "h_bucket{le=\"1\"} 4\nh_bucket{le=\"1\"} 4\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 4",
            "h_bucket{le=\"one\"} 4\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 4",
            "h_bucket 4\nh_sum 1\nh_count 4",
            "h_bucket{le=\"+Inf\"} 4.5\nh_sum 1\nh_count 4.5",
            "h_bucket{le=\"+Inf\"} -4\nh_sum 1\nh_count -4",
        ];
        for text in inconsistent {
            let r = Scrape::parse(text).unwrap().histogram("h", &[]);
            assert!(matches!(r, Err(ScrapeError::Inconsistent { .. })), "{text:?} gave {r:?}");
        }
        let no_count = Scrape::parse("h_bucket{le=\"+Inf\"} 4\nh_sum 1").unwrap().histogram("h", &[]);
        assert!(matches!(no_count, Err(ScrapeError::Missing(_))), "{no_count:?}");
    }

    proptest! {
        #[test]
        fn no_text_makes_the_parser_panic(text in "\\PC{0,200}", cut in 0usize..4000, noise in "[{}\"=,\\\\ a-z0-9.+-]{0,8}") {
            let _ = Scrape::parse(&text).map(|s| s.histogram("a", &[]));
            // A real page, cut anywhere and with noise spliced in.
            let page = render(&metrics(latencies()), "kv", &[]);
            let mut at = cut.min(page.len());
            while !page.is_char_boundary(at) {
                at -= 1;
            }
            let spliced = format!("{}{noise}{}", &page[..at], &page[at..]);
            if let Ok(s) = Scrape::parse(&spliced) {
                for name in ["raft_log_write_seconds", "raft_commit_seconds", "raft_peer_rtt_seconds"] {
                    if let Ok(h) = s.histogram(name, &[("peer", "3")]).or_else(|_| s.histogram(name, &[])) {
                        let _ = h.quantile(0.99);
                    }
                }
            }
        }
    }
}

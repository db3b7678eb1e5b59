//! SVG charts of a client-count sweep: throughput against clients for every system and
//! workload, and latency percentiles against clients for each workload.

use std::path::Path;

use plotters::prelude::*;

use super::results::{aggregate, RunResult};
use super::target::{Target, Workload};

fn color(target: Target, workload: Workload, shade: usize) -> RGBColor {
    // Blues for ours, reds for etcd; darker for writes and for the lower percentile.
    let w = Workload::ALL.iter().position(|x| *x == workload).unwrap_or(0) + shade;
    match target {
        Target::Kv => [RGBColor(20, 70, 160), RGBColor(70, 140, 220), RGBColor(120, 190, 250)][w.min(2)],
        Target::Etcd => [RGBColor(180, 30, 30), RGBColor(235, 110, 40), RGBColor(240, 170, 60)][w.min(2)],
    }
}

type Series = (String, RGBColor, Vec<(f64, f64)>);

fn draw(path: &Path, caption: &str, y_desc: &str, series: &[Series]) -> Result<(), String> {
    let points = series.iter().flat_map(|s| s.2.iter());
    let (mut xmax, mut ymin, mut ymax) = (1.0f64, f64::MAX, 0.0f64);
    for &(x, y) in points {
        xmax = xmax.max(x);
        if y > 0.0 {
            ymin = ymin.min(y);
            ymax = ymax.max(y);
        }
    }
    if ymax <= 0.0 {
        return Err(format!("nothing to plot in {}", path.display()));
    }
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((0.8f64..xmax * 1.3).log_scale(), (ymin / 1.5..ymax * 1.5).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| match *y {
            y if y >= 10.0 => format!("{y:.0}"),
            y if y >= 1.0 => format!("{y:.1}"),
            y => format!("{y:.2}"),
        })
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| err(&e))?;
    for (label, c, pts) in series {
        let c = *c;
        chart
            .draw_series(LineSeries::new(pts.iter().copied().filter(|p| p.1 > 0.0), c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().filter(|p| p.1 > 0.0).map(|p| Circle::new(*p, 3, c.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn curve(agg: &[RunResult], target: Target, workload: Workload, y: impl Fn(&RunResult) -> f64) -> Vec<(f64, f64)> {
    agg.iter().filter(|r| r.target == target && r.workload == workload).map(|r| (r.clients as f64, y(r))).collect()
}

/// Draws throughput (ops/s) against client count, one line per system and workload.
pub fn throughput_chart(results: &[RunResult], path: &Path, caption: &str) -> Result<(), String> {
    let agg = aggregate(results);
    let mut series = Vec::new();
    for w in Workload::ALL {
        for t in Target::ALL {
            let pts = curve(&agg, t, w, |r| r.ops_per_sec);
            if !pts.is_empty() {
                series.push((format!("{t} {w}"), color(t, w, 0), pts));
            }
        }
    }
    draw(path, caption, "operations per second (log)", &series)
}

/// Draws p50 and p99 latency (ms) against client count for `workload`, both systems.
pub fn latency_chart(results: &[RunResult], workload: Workload, path: &Path, caption: &str) -> Result<(), String> {
    let agg = aggregate(results);
    let mut series = Vec::new();
    for t in Target::ALL {
        for (name, shade, f) in
            [("p50", 0, (|r: &RunResult| r.p50_us) as fn(&RunResult) -> u64), ("p99", 1, |r| r.p99_us)]
        {
            let pts = curve(&agg, t, workload, |r| f(r) as f64 / 1000.0);
            if !pts.is_empty() {
                series.push((format!("{t} {name}"), color(t, Workload::Write, shade * 2), pts));
            }
        }
    }
    draw(path, caption, "latency in ms (log)", &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(target: Target, workload: Workload, clients: usize, ops: f64) -> RunResult {
        RunResult {
            target,
            workload,
            clients,
            value_size: 1024,
            seconds: 1.0,
            ops: ops as u64,
            ops_per_sec: ops,
            p50_us: 1_000_000 / ops as u64,
            p99_us: 3_000_000 / ops as u64,
            p999_us: 0,
            max_us: 0,
            errors: 0,
            peak_rss_kib: vec![],
            server: vec![],
        }
    }

    #[test]
    fn charts_are_svg_files_with_every_series_in_the_legend() {
        let mut rs = Vec::new();
        for c in [1, 16, 64, 256, 1024] {
            rs.push(r(Target::Kv, Workload::Write, c, 1000.0 * c as f64));
            rs.push(r(Target::Etcd, Workload::Write, c, 100.0 * c as f64));
            rs.push(r(Target::Etcd, Workload::Read, c, 150.0 * c as f64));
        }
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("throughput.svg");
        throughput_chart(&rs, &t, "writes").unwrap();
        let svg = std::fs::read_to_string(&t).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
        for label in ["kv write", "etcd write", "etcd read"] {
            assert!(svg.contains(label), "legend lacks {label}");
        }
        assert!(!svg.contains("kv read"));
        let l = dir.path().join("latency.svg");
        latency_chart(&rs, Workload::Write, &l, "latency").unwrap();
        let svg = std::fs::read_to_string(&l).unwrap();
        for label in ["kv p50", "kv p99", "etcd p50", "etcd p99"] {
            assert!(svg.contains(label), "legend lacks {label}");
        }
        assert!(throughput_chart(&[], &dir.path().join("empty.svg"), "none").is_err());
    }
}

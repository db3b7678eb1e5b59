//! The soak's SVG chart: throughput over time above, the largest node's memory and data
//! directory below, with a mark at every fault.

use std::path::Path;

use plotters::prelude::*;

use super::Sample;

/// Draws the chart of `samples` to `path`, marking the `faults` (time, what).
pub(super) fn draw(path: &Path, samples: &[Sample], faults: &[(f64, String)]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    let end = samples.last().map_or(1.0, |s| s.at).max(1.0);
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(420);
    let ymax = samples.iter().map(|s| s.ops_per_sec).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&top)
        .caption("kv soak: throughput (mixed load), faults marked", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..ymax)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("seconds").y_desc("operations per second").draw().map_err(|e| err(&e))?;
    let red = RGBColor(200, 40, 40).mix(0.5);
    chart
        .draw_series(faults.iter().map(|(at, _)| PathElement::new(vec![(*at, 0.0), (*at, ymax)], red)))
        .map_err(|e| err(&e))?;
    let blue = RGBColor(20, 70, 160);
    chart
        .draw_series(LineSeries::new(samples.iter().skip(1).map(|s| (s.at, s.ops_per_sec)), blue.stroke_width(2)))
        .map_err(|e| err(&e))?;

    let mmax = samples.iter().map(|s| s.max_dir_mib.max(s.max_rss_mib)).fold(1.0, f64::max) * 1.15;
    let mut lower = ChartBuilder::on(&bottom)
        .caption("largest node: data directory and resident memory", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..mmax)
        .map_err(|e| err(&e))?;
    lower.configure_mesh().x_desc("seconds").y_desc("MiB").draw().map_err(|e| err(&e))?;
    let green = RGBColor(30, 130, 60);
    let orange = RGBColor(220, 120, 20);
    lower
        .draw_series(LineSeries::new(samples.iter().map(|s| (s.at, s.max_dir_mib)), green.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("data directory")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green.stroke_width(2)));
    lower
        .draw_series(LineSeries::new(samples.iter().map(|s| (s.at, s.max_rss_mib)), orange.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("resident memory")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2)));
    lower
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

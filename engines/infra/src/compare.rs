//! Runs set side by side: the base twin and its what-if variants on the
//! same traffic, as a table (SLO breaches, requests, failures, p99 latency,
//! cost in replica-hours) and as a plot over the run's time.

use crate::{InfraError, Report, Verdict};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// One run's line in a comparison.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub variant: String,
    /// Assertions judged, and those that failed (SLO breaches).
    pub assertions: usize,
    pub breaches: usize,
    /// Outside requests sent and failed, over every entry service.
    pub requests: u64,
    pub failed: u64,
    /// The worst entry service's end-to-end p99, seconds.
    pub p99_s: f64,
    /// Replica-hours ready over the run, every service: its cost.
    pub replica_hours: f64,
}

impl ComparisonRow {
    pub fn of(variant: &str, report: &Report, verdicts: &[Verdict]) -> ComparisonRow {
        ComparisonRow {
            variant: variant.to_string(),
            assertions: verdicts.len(),
            breaches: verdicts.iter().filter(|v| !v.passed).count(),
            requests: report.entries.iter().map(|e| e.sent).sum(),
            failed: report.entries.iter().map(|e| e.failed).sum(),
            p99_s: report
                .entries
                .iter()
                .map(|e| e.latency.p99_s)
                .fold(0.0, f64::max),
            replica_hours: report.replica_hours(),
        }
    }
}

/// Points a plotted line has at most: the timeline's buckets are added up
/// into as many intervals.
const POINTS: usize = 720;

/// One interval of a run's timeline, every entry service together.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// Its end, in hours from the start.
    hours: f64,
    mean_latency_ms: f64,
    failed: f64,
}

/// What a panel draws of each point.
type PointValue = fn(&Point) -> f64;

/// One run's timeline in intervals of `buckets_per_point` buckets.
fn series(report: &Report, buckets_per_point: usize) -> Vec<Point> {
    let len = report
        .entries
        .iter()
        .map(|e| e.timeline.len())
        .max()
        .unwrap_or(0);
    (0..len)
        .step_by(buckets_per_point)
        .map(|first| {
            let (mut ok, mut failed, mut latency) = (0u64, 0u64, 0.0);
            for e in &report.entries {
                for b in e.timeline.iter().skip(first).take(buckets_per_point) {
                    ok += b.ok;
                    failed += b.failed;
                    latency += b.latency_sum_s;
                }
            }
            let hours = (first + buckets_per_point) as f64 * report.bucket_s / 3600.0;
            let mean_ms = if ok > 0 {
                latency / ok as f64 * 1e3
            } else {
                0.0
            };
            Point {
                hours,
                mean_latency_ms: mean_ms,
                failed: failed as f64,
            }
        })
        .collect()
}

/// An SVG plot of runs on the same traffic: each run's end-to-end mean
/// latency and its failed requests over time, one line per run.
pub fn plot_svg(title: &str, runs: &[(&str, &Report)]) -> Result<String, InfraError> {
    let failed = |e: &dyn std::fmt::Display| InfraError::invalid("plot", e.to_string());
    let buckets = runs
        .iter()
        .flat_map(|(_, r)| r.entries.iter().map(|e| e.timeline.len()))
        .max()
        .unwrap_or(0);
    let per_point = buckets.div_ceil(POINTS).max(1);
    let bucket_s = runs.first().map_or(1.0, |(_, r)| r.bucket_s);
    let mut lines: Vec<(&str, Vec<Point>)> = runs
        .iter()
        .map(|(name, report)| (*name, series(report, per_point)))
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|(_, s)| s.last().map(|p| p.hours))
        .fold(0.0, f64::max)
        .max(1e-3);
    let interval = describe_interval(per_point as f64 * bucket_s);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| failed(&e))?;
        let panels = root.split_evenly((2, 1));
        // Intervals without answers sit on the latency axis's floor.
        let floor_ms = lines
            .iter()
            .flat_map(|(_, s)| s.iter().map(|p| p.mean_latency_ms))
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let floor_ms = if floor_ms.is_finite() {
            floor_ms / 2.0
        } else {
            0.1
        };
        for p in lines.iter_mut().flat_map(|(_, s)| s.iter_mut()) {
            p.mean_latency_ms = p.mean_latency_ms.max(floor_ms);
        }
        let lines = lines;
        let highest = |value: PointValue| {
            lines
                .iter()
                .flat_map(|(_, s)| s.iter().map(value))
                .fold(0.0, f64::max)
        };
        // One panel's chart, lines and legend; the two differ only in
        // their y axis (latency spans orders of magnitude: logarithmic).
        macro_rules! panel {
            ($area:expr, $label:expr, $y:expr, $value:expr) => {{
                let value: PointValue = $value;
                let mut chart = ChartBuilder::on($area)
                    .caption(format!("{}, per {interval}", $label), ("sans-serif", 16))
                    .margin(12)
                    .x_label_area_size(36)
                    .y_label_area_size(64)
                    .build_cartesian_2d(0.0..x_max, $y)
                    .map_err(|e| failed(&e))?;
                chart
                    .configure_mesh()
                    .x_desc("hours from the start")
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(|e| failed(&e))?;
                for (i, (name, points)) in lines.iter().enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    chart
                        .draw_series(LineSeries::new(
                            points.iter().map(|p| (p.hours, value(p))),
                            color.stroke_width(2),
                        ))
                        .map_err(|e| failed(&e))?
                        .label(*name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                        });
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .draw()
                    .map_err(|e| failed(&e))?;
            }};
        }
        let top_ms = highest(|p| p.mean_latency_ms).max(floor_ms * 10.0) * 1.5;
        panel!(
            &panels[0],
            "end-to-end mean latency, ms (log scale)",
            (floor_ms..top_ms).log_scale(),
            |p| p.mean_latency_ms
        );
        let top_failed = match highest(|p| p.failed) {
            v if v > 0.0 => v * 1.08,
            _ => 1.0,
        };
        panel!(&panels[1], "failed requests", 0.0..top_failed, |p| p.failed);
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}

/// "minute", "15 minutes", "2 hours": an interval as people say it.
fn describe_interval(seconds: f64) -> String {
    let (n, unit) = if seconds >= 3600.0 && seconds % 3600.0 == 0.0 {
        (seconds / 3600.0, "hour")
    } else if seconds >= 60.0 && seconds % 60.0 == 0.0 {
        (seconds / 60.0, "minute")
    } else {
        (seconds, "second")
    };
    if n == 1.0 {
        unit.to_string()
    } else {
        format!("{n} {unit}s")
    }
}

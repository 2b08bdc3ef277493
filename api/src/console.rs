//! The node's figures over the last minutes, for the inspector's charts
//! (`GET /v1/cluster/stats`): steps a second, API requests and their latency
//! percentiles, active simulations, forks and errors a second.
//!
//! They are the node's own metrics, not a second count: [`Recorder`] wraps
//! the process's metrics recorder (Prometheus) and tees the few series the
//! charts draw into process-wide tallies, and [`sample`] turns the tallies
//! into one point a second (the metrics upkeep thread calls it). Like
//! `/metrics`, the figures are the process's.

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
    SharedString, Unit,
};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Points kept: five minutes at one a second.
const KEPT: usize = 300;
/// Latency buckets: four per octave from 10 µs, the last open-ended (~10 s).
const BUCKETS: usize = 80;
const FIRST_BUCKET_S: f64 = 1e-5;

const STEPS: &str = "hanzo_twin_steps_total";
const CRASHES: &str = "hanzo_twin_crashes_total";
const SERVER_ERRORS: &str = "hanzo_twin_api_server_errors_total";
const REQUESTS: &str = "hanzo_twin_api_request_duration_seconds";
const FORKS: &str = "hanzo_twin_fork_duration_seconds";
const ACTIVE: &str = "hanzo_twin_active_simulations";

/// Running totals of the series the charts draw.
struct Tallies {
    steps: AtomicU64,
    crashes: AtomicU64,
    server_errors: AtomicU64,
    forks: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// Each `hanzo_twin_active_simulations` series' value (f64 bits).
    active: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    history: Mutex<History>,
}

#[derive(Default)]
struct History {
    points: VecDeque<StatsPoint>,
    last: Option<Totals>,
}

/// The tallies at one instant.
#[derive(Clone)]
struct Totals {
    at: std::time::Instant,
    steps: u64,
    crashes: u64,
    server_errors: u64,
    forks: u64,
    latency: [u64; BUCKETS],
}

fn tallies() -> &'static Tallies {
    static TALLIES: OnceLock<Tallies> = OnceLock::new();
    TALLIES.get_or_init(|| Tallies {
        steps: AtomicU64::new(0),
        crashes: AtomicU64::new(0),
        server_errors: AtomicU64::new(0),
        forks: AtomicU64::new(0),
        latency: std::array::from_fn(|_| AtomicU64::new(0)),
        active: Mutex::default(),
        history: Mutex::default(),
    })
}

/// One point of the charts: rates over the second before `at`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsPoint {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub steps_per_s: f64,
    pub requests_per_s: f64,
    /// Latency percentiles of the requests answered in that second, in
    /// milliseconds (upper bounds of ~19%-wide buckets); `null` without one.
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub active_simulations: f64,
    pub forks_per_s: f64,
    /// API answers with a 5xx status, a second.
    pub server_errors_per_s: f64,
    /// Twin actors that failed, a second.
    pub crashes_per_s: f64,
}

/// `GET /v1/cluster/stats`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Seconds between points.
    pub interval_s: f64,
    /// Oldest first, newer than `since` when it was given.
    pub points: Vec<StatsPoint>,
}

fn bucket(seconds: f64) -> usize {
    if seconds.is_nan() || seconds <= FIRST_BUCKET_S {
        return 0;
    }
    let index = ((seconds / FIRST_BUCKET_S).log2() * 4.0).floor();
    (index as usize).min(BUCKETS - 1)
}

fn bucket_upper_ms(index: usize) -> f64 {
    FIRST_BUCKET_S * 2f64.powf((index + 1) as f64 / 4.0) * 1e3
}

fn percentile(counts: &[u64; BUCKETS], total: u64, p: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_upper_ms(i));
        }
    }
    Some(bucket_upper_ms(BUCKETS - 1))
}

fn totals(t: &Tallies) -> Totals {
    Totals {
        at: std::time::Instant::now(),
        steps: t.steps.load(Ordering::Relaxed),
        crashes: t.crashes.load(Ordering::Relaxed),
        server_errors: t.server_errors.load(Ordering::Relaxed),
        forks: t.forks.load(Ordering::Relaxed),
        latency: std::array::from_fn(|i| t.latency[i].load(Ordering::Relaxed)),
    }
}

/// Adds a point: the rates since the previous call. Called once a second.
pub fn sample() {
    let t = tallies();
    let now = totals(t);
    let active = t.active.lock().map_or(0.0, |series| {
        series
            .values()
            .map(|v| f64::from_bits(v.load(Ordering::Relaxed)))
            .sum()
    });
    let Ok(mut history) = t.history.lock() else {
        return;
    };
    if let Some(before) = history.last.replace(now.clone()) {
        let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
        let latency: [u64; BUCKETS] =
            std::array::from_fn(|i| now.latency[i].saturating_sub(before.latency[i]));
        let requests: u64 = latency.iter().sum();
        let point = StatsPoint {
            at_ms: chrono::Utc::now().timestamp_millis(),
            steps_per_s: rate(now.steps, before.steps),
            requests_per_s: requests as f64 / seconds,
            latency_p50_ms: percentile(&latency, requests, 0.50),
            latency_p90_ms: percentile(&latency, requests, 0.90),
            latency_p99_ms: percentile(&latency, requests, 0.99),
            active_simulations: active,
            forks_per_s: rate(now.forks, before.forks),
            server_errors_per_s: rate(now.server_errors, before.server_errors),
            crashes_per_s: rate(now.crashes, before.crashes),
        };
        if history.points.len() == KEPT {
            history.points.pop_front();
        }
        history.points.push_back(point);
    }
}

/// The kept points newer than `since_ms` (all without it).
pub fn stats(since_ms: Option<i64>) -> Stats {
    let points = tallies().history.lock().map_or_else(
        |_| Vec::new(),
        |h| {
            h.points
                .iter()
                .filter(|p| since_ms.is_none_or(|s| p.at_ms > s))
                .cloned()
                .collect()
        },
    );
    Stats {
        interval_s: 1.0,
        points,
    }
}

/// A metrics recorder that hands everything to `inner` and tees the charted
/// series into the tallies.
pub struct Recorder<R> {
    inner: R,
}

impl<R> Recorder<R> {
    pub fn new(inner: R) -> Recorder<R> {
        Recorder { inner }
    }
}

struct TeeCounter {
    inner: Counter,
    tally: &'static AtomicU64,
}

impl CounterFn for TeeCounter {
    fn increment(&self, value: u64) {
        self.inner.increment(value);
        self.tally.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.inner.absolute(value);
    }
}

struct TeeGauge {
    inner: Gauge,
    value: Arc<AtomicU64>,
}

impl TeeGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

impl GaugeFn for TeeGauge {
    fn increment(&self, value: f64) {
        self.inner.increment(value);
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.inner.decrement(value);
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.inner.set(value);
        self.update(|_| value);
    }
}

/// Counts each request into its latency bucket.
struct TeeLatency {
    inner: Histogram,
}

impl HistogramFn for TeeLatency {
    fn record(&self, value: f64) {
        self.inner.record(value);
        tallies().latency[bucket(value)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts each recorded value (a fork's duration: one fork).
struct TeeCount {
    inner: Histogram,
    tally: &'static AtomicU64,
}

impl HistogramFn for TeeCount {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.tally.fetch_add(1, Ordering::Relaxed);
    }
}

impl<R: metrics::Recorder> metrics::Recorder for Recorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let inner = self.inner.register_counter(key, metadata);
        let t = tallies();
        let tally = match key.name() {
            STEPS => &t.steps,
            CRASHES => &t.crashes,
            SERVER_ERRORS => &t.server_errors,
            _ => return inner,
        };
        Counter::from_arc(Arc::new(TeeCounter { inner, tally }))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let inner = self.inner.register_gauge(key, metadata);
        if key.name() != ACTIVE {
            return inner;
        }
        let Ok(mut series) = tallies().active.lock() else {
            return inner;
        };
        let value = series.entry(key.clone()).or_default().clone();
        Gauge::from_arc(Arc::new(TeeGauge { inner, value }))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let inner = self.inner.register_histogram(key, metadata);
        match key.name() {
            REQUESTS => Histogram::from_arc(Arc::new(TeeLatency { inner })),
            FORKS => Histogram::from_arc(Arc::new(TeeCount {
                inner,
                tally: &tallies().forks,
            })),
            _ => inner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_bound_their_values() {
        for seconds in [2e-5, 1e-4, 3.3e-3, 0.25, 7.0] {
            let upper_s = bucket_upper_ms(bucket(seconds)) / 1e3;
            assert!(
                upper_s >= seconds,
                "{seconds} s above its bucket's {upper_s} s"
            );
            assert!(
                upper_s <= seconds * 2f64.powf(0.25) * 1.0001,
                "{seconds}: {upper_s}"
            );
        }
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(1e9), BUCKETS - 1);
    }

    #[test]
    fn percentiles_come_from_the_counts() {
        let mut counts = [0u64; BUCKETS];
        counts[bucket(1e-3)] = 90;
        counts[bucket(0.1)] = 10;
        let p50 = percentile(&counts, 100, 0.5).expect("p50");
        let p99 = percentile(&counts, 100, 0.99).expect("p99");
        assert!((1.0..1.2).contains(&p50), "{p50}");
        assert!((100.0..120.0).contains(&p99), "{p99}");
        assert_eq!(percentile(&counts, 0, 0.5), None);
    }
}

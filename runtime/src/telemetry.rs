//! Logs and Prometheus metrics for a node.

use crate::config::{LogFormat, LoggingSection};
use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::sync::OnceLock;
use std::time::Duration;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(1);

/// Installs the process-wide Prometheus recorder once; later nodes in the same
/// process (tests, embedded agents) share it.
pub fn metrics_handle() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            // Per-twin series of deleted twins and discarded forks would pile up
            // forever; counters and histograms not updated for 15 minutes are
            // dropped (gauges stay, they carry current values; a counter
            // that comes back restarts from 0, which Prometheus reads as a reset).
            let builder = PrometheusBuilder::new()
                .idle_timeout(
                    MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM,
                    Some(Duration::from_secs(15 * 60)),
                )
                .set_buckets_for_metric(
                    Matcher::Full("hanzo_twin_step_duration_seconds".into()),
                    &[
                        1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 1.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_duration_seconds".into()),
                        &[1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 10.0],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Buckets are constants above; an error here is a programming error
                // worth surfacing, but metrics must not stop a node.
                Err(e) => {
                    tracing::error!(error = %e, "metric buckets refused; using summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            // Histogram samples pile up in the recorder until upkeep folds
            // them into buckets; a recorder built this way has no upkeep task
            // of its own, so without a scraper a fast-clock twin (one sample
            // per step, hundreds of thousands a second) grew the node's memory
            // by megabytes a second. A thread, so it runs whatever runtime
            // (or none) the node is on.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "no metrics upkeep thread; histograms grow until scraped");
            }
            handle
        })
        .clone()
}

/// The metrics server's router: Prometheus text at `path`.
pub fn metrics_router(path: &str) -> Router {
    let handle = metrics_handle();
    Router::new().route(
        path,
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    )
}

/// Sets up logging from the config; `RUST_LOG` wins over the configured level.
pub fn init_logging(logging: &LoggingSection) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already initialised (a second node in one process): keep the first.
    let _ = result;
}

//! Logs and Prometheus metrics for a node.

use crate::config::{LogFormat, LoggingSection};
use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::sync::OnceLock;
use std::time::Duration;

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets (and the
/// inspector's charts take a point).
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
            // The inspector's charts tee off the same series.
            let recorder = hanzo_twin_api::console::Recorder::new(recorder);
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe_metrics();
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
                        hanzo_twin_api::console::sample();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "no metrics upkeep thread; histograms grow until scraped");
            }
            handle
        })
        .clone()
}

/// The HELP text and unit of every metric a node exports, so `/metrics`
/// explains itself (and passes `promtool check metrics`).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "hanzo_twin_active_simulations",
        "Simulations loaded in twin actors on this node, by engine."
    );
    describe_counter!(
        "hanzo_twin_simulations_total",
        "Simulations loaded into twin actors, by engine and organization."
    );
    describe_counter!(
        "hanzo_twin_steps_total",
        "Physics steps taken, by twin and engine."
    );
    describe_histogram!(
        "hanzo_twin_step_duration_seconds",
        Unit::Seconds,
        "Wall time of one physics step (sampled at most once a millisecond per fast-clock twin)."
    );
    describe_histogram!(
        "hanzo_twin_render_duration_seconds",
        Unit::Seconds,
        "Time a render worker takes to draw one frame and encode its images."
    );
    describe_counter!(
        "hanzo_twin_render_worker_restarts_total",
        "Render workers that crashed and were started again (their frame was drawn again)."
    );
    describe_histogram!(
        "hanzo_twin_fork_duration_seconds",
        Unit::Seconds,
        "Time the host takes to make a fork, from its source to its answer."
    );
    describe_counter!(
        "hanzo_twin_crashes_total",
        "Twin actors that failed (engine failure, divergence, panic)."
    );
    describe_counter!(
        "hanzo_twin_restarts_total",
        "Twins restarted from their last checkpoint by their supervisor."
    );
    describe_counter!(
        "hanzo_twin_passivations_total",
        "Idle twins deactivated (their state kept as a checkpoint)."
    );
    describe_counter!(
        "hanzo_twin_reactivations_total",
        "Passivated twins brought back by a request."
    );
    describe_counter!(
        "hanzo_twin_handoffs_total",
        "Twins this node handed to or took over from another cluster node."
    );
    describe_histogram!(
        "hanzo_twin_record_batch_size",
        Unit::Count,
        "Twin records written to the store per flush (group commit)."
    );
    describe_counter!(
        "hanzo_twin_api_auth_failures_total",
        "API requests refused for a missing or invalid token."
    );
    describe_counter!(
        "hanzo_twin_api_server_errors_total",
        "API answers with a 5xx status."
    );
    describe_counter!(
        "hanzo_twin_api_rate_limited_total",
        "API requests refused with 429 by a rate limit, by class."
    );
    describe_histogram!(
        "hanzo_twin_api_request_duration_seconds",
        Unit::Seconds,
        "API request duration, by method, route and status."
    );
    describe_counter!(
        "hanzo_twin_api_unmatched_requests_total",
        "API requests for paths no route serves."
    );
    describe_counter!(
        "hanzo_twin_audit_write_failures_total",
        "Audit entries that could not be written."
    );
    describe_counter!(
        "hanzo_twin_cluster_joins_total",
        "Cluster nodes that joined, as this node saw it."
    );
    describe_counter!(
        "hanzo_twin_cluster_leaves_total",
        "Cluster nodes that left or were lost, as this node saw it."
    );
    describe_gauge!(
        "hanzo_twin_cluster_nodes",
        "Cluster nodes this node is connected to, itself included."
    );
    describe_histogram!(
        "hanzo_twin_sync_latency_seconds",
        Unit::Seconds,
        "Time from a sensor reading's arrival to the twin applying it."
    );
    describe_counter!(
        "hanzo_twin_sync_messages_total",
        "Sync messages, by twin, direction (in: from sources; out: published) and outcome (read, unparsed, unmapped; published)."
    );
    describe_counter!(
        "hanzo_twin_chaos_injections_total",
        "Faults injected into twins, by scenario."
    );
    describe_gauge!(
        "hanzo_twin_parallel_envs",
        "RL environments alive, by twin: in gym batches made from it, and stepped by running training jobs (a built-in task's as task:<name>)."
    );
    describe_gauge!(
        "hanzo_twin_jobs",
        "Jobs on this node now, by kind and state (queued, running)."
    );
    describe_counter!(
        "hanzo_twin_jobs_total",
        "Jobs that entered a state on this node, by kind and state."
    );
    describe_counter!(
        "hanzo_twin_jobs_taken_over_total",
        "Unfinished jobs of departed cluster nodes that this node took over."
    );
    describe_gauge!(
        "hanzo_twin_training_steps_per_second",
        "Environment steps per second of the training jobs running on this node, summed (learner included)."
    );
    describe_gauge!(
        "hanzo_twin_sync_drift",
        "Mean error between prediction and reality over the drift window, by twin and dimension (a measured attribute, e.g. /World/Arm/Elbow.position)."
    );
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

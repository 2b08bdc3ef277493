//! Infrastructure twins and the timeseries database (HIP-0059): recorded
//! load read by the twin's query as traffic to replay, and a run's results
//! written back as a tagged experiment, so what-if variants compare side by
//! side in the same database as production's metrics.
//!
//! The query returns rows of `(bucket, metric, service, avg_value)` (the
//! spec's `metrics_1m` query): each row a service's requests per second
//! over its bucket; rows of one service and bucket add up (requests counted
//! per method, say). Buckets without rows carry no load.

use anyhow::Context;
use hanzo_twin_infra::model::{EntryTraffic, RateProfile, RateStep};
use hanzo_twin_infra::{InfraModel, Report, TrafficModel};
use std::collections::BTreeMap;

/// Recorded load, ready to replay.
#[derive(Debug, Clone)]
pub struct Replay {
    pub traffic: TrafficModel,
    /// The first bucket (Unix seconds): the simulation's time 0.
    pub start: f64,
    /// Seconds from the first bucket to the end of the last.
    pub span_s: f64,
    pub buckets: usize,
    /// Services in the rows that the topology lacks (their load is left out).
    pub unknown: Vec<String>,
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("timeseries database: {}", crate::store_pg::describe(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn sql_error(e: tokio_postgres::Error) -> anyhow::Error {
    anyhow::anyhow!("timeseries database: {}", crate::store_pg::describe(&e))
}

/// Runs `query` (limited to `[from, to)`, Unix seconds, when given) and
/// turns its rows into traffic for the services of `model`.
pub async fn read_traffic(
    url: &str,
    query: &str,
    from: Option<f64>,
    to: Option<f64>,
    model: &InfraModel,
) -> anyhow::Result<Replay> {
    let client = connect(url).await?;
    let query = query.trim().trim_end_matches(';');
    let sql = format!(
        "SELECT extract(epoch FROM bucket)::float8, service::text, sum(avg_value)::float8 \
         FROM ({query}) AS recorded \
         WHERE ($1::float8 IS NULL OR extract(epoch FROM bucket) >= $1) \
           AND ($2::float8 IS NULL OR extract(epoch FROM bucket) < $2) \
         GROUP BY 1, 2 ORDER BY 1"
    );
    let rows = client
        .query(&sql, &[&from, &to])
        .await
        .map_err(sql_error)
        .context("traffic.query must return bucket (a timestamp), service (text) and avg_value (requests per second)")?;
    if rows.is_empty() {
        anyhow::bail!("traffic.query returned no rows in the time asked for");
    }
    let mut by_service: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut buckets = std::collections::BTreeSet::new();
    for row in &rows {
        let bucket: f64 = row.get(0);
        let service: String = row.get(1);
        let rps: Option<f64> = row.get(2);
        buckets.insert(bucket.to_bits());
        by_service
            .entry(service)
            .or_default()
            .push((bucket, rps.unwrap_or(0.0).max(0.0)));
    }
    let times: Vec<f64> = buckets.iter().map(|b| f64::from_bits(*b)).collect();
    // The bucket width: the smallest step between buckets (a minute for metrics_1m).
    let width = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min);
    let width = if width.is_finite() { width } else { 60.0 };
    let start = from.unwrap_or(times[0]).min(times[0]);
    let end = times[times.len() - 1] + width;
    let mut entries = Vec::new();
    let mut unknown = Vec::new();
    for (service, points) in by_service {
        if model.index(&service).is_none() {
            unknown.push(service);
            continue;
        }
        let mut steps: Vec<RateStep> = Vec::new();
        for (i, &(bucket, rps)) in points.iter().enumerate() {
            steps.push(RateStep {
                at_s: bucket - start,
                rps,
            });
            let next = points.get(i + 1).map_or(end, |p| p.0);
            if next > bucket + width + 1e-6 {
                steps.push(RateStep {
                    at_s: bucket + width - start,
                    rps: 0.0,
                });
            }
        }
        entries.push(EntryTraffic {
            service,
            rate: RateProfile::Steps { steps },
        });
    }
    if entries.is_empty() {
        anyhow::bail!(
            "traffic.query's services ({}) are none of the topology's",
            unknown.join(", ")
        );
    }
    Ok(Replay {
        traffic: TrafficModel { entries },
        start,
        span_s: end - start,
        buckets: times.len(),
        unknown,
    })
}

/// Seconds of simulated time per row written back.
const WRITE_BUCKET_S: f64 = 60.0;

/// Writes a run's results to `twin_experiments` (made when missing), tagged
/// with the experiment and the variant: per minute and entry service, the
/// requests answered and failed and the mean and slowest latency; per
/// variant, its assertion failures (SLO breaches), end-to-end p99 and cost
/// in replica-hours at the start. Returns the rows written.
pub async fn write_experiment(
    url: &str,
    experiment: &str,
    variant: &str,
    start: f64,
    report: &Report,
    breaches: usize,
) -> anyhow::Result<u64> {
    let client = connect(url).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS twin_experiments (
                experiment text NOT NULL,
                variant text NOT NULL,
                bucket timestamptz NOT NULL,
                service text NOT NULL,
                metric text NOT NULL,
                value double precision NOT NULL
            );
            CREATE INDEX IF NOT EXISTS twin_experiments_by_run ON twin_experiments (experiment, variant, bucket);",
        )
        .await
        .map_err(sql_error)?;
    let (mut buckets, mut services, mut metrics, mut values) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut push = |bucket: f64, service: &str, metric: &str, value: f64| {
        buckets.push(bucket);
        services.push(service.to_string());
        metrics.push(metric.to_string());
        values.push(value);
    };
    for entry in &report.entries {
        let per = (WRITE_BUCKET_S / report.bucket_s).round().max(1.0) as usize;
        for (i, chunk) in entry.timeline.chunks(per).enumerate() {
            let bucket = start + i as f64 * WRITE_BUCKET_S;
            let ok: u64 = chunk.iter().map(|b| b.ok).sum();
            let failed: u64 = chunk.iter().map(|b| b.failed).sum();
            let sum: f64 = chunk.iter().map(|b| b.latency_sum_s).sum();
            let max = chunk.iter().map(|b| b.max_latency_s).fold(0.0, f64::max);
            push(bucket, &entry.service, "hanzo_twin_requests_ok", ok as f64);
            push(
                bucket,
                &entry.service,
                "hanzo_twin_requests_failed",
                failed as f64,
            );
            if ok + failed > 0 {
                push(
                    bucket,
                    &entry.service,
                    "hanzo_twin_latency_mean_seconds",
                    sum / (ok + failed) as f64,
                );
                push(
                    bucket,
                    &entry.service,
                    "hanzo_twin_latency_max_seconds",
                    max,
                );
            }
        }
        push(
            start,
            &entry.service,
            "hanzo_twin_latency_p99_seconds",
            entry.latency.p99_s,
        );
    }
    let replica_hours = report.replica_hours();
    push(start, "", "hanzo_twin_replica_hours", replica_hours);
    push(start, "", "hanzo_twin_slo_breaches", breaches as f64);
    let written = client
        .execute(
            "INSERT INTO twin_experiments (experiment, variant, bucket, service, metric, value)
             SELECT $1, $2, to_timestamp(b), s, m, v
             FROM unnest($3::float8[], $4::text[], $5::text[], $6::float8[]) AS rows(b, s, m, v)",
            &[
                &experiment,
                &variant,
                &buckets,
                &services,
                &metrics,
                &values,
            ],
        )
        .await
        .map_err(sql_error)?;
    Ok(written)
}

/// The node's timeseries database, as replay jobs reach it.
pub struct NodeTimeseries {
    pub url: String,
}

impl hanzo_twin_actors::jobs::Timeseries for NodeTimeseries {
    fn read(
        &self,
        query: String,
        from: Option<f64>,
        to: Option<f64>,
        model: InfraModel,
    ) -> hanzo_twin_actors::store::BoxFuture<
        'static,
        Result<hanzo_twin_actors::jobs::RecordedTraffic, String>,
    > {
        let url = self.url.clone();
        Box::pin(async move {
            let r = read_traffic(&url, &query, from, to, &model)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(hanzo_twin_actors::jobs::RecordedTraffic {
                traffic: r.traffic,
                start: r.start,
                span_s: r.span_s,
                buckets: r.buckets,
                unknown: r.unknown,
            })
        })
    }

    fn write(
        &self,
        experiment: String,
        variant: String,
        start: f64,
        report: Report,
        breaches: usize,
    ) -> hanzo_twin_actors::store::BoxFuture<'static, Result<u64, String>> {
        let url = self.url.clone();
        Box::pin(async move {
            write_experiment(&url, &experiment, &variant, start, &report, breaches)
                .await
                .map_err(|e| format!("{e:#}"))
        })
    }
}

//! `hanzo-twin infra simulate|compare <definition>`: an infrastructure
//! twin's definition run here, offline (no node): its Kubernetes topology,
//! traffic (given, or replayed from the timeseries database) and chaos
//! scenarios, then what each service did and each assertion's verdict.
//! `simulate` exits with status 3 when an assertion fails, so a pipeline can
//! stop a change that would break one; `compare` runs what-if variants on
//! the same traffic side by side. `--experiment` writes the results back to
//! the timeseries database, tagged.

use super::{Output, print_value, s};
use anyhow::Context;
use clap::{Args, Subcommand};
use hanzo_twin_infra::compare::{ComparisonRow, plot_svg};
use hanzo_twin_infra::kubernetes::Objects;
use hanzo_twin_infra::spec::{InfraTwinSpec, TopologySource, TrafficSource};
use hanzo_twin_infra::whatif::check_variants;
use hanzo_twin_infra::{InfraError, Report, TopologyPatch, TrafficModel, Variant, Verdict};
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(super) enum InfraCommand {
    /// Run an infrastructure twin's definition here and report: each
    /// service's answers and latency, and each assertion's verdict with its
    /// evidence. Exits with status 3 when an assertion fails.
    Simulate {
        #[command(flatten)]
        run: RunArgs,
        /// A what-if: this many replicas of a service (and at least that
        /// many for its autoscaler), e.g. `--replicas api=5`. Repeatable.
        #[arg(long = "replicas", value_name = "SERVICE=N")]
        replicas: Vec<String>,
    },
    /// Run the definition as it is and each what-if variant on the same
    /// traffic, and set them side by side: assertions failed (SLO
    /// breaches), requests failed, end-to-end p99 and cost in replica-hours.
    Compare {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        variants: VariantArgs,
        /// Also draw the runs' latency and failures over time, as SVG.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// A running infrastructure twin on a node: what each service did so
    /// far, its faults, and each assertion's verdict (so far, while its
    /// window is not over). Exits with status 3 when an assertion whose
    /// window is over failed.
    Status {
        /// The twin's id or name.
        twin: String,
        #[command(flatten)]
        client: super::ClientOpts,
    },
}

/// What-if variants, given on the command line or in a file.
#[derive(Args)]
pub(super) struct VariantArgs {
    /// A variant: replicas per service, e.g. `api=5` or `api=6,gateway=3`.
    /// Repeatable.
    #[arg(long = "variant", value_name = "SERVICE=N[,…]")]
    variant: Vec<String>,
    /// Variants in a YAML or JSON file: a list of `{name, patch}`, each
    /// patch with any of `replicas`, `cpu_limit`, `cpu_request`, `workers`
    /// (per service) and `manifests` (Kubernetes objects added or
    /// replaced), as `POST /v1/infra/twins/{id}/replay` takes them.
    #[arg(long = "variants", value_name = "FILE")]
    file: Option<PathBuf>,
}

impl VariantArgs {
    pub(super) fn read(&self) -> anyhow::Result<Vec<Variant>> {
        let mut all = Vec::new();
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let list: Vec<Variant> = serde_yaml_ng::from_str(&text).with_context(|| {
                format!(
                    "{}: expected a list of variants, each {{name, patch: {{replicas, cpu_limit, cpu_request, workers, manifests}}}}",
                    path.display()
                )
            })?;
            all.extend(list);
        }
        for text in &self.variant {
            all.push(replicas_variant(text)?);
        }
        Ok(all)
    }
}

/// `api=6,gateway=3`: a variant of replicas, named as written.
pub(super) fn replicas_variant(text: &str) -> anyhow::Result<Variant> {
    let mut patch = TopologyPatch::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = part
            .split_once('=')
            .and_then(|(name, n)| Some((name.trim().to_string(), n.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("`{part}`: expected SERVICE=N, e.g. api=5"))?;
        patch.replicas.insert(name, n);
    }
    Ok(Variant {
        name: text.replace(' ', ""),
        patch,
    })
}

#[derive(Args)]
pub(super) struct RunArgs {
    /// The definition (YAML or JSON, `type: infrastructure`).
    definition: PathBuf,
    /// Simulated time to run (30m, 1h, 7d) instead of the definition's (a
    /// replay runs its recorded span).
    #[arg(long)]
    duration: Option<String>,
    #[arg(long)]
    seed: Option<u64>,
    /// The timeseries database (PostgreSQL or TimescaleDB) that
    /// `traffic.source: timeseries` reads and `--experiment` writes.
    #[arg(long, env = "HANZO_TWIN_TIMESERIES_URL")]
    database_url: Option<String>,
    /// Replay only the recorded load from this time (RFC 3339)…
    #[arg(long)]
    from: Option<String>,
    /// …to this one.
    #[arg(long)]
    to: Option<String>,
    /// Write the results to the database's `twin_experiments`, tagged with
    /// this experiment name and each variant's.
    #[arg(long)]
    experiment: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text")]
    output: Output,
}

pub(super) fn command(command: InfraCommand) -> anyhow::Result<()> {
    // A live cluster is reached over rustls, on ring as everywhere here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    match command {
        InfraCommand::Simulate { run, replicas } => {
            let variant = if replicas.is_empty() {
                base()
            } else {
                replicas_variant(&replicas.join(","))?
            };
            runtime.block_on(simulate(run, variant))
        }
        InfraCommand::Compare {
            run,
            variants,
            plot,
        } => {
            let variants = variants.read()?;
            if variants.is_empty() {
                anyhow::bail!(
                    "name what-ifs to compare: --variant api=5 (replicas per service), or --variants FILE"
                );
            }
            check_variants(&variants, "variant", "base").map_err(
                |InfraError::Invalid { field, message }| anyhow::anyhow!("{field}: {message}"),
            )?;
            let list = std::iter::once(base()).chain(variants).collect();
            runtime.block_on(compare(run, list, plot))
        }
        InfraCommand::Status { twin, client } => runtime.block_on(status(twin, client)),
    }
}

async fn status(twin: String, client: super::ClientOpts) -> anyhow::Result<()> {
    let c = super::Client::new(&client)?;
    let path = format!("/v1/infra/twins/{}", super::Client::encode(&twin));
    let v = c.json(c.http.get(c.url(&path))).await?;
    super::print_value(c.output, &v, |v| {
        // 90, not 90.0: seconds as people write them.
        let secs = |x: &Value| x.as_f64().map_or_else(|| s(x), |x| format!("{x}"));
        let mut lines = vec![format!(
            "{twin}: {} simulated s, step {}, {} events",
            secs(&v["time"]),
            s(&v["step"]),
            s(&v["report"]["events"])
        )];
        for f in v["faults"].as_array().into_iter().flatten() {
            lines.push(format!(
                "fault {} on {} at {} s{}",
                s(&f["name"]),
                s(&f["target"]),
                secs(&f["at_s"]),
                f["duration_s"]
                    .as_f64()
                    .map_or(String::new(), |d| format!(" for {d} s"))
            ));
        }
        lines.push(report_lines(v).join("\n"));
        lines.join("\n")
    });
    // Judged and failed; one still pending may yet pass.
    if v["verdicts"].as_array().is_some_and(|all| {
        all.iter()
            .any(|x| x["passed"] == Value::Bool(false) && x["pending"] != Value::Bool(true))
    }) {
        std::process::exit(3);
    }
    Ok(())
}

/// The definition as it is.
fn base() -> Variant {
    Variant {
        name: "base".into(),
        patch: TopologyPatch::default(),
    }
}

/// The definition, read, and the traffic it runs on.
struct Setup {
    spec: InfraTwinSpec,
    /// The topology's Kubernetes objects, read once for every variant.
    objects: Objects,
    traffic: TrafficModel,
    /// A replay's first bucket (Unix seconds) and span.
    replay: Option<crate::timeseries::Replay>,
}

fn rfc3339(flag: &str, text: &Option<String>) -> anyhow::Result<Option<f64>> {
    text.as_ref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis() as f64 / 1000.0)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "--{flag} {t}: not an RFC 3339 time such as 2026-02-20T00:00:00Z ({e})"
                    )
                })
        })
        .transpose()
}

async fn setup(run: &RunArgs) -> anyhow::Result<Setup> {
    let text = std::fs::read_to_string(&run.definition)
        .with_context(|| format!("cannot read {}", run.definition.display()))?;
    let mut spec = InfraTwinSpec::parse(&text).with_context(|| {
        format!(
            "{} is not an infrastructure twin definition",
            run.definition.display()
        )
    })?;
    if run.duration.is_some() {
        spec.simulation.duration = run.duration.clone();
    }
    let base = run
        .definition
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let (from, to) = (rfc3339("from", &run.from)?, rfc3339("to", &run.to)?);
    let mut objects = match spec.topology.source {
        TopologySource::Manifests => Objects::from_manifests(
            &spec
                .manifests(&base)
                .with_context(|| format!("{}: topology", run.definition.display()))?,
        )
        .with_context(|| format!("{}: topology", run.definition.display()))?,
        TopologySource::Kubernetes => live_cluster(&spec).await?,
    };
    let traces = spec
        .trace_files(&base)
        .with_context(|| format!("{}: topology.traces", run.definition.display()))?;
    spec.fold_traces(&mut objects, &traces)
        .with_context(|| format!("{}: topology.traces", run.definition.display()))?;
    if spec.traffic.source != TrafficSource::Timeseries {
        if from.is_some() || to.is_some() {
            anyhow::bail!(
                "--from and --to choose recorded load; this definition's traffic.source is not timeseries"
            );
        }
        let traffic = spec
            .traffic()
            .with_context(|| format!("{}: traffic", run.definition.display()))?;
        return Ok(Setup {
            spec,
            objects,
            traffic,
            replay: None,
        });
    }
    let url = run.database_url.as_deref().ok_or_else(|| {
        anyhow::anyhow!("traffic.source: timeseries reads the timeseries database: give --database-url or set HANZO_TWIN_TIMESERIES_URL")
    })?;
    let query = spec.traffic.query.clone().ok_or_else(|| {
        anyhow::anyhow!("traffic.query: timeseries traffic needs the query that reads it")
    })?;
    // The services the rows may name: the topology's, read without traffic.
    let model = spec
        .prepare_objects(&objects, TrafficModel::default(), None, |_| Ok(()))
        .with_context(|| format!("{} cannot run", run.definition.display()))?
        .sim
        .model()
        .clone();
    let replay = crate::timeseries::read_traffic(url, &query, from, to, &model).await?;
    if spec.simulation.duration.is_none() {
        spec.simulation.duration = Some(format!("{}s", replay.span_s));
    }
    Ok(Setup {
        traffic: replay.traffic.clone(),
        spec,
        objects,
        replay: Some(replay),
    })
}

#[cfg(feature = "kubernetes")]
async fn live_cluster(spec: &InfraTwinSpec) -> anyhow::Result<Objects> {
    crate::kube_topology::read(
        spec.topology.cluster.as_deref(),
        &spec.topology.options.namespaces,
        spec.topology.options.include_nodes,
    )
    .await
}

#[cfg(not(feature = "kubernetes"))]
async fn live_cluster(_spec: &InfraTwinSpec) -> anyhow::Result<Objects> {
    anyhow::bail!(
        "topology.source: kubernetes: this hanzo-twin was built without a Kubernetes client \
         (cargo build --features kubernetes); or export the objects \
         (kubectl get deploy,sts,svc,hpa,resourcequota,networkpolicy,pdb -n <namespace> -o yaml > topology.yaml) \
         and use source: manifests with paths: [topology.yaml]"
    )
}

/// One variant's run: its report and verdicts.
fn run_variant(
    setup: &Setup,
    seed: Option<u64>,
    variant: &Variant,
) -> anyhow::Result<(
    Report,
    Vec<Verdict>,
    Vec<hanzo_twin_infra::kubernetes::Finding>,
    f64,
)> {
    let field = format!("variant {}", variant.name);
    let mut prepared = variant
        .patch
        .prepare(
            &setup.spec,
            &setup.objects,
            setup.traffic.clone(),
            seed,
            &field,
        )
        .context("the definition cannot run")?;
    let wall = std::time::Instant::now();
    prepared.sim.run_until(prepared.duration_s);
    Ok((
        prepared.sim.report(),
        prepared.sim.verdicts(),
        prepared.findings,
        wall.elapsed().as_secs_f64(),
    ))
}

async fn write_back(
    run: &RunArgs,
    setup: &Setup,
    variant: &str,
    report: &Report,
    verdicts: &[Verdict],
) -> anyhow::Result<Option<u64>> {
    let Some(experiment) = &run.experiment else {
        return Ok(None);
    };
    let url = run
        .database_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--experiment writes to the timeseries database: give --database-url or set HANZO_TWIN_TIMESERIES_URL"))?;
    let start = match &setup.replay {
        Some(r) => r.start,
        None => chrono::Utc::now().timestamp() as f64,
    };
    let breaches = verdicts.iter().filter(|v| !v.passed).count();
    let rows =
        crate::timeseries::write_experiment(url, experiment, variant, start, report, breaches)
            .await?;
    Ok(Some(rows))
}

fn replay_note(setup: &Setup) -> Value {
    setup.replay.as_ref().map_or(Value::Null, |r| {
        json!({ "start_unix_s": r.start, "span_s": r.span_s, "buckets": r.buckets, "unknown_services": r.unknown })
    })
}

async fn simulate(run: RunArgs, variant: Variant) -> anyhow::Result<()> {
    let setup = setup(&run).await?;
    let (report, verdicts, findings, wall) = run_variant(&setup, run.seed, &variant)?;
    let written = write_back(&run, &setup, &variant.name, &report, &verdicts).await?;
    let value = json!({
        "twin": setup.spec.name,
        "variant": variant.name,
        "wall_seconds": wall,
        "replay": replay_note(&setup),
        "experiment_rows": written,
        "report": report,
        "verdicts": verdicts,
        "findings": findings,
    });
    print_value(run.output, &value, summary);
    if verdicts.iter().any(|v| !v.passed) {
        eprintln!("an assertion failed");
        std::process::exit(3);
    }
    Ok(())
}

async fn compare(
    run: RunArgs,
    variants: Vec<Variant>,
    plot: Option<PathBuf>,
) -> anyhow::Result<()> {
    let setup = setup(&run).await?;
    // Each variant on its own thread: simulations are single-threaded.
    let results: Vec<anyhow::Result<_>> = std::thread::scope(|scope| {
        let handles: Vec<_> = variants
            .iter()
            .map(|v| scope.spawn(|| run_variant(&setup, run.seed, v)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a variant's simulation panicked")))
            })
            .collect()
    });
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    for (variant, result) in variants.iter().zip(results) {
        let (report, verdicts, _, wall) =
            result.with_context(|| format!("variant {}", variant.name))?;
        let written = write_back(&run, &setup, &variant.name, &report, &verdicts).await?;
        let mut row = serde_json::to_value(ComparisonRow::of(&variant.name, &report, &verdicts))?;
        row["wall_seconds"] = json!(wall);
        row["experiment_rows"] = json!(written);
        row["verdicts"] = json!(verdicts);
        rows.push(row);
        reports.push(report);
    }
    if let Some(path) = &plot {
        let lines: Vec<(&str, &Report)> = variants
            .iter()
            .map(|v| v.name.as_str())
            .zip(&reports)
            .collect();
        let svg = plot_svg(
            &format!("{}: variants on the same traffic", setup.spec.name),
            &lines,
        )
        .map_err(|e| anyhow::anyhow!("cannot draw the plot: {e}"))?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let value = json!({
        "twin": setup.spec.name,
        "replay": replay_note(&setup),
        "variants": rows,
        "plot": plot.map(|p| p.display().to_string()),
    });
    print_value(run.output, &value, comparison);
    Ok(())
}

fn millis(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{:.1} ms", x * 1e3))
}

fn replay_line(v: &Value) -> Option<String> {
    let r = &v["replay"];
    r.is_object().then(|| {
        format!(
            "replayed {} recorded buckets ({:.1} h){}",
            s(&r["buckets"]),
            r["span_s"].as_f64().unwrap_or(0.0) / 3600.0,
            match r["unknown_services"].as_array() {
                Some(u) if !u.is_empty() => format!(
                    "; load of services not in the topology left out: {}",
                    u.iter().map(s).collect::<Vec<_>>().join(", ")
                ),
                _ => String::new(),
            }
        )
    })
}

fn summary(v: &Value) -> String {
    let report = &v["report"];
    let mut lines = vec![format!(
        "{} ({}): {} simulated s in {:.2} s, {} events",
        s(&v["twin"]),
        s(&v["variant"]),
        s(&report["time_s"]),
        v["wall_seconds"].as_f64().unwrap_or(0.0),
        s(&report["events"])
    )];
    lines.extend(replay_line(v));
    if let Some(rows) = v["experiment_rows"].as_u64() {
        lines.push(format!("wrote {rows} rows to twin_experiments"));
    }
    lines.extend(report_lines(v));
    lines.join("\n")
}

/// The services, entry points, verdicts and findings of a run's JSON.
fn report_lines(v: &Value) -> Vec<String> {
    let report = &v["report"];
    let mut lines = Vec::new();
    lines.push(format!(
        "{:<18} {:>8} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "SERVICE", "REPLICAS", "ARRIVALS", "OK", "FAILED", "REFUSED", "P50", "P99", "WAIT"
    ));
    for svc in report["services"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{:<18} {:>8} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>10}",
            s(&svc["name"]),
            format!("{}/{}", s(&svc["replicas"]), s(&svc["peak_replicas"])),
            s(&svc["arrivals"]),
            s(&svc["ok"]),
            s(&svc["failed"]),
            s(&svc["rejected"]),
            millis(&svc["latency"]["p50_s"]),
            millis(&svc["latency"]["p99_s"]),
            millis(&svc["mean_wait_s"]),
        ));
        // What only happens on nodes or with a failover manager.
        let mut notes = Vec::new();
        for (key, what) in [
            ("pending", "pending"),
            ("evictions", "evicted"),
            ("failovers", "failed over"),
        ] {
            if svc[key].as_u64().is_some_and(|n| n > 0) {
                notes.push(format!("{} {what}", s(&svc[key])));
            }
        }
        if let Some(serving) = svc["serving"].as_str() {
            notes.push(format!("its names lead to {serving}"));
        }
        if !notes.is_empty() {
            lines.push(format!("{:<18} {}", "", notes.join(", ")));
        }
    }
    for n in report["nodes"].as_array().into_iter().flatten() {
        lines.push(format!(
            "node {:<13} {:<9} {:>3} pods, {:.2}/{} cores, {:.0}/{:.0} MiB requested",
            s(&n["name"]),
            if n["ready"] == Value::Bool(true) {
                "ready"
            } else {
                "NotReady"
            },
            s(&n["pods"]),
            n["cpu_requested"].as_f64().unwrap_or(0.0),
            s(&n["cpu"]),
            n["memory_requested_mib"].as_f64().unwrap_or(0.0),
            n["memory_mib"].as_f64().unwrap_or(0.0),
        ));
    }
    for e in report["entries"].as_array().into_iter().flatten() {
        lines.push(format!(
            "end to end at {}: {} sent, {} answered, {} failed; p50 {}, p99 {}",
            s(&e["service"]),
            s(&e["sent"]),
            s(&e["ok"]),
            s(&e["failed"]),
            millis(&e["latency"]["p50_s"]),
            millis(&e["latency"]["p99_s"]),
        ));
    }
    lines.extend(verdict_lines(&v["verdicts"], ""));
    let findings = v["findings"].as_array().map_or(0, Vec::len);
    if findings > 0 {
        lines.push(format!(
            "{findings} findings (not simulated, approximated or assumed):"
        ));
        for f in v["findings"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  {} [{}]: {}",
                s(&f["object"]),
                s(&f["support"]),
                s(&f["message"])
            ));
        }
    }
    lines
}

pub(super) fn verdict_lines(verdicts: &Value, indent: &str) -> Vec<String> {
    verdicts
        .as_array()
        .into_iter()
        .flatten()
        .map(|verdict| {
            format!(
                "{indent}{}{} {}: {}",
                if verdict["passed"] == Value::Bool(true) {
                    "PASS"
                } else {
                    "FAIL"
                },
                // A running twin's window not over yet: the outcome so far.
                if verdict["pending"] == Value::Bool(true) {
                    " (so far)"
                } else {
                    ""
                },
                s(&verdict["assertion"]),
                s(&verdict["reason"])
            )
        })
        .collect()
}

fn comparison(v: &Value) -> String {
    let mut lines = vec![format!("{}: variants on the same traffic", s(&v["twin"]))];
    lines.extend(replay_line(v));
    lines.extend(comparison_table(&v["variants"]));
    if let Some(plot) = v["plot"].as_str() {
        lines.push(format!("plotted in {plot}"));
    }
    lines.join("\n")
}

/// Rows of a comparison (`ComparisonRow`s with their verdicts) as a table,
/// then each run's verdicts.
pub(super) fn comparison_table(rows: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "{:<24} {:>10} {:>12} {:>10} {:>12} {:>14}",
        "VARIANT", "BREACHES", "REQUESTS", "FAILED", "P99", "REPLICA-HOURS"
    ));
    for row in rows.as_array().into_iter().flatten() {
        lines.push(format!(
            "{:<24} {:>10} {:>12} {:>10} {:>12} {:>14.1}",
            s(&row["variant"]),
            format!("{}/{}", s(&row["breaches"]), s(&row["assertions"])),
            s(&row["requests"]),
            s(&row["failed"]),
            millis(&row["p99_s"]),
            row["replica_hours"].as_f64().unwrap_or(0.0),
        ));
    }
    for row in rows.as_array().into_iter().flatten() {
        lines.push(format!("{}:", s(&row["variant"])));
        lines.extend(verdict_lines(&row["verdicts"], "  "));
    }
    lines
}

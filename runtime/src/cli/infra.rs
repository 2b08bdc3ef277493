//! `hanzo-twin infra simulate <definition>`: an infrastructure twin's
//! definition run here, offline (no node): its Kubernetes topology, traffic
//! and chaos scenarios for its duration, then what each service did and
//! each assertion's verdict. A what-if is a flag away (`--replicas
//! api=5`). Exits with status 3 when an assertion fails, so a pipeline can
//! stop a change that would break one.

use super::{Output, print_value, s};
use anyhow::Context;
use clap::Subcommand;
use hanzo_twin_infra::spec::InfraTwinSpec;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(super) enum InfraCommand {
    /// Run an infrastructure twin's definition here and report: each
    /// service's answers and latency, and each assertion's verdict with its
    /// evidence. Exits with status 3 when an assertion fails.
    Simulate {
        /// The definition (YAML or JSON, `type: infrastructure`).
        definition: PathBuf,
        /// Simulated time to run (30m, 1h, 7d) instead of the definition's.
        #[arg(long)]
        duration: Option<String>,
        #[arg(long)]
        seed: Option<u64>,
        /// A what-if: this many replicas of a service (and at least that
        /// many for its autoscaler), e.g. `--replicas api=5`. Repeatable.
        #[arg(long = "replicas", value_name = "SERVICE=N")]
        replicas: Vec<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "text")]
        output: Output,
    },
}

pub(super) fn command(command: InfraCommand) -> anyhow::Result<()> {
    match command {
        InfraCommand::Simulate {
            definition,
            duration,
            seed,
            replicas,
            output,
        } => simulate(definition, duration, seed, replicas, output),
    }
}

fn simulate(
    definition: PathBuf,
    duration: Option<String>,
    seed: Option<u64>,
    replicas: Vec<String>,
    output: Output,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&definition)
        .with_context(|| format!("cannot read {}", definition.display()))?;
    let mut spec = InfraTwinSpec::parse(&text).with_context(|| {
        format!(
            "{} is not an infrastructure twin definition",
            definition.display()
        )
    })?;
    if duration.is_some() {
        spec.simulation.duration = duration;
    }
    let mut what_if = Vec::new();
    for r in &replicas {
        let (name, n) = r
            .split_once('=')
            .and_then(|(name, n)| Some((name.trim().to_string(), n.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--replicas {r}: expected SERVICE=N, e.g. api=5"))?;
        what_if.push((name, n));
    }
    let base = definition
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let traffic = spec
        .traffic()
        .with_context(|| format!("{}: traffic", definition.display()))?;
    let mut prepared = spec
        .prepare(&base, traffic, seed, |model| {
            for (name, n) in &what_if {
                let Some(i) = model.index(name) else {
                    return Err(hanzo_twin_infra::InfraError::Invalid {
                        field: "--replicas".into(),
                        message: format!("the topology has no service `{name}`"),
                    });
                };
                let service = &mut model.services[i];
                service.replicas = *n;
                if let Some(a) = service.autoscale.as_mut() {
                    a.min_replicas = a.min_replicas.max(*n);
                    a.max_replicas = a.max_replicas.max(*n);
                }
            }
            Ok(())
        })
        .with_context(|| format!("{} cannot run", definition.display()))?;
    let wall = std::time::Instant::now();
    prepared.sim.run_until(prepared.duration_s);
    let report = prepared.sim.report();
    let verdicts = prepared.sim.verdicts();
    let value = json!({
        "twin": spec.name,
        "wall_seconds": wall.elapsed().as_secs_f64(),
        "report": report,
        "verdicts": verdicts,
        "findings": prepared.findings,
    });
    print_value(output, &value, summary);
    if verdicts.iter().any(|v| !v.passed) {
        eprintln!("an assertion failed");
        std::process::exit(3);
    }
    Ok(())
}

fn seconds(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{:.1} ms", x * 1e3))
}

fn summary(v: &Value) -> String {
    let report = &v["report"];
    let mut lines = vec![format!(
        "{}: {} simulated s in {:.2} s, {} events",
        s(&v["twin"]),
        s(&report["time_s"]),
        v["wall_seconds"].as_f64().unwrap_or(0.0),
        s(&report["events"])
    )];
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
            seconds(&svc["latency"]["p50_s"]),
            seconds(&svc["latency"]["p99_s"]),
            seconds(&svc["mean_wait_s"]),
        ));
    }
    for e in report["entries"].as_array().into_iter().flatten() {
        lines.push(format!(
            "end to end at {}: {} sent, {} answered, {} failed; p50 {}, p99 {}",
            s(&e["service"]),
            s(&e["sent"]),
            s(&e["ok"]),
            s(&e["failed"]),
            seconds(&e["latency"]["p50_s"]),
            seconds(&e["latency"]["p99_s"]),
        ));
    }
    for verdict in v["verdicts"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{} {}: {}",
            if verdict["passed"] == Value::Bool(true) {
                "PASS"
            } else {
                "FAIL"
            },
            s(&verdict["assertion"]),
            s(&verdict["reason"])
        ));
    }
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
    lines.join("\n")
}

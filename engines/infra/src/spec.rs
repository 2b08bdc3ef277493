//! The spec's infrastructure twin definition (`type: infrastructure`):
//! topology, traffic, failure_injection and assertions, as written in
//! HIP-0082, plus what the simulation needs that the spec leaves open (each
//! service's behaviour, when each scenario starts, how long to run).
//!
//! ```yaml
//! name: shop-infra
//! type: infrastructure
//! topology:
//!   source: manifests              # files or folders of Kubernetes YAML
//!   paths: [../infra/shop]
//!   namespaces: [shop]
//!   include_network_policies: true
//!   include_resource_quotas: true
//!   services:                      # what Kubernetes does not say
//!     api: { service_time: { log_normal: { median_s: 0.02, p99_s: 0.15 } }, workers: 8,
//!            calls: [{ to: postgres-rw, probability: 0.3, timeout_s: 1 }] }
//! traffic:
//!   source: constant               # or steps, or timeseries (the spec's SQL)
//!   entries: [{ service: gateway, rps: 120 }]
//! failure_injection:
//!   scenarios:
//!     - { name: pod-kill, target: deployment/gateway, action: kill_pod, count: 1 }
//!     - { name: network-partition, target: service/postgres-rw, action: block_traffic, duration: 30s }
//! assertions:
//!   - "gateway responds within 5s during pod-kill"
//! simulation: { duration: 30m, seed: 7 }
//! ```
//!
//! Scenarios without `at` run one after another: the first a minute in,
//! each next a minute after the last one's effect ends. A run lasts
//! `simulation.duration`, or until two minutes after the last effect.

use crate::InfraError;
use crate::assertion::{self, Assertion};
use crate::fault::{Fault, FaultAction};
use crate::kubernetes::{Behaviour, TopologyOptions};
use crate::model::{EntryTraffic, RateProfile, RateStep, TrafficModel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfraTwinSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TwinType,
    pub topology: TopologySpec,
    pub traffic: TrafficSpec,
    #[serde(default)]
    pub failure_injection: FailureInjection,
    #[serde(default)]
    pub assertions: Vec<String>,
    #[serde(default)]
    pub simulation: SimulationSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwinType {
    Infrastructure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologySource {
    /// Kubernetes YAML files or folders (`paths`).
    Manifests,
    /// A live API server (`cluster`, a kubeconfig context).
    Kubernetes,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    pub source: TopologySource,
    /// Manifest files or folders, relative to the definition's file (on a
    /// node: under its scene folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Kubernetes YAML written in the definition itself (documents split
    /// by `---`), read with `paths`: what an API client sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<String>,
    /// The kubeconfig context of a live cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// A live cluster's objects as a node read them when the twin was
    /// created or its topology last changed: what the twin runs on, so a
    /// restart, a fork or a move to another node does not re-read a
    /// cluster that has changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<TopologySnapshot>,
    #[serde(flatten)]
    pub options: TopologyOptions,
    #[serde(default)]
    pub services: BTreeMap<String, Behaviour>,
    /// Exported traces the call graph and service times are read from,
    /// for the services `services` does not describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<TracesSpec>,
}

/// Where a topology's traces are: OTLP/JSON (the OpenTelemetry Collector's
/// file exporter, one request a line) or Jaeger's JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesSpec {
    /// Files, relative to the definition's file (on a node: under its
    /// scene folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The exported spans written in the definition itself: what an API
    /// client sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<String>,
}

/// A live cluster's objects, read once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySnapshot {
    /// When they were read (RFC 3339).
    pub read_at: String,
    /// The API server they were read from.
    pub server: String,
    /// The objects, as YAML documents split by `---`.
    pub manifests: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficSource {
    Constant,
    Steps,
    /// Replayed from the timeseries database (HIP-0059) by `query`.
    Timeseries,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    pub source: TrafficSource,
    #[serde(default)]
    pub entries: Vec<TrafficEntry>,
    /// The SQL of a timeseries replay: rows of (bucket, metric, service,
    /// avg_value), the value a service's requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficEntry {
    pub service: String,
    /// `constant`: requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// `steps`: the rate from each `at` on.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub at: String,
    pub rps: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureInjection {
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
}

impl FailureInjection {
    pub fn is_empty(&self) -> bool {
        self.scenarios.is_empty()
    }
}

/// The action a scenario's name stands for when it gives none: the spec's
/// and Chaos Mesh's names (`pod-kill`, `network-partition`, …).
pub fn action_named(name: &str) -> Option<&'static str> {
    Some(match name {
        "pod-kill" | "pod-failure" => "kill_pod",
        "network-partition" | "partition" => "block_traffic",
        "cpu-stress" | "stress-cpu" => "stress_cpu",
        "disk-full" | "fill-disk" => "fill_disk",
        "network-delay" | "delay" => "delay",
        "network-loss" | "packet-loss" | "loss" => "packet_loss",
        "node-stop" | "node-failure" | "node-down" => "stop_node",
        _ => return None,
    })
}

impl Scenario {
    /// The fault it injects at `at_s`; fields are named after `prefix`.
    pub fn fault(&self, prefix: &str, at_s: f64) -> Result<Fault, InfraError> {
        let field = |f: &str| format!("{prefix}{f}");
        let duration = need_seconds(&field("duration"), &self.duration)?;
        let percent = |name: &str, v: Option<f64>| {
            v.ok_or_else(|| {
                InfraError::invalid(field(name), format!("{} needs {name}", self.action))
            })
        };
        let action = match self.action.as_str() {
            "kill_pod" => FaultAction::KillPod {
                count: self.count.unwrap_or(1),
            },
            "block_traffic" => FaultAction::BlockTraffic,
            "stress_cpu" => FaultAction::StressCpu {
                load_percent: percent("load_percent", self.load_percent)?,
            },
            "fill_disk" => FaultAction::FillDisk {
                percent: percent("percent", self.percent)?,
            },
            "stop_node" => FaultAction::StopNode,
            "packet_loss" => FaultAction::Loss {
                percent: percent("percent", self.percent)?,
            },
            "delay" => FaultAction::Delay {
                latency_s: need_seconds(&field("latency"), &self.latency)?.ok_or_else(|| {
                    InfraError::invalid(field("latency"), "delay needs latency, e.g. 200ms")
                })?,
                jitter_s: need_seconds(&field("jitter"), &self.jitter)?.unwrap_or(0.0),
            },
            other => {
                return Err(InfraError::invalid(
                    field("action"),
                    format!(
                        "`{other}` is not kill_pod, block_traffic, stress_cpu, fill_disk, delay, packet_loss or stop_node"
                    ),
                ));
            }
        };
        let fault = Fault {
            name: self.name.clone(),
            target: self.target.clone(),
            action,
            at_s,
            duration_s: duration,
        };
        fault.check(prefix.trim_end_matches('.'))?;
        Ok(fault)
    }
}

/// A scenario as the spec writes it: an action and its settings side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub target: String,
    /// kill_pod, block_traffic, stress_cpu, fill_disk, delay, packet_loss
    /// or stop_node (its target `node/<name>`).
    pub action: String,
    /// When in the run it starts (`5m`); absent: after the one before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// kill_pod: pods killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// stress_cpu: the CPU taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_percent: Option<f64>,
    /// fill_disk: how full; packet_loss: the share lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// delay: added one way, and up to this much more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A duration as the spec writes it: `30s`, `5m`, `1h`, `250ms`, `1d`.
pub fn seconds(text: &str) -> Option<f64> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = t.split_at(split);
    let v: f64 = number.trim().parse().ok()?;
    let scale = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

fn need_seconds(field: &str, text: &Option<String>) -> Result<Option<f64>, InfraError> {
    text.as_ref()
        .map(|t| {
            seconds(t).ok_or_else(|| {
                InfraError::invalid(
                    field,
                    format!("`{t}` is not a duration such as 30s, 5m or 1h"),
                )
            })
        })
        .transpose()
}

/// Seconds of quiet before the first unscheduled scenario and after each.
const GAP_S: f64 = 60.0;

impl InfraTwinSpec {
    /// Reads a definition from YAML or JSON, naming the field of a problem.
    pub fn parse(text: &str) -> Result<InfraTwinSpec, InfraError> {
        let value: serde_json::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| InfraError::invalid("definition", format!("not YAML or JSON: {e}")))?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            InfraError::invalid(
                if path == "." {
                    "definition".into()
                } else {
                    path
                },
                e.inner().to_string(),
            )
        })
    }

    /// The scenarios as faults, scheduled; `startup` gives a target's
    /// replacement time (a kill's effect).
    pub fn faults(&self, startup: impl Fn(&str) -> Option<f64>) -> Result<Vec<Fault>, InfraError> {
        let mut next = GAP_S;
        let mut faults = Vec::new();
        for (i, s) in self.failure_injection.scenarios.iter().enumerate() {
            let prefix = format!("failure_injection.scenarios[{i}].");
            let at = need_seconds(&format!("{prefix}at"), &s.at)?.unwrap_or(next);
            let fault = s.fault(&prefix, at)?;
            let effect = match fault.action {
                FaultAction::KillPod { .. } => startup(fault.service()).unwrap_or(0.0),
                // Without a duration a fault lasts the run; the next waits a gap.
                _ => fault.duration_s.unwrap_or(0.0),
            };
            next = next.max(at + effect + GAP_S);
            faults.push(fault);
        }
        Ok(faults)
    }

    /// The assertions, read by the grammar.
    pub fn assertions(&self) -> Result<Vec<Assertion>, InfraError> {
        self.assertions
            .iter()
            .enumerate()
            .map(|(i, text)| {
                assertion::parse(text).map_err(|expected| {
                    InfraError::invalid(
                        format!("assertions[{i}]"),
                        format!("`{text}`: expected {expected}"),
                    )
                })
            })
            .collect()
    }

    /// The run's length: as given, or two minutes past the last effect.
    pub fn duration(&self, faults: &[Fault]) -> Result<f64, InfraError> {
        if let Some(d) = need_seconds("simulation.duration", &self.simulation.duration)? {
            if d <= 0.0 {
                return Err(InfraError::invalid(
                    "simulation.duration",
                    "must be longer than 0",
                ));
            }
            return Ok(d);
        }
        let last = faults
            .iter()
            .map(|f| f.at_s + f.duration_s.unwrap_or(0.0))
            .fold(0.0, f64::max);
        Ok((last + 2.0 * GAP_S).max(300.0))
    }

    /// Constant or stepped traffic; a timeseries replay is read elsewhere
    /// (it needs the database).
    pub fn traffic(&self) -> Result<TrafficModel, InfraError> {
        let mut entries = Vec::new();
        for (i, e) in self.traffic.entries.iter().enumerate() {
            let field = |f: &str| format!("traffic.entries[{i}].{f}");
            let rate = match self.traffic.source {
                TrafficSource::Constant => RateProfile::Constant {
                    rps: e.rps.ok_or_else(|| {
                        InfraError::invalid(field("rps"), "constant traffic needs rps")
                    })?,
                },
                TrafficSource::Steps => {
                    let mut steps = Vec::new();
                    for (j, s) in e.steps.iter().enumerate() {
                        let at = seconds(&s.at).ok_or_else(|| {
                            InfraError::invalid(
                                field(&format!("steps[{j}].at")),
                                format!("`{}` is not a duration such as 30s", s.at),
                            )
                        })?;
                        steps.push(RateStep {
                            at_s: at,
                            rps: s.rps,
                        });
                    }
                    if steps.is_empty() {
                        return Err(InfraError::invalid(
                            field("steps"),
                            "steps traffic needs at least one step",
                        ));
                    }
                    RateProfile::Steps { steps }
                }
                TrafficSource::Timeseries => {
                    return Err(InfraError::invalid(
                        "traffic.source",
                        "timeseries traffic is read from the database by its query",
                    ));
                }
            };
            entries.push(EntryTraffic {
                service: e.service.clone(),
                rate,
            });
        }
        if entries.is_empty() {
            return Err(InfraError::invalid(
                "traffic.entries",
                "name at least one service that takes outside requests",
            ));
        }
        Ok(TrafficModel { entries })
    }
}

/// An infrastructure twin as a node runs it: the definition, the
/// Kubernetes objects its topology read (files, inline YAML or a live
/// cluster) and the traffic it runs. It is the twin's "scene": everything
/// the simulator starts from, so its fingerprint changes when any does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinSource {
    pub spec: InfraTwinSpec,
    /// (where from, YAML or JSON text).
    pub manifests: Vec<(String, String)>,
    pub traffic: TrafficModel,
}

impl TwinSource {
    /// The simulation at time 0, with the definition's faults scheduled and
    /// its assertions watched.
    pub fn prepare(&self) -> Result<Prepared, InfraError> {
        let objects = crate::kubernetes::Objects::from_manifests(&self.manifests)?;
        self.spec
            .prepare_objects(&objects, self.traffic.clone(), None, |_| Ok(()))
    }
}

/// A definition made ready to run.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sim: crate::InfraSim,
    /// Simulated seconds the run lasts.
    pub duration_s: f64,
    pub findings: Vec<crate::kubernetes::Finding>,
}

impl InfraTwinSpec {
    /// The manifest files its topology names (folders: their `.yaml`,
    /// `.yml` and `.json` files, in name order), relative to `base`.
    pub fn manifests(&self, base: &std::path::Path) -> Result<Vec<(String, String)>, InfraError> {
        if self.topology.source == TopologySource::Kubernetes {
            if let Some(snapshot) = &self.topology.snapshot {
                return Ok(vec![(
                    format!(
                        "topology.snapshot (read from {} at {})",
                        snapshot.server, snapshot.read_at
                    ),
                    snapshot.manifests.clone(),
                )]);
            }
            return Err(InfraError::invalid(
                "topology.source",
                "kubernetes is read from the cluster's API server (hanzo-twin built with the `kubernetes` feature), not from files; or export the objects \
                 (kubectl get deploy,sts,svc,hpa,resourcequota,networkpolicy,pdb -n <namespace> -o yaml > shop.yaml) \
                 and use source: manifests with paths: [shop.yaml]",
            ));
        }
        if self.topology.paths.is_empty() && self.topology.manifests.is_none() {
            return Err(InfraError::invalid(
                "topology.paths",
                "name the manifest files or folders (or write them in topology.manifests)",
            ));
        }
        let mut files = Vec::new();
        if let Some(text) = &self.topology.manifests {
            files.push(("topology.manifests".to_string(), text.clone()));
        }
        for (i, p) in self.topology.paths.iter().enumerate() {
            let path = base.join(p);
            let field = format!("topology.paths[{i}]");
            let unreadable = |e: std::io::Error| {
                InfraError::invalid(&field, format!("cannot read {}: {e}", path.display()))
            };
            if path.is_dir() {
                let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(&path)
                    .map_err(unreadable)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        f.extension()
                            .and_then(|x| x.to_str())
                            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
                    })
                    .collect();
                found.sort();
                if found.is_empty() {
                    return Err(InfraError::invalid(
                        &field,
                        format!("{} has no .yaml, .yml or .json files", path.display()),
                    ));
                }
                for f in found {
                    let text = std::fs::read_to_string(&f).map_err(|e| {
                        InfraError::invalid(&field, format!("cannot read {}: {e}", f.display()))
                    })?;
                    files.push((f.display().to_string(), text));
                }
            } else {
                files.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).map_err(unreadable)?,
                ));
            }
        }
        Ok(files)
    }

    /// The model, its findings, the faults, assertions watched, ready to
    /// run on `traffic` (the definition's own, or a replay's). `edit`
    /// changes the model first: a what-if variant.
    pub fn prepare(
        &self,
        base: &std::path::Path,
        traffic: TrafficModel,
        seed: Option<u64>,
        edit: impl FnOnce(&mut crate::InfraModel) -> Result<(), InfraError>,
    ) -> Result<Prepared, InfraError> {
        let mut objects = crate::kubernetes::Objects::from_manifests(&self.manifests(base)?)?;
        let mut spec = self.clone();
        spec.fold_traces(&mut objects, &self.trace_files(base)?)?;
        spec.prepare_objects(&objects, traffic, seed, edit)
    }

    /// The trace files its topology names, relative to `base`, and the
    /// spans written in it: `(where from, JSON text)`.
    pub fn trace_files(&self, base: &std::path::Path) -> Result<Vec<(String, String)>, InfraError> {
        let Some(traces) = &self.topology.traces else {
            return Ok(Vec::new());
        };
        if traces.paths.is_empty() && traces.spans.is_none() {
            return Err(InfraError::invalid(
                "topology.traces",
                "name trace files in paths (OTLP JSON or Jaeger JSON), or write the spans in spans",
            ));
        }
        let mut files = Vec::new();
        if let Some(text) = &traces.spans {
            files.push(("topology.traces.spans".to_string(), text.clone()));
        }
        for (i, p) in traces.paths.iter().enumerate() {
            let path = base.join(p);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                InfraError::invalid(
                    format!("topology.traces.paths[{i}]"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            files.push((format!("topology.traces.paths[{i}]"), text));
        }
        Ok(files)
    }

    /// Folds what `traces` show into `topology.services`, as if the
    /// definition had written it: each traced service of the topology (by
    /// workload or Service name) takes its traced calls when the
    /// definition gives none, and its traced service time when it gives
    /// none. What the traces name that the topology lacks, and what traces
    /// cannot tell, go to `objects`' findings. The definition keeps no
    /// `traces` after (they are its services now).
    pub fn fold_traces(
        &mut self,
        objects: &mut crate::kubernetes::Objects,
        traces: &[(String, String)],
    ) -> Result<(), InfraError> {
        use crate::kubernetes::{Finding, Support};
        if traces.is_empty() {
            return Ok(());
        }
        let mut spans = Vec::new();
        for (field, text) in traces {
            let set = crate::traces::read_spans(field, text)?;
            spans.extend(set.spans);
            objects.findings.extend(set.findings);
        }
        let graph = crate::traces::call_graph(&spans);
        objects.findings.extend(graph.findings);
        // The topology's services and their names, as the model reads them.
        let (topology, _) =
            crate::kubernetes::model(objects, &self.topology.options, &BTreeMap::new())?;
        let not_there = |name: &str| {
            Finding {
            object: format!("Traced service {name}"),
            support: Support::NotSimulated,
            message: "is not a Deployment, StatefulSet or Service of the topology: its traced behaviour, and calls to it, are left out".into(),
        }
        };
        for (name, observed) in &graph.services {
            let Some(index) = topology.index(name) else {
                objects.findings.push(not_there(name));
                continue;
            };
            let key = self
                .topology
                .services
                .keys()
                .find(|k| topology.index(k) == Some(index))
                .cloned()
                .unwrap_or_else(|| topology.services[index].name.clone());
            let behaviour = self.topology.services.entry(key).or_default();
            if behaviour.calls.is_empty() {
                behaviour.calls = observed
                    .calls
                    .iter()
                    .filter(|c| topology.index(&c.to).is_some())
                    .cloned()
                    .collect();
            }
            if behaviour.service_time.is_none() {
                behaviour.service_time = Some(observed.service_time);
            }
        }
        self.topology.traces = None;
        Ok(())
    }

    /// As [`InfraTwinSpec::prepare`], on objects read elsewhere (a live
    /// cluster's).
    pub fn prepare_objects(
        &self,
        objects: &crate::kubernetes::Objects,
        traffic: TrafficModel,
        seed: Option<u64>,
        edit: impl FnOnce(&mut crate::InfraModel) -> Result<(), InfraError>,
    ) -> Result<Prepared, InfraError> {
        let (mut model, findings) =
            crate::kubernetes::model(objects, &self.topology.options, &self.topology.services)?;
        edit(&mut model)?;
        model.check()?;
        let faults = self.faults(|name| model.service(name).map(|s| s.startup_s))?;
        let duration_s = self.duration(&faults)?;
        let assertions = self.assertions()?;
        let mut sim = crate::InfraSim::new(
            model,
            traffic,
            faults,
            seed.or(self.simulation.seed).unwrap_or(1),
        )?;
        for (i, a) in assertions.into_iter().enumerate() {
            sim.watch(a, &format!("assertions[{i}]"))?;
        }
        Ok(Prepared {
            sim,
            duration_s,
            findings,
        })
    }
}

//! A Kubernetes topology as an infrastructure model. Deployments and
//! StatefulSets become services (replicas, CPU requests and limits);
//! Services name them; HorizontalPodAutoscalers scale them on CPU;
//! ResourceQuotas cap that scaling; NetworkPolicies decide who may call
//! whom. What Kubernetes does not say (how long a request takes, how many
//! run at once, whom each service calls) comes from the twin definition,
//! service by service ([`Behaviour`]). Everything read and not simulated,
//! or simulated approximately, is listed as a [`Finding`], as scenes have.
//!
//! Objects come from manifests ([`Objects::from_manifests`]: YAML files,
//! several documents each, `List`s included) or from an API server's
//! answers (the same JSON, through [`Objects::push`]).

use crate::InfraError;
use crate::model::{
    Autoscale, CallModel, Distribution, Failover, InfraModel, Memory, NodeModel, Quota, Readiness,
    ServiceModel,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, PodTemplateSpec, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod nodes;

/// Which objects a topology takes (the spec's `topology` block).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyOptions {
    /// Only these namespaces; all when empty.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub include_network_policies: bool,
    #[serde(default)]
    pub include_resource_quotas: bool,
    /// Model the cluster's nodes (Node objects, read with `list` on nodes,
    /// or `kubectl get nodes -o yaml` among the manifests): replicas are
    /// scheduled onto them and wait when none has room.
    #[serde(default)]
    pub include_nodes: bool,
    /// Nodes written in the definition (a pool each), beside or instead of
    /// Node objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodePool>,
    /// Seconds an unreachable node's pods wait before they are evicted and
    /// replaced elsewhere (`tolerationSeconds`, 300 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_s: Option<f64>,
}

/// Nodes alike (a node pool): `count` of them, named `name-0`, `name-1`, …
/// (one: `name`), each with this much allocatable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Cores: `4`, `3500m`.
    pub cpu: Quantity,
    /// `16Gi`, `15500Mi`.
    pub memory: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u32>,
}

/// A Kubernetes quantity as YAML writes it: a number or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Number(f64),
    Text(String),
}

impl Quantity {
    fn text(&self) -> String {
        match self {
            Quantity::Number(n) => n.to_string(),
            Quantity::Text(t) => t.clone(),
        }
    }
}

/// How faithfully something read is simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    Approximated,
    NotSimulated,
    /// A value the twin had to assume; the definition can give it.
    Assumed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `Kind namespace/name`.
    pub object: String,
    pub support: Support,
    pub message: String,
}

/// What the twin definition says of one service beyond Kubernetes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_time: Option<Distribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_limit_percent: Option<f64>,
    #[serde(default)]
    pub calls: Vec<CallModel>,
    /// The readiness probe, when its pods' containers have none (or to
    /// override theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    /// What a replica holds in memory; its limit is its containers'
    /// `resources.limits.memory` unless given here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryUse>,
    /// A standby to promote when it has no running replica (a database's
    /// primary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
}

/// A replica's memory use, MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryUse {
    pub base_mib: f64,
    pub per_request_mib: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_mib: Option<f64>,
}

/// A service's request time when the definition gives none.
const ASSUMED_SERVICE_TIME: Distribution = Distribution::Exponential { mean_s: 0.01 };
/// Requests a replica works on at once when the definition gives none.
const ASSUMED_WORKERS: u32 = 4;
/// Kubernetes' default HPA target when it names no metric.
const DEFAULT_CPU_TARGET: f64 = 80.0;

/// The Kubernetes objects of a topology, by kind.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub deployments: Vec<Deployment>,
    pub stateful_sets: Vec<StatefulSet>,
    pub services: Vec<Service>,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    pub quotas: Vec<ResourceQuota>,
    pub network_policies: Vec<NetworkPolicy>,
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    pub nodes: Vec<Node>,
    /// Objects of kinds the twin does not simulate.
    pub findings: Vec<Finding>,
}

fn parse<T: serde::de::DeserializeOwned>(
    source: &str,
    value: serde_json::Value,
) -> Result<T, InfraError> {
    serde_json::from_value(value)
        .map_err(|e| InfraError::invalid(source, format!("not a valid object of its kind: {e}")))
}

impl Objects {
    /// Reads manifests: `(file name, YAML text)`, each any number of
    /// documents.
    pub fn from_manifests(files: &[(String, String)]) -> Result<Objects, InfraError> {
        let mut objects = Objects::default();
        for (name, text) in files {
            for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
                let source = format!("{name} (document {})", i + 1);
                let value = serde_json::Value::deserialize(document)
                    .map_err(|e| InfraError::invalid(&source, format!("not YAML: {e}")))?;
                if value.is_null() {
                    continue; // an empty document (a trailing `---`)
                }
                objects.push(&source, value)?;
            }
        }
        Ok(objects)
    }

    /// Adds one object (or a `List` of them), as the API server or a
    /// manifest gives it; `source` names it in errors.
    pub fn push(&mut self, source: &str, value: serde_json::Value) -> Result<(), InfraError> {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let api = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        if kind.ends_with("List")
            && let Some(items) = value.get("items").and_then(|i| i.as_array())
        {
            let item_kind = kind.trim_end_matches("List").to_string();
            for (i, item) in items.iter().enumerate() {
                let mut item = item.clone();
                // An API server's list leaves kind out of its items.
                if let Some(map) = item.as_object_mut() {
                    if !map.contains_key("kind") && !item_kind.is_empty() {
                        map.insert("kind".into(), item_kind.clone().into());
                    }
                    if !map.contains_key("apiVersion") {
                        map.insert("apiVersion".into(), api.clone().into());
                    }
                }
                self.push(&format!("{source} items[{i}]"), item)?;
            }
            return Ok(());
        }
        match (api.as_str(), kind.as_str()) {
            ("apps/v1", "Deployment") => self.deployments.push(parse(source, value)?),
            ("apps/v1", "StatefulSet") => self.stateful_sets.push(parse(source, value)?),
            ("v1", "Service") => self.services.push(parse(source, value)?),
            ("autoscaling/v2", "HorizontalPodAutoscaler") => {
                self.autoscalers.push(parse(source, value)?)
            }
            ("v1", "ResourceQuota") => self.quotas.push(parse(source, value)?),
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                self.network_policies.push(parse(source, value)?)
            }
            ("policy/v1", "PodDisruptionBudget") => {
                self.disruption_budgets.push(parse(source, value)?)
            }
            ("v1", "Node") => self.nodes.push(parse(source, value)?),
            ("", _) | (_, "") => {
                return Err(InfraError::invalid(
                    source,
                    "a Kubernetes object needs apiVersion and kind",
                ));
            }
            (api, kind) => {
                let name = value
                    .pointer("/metadata/name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("?");
                let message = match kind {
                    "HorizontalPodAutoscaler" => format!("{api} is not read; write autoscaling/v2"),
                    _ => "not part of the simulation".to_string(),
                };
                self.findings.push(Finding {
                    object: format!("{kind} {}/{name}", namespace_of(&value)),
                    support: Support::NotSimulated,
                    message,
                });
            }
        }
        Ok(())
    }

    /// The objects as YAML documents (split by `---`), each with its
    /// `apiVersion` and `kind`: what [`Objects::from_manifests`] reads back
    /// (findings are not objects and are left out).
    pub fn to_manifests(&self) -> Result<String, InfraError> {
        fn documents<T: Serialize>(list: &[T], out: &mut Vec<String>) -> Result<(), InfraError> {
            for object in list {
                out.push(serde_yaml_ng::to_string(object).map_err(|e| {
                    InfraError::invalid("topology.snapshot", format!("cannot write an object: {e}"))
                })?);
            }
            Ok(())
        }
        let mut out = Vec::new();
        documents(&self.deployments, &mut out)?;
        documents(&self.stateful_sets, &mut out)?;
        documents(&self.services, &mut out)?;
        documents(&self.autoscalers, &mut out)?;
        documents(&self.quotas, &mut out)?;
        documents(&self.network_policies, &mut out)?;
        documents(&self.disruption_budgets, &mut out)?;
        documents(&self.nodes, &mut out)?;
        Ok(out.join("---\n"))
    }

    /// Adds `other`'s objects, each replacing one of its kind with the same
    /// name (and namespace, where `other`'s gives one; without, it takes
    /// the namespace of the one it replaces): a what-if's patch.
    pub fn merge(&mut self, other: Objects) {
        fn upsert<T: k8s_openapi::Metadata<Ty = ObjectMeta>>(list: &mut Vec<T>, added: Vec<T>) {
            for mut object in added {
                let (name, namespace) = (&object.metadata().name, &object.metadata().namespace);
                let same = list.iter().position(|o| {
                    let m = o.metadata();
                    m.name == *name && (namespace.is_none() || m.namespace == *namespace)
                });
                match same {
                    Some(i) => {
                        if namespace.is_none() {
                            object.metadata_mut().namespace = list[i].metadata().namespace.clone();
                        }
                        list[i] = object
                    }
                    None => list.push(object),
                }
            }
        }
        upsert(&mut self.deployments, other.deployments);
        upsert(&mut self.stateful_sets, other.stateful_sets);
        upsert(&mut self.services, other.services);
        upsert(&mut self.autoscalers, other.autoscalers);
        upsert(&mut self.quotas, other.quotas);
        upsert(&mut self.network_policies, other.network_policies);
        upsert(&mut self.disruption_budgets, other.disruption_budgets);
        upsert(&mut self.nodes, other.nodes);
        self.findings.extend(other.findings);
    }
}

fn namespace_of(value: &serde_json::Value) -> &str {
    value
        .pointer("/metadata/namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default")
}

/// Whether `selector` selects pods with `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// A Deployment's or StatefulSet's part of the model.
struct Workload {
    kind: &'static str,
    namespace: String,
    name: String,
    replicas: u32,
    labels: BTreeMap<String, String>,
    cpu_request: Option<f64>,
    cpu_limit: Option<f64>,
    /// Its containers' memory limits and requests, summed (MiB).
    memory_limit_mib: Option<f64>,
    memory_request_mib: Option<f64>,
    /// The first container's readiness probe.
    readiness: Option<Readiness>,
}

impl Workload {
    fn new(
        kind: &'static str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        replicas: Option<i32>,
        template: &PodTemplateSpec,
    ) -> Result<Workload, InfraError> {
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let object = format!("{kind} {namespace}/{name}");
        let mut cpu_request = None;
        let mut cpu_limit = None;
        let mut memory_limit_mib = None;
        let mut memory_request_mib = None;
        let mut readiness = None;
        for c in template.spec.iter().flat_map(|s| &s.containers) {
            if readiness.is_none()
                && let Some(p) = &c.readiness_probe
            {
                // Kubernetes' defaults for what the probe leaves out.
                let d = Readiness::default();
                let seconds =
                    |v: Option<i32>, default: f64| v.map_or(default, |v| f64::from(v.max(1)));
                let count = |v: Option<i32>, default: u32| v.map_or(default, |v| v.max(1) as u32);
                readiness = Some(Readiness {
                    period_s: seconds(p.period_seconds, d.period_s),
                    timeout_s: seconds(p.timeout_seconds, d.timeout_s),
                    failure_threshold: count(p.failure_threshold, d.failure_threshold),
                    success_threshold: count(p.success_threshold, d.success_threshold),
                });
            }
            let Some(resources) = &c.resources else {
                continue;
            };
            // A container's quantity of `key`, read by `parse`.
            let amount = |map: &Option<
                BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >,
                          key: &str,
                          parse: fn(&str) -> Option<f64>|
             -> Result<Option<f64>, InfraError> {
                map.as_ref()
                    .and_then(|m| m.get(key))
                    .map(|q| {
                        parse(&q.0).ok_or_else(|| {
                            InfraError::invalid(
                                &object,
                                format!(
                                    "container {}: `{}` is not a {} quantity",
                                    c.name,
                                    q.0,
                                    if key == "cpu" { "CPU" } else { key }
                                ),
                            )
                        })
                    })
                    .transpose()
            };
            let memory = |map| amount(map, "memory", memory_mib);
            let read = |map| amount(map, "cpu", cpu_cores);
            let limit = memory(&resources.limits)?;
            if let Some(mib) = limit {
                *memory_limit_mib.get_or_insert(0.0) += mib;
            }
            // Kubernetes defaults a container's request to its limit.
            if let Some(mib) = memory(&resources.requests)?.or(limit) {
                *memory_request_mib.get_or_insert(0.0) += mib;
            }
            let limit = read(&resources.limits)?;
            if let Some(l) = limit {
                *cpu_limit.get_or_insert(0.0) += l;
            }
            // Kubernetes defaults a container's request to its limit.
            if let Some(r) = read(&resources.requests)?.or(limit) {
                *cpu_request.get_or_insert(0.0) += r;
            }
        }
        Ok(Workload {
            kind,
            namespace,
            name,
            replicas: replicas.map_or(1, |r| r.max(0) as u32),
            labels: template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            cpu_request,
            cpu_limit,
            memory_limit_mib,
            memory_request_mib,
            readiness,
        })
    }

    fn object(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A CPU quantity in cores: `2`, `0.5`, `500m`, `1e3m`.
pub fn cpu_cores(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, scale) = match text.strip_suffix('m') {
        Some(n) => (n, 1e-3),
        None => match text.strip_suffix('k') {
            Some(n) => (n, 1e3),
            None => (text, 1.0),
        },
    };
    let v: f64 = number.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * scale)
}

/// A memory quantity in MiB: `512Mi`, `1Gi`, `1G`, `500M`, `1e9` (bytes).
pub fn memory_mib(text: &str) -> Option<f64> {
    let text = text.trim();
    const UNITS: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, bytes) = UNITS
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((text, 1.0));
    let v: f64 = number.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * bytes / (1024.0 * 1024.0))
}

/// Builds the model: a service per Deployment and StatefulSet in the
/// namespaces asked for, with what `behaviour` says of each (by workload
/// name, or a Service's), and the findings.
pub fn model(
    objects: &Objects,
    options: &TopologyOptions,
    behaviour: &BTreeMap<String, Behaviour>,
) -> Result<(InfraModel, Vec<Finding>), InfraError> {
    let wanted = |ns: &Option<String>| {
        let ns = ns.as_deref().unwrap_or("default");
        options.namespaces.is_empty() || options.namespaces.iter().any(|n| n == ns)
    };
    let mut findings = objects.findings.clone();
    let mut workloads = Vec::new();
    for d in objects
        .deployments
        .iter()
        .filter(|d| wanted(&d.metadata.namespace))
    {
        let spec = d.spec.as_ref().ok_or_else(|| {
            InfraError::invalid(
                format!("Deployment {}", d.metadata.name.as_deref().unwrap_or("?")),
                "has no spec",
            )
        })?;
        workloads.push(Workload::new(
            "Deployment",
            &d.metadata,
            spec.replicas,
            &spec.template,
        )?);
    }
    for s in objects
        .stateful_sets
        .iter()
        .filter(|s| wanted(&s.metadata.namespace))
    {
        let spec = s.spec.as_ref().ok_or_else(|| {
            InfraError::invalid(
                format!("StatefulSet {}", s.metadata.name.as_deref().unwrap_or("?")),
                "has no spec",
            )
        })?;
        workloads.push(Workload::new(
            "StatefulSet",
            &s.metadata,
            spec.replicas,
            &spec.template,
        )?);
    }
    if workloads.is_empty() {
        return Err(InfraError::invalid(
            "topology",
            "no Deployment or StatefulSet in the namespaces asked for",
        ));
    }
    for (i, w) in workloads.iter().enumerate() {
        if workloads[..i].iter().any(|o| o.name == w.name) {
            return Err(InfraError::invalid(
                "topology",
                format!(
                    "two workloads are named `{}` ({} and another); the twin names services by workload",
                    w.name,
                    w.object()
                ),
            ));
        }
    }
    // Services: the names callers use.
    let mut aliases: Vec<Vec<String>> = vec![Vec::new(); workloads.len()];
    for s in objects
        .services
        .iter()
        .filter(|s| wanted(&s.metadata.namespace))
    {
        let name = s.metadata.name.clone().unwrap_or_default();
        let ns = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let object = format!("Service {ns}/{name}");
        let selector = s.spec.as_ref().and_then(|spec| spec.selector.clone());
        let Some(selector) = selector.filter(|m| !m.is_empty()) else {
            findings.push(Finding {
                object,
                support: Support::NotSimulated,
                message: "selects no pods (ExternalName or manual endpoints): calls to it are not simulated".into(),
            });
            continue;
        };
        let targets: Vec<usize> = (0..workloads.len())
            .filter(|&i| {
                workloads[i].namespace == ns
                    && selector
                        .iter()
                        .all(|(k, v)| workloads[i].labels.get(k) == Some(v))
            })
            .collect();
        match targets.as_slice() {
            [] => findings.push(Finding {
                object,
                support: Support::NotSimulated,
                message: "selects no Deployment or StatefulSet".into(),
            }),
            [one] => {
                if name != workloads[*one].name {
                    aliases[*one].push(name);
                }
            }
            many => {
                findings.push(Finding {
                    object,
                    support: Support::Approximated,
                    message: format!(
                        "selects {} workloads; calls to it go to {}",
                        many.len(),
                        workloads[many[0]].name
                    ),
                });
                if name != workloads[many[0]].name {
                    aliases[many[0]].push(name);
                }
            }
        }
    }
    let mut services = Vec::new();
    for (i, w) in workloads.iter().enumerate() {
        let b = behaviour
            .get(&w.name)
            .or_else(|| aliases[i].iter().find_map(|a| behaviour.get(a)));
        let b = b.cloned().unwrap_or_default();
        let service_time = b.service_time.unwrap_or_else(|| {
            findings.push(Finding {
                object: w.object(),
                support: Support::Assumed,
                message: format!("no service_time given: requests take {ASSUMED_SERVICE_TIME:?}; set topology.services.{}.service_time", w.name),
            });
            ASSUMED_SERVICE_TIME
        });
        let workers = b.workers.unwrap_or_else(|| {
            findings.push(Finding {
                object: w.object(),
                support: Support::Assumed,
                message: format!("no workers given: a replica works on {ASSUMED_WORKERS} requests at once; set topology.services.{}.workers", w.name),
            });
            ASSUMED_WORKERS
        });
        let mut service = ServiceModel {
            aliases: aliases[i].clone(),
            namespace: w.namespace.clone(),
            replicas: w.replicas,
            workers,
            queue_limit: b.queue_limit,
            cpu_limit: w.cpu_limit,
            cpu_request: w.cpu_request,
            memory_request_mib: w.memory_request_mib,
            stateful: w.kind == "StatefulSet",
            failover: b.failover.clone(),
            calls: b.calls.clone(),
            ..ServiceModel::new(&w.name, service_time)
        };
        if let Some(s) = b.startup_s {
            service.startup_s = s;
        }
        if let Some(s) = b.writes {
            service.writes = s;
        }
        if let Some(s) = b.disk_limit_percent {
            service.disk_limit_percent = s;
        }
        service.readiness = b.readiness.or(w.readiness);
        if let Some(m) = b.memory {
            match m.limit_mib.or(w.memory_limit_mib) {
                Some(limit_mib) => {
                    service.memory = Some(Memory {
                        base_mib: m.base_mib,
                        per_request_mib: m.per_request_mib,
                        limit_mib,
                    })
                }
                None => findings.push(Finding {
                    object: w.object(),
                    support: Support::Approximated,
                    message: format!("no memory limit (resources.limits.memory or topology.services.{}.memory.limit_mib): it is never OOM-killed", w.name),
                }),
            }
        }
        services.push(service);
    }
    for name in behaviour.keys() {
        if !services
            .iter()
            .any(|s| &s.name == name || s.aliases.contains(name))
        {
            return Err(InfraError::invalid(
                format!("topology.services.{name}"),
                "names no Deployment, StatefulSet or Service of the topology",
            ));
        }
    }
    autoscalers(objects, &wanted, &workloads, &mut services, &mut findings);
    let mut quotas = Vec::new();
    for q in objects
        .quotas
        .iter()
        .filter(|q| wanted(&q.metadata.namespace))
    {
        let ns = q
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let object = format!(
            "ResourceQuota {ns}/{}",
            q.metadata.name.as_deref().unwrap_or("?")
        );
        if !options.include_resource_quotas {
            continue;
        }
        let hard = q
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let mut quota = Quota {
            namespace: ns,
            cpu_requests: None,
            pods: None,
        };
        for (key, value) in &hard {
            match key.as_str() {
                "requests.cpu" | "cpu" => quota.cpu_requests = cpu_cores(&value.0),
                "pods" => quota.pods = value.0.parse().ok(),
                other => findings.push(Finding {
                    object: object.clone(),
                    support: Support::NotSimulated,
                    message: format!("`{other}` is not simulated (CPU requests and pods are)"),
                }),
            }
        }
        quotas.push(quota);
    }
    if options.include_network_policies {
        network_policies(objects, &wanted, &workloads, &mut services, &mut findings);
    }
    for p in objects
        .disruption_budgets
        .iter()
        .filter(|p| wanted(&p.metadata.namespace))
    {
        findings.push(Finding {
            object: format!("PodDisruptionBudget {}/{}", p.metadata.namespace.as_deref().unwrap_or("default"), p.metadata.name.as_deref().unwrap_or("?")),
            support: Support::NotSimulated,
            message: "limits voluntary evictions (node drains), which the twin does not simulate; chaos pod kills ignore it, as Chaos Mesh's do".into(),
        });
    }
    let nodes = nodes::read(objects, options, &mut findings)?;
    let model = InfraModel {
        services,
        network_latency: Distribution::Constant { s: 0.0005 },
        quotas,
        nodes,
        eviction_s: options.eviction_s.unwrap_or(300.0),
    };
    model.check()?;
    Ok((model, findings))
}

fn autoscalers(
    objects: &Objects,
    wanted: &dyn Fn(&Option<String>) -> bool,
    workloads: &[Workload],
    services: &mut [ServiceModel],
    findings: &mut Vec<Finding>,
) {
    for h in objects
        .autoscalers
        .iter()
        .filter(|h| wanted(&h.metadata.namespace))
    {
        let ns = h
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let object = format!(
            "HorizontalPodAutoscaler {ns}/{}",
            h.metadata.name.as_deref().unwrap_or("?")
        );
        let Some(spec) = &h.spec else { continue };
        let target = &spec.scale_target_ref;
        let Some(i) = workloads
            .iter()
            .position(|w| w.namespace == ns && w.name == target.name && w.kind == target.kind)
        else {
            findings.push(Finding {
                object,
                support: Support::NotSimulated,
                message: format!(
                    "scales {} {}, which is not in the topology",
                    target.kind, target.name
                ),
            });
            continue;
        };
        let mut cpu_target = None;
        for m in spec.metrics.iter().flatten() {
            match &m.resource {
                Some(r) if r.name == "cpu" && r.target.type_ == "Utilization" => {
                    cpu_target = r.target.average_utilization.map(f64::from);
                }
                _ => findings.push(Finding {
                    object: object.clone(),
                    support: Support::NotSimulated,
                    message: format!(
                        "a {} metric is not simulated; it scales on CPU utilization only",
                        m.type_
                    ),
                }),
            }
        }
        let none_named = spec.metrics.as_ref().is_none_or(|m| m.is_empty());
        let Some(cpu) = cpu_target.or(none_named.then_some(DEFAULT_CPU_TARGET)) else {
            continue;
        };
        if spec.behavior.is_some() {
            findings.push(Finding { object: object.clone(), support: Support::Approximated, message: "its behavior (scaling policies) is not simulated: the default 5-minute scale-down window applies".into() });
        }
        let min = spec.min_replicas.unwrap_or(1).max(1) as u32;
        services[i].autoscale = Some(Autoscale {
            min_replicas: min,
            max_replicas: (spec.max_replicas.max(1) as u32).max(min),
            target_cpu_percent: cpu,
        });
        if workloads[i].cpu_request.is_none() {
            findings.push(Finding {
                object,
                support: Support::Approximated,
                message: format!(
                    "{} has no CPU request: utilization is measured against a core per worker",
                    workloads[i].name
                ),
            });
        }
    }
}

fn network_policies(
    objects: &Objects,
    wanted: &dyn Fn(&Option<String>) -> bool,
    workloads: &[Workload],
    services: &mut [ServiceModel],
    findings: &mut Vec<Finding>,
) {
    // Per workload: None until a policy selects it; then the callers let in
    // (None inside: everyone).
    let mut allowed: Vec<Option<Option<Vec<usize>>>> = vec![None; workloads.len()];
    for p in objects
        .network_policies
        .iter()
        .filter(|p| wanted(&p.metadata.namespace))
    {
        let ns = p
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let object = format!(
            "NetworkPolicy {ns}/{}",
            p.metadata.name.as_deref().unwrap_or("?")
        );
        let Some(spec) = &p.spec else { continue };
        let types = spec.policy_types.clone().unwrap_or_else(|| {
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.is_some() {
                t.push("Egress".into());
            }
            t
        });
        if types.iter().any(|t| t == "Egress") {
            findings.push(Finding {
                object: object.clone(),
                support: Support::NotSimulated,
                message: "egress rules are not simulated (ingress rules are)".into(),
            });
        }
        if !types.iter().any(|t| t == "Ingress") {
            continue;
        }
        let empty = LabelSelector::default();
        let selector = spec.pod_selector.as_ref().unwrap_or(&empty);
        let selected: Vec<usize> = (0..workloads.len())
            .filter(|&i| workloads[i].namespace == ns && selects(selector, &workloads[i].labels))
            .collect();
        // Who this policy lets in: None is everyone.
        let mut from: Option<Vec<usize>> = Some(Vec::new());
        for rule in spec.ingress.iter().flatten() {
            if rule.ports.is_some() {
                findings.push(Finding {
                    object: object.clone(),
                    support: Support::Approximated,
                    message: "ports are not simulated: a rule lets its peers in on every port"
                        .into(),
                });
            }
            let peers = rule.from.as_deref().unwrap_or_default();
            if peers.is_empty() {
                from = None;
                break;
            }
            for peer in peers {
                if peer.ip_block.is_some() {
                    findings.push(Finding { object: object.clone(), support: Support::NotSimulated, message: "ipBlock peers are outside the twin; traffic entering the system is not filtered".into() });
                    continue;
                }
                let namespaces: Option<Vec<String>> = match &peer.namespace_selector {
                    None => Some(vec![ns.clone()]),
                    Some(sel) => {
                        let names: Vec<String> = sel
                            .match_labels
                            .iter()
                            .flatten()
                            .filter(|(k, _)| k.as_str() == "kubernetes.io/metadata.name")
                            .map(|(_, v)| v.clone())
                            .collect();
                        let other = sel
                            .match_labels
                            .as_ref()
                            .is_some_and(|m| m.len() > names.len())
                            || sel.match_expressions.is_some();
                        if other {
                            findings.push(Finding { object: object.clone(), support: Support::Approximated, message: "a namespaceSelector on labels other than kubernetes.io/metadata.name is taken as every namespace".into() });
                            None
                        } else if names.is_empty() {
                            None
                        } else {
                            Some(names)
                        }
                    }
                };
                let pod_selector = peer.pod_selector.as_ref().unwrap_or(&empty);
                let peers = (0..workloads.len()).filter(|&i| {
                    namespaces
                        .as_ref()
                        .is_none_or(|n| n.contains(&workloads[i].namespace))
                        && selects(pod_selector, &workloads[i].labels)
                });
                if let Some(list) = from.as_mut() {
                    list.extend(peers);
                }
            }
        }
        for i in selected {
            let entry = allowed[i].get_or_insert(Some(Vec::new()));
            match (entry.as_mut(), &from) {
                (Some(list), Some(more)) => list.extend(more.iter().copied()),
                _ => *entry = None,
            }
        }
    }
    for (i, a) in allowed.into_iter().enumerate() {
        if let Some(Some(mut callers)) = a {
            callers.sort_unstable();
            callers.dedup();
            services[i].ingress_from = Some(
                callers
                    .into_iter()
                    .map(|c| workloads[c].name.clone())
                    .collect(),
            );
        }
    }
}

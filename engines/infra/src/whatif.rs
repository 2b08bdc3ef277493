//! What-if variants: a twin's topology with a patch (more replicas, another
//! CPU limit, a new NetworkPolicy), run on the same traffic as the twin
//! itself so that the two can be set side by side.

use crate::kubernetes::Objects;
use crate::{InfraError, InfraModel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Changes to a topology. Kubernetes objects come first (they are what the
/// model is read from), then the per-service values, which win. (Part of a
/// patched simulation's saved state: no field is skipped when written.)
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyPatch {
    /// Replicas per service (a Deployment's `spec.replicas`). An
    /// autoscaler's bounds widen to take it in, so the service starts
    /// with at least this many.
    #[serde(default)]
    #[schema(example = json!({"api": 6}))]
    pub replicas: BTreeMap<String, u32>,
    /// Cores one replica may use (its CPU limit), per service.
    #[serde(default)]
    pub cpu_limit: BTreeMap<String, f64>,
    /// Cores one replica asks for (its CPU request), per service: what
    /// the autoscaler's target and the namespace's quota count against.
    #[serde(default)]
    pub cpu_request: BTreeMap<String, f64>,
    /// Requests one replica works on at once, per service.
    #[serde(default)]
    pub workers: BTreeMap<String, u32>,
    /// Kubernetes objects (YAML, documents split by `---`) added to the
    /// topology, each replacing the object of its kind with the same name
    /// (and namespace, when it gives one): a new NetworkPolicy, another
    /// HorizontalPodAutoscaler or ResourceQuota, a changed Deployment.
    #[serde(default)]
    pub manifests: Option<String>,
}

/// A named what-if.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Its name in the comparison and in `twin_experiments`.
    #[schema(example = "api-6")]
    pub name: String,
    pub patch: TopologyPatch,
}

impl TopologyPatch {
    pub fn is_empty(&self) -> bool {
        *self == TopologyPatch::default()
    }

    /// Checks what can be checked without the topology: numbers and the
    /// manifests' objects. `field` prefixes the names in errors.
    pub fn check(&self, field: &str) -> Result<(), InfraError> {
        for (service, n) in &self.workers {
            if *n == 0 {
                return Err(InfraError::invalid(
                    format!("{field}.workers.{service}"),
                    "must be at least 1",
                ));
            }
        }
        for (key, map) in [
            ("cpu_limit", &self.cpu_limit),
            ("cpu_request", &self.cpu_request),
        ] {
            for (service, cores) in map {
                if !(cores.is_finite() && *cores > 0.0) {
                    return Err(InfraError::invalid(
                        format!("{field}.{key}.{service}"),
                        "must be a positive number of cores",
                    ));
                }
            }
        }
        self.objects(field)?;
        Ok(())
    }

    fn objects(&self, field: &str) -> Result<Option<Objects>, InfraError> {
        let at = format!("{field}.manifests");
        self.manifests
            .as_ref()
            .map(|text| {
                Objects::from_manifests(&[(at.clone(), text.clone())]).map_err(|e| {
                    // The field is the key; which document, the message's.
                    let InfraError::Invalid { field, message } = e;
                    match field.strip_prefix(&at) {
                        Some(rest) if !rest.is_empty() => {
                            InfraError::invalid(&at, format!("{}: {message}", rest.trim()))
                        }
                        _ => InfraError::Invalid { field, message },
                    }
                })
            })
            .transpose()
    }

    /// The topology's objects with the patch's added or replacing theirs.
    pub fn patch_objects(&self, objects: &Objects, field: &str) -> Result<Objects, InfraError> {
        let mut patched = objects.clone();
        if let Some(added) = self.objects(field)? {
            patched.merge(added);
        }
        Ok(patched)
    }

    /// Sets the per-service values on a model read from the patched
    /// objects; a service the model lacks is an error naming the key.
    pub fn apply(&self, model: &mut InfraModel, field: &str) -> Result<(), InfraError> {
        let index = |key: &str, service: &str| {
            model.index(service).ok_or_else(|| {
                InfraError::invalid(
                    format!("{field}.{key}.{service}"),
                    format!(
                        "the topology has no service `{service}` (it has {})",
                        model
                            .services
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
        };
        let mut changes: Vec<(usize, Change)> = Vec::new();
        for (s, n) in &self.replicas {
            changes.push((index("replicas", s)?, Change::Replicas(*n)));
        }
        for (s, c) in &self.cpu_limit {
            changes.push((index("cpu_limit", s)?, Change::CpuLimit(*c)));
        }
        for (s, c) in &self.cpu_request {
            changes.push((index("cpu_request", s)?, Change::CpuRequest(*c)));
        }
        for (s, n) in &self.workers {
            changes.push((index("workers", s)?, Change::Workers(*n)));
        }
        for (i, change) in changes {
            let service = &mut model.services[i];
            match change {
                Change::Replicas(n) => {
                    service.replicas = n;
                    if let Some(a) = service.autoscale.as_mut() {
                        a.min_replicas = a.min_replicas.max(n);
                        a.max_replicas = a.max_replicas.max(n);
                    }
                }
                Change::CpuLimit(c) => service.cpu_limit = Some(c),
                Change::CpuRequest(c) => service.cpu_request = Some(c),
                Change::Workers(n) => service.workers = n,
            }
        }
        Ok(())
    }
}

enum Change {
    Replicas(u32),
    CpuLimit(f64),
    CpuRequest(f64),
    Workers(u32),
}

/// Checks a list of variants: each valid, named, and named once, none
/// `taken` (the base run's name).
pub fn check_variants(variants: &[Variant], field: &str, taken: &str) -> Result<(), InfraError> {
    let mut names = std::collections::HashSet::new();
    for (i, v) in variants.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if v.name.is_empty()
            || v.name.chars().count() > 63
            || v.name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(InfraError::invalid(
                format!("{at}.name"),
                "name the variant: 1 to 63 characters, no spaces (e.g. api-6 or api=6,gateway=3)",
            ));
        }
        if v.name == taken {
            return Err(InfraError::invalid(
                format!("{at}.name"),
                format!("`{taken}` is the base run's name; choose another"),
            ));
        }
        if !names.insert(v.name.as_str()) {
            return Err(InfraError::invalid(
                format!("{at}.name"),
                format!("`{}` names two variants", v.name),
            ));
        }
        if v.patch.is_empty() {
            return Err(InfraError::invalid(
                format!("{at}.patch"),
                "changes nothing: give replicas, cpu_limit, cpu_request, workers or manifests",
            ));
        }
        v.patch.check(&format!("{at}.patch"))?;
    }
    Ok(())
}

impl TopologyPatch {
    /// The twin `spec` with this patch, ready to run on `traffic` from
    /// time 0: the base run when the patch is empty.
    pub fn prepare(
        &self,
        spec: &crate::spec::InfraTwinSpec,
        objects: &Objects,
        traffic: crate::TrafficModel,
        seed: Option<u64>,
        field: &str,
    ) -> Result<crate::spec::Prepared, InfraError> {
        let objects = self.patch_objects(objects, field)?;
        spec.prepare_objects(&objects, traffic, seed, |m| self.apply(m, field))
    }
}

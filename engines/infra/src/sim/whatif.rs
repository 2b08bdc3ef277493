//! What-if forks: a running simulation's topology patched, as `kubectl
//! apply` would change a cluster under load.

use super::*;

/// Each service's call targets, and which callers its network policies
/// let in (none: all), by index.
#[allow(clippy::type_complexity)]
pub(super) fn routing(model: &InfraModel) -> (Vec<Vec<usize>>, Vec<Option<Vec<bool>>>) {
    let index = |name: &str| model.index(name);
    let call_targets = model
        .services
        .iter()
        .map(|s| s.calls.iter().filter_map(|c| index(&c.to)).collect())
        .collect();
    let ingress = model
        .services
        .iter()
        .map(|s| {
            s.ingress_from.as_ref().map(|from| {
                let allowed: Vec<usize> = from.iter().filter_map(|f| index(f)).collect();
                (0..model.services.len())
                    .map(|c| allowed.contains(&c))
                    .collect()
            })
        })
        .collect();
    (call_targets, ingress)
}

impl InfraSim {
    /// Changes the running topology, as `kubectl apply` would: `objects`
    /// (the twin's own) with every patch applied so far and `patch`, read
    /// as `spec` reads its topology. It must keep the same services;
    /// replica counts the patch changes scale now (new replicas ready
    /// after their startup, within quota), everything else applies to the
    /// next request. Nothing changes when it is refused.
    pub fn patch(
        &mut self,
        spec: &crate::spec::InfraTwinSpec,
        objects: &crate::kubernetes::Objects,
        patch: crate::TopologyPatch,
        field: &str,
    ) -> Result<(), InfraError> {
        let mut all = self.patches.clone();
        all.push(patch);
        let mut patched = objects.clone();
        for p in &all {
            patched = p.patch_objects(&patched, field)?;
        }
        let (mut model, _) =
            crate::kubernetes::model(&patched, &spec.topology.options, &spec.topology.services)?;
        for p in &all {
            p.apply(&mut model, field)?;
        }
        model.check()?;
        self.reconfigure(model, field)?;
        self.patches = all;
        Ok(())
    }

    /// Runs on `model` from now: the same services, in the same order.
    fn reconfigure(&mut self, model: InfraModel, field: &str) -> Result<(), InfraError> {
        let names = |m: &InfraModel| {
            m.services
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        if names(&model) != names(&self.model) {
            return Err(InfraError::invalid(
                field,
                format!(
                    "a running twin's patch may change its services, not add or remove them (it would have {}; it has {})",
                    names(&model).join(", "),
                    names(&self.model).join(", ")
                ),
            ));
        }
        if model
            .services
            .iter()
            .zip(&self.model.services)
            .any(|(a, b)| a.calls != b.calls)
        {
            return Err(InfraError::invalid(
                field,
                "a running twin's patch may not change the calls services make",
            ));
        }
        if model.nodes != self.model.nodes {
            return Err(InfraError::invalid(
                field,
                "a running twin's patch may not change its nodes (replay the variant instead: a replay starts from its own topology)",
            ));
        }
        let old = std::mem::replace(&mut self.model, model);
        (self.call_targets, self.ingress) = routing(&self.model);
        for service in 0..self.model.services.len() {
            let before = &old.services[service];
            let now = self.model.services[service].clone();
            if before.autoscale.is_none() && now.autoscale.is_some() {
                self.schedule(self.now + AUTOSCALE_PERIOD_S, Event::Autoscale { service });
            }
            if let (None, Some(r)) = (before.readiness, now.readiness) {
                self.schedule(self.now + r.period_s, Event::Readiness { service });
            }
            if before.replicas != now.replicas {
                let wanted = now.replicas;
                let current = self.replicas[service]
                    .iter()
                    .filter(|r| !r.terminated)
                    .count() as u32;
                if wanted > current {
                    for _ in 0..self.quota_room(service, wanted - current) {
                        self.add_replica(service);
                    }
                } else {
                    for _ in wanted..current {
                        self.remove_replica(service);
                    }
                }
                let running = self.replicas[service]
                    .iter()
                    .filter(|r| !r.terminated)
                    .count() as u32;
                let stats = &mut self.services[service];
                stats.peak_replicas = stats.peak_replicas.max(running);
            }
        }
        Ok(())
    }
}

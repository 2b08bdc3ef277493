//! The nodes a topology's replicas are scheduled onto: pools written in
//! the definition, and Node objects (`kubectl get nodes -o yaml`, or a
//! live cluster's list) with `include_nodes`.

use super::*;

/// The nodes replicas are scheduled onto: the definition's pools, then
/// the Node objects read (with `include_nodes`), schedulable ones only.
pub(super) fn read(
    objects: &Objects,
    options: &TopologyOptions,
    findings: &mut Vec<Finding>,
) -> Result<Vec<NodeModel>, InfraError> {
    let mut nodes = Vec::new();
    for (i, pool) in options.nodes.iter().enumerate() {
        let field = |f: &str| format!("topology.nodes[{i}].{f}");
        let cpu = cpu_cores(&pool.cpu.text())
            .filter(|c| *c > 0.0)
            .ok_or_else(|| {
                InfraError::invalid(
                    field("cpu"),
                    format!(
                        "`{}` is not a CPU quantity such as 4 or 3500m",
                        pool.cpu.text()
                    ),
                )
            })?;
        let memory_mib = memory_mib(&pool.memory.text())
            .filter(|m| *m > 0.0)
            .ok_or_else(|| {
                InfraError::invalid(
                    field("memory"),
                    format!(
                        "`{}` is not a memory quantity such as 16Gi",
                        pool.memory.text()
                    ),
                )
            })?;
        let count = pool.count.unwrap_or(1);
        if count == 0 || pool.pods == Some(0) {
            return Err(InfraError::invalid(
                field(if count == 0 { "count" } else { "pods" }),
                "must be at least 1",
            ));
        }
        for n in 0..count {
            nodes.push(NodeModel {
                name: match pool.count {
                    Some(_) => format!("{}-{n}", pool.name),
                    None => pool.name.clone(),
                },
                cpu,
                memory_mib,
                pods: pool.pods.unwrap_or(110),
            });
        }
    }
    for node in &objects.nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let object = format!("Node {name}");
        if !options.include_nodes {
            findings.push(Finding {
                object,
                support: Support::NotSimulated,
                message: "nodes are modelled with topology.include_nodes: true".into(),
            });
            continue;
        }
        let spec = node.spec.clone().unwrap_or_default();
        let skip = if spec.unschedulable == Some(true) {
            Some("cordoned (unschedulable): no replica is placed on it".to_string())
        } else {
            spec.taints
                .iter()
                .flatten()
                .find(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .map(|t| format!("tainted {}:{}; the twin reads no tolerations, so no replica is placed on it", t.key, t.effect))
        };
        if let Some(message) = skip {
            findings.push(Finding {
                object,
                support: Support::Approximated,
                message,
            });
            continue;
        }
        let status = node.status.clone().unwrap_or_default();
        let amount = |key: &str| {
            status
                .allocatable
                .as_ref()
                .and_then(|a| a.get(key))
                .or_else(|| status.capacity.as_ref().and_then(|c| c.get(key)))
                .map(|q| q.0.clone())
        };
        let (Some(cpu), Some(memory)) = (
            amount("cpu").and_then(|c| cpu_cores(&c)),
            amount("memory").and_then(|m| memory_mib(&m)),
        ) else {
            return Err(InfraError::invalid(
                &object,
                "has no status.allocatable (or capacity) cpu and memory: export nodes with kubectl get nodes -o yaml",
            ));
        };
        nodes.push(NodeModel {
            name,
            cpu,
            memory_mib: memory,
            pods: amount("pods").and_then(|p| p.parse().ok()).unwrap_or(110),
        });
    }
    if options.include_nodes && nodes.is_empty() {
        return Err(InfraError::invalid(
            "topology.include_nodes",
            "no schedulable Node among the objects read and no topology.nodes",
        ));
    }
    Ok(nodes)
}

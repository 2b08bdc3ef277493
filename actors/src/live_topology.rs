//! Infrastructure twins whose topology is a live cluster
//! (`topology.source: kubernetes`): the node reads the cluster once, when
//! the twin is created or its topology changes, and keeps the objects in
//! the definition (`topology.snapshot`). The twin runs on that snapshot, so
//! a restart, a fork or a move to another node sees the same topology
//! however the cluster has changed since; writing the topology again reads
//! the cluster again.

use crate::definition::TwinDefinition;
use crate::error::TwinError;
use crate::store::BoxFuture;
use hanzo_twin_engines::infra::spec::{TopologySnapshot, TopologySource};

/// Reads a live cluster; the node's runtime provides it when built with a
/// Kubernetes client.
pub trait LiveTopology: Send + Sync + 'static {
    /// The objects of `namespaces` (all, when empty) in the cluster of
    /// kubeconfig context `cluster` (or the one inferred), and its Nodes
    /// with `include_nodes`, with where and when they were read.
    fn snapshot(
        &self,
        cluster: Option<String>,
        namespaces: Vec<String>,
        include_nodes: bool,
    ) -> BoxFuture<'static, Result<TopologySnapshot, String>>;
}

/// What a node without a Kubernetes client says to a live topology.
const NO_CLIENT: &str = "this node was built without a Kubernetes client, so it cannot read a live cluster \
     (build hanzo-twin with --features kubernetes, as the container image is); or export the objects \
     (kubectl get deploy,sts,svc,hpa,resourcequota,networkpolicy,pdb -n <namespace> -o yaml) \
     into topology.manifests with source: manifests";

async fn read(
    reader: Option<&dyn LiveTopology>,
    cluster: Option<String>,
    namespaces: Vec<String>,
    include_nodes: bool,
) -> Result<TopologySnapshot, TwinError> {
    let reader = reader.ok_or_else(|| TwinError::invalid("topology.source", NO_CLIENT))?;
    let field = if cluster.is_some() {
        "topology.cluster"
    } else {
        "topology"
    };
    reader
        .snapshot(cluster, namespaces, include_nodes)
        .await
        .map_err(|e| TwinError::invalid(field, e))
}

/// A new twin's definition with its live cluster read, when its topology
/// is one and carries no snapshot yet (a definition exported from a twin
/// keeps the topology it ran on).
pub async fn on_create(
    mut definition: TwinDefinition,
    reader: Option<&dyn LiveTopology>,
) -> Result<TwinDefinition, TwinError> {
    if let Some(infra) = definition.infrastructure.as_mut()
        && infra.topology.source == TopologySource::Kubernetes
        && infra.topology.snapshot.is_none()
    {
        let (cluster, namespaces, nodes) = (
            infra.topology.cluster.clone(),
            infra.topology.options.namespaces.clone(),
            infra.topology.options.include_nodes,
        );
        infra.topology.snapshot = Some(read(reader, cluster, namespaces, nodes).await?);
    }
    Ok(definition)
}

/// A merge patch of `current` that writes its topology: when the topology
/// it makes is a live cluster's, the cluster is read again and the patch
/// carries the new snapshot (unless it gives one itself).
pub async fn on_update(
    current: &TwinDefinition,
    mut patch: serde_json::Value,
    reader: Option<&dyn LiveTopology>,
) -> Result<serde_json::Value, TwinError> {
    let Some(topology_patch) = patch.get("topology") else {
        return Ok(patch);
    };
    if topology_patch.get("snapshot").is_some_and(|s| !s.is_null()) {
        return Ok(patch);
    }
    let mut merged = current.to_value();
    json_patch::merge(&mut merged, &patch);
    let topology = &merged["topology"];
    if topology["source"] != "kubernetes" {
        return Ok(patch);
    }
    let cluster = topology["cluster"].as_str().map(str::to_string);
    let namespaces = topology["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    let nodes = topology["include_nodes"].as_bool().unwrap_or(false);
    let snapshot = read(reader, cluster, namespaces, nodes).await?;
    let snapshot = serde_json::to_value(snapshot)
        .map_err(|e| TwinError::Storage(format!("cannot write the topology snapshot: {e}")))?;
    if let Some(t) = patch.get_mut("topology").and_then(|t| t.as_object_mut()) {
        t.insert("snapshot".into(), snapshot);
    }
    Ok(patch)
}

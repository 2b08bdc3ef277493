//! An infrastructure twin's topology read from a live cluster
//! (`topology.source: kubernetes`) through kube-rs: the kubeconfig context
//! named by `topology.cluster` (or, without one, the context kube-rs infers:
//! `$KUBECONFIG`, `~/.kube/config`, or the pod's service account), and in
//! each listed namespace the Deployments, StatefulSets, Services,
//! HorizontalPodAutoscalers, ResourceQuotas, NetworkPolicies and
//! PodDisruptionBudgets, as the API server gives them, and the cluster's
//! Nodes with `include_nodes`. They become the same objects manifests give
//! (`hanzo_twin_infra::kubernetes::Objects`).

use anyhow::Context;
use hanzo_twin_infra::kubernetes::Objects;
use hanzo_twin_infra::spec::TopologySnapshot;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::config::KubeConfigOptions;

/// Reads the topology's objects from the cluster.
pub async fn read(
    cluster: Option<&str>,
    namespaces: &[String],
    include_nodes: bool,
) -> anyhow::Result<Objects> {
    read_from(cluster, namespaces, include_nodes)
        .await
        .map(|(objects, _)| objects)
}

/// A node's reader of live clusters: a twin's topology snapshot, taken when
/// the twin is created or its topology written.
pub struct KubeTopology;

impl hanzo_twin_actors::live_topology::LiveTopology for KubeTopology {
    fn snapshot(
        &self,
        cluster: Option<String>,
        namespaces: Vec<String>,
        include_nodes: bool,
    ) -> hanzo_twin_actors::store::BoxFuture<'static, Result<TopologySnapshot, String>> {
        Box::pin(async move {
            let (objects, server) = read_from(cluster.as_deref(), &namespaces, include_nodes)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(TopologySnapshot {
                read_at: chrono::Utc::now().to_rfc3339(),
                server,
                manifests: objects.to_manifests().map_err(|e| e.to_string())?,
            })
        })
    }
}

/// The objects, and the API server they came from.
async fn read_from(
    cluster: Option<&str>,
    namespaces: &[String],
    include_nodes: bool,
) -> anyhow::Result<(Objects, String)> {
    let config = match cluster {
        Some(context) => kube::Config::from_kubeconfig(&KubeConfigOptions {
            context: Some(context.to_string()),
            ..KubeConfigOptions::default()
        })
        .await
        .with_context(|| {
            format!("topology.cluster: no usable kubeconfig context `{context}` (KUBECONFIG or ~/.kube/config)")
        })?,
        None => kube::Config::infer()
            .await
            .context("topology: no cluster found (set topology.cluster to a kubeconfig context)")?,
    };
    let server = config.cluster_url.to_string();
    let client =
        kube::Client::try_from(config).context("topology: cannot make a Kubernetes client")?;
    let mut objects = Objects::default();
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for ns in scopes {
        list::<Deployment>(&client, ns, &server, &mut objects).await?;
        list::<StatefulSet>(&client, ns, &server, &mut objects).await?;
        list::<Service>(&client, ns, &server, &mut objects).await?;
        list::<HorizontalPodAutoscaler>(&client, ns, &server, &mut objects).await?;
        list::<ResourceQuota>(&client, ns, &server, &mut objects).await?;
        list::<NetworkPolicy>(&client, ns, &server, &mut objects).await?;
        list::<PodDisruptionBudget>(&client, ns, &server, &mut objects).await?;
    }
    if include_nodes {
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .with_context(|| format!("topology: listing Nodes at {server}"))?;
        for (i, node) in nodes.items.into_iter().enumerate() {
            push(&mut objects, &server, "all nodes", i, node)?;
        }
    }
    Ok((objects, server))
}

/// Adds a listed object, with the kind and apiVersion the API server's list
/// items leave out (k8s-openapi's types write theirs, and ours reads it).
fn push<K: k8s_openapi::Resource + serde::Serialize>(
    objects: &mut Objects,
    server: &str,
    where_: &str,
    i: usize,
    item: K,
) -> anyhow::Result<()> {
    let kind = K::KIND;
    let mut value = serde_json::to_value(&item).context("a listed object")?;
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), kind.into());
        map.insert("apiVersion".into(), K::API_VERSION.into());
    }
    objects
        .push(&format!("{server} {kind} list ({where_}) item {i}"), value)
        .map_err(anyhow::Error::from)
}

async fn list<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    server: &str,
    objects: &mut Objects,
) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    <K as kube::Resource>::DynamicType: Default,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let where_ = namespace.map_or("all namespaces".to_string(), |ns| format!("namespace {ns}"));
    let kind = <K as k8s_openapi::Resource>::KIND;
    let list = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("topology: listing {kind}s in {where_} at {server}"))?;
    for (i, item) in list.items.into_iter().enumerate() {
        push(objects, server, &where_, i, item)?;
    }
    Ok(())
}

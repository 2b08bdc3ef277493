//! The demo shop's manifests (configs/infra/shop) as a model: workloads,
//! Services as the names callers use, the HPA, the quota and the network
//! policy, each doing in the simulation what it does in a cluster; what is
//! not simulated is listed; bad manifests are refused by file and field.

use hanzo_twin_infra::kubernetes::{self, Behaviour, Objects, Support, TopologyOptions};
use hanzo_twin_infra::model::{EntryTraffic, RateProfile, RateStep};
use hanzo_twin_infra::{CallModel, Distribution, Fault, FaultAction, InfraSim, TrafficModel};
use std::collections::BTreeMap;

fn manifests() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/infra/shop");
    ["apps.yaml", "database.yaml"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).expect("the demo manifests");
            (f.to_string(), text)
        })
        .collect()
}

fn call(to: &str, probability: f64, timeout_s: f64) -> CallModel {
    CallModel {
        to: to.into(),
        probability,
        timeout_s: Some(timeout_s),
        retries: 0,
        required: true,
        circuit_breaker: None,
    }
}

fn behaviour() -> BTreeMap<String, Behaviour> {
    let mut b = BTreeMap::new();
    b.insert(
        "gateway".to_string(),
        Behaviour {
            service_time: Some(Distribution::Exponential { mean_s: 0.001 }),
            workers: Some(64),
            calls: vec![call("api", 1.0, 2.0)],
            ..Behaviour::default()
        },
    );
    b.insert(
        "api".to_string(),
        Behaviour {
            service_time: Some(Distribution::Exponential { mean_s: 0.02 }),
            workers: Some(8),
            calls: vec![
                CallModel {
                    required: false, // a cache miss goes on to the database
                    ..call("redis", 1.0, 0.05)
                },
                call("postgres-rw", 0.3, 1.0),
            ],
            ..Behaviour::default()
        },
    );
    b.insert(
        "redis".to_string(),
        Behaviour {
            service_time: Some(Distribution::Constant { s: 0.0002 }),
            workers: Some(16),
            ..Behaviour::default()
        },
    );
    b
}

fn options(policies: bool, quotas: bool) -> TopologyOptions {
    TopologyOptions {
        namespaces: vec!["shop".into()],
        include_network_policies: policies,
        include_resource_quotas: quotas,
        ..TopologyOptions::default()
    }
}

#[test]
fn the_shops_manifests_become_services_with_their_kubernetes_settings() {
    let objects = Objects::from_manifests(&manifests()).expect("valid manifests");
    let (model, findings) =
        kubernetes::model(&objects, &options(true, true), &behaviour()).expect("a model");
    let names: Vec<&str> = model.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["gateway", "api", "cache", "postgres", "postgres-replica"]
    );
    let api = model.service("api").expect("api");
    assert_eq!((api.replicas, api.workers), (3, 8));
    // Both containers' CPU: 500m + 50m requested, 1 + 0.1 limit.
    assert!(
        (api.cpu_request.unwrap_or(0.0) - 0.55).abs() < 1e-9,
        "{api:?}"
    );
    assert!((api.cpu_limit.unwrap_or(0.0) - 1.1).abs() < 1e-9, "{api:?}");
    let scale = api.autoscale.expect("the HPA");
    assert_eq!((scale.min_replicas, scale.max_replicas), (3, 12));
    assert_eq!(scale.target_cpu_percent, 70.0);
    // Services are the names callers use.
    assert_eq!(
        model.service("redis").map(|s| s.name.as_str()),
        Some("cache")
    );
    assert_eq!(
        model
            .service("service/postgres-rw")
            .map(|s| s.name.as_str()),
        Some("postgres")
    );
    // Only the API may reach either database.
    for db in ["postgres", "postgres-replica"] {
        assert_eq!(
            model.service(db).and_then(|s| s.ingress_from.clone()),
            Some(vec!["api".to_string()])
        );
    }
    assert_eq!(model.quotas.len(), 1);
    assert_eq!(model.quotas[0].cpu_requests, Some(10.0));
    assert_eq!(model.quotas[0].pods, Some(20));
    // What is not simulated, or assumed, is said.
    let said = |object: &str, support: Support, words: &str| {
        findings
            .iter()
            .any(|f| f.object == object && f.support == support && f.message.contains(words))
    };
    assert!(
        said(
            "ConfigMap shop/api-settings",
            Support::NotSimulated,
            "not part"
        ),
        "{findings:#?}"
    );
    assert!(
        said(
            "PodDisruptionBudget shop/api",
            Support::NotSimulated,
            "evictions"
        ),
        "{findings:#?}"
    );
    assert!(
        said(
            "StatefulSet shop/postgres",
            Support::Assumed,
            "service_time"
        ),
        "{findings:#?}"
    );
    assert_eq!(
        model.service("cache").map(|c| c.workers),
        Some(16),
        "behaviour by Service name"
    );
    assert!(
        said(
            "ResourceQuota shop/shop",
            Support::NotSimulated,
            "requests.memory"
        ),
        "{findings:#?}"
    );
    assert!(
        said(
            "NetworkPolicy shop/postgres-from-api",
            Support::Approximated,
            "ports"
        ),
        "{findings:#?}"
    );

    // Left out when not asked for.
    let (bare, _) =
        kubernetes::model(&objects, &options(false, false), &behaviour()).expect("a model");
    assert!(bare.services.iter().all(|s| s.ingress_from.is_none()) && bare.quotas.is_empty());
    // Another namespace has nothing.
    let elsewhere = TopologyOptions {
        namespaces: vec!["billing".into()],
        ..options(true, true)
    };
    let e = kubernetes::model(&objects, &elsewhere, &BTreeMap::new())
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.starts_with("topology")));
}

fn traffic(steps: Vec<RateStep>) -> TrafficModel {
    TrafficModel {
        entries: vec![EntryTraffic {
            service: "gateway".into(),
            rate: RateProfile::Steps { steps },
        }],
    }
}

#[test]
fn the_network_policy_drops_calls_from_anyone_but_the_api() {
    let objects = Objects::from_manifests(&manifests()).expect("valid manifests");
    let mut b = behaviour();
    // The gateway also calls the database directly, which the policy forbids.
    if let Some(gateway) = b.get_mut("gateway") {
        gateway.calls.push(call("postgres-ro", 1.0, 0.5));
    }
    let (model, _) = kubernetes::model(&objects, &options(true, false), &b).expect("a model");
    let steps = vec![RateStep {
        at_s: 0.0,
        rps: 50.0,
    }];
    let mut sim = InfraSim::new(model, traffic(steps), Vec::new(), 1).expect("valid");
    sim.run_until(60.0);
    let r = sim.report();
    let replica = r.service("postgres-replica").expect("replica");
    assert_eq!(replica.arrivals, 0, "nothing gets through");
    let gateway = r.service("gateway").expect("gateway");
    assert!(gateway.call_timeouts > 2_500, "{gateway:?}");
    // The API's calls to the primary do get through.
    assert!(r.service("postgres").expect("postgres").ok > 500);
}

#[test]
fn the_autoscaler_follows_load_within_the_quota_and_scales_down_after_its_window() {
    let objects = Objects::from_manifests(&manifests()).expect("valid manifests");
    // Load steps up (9 api cores of work wanted) and back down.
    let steps = vec![
        RateStep {
            at_s: 0.0,
            rps: 20.0,
        },
        RateStep {
            at_s: 120.0,
            rps: 450.0,
        },
        RateStep {
            at_s: 720.0,
            rps: 20.0,
        },
    ];
    let run = |quotas: bool, until: f64| {
        let (model, _) =
            kubernetes::model(&objects, &options(false, quotas), &behaviour()).expect("a model");
        let mut sim = InfraSim::new(model, traffic(steps.clone()), Vec::new(), 2).expect("valid");
        sim.run_until(until);
        sim.report()
    };
    // Up to the HPA's maximum without the quota...
    let free = run(false, 700.0);
    let api = free.service("api").expect("api");
    assert_eq!(api.peak_replicas, 12, "{api:?}");
    // ...and only as far as the quota's 10 cores of requests allow with it:
    // 5.65 cores are taken, room for 7 more 0.55-core replicas.
    let capped = run(true, 700.0);
    assert_eq!(capped.service("api").expect("api").peak_replicas, 10);
    // Load gone at 720 s: still scaled up within the 5-minute window, back
    // to the minimum after it.
    assert!(run(true, 900.0).service("api").expect("api").replicas >= 10);
    assert_eq!(run(true, 1200.0).service("api").expect("api").replicas, 3);
    // A pod killed meanwhile is replaced (the count holds).
    let (model, _) =
        kubernetes::model(&objects, &options(false, true), &behaviour()).expect("a model");
    let kill = Fault {
        name: "pod-kill".into(),
        target: "deployment/api".into(),
        action: FaultAction::KillPod { count: 2 },
        at_s: 60.0,
        duration_s: None,
    };
    let mut sim = InfraSim::new(model, traffic(steps), vec![kill], 2).expect("valid");
    sim.run_until(100.0);
    assert_eq!(sim.report().service("api").expect("api").replicas, 3);
}

#[test]
fn bad_manifests_are_refused_naming_the_file_and_what_is_wrong() {
    let refused = |text: &str| {
        Objects::from_manifests(&[("bad.yaml".into(), text.into())])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = refused("apiVersion: apps/v1\nmetadata: {name: x}\n");
    assert!(
        e.starts_with("bad.yaml (document 1)") && e.contains("kind"),
        "{e}"
    );
    let e = refused(
        "---\nkind: Service\napiVersion: v1\nmetadata: {name: a}\n---\nkind: Deployment\napiVersion: apps/v1\nspec: {replicas: many}\n",
    );
    assert!(e.starts_with("bad.yaml (document 2)"), "{e}");
    let e = refused("key: [unclosed");
    assert!(e.contains("not YAML"), "{e}");
    // A CPU quantity that is not one.
    let objects = Objects::from_manifests(&[(
        "cpu.yaml".into(),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, resources: {limits: {cpu: lots}}}]\n".into(),
    )])
    .expect("reads");
    let e = kubernetes::model(&objects, &TopologyOptions::default(), &BTreeMap::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("container c") && e.contains("lots"), "{e}");
    // Behaviour for a service the topology lacks.
    let objects = Objects::from_manifests(&manifests()).expect("valid manifests");
    let mut b = behaviour();
    b.insert("ghost".into(), Behaviour::default());
    let e = kubernetes::model(&objects, &options(false, false), &b)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("topology.services.ghost"), "{e}");
    assert_eq!(kubernetes::cpu_cores("250m"), Some(0.25));
    assert_eq!(kubernetes::cpu_cores("1.5"), Some(1.5));
    assert_eq!(kubernetes::cpu_cores("-1"), None);
}

/// A live cluster's objects are kept in a twin's definition as YAML (its
/// topology snapshot): written out and read back, they make the same model.
#[test]
fn objects_written_as_manifests_read_back_as_the_same_model() {
    let objects = Objects::from_manifests(&manifests()).expect("the shop");
    let text = objects.to_manifests().expect("YAML");
    let count = objects.deployments.len()
        + objects.stateful_sets.len()
        + objects.services.len()
        + objects.autoscalers.len()
        + objects.quotas.len()
        + objects.network_policies.len()
        + objects.disruption_budgets.len();
    assert!(count >= 10, "{count}");
    assert_eq!(text.matches("\n---\n").count() + 1, count, "{text}");
    let again = Objects::from_manifests(&[("snapshot".into(), text)]).expect("read back");
    let model = |o: &Objects| {
        kubernetes::model(o, &options(true, true), &behaviour())
            .expect("a model")
            .0
    };
    assert_eq!(model(&again), model(&objects));
}

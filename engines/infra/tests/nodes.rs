//! Nodes, scheduling and failover: replicas placed on nodes by their
//! requests, Pending while none has room, a stopped node's pods evicted and
//! replaced on the nodes left (a StatefulSet's waiting for their node), and
//! a database's standby promoted by its failover manager.

use hanzo_twin_infra::fault::{Fault, FaultAction};
use hanzo_twin_infra::kubernetes::{self, Objects, Support, TopologyOptions};
use hanzo_twin_infra::model::{Distribution, InfraModel, NodeModel, ServiceModel, TrafficModel};
use hanzo_twin_infra::report::Report;
use hanzo_twin_infra::spec::InfraTwinSpec;
use hanzo_twin_infra::{InfraSim, Verdict};
use std::collections::BTreeMap;
use std::path::Path;

fn demo() -> (InfraTwinSpec, std::path::PathBuf) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/twins/shop-nodes.yaml");
    let spec =
        InfraTwinSpec::parse(&std::fs::read_to_string(&file).expect("the demo")).expect("valid");
    (spec, file.parent().expect("a folder").to_path_buf())
}

/// Every node holds no more than it can allocate.
fn within_capacity(report: &Report) {
    for n in &report.nodes {
        assert!(
            n.cpu_requested <= n.cpu + 1e-9 && n.memory_requested_mib <= n.memory_mib + 1e-9,
            "{n:?}"
        );
    }
}

/// The demo run to each of `times`, its report at each, and its verdicts.
fn run_demo(failover: bool, times: &[f64]) -> (Vec<Report>, Vec<Verdict>) {
    let (spec, base) = demo();
    let mut p = spec
        .prepare(&base, spec.traffic().expect("traffic"), None, |m| {
            if !failover {
                m.services.iter_mut().for_each(|s| s.failover = None);
            }
            Ok(())
        })
        .expect("prepared");
    let mut reports = Vec::new();
    for &t in times {
        p.sim.run_until(t);
        let report = p.sim.report();
        within_capacity(&report);
        reports.push(report);
    }
    p.sim.run_until(p.duration_s);
    (reports, p.sim.verdicts())
}

#[test]
fn a_stopped_nodes_pods_are_replaced_on_the_nodes_left_and_the_standby_takes_over() {
    // node-0 (the PostgreSQL primary, a gateway and an API pod on it) stops
    // at 600 s for ten minutes; its pods are evicted 340 s later.
    let (reports, verdicts) = run_demo(true, &[599.0, 601.0, 950.0, 1300.0]);
    let [before, stopped, evicted, back] = &reports[..] else {
        unreachable!("four times")
    };
    let node = |r: &Report, name: &str| {
        r.nodes
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(before.nodes.len(), 3);
    assert!(before.nodes.iter().all(|n| n.ready));
    assert!(before.services.iter().all(|s| s.pending == 0));
    let placed_on_0 = node(before, "node-0").pods;
    assert!(placed_on_0 >= 3, "{:?}", before.nodes);
    assert!(!node(stopped, "node-0").ready);
    // Evicted: the Deployments' pods left node-0 (only the StatefulSet's
    // stays bound to it); one API pod found no room and waits.
    let evictions: u64 = evicted.services.iter().map(|s| s.evictions).sum();
    assert_eq!(
        u64::from(placed_on_0) - 1,
        evictions,
        "{:#?}",
        evicted.services
    );
    assert_eq!(node(evicted, "node-0").pods, 1);
    assert_eq!(evicted.service("postgres").expect("postgres").evictions, 0);
    assert_eq!(evicted.service("api").expect("api").pending, 1);
    // Back at 1200 s: the waiting pod takes the room.
    assert!(node(back, "node-0").ready && node(back, "node-0").pods == 2);
    assert!(back.services.iter().all(|s| s.pending == 0));
    // The failover: 10 s to notice, 3 s to promote; from then on
    // postgres-rw leads to the replica, and the old primary gets nothing.
    let pg = back.service("postgres").expect("postgres");
    assert_eq!(
        (pg.failovers, pg.serving.as_deref()),
        (1, Some("postgres-replica"))
    );
    let pg_then = stopped.service("postgres").expect("postgres").arrivals;
    assert!(pg.arrivals - pg_then < 2_000, "{pg_then} → {}", pg.arrivals);
    let passed: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
    assert_eq!(passed, [true, true, true], "{verdicts:#?}");
    assert_eq!(verdicts[0].evidence.recovery_s, Some(13.0));
    assert!(
        verdicts[0]
            .reason
            .starts_with("postgres-replica took over 13.0 s"),
        "{}",
        verdicts[0].reason
    );

    // Without a failover manager, the primary's pod waits for its node
    // (ten minutes) and its startup: the assertion fails, and the
    // gateway's error rate with it.
    let (reports, verdicts) = run_demo(false, &[1300.0]);
    let pg = reports[0].service("postgres").expect("postgres");
    assert_eq!((pg.failovers, pg.serving.as_deref()), (0, None));
    let passed: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
    assert_eq!(passed, [false, false, true], "{verdicts:#?}");
    assert_eq!(verdicts[0].evidence.recovery_s, Some(645.0));
    assert!(
        verdicts[0].reason.contains("no standby promoted"),
        "{}",
        verdicts[0].reason
    );
}

/// `web`: `replicas` pods of one core each on two nodes of two cores.
fn two_small_nodes(replicas: u32, stateful: bool, stop: Fault) -> InfraSim {
    let web = ServiceModel {
        replicas,
        workers: 4,
        cpu_request: Some(1.0),
        memory_request_mib: Some(512.0),
        stateful,
        ..ServiceModel::new("web", Distribution::Exponential { mean_s: 0.01 })
    };
    let node = |name: &str| NodeModel {
        name: name.into(),
        cpu: 2.0,
        memory_mib: 8192.0,
        pods: 110,
    };
    let model = InfraModel {
        services: vec![web],
        network_latency: Distribution::Constant { s: 0.0005 },
        quotas: Vec::new(),
        nodes: vec![node("a"), node("b")],
        eviction_s: 300.0,
    };
    InfraSim::new(model, TrafficModel::default(), vec![stop], 1).expect("a valid model")
}

fn stop(node: &str, at_s: f64, duration_s: f64) -> Fault {
    Fault {
        name: "node-stop".into(),
        target: format!("node/{node}"),
        action: FaultAction::StopNode,
        at_s,
        duration_s: Some(duration_s),
    }
}

/// (ready-or-starting replicas not pending, pending, evictions) of `web`.
fn web(sim: &InfraSim) -> (u32, u32, u64) {
    let r = sim.report();
    within_capacity(&r);
    let w = r.service("web").expect("web");
    (w.replicas - w.pending, w.pending, w.evictions)
}

#[test]
fn replicas_wait_pending_for_room_and_take_it_when_a_node_returns() {
    // Five one-core replicas, four cores: one waits from the start.
    let mut sim = two_small_nodes(5, false, stop("a", 20.0, 1000.0));
    sim.run_until(10.0);
    assert_eq!(web(&sim), (4, 1, 0));
    // Node a stops: its two pods die, and stay bound to it until evicted
    // (20 + 40 + 300 s), then wait with the first: b is full.
    sim.run_until(359.0);
    assert_eq!(web(&sim), (4, 1, 0));
    sim.run_until(361.0);
    assert_eq!(web(&sim), (2, 3, 2));
    // Back at 1020 s: two of the three waiting take its room.
    sim.run_until(1040.0);
    assert_eq!(web(&sim), (4, 1, 2));

    // A node back before the eviction timeout gets its own pods again.
    let mut sim = two_small_nodes(4, false, stop("a", 20.0, 60.0));
    sim.run_until(100.0);
    assert_eq!(web(&sim), (4, 0, 0));
    let nodes = sim.report().nodes;
    assert!(nodes.iter().all(|n| n.pods == 2 && n.ready), "{nodes:?}");

    // A StatefulSet's pods are never evicted: they wait for their node.
    let mut sim = two_small_nodes(4, true, stop("a", 20.0, 1000.0));
    sim.run_until(500.0);
    assert_eq!(web(&sim), (4, 0, 0));
    let a = &sim.report().nodes[0];
    assert_eq!((a.ready, a.pods), (false, 2));
}

const NODES: &str = r#"
apiVersion: v1
kind: NodeList
items:
  - metadata: { name: worker-1 }
    status:
      capacity: { cpu: "4", memory: 16Gi, pods: "110" }
      allocatable: { cpu: 3920m, memory: 15Gi, pods: "58" }
  - metadata: { name: worker-2 }
    status:
      capacity: { cpu: "8", memory: 32Gi, pods: "110" }
  - metadata: { name: worker-3 }
    spec: { unschedulable: true }
    status: { allocatable: { cpu: "4", memory: 16Gi } }
  - metadata: { name: control-plane }
    spec: { taints: [{ key: node-role.kubernetes.io/control-plane, effect: NoSchedule }] }
    status: { allocatable: { cpu: "2", memory: 8Gi } }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: shop }
spec:
  replicas: 2
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
        - name: web
          image: nginx
          resources: { requests: { cpu: 500m, memory: 1Gi }, limits: { memory: 2Gi } }
        - name: sidecar
          image: envoy
          resources: { limits: { cpu: 100m, memory: 256Mi } }
"#;

#[test]
fn nodes_exported_by_kubectl_are_read_with_include_nodes() {
    let objects = Objects::from_manifests(&[("nodes.yaml".into(), NODES.into())]).expect("reads");
    assert_eq!(objects.nodes.len(), 4);
    let options = TopologyOptions {
        include_nodes: true,
        ..TopologyOptions::default()
    };
    let (model, findings) =
        kubernetes::model(&objects, &options, &BTreeMap::new()).expect("a model");
    let nodes: Vec<(&str, f64, f64, u32)> = model
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.cpu, n.memory_mib, n.pods))
        .collect();
    // Allocatable where given, capacity where not; cordoned and tainted
    // nodes take nothing, and say so.
    assert_eq!(
        nodes,
        [
            ("worker-1", 3.92, 15.0 * 1024.0, 58),
            ("worker-2", 8.0, 32.0 * 1024.0, 110)
        ]
    );
    for (name, says) in [("worker-3", "cordoned"), ("control-plane", "NoSchedule")] {
        assert!(
            findings
                .iter()
                .any(|f| f.object == format!("Node {name}") && f.message.contains(says)),
            "{findings:#?}"
        );
    }
    // Requests summed over containers, a request defaulting to its limit.
    let web = model.service("web").expect("web");
    assert_eq!(web.cpu_request, Some(0.6));
    assert_eq!(web.memory_request_mib, Some(1024.0 + 256.0));
    assert!(!web.stateful);
    // Without include_nodes the nodes are listed, not modelled.
    let (model, findings) =
        kubernetes::model(&objects, &TopologyOptions::default(), &BTreeMap::new())
            .expect("a model");
    assert!(model.nodes.is_empty());
    assert!(
        findings
            .iter()
            .any(|f| f.object == "Node worker-1" && f.support == Support::NotSimulated)
    );
}

#[test]
fn bad_nodes_failovers_and_node_stops_are_refused_naming_the_field() {
    let (_, base) = demo();
    let demo_text = std::fs::read_to_string(base.join("shop-nodes.yaml")).expect("the demo");
    let prepare = |edit: &dyn Fn(&mut String)| {
        let mut text = demo_text.clone();
        edit(&mut text);
        InfraTwinSpec::parse(&text)
            .and_then(|s| s.prepare(&base, s.traffic()?, None, |_| Ok(())))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = prepare(&|t| *t = t.replace("cpu: 3500m", "cpu: lots"));
    assert!(
        e.starts_with("topology.nodes[0].cpu") && e.contains("lots"),
        "{e}"
    );
    let e = prepare(&|t| *t = t.replace("memory: 16Gi", "memory: 512Mi"));
    assert!(
        e.contains("cpu_request") && e.contains("more than any node can allocate"),
        "{e}"
    );
    let e = prepare(&|t| *t = t.replace("standby: postgres-replica", "standby: postgres-standby"));
    assert!(
        e.contains("failover.standby") && e.contains("postgres-standby"),
        "{e}"
    );
    let e = prepare(&|t| *t = t.replace("node/node-0", "node/node-9"));
    assert!(
        e.contains("target") && e.contains("node-0, node-1, node-2"),
        "{e}"
    );
    let e = prepare(&|t| *t = t.replace("node/node-0", "deployment/api"));
    assert!(e.contains("stop_node targets node/<name>"), "{e}");
    let e = prepare(&|t| {
        *t = t
            .replace(
                "include_network_policies: true",
                "include_network_policies: true\n  include_nodes: true",
            )
            .replace(
                "  nodes:\n    - { name: node, count: 3, cpu: 3500m, memory: 16Gi }",
                "",
            )
    });
    assert!(e.starts_with("topology.include_nodes"), "{e}");
    let e = prepare(&|t| {
        *t = t.replace(
            "include_network_policies: true",
            "include_network_policies: true\n  include_nodes: true",
        )
    });
    assert!(
        e.is_empty(),
        "pools with include_nodes and no Node objects run: {e}"
    );
}

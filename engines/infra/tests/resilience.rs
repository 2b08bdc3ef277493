//! Circuit breakers, readiness probes and memory limits: each checked
//! against what it is for, with and without it on the same load.

use hanzo_twin_infra::kubernetes::{self, Behaviour, MemoryUse, Objects, TopologyOptions};
use hanzo_twin_infra::{Fault, FaultAction, InfraModel, InfraSim, Report, TrafficModel};
use std::collections::BTreeMap;

/// YAML as twin definitions are read: through JSON values.
fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    let value: serde_json::Value = serde_yaml_ng::from_str(text).expect("YAML");
    serde_json::from_value(value).expect("a model")
}

fn traffic(steps: &str) -> TrafficModel {
    yaml(&format!(
        "entries:\n  - service: front\n    rate: {{ steps: {{ steps: {steps} }} }}\n"
    ))
}

fn run(model: &str, traffic: TrafficModel, faults: Vec<Fault>, until: f64) -> Report {
    let model: InfraModel = yaml(model);
    let mut sim = InfraSim::new(model, traffic, faults, 11).expect("valid");
    sim.run_until(until);
    sim.report()
}

/// Failed answers at the entry in `[from, to)` seconds.
fn failed_between(report: &Report, from: usize, to: usize) -> u64 {
    report.entries[0].timeline[from..to]
        .iter()
        .map(|b| b.failed)
        .sum()
}

const BREAKER_STACK: &str = r#"
services:
  - name: front
    replicas: 2
    workers: 64
    service_time: { constant: { s: 0.001 } }
    calls:
      - { to: db, timeout_s: 1.0, BREAKER }
  - name: db
    workers: 16
    service_time: { exponential: { mean_s: 0.005 } }
"#;

#[test]
fn an_open_circuit_breaker_fails_fast_while_its_service_is_away_and_closes_after() {
    let partition = Fault {
        name: "partition".into(),
        target: "db".into(),
        action: FaultAction::BlockTraffic,
        at_s: 10.0,
        duration_s: Some(60.0),
    };
    let load = || traffic("[{ at_s: 0, rps: 50 }]");
    let without = run(
        &BREAKER_STACK.replace(", BREAKER", ""),
        load(),
        vec![partition.clone()],
        120.0,
    );
    let with = run(
        &BREAKER_STACK.replace(
            "BREAKER",
            "circuit_breaker: { consecutive_failures: 5, open_s: 10 }",
        ),
        load(),
        vec![partition],
        120.0,
    );
    let front = |r: &Report| r.service("front").expect("front").clone();
    // Without a breaker every call across the partition waits out its
    // timeout; with one, only those sent in the second before the first
    // timed out (~50), then a trial every ten seconds; the rest fail at once.
    assert_eq!(front(&without).short_circuited, 0);
    assert!(
        front(&without).call_timeouts > 2500,
        "{:?}",
        front(&without)
    );
    assert!(front(&with).call_timeouts < 80, "{:?}", front(&with));
    assert!(front(&with).short_circuited > 2500, "{:?}", front(&with));
    // Failing fast: the failures' latency is gone from the callers' side.
    let slow = |r: &Report| {
        r.entries[0].timeline[20..60]
            .iter()
            .map(|b| b.latency_sum_s)
            .sum::<f64>()
    };
    assert!(
        slow(&with) < slow(&without) / 20.0,
        "{} vs {}",
        slow(&with),
        slow(&without)
    );
    // Closed again within one open period of the partition's end.
    assert!(failed_between(&with, 10, 70) > 2500);
    assert_eq!(
        failed_between(&with, 81, 120),
        0,
        "{:?}",
        &with.entries[0].timeline[70..90]
    );
}

const PROBED: &str = r#"
services:
  - name: front
    replicas: 2
    workers: 1
    service_time: { exponential: { mean_s: 0.1 } }
    PROBE
"#;

#[test]
fn a_replica_failing_its_readiness_probe_leaves_rotation_until_it_passes() {
    // 30 requests a second for a minute on capacity for 20, then 5.
    let load = || traffic("[{ at_s: 0, rps: 30 }, { at_s: 60, rps: 5 }]");
    let unprobed = run(&PROBED.replace("PROBE", ""), load(), Vec::new(), 240.0);
    let probed = run(
        &PROBED.replace(
            "PROBE",
            "readiness: { period_s: 1, timeout_s: 0.5, failure_threshold: 3 }",
        ),
        load(),
        Vec::new(),
        240.0,
    );
    let front = |r: &Report| r.service("front").expect("front").clone();
    // Unprobed, overloaded replicas keep taking requests: nothing is
    // refused, and the queue's wait grows.
    assert_eq!(front(&unprobed).unready_events, 0);
    assert_eq!(front(&unprobed).rejected, 0);
    // Probed, they leave rotation when their queue outgrows the probe's
    // timeout, and requests finding no ready replica are refused...
    assert!(front(&probed).unready_events >= 2, "{:?}", front(&probed));
    assert!(front(&probed).rejected > 100, "{:?}", front(&probed));
    assert!(
        front(&probed).mean_wait_s < front(&unprobed).mean_wait_s / 2.0,
        "{:?} vs {:?}",
        front(&probed),
        front(&unprobed)
    );
    // ...until, the load gone, they pass again and take everything.
    assert_eq!(failed_between(&probed, 150, 240), 0);
    assert!(
        probed.entries[0].timeline[150..240]
            .iter()
            .map(|b| b.ok)
            .sum::<u64>()
            > 300
    );
}

const BOUNDED: &str = r#"
services:
  - name: front
    workers: 4
    startup_s: 1
    service_time: { exponential: { mean_s: 0.1 } }
    memory: { base_mib: 100, per_request_mib: 10, limit_mib: 200 }
"#;

#[test]
fn a_replica_past_its_memory_limit_is_oom_killed_and_restarts_with_back_off() {
    // 60 requests a second on capacity for 40: the queue grows past the
    // ten requests the limit holds.
    let overloaded = run(
        BOUNDED,
        traffic("[{ at_s: 0, rps: 60 }]"),
        Vec::new(),
        600.0,
    );
    let front = overloaded.service("front").expect("front");
    // Restarts 10, 20, 40, 80, 160 and 300 s after each crash: six or so
    // kills in ten minutes, not one every few seconds.
    assert!((4..=7).contains(&front.oom_kills), "{front:?}");
    assert!(front.failed > 0, "{front:?}");
    // Down for its back-off: after the first kill, a stretch of ten
    // seconds or more in which nothing is answered.
    let timeline = &overloaded.entries[0].timeline;
    let longest_silence = timeline
        .split(|b| b.ok > 0)
        .map(<[_]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest_silence >= 10, "{longest_silence}");
    // At a load it can carry it never reaches its limit.
    let light = run(
        BOUNDED,
        traffic("[{ at_s: 0, rps: 10 }]"),
        Vec::new(),
        600.0,
    );
    assert_eq!(light.service("front").expect("front").oom_kills, 0);
}

#[test]
fn probes_and_memory_limits_are_read_from_kubernetes_objects() {
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: api, namespace: shop }
spec:
  replicas: 2
  selector: { matchLabels: { app: api } }
  template:
    metadata: { labels: { app: api } }
    spec:
      containers:
        - name: api
          image: shop/api
          readinessProbe:
            httpGet: { path: /ready, port: 8080 }
            periodSeconds: 5
            failureThreshold: 2
          resources:
            limits: { cpu: "2", memory: 512Mi }
        - name: sidecar
          image: envoy
          resources:
            limits: { memory: 0.5Gi }
"#;
    let objects = Objects::from_manifests(&[("api.yaml".into(), manifest.into())]).expect("read");
    let mut behaviour = BTreeMap::new();
    behaviour.insert(
        "api".to_string(),
        Behaviour {
            memory: Some(MemoryUse {
                base_mib: 300.0,
                per_request_mib: 4.0,
                limit_mib: None,
            }),
            ..Behaviour::default()
        },
    );
    let (model, _) =
        kubernetes::model(&objects, &TopologyOptions::default(), &behaviour).expect("a model");
    let api = model.service("api").expect("api");
    let probe = api.readiness.expect("its probe");
    assert_eq!(
        (
            probe.period_s,
            probe.timeout_s,
            probe.failure_threshold,
            probe.success_threshold
        ),
        (5.0, 1.0, 2, 1)
    );
    let memory = api.memory.expect("its memory");
    // Both containers' limits: 512 MiB + 0.5 GiB.
    assert_eq!(memory.limit_mib, 1024.0);
    assert_eq!(kubernetes::memory_mib("1Gi"), Some(1024.0));
    assert_eq!(kubernetes::memory_mib("1048576"), Some(1.0));
    assert!((kubernetes::memory_mib("500M").expect("a quantity") - 476.837).abs() < 1e-3);
    assert_eq!(kubernetes::memory_mib("lots"), None);
}

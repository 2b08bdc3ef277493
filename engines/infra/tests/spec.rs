//! The spec's infrastructure twin definition as written, and the demo shop
//! twin (configs/twins/shop-infra.yaml) run end to end.

use hanzo_twin_infra::FaultAction;
use hanzo_twin_infra::spec::{InfraTwinSpec, TopologySource, TrafficSource};
use std::path::Path;

/// HIP-0082's "Infrastructure Twin Schema", verbatim.
const SPEC_EXAMPLE: &str = r#"
  name: "hanzo-cloud-twin"
  type: infrastructure

  topology:
    source: kubernetes               # Discover from live cluster
    cluster: "hanzo-k8s"
    namespaces: ["hanzo", "hanzo-ml"]
    include_network_policies: true
    include_resource_quotas: true

  traffic:
    source: timeseries               # Replay from HIP-0059
    query: |
      SELECT bucket, metric, service, avg_value
      FROM metrics_1m
      WHERE metric LIKE 'hanzo_requests_%'
        AND bucket > NOW() - INTERVAL '7 days'

  failure_injection:                 # Chaos engineering scenarios
    scenarios:
      - name: "pod-kill"
        target: "deployment/llm-gateway"
        action: kill_pod
        count: 1
      - name: "network-partition"
        target: "service/postgres"
        action: block_traffic
        duration: "30s"
      - name: "cpu-stress"
        target: "deployment/hanzo-ml"
        action: stress_cpu
        load_percent: 95
        duration: "5m"
      - name: "disk-full"
        target: "statefulset/metrics-db"
        action: fill_disk
        percent: 98

  assertions:                        # Expected behaviors
    - "llm-gateway responds within 5s during pod-kill"
    - "postgres failover completes within 30s"
    - "no data loss during network partition"
"#;

#[test]
fn the_specs_example_reads_as_written() {
    let spec = InfraTwinSpec::parse(SPEC_EXAMPLE).expect("the spec's definition");
    assert_eq!(spec.topology.source, TopologySource::Kubernetes);
    assert_eq!(spec.topology.cluster.as_deref(), Some("hanzo-k8s"));
    assert_eq!(spec.topology.options.namespaces, ["hanzo", "hanzo-ml"]);
    assert!(
        spec.topology.options.include_network_policies
            && spec.topology.options.include_resource_quotas
    );
    assert_eq!(spec.traffic.source, TrafficSource::Timeseries);
    assert!(
        spec.traffic
            .query
            .as_deref()
            .is_some_and(|q| q.contains("FROM metrics_1m"))
    );
    // Scenarios one after another: a minute in, then a minute after each
    // effect (a kill's lasts its replacement's startup, 10 s here).
    let faults = spec.faults(|_| Some(10.0)).expect("valid scenarios");
    let actions: Vec<(FaultAction, f64, Option<f64>)> = faults
        .iter()
        .map(|f| (f.action, f.at_s, f.duration_s))
        .collect();
    assert_eq!(
        actions,
        [
            (FaultAction::KillPod { count: 1 }, 60.0, None),
            (FaultAction::BlockTraffic, 130.0, Some(30.0)),
            (
                FaultAction::StressCpu { load_percent: 95.0 },
                220.0,
                Some(300.0)
            ),
            (FaultAction::FillDisk { percent: 98.0 }, 580.0, None),
        ]
    );
    let assertions = spec.assertions().expect("the spec's sentences");
    assert_eq!(assertions.len(), 3);
    // A live cluster is not read yet: the error says what to do instead.
    let e = spec
        .manifests(Path::new("."))
        .expect_err("no live cluster")
        .to_string();
    assert!(
        e.starts_with("topology.source") && e.contains("kubectl get"),
        "{e}"
    );
}

#[test]
fn bad_definitions_name_the_field() {
    let refused = |text: &str| {
        InfraTwinSpec::parse(text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let base = "name: x\ntype: infrastructure\ntopology: {source: manifests, paths: [a]}\ntraffic: {source: constant, entries: [{service: a, rps: 1}]}\n";
    assert!(
        refused("name: x\ntype: physics\n").starts_with("type"),
        "{}",
        refused("name: x\ntype: physics\n")
    );
    let e = refused(&format!("{base}topolgy: {{}}\n"));
    assert!(e.contains("topolgy"), "{e}");
    let spec = InfraTwinSpec::parse(&format!(
        "{base}failure_injection:\n  scenarios:\n    - {{name: a, target: a, action: melt_down}}\n    - {{name: b, target: a, action: block_traffic, duration: soon}}\n"
    ))
    .expect("parses");
    let e = spec.faults(|_| None).expect_err("bad action").to_string();
    assert!(
        e.starts_with("failure_injection.scenarios[0].action") && e.contains("melt_down"),
        "{e}"
    );
    let spec =
        InfraTwinSpec::parse(&format!("{base}assertions: [\"a is fine\"]\n")).expect("parses");
    let e = spec
        .assertions()
        .expect_err("outside the grammar")
        .to_string();
    assert!(
        e.starts_with("assertions[0]") && e.contains("expected one of"),
        "{e}"
    );
}

#[test]
fn the_demo_shop_runs_an_hour_with_its_scenarios_and_judges_its_assertions() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/twins/shop-infra.yaml");
    let spec =
        InfraTwinSpec::parse(&std::fs::read_to_string(&file).expect("the demo")).expect("valid");
    let base = file.parent().expect("a folder");
    let run = |edit: &dyn Fn(&mut hanzo_twin_infra::InfraModel)| {
        let mut p = spec
            .prepare(base, spec.traffic().expect("traffic"), None, |m| {
                edit(m);
                Ok(())
            })
            .expect("prepared");
        p.sim.run_until(p.duration_s);
        (p.sim.report(), p.sim.verdicts(), p.findings)
    };
    let (report, verdicts, findings) = run(&|_| {});
    for v in &verdicts {
        eprintln!(
            "{} {}: {}",
            if v.passed { "PASS" } else { "FAIL" },
            v.assertion,
            v.reason
        );
    }
    assert_eq!(report.time_s, 3600.0);
    assert!(report.entry("gateway").expect("gateway").sent > 500_000);
    assert!(
        findings
            .iter()
            .any(|f| f.object == "ConfigMap shop/api-settings")
    );
    // Killing an api pod costs nothing (the gateway retries elsewhere), the
    // api recovers two seconds after the partition heals, the writes sent
    // across it are lost, and three api replicas are too few for a 300 ms
    // p99 before the autoscaler catches up...
    let passed: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
    assert_eq!(passed, [true, true, false, false], "{verdicts:#?}");
    let (_, more, _) = run(&|m| {
        if let Some(api) = m.services.iter_mut().find(|s| s.name == "api") {
            api.replicas += 2;
            if let Some(a) = api.autoscale.as_mut() {
                a.min_replicas += 2;
            }
        }
    });
    // ...which two more make: the what-if passes it.
    let passed: Vec<bool> = more.iter().map(|v| v.passed).collect();
    assert_eq!(passed, [true, true, false, true], "{more:#?}");
}

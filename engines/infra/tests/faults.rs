//! Requests through a small stack (gateway → api → cache and database) and
//! what injected faults do to them: partitions, pod kills, loss, delay, CPU
//! stress and a full disk; forks; seeds; bad input named by field.

use hanzo_twin_infra::{Fault, FaultAction, InfraModel, InfraSim, Report, TrafficModel};

const STACK: &str = r#"
services:
  - name: gateway
    replicas: 2
    workers: 16
    service_time: { exponential: { mean_s: 0.002 } }
    calls:
      - { to: api, timeout_s: 1.0, retries: 1 }
  - name: api
    replicas: 3
    workers: 4
    cpu_limit: 2
    startup_s: 8
    service_time: { exponential: { mean_s: 0.02 } }
    calls:
      - { to: cache, timeout_s: 0.05, required: false }
      - { to: db, probability: 0.5, timeout_s: 2.0 }
  - name: cache
    workers: 16
    service_time: { constant: { s: 0.001 } }
  - name: db
    workers: 8
    writes: 0.3
    service_time: { log_normal: { median_s: 0.008, p99_s: 0.05 } }
"#;

const TRAFFIC: &str = r#"
entries:
  - service: gateway
    rate: { constant: { rps: 100 } }
"#;

/// YAML as twin definitions are read: through JSON values, so enums are
/// maps of one key (`exponential: {...}`).
fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let value: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn sim(faults: Vec<Fault>, seed: u64) -> InfraSim {
    let model: InfraModel = yaml(STACK).expect("the stack");
    let traffic: TrafficModel = yaml(TRAFFIC).expect("the traffic");
    InfraSim::new(model, traffic, faults, seed).expect("a valid model")
}

fn fault(target: &str, action: FaultAction, at_s: f64, duration_s: Option<f64>) -> Fault {
    Fault {
        name: format!("{action:?}"),
        target: target.into(),
        action,
        at_s,
        duration_s,
    }
}

fn run(faults: Vec<Fault>, until: f64) -> Report {
    let mut s = sim(faults, 3);
    s.run_until(until);
    s.report()
}

/// Requests that ended in buckets `from..to` (seconds): (ok, failed).
fn ended(r: &Report, from: usize, to: usize) -> (u64, u64) {
    let e = r.entry("gateway").expect("the entry");
    e.timeline[from..to.min(e.timeline.len())]
        .iter()
        .fold((0, 0), |(ok, failed), b| (ok + b.ok, failed + b.failed))
}

#[test]
fn without_faults_every_request_is_answered_through_the_stack() {
    let r = run(Vec::new(), 300.0);
    let e = r.entry("gateway").expect("entry");
    assert!(e.sent > 29_000 && e.failed == 0, "{e:?}");
    assert!(e.ok + 5 >= e.sent, "all but those in flight: {e:?}");
    let db = r.service("db").expect("db");
    // Half the api's requests reach the database.
    let share = db.arrivals as f64 / r.service("api").expect("api").arrivals as f64;
    assert!((share - 0.5).abs() < 0.02, "{share}");
    // End to end is at least the sum of the mean work on the way.
    assert!(e.latency.mean_s > 0.002 + 0.02 + 0.001, "{:?}", e.latency);
    assert!(r.events > 100_000);
}

#[test]
fn a_partition_cascades_while_callers_wait_out_long_timeouts_and_heals() {
    let partition = || {
        vec![fault(
            "service/db",
            FaultAction::BlockTraffic,
            100.0,
            Some(30.0),
        )]
    };
    let r = run(partition(), 200.0);
    let (ok_before, failed_before) = ended(&r, 0, 100);
    assert_eq!(failed_before, 0);
    assert!(ok_before > 9_000);
    // The api waits 2 s for the database on half its requests: its 12
    // workers are soon all waiting, its queue grows, and the gateway's
    // 1 s timeouts fail nearly everything, not only what needs the database.
    let (ok_during, failed_during) = ended(&r, 105, 130);
    let share = failed_during as f64 / (ok_during + failed_during) as f64;
    assert!(share > 0.9, "failed share {share}");
    // The gateway's own workers then wait on the api, and its queue grows.
    let gateway = r.service("gateway").expect("gateway");
    assert!(
        gateway.call_timeouts > 500 && gateway.retries > 500,
        "{gateway:?}"
    );
    assert!(gateway.mean_wait_s > 1.0, "{gateway:?}");
    // After it heals and the api's backlog drains: all answered again.
    let (ok_after, failed_after) = ended(&r, 140, 199);
    assert_eq!(failed_after, 0);
    assert!(ok_after > 5_000);

    // The what-if: with a 50 ms database timeout only requests that need
    // the database on both of the gateway's tries fail: a half of a half.
    let mut model: InfraModel = yaml(STACK).expect("the stack");
    model.services[1].calls[1].timeout_s = Some(0.05);
    let traffic: TrafficModel = yaml(TRAFFIC).expect("the traffic");
    let mut s = InfraSim::new(model, traffic, partition(), 3).expect("valid");
    s.run_until(200.0);
    let r = s.report();
    let (ok_during, failed_during) = ended(&r, 105, 130);
    let share = failed_during as f64 / (ok_during + failed_during) as f64;
    assert!((share - 0.25).abs() < 0.04, "failed share {share}");
}

#[test]
fn a_killed_pod_fails_only_its_requests_and_is_replaced_after_startup() {
    let r = run(
        vec![fault(
            "deployment/api",
            FaultAction::KillPod { count: 1 },
            50.0,
            None,
        )],
        120.0,
    );
    let e = r.entry("gateway").expect("entry");
    // What it held failed (a few requests), the rest went to the others.
    assert!(e.failed < 20, "{e:?}");
    let api = r.service("api").expect("api");
    // Three replicas for 120 s, less one for its 8 s startup.
    assert!(
        (api.replica_seconds - (3.0 * 120.0 - 8.0)).abs() < 1e-6,
        "{api:?}"
    );
    // Killing them all: nothing answers until the first is back.
    let r = run(
        vec![fault(
            "deployment/api",
            FaultAction::KillPod { count: 3 },
            50.0,
            None,
        )],
        120.0,
    );
    let (ok, failed) = ended(&r, 51, 57);
    assert_eq!(ok, 0);
    assert!(failed > 500, "{failed}");
    assert!(r.service("api").expect("api").rejected > 0);
    let (ok, failed) = ended(&r, 62, 120);
    assert_eq!(failed, 0);
    assert!(ok > 5_000);
}

#[test]
fn loss_is_retried_delay_and_stress_slow_answers_and_a_full_disk_fails_writes() {
    let calm = run(Vec::new(), 100.0);
    let calm_latency = calm.entry("gateway").expect("entry").latency;

    let lossy = run(
        vec![fault("api", FaultAction::Loss { percent: 20.0 }, 0.0, None)],
        100.0,
    );
    let gateway = lossy.service("gateway").expect("gateway");
    assert!(gateway.retries > 1_000, "{gateway:?}");
    let e = lossy.entry("gateway").expect("entry");
    // A request fails only when both tries are lost (or their answers).
    let failed = e.failed as f64 / e.sent as f64;
    assert!(failed > 0.05 && failed < 0.25, "{failed}");

    let slow = run(
        vec![fault(
            "db",
            FaultAction::Delay {
                latency_s: 0.1,
                jitter_s: 0.0,
            },
            0.0,
            None,
        )],
        100.0,
    );
    let slow_latency = slow.entry("gateway").expect("entry").latency;
    // Half the requests go to the database and back: 0.2 s more each.
    assert!(
        slow_latency.p90_s > calm_latency.p90_s + 0.19,
        "{slow_latency:?}"
    );

    let stressed = run(
        vec![fault(
            "api",
            FaultAction::StressCpu { load_percent: 90.0 },
            0.0,
            None,
        )],
        100.0,
    );
    let api = stressed.service("api").expect("api").latency;
    assert!(
        api.mean_s > 2.0 * calm.service("api").expect("api").latency.mean_s,
        "{api:?}"
    );

    let full = run(
        vec![fault(
            "statefulset/db",
            FaultAction::FillDisk { percent: 98.0 },
            0.0,
            None,
        )],
        100.0,
    );
    let db = full.service("db").expect("db");
    let failed = db.failed as f64 / db.arrivals as f64;
    assert!((failed - 0.3).abs() < 0.03, "writes fail: {failed}");
}

#[test]
fn a_seed_fixes_the_run_and_a_fork_goes_on_identically() {
    let faults = || {
        vec![fault(
            "db",
            FaultAction::Loss { percent: 10.0 },
            20.0,
            Some(10.0),
        )]
    };
    let mut a = sim(faults(), 9);
    let mut b = sim(faults(), 9);
    a.run_until(60.0);
    b.run_until(60.0);
    assert_eq!(a.report(), b.report());
    let mut c = sim(faults(), 10);
    c.run_until(60.0);
    assert_ne!(a.report(), c.report());

    // A fork at 30 s: the same future as the original...
    let mut fork = a.clone();
    a.run_until(90.0);
    fork.run_until(90.0);
    assert_eq!(a.report(), fork.report());
    // ...until something happens to one of them.
    let mut what_if = a.clone();
    what_if
        .inject(fault("db", FaultAction::BlockTraffic, 90.0, Some(5.0)))
        .expect("a valid fault");
    a.run_until(100.0);
    what_if.run_until(100.0);
    assert!(
        what_if.report().entry("gateway").expect("e").failed
            > a.report().entry("gateway").expect("e").failed
    );
}

#[test]
fn bad_models_traffic_and_faults_are_refused_by_field() {
    let model: InfraModel = yaml(STACK).expect("the stack");
    let traffic: TrafficModel = yaml(TRAFFIC).expect("the traffic");
    let refused = |model: InfraModel, traffic: TrafficModel, faults: Vec<Fault>| {
        InfraSim::new(model, traffic, faults, 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut bad = model.clone();
    bad.services[0].calls[0].to = "apii".into();
    assert!(refused(bad, traffic.clone(), vec![]).starts_with("services[0].calls[0].to"));
    let mut bad = model.clone();
    bad.services[1].workers = 0;
    assert!(refused(bad, traffic.clone(), vec![]).starts_with("services[1].workers"));
    let mut bad_traffic = traffic.clone();
    bad_traffic.entries[0].service = "nobody".into();
    assert!(refused(model.clone(), bad_traffic, vec![]).starts_with("traffic.entries[0].service"));
    let e = refused(
        model.clone(),
        traffic.clone(),
        vec![fault(
            "deployment/ghost",
            FaultAction::BlockTraffic,
            1.0,
            None,
        )],
    );
    assert!(
        e.starts_with("faults[0].target") && e.contains("ghost"),
        "{e}"
    );
    let e = refused(
        model,
        traffic,
        vec![fault(
            "api",
            FaultAction::Loss { percent: 120.0 },
            1.0,
            None,
        )],
    );
    assert!(e.starts_with("faults[0].action"), "{e}");
    let e = yaml::<InfraModel>("services: [{name: a, service_time: {uniform: {}}}]")
        .err()
        .unwrap_or_default();
    assert!(e.contains("uniform"), "{e}");
}

//! The spec's assertion sentences: read by the grammar, refused with what
//! was expected, and judged over their windows with the evidence.

use hanzo_twin_infra::assertion::{self, Check, When};
use hanzo_twin_infra::{Fault, FaultAction, InfraModel, InfraSim, TrafficModel};

const STACK: &str = r#"{
  "services": [
    { "name": "gateway", "replicas": 2, "workers": 64, "startup_s": 5,
      "service_time": { "exponential": { "mean_s": 0.002 } },
      "calls": [ { "to": "api", "timeout_s": 3.0 } ] },
    { "name": "api", "replicas": 3, "workers": 32,
      "service_time": { "exponential": { "mean_s": 0.02 } },
      "calls": [ { "to": "db", "probability": 0.5, "timeout_s": 0.5 } ] },
    { "name": "db", "workers": 16, "writes": 0.3, "aliases": ["postgres"],
      "service_time": { "exponential": { "mean_s": 0.005 } } }
  ]
}"#;

fn sim(faults: Vec<Fault>) -> InfraSim {
    let model: InfraModel = serde_json::from_str(STACK).expect("the stack");
    let traffic: TrafficModel = serde_json::from_str(
        r#"{ "entries": [ { "service": "gateway", "rate": { "constant": { "rps": 100 } } } ] }"#,
    )
    .expect("traffic");
    InfraSim::new(model, traffic, faults, 5).expect("valid")
}

fn fault(
    name: &str,
    target: &str,
    action: FaultAction,
    at_s: f64,
    duration_s: Option<f64>,
) -> Fault {
    Fault {
        name: name.into(),
        target: target.into(),
        action,
        at_s,
        duration_s,
    }
}

#[test]
fn the_specs_sentences_read_as_checks() {
    let a = assertion::parse("llm-gateway responds within 5s during pod-kill").expect("reads");
    assert_eq!(
        (a.check, a.when),
        (
            Check::RespondsWithin {
                service: "llm-gateway".into(),
                limit_s: 5.0
            },
            When::During("pod-kill".into())
        )
    );
    let a = assertion::parse("postgres failover completes within 30s").expect("reads");
    assert_eq!(
        (a.check, a.when),
        (
            Check::FailoverWithin {
                service: "postgres".into(),
                limit_s: 30.0
            },
            When::Throughout
        )
    );
    let a = assertion::parse("no data loss during network partition").expect("reads");
    assert_eq!(
        (a.check, a.when),
        (Check::NoDataLoss, When::During("network partition".into()))
    );
    let a = assertion::parse("api p99 latency below 250ms after cpu-stress").expect("reads");
    assert_eq!(
        a.check,
        Check::P99Below {
            service: "api".into(),
            limit_s: 0.25
        }
    );
    let a = assertion::parse("api error rate below 1% throughout").expect("reads");
    assert_eq!(
        a.check,
        Check::ErrorRateBelow {
            service: "api".into(),
            percent: 1.0
        }
    );
}

#[test]
fn a_sentence_outside_the_grammar_says_what_was_expected() {
    let e = assertion::parse("gateway is fast").expect_err("no such check");
    assert!(e.starts_with("one of `<service> responds within"), "{e}");
    let e = assertion::parse("gateway responds within soon").expect_err("no duration");
    assert!(
        e.contains("a duration such as 5s") && e.contains("soon"),
        "{e}"
    );
    let e = assertion::parse("no data loss during").expect_err("no scenario");
    assert!(e.contains("a scenario after `during`"), "{e}");
    let e = assertion::parse("api error rate below lots").expect_err("no percentage");
    assert!(e.contains("a percentage"), "{e}");
}

#[test]
fn checks_are_judged_over_their_windows_with_evidence() {
    let mut s = sim(vec![
        fault(
            "pod-kill",
            "deployment/gateway",
            FaultAction::KillPod { count: 1 },
            60.0,
            None,
        ),
        fault(
            "network-partition",
            "service/postgres",
            FaultAction::BlockTraffic,
            120.0,
            Some(30.0),
        ),
        fault(
            "disk-full",
            "statefulset/db",
            FaultAction::FillDisk { percent: 98.0 },
            200.0,
            Some(20.0),
        ),
    ]);
    let sentences = [
        "gateway responds within 5s during pod-kill",
        "no requests lost before pod-kill",
        "no requests lost during network partition",
        "api recovers within 60s during network-partition",
        "api recovers within 10s during network-partition",
        "no data loss during network partition",
        "no data loss during disk-full",
        "api p99 latency below 200ms before network-partition",
        "postgres failover completes within 30s",
    ];
    for (i, text) in sentences.iter().enumerate() {
        let a = assertion::parse(text).expect("grammar");
        s.watch(a, &format!("assertions[{i}]"))
            .expect("known names");
    }
    s.run_until(300.0);
    let verdicts = s.verdicts();
    let verdict = |i: usize| &verdicts[i];
    let outcome: Vec<bool> = verdicts.iter().map(|v| v.passed).collect();
    // A killed gateway pod fails what it held: the check fails, with the
    // failures counted; nothing failed before it.
    assert_eq!(
        outcome,
        [false, true, false, true, false, false, false, true, true],
        "{verdicts:#?}"
    );
    assert!(verdict(0).evidence.failed > 0 && verdict(0).evidence.requests > 400);
    assert_eq!(verdict(1).evidence.failed, 0);
    assert!(verdict(1).evidence.requests > 5_000);
    // The partition: the api's database calls time out until it heals.
    let recovery = verdict(3).evidence.recovery_s.expect("recovered");
    assert!((29.0..32.0).contains(&recovery), "{recovery}");
    assert!(
        verdict(4).reason.contains("limit 10 s"),
        "{}",
        verdict(4).reason
    );
    // The api gives up its database writes across the partition: lost.
    assert!(verdict(5).evidence.failed > 100, "{:?}", verdict(5));
    // Writes fail on a full disk: data lost.
    assert!(verdict(6).evidence.failed > 100, "{:?}", verdict(6));
    assert!(verdict(7).evidence.latency.p99_s < 0.2);
    // Requests never reached the partitioned database, so none failed there.
    assert_eq!(verdict(8).evidence.recovery_s, Some(0.0));
    assert!(verdict(2).evidence.from_s == 120.0 && verdict(2).evidence.to_s == 150.0);
}

#[test]
fn an_assertion_naming_no_scenario_or_service_is_refused_with_the_known_ones() {
    let mut s = sim(vec![fault(
        "pod-kill",
        "gateway",
        FaultAction::KillPod { count: 1 },
        5.0,
        None,
    )]);
    let e = s
        .watch(
            assertion::parse("no data loss during meteor strike").expect("grammar"),
            "assertions[0]",
        )
        .expect_err("no such scenario")
        .to_string();
    assert!(
        e.starts_with("assertions[0]") && e.contains("meteor strike") && e.contains("pod-kill"),
        "{e}"
    );
    let e = s
        .watch(
            assertion::parse("cdn responds within 1s").expect("grammar"),
            "assertions[1]",
        )
        .expect_err("no such service")
        .to_string();
    assert!(e.contains("there is no service `cdn`"), "{e}");
    let e = s
        .watch(
            assertion::parse("api recovers within 5s").expect("grammar"),
            "assertions[2]",
        )
        .expect_err("nothing to recover from")
        .to_string();
    assert!(e.contains("nothing to recover from"), "{e}");
}

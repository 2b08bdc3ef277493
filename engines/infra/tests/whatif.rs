//! What-if variants: a topology patch (replicas, limits, workers, a new
//! NetworkPolicy) applied to the demo shop, run on the same traffic as the
//! shop itself, compared and plotted.

use hanzo_twin_infra::compare::{ComparisonRow, plot_svg};
use hanzo_twin_infra::kubernetes::Objects;
use hanzo_twin_infra::spec::InfraTwinSpec;
use hanzo_twin_infra::whatif::check_variants;
use hanzo_twin_infra::{Report, TopologyPatch, Variant, Verdict};
use std::path::Path;

fn shop() -> (InfraTwinSpec, Objects) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/twins/shop-infra.yaml");
    let mut spec =
        InfraTwinSpec::parse(&std::fs::read_to_string(&file).expect("the demo")).expect("valid");
    // Past the pod kill at 10 min; the partition at 30 min is not reached.
    spec.simulation.duration = Some("15m".into());
    let base = file.parent().expect("a folder");
    let objects =
        Objects::from_manifests(&spec.manifests(base).expect("manifests")).expect("objects");
    (spec, objects)
}

/// The patched postgres policy: only the gateway may reach the database,
/// so the API's writes are dropped, as the cluster's packets would be.
const GATEWAY_ONLY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: postgres-from-api }
spec:
  podSelector:
    matchLabels: { app: postgres }
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector:
            matchLabels: { app: gateway }
";

fn run(spec: &InfraTwinSpec, objects: &Objects, patch: &TopologyPatch) -> (Report, Vec<Verdict>) {
    let mut p = patch
        .prepare(
            spec,
            objects,
            spec.traffic().expect("traffic"),
            None,
            "patch",
        )
        .expect("prepared");
    p.sim.run_until(p.duration_s);
    (p.sim.report(), p.sim.verdicts())
}

#[test]
fn a_patch_changes_replicas_limits_workers_and_network_policies() {
    let (spec, objects) = shop();
    let traffic = spec.traffic().expect("traffic");
    let patch = TopologyPatch {
        replicas: [("api".to_string(), 6)].into(),
        cpu_limit: [("api".to_string(), 2.0)].into(),
        workers: [("gateway".to_string(), 16)].into(),
        manifests: Some(GATEWAY_ONLY.into()),
        ..Default::default()
    };
    let prepared = patch
        .prepare(&spec, &objects, traffic, None, "patch")
        .expect("prepared");
    let model = prepared.sim.model();
    let api = model.service("api").expect("api");
    assert_eq!(api.replicas, 6);
    assert_eq!(api.cpu_limit, Some(2.0));
    let autoscale = api.autoscale.expect("api is autoscaled");
    assert!(autoscale.min_replicas >= 6, "{autoscale:?}");
    assert_eq!(model.service("gateway").expect("gateway").workers, 16);
    // The policy replaced the shop's one of the same name.
    let postgres = model.service("postgres").expect("postgres");
    assert_eq!(
        postgres.ingress_from.as_deref(),
        Some(&["gateway".to_string()][..])
    );

    let (base, _) = run(&spec, &objects, &TopologyPatch::default());
    let (patched, _) = run(&spec, &objects, &patch);
    let arrivals = |r: &Report, s: &str| r.service(s).expect("a service").arrivals;
    assert!(arrivals(&base, "postgres") > 1000, "{base:#?}");
    assert_eq!(arrivals(&patched, "postgres"), 0);
    // The API's writes fail across the policy; its callers see it.
    let failed = |r: &Report| r.entry("gateway").expect("gateway").failed;
    assert!(
        failed(&patched) > failed(&base) + 1000,
        "{} vs {}",
        failed(&patched),
        failed(&base)
    );
}

#[test]
fn bad_patches_and_variants_name_their_field() {
    let (spec, objects) = shop();
    let traffic = spec.traffic().expect("traffic");
    let unknown = TopologyPatch {
        replicas: [("apii".to_string(), 2)].into(),
        ..Default::default()
    };
    let e = unknown
        .prepare(&spec, &objects, traffic, None, "variants[0].patch")
        .expect_err("no such service")
        .to_string();
    assert!(
        e.starts_with("variants[0].patch.replicas.apii:") && e.contains("gateway"),
        "{e}"
    );
    let variant = |name: &str, patch: TopologyPatch| Variant {
        name: name.into(),
        patch,
    };
    let more = TopologyPatch {
        replicas: [("api".to_string(), 5)].into(),
        ..Default::default()
    };
    let refused = |variants: &[Variant]| {
        check_variants(variants, "variants", "shop-infra")
            .expect_err("refused")
            .to_string()
    };
    for (variants, field) in [
        (vec![variant("", more.clone())], "variants[0].name"),
        (
            vec![variant("shop-infra", more.clone())],
            "variants[0].name",
        ),
        (
            vec![variant("a", more.clone()), variant("a", more.clone())],
            "variants[1].name",
        ),
        (
            vec![variant("a", TopologyPatch::default())],
            "variants[0].patch",
        ),
        (
            vec![variant(
                "a",
                TopologyPatch {
                    cpu_limit: [("api".to_string(), 0.0)].into(),
                    ..Default::default()
                },
            )],
            "variants[0].patch.cpu_limit.api",
        ),
        (
            vec![variant(
                "a",
                TopologyPatch {
                    workers: [("api".to_string(), 0)].into(),
                    ..Default::default()
                },
            )],
            "variants[0].patch.workers.api",
        ),
        (
            vec![variant(
                "a",
                TopologyPatch {
                    manifests: Some("kind: NetworkPolicy\n".into()),
                    ..Default::default()
                },
            )],
            "variants[0].patch.manifests",
        ),
    ] {
        let e = refused(&variants);
        assert!(e.starts_with(field), "{field}: {e}");
    }
    check_variants(&[variant("api-5", more)], "variants", "shop-infra").expect("valid");
}

#[test]
fn a_comparison_sets_runs_side_by_side_and_plots_each() {
    let (spec, objects) = shop();
    let more = TopologyPatch {
        replicas: [("api".to_string(), 6)].into(),
        ..Default::default()
    };
    let (base, base_verdicts) = run(&spec, &objects, &TopologyPatch::default());
    let (bigger, bigger_verdicts) = run(&spec, &objects, &more);
    let rows = [
        ComparisonRow::of("base", &base, &base_verdicts),
        ComparisonRow::of("api-6", &bigger, &bigger_verdicts),
    ];
    // Same traffic: the requests sent differ by chance only.
    let (a, b) = (rows[0].requests as f64, rows[1].requests as f64);
    assert!((a - b).abs() / a < 0.01, "{rows:?}");
    // Three more API replicas from the start pass the latency assertion
    // the base run breaches while its autoscaler catches up.
    assert_eq!(rows[0].assertions, 4);
    assert!(rows[1].breaches < rows[0].breaches, "{rows:?}");
    assert!(rows[1].p99_s < rows[0].p99_s, "{rows:?}");
    let cost = |r: &Report| r.services.iter().map(|s| s.replica_seconds).sum::<f64>() / 3600.0;
    assert_eq!(rows[1].replica_hours, cost(&bigger));

    let svg = plot_svg(
        "shop-infra: variants",
        &[("base", &base), ("api-6", &bigger)],
    )
    .expect("a plot");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    for text in ["base", "api-6", "base"] {
        assert!(
            svg.contains(&format!(">{text}<")) || svg.contains(&format!(">\n{text}\n<")),
            "{text} missing"
        );
    }
    // Two panels, a line per run in each: 15 minutes in 2 s intervals (at
    // most 720 points a line).
    assert!(svg.contains("per 2 seconds"));
    let lines: Vec<usize> = svg
        .split("<polyline")
        .skip(1)
        .filter_map(|l| l.split("points=\"").nth(1)?.split('"').next())
        .map(|points| points.split_whitespace().count())
        .filter(|&n| n > 2)
        .collect();
    assert_eq!(lines, [450; 4], "{svg}");
}

/// A what-if fork: a running simulation cloned, and the clone patched
/// mid-run; the parent goes on untouched.
#[test]
fn a_running_simulation_takes_a_patch_from_now_on_and_its_parent_does_not() {
    let (spec, objects) = shop();
    let mut parent = TopologyPatch::default()
        .prepare(&spec, &objects, spec.traffic().expect("traffic"), None, "")
        .expect("prepared")
        .sim;
    parent.run_until(300.0);
    let mut fork = parent.clone();
    let patch = TopologyPatch {
        replicas: [("api".to_string(), 7)].into(),
        manifests: Some(GATEWAY_ONLY.into()),
        ..Default::default()
    };
    fork.patch(&spec, &objects, patch, "topology")
        .expect("patched");
    assert_eq!(fork.patches().len(), 1);
    assert_eq!(fork.model().service("api").expect("api").replicas, 7);
    let postgres = |sim: &hanzo_twin_infra::InfraSim| {
        sim.report().service("postgres").expect("postgres").arrivals
    };
    let at_patch = postgres(&fork);
    parent.run_until(600.0);
    fork.run_until(600.0);
    // Cut off from the database from the patch on (a few calls were
    // already on their way)...
    assert!(
        postgres(&fork) < at_patch + 50,
        "{} then {}",
        at_patch,
        postgres(&fork)
    );
    assert!(postgres(&parent) > at_patch + 10_000);
    // ...with seven API replicas running.
    let api = fork.report().service("api").expect("api").clone();
    assert!(api.replicas >= 7 && api.peak_replicas >= 7, "{api:?}");

    // A patch that would add a service, or names none, changes nothing.
    let before = fork.report();
    let new_service = TopologyPatch {
        manifests: Some(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: billing, namespace: shop }\nspec:\n  replicas: 1\n  selector: { matchLabels: { app: billing } }\n  template:\n    metadata: { labels: { app: billing } }\n    spec: { containers: [{ name: billing, image: billing }] }\n"
                .into(),
        ),
        ..Default::default()
    };
    let e = fork
        .patch(&spec, &objects, new_service, "topology")
        .expect_err("a new service")
        .to_string();
    assert!(
        e.starts_with("topology:") && e.contains("not add or remove"),
        "{e}"
    );
    let unknown = TopologyPatch {
        workers: [("apii".to_string(), 2)].into(),
        ..Default::default()
    };
    let e = fork
        .patch(&spec, &objects, unknown, "topology")
        .expect_err("no such service")
        .to_string();
    assert!(e.starts_with("topology.workers.apii:"), "{e}");
    assert_eq!(fork.patches().len(), 1);
    assert_eq!(fork.report(), before);
}

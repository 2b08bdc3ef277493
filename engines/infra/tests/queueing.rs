//! The simulator against queueing theory: M/M/1, M/M/c and M/D/1 mean
//! waiting times against their closed forms, and Little's law (L = λW).
//! Runs are seeded, so each check is one fixed run of about a million
//! requests: long enough that a correct simulator lands within 3 %.

use hanzo_twin_infra::model::{EntryTraffic, RateProfile};
use hanzo_twin_infra::{Distribution, InfraModel, InfraSim, ServiceModel, TrafficModel};

fn single_queue(workers: u32, service_time: Distribution, rps: f64) -> (InfraModel, TrafficModel) {
    let model = InfraModel {
        services: vec![ServiceModel {
            workers,
            startup_s: 0.0,
            ..ServiceModel::new("queue", service_time)
        }],
        network_latency: Distribution::Constant { s: 0.0 },
        quotas: Vec::new(),
        nodes: Vec::new(),
        eviction_s: 300.0,
    };
    let traffic = TrafficModel {
        entries: vec![EntryTraffic {
            service: "queue".into(),
            rate: RateProfile::Constant { rps },
        }],
    };
    (model, traffic)
}

/// Runs `requests` arrivals' worth of time; returns (Wq, W, L, throughput).
fn run(model: InfraModel, traffic: TrafficModel, rps: f64, requests: f64) -> (f64, f64, f64, f64) {
    let mut sim = InfraSim::new(model, traffic, Vec::new(), 11).expect("a valid model");
    sim.run_until(requests / rps);
    let report = sim.report();
    let s = report.service("queue").expect("the queue");
    assert_eq!(s.failed + s.rejected, 0);
    (
        s.mean_wait_s,
        s.mean_time_in_system_s,
        s.mean_in_system,
        s.throughput_rps,
    )
}

fn close(what: &str, got: f64, want: f64, tolerance: f64) {
    let error = (got - want).abs() / want;
    assert!(
        error <= tolerance,
        "{what}: simulated {got:.5}, theory {want:.5} ({:.2} % off)",
        error * 100.0
    );
}

/// Erlang's C formula: the chance an arrival waits, `c` servers, offered
/// load `a = λ/μ`.
fn erlang_c(c: u32, a: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 0.0;
    for k in 0..c {
        if k > 0 {
            term *= a / f64::from(k);
        }
        sum += term;
    }
    let top = term * a / f64::from(c) * f64::from(c) / (f64::from(c) - a);
    top / (sum + top)
}

#[test]
fn m_m_1_waits_as_theory_says_and_littles_law_holds() {
    let (lambda, mu) = (7.0, 10.0);
    let (model, traffic) = single_queue(1, Distribution::Exponential { mean_s: 1.0 / mu }, lambda);
    let (wq, w, l, x) = run(model, traffic, lambda, 1_000_000.0);
    let rho = lambda / mu;
    close("M/M/1 Wq", wq, rho / (mu - lambda), 0.03);
    close("M/M/1 W", w, 1.0 / (mu - lambda), 0.03);
    close("Little's law L = λW", l, x * w, 0.01);
}

#[test]
fn m_m_c_waits_as_erlang_c_says_and_littles_law_holds() {
    let (c, lambda, mu) = (4, 8.0, 2.5);
    let (model, traffic) = single_queue(c, Distribution::Exponential { mean_s: 1.0 / mu }, lambda);
    let (wq, w, l, x) = run(model, traffic, lambda, 1_000_000.0);
    let p_wait = erlang_c(c, lambda / mu);
    let want_wq = p_wait / (f64::from(c) * mu - lambda);
    close("M/M/4 Wq", wq, want_wq, 0.03);
    close("M/M/4 W", w, want_wq + 1.0 / mu, 0.03);
    close("Little's law L = λW", l, x * w, 0.01);
}

#[test]
fn m_d_1_waits_as_pollaczek_khinchine_says() {
    let (lambda, mu) = (7.0, 10.0);
    let (model, traffic) = single_queue(1, Distribution::Constant { s: 1.0 / mu }, lambda);
    let (wq, _, l, x) = run(model.clone(), traffic.clone(), lambda, 1_000_000.0);
    let rho = lambda / mu;
    close("M/D/1 Wq", wq, rho / (2.0 * mu * (1.0 - rho)), 0.03);
    let (_, w, ..) = run(model, traffic, lambda, 1_000_000.0);
    close("Little's law L = λW", l, x * w, 0.01);
}

#[test]
fn erlang_c_is_right_where_it_is_known() {
    // One server: the chance of waiting is the utilization.
    assert!((erlang_c(1, 0.7) - 0.7).abs() < 1e-12);
    // A textbook value: 2 servers at a = 1 wait with chance 1/3.
    assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
}

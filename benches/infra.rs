//! How fast the infrastructure simulator runs on one core:
//!
//! * M/M/1 at ρ = 0.7, simulated requests a second, beside the baseline in
//!   the same run: Lindley's recursion (W' = max(0, W + S − A)), the least
//!   work any simulator of that queue can do; the ratio is what the general
//!   event machinery (replicas, calls, faults, statistics) costs over it;
//! * the four-service stack of `engines/infra/tests/faults.rs` (gateway →
//!   api → cache, database) at 100 requests a second with a partition:
//!   events a second, and simulated seconds per wall-clock second.
//!
//!   cargo bench --bench infra
//!
//! Run as a test (`cargo test --benches`), it simulates a few seconds of each.

use hanzo_twin_infra::model::{EntryTraffic, RateProfile};
use hanzo_twin_infra::{
    Distribution, Fault, FaultAction, InfraModel, InfraSim, ServiceModel, TrafficModel,
};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn service(name: &str, replicas: u32, workers: u32, mean_s: f64) -> ServiceModel {
    ServiceModel {
        replicas,
        workers,
        startup_s: 8.0,
        ..ServiceModel::new(name, Distribution::Exponential { mean_s })
    }
}

fn call(
    to: &str,
    probability: f64,
    timeout_s: f64,
    retries: u32,
    required: bool,
) -> hanzo_twin_infra::CallModel {
    hanzo_twin_infra::CallModel {
        to: to.into(),
        probability,
        timeout_s: Some(timeout_s),
        retries,
        required,
        circuit_breaker: None,
    }
}

fn traffic(service: &str, rps: f64) -> TrafficModel {
    TrafficModel {
        entries: vec![EntryTraffic {
            service: service.into(),
            rate: RateProfile::Constant { rps },
        }],
    }
}

/// Lindley's recursion for M/M/1: the mean wait of `n` customers.
fn lindley(n: u64, lambda: f64, mu: f64, seed: u64) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut exp = |rate: f64| -(1.0 - rng.random::<f64>()).ln() / rate;
    let (mut w, mut sum) = (0.0f64, 0.0);
    for _ in 0..n {
        sum += w;
        let (s, a) = (exp(mu), exp(lambda));
        w = (w + s - a).max(0.0);
    }
    sum / n as f64
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let (lambda, mu) = (7.0, 10.0);
    let n: u64 = if benchmarking { 5_000_000 } else { 10_000 };

    let t0 = Instant::now();
    let baseline_wait = lindley(n, lambda, mu, 1);
    let baseline = n as f64 / t0.elapsed().as_secs_f64();

    let model = InfraModel {
        services: vec![service("queue", 1, 1, 1.0 / mu)],
        network_latency: Distribution::Constant { s: 0.0 },
        quotas: Vec::new(),
        nodes: Vec::new(),
        eviction_s: 300.0,
    };
    let mut sim = InfraSim::new(model, traffic("queue", lambda), Vec::new(), 1).expect("valid");
    let t0 = Instant::now();
    sim.run_until(n as f64 / lambda);
    let wall = t0.elapsed().as_secs_f64();
    let report = sim.report();
    let queue = report.service("queue").expect("the queue");
    let ours = queue.arrivals as f64 / wall;
    println!(
        "M/M/1 (ρ = 0.7), requests/s: Lindley's recursion {baseline:.3e}, hanzo-twin-infra {ours:.3e} \
         (ratio {:.3}); mean wait {baseline_wait:.4} s and {:.4} s (theory {:.4} s); {:.3e} events/s",
        ours / baseline,
        queue.mean_wait_s,
        lambda / mu / (mu - lambda),
        report.events as f64 / wall,
    );

    let mut gateway = service("gateway", 2, 16, 0.002);
    gateway.calls = vec![call("api", 1.0, 1.0, 1, true)];
    let mut api = service("api", 3, 4, 0.02);
    api.cpu_limit = Some(2.0);
    api.calls = vec![
        call("cache", 1.0, 0.05, 0, false),
        call("db", 0.5, 2.0, 0, true),
    ];
    let model = InfraModel {
        services: vec![
            gateway,
            api,
            service("cache", 1, 16, 0.001),
            service("db", 1, 8, 0.008),
        ],
        network_latency: Distribution::Constant { s: 0.0005 },
        quotas: Vec::new(),
        nodes: Vec::new(),
        eviction_s: 300.0,
    };
    let simulated = if benchmarking { 3600.0 } else { 5.0 };
    let partition = Fault {
        name: "network-partition".into(),
        target: "service/db".into(),
        action: FaultAction::BlockTraffic,
        at_s: simulated / 2.0,
        duration_s: Some(30.0),
    };
    let mut sim =
        InfraSim::new(model, traffic("gateway", 100.0), vec![partition], 1).expect("valid");
    let t0 = Instant::now();
    sim.run_until(simulated);
    let wall = t0.elapsed().as_secs_f64();
    let report = sim.report();
    let entry = report.entry("gateway").expect("the gateway");
    println!(
        "stack (4 services, 100 requests/s, a 30 s partition): {simulated} simulated s in {wall:.3} s wall \
         ({:.0}× real time), {:.3e} events/s, {} requests ({} failed)",
        simulated / wall,
        report.events as f64 / wall,
        entry.sent,
        entry.failed,
    );
}

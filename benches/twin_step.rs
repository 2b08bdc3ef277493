//! One physics step through the twin actor (a typed message to the node's host,
//! routed to the twin, answered) against the same step called directly on the
//! Simulation: the cost of the actor layer, as a ratio in one run.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

fn step_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (def_file, scene) in common::SAMPLES {
        let name = def_file.trim_end_matches(".yaml");
        let mut group = c.benchmark_group(format!("step/{name}"));
        let mut sim = common::direct_simulation(def_file, scene);
        group.bench_function("direct", |b| b.iter(|| sim.step().expect("step")));
        let data = tempfile::tempdir().expect("tempdir");
        let (node, twins, id) = rt.block_on(common::node_with_twin(def_file, data.path()));
        group.bench_function("actor", |b| {
            b.iter(|| rt.block_on(twins.step(&id, 1)).expect("step"))
        });
        // Many steps in one message: how the actor cost amortises.
        group.bench_function("actor_batch_of_100_per_step", |b| {
            b.iter_custom(|iters| {
                let t0 = std::time::Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(100);
                    rt.block_on(twins.step(&id, n)).expect("step");
                    left -= n;
                }
                t0.elapsed()
            })
        });
        group.finish();
        rt.block_on(node.shutdown());
    }
}

criterion_group!(benches, step_overhead);
criterion_main!(benches);

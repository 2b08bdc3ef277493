//! Fork latency of both sample scenes: through the node (state message from the
//! parent actor, a new supervised twin actor spawned from it, record stored)
//! against `Simulation::fork` called directly, in one run.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use hanzo_twin::actors::ForkOptions;
use std::time::{Duration, Instant};

fn fork_latency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (def_file, scene) in common::SAMPLES {
        let name = def_file.trim_end_matches(".yaml");
        let mut group = c.benchmark_group(format!("fork/{name}"));
        group.sample_size(30);
        let mut sim = common::direct_simulation(def_file, scene);
        for _ in 0..120 {
            sim.step().expect("step");
        }
        group.bench_function("direct_simulation_fork", |b| {
            b.iter(|| sim.fork().expect("fork"))
        });
        let data = tempfile::tempdir().expect("tempdir");
        let (node, twins, id) = rt.block_on(common::node_with_twin(def_file, data.path()));
        rt.block_on(twins.step(&id, 120)).expect("step");
        // Forked from a thread outside the node's runtime: every request and
        // reply also wakes a parked thread.
        group.bench_function("twin_fork_from_outside_thread", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let fork = rt
                        .block_on(twins.fork(&id, ForkOptions::default()))
                        .expect("fork");
                    total += t0.elapsed();
                    rt.block_on(twins.delete(&fork.id.to_string()))
                        .expect("delete");
                }
                total
            })
        });
        // Forked from a task on the node's runtime, as an API handler or an
        // embedded agent does.
        group.bench_function("twin_fork", |b| {
            b.iter_custom(|iters| {
                let (twins, id) = (twins.clone(), id.clone());
                let run = rt.spawn(async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t0 = Instant::now();
                        let fork = twins.fork(&id, ForkOptions::default()).await.expect("fork");
                        total += t0.elapsed();
                        // Discarding the fork is not part of the fork's latency.
                        twins.delete(&fork.id.to_string()).await.expect("delete");
                    }
                    total
                });
                rt.block_on(run).expect("fork loop")
            })
        });
        group.finish();
        rt.block_on(node.shutdown());
    }
}

criterion_group!(benches, fork_latency);
criterion_main!(benches);

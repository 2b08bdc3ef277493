//! One physics step through the twin actor (a typed message straight to the
//! resolved twin actor, answered) against the same step called directly on the
//! Simulation, and against the floor: a bare ractor call to an actor that owns
//! the same Simulation and steps it. The cost of the node's layer, as ratios
//! in one run.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use hanzo_twin::engines::Simulation;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// The floor: an actor owning a Simulation, stepped by a call.
struct BareStepper;

struct StepOnce(RpcReplyPort<u64>);

impl ractor::Message for StepOnce {}

impl Actor for BareStepper {
    type Msg = StepOnce;
    type State = Box<dyn Simulation>;
    type Arguments = Box<dyn Simulation>;

    async fn pre_start(
        &self,
        _: ActorRef<StepOnce>,
        sim: Box<dyn Simulation>,
    ) -> Result<Box<dyn Simulation>, ActorProcessingErr> {
        Ok(sim)
    }

    async fn handle(
        &self,
        _: ActorRef<StepOnce>,
        StepOnce(reply): StepOnce,
        sim: &mut Box<dyn Simulation>,
    ) -> Result<(), ActorProcessingErr> {
        sim.step()?;
        let _ = reply.send(sim.step_count());
        Ok(())
    }
}

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
        let (bare, _) = rt
            .block_on(Actor::spawn(
                None,
                BareStepper,
                common::direct_simulation(def_file, scene),
            ))
            .expect("bare actor");
        group.bench_function("bare_ractor_call", |b| {
            b.iter(|| {
                rt.block_on(async { ractor::call!(bare, StepOnce) })
                    .expect("step")
            })
        });
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
        bare.stop(None);
        rt.block_on(node.shutdown());
    }
}

criterion_group!(benches, step_overhead);
criterion_main!(benches);

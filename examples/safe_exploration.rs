//! Safe exploration with an embedded node (the spec's "fork the twin, try each
//! action, keep the best"): an agent in this process forks a running robot-arm
//! twin twice, tries a different action sequence in each fork, compares where
//! the arm's tip ends up, applies the better sequence to the original and
//! throws the forks away. No HTTP anywhere: typed actor messages only.
//!
//! Run it with `cargo run --example safe_exploration`.

use hanzo_twin::actors::{Clock, ForkOptions, Format, StartOptions, TwinDefinition, TwinNode};
use hanzo_twin::engines::JointCommand;
use hanzo_twin::{Node, NodeConfig};
use std::path::{Path, PathBuf};

/// Where the agent wants the arm's tip.
pub const TARGET: [f64; 3] = [0.35, 0.0, 1.05];
pub const TIP: &str = "/World/Arm/Link3";

/// An action sequence: joint position targets, each held for `steps` steps.
pub type Plan = Vec<(&'static str, f64, u64)>;

pub fn plans() -> [Plan; 2] {
    [
        vec![
            ("/World/Arm/shoulder_pitch", 0.9, 240),
            ("/World/Arm/elbow", 0.6, 240),
        ],
        vec![
            ("/World/Arm/shoulder_pitch", -0.4, 240),
            ("/World/Arm/elbow", 1.2, 240),
        ],
    ]
}

/// What the agent found.
#[derive(Debug)]
pub struct Outcome {
    /// Distance of the tip from the target after each plan, in its fork.
    pub scores: [f64; 2],
    pub chosen: usize,
    /// The observation JSON of the winning fork and of the original after it
    /// replayed the winning plan: equal, bit for bit.
    pub winner_final: String,
    pub original_final: String,
    /// Twins left on the node afterwards (the forks are gone).
    pub twins_left: usize,
}

async fn execute(twins: &TwinNode, twin: &str, plan: &Plan) -> anyhow::Result<()> {
    for (joint, target, steps) in plan {
        twins
            .command_joint(twin, joint, JointCommand::Position(*target))
            .await?;
        twins.step(twin, *steps).await?;
    }
    Ok(())
}

async fn tip_distance(twins: &TwinNode, twin: &str) -> anyhow::Result<f64> {
    let obs = twins.observe(twin, TIP).await?;
    let p = obs
        .bodies
        .first()
        .ok_or_else(|| anyhow::anyhow!("no body at {TIP}"))?
        .position;
    Ok(
        ((p[0] - TARGET[0]).powi(2) + (p[1] - TARGET[1]).powi(2) + (p[2] - TARGET[2]).powi(2))
            .sqrt(),
    )
}

/// Runs the whole exploration on a node embedded in this process, keeping its
/// data in `data_dir`.
pub async fn run(repo: &Path, data_dir: &Path) -> anyhow::Result<Outcome> {
    let mut config = NodeConfig {
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    };
    config.scenes.root = repo.join("configs/scenes");
    let node = Node::start(config).await?;
    let twins = node.twins();

    // The live twin: the arm cell, running in real time.
    let text = std::fs::read_to_string(repo.join("configs/twins/robot-arm.yaml"))?;
    let definition = TwinDefinition::parse(&text, Format::Yaml)?;
    let original = twins.create(definition).await?.id.to_string();
    twins.start(&original, StartOptions::default()).await?;

    // Hold the original still while deciding, so the forks start from exactly
    // the state the chosen plan will be applied to.
    twins.set_clock(&original, Clock::Paused).await?;
    let mut forks = Vec::new();
    let mut scores = [0.0; 2];
    for (i, plan) in plans().iter().enumerate() {
        let fork = twins
            .fork(
                &original,
                ForkOptions {
                    name: Some(format!("explore-{i}")),
                    clock: Clock::Paused,
                    ..ForkOptions::default()
                },
            )
            .await?
            .id
            .to_string();
        execute(&twins, &fork, plan).await?;
        scores[i] = tip_distance(&twins, &fork).await?;
        forks.push(fork);
    }
    let chosen = if scores[0] <= scores[1] { 0 } else { 1 };
    let winner_final = serde_json::to_string(&twins.observe(&forks[chosen], "/").await?)?;

    // Act on the original, then let it run on in real time.
    execute(&twins, &original, &plans()[chosen]).await?;
    let original_final = serde_json::to_string(&twins.observe(&original, "/").await?)?;
    twins.set_clock(&original, Clock::Realtime).await?;
    for fork in &forks {
        twins.delete(fork).await?;
    }
    let twins_left = twins.list(Default::default()).await?.len();
    node.shutdown().await;
    Ok(Outcome {
        scores,
        chosen,
        winner_final,
        original_final,
        twins_left,
    })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = std::env::temp_dir().join(format!("hanzo-twin-example-{}", std::process::id()));
    let outcome = run(&repo, &data).await;
    let _ = std::fs::remove_dir_all(&data);
    let outcome = outcome?;
    for (i, score) in outcome.scores.iter().enumerate() {
        println!("plan {i}: tip ends {score:.3} m from the target");
    }
    println!(
        "applied plan {} to the live twin; forks discarded ({} twin left)",
        outcome.chosen, outcome.twins_left
    );
    Ok(())
}

//! Shared set-up of the benchmarks: an embedded node and the sample scenes.

#![allow(dead_code)]

use hanzo_twin::actors::{Clock, Format, StartOptions, TwinDefinition, TwinNode};
use hanzo_twin::engines::{Engine, EngineConfig, Simulation, rapier::RapierEngine, usd};
use hanzo_twin::{Node, NodeConfig};
use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The two sample twins: (definition file, scene file).
pub const SAMPLES: [(&str, &str); 2] = [
    ("robot-arm.yaml", "robot-arm/scene.usda"),
    ("conveyor.yaml", "conveyor/scene.usda"),
];

pub fn definition(file: &str) -> TwinDefinition {
    let text = std::fs::read_to_string(repo().join("configs/twins").join(file))
        .expect("sample definition");
    TwinDefinition::parse(&text, Format::Yaml).expect("valid sample")
}

/// A simulation of a sample scene, loaded directly with no actor around it.
pub fn direct_simulation(def_file: &str, scene: &str) -> Box<dyn Simulation> {
    let model = usd::load_scene(&repo().join("configs/scenes").join(scene)).expect("scene");
    let config: EngineConfig = definition(def_file).engine.config.to_engine_config();
    RapierEngine.load_scene(&model, &config).expect("load")
}

/// An embedded node with one sample twin running on a paused clock.
pub async fn node_with_twin(def_file: &str, data: &std::path::Path) -> (Node, TwinNode, String) {
    let mut config = NodeConfig {
        data_dir: data.to_path_buf(),
        ..Default::default()
    };
    config.scenes.root = repo().join("configs/scenes");
    config.metrics.enabled = false;
    let node = Node::start(config).await.expect("node");
    let twins = node.twins();
    let id = twins
        .create(definition(def_file))
        .await
        .expect("create")
        .id
        .to_string();
    twins
        .start(
            &id,
            StartOptions {
                clock: Clock::Paused,
                reset: true,
            },
        )
        .await
        .expect("start");
    (node, twins, id)
}

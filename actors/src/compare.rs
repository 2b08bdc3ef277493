//! Cross-engine comparison (`POST /v1/engines/compare`): one scene and one
//! command sequence on several engines, and how far their trajectories drift
//! apart. Runs on its own task and a blocking thread, never in an actor's loop.

use crate::error::TwinError;
use crate::protocol::Scope;
use crate::scenes::SceneLoader;
use hanzo_twin_engines::compare::CompareReport;
use hanzo_twin_engines::{EngineRegistry, SceneModel};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A cross-engine comparison (`POST /v1/engines/compare`): the scene as a twin
/// definition gives it, the engines (the first is the reference), one engine
/// config for all, and the commands.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    pub scene: crate::definition::SceneSpec,
    pub engines: Vec<hanzo_twin_engines::EngineKind>,
    #[serde(default)]
    pub config: crate::definition::EngineConfigSpec,
    pub steps: u64,
    #[serde(default = "one")]
    pub sample_every: u64,
    #[serde(default)]
    pub commands: Vec<hanzo_twin_engines::compare::TimedCommand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_tolerance_m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joint_tolerance: Option<f64>,
}

fn one() -> u64 {
    1
}

impl CompareRequest {
    pub fn run(&self) -> hanzo_twin_engines::compare::CompareRun {
        hanzo_twin_engines::compare::CompareRun {
            steps: self.steps,
            sample_every: self.sample_every,
            commands: self.commands.clone(),
            position_tolerance_m: self.position_tolerance_m,
            joint_tolerance: self.joint_tolerance,
        }
    }
}

/// Loads the scene, checks the engines and runs the comparison.
pub async fn run(
    scenes: &SceneLoader,
    registry: &EngineRegistry,
    request: &CompareRequest,
    scope: &Scope,
) -> Result<CompareReport, TwinError> {
    run_watched(scenes, registry, request, scope, Box::new(|_, _| true))
        .await?
        .ok_or_else(|| TwinError::invalid("steps", "the comparison was stopped"))
}

/// Each step a comparison has done (the engine's index, the step), and
/// whether it goes on.
pub type Watch = Box<dyn FnMut(usize, u64) -> bool + Send>;

/// [`run`], telling `watch` each step; `None` when `watch` stopped it (a
/// comparison job, cancelled).
pub async fn run_watched(
    scenes: &SceneLoader,
    registry: &EngineRegistry,
    request: &CompareRequest,
    scope: &Scope,
    mut watch: Watch,
) -> Result<Option<CompareReport>, TwinError> {
    let (scene, engines) = prepare(scenes, registry, request, scope).await?;
    let config = request.config.to_engine_config();
    let run = request.run();
    tokio::task::spawn_blocking(move || {
        hanzo_twin_engines::compare::compare_watched(&scene, &engines, &config, &run, &mut watch)
            .map_err(TwinError::from)
    })
    .await
    .unwrap_or_else(|e| {
        Err(TwinError::Engine {
            kind: crate::error::EngineFailure::Diverged,
            field: None,
            message: format!("an engine failed during the comparison: {e}"),
        })
    })
}

/// The scene and engines of a comparison, each checked with the field it came from.
async fn prepare(
    scenes: &SceneLoader,
    registry: &EngineRegistry,
    request: &CompareRequest,
    scope: &Scope,
) -> Result<(Arc<SceneModel>, Vec<Arc<dyn hanzo_twin_engines::Engine>>), TwinError> {
    let mut engines = Vec::new();
    for (i, kind) in request.engines.iter().enumerate() {
        if request.engines[..i].contains(kind) {
            return Err(TwinError::invalid(
                format!("engines[{i}]"),
                format!("{kind} is named twice"),
            ));
        }
        engines.push(registry.get(*kind).map_err(|e| TwinError::Engine {
            kind: crate::error::EngineFailure::NotAvailable,
            field: Some(format!("engines[{i}]")),
            message: e.to_string(),
        })?);
    }
    let org = match scope {
        Scope::Organization(org) => org.as_str(),
        Scope::Node => crate::definition::DEFAULT_ORGANIZATION,
    };
    let scene = scenes.load_scene_spec(org, &request.scene).await?;
    if let Some(native) = &scene.native
        && let Some(i) = request
            .engines
            .iter()
            .position(|k| *k != hanzo_twin_engines::EngineKind::reading(native.format))
    {
        return Err(TwinError::invalid(
            format!("engines[{i}]"),
            format!(
                "the scene is an MJCF model, which only {} loads; compare engines on a USD scene",
                hanzo_twin_engines::EngineKind::reading(native.format)
            ),
        ));
    }
    Ok((scene, engines))
}

//! The infrastructure "engine": an infrastructure twin's services run by the
//! discrete-event simulator of `hanzo-twin-infra` behind the same
//! [`Engine`]/[`Simulation`] traits as physics, so the twin gets forks,
//! checkpoints, placement, failover and the inspector like any other.
//!
//! Its scene is native ([`NativeFormat::Infrastructure`]): the definition,
//! the Kubernetes objects its topology read and the traffic it runs
//! ([`TwinSource`]). A step advances simulated time by `1 / step_hz`
//! seconds, running every request event in between; joints, bodies and
//! pictures are physics' and are refused with a clear error.

use crate::scene::{NativeFormat, SceneModel};
use crate::{
    Engine, EngineCapabilities, EngineConfig, EngineError, EngineKind, Image, JointCommand,
    Observation, RenderParams, SimState, Simulation, StateOwner,
};
use hanzo_twin_infra::InfraSim;
use hanzo_twin_infra::spec::TwinSource;

/// Steps per simulated second at most: a step runs every event it spans,
/// so fine steps buy nothing but overhead.
const MAX_STEP_HZ: u32 = 1000;
/// States are the live requests, queues and histograms: generous, bounded.
const MAX_STATE_BYTES: usize = 256 << 20;
/// Bumped when the encoded simulator changes shape.
const STATE_FORMAT: u32 = 3;

pub struct InfrastructureEngine;

/// The twin's source, read from an infrastructure scene.
pub fn twin_source(scene: &SceneModel) -> Result<TwinSource, EngineError> {
    let native = scene
        .native
        .as_ref()
        .filter(|n| n.format == NativeFormat::Infrastructure)
        .ok_or_else(|| EngineError::Invalid {
            field: "engine.type".into(),
            message: "the infrastructure engine runs infrastructure twins (`type: infrastructure`), not physics scenes".into(),
        })?;
    serde_json::from_str(&native.text).map_err(|e| EngineError::Invalid {
        field: "scene".into(),
        message: format!("not an infrastructure twin's source: {e}"),
    })
}

/// The scene of an infrastructure twin: `source` kept whole.
pub fn scene_of(source: &TwinSource) -> SceneModel {
    SceneModel {
        source: format!("infrastructure:{}", source.spec.name),
        up_axis: crate::scene::Axis::Z,
        gravity: None,
        bodies: Vec::new(),
        joints: Vec::new(),
        cameras: Vec::new(),
        collision_groups: Vec::new(),
        native: Some(crate::scene::NativeScene {
            format: NativeFormat::Infrastructure,
            path: format!("infrastructure:{}", source.spec.name),
            // Plain data with string keys: always representable.
            text: serde_json::to_string(source).unwrap_or_default(),
        }),
        look: Default::default(),
    }
}

impl Engine for InfrastructureEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Infrastructure
    }

    fn capabilities(&self) -> EngineCapabilities {
        EngineCapabilities {
            ray_tracing: false,
            soft_body: false,
            fluid: false,
            max_step_hz: MAX_STEP_HZ,
            gpu_required: false,
            ros_bridge: false,
            parallel_envs: 1,
            // A seeded event simulation whose whole state (generator
            // included) is saved: engines/tests/infrastructure.rs.
            bitwise_restore: true,
            render_outputs: Vec::new(),
        }
    }

    fn load_scene(
        &self,
        scene: &SceneModel,
        config: &EngineConfig,
    ) -> Result<Box<dyn Simulation>, EngineError> {
        self.check_config(config)?;
        let source = twin_source(scene)?;
        let prepared = source.prepare().map_err(infra_error)?;
        Ok(Box::new(InfrastructureSimulation {
            sim: prepared.sim,
            step_s: config.dt(),
            step: 0,
            owner: StateOwner {
                engine: EngineKind::Infrastructure,
                format: STATE_FORMAT,
                scene_fingerprint: scene.fingerprint(),
            },
        }))
    }

    fn check_config(&self, config: &EngineConfig) -> Result<(), EngineError> {
        if let Some(key) = config.extensions.keys().next() {
            return Err(EngineError::Invalid {
                field: format!("engine.config.extensions.{key}"),
                message: "the infrastructure engine reads no engine-specific settings".into(),
            });
        }
        if config.step_hz > f64::from(MAX_STEP_HZ) {
            return Err(EngineError::Invalid {
                field: "engine.config.step_hz".into(),
                message: format!(
                    "at most {MAX_STEP_HZ} steps a simulated second (a step runs every event it spans)"
                ),
            });
        }
        Ok(())
    }
}

/// A model error, named as the definition names it.
pub fn infra_error(e: hanzo_twin_infra::InfraError) -> EngineError {
    let hanzo_twin_infra::InfraError::Invalid { field, message } = e;
    EngineError::Invalid { field, message }
}

pub struct InfrastructureSimulation {
    sim: InfraSim,
    step_s: f64,
    step: u64,
    owner: StateOwner,
}

#[derive(serde::Serialize)]
struct PayloadRef<'a> {
    sim: &'a InfraSim,
    step_s: f64,
    step: u64,
}

#[derive(serde::Deserialize)]
struct Payload {
    sim: InfraSim,
    step_s: f64,
    step: u64,
}

impl InfrastructureSimulation {
    fn physics_only(&self, what: &str) -> EngineError {
        EngineError::Unsupported {
            engine: EngineKind::Infrastructure,
            feature: format!(
                "{what}: an infrastructure twin has services, not bodies or joints (see GET /v1/infra/twins/{{id}})"
            ),
        }
    }
}

impl Simulation for InfrastructureSimulation {
    fn kind(&self) -> EngineKind {
        EngineKind::Infrastructure
    }

    fn step(&mut self) -> Result<(), EngineError> {
        self.step += 1;
        // From the step count, not by adding: a long run keeps to its grid.
        self.sim.run_until(self.step as f64 * self.step_s);
        Ok(())
    }

    fn set_joint_command(
        &mut self,
        _joint_path: &str,
        _cmd: JointCommand,
    ) -> Result<(), EngineError> {
        Err(self.physics_only("joint commands"))
    }

    fn observation(&self, path: &str) -> Result<Observation, EngineError> {
        if path != "/" {
            return Err(self.physics_only("observing a prim"));
        }
        Ok(Observation {
            time: self.time(),
            step: self.step,
            bodies: Vec::new(),
            joints: Vec::new(),
        })
    }

    fn state(&self) -> Result<SimState, EngineError> {
        let payload = PayloadRef {
            sim: &self.sim,
            step_s: self.step_s,
            step: self.step,
        };
        let encoded = bincode::serde::encode_to_vec(&payload, bincode::config::standard())
            .map_err(|e| EngineError::Invalid {
                field: "state".into(),
                message: format!("cannot encode the simulation: {e}"),
            })?;
        Ok(SimState::seal(self.owner, self.time(), self.step, &encoded))
    }

    fn set_state(&mut self, state: &SimState) -> Result<(), EngineError> {
        let encoded = state.open(&self.owner)?;
        let config = bincode::config::standard().with_limit::<MAX_STATE_BYTES>();
        // The checksum rules out corruption; a forged payload must still not
        // unwind into the caller.
        let decoded = std::panic::catch_unwind(|| {
            bincode::serde::decode_from_slice::<Payload, _>(encoded, config)
        })
        .map_err(|_| EngineError::StateMismatch("state data malformed".into()))?;
        let (payload, used) = decoded
            .map_err(|e| EngineError::StateMismatch(format!("state data unreadable: {e}")))?;
        if used != encoded.len() {
            return Err(EngineError::StateMismatch(
                "state data has trailing bytes".into(),
            ));
        }
        if payload.step != state.step {
            return Err(EngineError::StateMismatch(
                "state header disagrees with its data".into(),
            ));
        }
        self.sim = payload.sim;
        self.step_s = payload.step_s;
        self.step = payload.step;
        Ok(())
    }

    fn render(&self, _camera_path: &str, _params: &RenderParams) -> Result<Image, EngineError> {
        Err(self.physics_only("pictures"))
    }

    fn fork(&self) -> Result<Box<dyn Simulation>, EngineError> {
        Ok(Box::new(InfrastructureSimulation {
            sim: self.sim.clone(),
            step_s: self.step_s,
            step: self.step,
            owner: self.owner,
        }))
    }

    fn time(&self) -> f64 {
        self.sim.now()
    }

    fn step_count(&self) -> u64 {
        self.step
    }

    fn infrastructure(&self) -> Option<&InfraSim> {
        Some(&self.sim)
    }

    fn infrastructure_mut(&mut self) -> Option<&mut InfraSim> {
        Some(&mut self.sim)
    }

    fn close(self: Box<Self>) -> Result<(), EngineError> {
        Ok(())
    }
}

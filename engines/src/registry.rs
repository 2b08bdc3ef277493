//! Which engines this node can run.

use crate::{Engine, EngineCapabilities, EngineError, EngineKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The engines built into this node, by kind.
#[derive(Clone, Default)]
pub struct EngineRegistry {
    engines: BTreeMap<EngineKind, Arc<dyn Engine>>,
    /// Engines built in but turned off, with the setting that did it.
    turned_off: BTreeMap<EngineKind, String>,
    /// Engines with a cap on live simulations.
    limits: BTreeMap<EngineKind, Arc<crate::limits::InstanceLimit>>,
}

/// One row of `GET /v1/engines`.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct EngineInfo {
    pub engine: EngineKind,
    pub available: bool,
    pub capabilities: Option<EngineCapabilities>,
    /// For an engine this node lacks: what running it would take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires: Option<String>,
    /// The most simulations of it this node runs at once, when capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<usize>,
    /// Simulations of it alive now, when capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_instances: Option<usize>,
}

/// What each engine needs that a node may lack (see docs/engines.md).
fn requirements(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::Rapier3d => "the `rapier` cargo feature (on by default)",
        EngineKind::Mujoco => {
            "a build with the `mujoco` cargo feature, linked against MuJoCo 3.17's libmujoco (PyPI's mujoco==3.17.0 ships it; see docs/engines.md)"
        }
        EngineKind::Physx => {
            "a build with the `physx` cargo feature (PhysX 5.1 from vendored source; a C++ compiler, CXX=g++)"
        }
        EngineKind::Pybullet => {
            "a build with the `pybullet` cargo feature, and a Python with pybullet==3.2.7 named by HANZO_TWIN_PYBULLET_PYTHON (else python3)"
        }
        EngineKind::Gazebo => {
            "an adapter talking to a Gazebo (gz-sim) server over gz-transport, with Gazebo installed beside the node; not built into this node"
        }
        EngineKind::Infrastructure => "nothing: the infrastructure simulator is always built in",
        EngineKind::Omniverse => {
            "an adapter for NVIDIA Omniverse Kit (an RTX GPU and a license) running beside the node; not built into this node"
        }
    }
}

impl EngineRegistry {
    /// Every engine compiled into this build.
    pub fn with_builtin() -> Self {
        #[allow(unused_mut)]
        let mut registry = EngineRegistry::default();
        #[cfg(feature = "rapier")]
        registry.register(Arc::new(crate::rapier::RapierEngine));
        registry.register(Arc::new(crate::infrastructure::InfrastructureEngine));
        #[cfg(feature = "mujoco")]
        registry.register(Arc::new(crate::mujoco::MujocoEngine));
        #[cfg(feature = "physx")]
        registry.register(Arc::new(crate::physx::PhysxEngine));
        #[cfg(feature = "pybullet")]
        match crate::pybullet::PybulletEngine::detect() {
            Ok(engine) => registry.register(Arc::new(engine)),
            Err(why) => tracing::warn!("pybullet is not available on this node: {why}"),
        }
        registry
    }

    pub fn register(&mut self, engine: Arc<dyn Engine>) {
        self.engines.insert(engine.kind(), engine);
    }

    /// The engine of this kind, or a clear "not available on this node" error.
    pub fn get(&self, kind: EngineKind) -> Result<Arc<dyn Engine>, EngineError> {
        if let Some(setting) = self.turned_off.get(&kind) {
            return Err(EngineError::TurnedOff {
                engine: kind,
                setting: setting.clone(),
            });
        }
        self.engines
            .get(&kind)
            .cloned()
            .ok_or(EngineError::NotAvailable(kind))
    }

    /// Turns an engine off, as `setting` (a configuration key) says: asking
    /// for it names that key, whether or not this node has it.
    pub fn turn_off(&mut self, kind: EngineKind, setting: &str) {
        self.engines.remove(&kind);
        self.limits.remove(&kind);
        self.turned_off.insert(kind, setting.to_string());
    }

    /// Caps the engine's live simulations at `max`, as `setting` says (an
    /// engine this node lacks has none to cap).
    pub fn cap(&mut self, kind: EngineKind, max: usize, setting: &str) {
        if let Some(engine) = self.engines.get(&kind).cloned() {
            let capped = crate::limits::Capped::new(engine, max, setting.to_string());
            self.limits.insert(kind, capped.limit.clone());
            self.engines.insert(kind, Arc::new(capped));
        }
    }

    pub fn is_available(&self, kind: EngineKind) -> bool {
        self.engines.contains_key(&kind)
    }

    /// Every engine the schema knows, with availability here.
    pub fn describe(&self) -> Vec<EngineInfo> {
        EngineKind::ALL
            .into_iter()
            .map(|kind| {
                let engine = self.engines.get(&kind);
                let limit = self.limits.get(&kind);
                EngineInfo {
                    engine: kind,
                    available: engine.is_some(),
                    capabilities: engine.map(|e| e.capabilities()),
                    requires: match self.turned_off.get(&kind) {
                        Some(setting) => Some(format!(
                            "{setting}: true in the node's configuration (it is false)"
                        )),
                        None => engine.is_none().then(|| requirements(kind).to_string()),
                    },
                    max_instances: limit.map(|l| l.max()),
                    live_instances: limit.map(|l| l.live()),
                }
            })
            .collect()
    }
}

//! Which engines this node can run.

use crate::{Engine, EngineCapabilities, EngineError, EngineKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The engines built into this node, by kind.
#[derive(Clone, Default)]
pub struct EngineRegistry {
    engines: BTreeMap<EngineKind, Arc<dyn Engine>>,
}

/// One row of `GET /v1/engines`.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct EngineInfo {
    pub engine: EngineKind,
    pub available: bool,
    pub capabilities: Option<EngineCapabilities>,
    /// For an engine this node lacks: what running it would take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires: Option<&'static str>,
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
        self.engines
            .get(&kind)
            .cloned()
            .ok_or(EngineError::NotAvailable(kind))
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
                EngineInfo {
                    engine: kind,
                    available: engine.is_some(),
                    capabilities: engine.map(|e| e.capabilities()),
                    requires: engine.is_none().then(|| requirements(kind)),
                }
            })
            .collect()
    }
}

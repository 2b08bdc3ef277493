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
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    pub engine: EngineKind,
    pub available: bool,
    pub capabilities: Option<EngineCapabilities>,
}

impl EngineRegistry {
    /// Every engine compiled into this build.
    pub fn with_builtin() -> Self {
        #[allow(unused_mut)]
        let mut registry = EngineRegistry::default();
        #[cfg(feature = "rapier")]
        registry.register(Arc::new(crate::rapier::RapierEngine));
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
                }
            })
            .collect()
    }
}

use crate::EngineKind;

/// Everything an engine or the scene reader can report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The scene file could not be read or parsed.
    #[error("scene {file}: {message}")]
    SceneRead { file: String, message: String },

    /// A prim in the scene is malformed or uses a feature that would change the
    /// physics if dropped.
    #[error("scene prim {prim}: {message}")]
    ScenePrim { prim: String, message: String },

    /// No body, joint or camera at this path.
    #[error("no {what} at path {path}")]
    UnknownPath { what: &'static str, path: String },

    /// A command or parameter with a value the engine cannot take.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },

    /// A state that belongs to another engine, scene or format.
    #[error("state mismatch: {0}")]
    StateMismatch(String),

    /// The engine is known but not built into, or not usable on, this node.
    #[error("engine {0} is not available on this node")]
    NotAvailable(EngineKind),

    /// The engine is built in but the node's configuration turns it off.
    #[error("engine {engine} is turned off on this node ({setting}: false in its configuration)")]
    TurnedOff { engine: EngineKind, setting: String },

    /// Every simulation the node allows of this engine is in use.
    #[error(
        "engine {engine} runs its maximum of {max} simulations on this node ({setting}); stop or delete a twin, or try another node"
    )]
    AtCapacity {
        engine: EngineKind,
        max: usize,
        setting: String,
    },

    /// The engine does not support this operation at all.
    #[error("{engine} does not support {feature}")]
    Unsupported { engine: EngineKind, feature: String },

    /// The engine itself failed (its worker process died, say); the simulation
    /// is gone and its twin restarts from the last checkpoint.
    #[error("{engine} failed: {message}")]
    Failed { engine: EngineKind, message: String },

    /// The simulation became numerically invalid (NaN or infinite positions).
    #[error("simulation diverged: {0}")]
    Diverged(String),
}

impl From<hanzo_twin_scene::SceneError> for EngineError {
    fn from(e: hanzo_twin_scene::SceneError) -> Self {
        match e {
            hanzo_twin_scene::SceneError::Read { file, message } => {
                EngineError::SceneRead { file, message }
            }
            hanzo_twin_scene::SceneError::Prim { prim, message } => {
                EngineError::ScenePrim { prim, message }
            }
        }
    }
}

impl From<hanzo_twin_scene::tree::PlanError> for EngineError {
    fn from(e: hanzo_twin_scene::tree::PlanError) -> Self {
        hanzo_twin_scene::SceneError::from(e).into()
    }
}

/// What a caught panic said (its payload, when it is text).
pub use hanzo_twin_scene::panic_text;

impl EngineError {
    /// A command or a set position for a joint that has no single axis: a
    /// fixed joint does not move, a spherical one turns freely.
    pub fn not_single_axis(
        field: String,
        kind: hanzo_twin_scene::scene::JointKind,
        what: &str,
    ) -> EngineError {
        use hanzo_twin_scene::scene::JointKind;
        let message = match kind {
            JointKind::Spherical => format!(
                "a spherical joint takes no {what}: it turns freely, and commands and set positions are for joints that move along or about one axis"
            ),
            _ => format!("a {} joint takes no {what}", kind.name()),
        };
        EngineError::Invalid { field, message }
    }
}

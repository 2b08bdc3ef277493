use crate::definition::DefinitionError;
use hanzo_twin_engines::EngineError;
use serde::{Deserialize, Serialize};

/// Why an engine refused or could not do something: one kind per
/// [`EngineError`], the same in process, on the wire between nodes (as its
/// snake_case name) and as the API's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineFailure {
    /// The engine is not built into this node.
    NotAvailable,
    /// No body or joint at the path.
    UnknownPath,
    /// A setting or value the engine refuses.
    Invalid,
    /// A state of another engine, format or scene, or a corrupt one.
    StateMismatch,
    /// The scene could not be read or has a prim the engine cannot load.
    Scene,
    /// The engine cannot do this at all.
    Unsupported,
    /// The simulation blew up (NaN, runaway velocities).
    Diverged,
    /// The engine itself failed (a worker process died).
    EngineFailed,
    /// The node runs as many simulations of the engine as it allows.
    AtCapacity,
}

impl EngineFailure {
    /// The name clients see (the API's `error.code`).
    pub fn code(self) -> &'static str {
        match self {
            EngineFailure::NotAvailable => "not_available",
            EngineFailure::UnknownPath => "unknown_path",
            EngineFailure::Invalid => "invalid",
            EngineFailure::StateMismatch => "state_mismatch",
            EngineFailure::Scene => "scene",
            EngineFailure::Unsupported => "unsupported",
            EngineFailure::Diverged => "diverged",
            EngineFailure::EngineFailed => "engine_failed",
            EngineFailure::AtCapacity => "at_capacity",
        }
    }

    /// Whether the simulation cannot go on after it: the twin fails, and
    /// its supervisor restarts it from its last checkpoint.
    pub fn ends_the_simulation(self) -> bool {
        matches!(self, EngineFailure::Diverged | EngineFailure::EngineFailed)
    }
}

/// Every failure a twin request can meet. The API maps each kind to a status code;
/// embedded agents match on it. It crosses nodes as it is (JSON, `kind` and
/// `detail`), so the caller on another node meets the same error.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum TwinError {
    #[error("twin {0} not found")]
    NotFound(String),

    #[error("gym environment {0} not found")]
    EnvNotFound(String),

    /// The definition or request does not validate.
    #[error("{0}")]
    Invalid(DefinitionError),

    /// The request conflicts with the twin's current state (e.g. already running,
    /// or a duplicate name).
    #[error("{0}")]
    Conflict(String),

    /// The caller may not do this, e.g. create a twin in another organization.
    #[error("{message}")]
    Forbidden {
        field: Option<String>,
        message: String,
    },

    /// The twin must be running for this request.
    #[error("twin {0} is not running; start it first")]
    NotRunning(String),

    /// The twin crashed more often than its restart limit and is down.
    #[error("twin {id} has failed: {reason}")]
    Failed { id: String, reason: String },

    /// The engine refused or could not do it.
    #[error("{message}")]
    Engine {
        kind: EngineFailure,
        field: Option<String>,
        message: String,
    },

    /// The store or object storage failed.
    #[error("storage: {0}")]
    Storage(String),

    /// No answer in time.
    #[error("twin {id} did not answer {what} within {timeout_ms} ms")]
    Timeout {
        id: String,
        what: std::borrow::Cow<'static, str>,
        timeout_ms: u64,
    },

    /// The node has as many requests in flight as it admits
    /// (`server.max_in_flight`); nothing was done. Retry shortly.
    #[error("the node is at its limit of {limit} requests in flight; retry shortly")]
    Overloaded { limit: usize },

    /// The actor holding the twin went away mid-request.
    #[error("twin {0} is unavailable (its actor stopped); retry shortly")]
    Unavailable(String),

    /// The twin is being handed from node `from` to this one (`to`):
    /// placement gave it here, but `from` still holds it.
    #[error("twin {twin} is moving from node {from} to node {to}; retry shortly")]
    Moving {
        twin: String,
        from: String,
        to: String,
    },

    /// The node that holds the twin did not answer in time, or cannot be
    /// reached.
    #[error("twin {twin} is on node {node}, which did not answer: {reason}")]
    NodeUnavailable {
        twin: String,
        node: String,
        reason: String,
    },
}

impl TwinError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> TwinError {
        TwinError::Invalid(DefinitionError {
            field: field.into(),
            line: None,
            column: None,
            message: message.into(),
        })
    }
}

impl From<DefinitionError> for TwinError {
    fn from(e: DefinitionError) -> Self {
        TwinError::Invalid(e)
    }
}

impl From<EngineError> for TwinError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        let (kind, field) = match &e {
            EngineError::SceneRead { .. } | EngineError::ScenePrim { .. } => {
                (EngineFailure::Scene, Some("scene.uri".to_string()))
            }
            EngineError::UnknownPath { .. } => (EngineFailure::UnknownPath, Some("path".into())),
            EngineError::Invalid { field, .. } => (EngineFailure::Invalid, Some(field.clone())),
            EngineError::StateMismatch(_) => (EngineFailure::StateMismatch, None),
            EngineError::NotAvailable(_) | EngineError::TurnedOff { .. } => {
                (EngineFailure::NotAvailable, Some("engine.type".to_string()))
            }
            EngineError::AtCapacity { .. } => (EngineFailure::AtCapacity, None),
            EngineError::Unsupported { .. } => (EngineFailure::Unsupported, None),
            EngineError::Diverged(_) => (EngineFailure::Diverged, None),
            EngineError::Failed { .. } => (EngineFailure::EngineFailed, None),
        };
        TwinError::Engine {
            kind,
            field,
            message,
        }
    }
}

use crate::definition::DefinitionError;
use hanzo_twin_engines::EngineError;

/// Every failure a twin request can meet. The API maps each kind to a status code;
/// embedded agents match on it.
#[derive(Debug, Clone, thiserror::Error)]
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
        /// `not_available`, `unknown_path`, `invalid`, `state_mismatch`,
        /// `scene`, `unsupported` or `diverged`.
        kind: &'static str,
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
        what: &'static str,
        timeout_ms: u64,
    },

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
                ("scene", Some("scene.uri".to_string()))
            }
            EngineError::UnknownPath { .. } => ("unknown_path", Some("path".to_string())),
            EngineError::Invalid { field, .. } => ("invalid", Some(field.clone())),
            EngineError::StateMismatch(_) => ("state_mismatch", None),
            EngineError::NotAvailable(_) => ("not_available", Some("engine.type".to_string())),
            EngineError::Unsupported { .. } => ("unsupported", None),
            EngineError::Diverged(_) => ("diverged", None),
            EngineError::Failed { .. } => ("engine_failed", None),
        };
        TwinError::Engine {
            kind,
            field,
            message,
        }
    }
}

//! Every failure as HTTP: a fitting status and `{"error": {code, message, field, line}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hanzo_twin_actors::TwinError;
use serde::Serialize;

/// Every error the API answers: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// What went wrong: a stable `code`, a message for people, and where the
/// input was wrong when it was.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
                field: None,
                line: None,
                column: None,
            },
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid", message);
        e.body.field = Some(field.into());
        e
    }

    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.body.field = Some(field.into());
        self
    }
}

impl From<TwinError> for ApiError {
    fn from(e: TwinError) -> Self {
        let message = e.to_string();
        match e {
            TwinError::NotFound(_) | TwinError::EnvNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            TwinError::Invalid(d) => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: ErrorBody {
                    code: "invalid".into(),
                    message: d.message.clone(),
                    field: Some(d.field.clone()).filter(|f| !f.is_empty()),
                    line: d.line,
                    column: d.column,
                },
            },
            TwinError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            TwinError::Forbidden { field, .. } => {
                let mut e = ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
                e.body.field = field;
                e
            }
            TwinError::NotRunning(_) => ApiError::new(StatusCode::CONFLICT, "not_running", message),
            TwinError::Failed { .. } => ApiError::new(StatusCode::CONFLICT, "failed", message),
            TwinError::Engine { kind, field, .. } => {
                use hanzo_twin_actors::error::EngineFailure::*;
                let status = match kind {
                    NotAvailable | Unsupported | Diverged => StatusCode::UNPROCESSABLE_ENTITY,
                    EngineFailed | AtCapacity => StatusCode::SERVICE_UNAVAILABLE,
                    UnknownPath | Invalid | StateMismatch | Scene => StatusCode::BAD_REQUEST,
                };
                let mut e = ApiError::new(status, kind.code(), message);
                e.body.field = field;
                e
            }
            TwinError::Storage(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", message)
            }
            TwinError::Timeout { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
            }
            TwinError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            TwinError::Overloaded { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            }
            TwinError::Moving { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "moving", message)
            }
            TwinError::NodeUnavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_unavailable", message)
            }
        }
    }
}

/// An error response's `code`, kept beside its body so that layers (the
/// audit) read it without buffering the body.
#[derive(Debug, Clone)]
pub struct ErrorCode(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = ErrorCode(self.body.code.clone());
        let body = ErrorResponse { error: self.body };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(code);
        response
    }
}

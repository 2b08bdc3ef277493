//! The audit log: who did what to which resource, when, and how it ended. Every
//! route that changes something writes an entry (see [`crate::guard`]); admins
//! read their organization's entries with `GET /v1/audit`.

use crate::error::ApiError;
use crate::guard::Caller;
use crate::openapi::Errors;
use crate::rbac::Role;
use crate::{ApiResult, ApiState};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The request succeeded.
    Ok,
    /// The caller's roles do not allow it; nothing was done.
    Denied,
    /// It was allowed but failed (bad input, conflict, engine error, …).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned by the log; increasing.
    #[serde(default)]
    pub id: u64,
    pub time: DateTime<Utc>,
    /// The token's subject.
    pub actor: String,
    pub organization: String,
    pub roles: Vec<Role>,
    /// What was attempted, e.g. `twins.create`, `twins.fork`, `infra.inject_chaos`.
    pub action: String,
    /// The permission the route requires, e.g. `twins:create`.
    pub permission: String,
    /// The resource named in the path (a twin id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A resource the request created (the new twin or fork's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub method: String,
    pub path: String,
    pub outcome: Outcome,
    pub status: u16,
    /// The error code when the outcome is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which entries to read; always within one organization.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub organization: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// Only entries with a smaller id (paging backwards).
    pub before: Option<u64>,
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        e.organization == self.organization
            && self.since.is_none_or(|t| e.time >= t)
            && self.until.is_none_or(|t| e.time < t)
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self.action.as_ref().is_none_or(|a| &e.action == a)
            && self.outcome.is_none_or(|o| e.outcome == o)
            && self.before.is_none_or(|b| e.id < b)
    }
}

/// Durable storage of audit entries.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Stores `entry` durably (it survives a crash once this returns) and
    /// returns its id.
    async fn append(&self, entry: AuditEntry) -> Result<u64, String>;
    /// Matching entries, newest first, at most `query.limit`.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, String>;
}

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

fn time_param(field: &str, value: Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(
                        field,
                        format!("`{v}` is not an RFC 3339 time like 2026-11-26T09:00:00Z: {e}"),
                    )
                })
        })
        .transpose()
}

fn number_param<T: std::str::FromStr>(
    field: &str,
    value: Option<String>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| ApiError::invalid(field, format!("`{v}` is not a whole number")))
        })
        .transpose()
}

/// `GET /v1/audit?since=&until=&actor=&action=&outcome=&before=&limit=`
#[utoipa::path(get, path = "/v1/audit", operation_id = "audit_list", tag = "cluster", params(AuditParams), responses((status = 200, description = "Audit entries of the caller's organization, newest first", body = Object), Errors))]
pub(crate) async fn list(
    State(s): State<ApiState>,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult {
    let limit = number_param::<usize>("limit", p.limit)?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let outcome = match p.outcome.as_deref() {
        None => None,
        Some("ok") => Some(Outcome::Ok),
        Some("denied") => Some(Outcome::Denied),
        Some("failed") => Some(Outcome::Failed),
        Some(other) => {
            return Err(ApiError::invalid(
                "outcome",
                format!("`{other}` is not an outcome; use ok, denied or failed"),
            ));
        }
    };
    let query = AuditQuery {
        organization: caller.principal.organization.to_string(),
        since: time_param("since", p.since)?,
        until: time_param("until", p.until)?,
        actor: p.actor,
        action: p.action,
        outcome,
        before: number_param("before", p.before)?,
        limit,
    };
    let entries = s.auth.audit.query(&query).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("cannot read the audit log: {e}"),
        )
    })?;
    // Where the next page starts, if this one is full.
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({ "entries": entries, "next_before": next_before })),
    )
        .into_response())
}

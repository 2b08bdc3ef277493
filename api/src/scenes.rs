//! `/v1/scenes`: the spec's Scene Manager. Scenes are versioned USD packages
//! (the root file and every file it references) kept in object storage per
//! organization. Versions are immutable, and an upload is atomic: a version
//! exists once its manifest is written, which happens last.

use crate::error::ApiError;
use crate::guard::{Caller, Created, DELETE, GET, POST, Routes};
use crate::openapi::Errors;
use crate::rbac::{Action, Permission, Resource};
use crate::{ApiResult, ApiState, attachment, parse_json};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hanzo_twin_engines::EngineKind;
use hanzo_twin_engines::findings::Finding;
use serde::{Deserialize, Serialize};

/// One file of a scene version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneFile {
    /// Relative to the package root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the contents.
    pub sha256: String,
}

/// What the reader found in a version's root file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneContents {
    pub bodies: usize,
    pub joints: usize,
    pub fingerprint: String,
    /// Physics the scene model cannot represent (the first such prim): the
    /// version is stored, but no engine here can run it until that changes;
    /// validation reports it per engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<UnsupportedPrim>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnsupportedPrim {
    pub prim: String,
    pub message: String,
}

/// A stored, immutable scene version: its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneVersion {
    pub name: String,
    pub organization: String,
    pub version: u32,
    /// The root USD file, relative to the package.
    pub root: String,
    pub files: Vec<SceneFile>,
    pub size_bytes: u64,
    pub uploaded_at: DateTime<Utc>,
    pub uploaded_by: String,
    pub contents: SceneContents,
    /// Where the files live inside the scenes bucket.
    #[serde(default)]
    pub storage_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneSummary {
    pub name: String,
    pub latest_version: u32,
    pub versions: usize,
    pub updated_at: DateTime<Utc>,
}

/// Whether a scene version loads into an engine, and what each prim became
/// there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub scene: String,
    pub version: u32,
    pub engine: EngineKind,
    /// The engine runs on this node.
    pub available: bool,
    /// The scene loaded and stepped in the engine.
    pub ok: bool,
    pub bodies: usize,
    pub joints: usize,
    /// Why it did not load, naming the prim or file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every physics prim: supported, approximated (with how) or unsupported.
    pub findings: Vec<Finding>,
    /// How many findings of each kind.
    pub supported: usize,
    pub approximated: usize,
    pub unsupported: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SceneError {
    #[error("scene {0} not found")]
    NotFound(String),
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<SceneError> for ApiError {
    fn from(e: SceneError) -> ApiError {
        let message = e.to_string();
        match e {
            SceneError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            SceneError::Invalid { field, .. } => ApiError::invalid(field, message),
            SceneError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            SceneError::Storage(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", message)
            }
        }
    }
}

/// Where scenes are kept. Every call is within one organization.
#[async_trait::async_trait]
pub trait SceneCatalog: Send + Sync {
    async fn list(&self, org: &str) -> Result<Vec<SceneSummary>, SceneError>;
    /// All versions, oldest first; `NotFound` when there are none.
    async fn versions(&self, org: &str, name: &str) -> Result<Vec<SceneVersion>, SceneError>;
    /// Stores a tar archive of a scene package as the next version. `root`
    /// names the root USD file; when absent the archive must hold exactly one
    /// USD file at its top level.
    async fn upload(
        &self,
        org: &str,
        name: &str,
        root: Option<&str>,
        archive: Bytes,
        uploaded_by: &str,
    ) -> Result<SceneVersion, SceneError>;
    /// The version (latest when `None`) as a tar archive.
    async fn archive(
        &self,
        org: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<(SceneVersion, Vec<u8>), SceneError>;
    async fn validate(
        &self,
        org: &str,
        name: &str,
        version: Option<u32>,
        engine: EngineKind,
    ) -> Result<ValidationReport, SceneError>;
    /// URLs that fetch each file of the version straight from object storage
    /// for `expires_in`, without credentials; `Invalid` when the store cannot
    /// sign.
    async fn presigned(
        &self,
        org: &str,
        name: &str,
        version: Option<u32>,
        expires_in: std::time::Duration,
    ) -> Result<(SceneVersion, Vec<(String, String)>), SceneError>;
    /// Deletes one version, or every version when `None`.
    async fn delete(&self, org: &str, name: &str, version: Option<u32>) -> Result<(), SceneError>;
}

const fn scenes(action: Action) -> Permission {
    Permission::new(Resource::Scenes, action)
}

pub(crate) fn routes(max_upload_bytes: usize) -> Routes {
    use Action::*;
    Routes::new()
        .protected(GET, "/v1/scenes", scenes(Read), list)
        .audited(POST, "/v1/scenes", scenes(Upload), "scenes.upload", upload)
        .body_limit(max_upload_bytes)
        .protected(GET, "/v1/scenes/{id}", scenes(Read), get_scene)
        .audited(
            DELETE,
            "/v1/scenes/{id}",
            scenes(Delete),
            "scenes.delete",
            delete,
        )
        .protected(POST, "/v1/scenes/{id}/validate", scenes(Read), validate)
        .protected(GET, "/v1/scenes/{id}/download", scenes(Read), download)
}

fn catalog(s: &ApiState) -> Result<&dyn SceneCatalog, ApiError> {
    s.scenes.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_available",
            "this node keeps no scene library",
        )
    })
}

#[utoipa::path(get, path = "/v1/scenes", operation_id = "scenes_list", tag = "scenes", responses((status = 200, description = "The organization's scenes", body = Object), Errors))]
pub(crate) async fn list(State(s): State<ApiState>, caller: Caller) -> ApiResult {
    let org = caller.principal.organization.to_string();
    let scenes = catalog(&s)?.list(&org).await?;
    Ok(axum::Json(serde_json::json!({ "scenes": scenes })).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    name: Option<String>,
    root: Option<String>,
}

#[utoipa::path(post, path = "/v1/scenes", operation_id = "scenes_upload", tag = "scenes", params(UploadQuery), request_body(description = "A tar archive of the scene's files (any content type is read as one)", content((Vec<u8> = "application/x-tar"), (Vec<u8> = "application/octet-stream"))), responses((status = 201, description = "The new version", body = Object), Errors))]
pub(crate) async fn upload(
    State(s): State<ApiState>,
    caller: Caller,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> ApiResult {
    let name = q.name.ok_or_else(|| {
        ApiError::invalid("name", "give the scene's name: POST /v1/scenes?name=<name>")
    })?;
    if body.is_empty() {
        return Err(ApiError::invalid(
            "archive",
            "the body must be a tar archive of the scene's files",
        ));
    }
    let org = caller.principal.organization.to_string();
    let version = catalog(&s)?
        .upload(
            &org,
            &name,
            q.root.as_deref(),
            body,
            &caller.principal.subject,
        )
        .await?;
    let mut response = (StatusCode::CREATED, axum::Json(&version)).into_response();
    response
        .extensions_mut()
        .insert(Created(format!("{}@{}", version.name, version.version)));
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct VersionQuery {
    version: Option<u32>,
}

#[utoipa::path(get, path = "/v1/scenes/{id}", operation_id = "scenes_get_scene", tag = "scenes", params(("id" = String, Path, description = "The scene's name")), responses((status = 200, description = "The scene's versions", body = Object), Errors))]
pub(crate) async fn get_scene(
    State(s): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    let org = caller.principal.organization.to_string();
    let versions = catalog(&s)?.versions(&org, &name).await?;
    let latest = versions.last().map(|v| v.version);
    Ok(axum::Json(serde_json::json!({
        "name": name,
        "organization": org,
        "latest_version": latest,
        "versions": versions,
    }))
    .into_response())
}

#[utoipa::path(delete, path = "/v1/scenes/{id}", operation_id = "scenes_delete", tag = "scenes", params(("id" = String, Path, description = "The scene's name"), VersionQuery), responses((status = 204, description = "Deleted"), Errors))]
pub(crate) async fn delete(
    State(s): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult {
    let org = caller.principal.organization.to_string();
    catalog(&s)?.delete(&org, &name, q.version).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateRequest {
    engine: EngineKind,
    #[serde(default)]
    version: Option<u32>,
}

#[utoipa::path(post, path = "/v1/scenes/{id}/validate", operation_id = "scenes_validate", tag = "scenes", params(("id" = String, Path, description = "The scene's name")), request_body(content = ValidateRequest, content_type = "application/json"), responses((status = 200, description = "What the engine makes of the scene", body = Object), Errors))]
pub(crate) async fn validate(
    State(s): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: ValidateRequest = parse_json(&body, false)?;
    let org = caller.principal.organization.to_string();
    let report = catalog(&s)?
        .validate(&org, &name, req.version, req.engine)
        .await?;
    Ok(axum::Json(report).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DownloadQuery {
    version: Option<u32>,
    /// Answer with pre-signed URLs (S3) instead of the archive.
    #[serde(default)]
    presign: bool,
    expires_s: Option<u64>,
}

/// Longest validity of a pre-signed URL (S3's own limit is a week).
const MAX_PRESIGN_S: u64 = 7 * 24 * 3600;

#[utoipa::path(get, path = "/v1/scenes/{id}/download", operation_id = "scenes_download", tag = "scenes", params(("id" = String, Path, description = "The scene's name"), DownloadQuery), responses((status = 200, description = "The archive, or with presign=true the files' presigned URLs", content((Vec<u8> = "application/x-tar"), (Object = "application/json"))), Errors))]
pub(crate) async fn download(
    State(s): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> ApiResult {
    let org = caller.principal.organization.to_string();
    if q.presign {
        let expires_s = q.expires_s.unwrap_or(900);
        if expires_s == 0 || expires_s > MAX_PRESIGN_S {
            return Err(ApiError::invalid(
                "expires_s",
                format!("expires_s must be between 1 and {MAX_PRESIGN_S}"),
            ));
        }
        let (version, urls) = catalog(&s)?
            .presigned(
                &org,
                &name,
                q.version,
                std::time::Duration::from_secs(expires_s),
            )
            .await?;
        let expires_at = chrono::Utc::now() + chrono::Duration::seconds(expires_s as i64);
        let files: Vec<_> = urls
            .into_iter()
            .map(|(path, url)| {
                let sha256 = version
                    .files
                    .iter()
                    .find(|f| f.path == path)
                    .map(|f| f.sha256.clone());
                serde_json::json!({ "path": path, "url": url, "sha256": sha256 })
            })
            .collect();
        return Ok(axum::Json(serde_json::json!({
            "name": version.name,
            "version": version.version,
            "root": version.root,
            "expires_at": expires_at,
            "files": files,
        }))
        .into_response());
    }
    let (version, archive) = catalog(&s)?.archive(&org, &name, q.version).await?;
    let filename = format!("{}-v{}.tar", version.name, version.version);
    Ok(attachment("application/x-tar", &filename, archive))
}

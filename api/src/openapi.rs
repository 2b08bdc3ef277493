//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the request and response types, served at
//! `/v1/openapi.json`, with a page that reads it at `/docs`. A test checks
//! that every route of [`crate::endpoints`] is in it.

use crate::error::ErrorResponse;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hanzo Twin API",
        description = "Digital twins (HIP-0082): define, run, fork, checkpoint and sync twins; RL environments; the scene library. Every protected route takes `Authorization: Bearer <token>`; every error is `{\"error\": {code, message, field?, line?, column?}}`."
    ),
    paths(
        crate::alive,
        crate::ready,
        openapi_json,
        docs_page,
        crate::engines,
        crate::compare_engines,
        crate::cluster_nodes,
        crate::audit::list,
        crate::twins::list,
        crate::twins::create,
        crate::twins::get_twin,
        crate::twins::update,
        crate::twins::delete,
        crate::twins::start,
        crate::twins::stop,
        crate::twins::state,
        crate::twins::fork,
        crate::twins::step,
        crate::twins::commands,
        crate::twins::observation,
        crate::twins::clock,
        crate::twins::parameters,
        crate::twins::set_parameters,
        crate::twins::sync_status,
        crate::twins::sync_history,
        crate::twins::download_checkpoint,
        crate::twins::export,
        crate::twins::restore_checkpoint,
        crate::twins::inject_fault,
        crate::infra::list,
        crate::infra::status,
        crate::infra::inject,
        crate::infra::replay,
        crate::twin_view::geometry,
        crate::twin_view::pose_events,
        crate::twin_view::render,
        crate::gym::list,
        crate::gym::create,
        crate::gym::get_env,
        crate::gym::render,
        crate::gym::delete,
        crate::gym::reset,
        crate::gym::step,
        crate::gym::send,
        crate::gym::recv,
        crate::jobs::submit,
        crate::jobs::list,
        crate::jobs::get_job,
        crate::jobs::cancel,
        crate::jobs::logs,
        crate::jobs::artifact,
        crate::synthdata::generate,
        crate::synthdata::status,
        crate::synthdata::dataset,
        crate::inspector::page,
        crate::inspector::twin_page,
        crate::inspector::asset,
        crate::inspector::tree,
        crate::inspector::events,
        crate::inspector::stats,
        crate::inspector::whoami,
        crate::scenes::list,
        crate::scenes::upload,
        crate::scenes::get_scene,
        crate::scenes::delete,
        crate::scenes::validate,
        crate::scenes::download,
    ),
    components(schemas(ErrorResponse, hanzo_twin_actors::jobs::JobLogLine)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "probes", description = "Liveness and readiness; no token."),
        (name = "twins", description = "Twins: definitions, lifecycle, forks, checkpoints."),
        (name = "control", description = "A running twin's control loop: step, commands, observation, state, clock."),
        (name = "sync", description = "How a twin follows its physical counterpart."),
        (name = "infra", description = "Infrastructure twins: services simulated as events, their reports and assertions, and chaos."),
        (name = "gym", description = "Gymnasium-compatible RL environment batches."),
        (name = "jobs", description = "Long-running work: reinforcement-learning training and evaluation, with progress, logs and artifacts."),
        (name = "scenes", description = "The organization's scene library."),
        (name = "synthdata", description = "Labelled image datasets drawn from twins: COCO annotations, depth, normals and segmentation."),
        (name = "cluster", description = "Nodes, the supervision tree, engines and the audit log."),
        (name = "api", description = "This document."),
    )
)]
pub struct ApiDoc;

/// Bearer tokens: the node's own (development) or an identity provider's JWT.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The errors every protected route may answer, beside its own.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes responses; never built.
pub(crate) enum Errors {
    /// The request is malformed or fails validation; `error.field` names the field.
    #[response(status = 400)]
    Invalid(#[to_schema] ErrorResponse),
    /// No token, or one that does not verify.
    #[response(status = 401)]
    Unauthenticated(#[to_schema] ErrorResponse),
    /// The token's roles do not allow this.
    #[response(status = 403)]
    Forbidden(#[to_schema] ErrorResponse),
    /// No such resource in the caller's organization.
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorResponse),
    /// The resource's state does not allow this now (a name taken, a twin not running).
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorResponse),
    /// The body is larger than the node accepts.
    #[response(status = 413)]
    TooLarge(#[to_schema] ErrorResponse),
    /// The body's media type is not one this route reads.
    #[response(status = 415)]
    UnsupportedMediaType(#[to_schema] ErrorResponse),
    /// The engine cannot do it (not available here, unsupported, diverged).
    #[response(status = 422)]
    Unprocessable(#[to_schema] ErrorResponse),
    /// Over the token's request rate; `Retry-After` says when to retry.
    #[response(status = 429)]
    RateLimited(#[to_schema] ErrorResponse),
    /// The node is busy, starting, or the twin's node is unreachable.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorResponse),
    /// The twin or node did not answer within the call timeout.
    #[response(status = 504)]
    Timeout(#[to_schema] ErrorResponse),
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        open_flattened_definition(&mut doc);
        camel_case_links(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    })
}

/// utoipa 5.5 writes a Link Object's fields in snake case (`operation_id`);
/// OpenAPI names them `operationId`, `operationRef` and `requestBody`, and
/// tools that follow links (schemathesis' stateful phase) read only those.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op["responses"].as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(snake) {
                    link.insert(camel.to_string(), v);
                }
            }
        }
    }
}

/// A twin in a response is its definition's fields plus the node's own
/// (`TwinResource` flattens `TwinDefinition`). The generator writes that as
/// `allOf: [TwinDefinition, {…}]`, but a definition refuses unknown fields
/// (`additionalProperties: false`), which would refuse the node's fields
/// too: the response schema gets a copy of the definition that allows them.
fn open_flattened_definition(doc: &mut serde_json::Value) {
    let schemas = &mut doc["components"]["schemas"];
    let mut open = schemas["TwinDefinition"].clone();
    if let Some(o) = open.as_object_mut() {
        o.remove("additionalProperties");
    }
    if let Some(parts) = schemas["TwinResource"]["allOf"].as_array_mut() {
        for part in parts {
            if part["$ref"] == "#/components/schemas/TwinDefinition" {
                *part = open.clone();
            }
        }
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "api", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

/// A page that lists the API from its OpenAPI document (no outside scripts).
#[utoipa::path(get, path = "/docs", tag = "api", security(()),
    responses((status = 200, description = "The API reference page", content_type = "text/html", body = String)))]
pub(crate) async fn docs_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("openapi/docs.html"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(document()).expect("the document is JSON")
    }

    #[test]
    fn every_route_is_in_the_document_and_nothing_else() {
        let doc = doc();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().expect("paths");
        let mut missing = Vec::new();
        let mut routes = std::collections::BTreeSet::new();
        for e in crate::endpoints() {
            let method = e.method.to_ascii_lowercase();
            routes.insert((e.path.to_string(), method.clone()));
            if paths
                .get(e.path)
                .and_then(|item| item.get(&method))
                .is_none()
            {
                missing.push(format!("{} {}", e.method, e.path));
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                assert!(
                    routes.contains(&(path.clone(), method.clone())),
                    "the document describes {method} {path}, which is no route"
                );
            }
        }
    }

    #[test]
    fn public_routes_need_no_token_and_protected_ones_name_the_bearer_scheme() {
        let doc = doc();
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for e in crate::endpoints() {
            let op = &doc["paths"][e.path][e.method.to_ascii_lowercase()];
            let public = matches!(e.access, crate::guard::Access::Public);
            let open = op["security"]
                .as_array()
                .is_some_and(|s| s.len() == 1 && s[0] == serde_json::json!({}));
            assert_eq!(
                public, open,
                "{} {}: public {public}, security {}",
                e.method, e.path, op["security"]
            );
            if !public {
                assert!(
                    op["responses"]["401"]["content"]["application/json"].is_object(),
                    "{} {} documents no 401 error body",
                    e.method,
                    e.path
                );
            }
        }
    }

    /// Operation ids are unique (OpenAPI requires it), and every link from a
    /// response names one of them.
    #[test]
    fn operation_ids_are_unique_and_links_follow_them() {
        let doc = doc();
        let mut ids = std::collections::BTreeSet::new();
        let ops: Vec<&Value> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("item").values())
            .collect();
        for op in &ops {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
        }
        let mut links = 0;
        for op in &ops {
            for response in op["responses"].as_object().expect("responses").values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = link["operationId"].as_str().expect("link operationId");
                    assert!(ids.contains(target), "a link names no operation: {target}");
                    links += 1;
                }
            }
        }
        assert!(
            links >= 7,
            "create and fork link to what follows them ({links} links)"
        );
    }

    /// Every `$ref` names a schema the document defines.
    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut unresolved = Vec::new();
        fn walk(v: &Value, schemas: &serde_json::Map<String, Value>, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let name = r.trim_start_matches("#/components/schemas/");
                        if !schemas.contains_key(name) {
                            out.push(r.clone());
                        }
                    }
                    m.values().for_each(|x| walk(x, schemas, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, schemas, out)),
                _ => {}
            }
        }
        walk(&doc, schemas, &mut unresolved);
        assert!(
            unresolved.is_empty(),
            "unresolved references: {unresolved:?}"
        );
    }
}

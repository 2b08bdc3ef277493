//! The one place that decides who may call what. Routes can only be added to
//! the API through [`Routes`], which demands each route's [`Access`]; the guard
//! it wraps around every protected route then
//!
//! 1. verifies the bearer token (401 otherwise),
//! 2. applies the token's rate limit for the route's [`RateClass`] (429 with
//!    `Retry-After`),
//! 3. asks [`crate::rbac`] whether the caller's roles hold the route's
//!    permission (403 otherwise),
//! 4. hands the handler a [`Caller`], whose organization scopes every twin
//!    request (other organizations' twins answer 404), and
//! 5. writes an audit entry for every route that changes something.

use crate::ApiState;
use crate::audit::{AuditEntry, AuditLog, Outcome};
use crate::auth::{AuthError, Principal, TokenVerifier};
use crate::error::ApiError;
use crate::rbac::{self, Grant, Permission, Role};
use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use hanzo_twin_actors::TwinNode;
use serde::Serialize;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Access {
    /// Anyone, no token: liveness and readiness probes only.
    Public,
    /// A verified token whose roles hold `permission`. With `audit`, every
    /// call is recorded under that action name.
    Protected {
        permission: Permission,
        audit: Option<&'static str>,
    },
}

/// One route of the API and who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// Which of the token's request budgets the route draws on.
    pub rate_class: RateClass,
}

/// A token's request budgets. CRUD and lifecycle requests are few; an agent's
/// control loop of a running twin is many small requests a second by design,
/// so it has a budget of its own, sized for agents; the RL training loop is
/// not limited at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateClass {
    /// `auth.rate_limit.per_second` / `burst`.
    Crud,
    /// `auth.rate_limit.control_per_second` / `control_burst`: step,
    /// commands, observation, state and clock.
    Control,
    /// Not limited: probes and the gym training loop.
    Unlimited,
}

/// An HTTP method as both the router and the endpoint table need it.
#[derive(Clone, Copy)]
pub struct Method(MethodFilter, &'static str);

pub const GET: Method = Method(MethodFilter::GET, "GET");
pub const POST: Method = Method(MethodFilter::POST, "POST");
pub const PUT: Method = Method(MethodFilter::PUT, "PUT");
pub const PATCH: Method = Method(MethodFilter::PATCH, "PATCH");
pub const DELETE: Method = Method(MethodFilter::DELETE, "DELETE");

/// The router's routes and their access rules, built together so no route
/// exists without one. Needs no node: [`crate::endpoints`] lists the table.
pub struct Routes {
    routes: Vec<(Endpoint, MethodRouter<ApiState>)>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes { routes: Vec::new() }
    }

    fn add<H, T>(self, method: Method, path: &'static str, access: Access, handler: H) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.add_endpoint(
            Endpoint {
                method: method.1,
                path,
                access,
                rate_class: match access {
                    Access::Public => RateClass::Unlimited,
                    Access::Protected { .. } => RateClass::Crud,
                },
            },
            method,
            handler,
        )
    }

    fn add_endpoint<H, T>(mut self, endpoint: Endpoint, method: Method, handler: H) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.routes.push((endpoint, on(method.0, handler)));
        self
    }

    /// A training-loop route: needs `permission`, is neither audited nor
    /// rate limited (an RL trainer sends thousands of small requests a
    /// second by design; the token and its roles are still checked).
    pub fn training_loop<H, T>(
        self,
        method: Method,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.unaudited(method, path, permission, RateClass::Unlimited, handler)
    }

    /// A route of a running twin's control loop (step, commands,
    /// observation, state, clock): needs `permission`, is not audited, and
    /// draws on the token's control budget rather than its CRUD one.
    pub fn control_loop<H, T>(
        self,
        method: Method,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.unaudited(method, path, permission, RateClass::Control, handler)
    }

    fn unaudited<H, T>(
        self,
        method: Method,
        path: &'static str,
        permission: Permission,
        rate_class: RateClass,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let endpoint = Endpoint {
            method: method.1,
            path,
            access: Access::Protected {
                permission,
                audit: None,
            },
            rate_class,
        };
        self.add_endpoint(endpoint, method, handler)
    }

    /// A route that changes something: recorded in the audit log as `action`.
    pub fn audited<H, T>(
        self,
        method: Method,
        path: &'static str,
        permission: Permission,
        action: &'static str,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let access = Access::Protected {
            permission,
            audit: Some(action),
        };
        self.add(method, path, access, handler)
    }

    /// A route that needs `permission` and is not audited (reads).
    pub fn protected<H, T>(
        self,
        method: Method,
        path: &'static str,
        permission: Permission,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let access = Access::Protected {
            permission,
            audit: None,
        };
        self.add(method, path, access, handler)
    }

    pub fn public<H, T>(self, method: Method, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.add(method, path, Access::Public, handler)
    }

    /// A body limit for the route added last (uploads), instead of the API's.
    pub fn body_limit(mut self, bytes: usize) -> Routes {
        if let Some((endpoint, route)) = self.routes.pop() {
            self.routes.push((
                endpoint,
                route.layer(axum::extract::DefaultBodyLimit::max(bytes)),
            ));
        }
        self
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.routes.extend(other.routes);
        self
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.routes.iter().map(|(e, _)| *e).collect()
    }

    /// Every route wrapped in its guard.
    pub fn into_router(self, state: &ApiState) -> Router<ApiState> {
        self.routes
            .into_iter()
            .fold(Router::new(), |router, (endpoint, route)| {
                let guard_state = GuardState {
                    api: state.clone(),
                    endpoint,
                };
                let observed = Observed::new(&endpoint);
                router.route(
                    endpoint.path,
                    route
                        .layer(middleware::from_fn_with_state(guard_state, guard))
                        .layer(middleware::from_fn_with_state(observed, crate::observe)),
                )
            })
    }
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

/// One per-token request limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// A token's limits, per [`RateClass`]; `None`: that class is not limited.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimits {
    pub crud: Option<RateLimit>,
    pub control: Option<RateLimit>,
}

/// Authentication, rate limiting and audit, shared by every request.
pub struct AuthState {
    pub verifier: Arc<TokenVerifier>,
    pub audit: Arc<dyn AuditLog>,
    crud: Option<DefaultKeyedRateLimiter<u64>>,
    control: Option<DefaultKeyedRateLimiter<u64>>,
    checks: AtomicU64,
}

impl AuthState {
    pub fn new(
        verifier: Arc<TokenVerifier>,
        audit: Arc<dyn AuditLog>,
        limits: RateLimits,
    ) -> AuthState {
        let keyed = |r: RateLimit| {
            governor::RateLimiter::keyed(Quota::per_second(r.per_second).allow_burst(r.burst))
        };
        AuthState {
            verifier,
            audit,
            crud: limits.crud.map(keyed),
            control: limits.control.map(keyed),
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(seconds to wait)` when the token is over its limit of `class`.
    fn check_rate(&self, class: RateClass, token_key: u64) -> Result<(), u64> {
        let limiter = match class {
            RateClass::Crud => &self.crud,
            RateClass::Control => &self.control,
            RateClass::Unlimited => &None,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        // Forget idle tokens now and then, so the table does not grow forever.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&token_key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The verified caller of a protected route. Handlers take it (or [`Twins`]) as
/// an extractor; on a route without a guard it fails closed with a 500.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// How far the caller's roles cover the route's permission (`OwnOnly`
    /// means the handler must check the resource is the caller's).
    pub grant: Grant,
}

impl Caller {
    /// Whether the caller may act on a resource created by `owner` (the
    /// subject of its creator), given the grant.
    pub fn may_act_on(&self, owner: &str) -> bool {
        match self.grant {
            Grant::Any => true,
            Grant::OwnOnly => self.principal.subject == owner,
            Grant::Denied => false,
        }
    }
}

fn unguarded() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "this route has no access rule; refusing to serve it",
    )
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Caller, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(unguarded)
    }
}

/// The node's twins as the caller's organization sees them.
pub struct Twins(pub TwinNode);

impl FromRequestParts<ApiState> for Twins {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Twins, ApiError> {
        let caller = parts.extensions.get::<Caller>().ok_or_else(unguarded)?;
        Ok(Twins(
            state.node.scoped(caller.principal.organization.clone()),
        ))
    }
}

/// Set by a handler on its response: the id of what it created, for the audit
/// entry.
#[derive(Debug, Clone)]
pub struct Created(pub String);

/// What the guard of one route knows (axum clones it for every request:
/// the API state is one `Arc`, the endpoint a few words).
#[derive(Clone)]
struct GuardState {
    api: ApiState,
    endpoint: Endpoint,
}

/// The duration histogram of one route (`METHOD /template`), labelled by
/// route template so ids do not explode the label set. Looked up once, at
/// the route's first request, when the node's metrics recorder is in place.
#[derive(Clone)]
pub(crate) struct Observed(Arc<(String, std::sync::OnceLock<metrics::Histogram>)>);

impl Observed {
    fn new(endpoint: &Endpoint) -> Observed {
        let label = format!("{} {}", endpoint.method, endpoint.path);
        Observed(Arc::new((label, std::sync::OnceLock::new())))
    }

    pub(crate) fn record(&self, started: std::time::Instant) {
        let (label, histogram) = &*self.0;
        histogram
            .get_or_init(|| {
                metrics::histogram!("hanzo_twin_api_request_duration_seconds", "endpoint" => label.clone())
            })
            .record(started.elapsed().as_secs_f64());
    }
}

fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The path segment the route template names `{id}`.
fn target_of(template: &str, path: &str) -> Option<String> {
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == "{id}")
        .map(|(_, p)| p.to_string())
}

async fn guard(State(g): State<GuardState>, mut req: Request, next: Next) -> Response {
    let Access::Protected { permission, audit } = g.endpoint.access else {
        return next.run(req).await;
    };
    let auth = &g.api.auth;
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match auth.verifier.verify_header(header).await {
        Ok(p) => p,
        Err(e) => return unauthenticated(e),
    };
    if let Err(wait_s) = auth.check_rate(g.endpoint.rate_class, principal.token_key) {
        metrics::counter!("hanzo_twin_api_rate_limited_total").increment(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("this token is over its request rate; retry in {wait_s} s"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait_s.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let grant = rbac::grant(&principal.roles, permission);
    // Only audit entries name the target.
    let target = if audit.is_some() || grant == Grant::Denied {
        target_of(g.endpoint.path, req.uri().path())
    } else {
        None
    };
    let entry = |outcome: Outcome, status: StatusCode, error: Option<String>, created| AuditEntry {
        id: 0,
        time: chrono::Utc::now(),
        actor: principal.subject.clone(),
        organization: principal.organization.to_string(),
        roles: principal.roles.clone(),
        action: audit.unwrap_or_default().to_string(),
        permission: permission.to_string(),
        target: target.clone(),
        created,
        method: g.endpoint.method.to_string(),
        path: req_path(&g.endpoint, target.as_deref()),
        outcome,
        status: status.as_u16(),
        error,
    };
    if grant == Grant::Denied {
        let needed = roles_text(&rbac::roles_with(permission));
        let have = if principal.roles.is_empty() {
            "your token carries no twin role".to_string()
        } else {
            format!("your roles ({}) do not", roles_text(&principal.roles))
        };
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{have} allow {permission}; it needs one of: {needed}"),
        );
        if audit.is_some() {
            record(
                auth.audit.as_ref(),
                entry(
                    Outcome::Denied,
                    StatusCode::FORBIDDEN,
                    Some("forbidden".into()),
                    None,
                ),
            )
            .await;
        }
        return error.into_response();
    }
    req.extensions_mut().insert(Caller {
        principal: principal.clone(),
        grant,
    });
    let response = next.run(req).await;
    if audit.is_none() {
        return response;
    }
    let status = response.status();
    let created = response.extensions().get::<Created>().map(|c| c.0.clone());
    if status.is_success() {
        record(
            auth.audit.as_ref(),
            entry(Outcome::Ok, status, None, created),
        )
        .await;
        return response;
    }
    // Every error the API makes carries its code beside the body; the
    // body itself passes on untouched.
    let code = response
        .extensions()
        .get::<crate::error::ErrorCode>()
        .map(|c| c.0.clone());
    record(
        auth.audit.as_ref(),
        entry(Outcome::Failed, status, code, created),
    )
    .await;
    response
}

/// The path as called, with the target as given.
fn req_path(endpoint: &Endpoint, target: Option<&str>) -> String {
    match target {
        Some(t) => endpoint.path.replace("{id}", t),
        None => endpoint.path.to_string(),
    }
}

async fn record(log: &dyn AuditLog, entry: AuditEntry) {
    if let Err(e) = log.append(entry.clone()).await {
        // The action already happened; losing its record is an operator alarm,
        // not a reason to lie to the client about the outcome.
        metrics::counter!("hanzo_twin_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, action = %entry.action, actor = %entry.actor, "audit entry not written");
    }
}

fn unauthenticated(e: AuthError) -> Response {
    let reason = match &e {
        AuthError::Missing => "missing",
        AuthError::Expired => "expired",
        AuthError::UnknownKey(_) | AuthError::BadSignature => "signature",
        AuthError::Audience(_) | AuthError::Issuer(_) => "claims",
        _ => "invalid",
    };
    metrics::counter!("hanzo_twin_api_auth_failures_total", "reason" => reason).increment(1);
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()).into_response();
    let challenge = match e {
        AuthError::Missing => r#"Bearer realm="hanzo-twin""#.to_string(),
        other => format!(
            r#"Bearer realm="hanzo-twin", error="invalid_token", error_description="{}""#,
            other.to_string().replace('"', "'")
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_twin_actors::Name;

    fn caller(grant: Grant) -> Caller {
        Caller {
            principal: Principal {
                subject: "op@acme".into(),
                organization: Name::new("acme").expect("name"),
                roles: vec![Role::TwinOperator],
                token_key: 1,
            },
            grant,
        }
    }

    #[test]
    fn own_only_grants_cover_the_callers_resources_alone() {
        assert!(caller(Grant::OwnOnly).may_act_on("op@acme"));
        assert!(!caller(Grant::OwnOnly).may_act_on("someone@acme"));
        assert!(caller(Grant::Any).may_act_on("someone@acme"));
        assert!(!caller(Grant::Denied).may_act_on("op@acme"));
    }

    #[test]
    fn targets_come_from_the_id_segment() {
        assert_eq!(
            target_of("/v1/twins/{id}/fork", "/v1/twins/abc/fork").as_deref(),
            Some("abc")
        );
        assert_eq!(target_of("/v1/twins", "/v1/twins"), None);
    }
}

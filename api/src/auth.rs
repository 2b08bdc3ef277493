//! Bearer tokens: JWTs signed RS256 or ES256, verified against configured public
//! keys (PEM files) or JWKS documents (a file, or a URL refetched periodically
//! and when a token names a key not seen yet). Issuer, audience, expiry and
//! not-before are checked; the organization and roles come from claims.

use crate::rbac::Role;
use hanzo_twin_actors::Name;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What a token must say, and where the organization and roles are.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Claim holding the organization; dots walk into objects
    /// (`hanzo.org`).
    pub organization_claim: String,
    /// Claim holding the roles: an array of strings, or one string separated by
    /// spaces or commas. Roles other than the spec's three are ignored.
    pub roles_claim: String,
}

/// Where trusted public keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// An RSA or EC public key in PEM (SPKI or PKCS#1), for tokens of any `kid`.
    PublicKeyPem(PathBuf),
    JwksFile(PathBuf),
    /// Fetched at start, every refresh interval, and when a token names an
    /// unknown `kid` (at most every [`UNKNOWN_KID_REFETCH`]).
    JwksUrl(String),
    /// A key held in memory (the development mode's own key).
    Key {
        kid: Option<String>,
        algorithm: Algorithm,
        key: DecodingKey,
    },
}

/// How often an unknown `kid` may trigger a JWKS refetch, so garbage tokens
/// cannot make the node hammer the key server.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);

/// Who is calling, from a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    pub organization: Name,
    pub roles: Vec<Role>,
    /// A keyed hash of the token itself: rate limits are per token.
    pub token_key: u64,
}

/// Why a token was refused; every one is a 401.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this endpoint needs a bearer token: send `Authorization: Bearer <token>` (the CLI takes --token or HANZO_TWIN_TOKEN)"
    )]
    Missing,
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("tokens signed with {0:?} are not accepted; use RS256 or ES256")]
    Algorithm(Algorithm),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token is signed by an unknown key{}", .0.as_ref().map(|k| format!(" (kid `{k}`)")).unwrap_or_default())]
    UnknownKey(Option<String>),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's audience is not `{0}`")]
    Audience(String),
    #[error("the token's issuer is not `{0}`")]
    Issuer(String),
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token's `{claim}` claim is invalid: {message}")]
    BadClaim { claim: String, message: String },
}

/// A key we trust, with the one algorithm it verifies.
#[derive(Clone)]
struct TrustedKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, TrustedKey>,
    /// Keys without a `kid`: tried for any token of their algorithm.
    anonymous: Vec<TrustedKey>,
}

impl KeySet {
    fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    fn add(&mut self, kid: Option<String>, key: TrustedKey) {
        match kid {
            Some(kid) => {
                self.by_kid.insert(kid, key);
            }
            None => self.anonymous.push(key),
        }
    }

    /// The keys a token with `kid` and `alg` may be verified with.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<TrustedKey> {
        if let Some(k) = kid.and_then(|kid| self.by_kid.get(kid)) {
            return vec![k.clone()];
        }
        self.anonymous
            .iter()
            .filter(|k| k.algorithm == alg)
            .cloned()
            .collect()
    }
}

/// How many verified tokens are remembered. A signature check costs 200-300 µs
/// (see `benches/api_auth.rs`); a remembered token costs a hash lookup.
const VERIFIED_CAPACITY: usize = 4096;

/// A token that verified, until it expires or the keys change.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    /// The token's `exp`, in Unix seconds.
    expires_at: i64,
}

/// Verifies bearer tokens. Shared by every request.
pub struct TokenVerifier {
    settings: AuthSettings,
    sources: Vec<KeySource>,
    keys: RwLock<Arc<KeySet>>,
    /// Keyed by the whole token, so a hit is the very token that verified.
    verified: quick_cache::sync::Cache<String, Verified>,
    http: reqwest::Client,
    /// When the last refetch for an unknown `kid` happened.
    last_refetch: tokio::sync::Mutex<Option<Instant>>,
    hash_key: (u64, u64),
}

impl TokenVerifier {
    /// Loads every key source; fails, naming the source, if one cannot be read
    /// or none yields a usable key.
    pub async fn new(
        settings: AuthSettings,
        sources: Vec<KeySource>,
    ) -> Result<Arc<TokenVerifier>, String> {
        // With one backend compiled in this only makes the choice explicit.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        // The JWKS client below needs a TLS provider; the node installs the
        // same one, and a verifier made outside a node must not panic.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if sources.is_empty() {
            return Err("no token keys are configured: set auth.public_keys, auth.jwks_file or auth.jwks_url".into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        let verifier = TokenVerifier {
            settings,
            sources,
            keys: RwLock::new(Arc::new(KeySet::default())),
            verified: quick_cache::sync::Cache::new(VERIFIED_CAPACITY),
            http,
            last_refetch: tokio::sync::Mutex::new(None),
            hash_key: (rand_u64(), rand_u64()),
        };
        verifier.reload().await?;
        Ok(Arc::new(verifier))
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Whether any key comes from a URL (and so is worth refreshing).
    pub fn has_remote_keys(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, KeySource::JwksUrl(_)))
    }

    /// Reads every source again and swaps the key set in whole.
    pub async fn reload(&self) -> Result<(), String> {
        let mut set = KeySet::default();
        for source in &self.sources {
            match source {
                KeySource::PublicKeyPem(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("cannot read public key {}: {e}", path.display()))?;
                    let key = pem_key(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
                    set.add(None, key);
                }
                KeySource::JwksFile(path) => {
                    let text = std::fs::read(path)
                        .map_err(|e| format!("cannot read JWKS {}: {e}", path.display()))?;
                    add_jwks(&mut set, &text).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                KeySource::JwksUrl(url) => {
                    let body = self.fetch(url).await?;
                    add_jwks(&mut set, &body).map_err(|e| format!("JWKS from {url}: {e}"))?;
                }
                KeySource::Key {
                    kid,
                    algorithm,
                    key,
                } => set.add(
                    kid.clone(),
                    TrustedKey {
                        algorithm: *algorithm,
                        key: key.clone(),
                    },
                ),
            }
        }
        if set.len() == 0 {
            return Err("the configured key sources hold no RS256 or ES256 key".into());
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        // A key that was withdrawn must stop vouching for tokens at once.
        self.verified.clear();
        Ok(())
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        fetch(&self.http, url).await
    }

    /// Refetches keys when a token names an unknown `kid` and the last refetch
    /// is old enough. Returns whether the key set changed hands.
    async fn refetch_for_unknown_kid(&self) -> bool {
        if !self.has_remote_keys() {
            return false;
        }
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH) {
            return false;
        }
        *last = Some(Instant::now());
        match self.reload().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "refetching token keys failed; keeping the old ones");
                false
            }
        }
    }

    /// Refreshes remote keys every `every` until the verifier is dropped.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        if !self.has_remote_keys() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = verifier.reload().await {
                    tracing::warn!(error = %e, "refreshing token keys failed; keeping the old ones");
                }
            }
        });
    }

    /// Checks an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim()).await
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.settings.leeway_s).unwrap_or(i64::MAX);
        if let Some(hit) = self.verified.get(token) {
            if now <= hit.expires_at.saturating_add(leeway) {
                return Ok(hit.principal);
            }
            self.verified.remove(token);
        }
        let (principal, expires_at) = self.verify_signed(token).await?;
        self.verified.insert(
            token.to_string(),
            Verified {
                principal: principal.clone(),
                expires_at,
            },
        );
        Ok(principal)
    }

    /// The full check: signature, claims, expiry. Returns the token's `exp`.
    async fn verify_signed(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Algorithm(header.alg));
        }
        let kid = header.kid.as_deref();
        let mut candidates = self.current_keys().candidates(kid, header.alg);
        if candidates.is_empty() && self.refetch_for_unknown_kid().await {
            candidates = self.current_keys().candidates(kid, header.alg);
        }
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey(header.kid.clone()));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.settings.leeway_s;
        validation.validate_nbf = true;
        let mut last = AuthError::BadSignature;
        for candidate in candidates {
            if candidate.algorithm != header.alg {
                continue;
            }
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
                token,
                &candidate.key,
                &validation,
            ) {
                Ok(data) => {
                    // `exp` is required and checked by the validation above.
                    let expires_at = data
                        .claims
                        .get("exp")
                        .and_then(Value::as_f64)
                        .map_or(0, |e| e as i64);
                    return Ok((self.principal(token, &data.claims)?, expires_at));
                }
                Err(e) => {
                    last = self.explain(e);
                    // Only a signature failure is worth trying the next key for.
                    if !matches!(last, AuthError::BadSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn current_keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn explain(&self, e: jsonwebtoken::errors::Error) -> AuthError {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => AuthError::Expired,
            K::ImmatureSignature => AuthError::NotYetValid,
            K::InvalidSignature => AuthError::BadSignature,
            K::InvalidAudience => AuthError::Audience(self.settings.audience.clone()),
            K::InvalidIssuer => AuthError::Issuer(self.settings.issuer.clone()),
            K::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
            K::InvalidAlgorithm => AuthError::BadSignature,
            _ => AuthError::Malformed(e.to_string()),
        }
    }

    fn principal(
        &self,
        token: &str,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<Principal, AuthError> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?
            .to_string();
        let org_claim = &self.settings.organization_claim;
        let organization = match claim(claims, org_claim) {
            Some(Value::String(s)) => Name::new(s).map_err(|m| AuthError::BadClaim {
                claim: org_claim.clone(),
                message: m,
            })?,
            Some(_) => {
                return Err(AuthError::BadClaim {
                    claim: org_claim.clone(),
                    message: "must be a string".into(),
                });
            }
            None => return Err(AuthError::MissingClaim(org_claim.clone())),
        };
        let roles_claim = &self.settings.roles_claim;
        let names: Vec<String> = match claim(claims, roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect(),
            Some(_) => {
                return Err(AuthError::BadClaim {
                    claim: roles_claim.clone(),
                    message: "must be an array of strings or a string".into(),
                });
            }
            None => Vec::new(),
        };
        let mut roles: Vec<Role> = names.iter().filter_map(|n| Role::parse(n)).collect();
        roles.sort();
        roles.dedup();
        let mut hasher = std::hash::DefaultHasher::new();
        self.hash_key.hash(&mut hasher);
        token.hash(&mut hasher);
        Ok(Principal {
            subject,
            organization,
            roles,
            token_key: hasher.finish(),
        })
    }
}

/// Whether `host` (a name or an IP address, v6 in brackets or not) only
/// reaches this machine.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// GETs `url`, which must be https (plain http only on loopback).
async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("URL `{url}`: {e}"))?;
    if parsed.scheme() != "https" && !is_loopback(parsed.host_str().unwrap_or("")) {
        return Err(format!(
            "`{url}` must use https (plain http is accepted on loopback only)"
        ));
    }
    let resp = http
        .get(parsed)
        .send()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| format!("{url}: {e}"))
}

/// What an OpenID Connect provider publishes about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
}

/// Reads `<iam_url>/.well-known/openid-configuration`: the issuer tokens carry
/// and where the provider's signing keys are.
pub async fn discover(iam_url: &str) -> Result<Discovery, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot build the discovery client: {e}"))?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        iam_url.trim_end_matches('/')
    );
    let body = fetch(&http, &url).await?;
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{url} is not a JSON discovery document: {e}"))?;
    let field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .ok_or_else(|| format!("{url} has no `{name}`"))
    };
    Ok(Discovery {
        issuer: field("issuer")?,
        jwks_uri: field("jwks_uri")?,
    })
}

/// A claim by dotted path.
fn claim<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.get(part)?;
    }
    Some(current)
}

fn pem_key(pem: &[u8]) -> Result<TrustedKey, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(TrustedKey {
            algorithm: Algorithm::RS256,
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(TrustedKey {
            algorithm: Algorithm::ES256,
            key,
        });
    }
    Err("not an RSA or EC public key in PEM".into())
}

fn add_jwks(set: &mut KeySet, text: &[u8]) -> Result<(), String> {
    let jwks: JwkSet =
        serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    for jwk in &jwks.keys {
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => {
                tracing::debug!(kid = ?jwk.common.key_id, "skipping a JWKS key that is not RS256 or ES256");
                continue;
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            format!(
                "key {}: {e}",
                jwk.common.key_id.as_deref().unwrap_or("without kid")
            )
        })?;
        set.add(jwk.common.key_id.clone(), TrustedKey { algorithm, key });
    }
    Ok(())
}

/// Per-process randomness for the token hash, so rate-limit keys cannot be
/// predicted from outside.
fn rand_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

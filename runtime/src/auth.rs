//! The node's side of authentication: which keys its API trusts, and the
//! development mode that signs a local admin token so a single node works with
//! no identity provider.

use crate::config::{AuthMode, AuthSection, NodeConfig};
use crate::store::SledTwinStore;
use anyhow::Context;
use hanzo_twin_api::auth::{AuthSettings, KeySource, TokenVerifier};
use hanzo_twin_api::guard::{AuthState, RateLimit, RateLimits};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `kid` of the development signing key.
pub const DEV_KEY_ID: &str = "hanzo-twin-dev";
/// The subject of the development admin token.
pub const DEV_SUBJECT: &str = "local-admin";

/// A token the node minted for its operator in development mode.
#[derive(Debug, Clone)]
pub struct DevToken {
    pub token: String,
    /// Where it was written (readable by the node's user only).
    pub path: PathBuf,
    pub organization: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

fn settings(auth: &AuthSection) -> AuthSettings {
    AuthSettings {
        issuer: auth.issuer.clone(),
        audience: auth.audience.clone(),
        leeway_s: auth.leeway_s,
        organization_claim: auth.organization_claim.clone(),
        roles_claim: auth.roles_claim.clone(),
    }
}

/// Builds what the API needs to authenticate, limit and audit requests. In
/// development mode this also signs the local admin token.
pub async fn build(
    config: &NodeConfig,
    store: &SledTwinStore,
) -> anyhow::Result<(Arc<AuthState>, Option<DevToken>)> {
    let auth = &config.auth;
    let mut settings = settings(auth);
    let (sources, dev_token) = match auth.mode {
        AuthMode::Jwt => {
            let mut sources: Vec<KeySource> = auth
                .public_keys
                .iter()
                .cloned()
                .map(KeySource::PublicKeyPem)
                .collect();
            sources.extend(auth.jwks_file.clone().map(KeySource::JwksFile));
            sources.extend(auth.jwks_url.clone().map(KeySource::JwksUrl));
            if let Some(iam) = &auth.iam_url {
                let found = hanzo_twin_api::auth::discover(iam)
                    .await
                    .map_err(|e| anyhow::anyhow!("auth.iam_url: {e}"))?;
                tracing::info!(issuer = %found.issuer, jwks = %found.jwks_uri, "token keys from the identity provider");
                settings.issuer = found.issuer;
                sources.push(KeySource::JwksUrl(found.jwks_uri));
            }
            (sources, None)
        }
        AuthMode::Dev => {
            // NodeConfig::validate has refused dev mode beyond loopback unless forced.
            let (source, token) = dev_mode(config)?;
            (vec![source], Some(token))
        }
    };
    let verifier = TokenVerifier::new(settings, sources)
        .await
        .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    verifier.spawn_refresh(Duration::from_secs(auth.jwks_refresh_s.max(1)));
    let limit = |per_second: u32, burst: u32| {
        NonZeroU32::new(per_second).map(|per_second| RateLimit {
            per_second,
            burst: NonZeroU32::new(burst).unwrap_or(per_second),
        })
    };
    let r = &auth.rate_limit;
    let rate_limit = RateLimits {
        crud: limit(r.per_second, r.burst),
        control: limit(r.control_per_second, r.control_burst),
    };
    let audit = Arc::new(store.audit_log()?);
    Ok((
        Arc::new(AuthState::new(verifier, audit, rate_limit)),
        dev_token,
    ))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The development signing key (kept in the data folder, so tokens survive
/// restarts) and a fresh admin token.
fn dev_mode(config: &NodeConfig) -> anyhow::Result<(KeySource, DevToken)> {
    let dir = config.data_dir.join("auth");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join("dev-signing-key.pem");
    let key_pair = if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        rcgen::KeyPair::from_pem(&pem).with_context(|| {
            format!(
                "{} is not a usable key; delete it to make a new one",
                key_path.display()
            )
        })?
    } else {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("cannot generate the development signing key")?;
        write_private(&key_path, pair.serialize_pem().as_bytes())?;
        pair
    };
    let encoding = EncodingKey::from_ec_pem(key_pair.serialize_pem().as_bytes())
        .context("the development signing key is not an EC P-256 key")?;
    let decoding = DecodingKey::from_ec_pem(key_pair.public_key_pem().as_bytes())
        .context("the development signing key is not an EC P-256 key")?;
    let auth = &config.auth;
    let now = chrono::Utc::now();
    let expires_at =
        now + chrono::Duration::seconds(auth.dev.token_ttl_s.min(i64::MAX as u64) as i64);
    let claims = serde_json::json!({
        "iss": auth.issuer,
        "aud": auth.audience,
        "sub": DEV_SUBJECT,
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "exp": expires_at.timestamp(),
        auth.organization_claim.clone(): auth.dev.organization,
        auth.roles_claim.clone(): ["twin-admin"],
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(DEV_KEY_ID.into());
    let token = jsonwebtoken::encode(&header, &claims, &encoding)
        .context("cannot sign the development token")?;
    let token_path = dir.join("dev-token");
    write_private(&token_path, token.as_bytes())?;
    let source = KeySource::Key {
        kid: Some(DEV_KEY_ID.into()),
        algorithm: Algorithm::ES256,
        key: decoding,
    };
    Ok((
        source,
        DevToken {
            token,
            path: token_path,
            organization: auth.dev.organization.clone(),
            expires_at,
        },
    ))
}

/// How to use the development token, for the operator's terminal.
pub fn dev_token_instructions(token: &DevToken, api_url: &str) -> String {
    let path = token.path.display();
    format!(
        "development auth: an admin token for organization `{org}` (role twin-admin, valid until {until}) is in {path}\n\
         \x20 export HANZO_TWIN_TOKEN=$(cat {path})\n\
         \x20 hanzo-twin list --api {api_url}\n\
         \x20 curl -H \"Authorization: Bearer $HANZO_TWIN_TOKEN\" {api_url}/v1/twins\n\
         This mode is for one node on loopback; use auth.mode: jwt with your identity provider in production.",
        org = token.organization,
        until = token.expires_at.format("%Y-%m-%d %H:%M UTC"),
    )
}

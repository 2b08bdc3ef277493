//! JWT-mode nodes and the tokens they trust, signed with the fixture keys
//! in tests/fixtures/auth.

use super::{NodeOptions, TestNode, repo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::PathBuf;

pub const ISSUER: &str = "https://iam.test";
pub const AUDIENCE: &str = "hanzo-twin-test";

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/auth").join(name)
}

pub fn signing_key(name: &str, alg: Algorithm) -> EncodingKey {
    let pem = std::fs::read(fixture(name)).expect("fixture key");
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
        _ => EncodingKey::from_ec_pem(&pem).expect("EC key"),
    }
}

/// Signs `claims` with a fixture key.
pub fn sign(key: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, &signing_key(key, alg)).expect("sign")
}

pub fn claims(org: &str, roles: &[&str], sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "org": org, "roles": roles,
        "iat": now, "exp": now + 3600,
    })
}

/// A token the node trusts: acme's are RS256 from a PEM key without `kid`,
/// globex's ES256 from the JWKS with a `kid`, so both paths are covered.
pub fn token(org: &str, role: &str) -> String {
    let c = claims(org, &[role], &format!("{role}@{org}"));
    if org == "acme" {
        sign("rsa-signing.pem", Algorithm::RS256, None, &c)
    } else {
        sign("ec-signing.pem", Algorithm::ES256, Some("test-ec-1"), &c)
    }
}

pub fn jwt_auth_yaml() -> String {
    format!(
        "auth:\n  mode: jwt\n  issuer: {ISSUER}\n  audience: {AUDIENCE}\n  leeway_s: 0\n  public_keys: [{}]\n  jwks_file: {}\n",
        fixture("rsa-public.pem").display(),
        fixture("jwks.json").display()
    )
}

pub async fn jwt_node() -> TestNode {
    let auth = jwt_auth_yaml();
    TestNode::start_opts(NodeOptions {
        auth_yaml: &auth,
        ..Default::default()
    })
    .await
}

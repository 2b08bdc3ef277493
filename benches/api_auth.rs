//! The cost of authentication per API request, in one run: a request to a
//! public route (no token work) against requests with RS256 and ES256 tokens,
//! verified, rate-limited and authorized by the guard — on a token's first use
//! (the signature check) and on later uses (remembered). The router is called
//! in-process, so the figures are the API's own work.

mod common;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use hanzo_twin::config::AuthMode;
use hanzo_twin::{Node, NodeConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tower::ServiceExt;

fn token(key_file: &str, alg: Algorithm, kid: Option<&str>) -> String {
    token_with_id(key_file, alg, kid, 0)
}

/// Tokens differing in `jti` are different tokens to the verifier.
fn token_with_id(key_file: &str, alg: Algorithm, kid: Option<&str>, id: u64) -> String {
    let pem = std::fs::read(common::repo().join("tests/fixtures/auth").join(key_file))
        .expect("fixture key");
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
        _ => EncodingKey::from_ec_pem(&pem).expect("EC key"),
    };
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "bench", "aud": "bench", "sub": "bench", "org": "acme",
        "roles": ["twin-viewer"], "iat": now, "exp": now + 3600, "jti": id,
    });
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

fn api_auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    config.metrics.enabled = false;
    config.auth.mode = AuthMode::Jwt;
    config.auth.issuer = "bench".into();
    config.auth.audience = "bench".into();
    config.auth.rate_limit.per_second = 0;
    let fixtures = common::repo().join("tests/fixtures/auth");
    config.auth.public_keys = vec![fixtures.join("rsa-public.pem")];
    config.auth.jwks_file = Some(fixtures.join("jwks.json"));
    let node = rt.block_on(Node::start(config)).expect("node");
    let router = rt.block_on(node.api()).expect("api").router;
    let call = |path: &'static str, token: Option<String>| {
        let router = router.clone();
        move || {
            let router = router.clone();
            let token = token.clone();
            async move {
                let mut req = Request::get(path);
                if let Some(t) = token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let response = router
                    .oneshot(req.body(Body::empty()).expect("request"))
                    .await
                    .expect("response");
                assert!(response.status().is_success(), "{}", response.status());
            }
        }
    };
    let mut group = c.benchmark_group("api_request");
    for (name, key_file, alg, kid) in [
        ("rs256_first_use", "rsa-signing.pem", Algorithm::RS256, None),
        (
            "es256_first_use",
            "ec-signing.pem",
            Algorithm::ES256,
            Some("test-ec-1"),
        ),
    ] {
        let mut next_id = 1u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    next_id += 1;
                    // Signing a fresh token is not part of the request.
                    let fresh = token_with_id(key_file, alg, kid, next_id);
                    let request = call("/v1/cluster/nodes", Some(fresh));
                    let t0 = std::time::Instant::now();
                    rt.block_on(request());
                    total += t0.elapsed();
                }
                total
            })
        });
    }
    let public = call("/alive", None);
    group.bench_function("public_no_token", |b| b.to_async(&rt).iter(&public));
    let rs256 = call(
        "/v1/cluster/nodes",
        Some(token("rsa-signing.pem", Algorithm::RS256, None)),
    );
    group.bench_function("rs256_remembered", |b| b.to_async(&rt).iter(&rs256));
    let es256 = call(
        "/v1/cluster/nodes",
        Some(token("ec-signing.pem", Algorithm::ES256, Some("test-ec-1"))),
    );
    group.bench_function("es256_remembered", |b| b.to_async(&rt).iter(&es256));
    group.finish();
    rt.block_on(node.shutdown());
}

criterion_group!(benches, api_auth);
criterion_main!(benches);

//! `topology.source: kubernetes`: kube-rs reads the demo shop from a local
//! HTTP server answering as a Kubernetes API server would (the recorded
//! lists in tests/fixtures/kubernetes/shop), through a kubeconfig context
//! with a bearer token, exactly as it would reach a real cluster. The twin
//! it makes runs exactly as the one made from the shop's manifests.

#[cfg(not(feature = "kubernetes"))]
#[test]
fn live_cluster_topologies_need_the_kubernetes_feature() {
    eprintln!(
        "SKIPPED: built without the `kubernetes` feature (scripts/test.sh turns it on); topology.source: kubernetes is not checked"
    );
}

#[cfg(feature = "kubernetes")]
mod live {
    use crate::common::{bin, output_of, repo};
    use axum::extract::{Request, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};

    const TOKEN: &str = "recorded-cluster-token";

    /// The paths kube-rs asks for, and the fixture each answers with.
    const LISTS: [(&str, &str); 7] = [
        ("/apis/apps/v1/namespaces/shop/deployments", "deployments"),
        ("/apis/apps/v1/namespaces/shop/statefulsets", "statefulsets"),
        ("/api/v1/namespaces/shop/services", "services"),
        (
            "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers",
            "horizontalpodautoscalers",
        ),
        ("/api/v1/namespaces/shop/resourcequotas", "resourcequotas"),
        (
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies",
            "networkpolicies",
        ),
        (
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
            "poddisruptionbudgets",
        ),
    ];

    fn status(code: StatusCode, reason: &str, message: &str) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        });
        (code, axum::Json(body)).into_response()
    }

    /// The API server: recorded lists for a bearer of the token.
    async fn api_server(State(seen): State<Arc<Mutex<Vec<String>>>>, request: Request) -> Response {
        let path = request.uri().path().to_string();
        if let Ok(mut seen) = seen.lock() {
            seen.push(path.clone());
        }
        let authorized = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if !authorized {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        match LISTS.iter().find(|(p, _)| *p == path) {
            Some((_, name)) => {
                let file = repo().join(format!("tests/fixtures/kubernetes/shop/{name}.json"));
                let body: Value =
                    serde_json::from_str(&std::fs::read_to_string(file).expect("fixture"))
                        .expect("JSON");
                axum::Json(body).into_response()
            }
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find {path}"),
            ),
        }
    }

    fn kubeconfig(dir: &std::path::Path, port: u16, token: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\n\
                 clusters:\n- name: recorded\n  cluster:\n    server: http://127.0.0.1:{port}\n\
                 users:\n- name: tester\n  user:\n    token: {token}\n\
                 contexts:\n- name: hanzo-test\n  context:\n    cluster: recorded\n    user: tester\n\
                 - name: elsewhere\n  context:\n    cluster: recorded\n    user: tester\n"
            ),
        )
        .expect("kubeconfig");
        path
    }

    /// The demo shop twin with its topology from the cluster.
    fn definition(dir: &std::path::Path) -> std::path::PathBuf {
        let text =
            std::fs::read_to_string(repo().join("configs/twins/shop-infra.yaml")).expect("demo");
        let mut spec: Value = serde_yaml_ng::from_str(&text).expect("YAML");
        spec["topology"]["source"] = "kubernetes".into();
        spec["topology"]["cluster"] = "hanzo-test".into();
        if let Some(t) = spec["topology"].as_object_mut() {
            t.remove("paths");
        }
        let path = dir.join("shop-live.yaml");
        std::fs::write(&path, serde_yaml_ng::to_string(&spec).expect("YAML")).expect("write");
        path
    }

    fn simulate(
        definition: &std::path::Path,
        kubeconfig: Option<&std::path::Path>,
    ) -> (Option<i32>, String, String) {
        let mut command = std::process::Command::new(bin());
        command.args(["infra", "simulate"]).arg(definition).args([
            "--duration",
            "15m",
            "--output",
            "json",
        ]);
        if let Some(k) = kubeconfig {
            command.env("KUBECONFIG", k);
        }
        output_of(&mut command)
    }

    #[tokio::test]
    async fn kube_rs_reads_the_shop_from_an_api_server_and_the_twin_matches_the_manifests() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(api_server)
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().expect("tempdir");
        let live = definition(dir.path());
        let config = kubeconfig(dir.path(), port, TOKEN);

        let (code, stdout, stderr) = tokio::task::spawn_blocking({
            let (live, config) = (live.clone(), config.clone());
            move || simulate(&live, Some(&config))
        })
        .await
        .expect("ran");
        assert!(matches!(code, Some(0) | Some(3)), "{stdout}{stderr}");
        let from_cluster: Value = serde_json::from_str(&stdout).expect("JSON");
        // Every kind, in the listed namespace, asked for once.
        let mut asked = seen.lock().map(|s| s.clone()).unwrap_or_default();
        asked.sort();
        let mut wanted: Vec<String> = LISTS.iter().map(|(p, _)| p.to_string()).collect();
        wanted.sort();
        assert_eq!(asked, wanted);

        // The same shop from its manifests runs the same, request for request.
        let (_, stdout, stderr) = tokio::task::spawn_blocking(|| {
            simulate(&repo().join("configs/twins/shop-infra.yaml"), None)
        })
        .await
        .expect("ran");
        let from_files: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
        assert_eq!(from_cluster["report"], from_files["report"]);
        assert_eq!(from_cluster["verdicts"], from_files["verdicts"]);

        // A token the server refuses, and a context the kubeconfig lacks.
        let stale = dir.path().join("stale");
        std::fs::create_dir(&stale).expect("a folder");
        let refused = kubeconfig(&stale, port, "stale-token");
        let (code, _, stderr) = tokio::task::spawn_blocking({
            let live = live.clone();
            move || simulate(&live, Some(&refused))
        })
        .await
        .expect("ran");
        assert_eq!(code, Some(1));
        assert!(
            stderr.contains("listing Deployments in namespace shop")
                && stderr.contains("Unauthorized"),
            "{stderr}"
        );
        let mut other: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&live).expect("read")).expect("YAML");
        other["topology"]["cluster"] = "production".into();
        std::fs::write(&live, serde_yaml_ng::to_string(&other).expect("YAML")).expect("write");
        let (code, _, stderr) = tokio::task::spawn_blocking(move || simulate(&live, Some(&config)))
            .await
            .expect("ran");
        assert_eq!(code, Some(1));
        assert!(
            stderr.contains("topology.cluster") && stderr.contains("production"),
            "{stderr}"
        );
    }
}

#[cfg(feature = "kubernetes")]
mod common;

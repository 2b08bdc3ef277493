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
    use serde::Deserialize;
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

    /// The cluster's nodes, asked for with `include_nodes` only.
    const NODES: (&str, &str) = ("/api/v1/nodes", "nodes");

    fn status(code: StatusCode, reason: &str, message: &str) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        });
        (code, axum::Json(body)).into_response()
    }

    /// What the recorded API server was asked, and how its cluster changed.
    #[derive(Default)]
    struct Recorded {
        seen: Mutex<Vec<String>>,
        /// The api Deployment's replicas, once changed.
        api_replicas: Mutex<Option<u32>>,
    }

    impl Recorded {
        fn seen(&self) -> Vec<String> {
            self.seen.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    /// Serves `recorded` on a free loopback port; the port.
    async fn serve(recorded: Arc<Recorded>) -> u16 {
        let app = axum::Router::new()
            .fallback(api_server)
            .with_state(recorded);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    /// The API server: recorded lists for a bearer of the token.
    async fn api_server(State(recorded): State<Arc<Recorded>>, request: Request) -> Response {
        let path = request.uri().path().to_string();
        if let Ok(mut seen) = recorded.seen.lock() {
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
        match LISTS.iter().chain([&NODES]).find(|(p, _)| *p == path) {
            Some((_, name)) => {
                let file = repo().join(format!("tests/fixtures/kubernetes/shop/{name}.json"));
                let mut body: Value =
                    serde_json::from_str(&std::fs::read_to_string(file).expect("fixture"))
                        .expect("JSON");
                let changed = recorded.api_replicas.lock().ok().and_then(|r| *r);
                if let (Some(n), "deployments") = (changed, *name) {
                    for item in body["items"].as_array_mut().into_iter().flatten() {
                        if item["metadata"]["name"] == "api" {
                            item["spec"]["replicas"] = n.into();
                        }
                    }
                }
                axum::Json(body).into_response()
            }
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find {path}"),
            ),
        }
    }

    /// Each list once, sorted.
    fn every_list() -> Vec<String> {
        let mut wanted: Vec<String> = LISTS.iter().map(|(p, _)| p.to_string()).collect();
        wanted.sort();
        wanted
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

    /// The run of `definition` (its topology from files) has the report
    /// and verdicts of `from_cluster`'s.
    async fn runs_as_from_files(from_cluster: &Value, definition: &'static str) {
        let (_, stdout, stderr) =
            tokio::task::spawn_blocking(move || simulate(&repo().join(definition), None))
                .await
                .expect("ran");
        let from_files: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
        assert_eq!(from_cluster["report"], from_files["report"]);
        assert_eq!(from_cluster["verdicts"], from_files["verdicts"]);
    }

    /// With `include_nodes`, the cluster's Nodes are read too (all of
    /// them, once): the twin scheduled onto them runs as the one with the
    /// same nodes written in its definition (`configs/twins/shop-nodes.yaml`),
    /// and the tainted control-plane node takes nothing.
    #[tokio::test]
    async fn a_live_clusters_nodes_are_read_with_include_nodes() {
        let recorded = Arc::new(Recorded::default());
        let port = serve(recorded.clone()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = kubeconfig(dir.path(), port, TOKEN);
        let text =
            std::fs::read_to_string(repo().join("configs/twins/shop-nodes.yaml")).expect("demo");
        let mut spec: Value = serde_yaml_ng::from_str(&text).expect("YAML");
        let topology = spec["topology"].as_object_mut().expect("a topology");
        topology.remove("paths");
        topology.remove("nodes");
        topology.insert("source".into(), "kubernetes".into());
        topology.insert("cluster".into(), "hanzo-test".into());
        topology.insert("include_nodes".into(), true.into());
        let live = dir.path().join("shop-nodes-live.yaml");
        std::fs::write(&live, serde_yaml_ng::to_string(&spec).expect("YAML")).expect("write");

        let (code, stdout, stderr) =
            tokio::task::spawn_blocking(move || simulate(&live, Some(&config)))
                .await
                .expect("ran");
        assert!(matches!(code, Some(0) | Some(3)), "{stdout}{stderr}");
        let from_cluster: Value = serde_json::from_str(&stdout).expect("JSON");
        let mut asked = recorded.seen();
        asked.sort();
        let mut wanted = every_list();
        wanted.push(NODES.0.to_string());
        wanted.sort();
        assert_eq!(asked, wanted);
        let nodes: Vec<&str> = from_cluster["report"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["name"].as_str())
            .collect();
        assert_eq!(nodes, ["node-0", "node-1", "node-2"]);
        assert!(
            from_cluster["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["object"] == "Node control-plane"),
            "{}",
            from_cluster["findings"]
        );

        runs_as_from_files(&from_cluster, "configs/twins/shop-nodes.yaml").await;
    }

    #[tokio::test]
    async fn kube_rs_reads_the_shop_from_an_api_server_and_the_twin_matches_the_manifests() {
        let recorded = Arc::new(Recorded::default());
        let port = serve(recorded.clone()).await;
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
        let mut asked = recorded.seen();
        asked.sort();
        assert_eq!(asked, every_list());

        // The same shop from its manifests runs the same, request for request.
        runs_as_from_files(&from_cluster, "configs/twins/shop-infra.yaml").await;

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

    /// On a node: the cluster is read once, when the twin is created, and
    /// kept in its definition; the twin runs on that snapshot as the same
    /// shop from its manifests does, and a restart does not read the
    /// cluster again, however it changed; writing the topology does.
    #[tokio::test]
    async fn a_node_runs_a_live_clusters_twin_on_the_snapshot_it_took_at_creation() {
        let recorded = Arc::new(Recorded::default());
        let port = serve(recorded.clone()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = kubeconfig(dir.path(), port, TOKEN);
        let config = config.to_str().expect("a path");
        let mut node = crate::common::TestNode::start_opts(crate::common::NodeOptions {
            env: &[("KUBECONFIG", config)],
            ..Default::default()
        })
        .await;
        let mut live = crate::common::shop_infra_definition("shop-live");
        if let Some(t) = live["topology"].as_object_mut() {
            t.remove("manifests");
            t.insert("source".into(), "kubernetes".into());
            t.insert("cluster".into(), "hanzo-test".into());
        }
        let (status, twin) = node.post("/v1/twins", live.clone()).await;
        assert_eq!(status, 201, "{twin}");
        let snapshot = twin["topology"]["snapshot"].clone();
        assert_eq!(
            snapshot["server"],
            format!("http://127.0.0.1:{port}/"),
            "{snapshot}"
        );
        assert!(snapshot["read_at"].is_string(), "{snapshot}");
        let mut asked = recorded.seen();
        asked.sort();
        assert_eq!(asked, every_list());

        // The same shop from its manifests runs the same, request for request.
        let (status, body) = node
            .post(
                "/v1/twins",
                crate::common::shop_infra_definition("shop-files"),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let mut reports = Vec::new();
        for twin in ["shop-live", "shop-files"] {
            node.start_twin(twin, "paused").await;
            node.step(twin, 900).await;
            let (status, infra) = node.get(&format!("/v1/infra/twins/{twin}")).await;
            assert_eq!(status, 200, "{infra}");
            reports.push(infra["report"].clone());
        }
        assert!(
            reports[0]["events"].as_u64() > Some(100_000),
            "{}",
            reports[0]
        );
        assert_eq!(reports[0], reports[1]);

        // The cluster changes; the twin, restarted, keeps its snapshot.
        if let Ok(mut r) = recorded.api_replicas.lock() {
            *r = Some(5);
        }
        node.restart(false).await;
        let (status, body) = node
            .post("/v1/twins/shop-live/start", json!({ "clock": "paused" }))
            .await;
        assert!(status == 200 || status == 409, "{body}");
        let (status, after) = node.get("/v1/twins/shop-live").await;
        assert_eq!(status, 200, "{after}");
        assert_eq!(after["topology"]["snapshot"], snapshot);
        let (status, infra) = node.get("/v1/infra/twins/shop-live").await;
        assert_eq!(status, 200, "{infra}");
        assert_eq!(infra["report"], reports[0]);
        assert_eq!(recorded.seen().len(), LISTS.len());

        // Writing its topology reads the cluster again: five api replicas.
        let (status, body) = node.post("/v1/twins/shop-live/stop", Value::Null).await;
        assert_eq!(status, 200, "{body}");
        let (status, patched) = node
            .patch(
                "/v1/twins/shop-live",
                json!({ "topology": { "namespaces": ["shop"] } }),
            )
            .await;
        assert_eq!(status, 200, "{patched}");
        let again = &patched["topology"]["snapshot"];
        assert_ne!(again["read_at"], snapshot["read_at"]);
        assert_eq!(recorded.seen().len(), 2 * LISTS.len());
        let manifests = again["manifests"].as_str().expect("YAML");
        let api: Value = serde_yaml_ng::Deserializer::from_str(manifests)
            .filter_map(|d| Value::deserialize(d).ok())
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "api")
            .expect("the api Deployment");
        assert_eq!(api["spec"]["replicas"], 5);

        // A context the node's kubeconfig lacks: refused, naming the field.
        live["name"] = "shop-elsewhere".into();
        live["topology"]["cluster"] = "production".into();
        let (status, err) = node.post("/v1/twins", live).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["field"], "topology.cluster", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("production")),
            "{err}"
        );
    }
}

#[cfg(feature = "kubernetes")]
mod common;

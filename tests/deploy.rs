//! The deployment files: the Dockerfile passes hadolint, and a node runs with
//! exactly the configuration and environment the image gives it
//! (deploy/config.yaml; the API and metrics on 0.0.0.0, tokens verified),
//! only the image's own folders pointed at this machine's through the same
//! environment overrides an operator uses. compose.yml passes the Compose
//! Specification's schema, the Kubernetes manifests pass Kubernetes 1.34's,
//! and the node's environment in each passes `hanzo-twin check-config` with
//! no warning. No container daemon or cluster runs here, so images are not
//! built or started.

mod common;

use common::jwt::{AUDIENCE, ISSUER, fixture, token};
use common::{bin, client, free_ports, repo};
use serde_yaml_ng::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tool the test script installs into the venv, beside its Python; `None`
/// (said loudly) only outside the test script.
fn venv_tool(name: &str) -> Option<PathBuf> {
    let python = std::env::var("HANZO_TWIN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".venv/bin/python"));
    let tool = python.with_file_name(name);
    if tool.exists() {
        return Some(tool);
    }
    assert!(
        std::env::var("HANZO_TWIN_TEST_PYTHON").is_err(),
        "scripts/test.sh installs {name} from scripts/requirements-test.txt; {} is missing",
        tool.display()
    );
    eprintln!("SKIPPED: {name} is not in .venv (run scripts/test.sh)");
    None
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(hadolint) = venv_tool("hadolint") else {
        return;
    };
    let out = Command::new(hadolint)
        .arg(repo().join("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's config names its own folders; the test points those at this
/// machine's with the environment overrides, and leaves every other key as
/// the image has it.
#[test]
fn the_image_config_names_the_folders_the_dockerfile_makes() {
    let config = std::fs::read_to_string(repo().join("deploy/config.yaml")).expect("config");
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    for (key, folder) in [
        ("data_dir:", "/var/lib/hanzo-twin"),
        ("root:", "/usr/share/hanzo-twin/scenes"),
        ("public_keys:", "/etc/hanzo-twin/jwt"),
    ] {
        assert!(
            config
                .lines()
                .any(|l| l.trim_start().starts_with(key) && l.contains(folder)),
            "deploy/config.yaml: {key} {folder}"
        );
        assert!(dockerfile.contains(folder), "the Dockerfile makes {folder}");
    }
    assert!(dockerfile.contains("COPY deploy/config.yaml /etc/hanzo-twin/config.yaml"));
}

/// The default target is the node alone; the `trainer` target adds the
/// Python its training jobs run on, and points `scheduler.python` at it.
#[test]
fn the_trainer_target_gives_jobs_a_python_and_the_default_stays_lean() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.last(), Some(&"FROM node"), "{stages:?}");
    assert!(stages.contains(&"FROM node AS trainer"), "{stages:?}");
    let trainer = &dockerfile[dockerfile.find("FROM node AS trainer").expect("trainer")..];
    assert!(trainer.contains("[train,rllib]"), "{trainer}");
    assert!(
        trainer.contains("ENV HANZO_TWIN_SCHEDULER_PYTHON=/opt/hanzo-twin-python/bin/python"),
        "{trainer}"
    );
}

#[tokio::test]
async fn a_node_runs_with_the_image_config_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [api, metrics] = free_ports::<2>();
    let log = dir.path().join("node.log");
    let public_keys = format!("[{}]", fixture("rsa-public.pem").display());
    let mut node = Command::new(bin())
        .args(["serve", "--config"])
        .arg(repo().join("deploy/config.yaml"))
        // The image's folders, here.
        .env("HANZO_TWIN_DATA_DIR", dir.path().join("data"))
        .env("HANZO_TWIN_SCENES_ROOT", repo().join("configs/scenes"))
        .env("HANZO_TWIN_AUTH_PUBLIC_KEYS", &public_keys)
        // What an installation sets: its issuer, its ports.
        .env("HANZO_TWIN_AUTH_ISSUER", ISSUER)
        .env("HANZO_TWIN_AUTH_AUDIENCE", AUDIENCE)
        .env("HANZO_TWIN_SERVER_PORT", api.to_string())
        .env("HANZO_TWIN_METRICS_PORT", metrics.to_string())
        .env("HANZO_TWIN_NODE_ID", "hanzo-twin-0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("hanzo-twin serve");
    let anonymous = client(None, None);
    let url = |path: &str| format!("http://127.0.0.1:{api}{path}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = node.try_wait() {
            panic!(
                "the node exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(r) = anonymous.get(url("/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive = anonymous.get(url("/alive")).send().await.expect("alive");
    assert_eq!(alive.status(), 200);
    // Beyond loopback, nothing but the probes answers without a token.
    let refused = anonymous.get(url("/v1/twins")).send().await.expect("twins");
    assert_eq!(refused.status(), 401);
    let reader = client(Some(&token("acme", "twin-viewer")), None);
    let listed = reader.get(url("/v1/twins")).send().await.expect("twins");
    assert_eq!(listed.status(), 200);
    let scraped = anonymous
        .get(format!("http://127.0.0.1:{metrics}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(scraped.status(), 200);
    // Logs are JSON lines, as the image's config asks.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "not a JSON log line: {first}"
    );
    let _ = node.kill();
    let _ = node.wait();
}

/// The Kubernetes version the manifests are checked against (README, Deployment).
const KUBERNETES_VERSION: &str = "1.34.0";

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).expect(path);
    serde_yaml_ng::from_str(&text).expect(path)
}

fn run_tool(mut command: Command) {
    let out = command.output().expect("run the validator");
    assert!(
        out.status.success(),
        "{command:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `hanzo-twin check-config --deny-warnings` on deploy/config.yaml with
/// exactly `env` (nothing inherited): its one-line summary.
fn check_config(env: &[(String, String)]) -> String {
    let out = Command::new(bin())
        .args(["check-config", "--deny-warnings", "--config"])
        .arg(repo().join("deploy/config.yaml"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("hanzo-twin check-config");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check-config with {env:?}:\n{said}");
    said
}

#[test]
fn compose_yml_follows_the_compose_specification() {
    let Some(validator) = venv_tool("check-jsonschema") else {
        return;
    };
    let mut command = Command::new(validator);
    command
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(repo().join("compose.yml"));
    run_tool(command);
    // Every service but the one-shot jobs says how its health is checked,
    // and the node waits for each server it uses.
    let compose = yaml("compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    for (name, service) in services {
        let name = name.as_str().expect("name");
        let one_shot = matches!(name, "minio-buckets" | "mqtt-certs");
        assert_eq!(
            service.get("healthcheck").is_some(),
            !one_shot,
            "service {name}: a health check for each server"
        );
    }
    let waits_for = compose["services"]["twin-api"]["depends_on"]
        .as_mapping()
        .expect("depends_on");
    for server in ["postgres", "minio-buckets", "kafka", "mosquitto"] {
        assert!(
            waits_for.contains_key(server),
            "twin-api waits for {server}"
        );
    }
}

/// The node's environment in compose.yml, its `${VAR:?…}` and `${VAR:-…}`
/// filled as compose would with the variables given.
#[test]
fn the_nodes_environment_in_compose_yml_passes_check_config() {
    let compose = yaml("compose.yml");
    let environment = compose["services"]["twin-api"]["environment"]
        .as_mapping()
        .expect("twin-api environment");
    let given = [
        ("DB_PASSWORD", "db-secret"),
        ("MINIO_ROOT_PASSWORD", "minio-secret"),
    ];
    let interpolate = |value: &str| -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closing brace") + start;
            let expr = &rest[start + 2..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr.split(":?").next().unwrap_or(expr), None),
            };
            let value = given
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .or(default.map(str::to_string))
                .unwrap_or_else(|| panic!("compose.yml uses ${{{name}}}, which has no default"));
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    };
    let env: Vec<(String, String)> = environment
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => interpolate(s),
                other => serde_yaml_ng::to_string(other)
                    .expect("value")
                    .trim()
                    .to_string(),
            };
            (k.as_str().expect("name").to_string(), value)
        })
        .collect();
    let said = check_config(&env);
    assert!(
        said.contains("metadata postgres, storage s3 http://minio:9000, auth dev"),
        "{said}"
    );
}

/// The files kustomization.yaml applies, each a valid Kubernetes object.
#[test]
fn the_kubernetes_manifests_validate_against_the_documented_version() {
    let listed: Vec<String> = yaml("deploy/kubernetes/kustomization.yaml")["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("file").to_string())
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, present, "kustomization.yaml applies every manifest");
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let minor = KUBERNETES_VERSION.trim_end_matches(".0");
    assert!(
        readme.contains(&format!("Kubernetes {minor}")),
        "the README names the Kubernetes version the manifests are checked against"
    );
    let Some(validator) = venv_tool("kubernetes-validate") else {
        return;
    };
    let mut command = Command::new(validator);
    command.args(["--strict", "-k", KUBERNETES_VERSION]);
    for file in &listed {
        command.arg(repo().join("deploy/kubernetes").join(file));
    }
    run_tool(command);
}

#[test]
fn the_configmap_carries_the_image_config_and_the_pods_mount_it_where_the_image_reads() {
    let configmap = yaml("deploy/kubernetes/configmap.yaml");
    let image_config = std::fs::read_to_string(repo().join("deploy/config.yaml")).expect("config");
    assert_eq!(
        configmap["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml"),
        image_config,
        "deploy/kubernetes/configmap.yaml carries deploy/config.yaml verbatim"
    );
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mounts: Vec<(&str, &str)> = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name"),
                m["mountPath"].as_str().expect("path"),
            )
        })
        .collect();
    for wanted in [
        ("config", "/etc/hanzo-twin/config.yaml"),
        ("jwt", "/etc/hanzo-twin/jwt"),
        ("data", "/var/lib/hanzo-twin"),
    ] {
        assert!(
            mounts.contains(&wanted),
            "mounted: {wanted:?} in {mounts:?}"
        );
    }
    // The ports the image exposes, and the cluster port open between nodes.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let ports: Vec<u64> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| p["containerPort"].as_u64().expect("port"))
        .collect();
    assert_eq!(ports, [8082, 9090, 7946]);
    assert!(dockerfile.contains("EXPOSE 8082 9090 7946"));
    let policy = yaml("deploy/kubernetes/networkpolicy.yaml");
    let between_nodes = policy["spec"]["ingress"]
        .as_sequence()
        .expect("ingress")
        .iter()
        .any(|rule| {
            rule["from"][0]["podSelector"]["matchLabels"]["app"].as_str() == Some("hanzo-twin")
                && rule["ports"][0]["port"].as_u64() == Some(7946)
        });
    assert!(between_nodes, "the NetworkPolicy opens 7946 between nodes");
}

/// The Deployment's environment, as the kubelet would give it: fields of
/// the pod, the Secrets' keys and `$(VAR)` references filled in.
#[test]
fn the_pods_environment_in_the_deployment_passes_check_config() {
    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = var["name"].as_str().expect("name").to_string();
        let value = if let Some(value) = var["value"].as_str() {
            // $(NAME) refers to a variable defined above it.
            let mut value = value.to_string();
            for (k, v) in &env {
                value = value.replace(&format!("$({k})"), v);
            }
            assert!(
                !value.contains("$("),
                "{name}: unresolved reference in {value}"
            );
            value
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.name" => "hanzo-twin-7d9f8-x2kqp".into(),
                "status.podIP" => "10.244.1.7".into(),
                other => panic!("{name}: a field the test does not fill: {other}"),
            }
        } else {
            let secret = &var["valueFrom"]["secretKeyRef"];
            assert_eq!(
                secret["name"].as_str(),
                Some("hanzo-twin-secrets"),
                "{name}: the Secret the Deployment documents"
            );
            match secret["key"].as_str().expect("key") {
                "database-url" => "postgresql://hanzo:pw@postgres.hanzo.svc:5432/hanzo_twin".into(),
                key => format!("secret-{key}"),
            }
        };
        env.push((name, value));
    }
    let said = check_config(&env);
    assert!(
        said.contains("ok: node hanzo-twin-7d9f8-x2kqp")
            && said.contains(
                "metadata postgres, storage s3 (AWS), auth jwt, cluster on 10.244.1.7:7946"
            ),
        "{said}"
    );
}

/// deploy/kubernetes-live-topology: the base deployment, plus read access
/// to exactly the kinds a node lists for a live cluster's topology
/// (runtime/src/kube_topology.rs), get and list only, bound to the node's
/// ServiceAccount, whose token the overlay mounts (the base mounts none).
#[test]
fn the_live_topology_overlay_grants_the_node_read_only_access_to_what_it_lists() {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes-live-topology/rbac.yaml"))
        .expect("rbac.yaml");
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let of_kind = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let mut granted = Vec::new();
    for rule in of_kind("ClusterRole")["rules"]
        .as_sequence()
        .expect("rules")
    {
        let verbs: Vec<&str> = rule["verbs"]
            .as_sequence()
            .expect("verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(verbs, ["get", "list"], "read only: {rule:?}");
        for group in rule["apiGroups"].as_sequence().expect("groups") {
            for resource in rule["resources"].as_sequence().expect("resources") {
                granted.push(format!(
                    "{}/{}",
                    group.as_str().expect("group"),
                    resource.as_str().expect("resource")
                ));
            }
        }
    }
    granted.sort();
    assert_eq!(
        granted,
        [
            "/nodes",
            "/resourcequotas",
            "/services",
            "apps/deployments",
            "apps/statefulsets",
            "autoscaling/horizontalpodautoscalers",
            "networking.k8s.io/networkpolicies",
            "policy/poddisruptionbudgets",
        ]
    );
    // As many kinds as the node lists.
    let reader = std::fs::read_to_string(repo().join("runtime/src/kube_topology.rs"))
        .expect("kube_topology.rs");
    assert_eq!(
        reader.matches("list::<").count() + reader.matches("Api::<Node>::all").count(),
        granted.len()
    );
    let account = yaml("deploy/kubernetes/serviceaccount.yaml");
    let subject = &of_kind("ClusterRoleBinding")["subjects"][0];
    assert_eq!(subject["name"], account["metadata"]["name"]);
    assert_eq!(subject["namespace"], account["metadata"]["namespace"]);
    let overlay = yaml("deploy/kubernetes-live-topology/kustomization.yaml");
    assert_eq!(overlay["resources"][0], "../kubernetes");
    let patches = serde_yaml_ng::to_string(&overlay["patches"]).expect("YAML");
    assert_eq!(patches.matches("automountServiceAccountToken").count(), 2);
    // Egress to the API server's own port, which the base does not allow.
    assert!(patches.contains("port: 6443"), "{patches}");
    let Some(validator) = venv_tool("kubernetes-validate") else {
        return;
    };
    let mut command = Command::new(validator);
    command
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .arg(repo().join("deploy/kubernetes-live-topology/rbac.yaml"));
    run_tool(command);
}

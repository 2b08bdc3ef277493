//! The API against its own OpenAPI document: schemathesis (a real schema
//! fuzzer) generates requests from `/v1/openapi.json` for a token of each
//! role, and every answer must be a documented status with a body that fits
//! its schema, and never a server error. The stateful phase follows the
//! document's links: create, then get, start, fork and delete what it made.

mod common;

use common::jwt::{jwt_node, token};
use std::path::PathBuf;
use std::process::Command;

/// The schemathesis CLI beside the test venv's Python (scripts/test.sh
/// installs it from scripts/requirements-test.txt).
fn schemathesis() -> Option<PathBuf> {
    let Ok(python) = std::env::var("HANZO_TWIN_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED openapi conformance: HANZO_TWIN_TEST_PYTHON is not set; run scripts/test.sh, which installs schemathesis into the venv"
        );
        return None;
    };
    let cli = PathBuf::from(python).with_file_name("schemathesis");
    assert!(
        cli.exists(),
        "{} is missing; scripts/test.sh installs schemathesis from scripts/requirements-test.txt",
        cli.display()
    );
    Some(cli)
}

#[tokio::test]
async fn every_role_gets_documented_answers_and_no_server_errors_under_schemathesis() {
    let Some(cli) = schemathesis() else { return };
    let node = jwt_node().await;
    // The twin the document's examples name, so the control routes reach a
    // running twin and not only 404s.
    let admin = common::client(Some(&token("acme", "twin-admin")), None);
    let definition = std::fs::read_to_string(common::repo().join("configs/twins/robot-arm.yaml"))
        .expect("sample definition")
        .replace("organization: default", "organization: acme");
    let created = admin
        .post(node.url("/v1/twins"))
        .header("content-type", "application/yaml")
        .body(definition)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let started = admin
        .post(node.url("/v1/twins/robot-arm-cell/start"))
        .json(&serde_json::json!({ "clock": "paused" }))
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), 200, "{:?}", started.text().await);
    // And the infrastructure twin they name, for the /v1/infra routes.
    let mut shop = common::shop_infra_definition("shop-infra");
    shop["organization"] = serde_json::json!("acme");
    let created = admin
        .post(node.url("/v1/twins"))
        .json(&shop)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let started = admin
        .post(node.url("/v1/twins/shop-infra/start"))
        .json(&serde_json::json!({ "clock": "paused" }))
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), 200, "{:?}", started.text().await);

    let schema = node.url("/v1/openapi.json");
    let mut generated = 0u64;
    // The admin goes last: its requests may stop or delete the twin.
    for role in ["twin-viewer", "twin-operator", "twin-admin"] {
        let bearer = format!("Authorization: Bearer {}", token("acme", role));
        let run = tokio::task::spawn_blocking({
            let (cli, schema) = (cli.clone(), schema.clone());
            move || {
                Command::new(cli)
                    .args(["run", &schema, "-H", &bearer])
                    .args([
                        "--checks",
                        "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                        "--phases",
                        "examples,coverage,fuzzing,stateful",
                        "--max-examples",
                        "3",
                        "--workers",
                        "1",
                        "--seed",
                        "82",
                        "--no-color",
                    ])
                    .env("SCHEMATHESIS_HOOKS", "")
                    .output()
                    .expect("schemathesis runs")
            }
        })
        .await
        .expect("join");
        let out = String::from_utf8_lossy(&run.stdout).to_string()
            + &String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success(),
            "schemathesis as {role} found problems:\n{out}"
        );
        let count = out
            .lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_suffix(" passed")
                    .or_else(|| {
                        l.split(" generated")
                            .next()
                            .filter(|_| l.contains(" generated"))
                    })
                    .and_then(|n| n.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .unwrap_or_else(|| panic!("no test-case count in schemathesis' output:\n{out}"));
        eprintln!("schemathesis as {role}: {count} generated requests, all conforming");
        generated += count;
    }
    assert!(generated > 100, "only {generated} requests were generated");
    eprintln!("schemathesis: {generated} generated requests in all");
}

//! Infrastructure twins and the timeseries database: a week of recorded
//! load (a `metrics_1m` table as TimescaleDB's continuous aggregate has it,
//! generated here in PostgreSQL) replayed through the demo shop by the
//! spec's query, variants compared on the same traffic, and the results
//! written back as tagged experiments.

mod common;

use common::{bin, output_of, postgres_url, repo};
use serde_json::Value;
use uuid::Uuid;

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test database");
    tokio::spawn(connection);
    client
}

/// A schema holding a week of per-minute request rates, ending now: the
/// gateway's daily cycle (3–9 requests a second), a service the shop lacks,
/// and a metric the query leaves out.
async fn recorded_week(url: &str) -> String {
    let schema = format!("t_replay_{}", Uuid::new_v4().simple());
    let c = client(url).await;
    c.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.metrics_1m (bucket timestamptz, metric text, service text, avg_value double precision);
         INSERT INTO {schema}.metrics_1m
           SELECT b, 'hanzo_requests_per_second', 'gateway',
                  6 + 3 * sin(2 * pi() * extract(epoch FROM b) / 86400)
           FROM generate_series(date_trunc('minute', now()) - interval '7 days' + interval '1 minute',
                                date_trunc('minute', now()) - interval '1 minute', interval '1 minute') AS b;
         INSERT INTO {schema}.metrics_1m
           SELECT bucket, 'hanzo_requests_per_second', 'billing', 2 FROM {schema}.metrics_1m WHERE service = 'gateway';
         INSERT INTO {schema}.metrics_1m
           SELECT bucket, 'cpu_seconds', 'gateway', 1000 FROM {schema}.metrics_1m WHERE service = 'gateway';"
    ))
    .await
    .expect("the recorded week");
    schema
}

/// The demo shop twin, replaying from `schema` by the spec's query.
fn definition(dir: &std::path::Path, schema: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("configs/twins/shop-infra.yaml")).expect("demo");
    let shop = repo().join("configs/infra/shop");
    let mut spec: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    spec["topology"]["paths"] = serde_json::json!([shop]);
    spec["traffic"] = serde_json::json!({
        "source": "timeseries",
        "query": format!(
            "SELECT bucket, metric, service, avg_value\nFROM {schema}.metrics_1m\nWHERE metric LIKE 'hanzo_requests_%'\n  AND bucket > NOW() - INTERVAL '7 days'"
        ),
    });
    spec["failure_injection"]["scenarios"][0]["at"] = "1h".into();
    spec["failure_injection"]["scenarios"][1]["at"] = "2h".into();
    spec["simulation"] = serde_json::json!({ "seed": 3 });
    let path = dir.join("shop-replay.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&spec).expect("YAML")).expect("write");
    path
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    output_of(std::process::Command::new(bin()).args(args))
}

/// A node that replays from the test database.
async fn replaying_node(url: &str) -> common::TestNode {
    common::TestNode::start_opts(common::NodeOptions {
        env: &[("HANZO_TWIN_TIMESERIES_URL", url)],
        ..Default::default()
    })
    .await
}

/// The spec's query on the recorded week in `schema`, whole.
fn requests_query(schema: &str) -> String {
    format!(
        "SELECT bucket, metric, service, avg_value FROM {schema}.metrics_1m WHERE metric LIKE 'hanzo_requests_%'"
    )
}

/// The replay job `id`, once it has ended.
async fn replay_ended(node: &common::TestNode, id: &str) -> Value {
    common::wait_job(node, id, "the replay ended", |j| {
        matches!(j["state"].as_str(), Some("succeeded" | "failed"))
    })
    .await
}

/// `hanzo-twin replay ARGS…` against `node`, with its token.
async fn replay_cli(node: &common::TestNode, args: &[&str]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (api, token) = (node.api(), node.token.clone());
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(bin());
        command.arg("replay").args(&args).args(["--api", &api]);
        if let Some(t) = token {
            command.env("HANZO_TWIN_TOKEN", t);
        }
        output_of(&mut command)
    })
    .await
    .expect("ran")
}

#[tokio::test]
async fn a_recorded_week_replays_through_the_shop_and_variants_are_written_back() {
    let Some(url) = postgres_url() else { return };
    let schema = recorded_week(&url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let def = definition(dir.path(), &schema);
    let def = def.to_str().expect("a UTF-8 path");
    let experiment = format!("replay-{}", Uuid::new_v4().simple());

    // The whole week, written back.
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let (url, def, experiment) = (url.clone(), def.to_string(), experiment.clone());
        move || {
            run(&[
                "infra",
                "simulate",
                &def,
                "--database-url",
                &url,
                "--experiment",
                &experiment,
                "--output",
                "json",
            ])
        }
    })
    .await
    .expect("ran");
    assert!(matches!(code, Some(0) | Some(3)), "{stdout}{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("JSON");
    // Every minute of the week but the last (the query's `>` leaves the first out).
    assert_eq!(v["replay"]["buckets"], 7 * 1440 - 1);
    assert_eq!(
        v["replay"]["unknown_services"],
        serde_json::json!(["billing"])
    );
    let recorded: f64 = {
        let c = client(&url).await;
        let row = c
            .query_one(
                &format!(
                    "SELECT sum(avg_value) * 60 FROM {schema}.metrics_1m WHERE service = 'gateway' AND metric LIKE 'hanzo_requests_%' AND bucket > now() - interval '7 days'"
                ),
                &[],
            )
            .await
            .expect("sum");
        row.get(0)
    };
    let sent = v["report"]["entries"][0]["sent"].as_f64().expect("sent");
    assert!(
        (sent / recorded - 1.0).abs() < 0.01,
        "replayed {sent} requests of {recorded} recorded"
    );
    let rows = v["experiment_rows"].as_u64().expect("rows written");
    assert!(rows > 4 * 10_000, "{rows}");

    // Variants on the same traffic (one day of it), side by side.
    let day_end = chrono::Utc::now() - chrono::Duration::days(5);
    let day_start = day_end - chrono::Duration::days(1);
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let (url, def, experiment) = (url.clone(), def.to_string(), experiment.clone());
        move || {
            run(&[
                "infra",
                "compare",
                &def,
                "--variant",
                "api=5",
                "--variant",
                "api=6,gateway=3",
                "--from",
                &day_start.to_rfc3339(),
                "--to",
                &day_end.to_rfc3339(),
                "--database-url",
                &url,
                "--experiment",
                &experiment,
            ])
        }
    })
    .await
    .expect("ran");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for variant in ["base", "api=5", "api=6,gateway=3"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(variant)),
            "{variant}: {stdout}"
        );
    }
    // Written back, tagged: each variant's requests add up to the same load.
    let c = client(&url).await;
    let rows = c
        .query(
            "SELECT variant, sum(value) FROM twin_experiments
             WHERE experiment = $1 AND metric IN ('hanzo_twin_requests_ok', 'hanzo_twin_requests_failed')
             GROUP BY variant ORDER BY variant",
            &[&experiment],
        )
        .await
        .expect("experiments");
    let totals: Vec<(String, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(totals.len(), 3, "{totals:?}");
    // The week's (base) and the day's three, each the same day's load.
    let day: Vec<f64> = totals
        .iter()
        .filter(|(v, _)| v != "base")
        .map(|(_, t)| *t)
        .collect();
    let (low, high) = day
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), t| (l.min(*t), h.max(*t)));
    assert!(low > 100_000.0 && high / low < 1.01, "{totals:?}");
    let costs = c
        .query(
            "SELECT variant, value FROM twin_experiments WHERE experiment = $1 AND metric = 'hanzo_twin_replica_hours' ORDER BY value",
            &[&experiment],
        )
        .await
        .expect("costs");
    assert_eq!(costs.len(), 4, "the week and three variants");
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("cleanup");
}

#[test]
fn replay_without_a_database_or_with_a_bad_time_says_what_to_give() {
    let dir = tempfile::tempdir().expect("tempdir");
    let def = definition(dir.path(), "nowhere");
    let def = def.to_str().expect("a UTF-8 path");
    let (code, _, stderr) = output_of(
        std::process::Command::new(bin())
            .args(["infra", "simulate", def])
            .env_remove("HANZO_TWIN_TIMESERIES_URL"),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--database-url") && stderr.contains("HANZO_TWIN_TIMESERIES_URL"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&[
        "infra",
        "simulate",
        def,
        "--database-url",
        "postgres://127.0.0.1:1/x",
        "--from",
        "yesterday",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--from yesterday") && stderr.contains("RFC 3339"),
        "{stderr}"
    );
    let demo = repo().join("configs/twins/shop-infra.yaml");
    let (code, _, stderr) = run(&[
        "infra",
        "simulate",
        demo.to_str().expect("path"),
        "--from",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not timeseries"), "{stderr}");
}

/// On a node: `POST /v1/infra/twins/{id}/replay` (and `hanzo-twin replay`,
/// as the spec writes it) runs a day of the recorded week through the
/// running shop's topology, faults and assertions as a job, and writes it
/// back tagged; without a timeseries database, or with a bad time, it says
/// what to give.
#[tokio::test]
async fn a_node_replays_recorded_load_through_its_infrastructure_twin_as_a_job() {
    let Some(url) = postgres_url() else { return };
    let schema = recorded_week(&url).await;
    let node = replaying_node(&url).await;
    let mut shop = common::shop_infra_definition("twin-hanzo-cloud");
    shop["failure_injection"]["scenarios"][0]["at"] = "1h".into();
    shop["failure_injection"]["scenarios"][1]["at"] = "2h".into();
    let (status, body) = node.post("/v1/twins", shop).await;
    assert_eq!(status, 201, "{body}");
    let query = requests_query(&schema);
    let day_end = chrono::Utc::now() - chrono::Duration::days(5);
    let day_start = day_end - chrono::Duration::days(1);
    let (from, to) = (day_start.to_rfc3339(), day_end.to_rfc3339());
    let experiment = format!("node-{}", Uuid::new_v4().simple());

    let (status, job) = node
        .post(
            "/v1/infra/twins/twin-hanzo-cloud/replay",
            serde_json::json!({ "from": from, "to": to, "query": query, "experiment": experiment }),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["kind"], "replay");
    let id = job["id"].as_str().expect("job id").to_string();
    let done = replay_ended(&node, &id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let result = &done["result"];
    assert_eq!(result["replay"]["buckets"], 1440, "{result}");
    // A day's minutes (the window need not fall on a minute), all run.
    let span = result["replay"]["span_s"].as_f64().expect("span");
    assert!((86_340.0..=86_460.0).contains(&span), "{span}");
    assert_eq!(result["report"]["time_s"], result["replay"]["span_s"]);
    assert_eq!(
        result["verdicts"].as_array().map(Vec::len),
        Some(4),
        "{result}"
    );
    // The day's recorded load, all of it sent through the gateway.
    let recorded: f64 = client(&url)
        .await
        .query_one(
            &format!(
                "SELECT sum(avg_value) * 60 FROM {schema}.metrics_1m WHERE service = 'gateway' AND metric LIKE 'hanzo_requests_%' AND extract(epoch FROM bucket) >= $1::float8 AND extract(epoch FROM bucket) < $2::float8"
            ),
            &[
                &(day_start.timestamp_millis() as f64 / 1000.0),
                &(day_end.timestamp_millis() as f64 / 1000.0),
            ],
        )
        .await
        .expect("sum")
        .get(0);
    let sent = result["report"]["entries"][0]["sent"]
        .as_f64()
        .expect("sent");
    assert!(
        (sent / recorded - 1.0).abs() < 0.01,
        "replayed {sent} requests of {recorded} recorded"
    );
    // Written back under the experiment, the twin's name its variant.
    let rows = result["experiment_rows"].as_i64().expect("rows");
    let stored: i64 = client(&url)
        .await
        .query_one(
            "SELECT count(*) FROM twin_experiments WHERE experiment = $1 AND variant = 'twin-hanzo-cloud'",
            &[&experiment],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, rows);

    // The spec's command: the same replay, followed to its end.
    let (code, stdout, stderr) = replay_cli(
        &node,
        &[
            "twin-hanzo-cloud",
            "--from",
            &from,
            "--to",
            &to,
            "--query",
            &query,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("replayed 1440 recorded buckets (24.0 h from"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gateway responds within 5s during pod-kill"),
        "{stdout}"
    );

    // Bad input is refused before a job exists.
    for (body, field) in [
        (serde_json::json!({ "from": "yesterday" }), "from"),
        (
            serde_json::json!({ "from": "2026-02-21T00:00:00Z", "to": "2026-02-20T00:00:00Z" }),
            "to",
        ),
        (
            serde_json::json!({ "experiment": "no spaces" }),
            "experiment",
        ),
    ] {
        let (status, err) = node
            .post("/v1/infra/twins/twin-hanzo-cloud/replay", body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    client(&url)
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("cleanup");

    // A node without a timeseries database fails the job saying what to set.
    let bare = common::TestNode::start().await;
    let (status, body) = bare
        .post("/v1/twins", common::shop_infra_definition("shop"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, job) = bare
        .post("/v1/infra/twins/shop/replay", serde_json::json!({}))
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    let failed = replay_ended(&bare, &id).await;
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("timeseries.url")),
        "{failed}"
    );
}

/// What-ifs on a node: the twin and two variants (more API replicas; a
/// NetworkPolicy that cuts the API off its database) replayed on the same
/// recorded load as one job, set side by side, plotted as the job's
/// artifact and written back per variant; by the API and by `hanzo-twin
/// replay --variant … --plot`; bad variants refused naming their field.
#[tokio::test]
async fn a_node_replays_what_if_variants_beside_its_twin_and_plots_them() {
    let Some(url) = postgres_url() else { return };
    let schema = recorded_week(&url).await;
    let node = replaying_node(&url).await;
    let (status, body) = node
        .post("/v1/twins", common::shop_infra_definition("shop"))
        .await;
    assert_eq!(status, 201, "{body}");
    let query = requests_query(&schema);
    // Six recorded hours, two days back.
    let to = chrono::Utc::now() - chrono::Duration::days(2);
    let from = to - chrono::Duration::hours(6);
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
    let experiment = format!("whatif-{}", Uuid::new_v4().simple());
    let variants = serde_json::json!([
        { "name": "api-6", "patch": { "replicas": { "api": 6 } } },
        { "name": "gateway-only-db", "patch": { "manifests": common::GATEWAY_ONLY_POLICY } },
    ]);
    let (status, job) = node
        .post(
            "/v1/infra/twins/shop/replay",
            serde_json::json!({ "from": from, "to": to, "query": query,
                                "experiment": experiment, "variants": variants }),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    let done = replay_ended(&node, &id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let result = &done["result"];
    let rows = result["comparison"].as_array().expect("a comparison");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["variant"].as_str()).collect();
    assert_eq!(names, ["shop", "api-6", "gateway-only-db"], "{result}");
    let field = |i: usize, key: &str| rows[i][key].as_f64().expect("a figure");
    // The same load through each: the requests differ by chance only.
    for i in 1..3 {
        assert!(
            (field(i, "requests") / field(0, "requests") - 1.0).abs() < 0.01,
            "{rows:?}"
        );
    }
    // Cut off from its database, the API fails the writes the shop makes.
    assert!(field(2, "failed") > field(0, "failed") + 1000.0, "{rows:?}");
    // Each run's own report and verdicts are in the result too.
    let each = result["variants"].as_array().expect("variants");
    assert_eq!(each.len(), 2);
    assert_eq!(each[1]["variant"], "gateway-only-db");
    assert_eq!(
        each[1]["report"]["entries"][0]["failed"].as_f64(),
        Some(field(2, "failed"))
    );
    assert_eq!(result["verdicts"].as_array().map(Vec::len), Some(4));

    // Written back per variant, tagged with the experiment.
    let written: Vec<(String, i64)> = client(&url)
        .await
        .query(
            "SELECT variant, count(*) FROM twin_experiments WHERE experiment = $1 GROUP BY variant ORDER BY variant",
            &[&experiment],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let variants_written: Vec<&str> = written.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(variants_written, ["api-6", "gateway-only-db", "shop"]);
    assert_eq!(
        written.iter().map(|(_, n)| n).sum::<i64>(),
        [
            result["experiment_rows"].as_i64(),
            each[0]["experiment_rows"].as_i64(),
            each[1]["experiment_rows"].as_i64()
        ]
        .iter()
        .map(|n| n.expect("rows written"))
        .sum::<i64>()
    );

    // The plot: the job's artifact, an SVG with a line per run in each panel.
    assert_eq!(done["artifacts"][0]["name"], "comparison.svg", "{done}");
    let r = node
        .http
        .get(node.url(&format!("/v1/jobs/{id}/artifacts/comparison.svg")))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let svg = r.text().await.expect("SVG");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    for name in ["shop", "api-6", "gateway-only-db"] {
        assert!(
            svg.contains(&format!("\n{name}\n")),
            "{name} not in the legend"
        );
    }
    let lines = svg
        .split("<polyline")
        .skip(1)
        .filter(|l| {
            l.split("points=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
                .is_some_and(|p| p.split_whitespace().count() > 100)
        })
        .count();
    assert_eq!(lines, 6, "two panels, three runs");

    // The spec's command with a what-if, its plot saved.
    let dir = tempfile::tempdir().expect("tempdir");
    let plot = dir.path().join("replay.svg");
    let plot_path = plot.display().to_string();
    let (code, stdout, stderr) = replay_cli(
        &node,
        &[
            "shop",
            "--from",
            &from,
            "--to",
            &to,
            "--query",
            &query,
            "--variant",
            "api=6",
            "--plot",
            &plot_path,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("VARIANT") && stdout.contains("REPLICA-HOURS"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("api=6 ")), "{stdout}");
    let saved = std::fs::read_to_string(&plot).expect("the plot saved");
    assert!(
        saved.starts_with("<svg") && saved.contains("\napi=6\n"),
        "{saved}"
    );

    // Bad variants: refused before a job exists, naming the field...
    let more = serde_json::json!({ "replicas": { "api": 6 } });
    let nine: Vec<Value> = (0..9)
        .map(|i| serde_json::json!({ "name": format!("v{i}"), "patch": more }))
        .collect();
    for (variants, field) in [
        (
            serde_json::json!([{ "name": "a", "patch": more }, { "name": "a", "patch": more }]),
            "variants[1].name",
        ),
        (
            serde_json::json!([{ "name": "a", "patch": {} }]),
            "variants[0].patch",
        ),
        (
            serde_json::json!([{ "name": "a", "patch": { "cpu_limit": { "api": -1 } } }]),
            "variants[0].patch.cpu_limit.api",
        ),
        (
            serde_json::json!([{ "name": "a", "patch": { "manifests": "kind: [" } }]),
            "variants[0].patch.manifests",
        ),
        (
            serde_json::json!([{ "name": "no spaces", "patch": more }]),
            "variants[0].name",
        ),
        (Value::Array(nine), "variants"),
    ] {
        let body = serde_json::json!({ "variants": variants });
        let (status, err) = node.post("/v1/infra/twins/shop/replay", body.clone()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    // ...and one that names a service the topology lacks fails its job,
    // saying which and what there is.
    let (status, job) = node
        .post(
            "/v1/infra/twins/shop/replay",
            serde_json::json!({ "from": "2026-01-01T00:00:00Z", "query": query, "variants": [
                { "name": "typo", "patch": { "replicas": { "apii": 6 } } },
            ] }),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    let failed = replay_ended(&node, &id).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("variants[0].patch.replicas.apii:") && error.contains("gateway"),
        "{error}"
    );
    client(&url)
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("cleanup");
}

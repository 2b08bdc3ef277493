//! Infrastructure twins on a node: the shop of configs/twins/shop-infra.yaml
//! created through `POST /v1/twins` as the spec writes it (`type:
//! infrastructure`), stepped in simulated time, forked into a what-if that
//! gets a network partition injected, listed under `/v1/infra/twins`, its
//! chaos audited and counted, and bad input refused naming the field.

mod common;
use common::{TestNode, shop_infra_definition};
use serde_json::{Value, json};

async fn create_running(node: &TestNode, definition: Value) -> String {
    let (status, body) = node.post("/v1/twins", definition).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let (status, body) = node
        .post(
            &format!("/v1/twins/{id}/start"),
            json!({ "clock": "paused" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    id
}

async fn infra(node: &TestNode, id: &str) -> Value {
    let (status, body) = node.get(&format!("/v1/infra/twins/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn service<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["report"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {status}"))
}

fn verdict<'a>(status: &'a Value, assertion: &str) -> &'a Value {
    status["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|v| v["assertion"] == assertion)
        .unwrap_or_else(|| panic!("no verdict for {assertion} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infrastructure_twin_runs_forks_and_takes_chaos_on_a_node() {
    let node = TestNode::start().await;
    let id = create_running(&node, shop_infra_definition("shop")).await;
    let (_, record) = node.get(&format!("/v1/twins/{id}")).await;
    assert_eq!(record["type"], "infrastructure", "{record}");
    assert_eq!(record["engine"]["type"], "infrastructure");
    assert!(record.get("scene").is_none(), "{record}");

    // Eleven simulated minutes at one step a second: past the pod kill at 10m.
    let (status, report) = node
        .post(&format!("/v1/twins/{id}/step"), json!({ "steps": 660 }))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["time"], 660.0);
    let now = infra(&node, &id).await;
    assert_eq!(now["time"], 660.0);
    let gateway = service(&now, "gateway");
    // 150 outside requests a second, give or take Poisson's spread.
    let arrivals = gateway["arrivals"].as_u64().expect("arrivals");
    assert!((90_000..108_000).contains(&arrivals), "{arrivals}");
    assert_eq!(now["faults"][0]["name"], "pod-kill");
    assert_eq!(now["faults"][0]["at_s"], 600.0);
    let during = verdict(&now, "gateway responds within 5s during pod-kill");
    assert_eq!(during["passed"], true, "{during}");
    assert!(during["evidence"]["requests"].as_u64().expect("requests") > 0);

    // A what-if: a fork goes on exactly as its parent until chaos differs.
    let (status, fork) = node
        .post(
            &format!("/v1/twins/{id}/fork"),
            json!({ "name": "shop-partitioned" }),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    let fork_id = fork["id"].as_str().expect("fork id").to_string();
    let (status, _) = node
        .post(
            &format!("/v1/twins/{fork_id}/start"),
            json!({ "clock": "paused" }),
        )
        .await;
    assert!(status == 200 || status == 409, "start the fork: {status}");
    for twin in [&id, &fork_id] {
        node.step(twin, 30).await;
    }
    let (parent, copy) = (infra(&node, &id).await, infra(&node, &fork_id).await);
    assert_eq!(parent["report"], copy["report"], "the fork diverged");

    // The definition's partition, on the fork only, now.
    let (status, injected) = node
        .post(
            &format!("/v1/infra/twins/{fork_id}/inject"),
            json!({ "scenario": "network-partition" }),
        )
        .await;
    assert_eq!(status, 202, "{injected}");
    let last = injected["faults"]
        .as_array()
        .and_then(|f| f.last())
        .expect("the injected fault");
    assert_eq!(last["name"], "network-partition");
    assert_eq!(last["target"], "service/postgres-rw");
    assert_eq!(last["at_s"], 690.0);
    assert_eq!(last["duration_s"], 30.0);
    for twin in [&id, &fork_id] {
        node.step(twin, 60).await;
    }
    let (parent, copy) = (infra(&node, &id).await, infra(&node, &fork_id).await);
    let timeouts = |s: &Value| {
        service(s, "api")["call_timeouts"]
            .as_u64()
            .expect("timeouts")
    };
    assert!(
        timeouts(&copy) > timeouts(&parent) + 100,
        "the partition held the API's calls to postgres: {} vs {}",
        timeouts(&copy),
        timeouts(&parent)
    );

    // A scenario the definition does not declare: its target and action
    // (read from its name) are enough.
    let (status, body) = node
        .post(
            &format!("/v1/infra/twins/{fork_id}/inject"),
            json!({ "scenario": "cpu-stress", "target": "deployment/api", "load_percent": 80, "duration": "2m" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // Counted per scenario, and audited.
    let metrics = node.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "hanzo_twin_chaos_injections_total{scenario=\"network-partition\"} 1"),
        "{metrics}"
    );
    let (status, audit) = node.get("/v1/audit").await;
    assert_eq!(status, 200, "{audit}");
    let chaos: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "infra.inject_chaos")
        .collect();
    assert_eq!(chaos.len(), 2, "{audit}");
    assert!(
        chaos.iter().all(|e| e["target"] == json!(fork_id)),
        "{audit}"
    );

    // Listed with the infrastructure twins; a physical twin is not.
    let arm = std::fs::read_to_string(common::repo().join("configs/twins/robot-arm.yaml"))
        .expect("sample");
    let (status, body) = node.post_raw("/v1/twins", "application/yaml", &arm).await;
    assert_eq!(status, 201, "{body}");
    let arm_id = body["id"].as_str().expect("id").to_string();
    let (status, page) = node.get("/v1/infra/twins").await;
    assert_eq!(status, 200, "{page}");
    let mut listed: Vec<&str> = page["twins"]
        .as_array()
        .expect("twins")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    listed.sort_unstable();
    let mut want = vec![id.as_str(), fork_id.as_str()];
    want.sort_unstable();
    assert_eq!(listed, want);
    let (status, body) = node.get(&format!("/v1/infra/twins/{arm_id}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("physical twin")),
        "{body}"
    );

    // The twin's state is a checkpoint like any other: it survives a restart.
    let before = infra(&node, &id).await;
    let mut node = node;
    node.restart(false).await;
    let (status, body) = node
        .post(
            &format!("/v1/twins/{id}/start"),
            json!({ "clock": "paused" }),
        )
        .await;
    assert!(status == 200 || status == 409, "{body}");
    let after = infra(&node, &id).await;
    assert_eq!(after["time"], before["time"], "{after}");
    assert_eq!(after["report"], before["report"]);

    // Its traffic is its scene: changed while it runs is a conflict; once
    // stopped, the change takes, its old state no longer fits, and it
    // starts over on the new traffic with `reset`.
    let busier = json!({ "traffic": { "source": "constant", "entries": [{ "service": "gateway", "rps": 300 }] } });
    let (status, body) = node.patch(&format!("/v1/twins/{id}"), busier.clone()).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = node.post(&format!("/v1/twins/{id}/stop"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node.patch(&format!("/v1/twins/{id}"), busier).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node
        .post(
            &format!("/v1/twins/{id}/start"),
            json!({ "clock": "paused" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("start with reset")),
        "{body}"
    );
    let (status, body) = node
        .post(
            &format!("/v1/twins/{id}/start"),
            json!({ "clock": "paused", "reset": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    node.step(&id, 60).await;
    let busy = infra(&node, &id).await;
    assert_eq!(busy["time"], 60.0, "{busy}");
    let arrivals = service(&busy, "gateway")["arrivals"]
        .as_u64()
        .expect("arrivals");
    assert!(
        (16_000..20_000).contains(&arrivals),
        "{arrivals} in 60 s at 300/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_infrastructure_definitions_and_chaos_are_refused_naming_the_field() {
    let node = TestNode::start().await;
    let refused = |definition: Value, field: &'static str, words: &'static str| {
        let node = &node;
        async move {
            let (status, body) = node.post("/v1/twins", definition).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["field"], field, "{body}");
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(message.contains(words), "{field}: {message}");
        }
    };
    let mut d = shop_infra_definition("bad");
    d["assertions"] = json!(["gateway is fast"]);
    refused(d, "assertions[0]", "expected").await;
    let mut d = shop_infra_definition("bad");
    d["scene"] = json!({ "uri": "robot-arm/scene.usda" });
    refused(d, "scene", "no scene").await;
    let mut d = shop_infra_definition("bad");
    d.as_object_mut().map(|o| o.remove("topology"));
    refused(d, "topology", "missing").await;
    let mut d = shop_infra_definition("bad");
    d["topology"]["paths"] = json!(["../../etc"]);
    refused(d, "topology.paths[0]", "..").await;
    let mut d = shop_infra_definition("bad");
    d["failure_injection"]["scenarios"][0]["action"] = json!("unplug");
    refused(d, "failure_injection.scenarios[0].action", "unplug").await;
    let mut d = shop_infra_definition("bad");
    d["traffic"]["entries"][0]["service"] = json!("checkout");
    refused(d, "traffic.entries[0].service", "checkout").await;
    let mut d = shop_infra_definition("bad");
    d["type"] = json!("physical");
    refused(d, "topology", "type: infrastructure").await;

    let id = create_running(&node, shop_infra_definition("shop")).await;
    let inject = format!("/v1/infra/twins/{id}/inject");
    for (request, field, words) in [
        (
            json!({ "scenario": "flood" }),
            "target",
            "declares no scenario",
        ),
        (
            json!({ "scenario": "flood", "target": "deployment/api" }),
            "action",
            "says no action",
        ),
        (
            json!({ "scenario": "pod-kill", "target": "deployment/checkout" }),
            "target",
            "checkout",
        ),
        (
            json!({ "scenario": "network-partition", "duration": "soon" }),
            "duration",
            "soon",
        ),
        (
            json!({ "scenario": "pod-kill", "when": "now" }),
            "when",
            "unknown field",
        ),
    ] {
        let (status, body) = node.post(&inject, request.clone()).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_eq!(body["error"]["field"], field, "{request}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(words), "{request}: {message}");
    }
    // Nothing refused was injected or counted.
    let now = infra(&node, &id).await;
    assert_eq!(now["faults"].as_array().map(Vec::len), Some(2), "{now}");
    assert!(
        !node
            .metrics()
            .await
            .contains("hanzo_twin_chaos_injections_total{scenario=\"flood\"}")
    );
}

/// A what-if fork: `POST /v1/twins/{id}/fork` with a topology patch (seven
/// API replicas; a NetworkPolicy cutting the API off its database) runs
/// the patch from the fork's first instant while its parent goes on as
/// before; a patch the twin refuses leaves no fork behind.
#[tokio::test]
async fn a_what_if_fork_runs_its_topology_patch_and_its_parent_does_not() {
    let node = TestNode::start().await;
    let id = create_running(&node, shop_infra_definition("shop")).await;
    node.step(&id, 300).await;
    let (status, fork) = node
        .post(
            &format!("/v1/twins/{id}/fork"),
            json!({ "name": "shop-what-if", "topology": {
                "replicas": { "api": 7 }, "manifests": common::GATEWAY_ONLY_POLICY } }),
        )
        .await;
    assert_eq!(status, 201, "{fork}");
    let fork_id = fork["id"].as_str().expect("id").to_string();
    let at_fork = service(&infra(&node, &fork_id).await, "postgres")["arrivals"]
        .as_u64()
        .expect("arrivals");
    node.step(&id, 300).await;
    node.step(&fork_id, 300).await;
    let (parent, what_if) = (infra(&node, &id).await, infra(&node, &fork_id).await);
    assert_eq!(parent["time"], what_if["time"]);
    let arrivals = |s: &Value| {
        service(s, "postgres")["arrivals"]
            .as_u64()
            .expect("arrivals")
    };
    // The fork's API no longer reaches PostgreSQL (a few calls were on
    // their way); the parent's does, as before.
    assert!(
        arrivals(&what_if) < at_fork + 50,
        "{at_fork} then {}",
        arrivals(&what_if)
    );
    assert!(
        arrivals(&parent) > at_fork + 10_000,
        "{}",
        arrivals(&parent)
    );
    assert!(service(&what_if, "api")["peak_replicas"].as_u64() >= Some(7));
    assert!(
        service(&what_if, "gateway")["failed"].as_u64()
            > service(&parent, "gateway")["failed"].as_u64()
    );

    // Refused patches leave no fork behind.
    for (topology, field) in [
        (json!({ "workers": { "apii": 2 } }), "topology.workers.apii"),
        (
            json!({ "cpu_limit": { "api": 0 } }),
            "topology.cpu_limit.api",
        ),
    ] {
        let (status, err) = node
            .post(
                &format!("/v1/twins/{id}/fork"),
                json!({ "name": "shop-typo", "topology": topology }),
            )
            .await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["field"], field, "{err}");
        let (status, _) = node.get("/v1/twins/shop-typo").await;
        assert_eq!(status, 404, "the refused fork is gone");
    }
}

/// Two traced requests: the gateway calls the API, whose first request
/// calls the cache (by its Service's name) and whose second does not, as
/// the OpenTelemetry Collector's file exporter writes them.
fn two_traced_requests() -> String {
    let resource = |service: &str, spans: Value| {
        json!({
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "scope": { "name": "manual" }, "spans": spans }]
        })
    };
    let span = |trace: &str, id: &str, parent: &str, from_us: u64, to_us: u64| {
        json!({
            "traceId": trace, "spanId": id, "parentSpanId": parent, "name": "GET /", "kind": 2,
            "startTimeUnixNano": (from_us * 1000).to_string(), "endTimeUnixNano": (to_us * 1000).to_string(),
            "status": {}
        })
    };
    let (a, b) = (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "5bf92f3577b34da6a3ce929d0e0e4737",
    );
    json!({ "resourceSpans": [
        resource("gateway", json!([span(a, "a1", "", 0, 9_000), span(b, "b1", "", 0, 7_000)])),
        resource("api", json!([span(a, "a2", "a1", 1_000, 8_000), span(b, "b2", "b1", 1_000, 6_000)])),
        resource("redis", json!([span(a, "a3", "a2", 2_000, 3_000)])),
    ]})
    .to_string()
}

/// The shop on three nodes with a failover manager, its API's calls read
/// from traces: a node stopped by chaos takes the PostgreSQL primary with
/// it, and the replica takes over; a node the twin lacks is refused.
#[tokio::test]
async fn a_twin_on_nodes_fails_over_when_chaos_stops_a_node_and_takes_its_calls_from_traces() {
    let node = TestNode::start().await;
    let mut d = shop_infra_definition("shop-nodes");
    d["topology"]["nodes"] =
        json!([{ "name": "node", "count": 3, "cpu": "3500m", "memory": "16Gi" }]);
    d["topology"]["services"]["postgres"]["failover"] =
        json!({ "standby": "postgres-replica", "detect_s": 10, "promote_s": 3 });
    d["topology"]["services"]["api"]["calls"] = json!([]);
    d["topology"]["traces"] = json!({ "spans": two_traced_requests() });
    d["failure_injection"] = json!({});
    d["assertions"] = json!(["postgres failover completes within 30s"]);
    let id = create_running(&node, d).await;
    node.step(&id, 60).await;
    let before = infra(&node, &id).await;
    let nodes = before["report"]["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{before}");
    // Half the traced API requests called the cache.
    let (api, cache) = (service(&before, "api"), service(&before, "cache"));
    let share = cache["arrivals"].as_f64().unwrap_or(0.0) / api["arrivals"].as_f64().unwrap_or(1.0);
    assert!((share - 0.5).abs() < 0.05, "{share}: {before}");
    assert_eq!(
        service(&before, "postgres")["arrivals"],
        0,
        "no traced call reaches it"
    );

    // node-0 holds the primary (the scheduler spreads, then fills the least
    // allocated); stopping it promotes the replica 13 s later.
    let (status, body) = node
        .post(
            &format!("/v1/infra/twins/{id}/inject"),
            json!({ "scenario": "node-stop", "target": "node/node-0", "duration": "10m" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    node.step(&id, 60).await;
    let after = infra(&node, &id).await;
    let stopped = &after["report"]["nodes"][0];
    assert_eq!(
        (&stopped["name"], &stopped["ready"]),
        (&json!("node-0"), &json!(false))
    );
    let pg = service(&after, "postgres");
    assert_eq!(
        (&pg["failovers"], &pg["serving"]),
        (&json!(1), &json!("postgres-replica")),
        "{after}"
    );
    let v = verdict(&after, "postgres failover completes within 30s");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["evidence"]["recovery_s"], 13.0, "{v}");

    let (status, body) = node
        .post(
            &format!("/v1/infra/twins/{id}/inject"),
            json!({ "scenario": "node-stop", "target": "node/node-7" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "target", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("node-0, node-1, node-2"), "{message}");
}

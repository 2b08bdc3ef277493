//! One test suite for every twin store: sled (one node's default) and
//! PostgreSQL (shared by several nodes; a real server that scripts/test.sh
//! starts on 127.0.0.1 and names in HANZO_TWIN_TEST_POSTGRES_URL). Also: two
//! nodes pointed at one PostgreSQL schema see the same definitions, and a
//! node whose PostgreSQL is unreachable says so and does not start.

mod common;

use common::{NodeOptions, TestNode, repo};
use hanzo_twin::actors::{Format, TwinDefinition, TwinId, TwinRecord, TwinStore};
use hanzo_twin::store::SledTwinStore;
use hanzo_twin::store_pg::PgTwinStore;
use std::sync::Arc;
use std::time::Duration;

fn postgres_url() -> Option<String> {
    match std::env::var("HANZO_TWIN_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            eprintln!(
                "SKIPPED: HANZO_TWIN_TEST_POSTGRES_URL is not set; scripts/test.sh starts PostgreSQL and sets it"
            );
            None
        }
    }
}

/// A schema of its own for each test, so runs never see each other's rows.
fn fresh_schema(tag: &str) -> String {
    format!("t_{tag}_{}", TwinId::new().0.simple())
}

fn record(name: &str) -> TwinRecord {
    let text =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let mut definition =
        TwinDefinition::parse(&common::rename(&text, name), Format::Yaml).expect("definition");
    definition
        .metadata
        .insert("note".into(), serde_json::json!("名前 ✓ \"quoted\" \\ 🚀"));
    TwinRecord::new(definition)
}

async fn suite(store: Arc<dyn TwinStore>) {
    assert!(
        store.list().await.expect("list").is_empty(),
        "a new store is empty"
    );
    let records: Vec<TwinRecord> = (0..20).map(|i| record(&format!("twin-{i}"))).collect();
    // Concurrent writers, as a node's host and API make them.
    let writes = records.iter().map(|r| {
        let store = store.clone();
        let r = r.clone();
        tokio::spawn(async move { store.put(&r).await })
    });
    for w in writes {
        w.await.expect("task").expect("put");
    }
    let mut listed = store.list().await.expect("list");
    listed.sort_by_key(|r| r.id.0);
    let mut expected = records.clone();
    expected.sort_by_key(|r| r.id.0);
    assert_eq!(listed, expected, "every record comes back exactly");
    for r in &records {
        assert_eq!(store.get(r.id).await.expect("get").as_ref(), Some(r));
    }
    // An update replaces the record.
    let mut changed = records[3].clone();
    changed.definition.tags.clear();
    changed
        .definition
        .metadata
        .insert("site".into(), serde_json::json!("lab-2"));
    store.put(&changed).await.expect("update");
    assert_eq!(
        store.get(changed.id).await.expect("get"),
        Some(changed.clone())
    );
    assert_eq!(store.list().await.expect("list").len(), 20);
    // Deletes say whether there was something to delete.
    assert!(store.delete(records[0].id).await.expect("delete"));
    assert!(!store.delete(records[0].id).await.expect("delete again"));
    assert_eq!(store.get(records[0].id).await.expect("get"), None);
    assert_eq!(store.get(TwinId::new()).await.expect("get"), None);
    assert_eq!(store.list().await.expect("list").len(), 19);
}

#[tokio::test]
async fn sled_store_keeps_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledTwinStore::open(dir.path()).expect("sled");
    suite(Arc::new(store.clone())).await;
    // And they survive reopening.
    drop(store);
    let again = SledTwinStore::open(dir.path()).expect("reopen");
    assert_eq!(again.list().await.expect("list").len(), 19);
}

#[tokio::test]
async fn postgres_store_keeps_records() {
    let Some(url) = postgres_url() else { return };
    let schema = fresh_schema("suite");
    let store = PgTwinStore::connect(&url, &schema, 4, Duration::from_secs(5))
        .await
        .expect("postgres");
    suite(Arc::new(store)).await;
    // A second pool on the same schema (another node) reads the same rows.
    let other = PgTwinStore::connect(&url, &schema, 1, Duration::from_secs(5))
        .await
        .expect("postgres");
    assert_eq!(other.list().await.expect("list").len(), 19);
}

#[tokio::test]
async fn an_unreachable_postgres_fails_fast_with_a_clear_error() {
    // Nothing listens on port 1.
    let err = PgTwinStore::connect(
        "postgres://postgres@127.0.0.1:1/postgres",
        "hanzo_twin",
        1,
        Duration::from_secs(2),
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("postgres"), "{err}");
    let err = PgTwinStore::connect("not a url at all", "hanzo_twin", 1, Duration::from_secs(2))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("metadata.postgres.url"), "{err}");
}

#[tokio::test]
async fn nodes_sharing_a_postgres_schema_share_twin_definitions() {
    let Some(url) = postgres_url() else { return };
    let schema = fresh_schema("nodes");
    let env = [
        ("HANZO_TWIN_METADATA_BACKEND", "postgres"),
        ("HANZO_TWIN_METADATA_POSTGRES_URL", url.as_str()),
        ("HANZO_TWIN_METADATA_POSTGRES_SCHEMA", schema.as_str()),
    ];
    let first = TestNode::start_opts(NodeOptions {
        env: &env,
        ..Default::default()
    })
    .await;
    let yaml =
        std::fs::read_to_string(repo().join("configs/twins/robot-arm.yaml")).expect("sample");
    let (status, twin) = first
        .post_raw(
            "/v1/twins",
            "application/yaml",
            &common::rename(&yaml, "shared-arm"),
        )
        .await;
    assert_eq!(status, 201, "{twin}");
    drop(first);
    // Another node, with a data folder of its own, finds the definition.
    let second = TestNode::start_opts(NodeOptions {
        env: &env,
        ..Default::default()
    })
    .await;
    let (status, v) = second.get("/v1/twins/shared-arm").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], twin["id"]);
}

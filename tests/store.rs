//! One test suite for every twin store: sled (one node's default) and
//! PostgreSQL (shared by several nodes; a real server that scripts/test.sh
//! starts on 127.0.0.1 and names in HANZO_TWIN_TEST_POSTGRES_URL). Also: two
//! nodes pointed at one PostgreSQL schema see the same definitions, and a
//! node whose PostgreSQL is unreachable says so and does not start.

mod common;

use common::{NodeOptions, TestNode, postgres_url, repo};
use hanzo_twin::actors::jobs::{
    EvaluateSpec, JobFilter, JobKind, JobRecord, JobSpec, JobState, JobStore,
};
use hanzo_twin::actors::{Format, TwinDefinition, TwinId, TwinRecord, TwinStore};
use hanzo_twin::store::SledTwinStore;
use hanzo_twin::store_pg::PgTwinStore;
use std::sync::Arc;
use std::time::Duration;

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
    // Claims: a twin nobody holds goes to the first claimant; another node
    // takes it only by naming the holder as gone.
    let free = records[5].id;
    let first = store.claim(free, "n1", None).await.expect("claim");
    assert_eq!(first.map(|r| r.status.node), Some(Some("n1".to_string())));
    assert!(
        store
            .claim(free, "n2", None)
            .await
            .expect("claim")
            .is_none()
    );
    assert!(
        store
            .claim(free, "n2", Some("n9"))
            .await
            .expect("claim")
            .is_none()
    );
    let taken = store.claim(free, "n2", Some("n1")).await.expect("claim");
    assert_eq!(taken.map(|r| r.status.node), Some(Some("n2".to_string())));
    assert_eq!(
        store.get(free).await.expect("get").map(|r| r.status.node),
        Some(Some("n2".to_string())),
        "the claim is stored"
    );
    assert!(
        store
            .claim(TwinId::new(), "n1", None)
            .await
            .expect("claim")
            .is_none()
    );
    assert_eq!(store.list().await.expect("list").len(), 19);

    // What a node may take over: held by nobody, by itself, or by a node no
    // longer live; never what it holds already. Placement asks this every
    // round, so the store filters it.
    let ids = |records: Vec<TwinRecord>| {
        records
            .into_iter()
            .map(|r| r.id)
            .collect::<std::collections::HashSet<_>>()
    };
    let live = ["n1".to_string(), "n2".to_string()];
    let held = [records[1].id, records[2].id];
    let claimable = ids(store
        .claimable("n1", &live, &held)
        .await
        .expect("claimable"));
    assert_eq!(claimable.len(), 16, "18 held by nobody, less the 2 held");
    assert!(!claimable.contains(&free), "n2 is live and holds it");
    assert!(held.iter().all(|id| !claimable.contains(id)));
    let claimable = ids(store
        .claimable("n1", &live[..1], &[])
        .await
        .expect("claimable"));
    assert_eq!(claimable.len(), 19, "with n2 gone its twin is claimable");
    let claimable = ids(store.claimable("n2", &live, &[]).await.expect("claimable"));
    assert!(claimable.contains(&free), "a node's own twin is claimable");
    // Which of a node's twins the store says another node holds.
    let elsewhere = store
        .held_elsewhere("n1", &[free, records[1].id])
        .await
        .expect("held elsewhere");
    let mut elsewhere = elsewhere;
    elsewhere.sort_by_key(|(id, _)| *id == free);
    assert_eq!(
        elsewhere,
        vec![(records[1].id, None), (free, Some("n2".to_string()))]
    );
    assert_eq!(
        store
            .held_elsewhere("n2", &[free])
            .await
            .expect("held elsewhere"),
        vec![]
    );
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
    let store = PgTwinStore::connect(&url, &schema, 4, Duration::from_secs(5), "n0")
        .await
        .expect("postgres");
    suite(Arc::new(store.clone())).await;
    // A second pool on the same schema (another node) reads the same rows.
    let other = PgTwinStore::connect(&url, &schema, 1, Duration::from_secs(5), "n2")
        .await
        .expect("postgres");
    let listed = other.list().await.expect("list");
    assert_eq!(listed.len(), 19);
    // Only a twin's holder writes it: n0 lost the twin n2 claimed.
    let held = listed
        .iter()
        .find(|r| r.status.node.as_deref() == Some("n2"))
        .expect("the claimed twin")
        .clone();
    let err = store.put(&held).await.expect_err("fenced");
    assert!(err.to_string().contains("held by another node"), "{err}");
    other.put(&held).await.expect("the holder writes");
    // A name is unique in its organization, whichever node writes.
    let mut twin = held.clone();
    twin.id = TwinId::new();
    twin.status.node = None;
    let err = store.put(&twin).await.expect_err("the name is taken");
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    // Heartbeats: a node is live for the lease after its last one.
    store.heartbeat("n0").await.expect("heartbeat");
    let live = other
        .live_nodes(Duration::from_secs(30))
        .await
        .expect("live")
        .expect("a shared store knows");
    assert_eq!(live, vec!["n0".to_string()]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let live = other
        .live_nodes(Duration::from_millis(10))
        .await
        .expect("live")
        .expect("a shared store knows");
    assert!(live.is_empty(), "the lease ran out: {live:?}");
}

/// One suite for every job store: pages newest first by filter, and the
/// unfinished jobs a starting node takes back.
async fn job_suite(store: Arc<dyn JobStore>) {
    let job = |org: &str, owner: &str, episodes: u32| {
        JobRecord::new(
            JobSpec::Evaluate(EvaluateSpec {
                policy_job: uuid::Uuid::nil(),
                episodes,
                deterministic: true,
                seed: 0,
            }),
            owner.into(),
            org.into(),
        )
    };
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = job(
            if i < 4 { "acme" } else { "globex" },
            if i % 2 == 0 { "ann" } else { "bob" },
            i + 1,
        );
        r.state = match i {
            0 => JobState::Succeeded,
            1 => JobState::Running,
            _ => JobState::Queued,
        };
        r.node = (i != 2).then(|| {
            if i == 3 {
                "n9".to_string()
            } else {
                "n1".to_string()
            }
        });
        store.put(&r).await.expect("put");
        ids.push(r.id);
    }
    // A job's record is replaced whole, with its state.
    let mut done = store.get(ids[1]).await.expect("get").expect("stored");
    done.progress.steps = 7;
    store.put(&done).await.expect("update");
    assert_eq!(
        store
            .get(ids[1])
            .await
            .expect("get")
            .map(|r| r.progress.steps),
        Some(7)
    );
    assert_eq!(store.get(uuid::Uuid::now_v7()).await.expect("get"), None);

    let acme = JobFilter {
        organization: Some("acme".into()),
        ..Default::default()
    };
    let page: Vec<_> = store
        .page(&acme, None, 10)
        .await
        .expect("page")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(page, [ids[3], ids[2], ids[1], ids[0]], "newest first");
    let first: Vec<_> = store
        .page(&acme, None, 2)
        .await
        .expect("page")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(first, [ids[3], ids[2]]);
    let next: Vec<_> = store
        .page(&acme, Some(ids[2]), 2)
        .await
        .expect("page")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(next, [ids[1], ids[0]]);
    let queued = JobFilter {
        state: Some(JobState::Queued),
        owner: Some("ann".into()),
        ..acme.clone()
    };
    let page: Vec<_> = store
        .page(&queued, None, 10)
        .await
        .expect("page")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(page, [ids[2]]);
    let trains = JobFilter {
        kind: Some(JobKind::Train),
        ..acme
    };
    assert!(
        store
            .page(&trains, None, 10)
            .await
            .expect("page")
            .is_empty()
    );

    // Unfinished: held by this node or by none, never another's.
    let mut back: Vec<_> = store
        .unfinished("n1")
        .await
        .expect("unfinished")
        .iter()
        .map(|r| r.id)
        .collect();
    back.sort();
    assert_eq!(back, [ids[1], ids[2], ids[4]]);
}

#[tokio::test]
async fn job_stores_page_filter_and_hand_back_unfinished_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = SledTwinStore::open(dir.path()).expect("sled");
    job_suite(Arc::new(sled.job_store().expect("jobs"))).await;
    let Some(url) = postgres_url() else { return };
    let store = PgTwinStore::connect(&url, &fresh_schema("jobs"), 2, Duration::from_secs(5), "n1")
        .await
        .expect("postgres");
    let jobs = store.job_store();
    job_suite(Arc::new(jobs.clone())).await;

    // Shared: once another node claims a job, its old holder's writes are
    // refused as conflicts (it then stops its worker), not lost silently.
    let mut held = JobRecord::new(
        JobSpec::Evaluate(EvaluateSpec {
            policy_job: uuid::Uuid::nil(),
            episodes: 1,
            deterministic: true,
            seed: 0,
        }),
        "ann".into(),
        "acme".into(),
    );
    held.state = JobState::Running;
    held.node = Some("n1".into());
    jobs.put(&held).await.expect("put");
    let claimed = jobs
        .claim(held.id, "n2", Some("n1"))
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(claimed.node.as_deref(), Some("n2"));
    held.progress.steps = 7;
    let refused = jobs.put(&held).await.expect_err("the old holder");
    assert!(refused.is_conflict(), "{refused}");
    let stored = jobs.get(held.id).await.expect("get").expect("there");
    assert_eq!(stored.node.as_deref(), Some("n2"));
    assert_eq!(stored.progress.steps, 0);
}

#[tokio::test]
async fn an_unreachable_postgres_fails_fast_with_a_clear_error() {
    // Nothing listens on port 1.
    let err = PgTwinStore::connect(
        "postgres://postgres@127.0.0.1:1/postgres",
        "hanzo_twin",
        1,
        Duration::from_secs(2),
        "n0",
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("postgres"), "{err}");
    let err = PgTwinStore::connect(
        "not a url at all",
        "hanzo_twin",
        1,
        Duration::from_secs(2),
        "n0",
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("metadata.postgres.url"), "{err}");
}

#[tokio::test]
async fn postgres_errors_carry_the_servers_message_and_code() {
    let Some(url) = postgres_url() else { return };
    // The server refuses a database that does not exist, with SQLSTATE 3D000.
    let (base, _) = url.rsplit_once('/').expect("a database in the url");
    let err = PgTwinStore::connect(
        &format!("{base}/no_such_database"),
        "hanzo_twin",
        1,
        Duration::from_secs(5),
        "n0",
    )
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("3D000") && err.contains("\"no_such_database\" does not exist"),
        "{err}"
    );
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

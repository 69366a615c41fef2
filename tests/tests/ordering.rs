//! Deployments of a stack start in request order: a newer deployment does not overtake an
//! older one that was interrupted (its worker died after `DeploymentStarted`) and is only
//! taken up again later, or the older one, finishing last, would undo the newer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shiplog_events::event::{Event, Metadata, stream};
use shiplog_events::store::{self, ExpectedVersion};
use shiplog_tests::*;
use shiplog_worker::executor::Executor;
use shiplog_worker::metrics::WorkerMetrics;
use uuid::Uuid;

async fn position(app: &TestApp, deployment: &str, event_type: &str) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT min(global_position) FROM events WHERE stream_id = $1 AND event_type = $2",
    )
    .bind(format!("deployment-{deployment}"))
    .bind(event_type)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_deployment_waits_for_an_interrupted_older_one() {
    let mut app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.register_local_environment("local").await;
    app.catalog.write(
        "v1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    app.start_worker();
    let installed = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&installed).await["status"], "success");
    app.stop_workers();
    // The in-process worker's consumers stop after their current poll.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let body = json!({ "stackName": stack, "force": true }).to_string();
    let older = app.hook("/api/hooks/redeploy", Some(&key), &body).await;
    assert_eq!(older.status, 200, "{:?}", older.body);
    let older = older.body["deploymentId"].as_str().unwrap().to_owned();

    // A worker started it and died: the log says in_progress, nobody runs it.
    let older_id: Uuid = older.parse().unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    store::append(
        &mut tx,
        &stream::deployment(older_id),
        ExpectedVersion::Exactly(1),
        &[Event::DeploymentStarted {
            deployment: older_id,
            worker: "a-worker-that-died".into(),
            attempt: 1,
        }],
        &Metadata::actor("test"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Not joined: the older one is no longer queued.
    let newer = app.hook("/api/hooks/redeploy", Some(&key), &body).await;
    assert_eq!(newer.status, 200, "{:?}", newer.body);
    let newer = newer.body["deploymentId"].as_str().unwrap().to_owned();
    assert_ne!(newer, older);

    let settings = worker_config(&app.db.url).settings();
    let executor = Arc::new(Executor::new(
        app.pool.clone(),
        format!("ordering-{}", Uuid::new_v4().simple()),
        settings,
        Arc::new(WorkerMetrics::new()),
    ));
    let newer_run = {
        let executor = executor.clone();
        let id: Uuid = newer.parse().unwrap();
        tokio::spawn(async move { executor.run(id).await })
    };
    // Long enough for an unordered run to take the free lease and start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        position(&app, &newer, "DeploymentStarted").await,
        None,
        "the newer deployment must not start while an older one is unfinished"
    );

    // The older one is taken up again (as its recovered job would be) and ends first.
    executor.run(older_id).await.expect("the older one runs");
    assert_eq!(app.wait_terminal(&older).await["status"], "success");
    tokio::time::timeout(Duration::from_secs(120), newer_run)
        .await
        .expect("the newer one ends once the older one has")
        .unwrap()
        .expect("the newer one runs");
    assert_eq!(app.wait_terminal(&newer).await["status"], "success");

    let older_end = position(&app, &older, "DeploymentSucceeded").await.unwrap();
    let newer_start = position(&app, &newer, "DeploymentStarted").await.unwrap();
    assert!(
        older_end < newer_start,
        "the newer deployment started (at {newer_start}) before the older one ended (at {older_end})"
    );
    assert_eq!(service_containers(&stack, "web").len(), 1);
}

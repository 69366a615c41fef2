//! PostgreSQL going away: the API answers 503 with Retry-After at once (never 500, never a
//! hang), and API and worker carry on by themselves when it is back.

use std::time::{Duration, Instant};

use serde_json::json;
use shiplog_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_and_everything_recovers_by_itself() {
    let app = spawn_app_with(AppOptions {
        worker: true,
        proxy: true,
        acquire_timeout_ms: shiplog_events::db::DEFAULT_ACQUIRE_TIMEOUT.as_millis() as u64,
        ..Default::default()
    })
    .await;
    app.register_local_environment("local").await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.catalog.write(
        "s.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let body = json!({ "stackName": stack, "force": true }).to_string();

    // Cut the database in the middle of a deployment: it must still end, and the stack
    // must stay deployable afterwards.
    let r = app.hook("/api/hooks/redeploy", Some(&key), &body).await;
    let interrupted = r.body["deploymentId"].as_str().unwrap().to_owned();
    for _ in 0..300 {
        let d = app
            .admin(
                reqwest::Method::GET,
                &format!("/api/deployments/{interrupted}"),
                None,
            )
            .await;
        if d.body["status"] != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let proxy = app.proxy.as_ref().unwrap();
    proxy.down();
    let down_since = Instant::now();
    let mut answered = 0;
    while down_since.elapsed() < Duration::from_secs(4) {
        let started = Instant::now();
        let r = app.hook("/api/hooks/redeploy", Some(&key), &body).await;
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert_eq!(r.headers["retry-after"], "5");
        assert_eq!(r.body["success"], false);
        // A bound on hanging, not a speed figure: the pool gives up after its 2 s timeout.
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
        answered += 1;
    }
    assert!(answered >= 2);
    proxy.up();

    // Back: the first requests may still meet a dead pooled connection; within a bounded
    // time the hook works again and the worker carries the deployment out.
    let mut accepted = None;
    for _ in 0..100 {
        let r = app.hook("/api/hooks/redeploy", Some(&key), &body).await;
        assert!(r.status == 200 || r.status == 503, "{:?}", r);
        if r.status == 200 {
            accepted = Some(r.body["deploymentId"].as_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deployment = accepted.expect("the API recovers by itself");
    let d = app.wait_terminal(&interrupted).await;
    assert!(
        ["success", "error", "failure"].contains(&d["status"].as_str().unwrap()),
        "{d}"
    );
    let d = app.wait_terminal(&deployment).await;
    assert_eq!(d["status"], "success", "the worker recovers by itself: {d}");
    assert_eq!(service_containers(&stack, "web").len(), 1);
}

//! Docker-side faults seen through the whole system: an unreachable engine, a deployment
//! past its deadline.

use reqwest::Method;
use serde_json::json;
use shiplog_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_ends_in_error_after_recorded_retries() {
    let app = spawn_app().await;
    let r = app
        .admin(
            Method::POST,
            "/api/environments",
            Some(json!({ "id": "gone", "name": "Gone", "dockerEndpoint": "unix:///nonexistent/docker.sock" })),
        )
        .await;
    assert_eq!(r.status, 201);
    let stack = unique_name();
    app.catalog.write(
        "s.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install("gone", &stack, "1.0.0", json!({})).await;
    let d = app.wait_terminal(&id).await;
    assert_eq!(d["status"], "error", "{d}");
    let message = d["message"].as_str().unwrap();
    assert!(
        message.contains("/nonexistent/docker.sock")
            && message.contains("gave up after 3 attempts"),
        "{message}"
    );
    let events = app.events_of(&id).await;
    let retries: Vec<u64> = events
        .iter()
        .filter(|e| e["event"]["type"] == "DeploymentRetrying")
        .map(|e| e["event"]["data"]["retry_in_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(retries, [200, 400], "each retry recorded, with backoff");
    let statuses = app
        .admin(
            Method::GET,
            &format!("/api/deployments/{id}/statuses"),
            None,
        )
        .await;
    assert!(
        statuses.body.to_string().contains("retrying in 200 ms"),
        "{}",
        statuses.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_past_its_deadline_ends_in_error_and_keeps_the_old_containers() {
    let mut app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    app.start_worker_with(|cfg| cfg.deployment_timeout_secs = 5);
    app.register_local_environment("local").await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.catalog.write(
        "v1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    // A health check whose first probe comes after 30 s: the new container stays "starting"
    // far beyond the deadline.
    let slow = "    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 30s\n      start_period: 60s";
    app.catalog.write(
        "v2.yml",
        &web_manifest(&stack, "2.0.0", &image("web:v2"), "    {}", slow),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let before = service_containers(&stack, "web");

    let key = app.create_key(&["Hooks.Upgrade"], Some("local")).await;
    let r = app
        .hook(
            "/api/hooks/upgrade",
            Some(&key),
            &json!({ "stackName": stack, "targetVersion": "2.0.0" }).to_string(),
        )
        .await;
    let d = app
        .wait_terminal(r.body["deploymentId"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "error", "{d}");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("deployment timed out after 5 s"),
        "{d}"
    );
    assert_eq!(
        service_containers(&stack, "web"),
        before,
        "the previous container is back, alone"
    );
    assert_eq!(inspect(&before[0], "{{.State.Running}}"), "true");
    assert_eq!(http_get_container(&before[0]).await.trim(), "web v1");
}

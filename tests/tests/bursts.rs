//! Idempotent requests and bursts: repeats answer the original deployment, queued
//! redeploys are joined, queued work is superseded by a newer upgrade.

use futures::future::join_all;
use serde_json::json;
use shiplog_tests::*;

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Two catalog versions of a web stack, installed for real (v1), worker stopped after.
async fn installed(app: &mut TestApp, stack: &str) {
    app.register_local_environment("local").await;
    app.catalog.write(
        "v1.yml",
        &web_manifest(stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    app.catalog.write(
        "v2.yml",
        &web_manifest(stack, "2.0.0", &image("web:v2"), "    {}", ""),
    );
    app.catalog.write(
        "v3.yml",
        &web_manifest(stack, "3.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_the_first_deployment_and_refuses_another_body() {
    let mut app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    installed(&mut app, &stack).await;
    app.start_worker();
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");

    let key = app
        .create_key(&["Hooks.Redeploy", "Hooks.Upgrade"], Some("local"))
        .await;
    let body = json!({ "stackName": stack, "force": true }).to_string();
    let headers = [("Idempotency-Key", "build-4711")];
    let replies = join_all(
        (0..10).map(|_| app.hook_with("/api/hooks/redeploy", Some(&key), &body, &headers)),
    )
    .await;
    let first = &replies[0];
    assert_eq!(first.status, 200, "{:?}", first.body);
    for r in &replies {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body, first.body, "every repeat answers the same");
    }
    let deployment = first.body["deploymentId"].as_str().unwrap().to_owned();
    let requests = count(
        &app,
        "SELECT count(*) FROM events WHERE event_type = 'RedeployRequested'",
    )
    .await;
    assert_eq!(requests, 1, "one request recorded for ten deliveries");
    assert_eq!(app.wait_terminal(&deployment).await["status"], "success");

    // After it ran: still the same answer.
    let again = app
        .hook_with("/api/hooks/redeploy", Some(&key), &body, &headers)
        .await;
    assert_eq!(again.body["deploymentId"], deployment.as_str());
    // The same key for another request: 422, nothing written.
    let events = count(&app, "SELECT count(*) FROM events").await;
    let other = json!({ "stackName": stack, "force": false }).to_string();
    let r = app
        .hook_with("/api/hooks/redeploy", Some(&key), &other, &headers)
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("build-4711"));
    let r = app
        .hook_with(
            "/api/hooks/upgrade",
            Some(&key),
            &json!({ "stackName": stack, "targetVersion": "2.0.0" }).to_string(),
            &headers,
        )
        .await;
    assert_eq!(r.status, 422, "another endpoint is another request");
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, events);
    // Keys are per API key: another client's identical key is its own.
    let other_key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let r = app
        .hook_with("/api/hooks/redeploy", Some(&other_key), &body, &headers)
        .await;
    assert_eq!(r.status, 200);
    assert_ne!(r.body["deploymentId"], deployment.as_str());
    app.wait_terminal(r.body["deploymentId"].as_str().unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_redeploys_are_joined_and_a_newer_upgrade_supersedes_queued_work() {
    let mut app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    installed(&mut app, &stack).await;
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    // No worker yet: requests stay queued.
    let key = app
        .create_key(&["Hooks.Redeploy", "Hooks.Upgrade"], Some("local"))
        .await;
    app.start_worker();
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    app.stop_workers();

    let body = json!({ "stackName": stack }).to_string();
    // Concurrent: requests for one stack are decided one at a time, so they all join.
    let replies =
        join_all((0..5).map(|_| app.hook("/api/hooks/redeploy", Some(&key), &body))).await;
    let mut ids = Vec::new();
    for r in replies {
        assert_eq!(r.status, 200, "{:?}", r.body);
        ids.push(r.body["deploymentId"].as_str().unwrap().to_owned());
    }
    assert!(
        ids.iter().all(|i| i == &ids[0]),
        "a burst joins one queued redeploy: {ids:?}"
    );
    let redeploy = ids[0].clone();
    let types: Vec<String> = app
        .events_of(&redeploy)
        .await
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "RedeployRequested",
            "RedeployJoined",
            "RedeployJoined",
            "RedeployJoined",
            "RedeployJoined"
        ],
        "both requests are in the audit trail"
    );
    // A forced redeploy does not join an unforced one.
    let forced = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack, "force": true }).to_string(),
        )
        .await;
    assert_ne!(forced.body["deploymentId"], redeploy.as_str());
    let forced = forced.body["deploymentId"].as_str().unwrap().to_owned();

    // An upgrade supersedes both queued redeploys; a newer upgrade supersedes it.
    let up = |v: &str| json!({ "stackName": stack, "targetVersion": v }).to_string();
    let u2 = app
        .hook("/api/hooks/upgrade", Some(&key), &up("2.0.0"))
        .await;
    assert_eq!(u2.status, 200, "{:?}", u2.body);
    let u2 = u2.body["deploymentId"].as_str().unwrap().to_owned();
    let u3 = app
        .hook("/api/hooks/upgrade", Some(&key), &up("3.0.0"))
        .await;
    let u3 = u3.body["deploymentId"].as_str().unwrap().to_owned();
    for old in [&redeploy, &forced, &u2] {
        let d = app.wait_terminal(old).await;
        assert_eq!(d["status"], "inactive", "{d}");
        assert!(
            d["message"]
                .as_str()
                .unwrap()
                .contains("Superseded by the upgrade to"),
            "{d}"
        );
    }

    // The worker skips the superseded ones and runs only the newest.
    app.start_worker();
    let d = app.wait_terminal(&u3).await;
    assert_eq!(d["status"], "success", "{d}");
    for old in [&redeploy, &forced, &u2] {
        let started = app
            .events_of(old)
            .await
            .iter()
            .filter(|e| e["event"]["type"] == "DeploymentStarted")
            .count();
        assert_eq!(started, 0, "superseded deployments never start");
    }
    let view = app
        .admin(
            reqwest::Method::GET,
            &format!("/api/environments/local/stacks/{stack}"),
            None,
        )
        .await;
    assert_eq!(view.body["version"], "3.0.0");
}

//! Projections rebuilt from the log equal the ones built incrementally.

use std::process::Command;

use reqwest::Method;
use serde_json::json;
use shiplog_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_projections_equal_the_incremental_ones() {
    let app = spawn_app().await;
    app.register_local_environment("local").await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.catalog.write(
        "v1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    app.catalog.write(
        "v2.yml",
        &web_manifest(&stack, "2.0.0", &image("unhealthy:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);

    // A bit of everything: keys created and revoked, a success, a redeploy, a failure.
    let key = app
        .create_key(
            &["Hooks.Redeploy", "Hooks.Upgrade", "Hooks.SyncSources"],
            Some("local"),
        )
        .await;
    let other = app.create_key(&["Hooks.Redeploy"], None).await;
    let listed = app.admin(Method::GET, "/api/keys", None).await;
    let other_id = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["environmentId"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.admin(
            Method::DELETE,
            &format!("/api/keys/{other_id}?reason=rotation"),
            None
        )
        .await
        .status,
        204
    );
    let _ = other;
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(
        app.wait_terminal(r.body["deploymentId"].as_str().unwrap())
            .await["status"],
        "success"
    );
    let r = app
        .hook(
            "/api/hooks/upgrade",
            Some(&key),
            &json!({ "stackName": stack, "targetVersion": "2.0.0" }).to_string(),
        )
        .await;
    assert_eq!(
        app.wait_terminal(r.body["deploymentId"].as_str().unwrap())
            .await["status"],
        "failure"
    );
    app.catalog.write(
        "v3.yml",
        &web_manifest(&stack, "3.0.0", &image("web:v2"), "    {}", ""),
    );
    assert_eq!(
        app.hook("/api/hooks/sync-sources", Some(&key), "")
            .await
            .status,
        200
    );

    let incremental = snapshot_projections(&app.pool).await;
    for (table, rows) in &incremental {
        assert!(
            rows.as_array().is_some_and(|r| !r.is_empty()),
            "{table} has rows to compare"
        );
    }

    // The operator's command, against the same database.
    let out = Command::new(workspace_binary("shiplog-api"))
        .args(["projections", "rebuild"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rebuilt from"));

    let rebuilt = snapshot_projections(&app.pool).await;
    for ((table, before), (_, after)) in incremental.iter().zip(&rebuilt) {
        assert_eq!(before, after, "projection {table} differs after a rebuild");
    }
}

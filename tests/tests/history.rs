//! "What ran where, since when": `GET /api/environments/{env}/stacks/{name}?at=<time>`
//! answers from the event log what was current at any moment.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::json;
use shiplog_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_as_it_was_at_any_time() {
    let app = spawn_app().await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.register_local_environment("local").await;
    for (file, version, img) in [("v1.yml", "1.0.0", "web:v1"), ("v2.yml", "2.0.0", "web:v2")] {
        app.catalog.write(
            file,
            &web_manifest(
                &stack,
                version,
                &image(img),
                "    GREETING: { default: hello }",
                "    environment:\n      GREETING: ${GREETING}",
            ),
        );
    }
    assert_eq!(app.add_catalog_source().await.status, 201);
    let path = format!("/api/environments/local/stacks/{stack}");
    let at = |t: chrono::DateTime<Utc>| {
        format!(
            "{path}?at={}",
            t.to_rfc3339_opts(SecondsFormat::Micros, true)
                .replace('+', "%2B")
        )
    };

    let before_install = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = app
        .install("local", &stack, "1.0.0", json!({ "GREETING": "one" }))
        .await;
    assert_eq!(app.wait_terminal(&first).await["status"], "success");
    let v1 = app.admin(reqwest::Method::GET, &path, None).await.body;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let key = app.create_key(&["Hooks.Upgrade"], Some("local")).await;
    let r = app
        .hook(
            "/api/hooks/upgrade",
            Some(&key),
            &json!({ "stackName": stack, "targetVersion": "2.0.0", "variables": { "GREETING": "two" } })
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let second = r.body["deploymentId"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&second).await["status"], "success");
    let now = app.admin(reqwest::Method::GET, &path, None).await.body;
    assert_eq!(now["version"], "2.0.0");

    // Between the two: version 1 with its variables and digests, exactly as it was shown then.
    let then = app.admin(reqwest::Method::GET, &at(between), None).await;
    assert_eq!(then.status, 200, "{:?}", then.body);
    assert_eq!(then.body, v1);
    assert_eq!(then.body["version"], "1.0.0");
    assert_eq!(then.body["variables"]["GREETING"], "one");
    assert_eq!(then.body["lastDeploymentId"], first.as_str());
    assert_ne!(
        then.body["digests"], now["digests"],
        "web:v1 and web:v2 differ"
    );

    // Now, folded from the log, equals the read model.
    let folded = app.admin(reqwest::Method::GET, &at(Utc::now()), None).await;
    assert_eq!(folded.body, now);

    // Before anything was deployed: 404 naming the time; a bad time: 400.
    let early = app
        .admin(reqwest::Method::GET, &at(before_install), None)
        .await;
    assert_eq!(early.status, 404, "{:?}", early.body);
    assert!(
        early.body["message"]
            .as_str()
            .unwrap()
            .contains("was not deployed")
    );
    let bad = app
        .admin(reqwest::Method::GET, &format!("{path}?at=yesterday"), None)
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["message"].as_str().unwrap().contains("RFC 3339"),
        "{:?}",
        bad.body
    );
}

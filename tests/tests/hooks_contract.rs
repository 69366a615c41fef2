//! The hook contract: every status (400/401/403/500), key scope, expiry, revocation, and
//! that a refused request writes nothing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use shiplog_tests::*;

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn job_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A deployed stack without Docker: the API is tested here, the worker elsewhere.
/// The worker is off, so requests stay queued.
/// Records a stack as running, as a worker would after an install.
async fn record_deployed(app: &TestApp, environment: &str, stack: &str) {
    let mut tx = app.pool.begin().await.unwrap();
    let event = shiplog_events::event::Event::StackDeployed {
        environment: environment.into(),
        stack: stack.into(),
        version: "1.0.0".into(),
        deployment: uuid::Uuid::now_v7(),
        digests: Default::default(),
        variables: Default::default(),
        services: vec![],
        catalog_source: None,
        catalog_revision: None,
    };
    shiplog_events::store::append(
        &mut tx,
        &shiplog_events::event::stream::stack(environment, stack),
        shiplog_events::store::ExpectedVersion::NoStream,
        &[event],
        &shiplog_events::event::Metadata::actor("test"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn app_with_deployed_stack() -> (TestApp, String) {
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    app.register_local_environment("prod").await;
    app.register_local_environment("staging").await;
    let stack = unique_name();
    app.catalog.write(
        "s1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    app.catalog.write(
        "s2.yml",
        &web_manifest(
            &stack,
            "2.0.0",
            &image("web:v2"),
            "    TOKEN: { required: true }",
            "    environment:\n      TOKEN: ${TOKEN}",
        ),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    record_deployed(&app, "prod", &stack).await;
    (app, stack)
}

#[tokio::test]
async fn every_refusal_has_its_status_and_writes_nothing() {
    let (app, stack) = app_with_deployed_stack().await;
    let all = app
        .create_key(
            &["Hooks.Redeploy", "Hooks.Upgrade", "Hooks.SyncSources"],
            None,
        )
        .await;
    let redeploy_only = app.create_key(&["Hooks.Redeploy"], None).await;
    let staging = app
        .create_key(&["Hooks.Redeploy", "Hooks.Upgrade"], Some("staging"))
        .await;
    let good = json!({ "stackName": stack, "environmentId": "prod" }).to_string();
    let unknown_key = format!("rsgo_{}", "A".repeat(32));
    let events = event_count(&app).await;
    let jobs = job_count(&app).await;

    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        // 401: no key, malformed, unknown.
        (
            "/api/hooks/redeploy",
            None,
            good.clone(),
            401,
            "missing X-Api-Key",
        ),
        (
            "/api/hooks/redeploy",
            Some("rsgo_short"),
            good.clone(),
            401,
            "invalid API key",
        ),
        (
            "/api/hooks/redeploy",
            Some(&unknown_key),
            good.clone(),
            401,
            "invalid API key",
        ),
        // 403: permission, scope.
        (
            "/api/hooks/upgrade",
            Some(&redeploy_only),
            json!({ "stackName": stack, "targetVersion": "2.0.0", "environmentId": "prod" })
                .to_string(),
            403,
            "Hooks.Upgrade",
        ),
        (
            "/api/hooks/sync-sources",
            Some(&redeploy_only),
            String::new(),
            403,
            "Hooks.SyncSources",
        ),
        (
            "/api/hooks/redeploy",
            Some(&staging),
            good.clone(),
            403,
            "scoped to environment 'staging'",
        ),
        // 400: body and domain.
        (
            "/api/hooks/redeploy",
            Some(&all),
            "{not json".into(),
            400,
            "invalid request body",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            String::new(),
            400,
            "JSON object",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            json!({ "environmentId": "prod" }).to_string(),
            400,
            "missing field `stackName`",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            json!({ "stackName": 5, "environmentId": "prod" }).to_string(),
            400,
            "invalid type",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            json!({ "stackName": stack, "environmentId": "prod", "bogus": 1 }).to_string(),
            400,
            "unknown field `bogus`",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            json!({ "stackName": stack }).to_string(),
            400,
            "environmentId is required",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            json!({ "stackName": "nope", "environmentId": "prod" }).to_string(),
            400,
            "'nope' is not deployed",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            json!({ "stackName": "../etc", "environmentId": "prod" }).to_string(),
            400,
            "invalid stack name",
        ),
        (
            "/api/hooks/redeploy",
            Some(&all),
            json!({ "stackName": stack, "environmentId": "mars" }).to_string(),
            400,
            "environment 'mars' not found",
        ),
        (
            "/api/hooks/upgrade",
            Some(&all),
            json!({ "stackName": stack, "targetVersion": "9.9.9", "environmentId": "prod" })
                .to_string(),
            400,
            "version '9.9.9'",
        ),
        (
            "/api/hooks/upgrade",
            Some(&all),
            json!({ "stackName": stack, "targetVersion": "2.0.0", "environmentId": "prod" })
                .to_string(),
            400,
            "TOKEN",
        ),
        (
            "/api/hooks/upgrade",
            Some(&all),
            json!({ "stackName": stack, "environmentId": "prod" }).to_string(),
            400,
            "missing field `targetVersion`",
        ),
    ];
    for (path, key, body, status, needle) in &cases {
        let r = app.hook(path, *key, body).await;
        assert_eq!(r.status, *status, "{path} {body}: {:?}", r.body);
        assert_eq!(r.body["success"], false, "{path} {body}");
        let message = r.body["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{path} {body}: expected '{needle}' in '{message}'"
        );
    }
    assert_eq!(
        event_count(&app).await,
        events,
        "refused requests append nothing"
    );
    assert_eq!(
        job_count(&app).await,
        jobs,
        "refused requests enqueue nothing"
    );

    // The same requests, authorised, do append a request and a job each.
    let r = app.hook("/api/hooks/redeploy", Some(&all), &good).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let body = json!({ "stackName": stack, "targetVersion": "2.0.0", "environmentId": "prod", "variables": { "TOKEN": "t" } });
    let r = app
        .hook("/api/hooks/upgrade", Some(&all), &body.to_string())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The upgrade also supersedes the queued redeploy: one more event, no more job.
    assert_eq!(event_count(&app).await, events + 3);
    assert_eq!(job_count(&app).await, jobs + 2);
    let status = app
        .admin(
            Method::GET,
            &format!(
                "/api/deployments/{}",
                r.body["deploymentId"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status.body["status"], "queued");
    assert_eq!(status.body["previousVersion"], "1.0.0");
    assert_eq!(status.body["targetVersion"], "2.0.0");
}

#[tokio::test]
async fn scope_expiry_revocation_and_last_use() {
    let (app, stack) = app_with_deployed_stack().await;
    // A key scoped to prod may omit environmentId.
    let scoped = app.create_key(&["Hooks.Redeploy"], Some("prod")).await;
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&scoped),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let deployment = r.body["deploymentId"].as_str().unwrap().to_owned();
    // It reads its own deployments, not other environments'.
    let own = app
        .get_with_key(&format!("/api/deployments/{deployment}"), &scoped)
        .await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body["environmentId"], "prod");
    let listed = app
        .get_with_key("/api/deployments?environment=staging", &scoped)
        .await;
    assert_eq!(listed.status, 403);

    // Listing shows prefix and last use, never the key or its hash.
    let keys = app.admin(Method::GET, "/api/keys", None).await;
    let text = keys.body.to_string();
    assert!(!text.contains(&scoped) && !text.contains("hash"), "{text}");
    let entry = keys
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["environmentId"] == "prod")
        .unwrap()
        .clone();
    assert_eq!(entry["prefix"], &scoped[..9]);
    assert!(entry["lastUsedAt"].is_string(), "{entry}");

    // Revoked: 401, with a reason kept.
    let id = entry["id"].as_str().unwrap();
    let r = app
        .admin(
            Method::DELETE,
            &format!("/api/keys/{id}?reason=leaked"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&scoped),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["message"], "API key has been revoked");
    assert_eq!(
        app.admin(Method::DELETE, &format!("/api/keys/{id}"), None)
            .await
            .status,
        409
    );

    // Expired: 401.
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let r = app
        .admin(
            Method::POST,
            "/api/keys",
            Some(
                json!({ "name": "short", "permissions": ["Hooks.Redeploy"], "expiresAt": expires }),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let short = r.body["key"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&short),
            &json!({ "stackName": stack, "environmentId": "prod" }).to_string(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["message"], "API key has expired");

    // Bad key requests are 400s that name the problem.
    let r = app
        .admin(
            Method::POST,
            "/api/keys",
            Some(json!({ "name": "x", "permissions": ["Hooks.Everything"] })),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("Hooks.Everything")
    );
}

#[tokio::test]
async fn admin_endpoints_require_the_admin_token() {
    let (app, _) = app_with_deployed_stack().await;
    let key = app.create_key(&["Hooks.Redeploy"], None).await;
    for path in ["/api/keys", "/api/environments", "/api/catalog/stacks"] {
        let r = reply(
            app.client
                .get(format!("{}{path}", app.address))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 401, "{path}");
        let r = reply(
            app.client
                .get(format!("{}{path}", app.address))
                .bearer_auth("wrong-token-0123456789")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            app.get_with_key(path, &key).await.status,
            401,
            "keys are not admin: {path}"
        );
    }
    let r = app
        .admin(
            Method::POST,
            "/api/environments",
            Some(json!({ "id": "prod", "name": "again", "dockerEndpoint": "unix:///x" })),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = app
        .admin(
            Method::POST,
            "/api/environments",
            Some(json!({ "id": "Bad Id", "name": "x", "dockerEndpoint": "unix:///x" })),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn deployments_paginate_with_link_headers() {
    let (app, stack) = app_with_deployed_stack().await;
    let key = app.create_key(&["Hooks.Redeploy"], Some("prod")).await;
    // Three stacks, so the requests do not join one queued redeploy.
    let others = [unique_name(), unique_name()];
    for other in &others {
        record_deployed(&app, "prod", other).await;
    }
    let mut ids = Vec::new();
    for name in [&stack, &others[0], &others[1]] {
        let r = app
            .hook(
                "/api/hooks/redeploy",
                Some(&key),
                &json!({ "stackName": name }).to_string(),
            )
            .await;
        ids.push(r.body["deploymentId"].as_str().unwrap().to_owned());
    }
    let r = app
        .get_with_key("/api/deployments?environment=prod&per_page=2", &key)
        .await;
    assert_eq!(r.status, 200);
    let page: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[2].as_str(), ids[1].as_str()], "newest first");
    let link = r.headers["link"].to_str().unwrap();
    assert!(
        link.contains("page=2") && link.contains("rel=\"next\"") && link.contains("rel=\"last\""),
        "{link}"
    );
    let r = app
        .get_with_key("/api/deployments?environment=prod&per_page=2&page=2", &key)
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert!(r.headers["link"].to_str().unwrap().contains("rel=\"prev\""));
    let statuses = app
        .get_with_key(&format!("/api/deployments/{}/statuses", ids[0]), &key)
        .await;
    assert_eq!(statuses.body[0]["state"], "queued");
    assert_eq!(
        app.get_with_key("/api/deployments?per_page=0", &key)
            .await
            .status,
        400
    );
    assert_eq!(
        app.get_with_key("/api/deployments?status=done", &key)
            .await
            .status,
        400
    );
    assert_eq!(
        app.get_with_key("/api/deployments/not-a-uuid", &key)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_server_fault_is_an_opaque_500_and_leaves_nothing_half_written() {
    let (app, stack) = app_with_deployed_stack().await;
    let key = app.create_key(&["Hooks.Redeploy"], Some("prod")).await;
    let events = event_count(&app).await;
    let jobs = job_count(&app).await;
    // Break the projection the append writes to: the append, the job and the projection
    // must all roll back together.
    sqlx::query("ALTER TABLE deployment_statuses RENAME TO deployment_statuses_gone")
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body,
        json!({ "success": false, "message": "internal server error" })
    );
    sqlx::query("ALTER TABLE deployment_statuses_gone RENAME TO deployment_statuses")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(event_count(&app).await, events);
    assert_eq!(job_count(&app).await, jobs);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM deployments")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn wildcard_permissions_grant_a_group_or_everything() {
    let (app, stack) = app_with_deployed_stack().await;
    let body =
        json!({ "stackName": stack, "targetVersion": "2.0.0", "variables": { "TOKEN": "t" } })
            .to_string();
    for grant in ["Hooks.*", "*.*"] {
        let key = app.create_key(&[grant], Some("prod")).await;
        let r = app.hook("/api/hooks/upgrade", Some(&key), &body).await;
        assert_eq!(r.status, 200, "{grant}: {:?}", r.body);
        let r = app.hook("/api/hooks/sync-sources", Some(&key), "").await;
        assert_eq!(r.status, 200, "{grant}: {:?}", r.body);
    }
    // The grant is kept as given, so a listing shows what the key can do.
    let r = app.admin(reqwest::Method::GET, "/api/keys", None).await;
    let grants: Vec<&Value> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["permissions"])
        .collect();
    assert!(grants.contains(&&json!(["Hooks.*"])), "{grants:?}");
    for bad in ["Hooks", "Deploy.*", "*", "Hooks.Everything"] {
        let r = app
            .admin(
                reqwest::Method::POST,
                "/api/keys",
                Some(json!({ "name": "bad", "permissions": [bad] })),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
        assert!(
            r.body["message"].as_str().unwrap().contains(bad),
            "{:?}",
            r.body
        );
    }
}

#[tokio::test]
async fn keys_limited_to_named_stacks() {
    let (app, stack) = app_with_deployed_stack().await;
    let create = |stacks: Value| {
        let app = &app;
        async move {
            app.admin(
                Method::POST,
                "/api/keys",
                Some(json!({ "name": "scoped", "permissions": ["Hooks.Redeploy"],
                             "environmentId": "prod", "stacks": stacks })),
            )
            .await
        }
    };
    let created = create(json!([stack])).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["stacks"], json!([stack]));
    let key = created.body["key"].as_str().unwrap().to_owned();

    // Its stack: fine. Another: 403 naming the scope, nothing written.
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let deployment = r.body["deploymentId"].as_str().unwrap().to_owned();
    let before = (event_count(&app).await, job_count(&app).await);
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": "other-stack" }).to_string(),
        )
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("scoped to the stacks {stack}"))
    );
    assert_eq!((event_count(&app).await, job_count(&app).await), before);

    // Reading: its own deployment; a listing is limited to its one stack.
    let own = app
        .get_with_key(&format!("/api/deployments/{deployment}"), &key)
        .await;
    assert_eq!(own.status, 200);
    let listed = app.get_with_key("/api/deployments", &key).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert!(
        listed
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["stackName"] == stack.as_str())
    );
    let other = app
        .get_with_key("/api/deployments?stack=other-stack", &key)
        .await;
    assert_eq!(other.status, 403);

    // A key for two stacks must say which one it lists.
    let two = create(json!([stack, "other-stack"])).await;
    let two_key = two.body["key"].as_str().unwrap().to_owned();
    let r = app.get_with_key("/api/deployments", &two_key).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("filter by one of them")
    );

    // No stack at all, or a bad name: refused; the listing shows each key's stacks.
    assert_eq!(create(json!([])).await.status, 400);
    assert_eq!(create(json!(["../etc"])).await.status, 400);
    let keys = app.admin(Method::GET, "/api/keys", None).await;
    let scopes: Vec<&Value> = keys
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["stacks"])
        .collect();
    assert!(
        scopes.contains(&&json!([stack])) && scopes.contains(&&json!([stack, "other-stack"])),
        "{scopes:?}"
    );
}

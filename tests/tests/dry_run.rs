//! `?dryRun=true` on deploy, redeploy and upgrade: the plan, checked against what the real
//! request then does, with nothing written by the dry run itself. Real registry and engine.

use serde_json::{Value, json};
use shiplog_tests::*;

const ENV: &str = "local";

/// Everything a dry run must leave as it was: the log, the queue, idempotency keys, key
/// usage and the projections.
async fn written(app: &TestApp) -> (i64, i64, i64, i64, Vec<(String, Value)>) {
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    (
        count("SELECT count(*) FROM events").await,
        count("SELECT count(*) FROM apalis.jobs").await,
        count("SELECT count(*) FROM idempotency_keys").await,
        count("SELECT count(*) FROM api_key_usage").await,
        snapshot_projections(&app.pool).await,
    )
}

async fn dry_run(app: &TestApp, hook: &str, key: &str, body: Value) -> Reply {
    app.hook_with(
        &format!("/api/hooks/{hook}?dryRun=true"),
        Some(key),
        &body.to_string(),
        &[("Idempotency-Key", "dry-run-key")],
    )
    .await
}

/// The plan keeps to `DryRunPlan` in api/openapi.json: required fields present, no field
/// the description does not name.
fn described(plan: &Value) {
    let spec: Value = serde_json::from_str(shiplog_api::routes::openapi::OPENAPI_JSON).unwrap();
    let schemas = &spec["components"]["schemas"];
    let check = |value: &Value, schema: &str| {
        let schema = &schemas[schema];
        let object = value.as_object().unwrap();
        for field in schema["required"].as_array().unwrap() {
            assert!(
                object.contains_key(field.as_str().unwrap()),
                "{field} missing: {value}"
            );
        }
        for field in object.keys() {
            assert!(
                schema["properties"].get(field).is_some(),
                "{field} is not described: {value}"
            );
        }
    };
    check(plan, "DryRunPlan");
    check(&plan["variables"], "DryRunVariables");
    for service in plan["services"].as_array().unwrap() {
        check(service, "DryRunService");
    }
}

fn service<'a>(plan: &'a Value, name: &str) -> &'a Value {
    described(plan);
    plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {plan}"))
}

/// The digest the stack's last deployment recorded for a service.
async fn recorded_digest(app: &TestApp, stack: &str, service: &str) -> String {
    let digests: Value = sqlx::query_scalar("SELECT digests FROM stacks WHERE stack_name = $1")
        .bind(stack)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    digests[service].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_dry_run_predicts_the_moved_tag_and_writes_nothing() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    let live = push_as(&image("web:v1"), &stack, "live");
    app.catalog.write(
        "app/1.0.0.yml",
        &web_manifest(&stack, "1.0.0", &live, "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let key = app
        .create_key(&["Hooks.Deploy", "Hooks.Redeploy", "Hooks.Upgrade"], None)
        .await;
    let body = json!({ "stackName": stack, "environmentId": ENV });

    // Absent: the ensure would install, every service created.
    let before = written(&app).await;
    let r = dry_run(&app, "deploy", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["dryRun"], true);
    assert_eq!(r.body["action"], "install");
    assert_eq!(r.body["currentVersion"], Value::Null);
    assert_eq!(r.body["targetVersion"], "1.0.0");
    assert_eq!(r.body["complete"], true, "{}", r.body);
    assert_eq!(service(&r.body, "web")["action"], "create");
    assert!(
        service(&r.body, "web")["digest"]["target"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(written(&app).await, before, "a dry run writes nothing");

    let id = app.install(ENV, &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let v1_digest = recorded_digest(&app, &stack, "web").await;
    let first = service_containers(&stack, "web");

    // Nothing moved: unchanged.
    let r = dry_run(&app, "redeploy", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let web = service(&r.body, "web");
    assert_eq!(web["action"], "unchanged", "{}", r.body);
    assert_eq!(
        web["digest"],
        json!({ "current": v1_digest, "target": v1_digest })
    );

    // CI pushes a new image under the same tag: the plan says recreate, old → new.
    push_as(&image("web:v2"), &stack, "live");
    let before = written(&app).await;
    let r = dry_run(&app, "redeploy", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["action"], "redeploy");
    assert_eq!(r.body["currentVersion"], "1.0.0");
    assert_eq!(r.body["complete"], true, "{}", r.body);
    let web = service(&r.body, "web");
    assert_eq!(web["action"], "recreate", "{}", r.body);
    let planned = web["digest"]["target"].as_str().unwrap().to_owned();
    assert_eq!(web["digest"]["current"], v1_digest.as_str());
    assert_ne!(planned, v1_digest);
    assert_eq!(
        web["reasons"],
        json!([format!("image digest {v1_digest} → {planned}")])
    );
    // The ensure with the running version is the same redeploy.
    let r = dry_run(&app, "deploy", &key, body.clone()).await;
    assert_eq!(r.body["action"], "redeploy", "{}", r.body);
    assert_eq!(service(&r.body, "web")["action"], "recreate");
    assert_eq!(written(&app).await, before, "a dry run writes nothing");
    assert_eq!(
        service_containers(&stack, "web"),
        first,
        "containers untouched"
    );

    // The real redeploy does what the plan said, with the digest it predicted.
    let r = app
        .hook("/api/hooks/redeploy", Some(&key), &body.to_string())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body.get("dryRun").is_none(),
        "the normal answer is unchanged"
    );
    let d = app
        .wait_terminal(r.body["deploymentId"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "success", "{d}");
    assert_eq!(d["digests"]["web"], planned.as_str());
    let second = service_containers(&stack, "web");
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "recreated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_dry_run_shows_variables_removals_and_unreachable_registries() {
    // TOKEN is a password: storing it needs the key, and so does planning it.
    let app = spawn_app_with(AppOptions {
        secret_key: Some("5a".repeat(32)),
        ..Default::default()
    })
    .await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    let live = push_as(&image("web:v1"), &stack, "live");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let two = |version: &str, variables: &str, extra_service: &str| {
        format!(
            "name: {stack}\nx-shiplog:\n  version: {version}\n  variables:\n{variables}\n\
             services:\n  web:\n    image: {live}\n    ports: [\"127.0.0.1::8080\"]\n    \
             environment:\n      GREETING: ${{GREETING}}\n{extra_service}"
        )
    };
    let side = format!("  side:\n    image: {live}\n");
    let ghost = format!("  ghost:\n    image: 127.0.0.1:{closed}/shiplog-test/ghost:v1\n");
    let vars = "    GREETING: { default: hello }";
    let vars2 = "    GREETING: { default: hello }\n    TOKEN: { type: password, required: true }";
    app.catalog
        .write("app/1.0.0.yml", &two("1.0.0", vars, &side));
    app.catalog.write("app/2.0.0.yml", &two("2.0.0", vars2, ""));
    app.catalog
        .write("app/2.1.0.yml", &two("2.1.0", vars2, &ghost));
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install(ENV, &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let key = app.create_key(&["Hooks.Upgrade"], None).await;
    let all = app.create_key(&["Hooks.*"], None).await;
    let web_before = service_containers(&stack, "web");
    let before = written(&app).await;

    // 2.0.0 drops `side` and changes GREETING; TOKEN is a password.
    let upgrade = |version: &str, variables: Value| {
        json!({ "stackName": stack, "environmentId": ENV, "targetVersion": version,
                "variables": variables })
    };
    let r = dry_run(
        &app,
        "upgrade",
        &key,
        upgrade("2.0.0", json!({ "GREETING": "hey", "TOKEN": "s3cret" })),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["action"], "upgrade");
    assert_eq!(r.body["currentVersion"], "1.0.0");
    assert_eq!(r.body["targetVersion"], "2.0.0");
    assert_eq!(r.body["complete"], true, "{}", r.body);
    let web = service(&r.body, "web");
    assert_eq!(web["action"], "recreate");
    assert_eq!(web["reasons"], json!(["configuration changed"]));
    let side = service(&r.body, "side");
    assert_eq!(side["action"], "remove");
    assert_eq!(side["digest"]["target"], Value::Null);
    assert_eq!(
        r.body["variables"],
        json!({ "added": { "TOKEN": { "secret": true } }, "removed": [],
                "changed": { "GREETING": { "old": "hello", "new": "hey" } } })
    );
    assert!(!r.body.to_string().contains("s3cret"));

    // An image whose registry cannot be reached: a partial plan, still 200.
    let r = dry_run(
        &app,
        "upgrade",
        &key,
        upgrade("2.1.0", json!({ "TOKEN": "t" })),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["complete"], false, "{}", r.body);
    let ghost = service(&r.body, "ghost");
    assert_eq!(ghost["action"], "create");
    assert_eq!(ghost["digest"]["target"], Value::Null);
    assert!(
        ghost["note"].as_str().unwrap().contains("unreachable"),
        "{ghost}"
    );
    assert!(
        r.body["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("service ghost:"),
        "{}",
        r.body
    );
    assert_eq!(service(&r.body, "web")["action"], "unchanged", "{}", r.body);

    // What the real upgrade would refuse, the dry run refuses: 400, nothing written.
    let r = dry_run(&app, "upgrade", &key, upgrade("9.9.9", json!({}))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("9.9.9"));
    let r = dry_run(&app, "upgrade", &key, upgrade("2.0.0", json!({}))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("TOKEN"));
    let r = dry_run(
        &app,
        "redeploy",
        &key,
        json!({ "stackName": stack, "environmentId": ENV }),
    )
    .await;
    assert_eq!(r.status, 403, "a key without Hooks.Redeploy: {:?}", r.body);
    // A hook that cannot plan refuses rather than acting.
    let r = dry_run(
        &app,
        "stop-containers",
        &all,
        json!({ "stackName": stack, "environmentId": ENV }),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("dryRun"));
    assert_eq!(written(&app).await, before, "dry runs write nothing");
    assert_eq!(service_containers(&stack, "web"), web_before);

    // The real upgrade to 2.0.0 does what its plan said: web recreated, side removed.
    let r = app
        .hook(
            "/api/hooks/upgrade?wait=true",
            Some(&key),
            &upgrade("2.0.0", json!({ "GREETING": "hey", "TOKEN": "s3cret" })).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "success", "{:?}", r.body);
    assert_eq!(service_containers(&stack, "side"), Vec::<String>::new());
    let web_after = service_containers(&stack, "web");
    assert_eq!(web_after.len(), 1);
    assert_ne!(web_after, web_before);
}

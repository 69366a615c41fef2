//! The spine end to end: hooks → event log + queue → worker → real Docker and registry.

use reqwest::Method;
use serde_json::json;
use shiplog_tests::*;

const ENV: &str = "local";

fn event_types(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_then_redeploy_a_moved_tag_then_upgrade_with_variables_then_sync() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    let live = push_as(&image("web:v1"), &stack, "live");
    app.catalog.write(
        "app/1.0.0.yml",
        &web_manifest(
            &stack,
            "1.0.0",
            &live,
            "    GREETING: { default: hello }",
            "    environment:\n      GREETING: ${GREETING}",
        ),
    );
    app.catalog.write(
        "app/2.0.0.yaml",
        &web_manifest(
            &stack,
            "2.0.0",
            &live,
            "    GREETING: { default: hello }\n    TOKEN: { required: true }\n    EXTRA: { default: none }",
            "    environment:\n      GREETING: ${GREETING}\n      TOKEN: ${TOKEN}\n      EXTRA: ${EXTRA}",
        ),
    );
    let source = app.add_catalog_source().await;
    assert_eq!(source.status, 201, "{:?}", source.body);
    assert_eq!(source.body["stacksLoaded"], 2);

    // Install 1.0.0.
    let id = app.install(ENV, &stack, "1.0.0", json!({})).await;
    let d = app.wait_terminal(&id).await;
    assert_eq!(d["status"], "success", "{d}");
    let first = service_containers(&stack, "web");
    assert_eq!(first.len(), 1);
    assert_eq!(http_get_container(&first[0]).await.trim(), "web v1");
    assert!(inspect(&first[0], "{{json .Config.Env}}").contains("GREETING=hello"));
    for (label, value) in [
        ("com.docker.compose.project", stack.as_str()),
        ("com.docker.compose.service", "web"),
        ("io.shiplog.stack", stack.as_str()),
        ("io.shiplog.environment", ENV),
        ("io.shiplog.version", "1.0.0"),
        ("io.shiplog.deployment", id.as_str()),
    ] {
        assert_eq!(
            inspect(
                &first[0],
                &format!("{{{{index .Config.Labels \"{label}\"}}}}")
            ),
            value,
            "{label}"
        );
    }
    let networks = inspect(&first[0], "{{json .NetworkSettings.Networks}}");
    assert!(networks.contains(&format!("{stack}_default")), "{networks}");

    // CI pushes a new image under the same tag; redeploy picks it up.
    let key = app
        .create_key(
            &["Hooks.Redeploy", "Hooks.Upgrade", "Hooks.SyncSources"],
            None,
        )
        .await;
    push_as(&image("web:v2"), &stack, "live");
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack, "environmentId": ENV }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["success"], true);
    assert_eq!(
        r.body["message"],
        format!("Successfully triggered redeploy of '{stack}'.")
    );
    assert_eq!(r.body["stackName"], stack.as_str());
    assert_eq!(r.body["stackVersion"], "1.0.0");
    let redeploy_id = r.body["deploymentId"].as_str().unwrap().to_owned();
    let d = app.wait_terminal(&redeploy_id).await;
    assert_eq!(d["status"], "success", "{d}");
    let second = service_containers(&stack, "web");
    assert_eq!(second.len(), 1, "exactly one container after the redeploy");
    assert_ne!(second[0], first[0], "a new image means a new container");
    assert_eq!(http_get_container(&second[0]).await.trim(), "web v2");
    let v2_id = docker(&["inspect", "--format", "{{.Id}}", &image("web:v2")]);
    assert_eq!(inspect(&second[0], "{{.Image}}"), v2_id);
    let v2_digest = docker(&[
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &image("web:v2"),
    ]);
    let v2_digest = v2_digest.split_once('@').unwrap().1;
    assert_eq!(
        d["digests"]["web"], v2_digest,
        "the recorded digest is the registry's"
    );
    let events = event_types(&app.events_of(&redeploy_id).await);
    assert_eq!(
        events,
        [
            "RedeployRequested",
            "DeploymentStarted",
            "ImagePulled",
            "ContainerReplaced",
            "DeploymentSucceeded"
        ]
    );

    // Upgrade with variables: a missing required one is a 400 at the hook …
    let r = app
        .hook(
            "/api/hooks/upgrade",
            Some(&key),
            &json!({ "stackName": stack, "targetVersion": "2.0.0", "environmentId": ENV })
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("TOKEN"),
        "{:?}",
        r.body
    );
    // … and given, it reaches the container.
    let body = json!({ "stackName": stack, "targetVersion": "2.0.0", "environmentId": ENV, "variables": { "GREETING": "hi there", "TOKEN": "s3cret" } });
    let r = app
        .hook("/api/hooks/upgrade", Some(&key), &body.to_string())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["message"],
        format!("Successfully upgraded '{stack}' from 1.0.0 to 2.0.0.")
    );
    assert_eq!(r.body["previousVersion"], "1.0.0");
    assert_eq!(r.body["newVersion"], "2.0.0");
    let d = app
        .wait_terminal(r.body["deploymentId"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "success", "{d}");
    let third = service_containers(&stack, "web");
    assert_eq!(third.len(), 1);
    let env = inspect(&third[0], "{{json .Config.Env}}");
    assert!(
        env.contains("GREETING=hi there")
            && env.contains("TOKEN=s3cret")
            && env.contains("EXTRA=none"),
        "{env}"
    );
    assert_eq!(
        inspect(&third[0], "{{index .Config.Labels \"io.shiplog.version\"}}"),
        "2.0.0"
    );

    let stack_view = app
        .admin(
            Method::GET,
            &format!("/api/environments/{ENV}/stacks/{stack}"),
            None,
        )
        .await;
    assert_eq!(stack_view.status, 200);
    assert_eq!(stack_view.body["version"], "2.0.0");
    assert_eq!(stack_view.body["variables"]["GREETING"], "hi there");
    assert_eq!(
        stack_view.body["services"][0]["container"],
        third[0].as_str()
    );

    // A third version lands in the folder; sync-sources loads it.
    app.catalog.write(
        "app/3.0.0.yml",
        &web_manifest(&stack, "3.0.0", &live, "    {}", ""),
    );
    let r = app.hook("/api/hooks/sync-sources", Some(&key), "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({ "success": true, "stacksLoaded": 3, "sourcesSynced": 1, "message": "Synced 1 source(s), loaded 3 stack(s)." })
    );
    let catalog = app.admin(Method::GET, "/api/catalog/stacks", None).await;
    let versions: Vec<&str> = catalog.body[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0", "3.0.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_with_an_unchanged_digest_keeps_the_container_unless_forced() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    let live = push_as(&image("web:v1"), &stack, "live");
    app.catalog
        .write("s.yml", &web_manifest(&stack, "1.0.0", &live, "    {}", ""));
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install(ENV, &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let before = service_containers(&stack, "web");

    let key = app.create_key(&["Hooks.Redeploy"], Some(ENV)).await;
    // `?wait=true` answers when the deployment has ended.
    let r = app
        .hook(
            "/api/hooks/redeploy?wait=true&timeout=120",
            Some(&key),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "success", "{:?}", r.body);
    assert_eq!(r.body["success"], true);
    let id = r.body["deploymentId"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    assert_eq!(service_containers(&stack, "web"), before, "same container");
    // A timeout that passes first: 202 with the status so far.
    let r = app
        .hook(
            "/api/hooks/redeploy?wait=true&timeout=0",
            Some(&key),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert!(
        ["queued", "in_progress"].contains(&r.body["status"].as_str().unwrap()),
        "{:?}",
        r.body
    );
    app.wait_terminal(r.body["deploymentId"].as_str().unwrap())
        .await;
    assert!(event_types(&app.events_of(&id).await).contains(&"ServiceUnchanged".to_owned()));

    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack, "force": true }).to_string(),
        )
        .await;
    let id = r.body["deploymentId"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let after = service_containers(&stack, "web");
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "force recreates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_rolls_back_to_the_old_container() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
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
    app.catalog.write(
        "v3.yml",
        &web_manifest(&stack, "3.0.0", &image("web:no-such-tag"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install(ENV, &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let before = service_containers(&stack, "web");
    assert_eq!(before.len(), 1);

    let key = app.create_key(&["Hooks.Upgrade"], None).await;
    for (version, expect) in [
        ("2.0.0", "did not become healthy"),
        ("3.0.0", "no-such-tag"),
    ] {
        let body = json!({ "stackName": stack, "targetVersion": version, "environmentId": ENV });
        let r = app
            .hook("/api/hooks/upgrade", Some(&key), &body.to_string())
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let d = app
            .wait_terminal(r.body["deploymentId"].as_str().unwrap())
            .await;
        assert_eq!(d["status"], "failure", "{d}");
        let message = d["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(expect), "{version}: {message}");
        // The old container is back (or never left), serving, and alone.
        assert_eq!(service_containers(&stack, "web"), before, "{version}");
        assert_eq!(inspect(&before[0], "{{.State.Running}}"), "true");
        assert_eq!(http_get_container(&before[0]).await.trim(), "web v1");
    }
    let stack_view = app
        .admin(
            Method::GET,
            &format!("/api/environments/{ENV}/stacks/{stack}"),
            None,
        )
        .await;
    assert_eq!(
        stack_view.body["version"], "1.0.0",
        "a failed upgrade leaves the recorded version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_runs_the_earlier_digests_after_the_tag_moved() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    let live = push_as(&image("web:v1"), &stack, "live");
    app.catalog.write(
        "s.yml",
        &web_manifest(
            &stack,
            "1.0.0",
            &live,
            "    GREETING: { default: first }",
            "    environment:\n      GREETING: ${GREETING}",
        ),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let first = app
        .install(ENV, &stack, "1.0.0", json!({ "GREETING": "from-install" }))
        .await;
    assert_eq!(app.wait_terminal(&first).await["status"], "success");

    // The tag moves to v2 and a redeploy runs it.
    push_as(&image("web:v2"), &stack, "live");
    let key = app
        .create_key(&["Hooks.Redeploy", "Hooks.Rollback"], Some(ENV))
        .await;
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
    assert_eq!(
        http_get_container(&service_containers(&stack, "web")[0])
            .await
            .trim(),
        "web v2"
    );

    // A key without the permission may not; one with it may.
    let plain = app.create_key(&["Hooks.Redeploy"], Some(ENV)).await;
    let url = format!("{}/api/deployments/{first}/rollback", app.address);
    let denied = reply(
        app.client
            .post(&url)
            .header("X-Api-Key", &plain)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    let r = reply(
        app.client
            .post(&url)
            .header("X-Api-Key", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["images"]["web"]
            .as_str()
            .unwrap()
            .contains("@sha256:"),
        "{:?}",
        r.body
    );
    let d = app
        .wait_terminal(r.body["deploymentId"].as_str().unwrap())
        .await;
    assert_eq!(d["status"], "success", "{d}");
    assert_eq!(d["kind"], "rollback");
    let container = &service_containers(&stack, "web")[0];
    assert_eq!(
        http_get_container(container).await.trim(),
        "web v1",
        "the digest, not the tag"
    );
    assert_eq!(
        inspect(container, "{{.Image}}"),
        docker(&["inspect", "--format", "{{.Id}}", &image("web:v1")])
    );
    assert!(inspect(container, "{{json .Config.Env}}").contains("GREETING=from-install"));

    // Only successful deployments are rollback targets.
    let failed_key = app.create_key(&["Hooks.Rollback"], Some(ENV)).await;
    let nope = format!(
        "{}/api/deployments/{}/rollback",
        app.address,
        uuid::Uuid::now_v7()
    );
    let r = reply(
        app.client
            .post(&nope)
            .header("X-Api-Key", &failed_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
}

/// `POST /api/hooks/deploy`, the ensure: install when absent, redeploy when it runs the
/// version, upgrade otherwise; the newest catalog version by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_hook_installs_redeploys_or_upgrades_as_needed() {
    let app = spawn_app().await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.register_local_environment("local").await;
    for (file, version, img) in [
        ("a.yml", "1.0.0", "web:v1"),
        ("b.yml", "1.10.0", "web:v2"),
        ("c.yml", "1.9.0", "web:v1"),
    ] {
        app.catalog.write(
            file,
            &web_manifest(&stack, version, &image(img), "    {}", ""),
        );
    }
    assert_eq!(app.add_catalog_source().await.status, 201);
    let key = app.create_key(&["Hooks.Deploy"], Some("local")).await;
    let deploy = |body: serde_json::Value| {
        let app = &app;
        let key = key.clone();
        async move {
            let r = app
                .hook("/api/hooks/deploy?wait=true", Some(&key), &body.to_string())
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            assert_eq!(r.body["status"], "success", "{:?}", r.body);
            r.body
        }
    };

    // Absent: installed, at the newest version by semver (1.10.0, not 1.9.0).
    let first = deploy(json!({ "stackName": stack })).await;
    assert_eq!(first["action"], "install");
    assert_eq!(first["stackVersion"], "1.10.0");
    assert_eq!(first["previousVersion"], serde_json::Value::Null);
    // Running that version: a redeploy (force recreates the container).
    let before = service_containers(&stack, "web");
    let again = deploy(json!({ "stackName": stack, "force": true })).await;
    assert_eq!(again["action"], "redeploy");
    assert_eq!(again["stackVersion"], "1.10.0");
    assert_ne!(service_containers(&stack, "web"), before);
    // Another version: an upgrade.
    let older = deploy(json!({ "stackName": stack, "version": "1.0.0" })).await;
    assert_eq!(older["action"], "upgrade");
    assert_eq!(older["previousVersion"], "1.10.0");
    let shown = app
        .admin(
            reqwest::Method::GET,
            &format!("/api/environments/local/stacks/{stack}"),
            None,
        )
        .await;
    assert_eq!(shown.body["version"], "1.0.0");

    // Refusals: a version not in the catalog, a key without the permission.
    let r = app
        .hook(
            "/api/hooks/deploy",
            Some(&key),
            &json!({ "stackName": stack, "version": "9.9.9" }).to_string(),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let other = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let r = app
        .hook(
            "/api/hooks/deploy",
            Some(&other),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body["message"].as_str().unwrap().contains("Hooks.Deploy"));
}

/// Typed variables: a value of the wrong type is a 400 naming the variable, at the request,
/// with nothing written; a catalog file whose default does not fit its type is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_variables_are_checked_at_the_request() {
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let stack = unique_name();
    app.register_local_environment("local").await;
    app.catalog.write(
        "v1.yml",
        &web_manifest(
            &stack,
            "1.0.0",
            &image("web:v1"),
            "    PORT: { type: port, default: \"8080\" }\n    MODE: { type: select, options: [fast, safe], default: safe }\n    HOOK: { type: url }\n    DEBUG: { type: bool, default: \"false\" }",
            "    environment:\n      PORT: ${PORT}\n      MODE: ${MODE}\n      DEBUG: ${DEBUG}",
        ),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let events = |app: &TestApp| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let before = events(&app).await;
    for (variables, message) in [
        (
            json!({ "PORT": "70000" }),
            "variable 'PORT' must be a port number (1-65535), not \"70000\"",
        ),
        (
            json!({ "MODE": "slow" }),
            "variable 'MODE' must be one of: fast, safe, not \"slow\"",
        ),
        (
            json!({ "HOOK": "example.com/x" }),
            "variable 'HOOK' must be an absolute URL",
        ),
        (
            json!({ "DEBUG": "yes" }),
            "variable 'DEBUG' must be true or false",
        ),
    ] {
        let r = app
            .admin(
                Method::POST,
                "/api/environments/local/stacks",
                Some(json!({ "stackName": stack, "version": "1.0.0", "variables": variables })),
            )
            .await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        let got = r.body["message"].as_str().unwrap();
        assert!(got.contains(message), "{got}");
    }
    assert_eq!(events(&app).await, before, "nothing written");
    let ok = app
        .admin(
            Method::POST,
            "/api/environments/local/stacks",
            Some(json!({ "stackName": stack, "version": "1.0.0",
                         "variables": { "PORT": "9000", "MODE": "fast", "HOOK": "https://ci.example.com/x" } })),
        )
        .await;
    assert_eq!(ok.status, 202, "{:?}", ok.body);

    // A default that does not fit its type: the file is refused, named with the place.
    let other = unique_name();
    app.catalog.write(
        "bad.yml",
        &web_manifest(
            &other,
            "1.0.0",
            &image("web:v1"),
            "    PORT: { type: port, default: \"http\" }",
            "",
        ),
    );
    let key = app.create_key(&["Hooks.SyncSources"], None).await;
    let r = app.hook("/api/hooks/sync-sources", Some(&key), "").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let text = r.body.to_string();
    assert!(
        text.contains("bad.yml") && text.contains("PORT") && text.contains("not a port number"),
        "{text}"
    );
}

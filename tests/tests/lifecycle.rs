//! Stack lifecycle end to end: stop / restart hooks, admin start / stop / restart / remove,
//! each a deployment of its own, against the real engine and registry.

use reqwest::Method;
use serde_json::{Value, json};
use shiplog_tests::*;

const ENV: &str = "local";

/// Two services: `web` waits for `db` to be healthy; `db` keeps a named volume.
fn two_service_manifest(stack: &str, db_image: &str, web_image: &str) -> String {
    format!(
        "name: {stack}
x-shiplog:
  version: 1.0.0
services:
  db:
    image: {db_image}
    volumes:
      - data:/data
  web:
    image: {web_image}
    ports:
      - \"127.0.0.1::8080\"
    depends_on:
      db:
        condition: service_healthy
volumes:
  data: {{}}
"
    )
}

fn container(stack: &str, service: &str) -> String {
    let ids = service_containers(stack, service);
    assert_eq!(ids.len(), 1, "{service}: {ids:?}");
    ids[0].clone()
}

fn running(container: &str) -> bool {
    inspect(container, "{{.State.Running}}") == "true"
}

fn started_at(container: &str) -> String {
    inspect(container, "{{.State.StartedAt}}")
}

fn exists(args: &[&str]) -> bool {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

/// An image of its own (a new id, one reference), pushed to the registry and not kept
/// locally: removing its only reference really deletes it, unless a container uses it.
fn own_image(stack: &str, repository: &str) -> String {
    use std::io::Write;
    let target = format!("{}/shiplog-test/{stack}-{repository}:v1", registry());
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &target, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dockerfile = format!("FROM {}\nLABEL org.shiplog.test={stack}\n", image("web:v1"));
    build
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    assert!(build.wait().unwrap().success(), "docker build {target}");
    docker(&["push", "-q", &target]);
    docker(&["rmi", &target]);
    target
}

async fn stack_view(app: &TestApp, stack: &str) -> Reply {
    app.admin(
        Method::GET,
        &format!("/api/environments/{ENV}/stacks/{stack}"),
        None,
    )
    .await
}

async fn queued(reply: Reply, app: &TestApp) -> Value {
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let id = reply.body["deploymentId"].as_str().unwrap().to_owned();
    app.wait_terminal(&id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_restart_and_remove_a_stack_each_as_a_deployment() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    let db_image = own_image(&stack, "db");
    let web_image = push_as(&image("web:v1"), &format!("{stack}-web"), "v1");
    app.catalog.write(
        "app/1.0.0.yml",
        &two_service_manifest(&stack, &db_image, &web_image),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let d = app
        .wait_terminal(&app.install(ENV, &stack, "1.0.0", json!({})).await)
        .await;
    assert_eq!(d["status"], "success", "{d}");
    let (db, web) = (container(&stack, "db"), container(&stack, "web"));
    // `condition: service_healthy`: web started only once db had passed a health check.
    let db_healthy_at = inspect(
        &db,
        "{{range .State.Health.Log}}{{if eq .ExitCode 0}}{{.End.Format \"2006-01-02T15:04:05.999999999Z07:00\"}}\n{{end}}{{end}}",
    );
    let first_healthy = db_healthy_at
        .lines()
        .next()
        .expect("db passed a health check");
    let first_healthy: chrono::DateTime<chrono::Utc> = first_healthy
        .parse()
        .unwrap_or_else(|e| panic!("{first_healthy}: {e}"));
    let web_started: chrono::DateTime<chrono::Utc> = started_at(&web).parse().unwrap();
    assert!(
        web_started > first_healthy,
        "web started at {web_started}, before db was healthy at {first_healthy}"
    );

    // A key without the permission is refused, and nothing is queued.
    let redeploy_only = app.create_key(&["Hooks.Redeploy"], Some(ENV)).await;
    let body = json!({ "stackName": stack }).to_string();
    for hook in ["restart-containers", "stop-containers"] {
        let r = app
            .hook(&format!("/api/hooks/{hook}"), Some(&redeploy_only), &body)
            .await;
        assert_eq!(r.status, 403, "{hook}: {:?}", r.body);
    }
    let key = app
        .create_key(
            &["Hooks.StopContainers", "Hooks.RestartContainers"],
            Some(ENV),
        )
        .await;

    // Stop (hook, waiting): the containers are kept, stopped; the stack says so.
    let r = app
        .hook("/api/hooks/stop-containers?wait=true", Some(&key), &body)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["success"], true, "{:?}", r.body);
    assert_eq!(r.body["status"], "success");
    assert_eq!(r.body["stackVersion"], "1.0.0");
    let stop_id = r.body["deploymentId"].as_str().unwrap().to_owned();
    let d = app.wait_terminal(&stop_id).await;
    assert_eq!(d["kind"], "stop");
    assert_eq!(
        d["message"],
        format!("Stopped 2 containers of stack {stack}")
    );
    assert_eq!(
        (container(&stack, "db"), container(&stack, "web")),
        (db.clone(), web.clone())
    );
    assert!(!running(&db) && !running(&web));
    let view = stack_view(&app, &stack).await;
    assert_eq!(view.body["state"], "stopped", "{:?}", view.body);
    assert_eq!(view.body["lastDeploymentId"], stop_id.as_str());
    let types: Vec<Value> = app
        .events_of(&stop_id)
        .await
        .iter()
        .map(|e| e["event"]["type"].clone())
        .collect();
    assert_eq!(
        types,
        vec![
            json!("StopRequested"),
            json!("DeploymentStarted"),
            json!("DeploymentSucceeded")
        ]
    );

    // Start (admin): the same containers run again, the dependency first.
    let d = queued(
        app.admin(
            Method::POST,
            &format!("/api/environments/{ENV}/stacks/{stack}/start"),
            None,
        )
        .await,
        &app,
    )
    .await;
    assert_eq!(d["status"], "success", "{d}");
    assert_eq!(d["kind"], "start");
    assert!(running(&db) && running(&web));
    assert!(started_at(&db) < started_at(&web), "db must start first");
    assert_eq!(http_get_container(&web).await.trim(), "web v1");
    assert_eq!(stack_view(&app, &stack).await.body["state"], "running");

    // Restart (hook): same containers, started again, dependency first.
    let before = started_at(&web);
    let r = app
        .hook("/api/hooks/restart-containers?wait=true", Some(&key), &body)
        .await;
    assert_eq!(r.body["status"], "success", "{:?}", r.body);
    assert_eq!(
        (container(&stack, "db"), container(&stack, "web")),
        (db.clone(), web.clone())
    );
    assert!(running(&db) && running(&web));
    assert!(started_at(&web) > before, "web was not restarted");
    assert!(started_at(&db) < started_at(&web), "db must start first");

    // Remove with images (volumes kept by default). Another container outside the stack
    // still uses db's image: that one is kept and named.
    let outsider = docker(&["create", "--label", "shiplog-test=outsider", &db_image]);
    let removal_time = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let d = queued(
        app.admin(
            Method::DELETE,
            &format!("/api/environments/{ENV}/stacks/{stack}?images=true"),
            None,
        )
        .await,
        &app,
    )
    .await;
    docker(&["rm", "-f", &outsider]);
    assert_eq!(d["status"], "success", "{d}");
    assert_eq!(d["kind"], "remove");
    let message = d["message"].as_str().unwrap();
    assert!(message.contains("images removed: 1"), "{message}");
    assert!(message.contains(&format!("kept {db_image}")), "{message}");
    assert!(service_containers(&stack, "db").is_empty());
    assert!(service_containers(&stack, "web").is_empty());
    assert!(!exists(&[
        "network",
        "inspect",
        &format!("{stack}_default")
    ]));
    assert!(!exists(&["image", "inspect", &web_image]));
    assert!(exists(&["volume", "inspect", &format!("{stack}_data")]));

    // No longer deployed: hooks say so (400, nothing queued); history still tells.
    assert_eq!(stack_view(&app, &stack).await.status, 404);
    let r = app
        .hook("/api/hooks/restart-containers", Some(&key), &body)
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("not deployed"));
    let at = app
        .admin(
            Method::GET,
            &format!(
                "/api/environments/{ENV}/stacks/{stack}?at={}",
                removal_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            None,
        )
        .await;
    assert_eq!(at.status, 200, "{:?}", at.body);
    assert_eq!(at.body["state"], "running");

    // Installed again (the kept volume is reused), then removed with its volumes.
    let d = app
        .wait_terminal(&app.install(ENV, &stack, "1.0.0", json!({})).await)
        .await;
    assert_eq!(d["status"], "success", "{d}");
    let d = queued(
        app.admin(
            Method::DELETE,
            &format!("/api/environments/{ENV}/stacks/{stack}?volumes=true"),
            None,
        )
        .await,
        &app,
    )
    .await;
    assert_eq!(d["status"], "success", "{d}");
    assert!(!exists(&["volume", "inspect", &format!("{stack}_data")]));
    // The image of a stack removed without `images` stays.
    assert!(exists(&["image", "inspect", &db_image]));
    let _ = exists(&["rmi", &db_image]);

    // The lifecycle events rebuild the same read models.
    let incremental = snapshot_projections(&app.pool).await;
    let out = std::process::Command::new(workspace_binary("shiplog-api"))
        .args(["projections", "rebuild"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(incremental, snapshot_projections(&app.pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_a_stack_whose_container_is_gone_fails_and_says_to_redeploy() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.catalog.write(
        "app/1.0.0.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let path = |action: &str| format!("/api/environments/{ENV}/stacks/{stack}/{action}");

    // Nothing deployed yet: 400, nothing queued.
    let r = app.admin(Method::POST, &path("stop"), None).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = app.admin(Method::GET, "/api/deployments", None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(0), "{:?}", r.body);
    // Unknown query flags are refused.
    let r = app
        .admin(
            Method::DELETE,
            &format!("/api/environments/{ENV}/stacks/{stack}?volume=true"),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);

    let d = app
        .wait_terminal(&app.install(ENV, &stack, "1.0.0", json!({})).await)
        .await;
    assert_eq!(d["status"], "success", "{d}");
    let d = queued(app.admin(Method::POST, &path("stop"), None).await, &app).await;
    assert_eq!(d["status"], "success", "{d}");
    docker(&["rm", "-f", &container(&stack, "web")]);

    let d = queued(app.admin(Method::POST, &path("start"), None).await, &app).await;
    assert_eq!(d["status"], "failure", "{d}");
    let message = d["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("container {stack}-web-1 does not exist; redeploy")),
        "{message}"
    );
    // The stack stays recorded as stopped; a redeploy brings it back.
    assert_eq!(stack_view(&app, &stack).await.body["state"], "stopped");
    let key = app.create_key(&["Hooks.Redeploy"], Some(ENV)).await;
    let r = app
        .hook(
            "/api/hooks/redeploy?wait=true",
            Some(&key),
            &json!({ "stackName": stack }).to_string(),
        )
        .await;
    assert_eq!(r.body["status"], "success", "{:?}", r.body);
    assert!(running(&container(&stack, "web")));
    assert_eq!(stack_view(&app, &stack).await.body["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_projects_shiplog_does_not_manage_are_listed_read_only() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let other = unique_name();
    let _guards = (StackGuard::new(&stack), StackGuard::new(&other));
    app.catalog.write(
        "app/1.0.0.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let d = app
        .wait_terminal(&app.install(ENV, &stack, "1.0.0", json!({})).await)
        .await;
    assert_eq!(d["status"], "success", "{d}");
    // Someone ran `docker compose up` for another project on the same engine.
    let project = format!("com.docker.compose.project={other}");
    for service in ["api", "job"] {
        docker(&[
            "create",
            "--name",
            &format!("{other}-{service}-1"),
            "--label",
            &project,
            "--label",
            &format!("com.docker.compose.service={service}"),
            &image("web:v1"),
        ]);
    }
    docker(&["start", &format!("{other}-api-1")]);

    // Workers probe every second in tests; wait (bounded) for the observation.
    let mut listed = Vec::new();
    for _ in 0..100 {
        let r = app
            .admin(
                Method::GET,
                &format!("/api/environments/{ENV}/stacks"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        listed = r.body.as_array().unwrap().clone();
        // Observed after `docker start` (an earlier probe may have seen both created).
        if listed
            .iter()
            .any(|s| s["stackName"] == other.as_str() && s["state"] == "partial")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ours = listed
        .iter()
        .find(|s| s["stackName"] == stack.as_str())
        .expect("the managed stack is listed");
    assert_eq!(ours["managed"], true);
    assert_eq!(ours["version"], "1.0.0");
    let theirs = listed
        .iter()
        .find(|s| s["stackName"] == other.as_str())
        .unwrap_or_else(|| panic!("the unmanaged project is listed: {listed:?}"));
    assert_eq!(theirs["managed"], false);
    assert_eq!(theirs["readOnly"], true);
    assert_eq!(theirs["state"], "partial");
    let containers: Vec<(&str, &str)> = theirs["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["service"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(containers, vec![("api", "running"), ("job", "created")]);
    // The managed stack is not listed twice.
    assert_eq!(
        listed
            .iter()
            .filter(|s| s["stackName"] == stack.as_str())
            .count(),
        1
    );

    // Read-only: Shiplog does not act on it.
    let r = app
        .admin(
            Method::POST,
            &format!("/api/environments/{ENV}/stacks/{other}/stop"),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(running(&format!("{other}-api-1")));
}

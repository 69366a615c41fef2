//! Several worker processes: never two deployments of one stack at once, all terminal.

use std::process::{Child, Command, Stdio};

use chrono::{DateTime, Utc};
use serde_json::json;
use shiplog_tests::*;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(database_url: &str) -> Worker {
    let child = Command::new(workspace_binary("shiplog-worker"))
        .env("DATABASE_URL", database_url)
        // Several workers on one host: each takes a free metrics port.
        .env("SHIPLOG_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("worker binary starts");
    Worker(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_redeploys_on_two_workers_never_overlap() {
    let app = spawn_app_with(AppOptions {
        worker: false,
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
    let _workers = [spawn_worker(&app.db.url), spawn_worker(&app.db.url)];
    // Both consumers registered before the first job: on a loaded machine a late second
    // process would otherwise find the work already taken.
    for _ in 0..300 {
        let consumers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.workers WHERE last_seen > now() - interval '1 minute'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap_or(0);
        if consumers >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");

    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    // `force` makes every one of them replace the container: the most overlap-prone work.
    let body = json!({ "stackName": stack, "force": true }).to_string();
    // Concurrent, and spread over a few seconds: requests arriving while a redeploy is
    // still queued join it; later ones queue new deployments that contend for the stack.
    let requests = (0..20u64).map(|i| {
        let body = &body;
        let app = &app;
        let key = &key;
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(i / 2 * 600)).await;
            app.hook("/api/hooks/redeploy", Some(key), body).await
        }
    });
    let replies = futures::future::join_all(requests).await;
    let mut ids = Vec::new();
    for r in replies {
        assert_eq!(r.status, 200, "{:?}", r.body);
        ids.push(r.body["deploymentId"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert!(ids.len() >= 2, "several deployments contended: {ids:?}");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('RedeployRequested', 'RedeployJoined')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded, 20,
        "every request is in the log, as a deployment or a join"
    );

    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>, String)> = Vec::new();
    let mut workers = std::collections::BTreeSet::new();
    for id in &ids {
        let d = app.wait_terminal(id).await;
        assert_eq!(d["status"], "success", "{d}");
        let events = app.events_of(id).await;
        let at = |ty: &str| -> Vec<DateTime<Utc>> {
            events
                .iter()
                .filter(|e| e["event"]["type"] == ty)
                .map(|e| e["recordedAt"].as_str().unwrap().parse().unwrap())
                .collect()
        };
        let started = at("DeploymentStarted");
        assert_eq!(started.len(), 1, "one attempt each: {id}");
        let ended = at("DeploymentSucceeded");
        assert_eq!(ended.len(), 1, "exactly one terminal event: {id}");
        for e in &events {
            if e["event"]["type"] == "DeploymentStarted" {
                workers.insert(e["event"]["data"]["worker"].as_str().unwrap().to_owned());
            }
        }
        spans.push((started[0], ended[0], id.clone()));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "deployments {} and {} of one stack overlapped",
            pair[0].2,
            pair[1].2
        );
    }
    if ids.len() >= 4 {
        assert!(
            workers.len() >= 2,
            "both worker processes took deployments: {workers:?}"
        );
    }
    assert_eq!(
        service_containers(&stack, "web").len(),
        1,
        "one container at the end"
    );
}

/// Polls a deployment's events until one of `ty` appears (bounded: 60 s).
async fn wait_for_event(app: &TestApp, deployment: &str, ty: &str) {
    for _ in 0..600 {
        if app
            .events_of(deployment)
            .await
            .iter()
            .any(|e| e["event"]["type"] == ty)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{deployment}: no {ty} within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_deployment_is_finished_by_another() {
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    app.register_local_environment("local").await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    for (v, tag) in [("1.0.0", "v1"), ("2.0.0", "v2")] {
        app.catalog.write(
            &format!("{v}.yml"),
            &web_manifest(&stack, v, &image(&format!("web:{tag}")), "    {}", ""),
        );
    }
    assert_eq!(app.add_catalog_source().await.status, 201);
    let mut worker = spawn_worker(&app.db.url);
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let key = app.create_key(&["Hooks.Upgrade"], Some("local")).await;

    // Kill points: right after the start, after the pull (stopping/renaming/creating), and
    // while the new container waits to become healthy.
    let kill_points: [(&str, u64); 3] = [
        ("DeploymentStarted", 0),
        ("ImagePulled", 0),
        ("ImagePulled", 500),
    ];
    let mut version = "1.0.0";
    for (after, delay_ms) in kill_points {
        let target = if version == "1.0.0" { "2.0.0" } else { "1.0.0" };
        let body = json!({ "stackName": stack, "targetVersion": target }).to_string();
        let r = app.hook("/api/hooks/upgrade", Some(&key), &body).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let deployment = r.body["deploymentId"].as_str().unwrap().to_owned();
        wait_for_event(&app, &deployment, after).await;
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        drop(worker); // SIGKILL
        worker = spawn_worker(&app.db.url);

        let d = app.wait_terminal(&deployment).await;
        let context = format!("killed after {after} + {delay_ms} ms: {d}");
        assert_eq!(d["status"], "success", "{context}");
        let events = app.events_of(&deployment).await;
        let terminal = events
            .iter()
            .filter(|e| {
                ["DeploymentSucceeded", "DeploymentFailed"]
                    .contains(&e["event"]["type"].as_str().unwrap())
            })
            .count();
        assert_eq!(terminal, 1, "exactly one terminal event: {context}");
        let started: Vec<&str> = events
            .iter()
            .filter(|e| e["event"]["type"] == "DeploymentStarted")
            .map(|e| e["event"]["data"]["worker"].as_str().unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<&str> = started.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            started.len(),
            "every attempt under a new worker identity: {context}"
        );
        let containers = service_containers(&stack, "web");
        assert_eq!(
            containers.len(),
            1,
            "one container, no leftovers: {context}"
        );
        let expected = format!("web {}", if target == "2.0.0" { "v2" } else { "v1" });
        assert_eq!(
            http_get_container(&containers[0]).await.trim(),
            expected,
            "{context}"
        );
        assert_eq!(
            inspect(
                &containers[0],
                "{{index .Config.Labels \"io.shiplog.version\"}}"
            ),
            target
        );
        let names = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={stack}"),
            "--format",
            "{{.Names}}",
        ]);
        assert!(!names.contains("-old"), "no renamed leftovers: {names}");
        version = target;
    }
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restricted_to_some_environments_takes_only_their_jobs() {
    let mut app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    app.register_local_environment("alpha").await;
    app.register_local_environment("beta").await;
    let (a, b) = (unique_name(), unique_name());
    let _guards = (StackGuard::new(&a), StackGuard::new(&b));
    app.catalog.write(
        "a.yml",
        &web_manifest(&a, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    app.catalog.write(
        "b.yml",
        &web_manifest(&b, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    app.start_worker_with(|cfg| cfg.environments = vec!["alpha".into()]);
    let in_alpha = app.install("alpha", &a, "1.0.0", json!({})).await;
    let in_beta = app.install("beta", &b, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&in_alpha).await["status"], "success");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let beta = app
        .admin(
            reqwest::Method::GET,
            &format!("/api/deployments/{in_beta}"),
            None,
        )
        .await;
    assert_eq!(
        beta.body["status"], "queued",
        "no worker serves beta: {:?}",
        beta.body
    );
    // A worker for beta takes it.
    app.start_worker_with(|cfg| cfg.environments = vec!["beta".into()]);
    assert_eq!(app.wait_terminal(&in_beta).await["status"], "success");
}

/// The worker binary logs JSON lines when asked, and the lines of a deployment's run carry
/// the API request's id, so one id finds a CI call in the API's and the worker's logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_log_lines_carry_the_request_id() {
    let app = spawn_app_with(AppOptions {
        worker: false,
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
    let log_path = std::env::temp_dir().join(format!("shiplog-worker-{}.jsonl", unique_name()));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(workspace_binary("shiplog-worker"))
        .env("DATABASE_URL", &app.db.url)
        .env("SHIPLOG_METRICS_LISTEN", "127.0.0.1:0")
        .env("SHIPLOG_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("worker binary starts");
    let worker = Worker(child);

    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let r = app
        .hook_with(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack, "force": true }).to_string(),
            &[("X-Request-Id", "ci-run-8812")],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let deployment = r.body["deploymentId"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&deployment).await["status"], "success");
    drop(worker);

    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_run: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(&deployment))
        .collect();
    assert!(!of_run.is_empty(), "the run logged: {text}");
    assert!(
        of_run
            .iter()
            .any(|l| l.to_string().contains("\"request_id\":\"ci-run-8812\"")),
        "no line of the run carries the request id: {of_run:#?}"
    );
}

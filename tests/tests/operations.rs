//! What operators rely on: health probes that tell the truth about the database, and one
//! request id from the CI call through the answer, the events and the worker.

use std::time::Duration;

use serde_json::{Value, json};
use shiplog_tests::*;

async fn get(app: &TestApp, path: &str) -> Reply {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("request sent");
    reply(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_the_database_and_the_migrations() {
    let app = spawn_app_with(AppOptions {
        worker: false,
        proxy: true,
        acquire_timeout_ms: 1500,
        ..Default::default()
    })
    .await;
    assert_eq!(get(&app, "/health").await.body, json!({ "status": "ok" }));
    let ready = get(&app, "/ready").await;
    assert_eq!(
        (ready.status, ready.body),
        (200, json!({ "status": "ready" }))
    );
    let doco = get(&app, "/v1/health").await;
    assert_eq!(
        (doco.status, doco.body),
        (200, json!({ "details": "healthy" }))
    );

    // Database gone: alive, but neither ready nor healthy, and saying why.
    app.proxy.as_ref().unwrap().down();
    let ready = get(&app, "/ready").await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    assert_eq!(ready.body["status"], "unavailable");
    assert!(
        ready.body["error"].as_str().unwrap().contains("database"),
        "{:?}",
        ready.body
    );
    let doco = get(&app, "/v1/health").await;
    assert_eq!(doco.status, 503);
    assert_eq!(doco.body["details"], "unhealthy");
    assert!(doco.body["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(get(&app, "/health").await.status, 200);

    // Back: ready again without a restart.
    app.proxy.as_ref().unwrap().up();
    let mut status = 0;
    for _ in 0..50 {
        status = get(&app, "/ready").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "ready again once the database is back");

    // A database that misses a migration this build needs is not ready.
    let latest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET success = false WHERE version = $1")
        .bind(latest)
        .execute(&app.pool)
        .await
        .unwrap();
    let ready = get(&app, "/ready").await;
    assert_eq!(ready.status, 503);
    let error = ready.body["error"].as_str().unwrap();
    assert!(
        error.contains("migrations not applied") && error.contains(&latest.to_string()),
        "{error}"
    );
}

async fn correlation_ids(app: &TestApp, deployment: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT event_type, metadata->>'correlation_id' FROM events
         WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(format!("deployment-{deployment}"))
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_echoed_and_follows_the_deployment() {
    let app = spawn_app().await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.register_local_environment("local").await;
    app.catalog.write(
        "v1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");

    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let body = json!({ "stackName": stack, "force": true }).to_string();
    let r = app
        .hook_with(
            "/api/hooks/redeploy",
            Some(&key),
            &body,
            &[("X-Request-Id", "gh-run-4711.2")],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["x-request-id"], "gh-run-4711.2");
    let deployment = r.body["deploymentId"].as_str().unwrap().to_owned();
    assert_eq!(app.wait_terminal(&deployment).await["status"], "success");
    let events = correlation_ids(&app, &deployment).await;
    assert!(
        events.len() >= 3,
        "requested, started, … succeeded: {events:?}"
    );
    for (event, correlation) in &events {
        assert_eq!(
            correlation.as_deref(),
            Some("gh-run-4711.2"),
            "{event} carries the request id"
        );
    }

    // No id, or one that is no sensible id: a fresh one is made, echoed and recorded.
    for given in [None, Some("two words"), Some("")] {
        let headers: Vec<(&str, &str)> = given.map(|g| ("X-Request-Id", g)).into_iter().collect();
        let r = app
            .hook_with("/api/hooks/redeploy", Some(&key), &body, &headers)
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let echoed = r.headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        let deployment = r.body["deploymentId"].as_str().unwrap().to_owned();
        // Ended before the test ends: a run still going after the guard's clean-up would
        // leave its container behind.
        app.wait_terminal(&deployment).await;
        // Its own request event, or the join recording it on a queued equal one.
        let events = correlation_ids(&app, &deployment).await;
        assert!(
            events
                .iter()
                .any(|(_, c)| c.as_deref() == Some(echoed.as_str())),
            "{echoed} not in {events:?}"
        );
    }

    // Errors carry it too, so a failed CI call can be found in the logs.
    let r = app
        .hook_with(
            "/api/hooks/redeploy",
            None,
            &body,
            &[("X-Request-Id", "lost-key-1")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["x-request-id"], "lost-key-1");
    let r = get(&app, "/no/such/route").await;
    assert_eq!(r.status, 404);
    assert!(r.headers.contains_key("x-request-id"));
    let _: Value = r.body;
}

async fn scrape(url: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_hooks_deployments_and_docker_errors() {
    let mut app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let worker_port = free_port();
    app.start_worker_with(|cfg| {
        cfg.metrics_listen = shiplog_events::listen::OptionalAddress(Some(
            format!("127.0.0.1:{worker_port}").parse().unwrap(),
        ));
    });
    let worker_metrics = format!("http://127.0.0.1:{worker_port}");
    let stack = unique_name();
    let broken = unique_name();
    let _guard = StackGuard::new(&stack);
    let _broken_guard = StackGuard::new(&broken);
    app.register_local_environment("local").await;
    app.catalog.write(
        "v1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    app.catalog.write(
        "broken.yml",
        &web_manifest(&broken, "1.0.0", &image("no-such-repo:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let failed = app.install("local", &broken, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&failed).await["status"], "failure");

    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let body = json!({ "stackName": stack, "force": true }).to_string();
    let mut ok = 0;
    for _ in 0..3 {
        let r = app.hook("/api/hooks/redeploy", Some(&key), &body).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        ok += 1;
        app.wait_terminal(r.body["deploymentId"].as_str().unwrap())
            .await;
    }
    assert_eq!(
        app.hook("/api/hooks/redeploy", None, &body).await.status,
        401
    );
    assert_eq!(
        app.hook("/api/hooks/redeploy", Some(&key), "{")
            .await
            .status,
        400
    );
    assert_eq!(
        app.hook("/api/hooks/upgrade", Some(&key), &body)
            .await
            .status,
        403
    );
    // Not a hook: not counted, and no label made up from the path.
    assert_eq!(
        app.hook("/api/hooks/nope", Some(&key), &body).await.status,
        404
    );

    let api = scrape(&app.metrics_address).await;
    let hooks = |endpoint: &str, status: u16| {
        series(
            &api,
            &format!("shiplog_hook_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(hooks("redeploy", 200), Some(ok as f64), "{api}");
    assert_eq!(hooks("redeploy", 401), Some(1.0));
    assert_eq!(hooks("redeploy", 400), Some(1.0));
    assert_eq!(hooks("upgrade", 403), Some(1.0));
    assert!(!api.contains("nope"), "{api}");
    assert_eq!(
        series(
            &api,
            "shiplog_hook_request_duration_seconds_count{endpoint=\"redeploy\"}"
        ),
        Some(ok as f64 + 2.0)
    );
    assert_eq!(
        series(&api, "shiplog_deployments{status=\"success\"}"),
        Some(1.0 + ok as f64)
    );
    assert_eq!(
        series(&api, "shiplog_deployments{status=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        series(&api, "shiplog_queue_depth{environment=\"local\"}"),
        Some(0.0)
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        series(&api, "shiplog_events_appended_total"),
        Some(events as f64)
    );

    let worker = scrape(&worker_metrics).await;
    let ended = |kind: &str, result: &str| {
        series(
            &worker,
            &format!("shiplog_worker_deployments_total{{kind=\"{kind}\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(ended("install", "success"), Some(1.0), "{worker}");
    assert_eq!(ended("install", "failure"), Some(1.0));
    assert_eq!(ended("redeploy", "success"), Some(ok as f64));
    assert_eq!(
        series(
            &worker,
            "shiplog_worker_deployment_duration_seconds_count{kind=\"redeploy\"}"
        ),
        Some(ok as f64)
    );
    assert_eq!(
        series(
            &worker,
            "shiplog_worker_queue_pickup_seconds_count{environment=\"local\"}"
        ),
        Some(2.0 + ok as f64)
    );
    assert_eq!(
        series(
            &worker,
            "shiplog_worker_docker_errors_total{cause=\"stack\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(&worker, "shiplog_worker_running_deployments"),
        Some(0.0)
    );
}

/// The API binary's own log, at debug level and in JSON, over a session that handles the
/// admin token, creates a key and uses good and bad credentials: every line is JSON, the
/// request ids are there, and no secret is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log() {
    use std::process::Stdio;

    let db = TestDb::create().await;
    let port = free_port();
    let token = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let log_path = std::env::temp_dir().join(format!("shiplog-log-{}.jsonl", unique_name()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut api = tokio::process::Command::new(workspace_binary("shiplog-api"))
        .env("DATABASE_URL", &db.url)
        .env("SHIPLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("SHIPLOG_METRICS_LISTEN", "127.0.0.1:0")
        .env("SHIPLOG_ADMIN_TOKEN", &token)
        .env("SHIPLOG_LOG_JSON", "true")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("shiplog-api starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await
            && r.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "shiplog-api ready");

    let admin = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .header("X-Request-Id", "log-check-1")
    };
    let r = admin(reqwest::Method::POST, "/api/environments")
        .json(&json!({ "id": "local", "name": "Local", "dockerEndpoint": docker_endpoint() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = admin(reqwest::Method::POST, "/api/keys")
        .json(&json!({ "name": "ci", "permissions": ["Hooks.Redeploy"], "environmentId": "local" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let wrong_token = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let r = http
        .get(format!("{base}/api/keys"))
        .bearer_auth(&wrong_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let wrong_key = "rsgo_WrongWrongWrongWrongWrongWrong";
    for k in [key.as_str(), wrong_key] {
        let r = http
            .post(format!("{base}/api/hooks/redeploy"))
            .header("X-Api-Key", k)
            .header("X-Request-Id", "log-check-2")
            .json(&json!({ "stackName": "nothing-here" }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    api.start_kill().unwrap();
    let _ = api.wait().await;

    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(text.lines().count() > 10, "a debug log was written: {text}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    assert!(
        text.contains("log-check-1") && text.contains("log-check-2"),
        "request ids logged"
    );
    for (what, secret) in [
        ("the admin token", token.as_str()),
        ("a wrong admin token", wrong_token.as_str()),
        ("the API key", key.as_str()),
        ("a wrong API key", wrong_key),
        ("the API key's random part", &key["rsgo_".len()..]),
    ] {
        assert!(!text.contains(secret), "{what} is in the log");
    }
}

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
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("worker binary starts");
    Worker(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_redeploys_on_two_workers_never_overlap() {
    let app = spawn_app_with(AppOptions { worker: false }).await;
    app.register_local_environment("local").await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.catalog.write(
        "s.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let _workers = [spawn_worker(&app.db.url), spawn_worker(&app.db.url)];

    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");

    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    // `force` makes every one of them replace the container: the most overlap-prone work.
    let body = json!({ "stackName": stack, "force": true }).to_string();
    let requests = (0..20).map(|_| app.hook("/api/hooks/redeploy", Some(&key), &body));
    let replies = futures::future::join_all(requests).await;
    let mut ids = Vec::new();
    for r in replies {
        assert_eq!(r.status, 200, "{:?}", r.body);
        ids.push(r.body["deploymentId"].as_str().unwrap().to_owned());
    }

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
    assert!(
        workers.len() >= 2,
        "both worker processes took deployments: {workers:?}"
    );
    assert_eq!(
        service_containers(&stack, "web").len(),
        1,
        "one container at the end"
    );
}

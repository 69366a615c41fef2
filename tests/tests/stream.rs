//! `GET /api/deployments/{id}/stream`: live progress as Server-Sent Events, ending at the
//! terminal state, resumable with `Last-Event-ID`, readable by the same callers as `/events`.

use std::time::Duration;

use serde_json::{Value, json};
use shiplog_tests::*;

#[derive(Debug)]
struct Message {
    id: i64,
    event: String,
    data: Value,
}

/// Parses a whole SSE body; comments (keep-alives) are skipped.
fn parse(body: &str) -> Vec<Message> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {block:?}"))
                    .to_owned()
            };
            Message {
                id: field("id: ").parse().unwrap(),
                event: field("event: "),
                data: serde_json::from_str(&field("data: ")).unwrap(),
            }
        })
        .collect()
}

async fn open(
    app: &TestApp,
    deployment: &str,
    key: &str,
    last_event_id: Option<&str>,
) -> (u16, String, String) {
    let mut req = app
        .client
        .get(format!(
            "{}/api/deployments/{deployment}/stream",
            app.address
        ))
        .header("X-Api-Key", key)
        .timeout(Duration::from_secs(120));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let response = req.send().await.expect("stream opens");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.text().await.expect("the stream ends"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_follows_a_deployment_to_its_end_and_resumes() {
    let app = spawn_app().await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.register_local_environment("local").await;
    app.register_local_environment("other").await;
    app.catalog.write(
        "v1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");

    let key = app.create_key(&["Hooks.Redeploy"], Some("local")).await;
    let body = json!({ "stackName": stack, "force": true }).to_string();
    let r = app.hook("/api/hooks/redeploy", Some(&key), &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let deployment = r.body["deploymentId"].as_str().unwrap().to_owned();

    // Opened at once: it follows the deployment live and ends by itself at the end.
    let (status, content_type, text) = open(&app, &deployment, &key, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let live = parse(&text);
    let names: Vec<&str> = live.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"status"), "{names:?}");
    assert_eq!(live[0].data["state"], "queued");
    assert_eq!(names[1], "RedeployRequested");
    assert!(names.contains(&"DeploymentStarted"), "{names:?}");
    assert!(names.contains(&"ContainerReplaced"), "{names:?}");
    assert_eq!(names.last(), Some(&"DeploymentSucceeded"), "{names:?}");
    let states: Vec<&str> = live
        .iter()
        .filter(|m| m.event == "status")
        .map(|m| m.data["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"queued"));
    assert!(states.contains(&"in_progress"), "{states:?}");
    assert_eq!(states.last(), Some(&"success"), "{states:?}");
    assert!(
        live.windows(2).all(|w| w[0].id <= w[1].id),
        "ids never go back"
    );

    // Everything /events has, in the same shape.
    let events = app.events_of(&deployment).await;
    let streamed: Vec<&Value> = live
        .iter()
        .filter(|m| m.event != "status")
        .map(|m| &m.data)
        .collect();
    assert_eq!(streamed.len(), events.len());
    for (s, e) in streamed.iter().zip(&events) {
        assert_eq!(*s, e);
    }

    // Resumed after the second event: exactly what came after it.
    let (status, _, text) = open(&app, &deployment, &key, Some("2")).await;
    assert_eq!(status, 200);
    let resumed = parse(&text);
    assert!(resumed.iter().all(|m| m.id > 2), "{resumed:?}");
    let expected: Vec<(i64, &str)> = live
        .iter()
        .filter(|m| m.id > 2)
        .map(|m| (m.id, m.event.as_str()))
        .collect();
    let got: Vec<(i64, &str)> = resumed.iter().map(|m| (m.id, m.event.as_str())).collect();
    assert_eq!(got, expected);

    // Resumed after the last one of an ended deployment: nothing, and the answer ends.
    let last = live.last().unwrap().id.to_string();
    let (status, _, text) = open(&app, &deployment, &key, Some(&last)).await;
    assert_eq!((status, text.as_str()), (200, ""));

    // Bad resume points, strangers and other scopes.
    let (status, _, text) = open(&app, &deployment, &key, Some("yesterday")).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Last-Event-ID"), "{text}");
    let (status, _, _) = open(
        &app,
        &deployment,
        "rsgo_notarealkeynotarealkeynotareal12",
        None,
    )
    .await;
    assert_eq!(status, 401);
    let other = app.create_key(&["Hooks.Redeploy"], Some("other")).await;
    let (status, _, _) = open(&app, &deployment, &other, None).await;
    assert_eq!(status, 403);
    let (status, _, _) = open(&app, "00000000-0000-0000-0000-000000000000", &key, None).await;
    assert_eq!(status, 404);
}

//! `password` variables: sealed before they enter the log, masked in every answer, opened
//! only by the worker for the container.

use reqwest::Method;
use serde_json::json;
use shiplog_tests::*;

const ENV: &str = "local";
const PASSWORD: &str = "hunter2-Zq81-never-in-clear";

fn manifest(stack: &str) -> String {
    web_manifest(
        stack,
        "1.0.0",
        &image("web:v1"),
        "    TOKEN: { type: password, required: true }\n    MODE: { default: fast }",
        "    environment:\n      TOKEN: ${TOKEN}\n      MODE: ${MODE}",
    )
}

async fn raw_rows(app: &TestApp, sql: &str) -> String {
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&app.pool)
        .await
        .unwrap();
    rows.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_values_are_sealed_in_the_log_masked_in_answers_and_given_to_the_container() {
    let app = spawn_app_with(AppOptions {
        secret_key: Some("7f".repeat(32)),
        ..Default::default()
    })
    .await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.catalog.write("app/1.0.0.yml", &manifest(&stack));
    assert_eq!(app.add_catalog_source().await.status, 201);

    let id = app
        .install(ENV, &stack, "1.0.0", json!({ "TOKEN": PASSWORD }))
        .await;
    let d = app.wait_terminal(&id).await;
    assert_eq!(d["status"], "success", "{d}");
    let web = service_containers(&stack, "web");
    let env = inspect(&web[0], "{{json .Config.Env}}");
    assert!(env.contains(&format!("TOKEN={PASSWORD}")), "{env}");
    assert!(env.contains("MODE=fast"), "{env}");

    // A redeploy runs with the stored (sealed) value: the container still gets it.
    let key = app.create_key(&["Hooks.Redeploy"], Some(ENV)).await;
    let r = app
        .hook(
            "/api/hooks/redeploy?wait=true",
            Some(&key),
            &json!({ "stackName": stack, "force": true }).to_string(),
        )
        .await;
    assert_eq!(r.body["status"], "success", "{:?}", r.body);
    let web = service_containers(&stack, "web");
    assert!(inspect(&web[0], "{{json .Config.Env}}").contains(&format!("TOKEN={PASSWORD}")));

    // Answers show it masked.
    let view = app
        .admin(
            Method::GET,
            &format!("/api/environments/{ENV}/stacks/{stack}"),
            None,
        )
        .await;
    assert_eq!(
        view.body["variables"]["TOKEN"], "********",
        "{:?}",
        view.body
    );
    assert_eq!(view.body["variables"]["MODE"], "fast");
    let events = app.events_of(&id).await;
    assert_eq!(events[0]["event"]["data"]["variables"]["TOKEN"], "********");
    let listing = app
        .admin(
            Method::GET,
            &format!("/api/environments/{ENV}/stacks"),
            None,
        )
        .await;
    for answer in [&view.body, &listing.body, &serde_json::Value::Array(events)] {
        assert!(!answer.to_string().contains(PASSWORD));
        assert!(!answer.to_string().contains("sealed:v1:"));
    }

    // The log and the read models hold it sealed, never in clear.
    let log = raw_rows(&app, "SELECT data::text FROM events").await;
    assert!(!log.contains(PASSWORD));
    assert!(log.contains("sealed:v1:"));
    let stacks = raw_rows(&app, "SELECT variables::text FROM stacks").await;
    assert!(!stacks.contains(PASSWORD) && stacks.contains("sealed:v1:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_key_a_password_value_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    app.register_local_environment(ENV).await;
    let stack = unique_name();
    app.catalog.write("app/1.0.0.yml", &manifest(&stack));
    assert_eq!(app.add_catalog_source().await.status, 201);
    let before = raw_rows(&app, "SELECT count(*)::text FROM events").await;
    let r = app
        .admin(
            Method::POST,
            &format!("/api/environments/{ENV}/stacks"),
            Some(json!({ "stackName": stack, "version": "1.0.0", "variables": { "TOKEN": PASSWORD } })),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("TOKEN") && message.contains("SHIPLOG_SECRET_KEY"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD));
    assert_eq!(
        raw_rows(&app, "SELECT count(*)::text FROM events").await,
        before
    );
}

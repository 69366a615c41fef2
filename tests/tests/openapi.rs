//! The OpenAPI description is served, and the API keeps to it: schemathesis (PyPI) sends
//! generated requests to every operation and checks every answer (no 5xx, documented
//! statuses, headers, content types and bodies).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use shiplog_tests::*;

fn schemathesis() -> String {
    let venv = std::env::var("SHIPLOG_TEST_SCHEMATHESIS_VENV")
        .unwrap_or_else(|_| "/opt/shiplog-test/schemathesis".into());
    let bin = format!("{venv}/bin/schemathesis");
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} is missing: run scripts/setup-test-env (scripts/install-schemathesis)"
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_description() {
    // No worker: generated requests must not start real deployments.
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let described = app
        .client
        .get(format!("{}/api/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(described.status(), 200);
    let spec: Value = described.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let page = app
        .client
        .get(format!("{}/api/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/api/openapi.json"));

    // Something to find: an environment, a catalog stack, a key with every permission.
    app.register_local_environment("local").await;
    let stack = unique_name();
    app.catalog.write(
        "v1.yml",
        &web_manifest(&stack, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    let key = app
        .create_key(
            &[
                "Hooks.Redeploy",
                "Hooks.Upgrade",
                "Hooks.SyncSources",
                "Hooks.Rollback",
            ],
            None,
        )
        .await;

    let report = tempdir();
    let mut cmd = tokio::process::Command::new(schemathesis());
    cmd.args([
        "run",
        &format!("{}/api/openapi.json", app.address),
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_headers_conformance,response_schema_conformance,negative_data_rejection,\
         missing_required_header",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "20",
        "--workers",
        "1",
        "--seed",
        "20261122",
        "--request-timeout",
        "15",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        &report,
        "-H",
        &format!("Authorization: Bearer {}", app.admin_token),
        "-H",
        &format!("X-Api-Key: {key}"),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let run = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("schemathesis ends within 10 minutes")
        .expect("schemathesis runs");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "schemathesis found the API and its description apart:\n{out}\n{err}"
    );
    assert!(out.contains("passed"), "{out}");
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("shiplog-schemathesis-{}", unique_name()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}

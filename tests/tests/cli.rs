//! The `shiplog` CLI against a real API and worker: a CI step is one line, its exit code
//! tells the result, the key never shows up in its output.

use std::process::{Command, Output};

use serde_json::{Value, json};
use shiplog_tests::*;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the CLI off the async runtime (it blocks until the deployment ends).
async fn shiplog(app: &TestApp, key: Option<&str>, admin: bool, args: &[&str]) -> Run {
    let mut cmd = Command::new(workspace_binary("shiplog"));
    cmd.args(args)
        .env("SHIPLOG_URL", &app.address)
        .env_remove("SHIPLOG_API_KEY")
        .env_remove("SHIPLOG_ADMIN_TOKEN")
        .env_remove("SHIPLOG_REQUEST_ID");
    if let Some(key) = key {
        cmd.env("SHIPLOG_API_KEY", key);
    }
    if admin {
        cmd.env("SHIPLOG_ADMIN_TOKEN", &app.admin_token);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::task::spawn_blocking(move || cmd.output().expect("the CLI runs"))
        .await
        .unwrap();
    let run = Run {
        code: status.code().expect("exited"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    };
    for secret in key
        .into_iter()
        .chain(admin.then_some(app.admin_token.as_str()))
    {
        assert!(
            !run.stderr.contains(secret) && !run.stdout.contains(secret),
            "a secret in the CLI's output: {}{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_step_is_one_line_and_its_exit_code_is_the_result() {
    let app = spawn_app().await;
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
        "v2.yml",
        &web_manifest(
            &stack,
            "2.0.0",
            &image("web:v2"),
            "    GREETING: { default: hello }",
            "    environment:\n      GREETING: ${GREETING}",
        ),
    );
    app.catalog.write(
        "broken.yml",
        &web_manifest(&broken, "1.0.0", &image("web:v1"), "    {}", ""),
    );
    app.catalog.write(
        "broken2.yml",
        &web_manifest(&broken, "2.0.0", &image("no-such-repo:v1"), "    {}", ""),
    );
    assert_eq!(app.add_catalog_source().await.status, 201);
    for (s, v) in [(&stack, "1.0.0"), (&broken, "1.0.0")] {
        let id = app.install("local", s, v, json!({})).await;
        assert_eq!(app.wait_terminal(&id).await["status"], "success");
    }

    // Keys through the CLI (admin token): created, listed without the secret.
    let created = shiplog(
        &app,
        None,
        true,
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--permission",
            "Hooks.Redeploy",
            "--permission",
            "Hooks.Upgrade",
            "--env",
            "local",
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let key = created.stdout.trim().to_owned();
    assert!(key.starts_with("rsgo_") && key.len() == 37, "{key}");
    let listed = shiplog(&app, None, true, &["keys", "list"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(!listed.stdout.contains(&key));
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert!(listed.as_array().unwrap().iter().any(|k| k["name"] == "ci"));

    // Redeploy and wait: the id on stdout, progress on stderr, 0 on success.
    let run = shiplog(
        &app,
        Some(&key),
        false,
        &[
            "redeploy",
            "--stack",
            &stack,
            "--force",
            "--wait",
            "--timeout",
            "120",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = run.stdout.trim();
    assert_eq!(app.wait_terminal(id).await["status"], "success");
    assert!(run.stderr.contains("in_progress"), "{}", run.stderr);
    assert!(
        run.stderr.contains("ContainerReplaced service=web"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("succeeded"), "{}", run.stderr);

    // Upgrade with a variable: it reaches the container.
    let run = shiplog(
        &app,
        Some(&key),
        false,
        &[
            "upgrade",
            "--stack",
            &stack,
            "--version",
            "2.0.0",
            "--var",
            "GREETING=hi from ci",
            "--wait",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let containers = service_containers(&stack, "web");
    let env = inspect(&containers[0], "{{json .Config.Env}}");
    assert!(env.contains("GREETING=hi from ci"), "{env}");

    // Stop, then restart the containers: the same container, running again.
    let lifecycle_key = app
        .create_key(
            &["Hooks.StopContainers", "Hooks.RestartContainers"],
            Some("local"),
        )
        .await;
    let before = service_containers(&stack, "web");
    for (command, running) in [("stop-containers", "false"), ("restart-containers", "true")] {
        let run = shiplog(
            &app,
            Some(&lifecycle_key),
            false,
            &[command, "--stack", &stack, "--wait"],
        )
        .await;
        assert_eq!(run.code, 0, "{command}: {}", run.stderr);
        assert_eq!(service_containers(&stack, "web"), before);
        assert_eq!(
            inspect(&before[0], "{{.State.Running}}"),
            running,
            "{command}"
        );
    }

    // `status` shows the deployment as JSON.
    let status = shiplog(&app, Some(&key), false, &["status", run.stdout.trim()]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let shown: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(shown["status"], "success");
    assert_eq!(shown["targetVersion"], "2.0.0");

    // A deployment that fails: exit 1, with the cause.
    let run = shiplog(
        &app,
        Some(&key),
        false,
        &[
            "upgrade",
            "--stack",
            &broken,
            "--version",
            "2.0.0",
            "--wait",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("ended failure"), "{}", run.stderr);
    assert!(run.stderr.contains("no-such-repo"), "{}", run.stderr);

    // Refused requests: exit 2 with Shiplog's message.
    let run = shiplog(
        &app,
        Some(&key),
        false,
        &["upgrade", "--stack", &stack, "--version", "9.9.9"],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("9.9.9"), "{}", run.stderr);
    let run = shiplog(
        &app,
        Some("rsgo_notarealkeynotarealkeynotareal12"),
        false,
        &["redeploy", "--stack", &stack],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    let run = shiplog(
        &app,
        Some(&key),
        false,
        &[
            "upgrade",
            "--stack",
            &stack,
            "--version",
            "2.0.0",
            "--var",
            "novalue",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = shiplog(&app, None, false, &["keys", "list"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);

    // Revoked: the key stops working.
    let keys: Value =
        serde_json::from_str(&shiplog(&app, None, true, &["keys", "list"]).await.stdout).unwrap();
    let ci = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap();
    let revoke = shiplog(
        &app,
        None,
        true,
        &[
            "keys",
            "revoke",
            ci["id"].as_str().unwrap(),
            "--reason",
            "rotated",
        ],
    )
    .await;
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    let run = shiplog(&app, Some(&key), false, &["redeploy", "--stack", &stack]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);

    // Nobody there: exit 3.
    let mut cmd = Command::new(workspace_binary("shiplog"));
    cmd.args(["redeploy", "--stack", "x"])
        .env("SHIPLOG_URL", "http://127.0.0.1:9")
        .env("SHIPLOG_API_KEY", &key);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! Every example in the user documentation runs, against a live Shiplog: the ```sh blocks
//! as they are, and the shell steps (`run:`, `script:`, `bash:`) of every ```yaml pipeline
//! (GitHub Actions, GitLab CI, Azure DevOps).
//!
//! The examples may use SHIPLOG_URL, SHIPLOG_API_KEY, SHIPLOG_ADMIN_TOKEN,
//! SHIPLOG_ENVIRONMENT, STACK (installed at 1.0.0; the catalog also has 2.0.0 with a
//! GREETING variable), `shiplog` on PATH, curl and jq.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use serde_yaml_ng::Value as Yaml;
use shiplog_tests::*;

const PAGES: &[&str] = &[
    "docs/ci-cd.md",
    "docs/ci-cd.de.md",
    "docs/operations.md",
    "docs/cli.md",
];

/// Fenced blocks of one language: (line of the fence, body).
fn blocks(markdown: &str, language: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, String, bool)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```") => {
                let wanted = fence.trim_start_matches('`').trim() == language;
                current = Some((n + 1, String::new(), wanted));
            }
            None => {}
            Some((start, body, wanted)) => {
                if fence.starts_with("```") {
                    if *wanted {
                        found.push((*start, std::mem::take(body)));
                    }
                    current = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    found
}

/// The shell steps of a pipeline file, whatever the CI system.
fn steps(yaml: &Yaml, out: &mut Vec<String>) {
    match yaml {
        Yaml::Mapping(map) => {
            for (key, value) in map {
                let is_step = matches!(
                    key.as_str(),
                    Some("run" | "script" | "bash" | "before_script" | "after_script")
                );
                match (is_step, value) {
                    (true, Yaml::String(command)) => out.push(command.clone()),
                    (true, Yaml::Sequence(lines)) if lines.iter().all(Yaml::is_string) => out.push(
                        lines
                            .iter()
                            .map(|l| l.as_str().unwrap())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                    _ => steps(value, out),
                }
            }
        }
        Yaml::Sequence(items) => items.iter().for_each(|item| steps(item, out)),
        _ => {}
    }
}

struct Example {
    place: String,
    script: String,
}

fn examples() -> Vec<Example> {
    let mut all = Vec::new();
    for page in PAGES {
        let text = std::fs::read_to_string(repo_root().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        let shell = blocks(&text, "sh");
        let pipelines = blocks(&text, "yaml");
        assert!(
            !shell.is_empty() || !pipelines.is_empty(),
            "{page} has no example"
        );
        for (line, script) in shell {
            all.push(Example {
                place: format!("{page}:{line}"),
                script,
            });
        }
        for (line, text) in pipelines {
            let yaml: Yaml = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{page}:{line}: not YAML: {e}"));
            let mut commands = Vec::new();
            steps(&yaml, &mut commands);
            assert!(
                !commands.is_empty(),
                "{page}:{line}: a pipeline without shell steps"
            );
            for (i, script) in commands.into_iter().enumerate() {
                all.push(Example {
                    place: format!("{page}:{line} step {}", i + 1),
                    script,
                });
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_example_runs() {
    let examples = examples();
    let app = spawn_app().await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    app.register_local_environment("local").await;
    app.catalog.write(
        "v1.yml",
        &web_manifest(
            &stack,
            "1.0.0",
            &image("web:v1"),
            "    GREETING: { default: hello }",
            "    environment:\n      GREETING: ${GREETING}",
        ),
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
    assert_eq!(app.add_catalog_source().await.status, 201);
    let id = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&id).await["status"], "success");
    let key = app
        .create_key(
            &["Hooks.Redeploy", "Hooks.Upgrade", "Hooks.SyncSources"],
            Some("local"),
        )
        .await;
    let bin_dir = workspace_binary("shiplog")
        .parent()
        .map(Path::to_path_buf)
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut failures = Vec::new();
    for example in &examples {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", &example.script])
            .env_clear()
            .env("PATH", &path)
            .env("HOME", std::env::temp_dir())
            .env("SHIPLOG_URL", &app.address)
            .env("SHIPLOG_API_KEY", &key)
            .env("SHIPLOG_ADMIN_TOKEN", &app.admin_token)
            .env("SHIPLOG_ENVIRONMENT", "local")
            .env("STACK", &stack)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let run = tokio::time::timeout(Duration::from_secs(180), cmd.output()).await;
        match run {
            Ok(Ok(out)) if out.status.success() => {}
            Ok(Ok(out)) => failures.push(format!(
                "{} exited {:?}:\n{}\n--- stdout\n{}--- stderr\n{}",
                example.place,
                out.status.code(),
                example.script,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )),
            Ok(Err(e)) => failures.push(format!("{}: bash did not run: {e}", example.place)),
            Err(_) => failures.push(format!("{}: still running after 180 s", example.place)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} documented examples failed:\n\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n\n")
    );
}

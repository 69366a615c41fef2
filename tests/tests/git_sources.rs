//! Git catalog sources against real repositories made with the git CLI: a bare repository
//! served by `file://` and by plain path, and over HTTP with basic auth.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use shiplog_tests::git::{GitHttpServer, GitRepo};
use shiplog_tests::sshd::TestSshd;
use shiplog_tests::*;

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn add_git(app: &TestApp, body: Value) -> Reply {
    let mut body = body;
    body["type"] = json!("git");
    app.admin(Method::POST, "/api/catalog/sources", Some(body))
        .await
}

async fn catalog_versions(app: &TestApp, stack: &str) -> Vec<String> {
    let r = app.admin(Method::GET, "/api/catalog/stacks", None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == stack)
        .flat_map(|s| s["versions"].as_array().unwrap().clone())
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect()
}

fn manifest(stack: &str, version: &str) -> String {
    web_manifest(stack, version, &image("web:v1"), "", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_sources_follow_commits_force_pushes_tags_and_survive_a_deleted_branch() {
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let stack = unique_name();
    let repo = GitRepo::new();
    let first = repo.commit(
        &[
            (&format!("stacks/{stack}-1.yml"), &manifest(&stack, "1.0.0")),
            ("README.md", "not a stack"),
        ],
        "v1",
    );
    repo.tag("v1.0.0");
    // A folder source beside it: a failing git source must not stop it.
    app.catalog
        .write("other.yml", &manifest(&format!("{stack}-folder"), "1.0.0"));
    assert_eq!(app.add_catalog_source().await.status, 201);

    // Bad ref, bad URL, bad path: 400 with git's reason, nothing written.
    let before = event_count(&app).await;
    let r = add_git(&app, json!({ "url": repo.file_url(), "ref": "nope" })).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("git fetch failed"),
        "{:?}",
        r.body
    );
    assert!(
        r.body["message"].as_str().unwrap().contains("nope"),
        "{:?}",
        r.body
    );
    let r = add_git(
        &app,
        json!({ "url": "file:///nonexistent/repo.git", "ref": "main" }),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = add_git(
        &app,
        json!({ "url": "ext::sh -c touch% /tmp/pwned", "ref": "main" }),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().starts_with("url"),
        "{:?}",
        r.body
    );
    let r = add_git(
        &app,
        json!({ "url": repo.file_url(), "ref": "main", "path": "missing" }),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("path 'missing' does not exist")
    );
    let r = add_git(&app, json!({ "url": repo.file_url() })).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("ref is required")
    );
    assert_eq!(event_count(&app).await, before, "refusals write nothing");

    // Register a branch (file://, folder `stacks`) and a tag (plain path): synced at once.
    let r = add_git(
        &app,
        json!({ "url": repo.file_url(), "ref": "main", "path": "stacks" }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["stacksLoaded"], 1);
    assert_eq!(r.body["source"]["kind"], "git");
    assert_eq!(r.body["source"]["ref"], "main");
    assert_eq!(r.body["source"]["revision"], first.as_str());
    let branch_name = format!("{}#main:stacks", repo.file_url());
    let r = add_git(
        &app,
        json!({ "url": repo.origin().to_str().unwrap(), "ref": "v1.0.0" }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["source"]["revision"],
        first.as_str(),
        "a tag resolves to its commit"
    );
    let again = add_git(
        &app,
        json!({ "url": repo.file_url(), "ref": "main", "path": "stacks" }),
    )
    .await;
    assert_eq!(again.status, 409, "{:?}", again.body);

    let key = app.create_key(&["Hooks.SyncSources"], None).await;
    let sync = || app.hook("/api/hooks/sync-sources", Some(&key), "");

    // Same commit: counted, nothing new recorded.
    let before = event_count(&app).await;
    let r = sync().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["sourcesSynced"], 3);
    assert_eq!(r.body["stacksLoaded"], 3);
    assert_eq!(r.body["message"], "Synced 3 source(s), loaded 3 stack(s).");
    assert_eq!(event_count(&app).await, before);

    // A new commit: a new revision, the new version visible; the tag stays where it was.
    let second = repo.commit(
        &[(&format!("stacks/{stack}-2.yml"), &manifest(&stack, "1.1.0"))],
        "v1.1",
    );
    let r = sync().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["stacksLoaded"], 4);
    assert_eq!(event_count(&app).await, before + 1, "one CatalogSynced");
    assert_eq!(catalog_versions(&app, &stack).await, ["1.0.0", "1.1.0"]);
    let sources = app
        .admin(Method::GET, "/api/catalog/sources", None)
        .await
        .body;
    let revisions: Vec<&str> = sources
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "git")
        .map(|s| s["revision"].as_str().unwrap())
        .collect();
    assert_eq!(revisions, [second.as_str(), first.as_str()]);
    let synced: Value = sqlx::query_scalar(
        "SELECT data FROM events WHERE event_type = 'CatalogSynced' ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(synced["revision"], second.as_str());
    assert_eq!(synced["content_hash"].as_str().unwrap().len(), 64);

    // A force-push back to the first commit is followed; 1.1.0 leaves the catalog.
    repo.force_push_to(&first);
    let r = sync().await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(catalog_versions(&app, &stack).await, ["1.0.0"]);
    let sources = app
        .admin(Method::GET, "/api/catalog/sources", None)
        .await
        .body;
    assert_eq!(sources[1]["revision"], first.as_str());

    // The branch deleted: that source is reported by name, the others still sync, and
    // its last good catalog stays usable.
    repo.delete_branch("main");
    app.catalog
        .write("other2.yml", &manifest(&format!("{stack}-folder"), "2.0.0"));
    let before = event_count(&app).await;
    let r = sync().await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["sourcesSynced"], 2);
    assert_eq!(r.body["stacksLoaded"], 3);
    assert_eq!(
        r.body["errors"].as_array().unwrap().len(),
        1,
        "{:?}",
        r.body
    );
    assert_eq!(r.body["errors"][0]["source"], branch_name.as_str());
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("git fetch failed"),
        "{:?}",
        r.body
    );
    assert_eq!(
        event_count(&app).await,
        before + 1,
        "only the folder's sync"
    );
    assert_eq!(catalog_versions(&app, &stack).await, ["1.0.0"]);
    assert_eq!(
        catalog_versions(&app, &format!("{stack}-folder")).await,
        ["1.0.0", "2.0.0"]
    );
    // Still installable: the request is accepted (no worker runs here).
    app.register_local_environment("local").await;
    app.install("local", &stack, "1.0.0", json!({})).await;

    // A rebuild of the projections from the log gives the same rows.
    let incremental = snapshot_projections(&app.pool).await;
    let mut tx = app.pool.begin().await.unwrap();
    shiplog_events::projection::rebuild(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(snapshot_projections(&app.pool).await, incremental);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_credentials_are_sealed_and_never_shown() {
    let password = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let repo = GitRepo::new();
    let stack = unique_name();
    repo.commit(&[("web.yml", &manifest(&stack, "1.0.0"))], "v1");
    let server = GitHttpServer::start(repo.dir.path(), "ci-bot", &password);
    let url = server.url("origin.git");
    let with_creds = |password: &str| {
        json!({ "url": url, "ref": "main",
                "credentials": { "type": "https", "username": "ci-bot", "password": password } })
    };

    // Without SHIPLOG_SECRET_KEY: refused, nothing written.
    let keyless = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let before = event_count(&keyless).await;
    let r = add_git(&keyless, with_creds(&password)).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("SHIPLOG_SECRET_KEY is not set")
    );
    assert_eq!(event_count(&keyless).await, before);
    // The server really wants credentials.
    let r = add_git(&keyless, json!({ "url": url, "ref": "main" })).await;
    assert_eq!(r.status, 400, "{:?}", r.body);

    let app = spawn_app_with(AppOptions {
        worker: false,
        secret_key: Some("7f".repeat(32)),
        ..Default::default()
    })
    .await;
    let r = add_git(&app, with_creds("wrong-password-123")).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let message = r.body["message"].as_str().unwrap();
    assert!(message.contains("git fetch failed"), "{message}");
    assert!(!message.contains("wrong-password-123"), "{message}");

    let r = add_git(&app, with_creds(&password)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["source"]["credentials"],
        json!({ "type": "https", "username": "ci-bot" })
    );
    assert_eq!(r.body["stacksLoaded"], 1);
    let key = app.create_key(&["Hooks.SyncSources"], None).await;
    repo.commit(&[("web2.yml", &manifest(&stack, "2.0.0"))], "v2");
    let synced = app.hook("/api/hooks/sync-sources", Some(&key), "").await;
    assert_eq!(synced.status, 200, "{:?}", synced.body);
    assert_eq!(synced.body["stacksLoaded"], 2);

    // Nowhere in clear: not in answers, not in the events table, not in any projection.
    let listed = app.admin(Method::GET, "/api/catalog/sources", None).await;
    for body in [&r.body, &listed.body, &synced.body] {
        assert!(!body.to_string().contains(&password), "{body}");
    }
    let log: String =
        sqlx::query_scalar("SELECT string_agg(data::text || metadata::text, ' ') FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!log.contains(&password));
    assert!(
        log.contains("sealed:v1:"),
        "the event holds the sealed password"
    );
    let projections = format!("{:?}", snapshot_projections(&app.pool).await);
    assert!(!projections.contains(&password));
    // The sealed value opens with the configured key, to the password.
    let sealed: String = sqlx::query_scalar(
        "SELECT data->'git'->'credentials'->>'password' FROM events
         WHERE event_type = 'CatalogSourceAdded' AND data->>'kind' = 'git'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let key = shiplog_events::secret::SecretKey::from_config(&"7f".repeat(32)).unwrap();
    assert_eq!(key.open(&sealed).unwrap(), password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_record_the_revision_they_ran_and_at_tells_the_earlier_one() {
    let app = spawn_app().await;
    app.register_local_environment("local").await;
    let stack = unique_name();
    let _guard = StackGuard::new(&stack);
    let repo = GitRepo::new();
    let v1 = |greeting: &str| {
        web_manifest(
            &stack,
            "1.0.0",
            &image("web:v1"),
            &format!("    GREETING: {{ default: {greeting} }}"),
            "    environment:\n      GREETING: ${GREETING}",
        )
    };
    let rev_a = repo.commit(&[("v1.yml", &v1("from-a"))], "a");
    let r = add_git(&app, json!({ "url": repo.file_url(), "ref": "main" })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let source = r.body["source"]["id"].as_str().unwrap().to_owned();

    let first = app.install("local", &stack, "1.0.0", json!({})).await;
    assert_eq!(app.wait_terminal(&first).await["status"], "success");
    let request = &app.events_of(&first).await[0]["event"]["data"];
    assert_eq!(request["catalog_revision"], rev_a.as_str());
    assert_eq!(request["catalog_source"], source.as_str());
    let path = format!("/api/environments/local/stacks/{stack}");
    let shown = app.admin(Method::GET, &path, None).await.body;
    assert_eq!(shown["catalogRevision"], rev_a.as_str());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The repository moves on: 1.0.0's text changes and 2.0.0 appears.
    let v2 = web_manifest(&stack, "2.0.0", &image("web:v2"), "", "");
    let rev_b = repo.commit(&[("v1.yml", &v1("from-b")), ("v2.yml", &v2)], "b");
    let key = app
        .create_key(&["Hooks.SyncSources", "Hooks.Upgrade"], Some("local"))
        .await;
    let r = app.hook("/api/hooks/sync-sources", Some(&key), "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The first deployment's manifest is still the one of revision A, read from the log.
    let mut conn = app.pool.acquire().await.unwrap();
    let req: shiplog_events::event::DeploymentRequest =
        serde_json::from_value(request.clone()).unwrap();
    let then = shiplog_events::commands::deployments::request_manifest(&mut conn, &req)
        .await
        .unwrap()
        .unwrap();
    assert!(then.source_text.contains("from-a"), "{}", then.source_text);
    let mut now_req = req.clone();
    now_req.catalog_revision = Some(rev_b.clone());
    let now = shiplog_events::commands::deployments::request_manifest(&mut conn, &now_req)
        .await
        .unwrap()
        .unwrap();
    assert!(now.source_text.contains("from-b"));
    drop(conn);

    let r = app
        .hook(
            "/api/hooks/upgrade",
            Some(&key),
            &json!({ "stackName": stack, "targetVersion": "2.0.0" }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let second = r.body["deploymentId"].as_str().unwrap().to_owned();
    let done = app.wait_terminal(&second).await;
    assert_eq!(done["status"], "success", "{done:?}");
    assert_eq!(done["catalogRevision"], rev_b.as_str());
    let upgrade = &app.events_of(&second).await[0]["event"]["data"];
    assert_eq!(upgrade["catalog_revision"], rev_b.as_str());

    let now = app.admin(Method::GET, &path, None).await.body;
    assert_eq!(now["version"], "2.0.0");
    assert_eq!(now["catalogRevision"], rev_b.as_str());
    let at = format!(
        "{path}?at={}",
        between
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .replace('+', "%2B")
    );
    let earlier = app.admin(Method::GET, &at, None).await;
    assert_eq!(earlier.status, 200, "{:?}", earlier.body);
    assert_eq!(earlier.body["version"], "1.0.0");
    assert_eq!(earlier.body["catalogRevision"], rev_a.as_str());
    assert_eq!(earlier.body["catalogSource"], source.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_credentials_fetch_over_a_real_sshd_and_are_never_shown() {
    let repo = GitRepo::new();
    let stack = unique_name();
    repo.commit(&[("web.yml", &manifest(&stack, "1.0.0"))], "v1");
    let sshd = TestSshd::start().await;
    let known_hosts = sshd.known_hosts_line();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port,
        repo.origin().display()
    );
    let key_of = |name: &str| std::fs::read_to_string(sshd.path(name)).unwrap();
    let with_key = |key: String| {
        json!({ "url": url, "ref": "main",
                "credentials": { "type": "ssh", "privateKey": key, "knownHosts": known_hosts } })
    };
    let app = spawn_app_with(AppOptions {
        worker: false,
        secret_key: Some("3c".repeat(32)),
        ..Default::default()
    })
    .await;

    // A key sshd does not know: refused with git's reason, nothing written.
    let before = event_count(&app).await;
    let r = add_git(&app, with_key(key_of("wrong_id"))).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let message = r.body["message"].as_str().unwrap();
    assert!(message.contains("git fetch failed"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    assert_eq!(event_count(&app).await, before);

    let private_key = key_of("id");
    let r = add_git(&app, with_key(private_key.clone())).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["stacksLoaded"], 1);
    assert_eq!(r.body["source"]["revision"], repo.head());
    assert_eq!(r.body["source"]["credentials"]["type"], "ssh");
    let secret_line = private_key.lines().nth(1).unwrap().to_owned();
    let listed = app.admin(Method::GET, "/api/catalog/sources", None).await;
    for answer in [&r.body, &listed.body] {
        assert!(!answer.to_string().contains(&secret_line));
    }
    let log: Vec<String> = sqlx::query_scalar("SELECT data::text FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(log.iter().all(|e| !e.contains(&secret_line)));

    // A new commit arrives through the same sealed key.
    repo.commit(&[("web2.yml", &manifest(&stack, "2.0.0"))], "v2");
    let key = app.create_key(&["Hooks.SyncSources"], None).await;
    let r = app.hook("/api/hooks/sync-sources", Some(&key), "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(catalog_versions(&app, &stack).await, ["1.0.0", "2.0.0"]);
}

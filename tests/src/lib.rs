//! Helpers for end-to-end tests: a fresh database per test, the API on port 0, a worker in
//! the same process (or as separate processes), catalog folders, Docker clean-up.
//! Real PostgreSQL, real Docker engine, real local registry: see `scripts/setup-test-env`.

pub mod git;
pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use shiplog_api::config::Config;
use shiplog_api::startup::Application;
use shiplog_events::listen::OptionalAddress;
use shiplog_worker::config::WorkerConfig;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

pub fn admin_database_url() -> String {
    std::env::var("SHIPLOG_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://shiplog:shiplog@127.0.0.1:5432/shiplog".into())
}

pub fn registry() -> String {
    std::env::var("SHIPLOG_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

pub fn docker_endpoint() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => "unix:///var/run/docker.sock".into(),
    }
}

/// `t` + 8 hex characters: a name for a stack, image or database no other test uses.
pub fn unique_name() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// A database of its own, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin = admin_database_url();
        let name = format!("shiplog_{}", Uuid::new_v4().simple());
        let pool = PgPool::connect(&admin)
            .await
            .expect("test PostgreSQL reachable (scripts/setup-test-env)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
        TestDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime we may use: a thread of its own does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let pool = PgPool::connect(&admin_database_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&pool)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// A catalog folder in the system temp dir, removed at the end.
pub struct CatalogDir {
    pub path: PathBuf,
}

impl CatalogDir {
    pub fn new() -> CatalogDir {
        let path =
            std::env::temp_dir().join(format!("shiplog-catalog-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        CatalogDir { path }
    }

    pub fn write(&self, file: &str, content: &str) {
        let path = self.path.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

impl Default for CatalogDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for CatalogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes every container, the network and the volumes of a stack when the test ends,
/// whatever the test did.
pub struct StackGuard {
    pub stack: String,
}

impl StackGuard {
    pub fn new(stack: &str) -> StackGuard {
        StackGuard {
            stack: stack.to_owned(),
        }
    }
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        let filter = format!("label=com.docker.compose.project={}", self.stack);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}_default", self.stack)])
            .output();
        if let Ok(out) = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &filter])
            .output()
        {
            for n in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["network", "rm", n]).output();
            }
        }
        if let Ok(out) = Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &filter])
            .output()
        {
            for v in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["volume", "rm", v]).output();
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// The API's metrics listener.
    pub metrics_address: String,
    pub admin_token: String,
    /// A direct pool to the test database (not through the proxy).
    pub pool: PgPool,
    /// What the API and in-process workers connect to.
    pub app_database_url: String,
    pub proxy: Option<PgProxy>,
    pub db: TestDb,
    pub catalog: CatalogDir,
    pub client: reqwest::Client,
    /// The API's `SHIPLOG_SECRET_KEY`, also given to the in-process workers.
    pub secret_key: Option<String>,
    worker_stops: Vec<watch::Sender<bool>>,
}

pub struct AppOptions {
    /// Run a worker inside the test process.
    pub worker: bool,
    /// Connect the API and in-process workers through a `PgProxy` the test can cut.
    pub proxy: bool,
    /// The API's wait for a database connection before it answers 503.
    pub acquire_timeout_ms: u64,
    /// `SHIPLOG_SECRET_KEY` of the API; `None`: unset.
    pub secret_key: Option<String>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            worker: true,
            proxy: false,
            acquire_timeout_ms: 10_000,
            secret_key: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub fn worker_config(database_url: &str) -> WorkerConfig {
    WorkerConfig {
        database_url: database_url.to_owned(),
        environments: vec![],
        concurrency: 4,
        max_deployments: 8,
        docker_timeout_secs: 60,
        pull_timeout_secs: 60,
        deployment_timeout_secs: 300,
        lease_ttl_secs: 6,
        heartbeat_ms: 1000,
        transient_attempts: 3,
        retry_backoff_ms: 200,
        probe_interval_ms: 1000,
        probe_timeout_ms: 3000,
        db_max_connections: 10,
        db_acquire_timeout_ms: 10_000,
        // Off: many workers share one test process; a test that reads them sets an address.
        metrics_listen: OptionalAddress(None),
        secret_key: None,
        log_json: false,
    }
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    init_test_logging();
    let db = TestDb::create().await;
    let catalog = CatalogDir::new();
    let admin_token = format!("admin-{}", Uuid::new_v4().simple());
    let proxy = if options.proxy {
        let (_, rest) = db.url.split_once('@').unwrap();
        let (upstream, _) = rest.split_once('/').unwrap();
        Some(PgProxy::start(upstream).await)
    } else {
        None
    };
    let app_database_url = proxy.as_ref().map_or(db.url.clone(), |p| p.url(&db.url));
    let config = Config {
        database_url: app_database_url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(admin_token.clone()),
        catalog_dir: None,
        db_max_connections: 20,
        // Generous on a loaded CI machine; the outage test sets the production default.
        db_acquire_timeout_ms: options.acquire_timeout_ms,
        metrics_listen: OptionalAddress(Some("127.0.0.1:0".parse().unwrap())),
        secret_key: options.secret_key.clone(),
        git_cache_dir: Some(catalog.path.join(".git-cache")),
        git_timeout_secs: 30,
        log_json: false,
    };
    let app = Application::build(&config)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = format!(
        "http://127.0.0.1:{}",
        app.metrics_port().expect("metrics listener on")
    );
    tokio::spawn(app.run_until_stopped());
    // The test's own view of the database never goes through the proxy.
    let pool = PgPool::connect(&db.url).await.unwrap();
    let mut app = TestApp {
        address,
        metrics_address,
        admin_token,
        pool,
        app_database_url,
        proxy,
        db,
        catalog,
        secret_key: options.secret_key.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
        worker_stops: Vec::new(),
    };
    if options.worker {
        app.start_worker();
    }
    app
}

impl TestApp {
    /// Starts a worker inside the test process; it stops when the app is dropped.
    pub fn start_worker(&mut self) {
        self.start_worker_with(|_| {});
    }

    /// Starts a worker with its configuration adjusted by `adjust`.
    pub fn start_worker_with(&mut self, adjust: impl FnOnce(&mut WorkerConfig)) {
        let (stop, shutdown) = watch::channel(false);
        let mut cfg = worker_config(&self.app_database_url);
        // The API's key: workers open what it sealed.
        cfg.secret_key = self
            .secret_key
            .as_deref()
            .map(|k| shiplog_events::secret::SecretKey::from_config(k).unwrap());
        adjust(&mut cfg);
        tokio::spawn(async move {
            if let Err(e) = shiplog_worker::runner::run(cfg, shutdown).await {
                eprintln!("test worker stopped: {e}");
            }
        });
        self.worker_stops.push(stop);
    }

    /// Stops the in-process workers (running deployments finish first).
    pub fn stop_workers(&mut self) {
        for stop in self.worker_stops.drain(..) {
            let _ = stop.send(true);
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

fn init_test_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    shiplog_api::telemetry::init_with_filter(&filter, false);
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        reply(req.send().await.expect("request sent")).await
    }

    pub async fn hook(&self, path: &str, key: Option<&str>, body: &str) -> Reply {
        self.hook_with(path, key, body, &[]).await
    }

    pub async fn hook_with(
        &self,
        path: &str,
        key: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            req = req.header("X-Api-Key", key);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        reply(req.send().await.expect("request sent")).await
    }

    pub async fn get_with_key(&self, path: &str, key: &str) -> Reply {
        let req = self
            .client
            .get(format!("{}{path}", self.address))
            .header("X-Api-Key", key);
        reply(req.send().await.expect("request sent")).await
    }

    pub async fn register_local_environment(&self, id: &str) {
        let r = self
            .admin(
                reqwest::Method::POST,
                "/api/environments",
                Some(json!({ "id": id, "name": id, "dockerEndpoint": docker_endpoint() })),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }

    /// Registers the catalog folder as a source (once) and returns the response.
    pub async fn add_catalog_source(&self) -> Reply {
        self.admin(
            reqwest::Method::POST,
            "/api/catalog/sources",
            Some(json!({ "type": "directory", "path": self.catalog.path.to_str().unwrap() })),
        )
        .await
    }

    pub async fn create_key(&self, permissions: &[&str], environment: Option<&str>) -> String {
        let r = self
            .admin(
                reqwest::Method::POST,
                "/api/keys",
                Some(json!({ "name": "ci", "permissions": permissions, "environmentId": environment })),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["key"].as_str().unwrap().to_owned()
    }

    pub async fn install(&self, env: &str, stack: &str, version: &str, variables: Value) -> String {
        let r = self
            .admin(
                reqwest::Method::POST,
                &format!("/api/environments/{env}/stacks"),
                Some(json!({ "stackName": stack, "version": version, "variables": variables })),
            )
            .await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        r.body["deploymentId"].as_str().unwrap().to_owned()
    }

    /// Polls the deployment until it ends (bounded: 120 s) and returns it.
    pub async fn wait_terminal(&self, deployment: &str) -> Value {
        for _ in 0..1200 {
            let r = self
                .admin(
                    reqwest::Method::GET,
                    &format!("/api/deployments/{deployment}"),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            let status = r.body["status"].as_str().unwrap().to_owned();
            if ["success", "failure", "error", "inactive"].contains(&status.as_str()) {
                return r.body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("deployment {deployment} did not end within 120 s");
    }

    pub async fn events_of(&self, deployment: &str) -> Vec<Value> {
        let r = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/deployments/{deployment}/events"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body.as_array().unwrap().clone()
    }
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        body,
        headers,
    }
}

/// Pushes `source` (an image in the local registry) under a new repository of the test's
/// own, so moving its tag cannot disturb other tests. Returns the reference.
pub fn push_as(source: &str, repository: &str, tag: &str) -> String {
    let target = format!("{}/shiplog-test/{repository}:{tag}", registry());
    docker(&["pull", "-q", source]);
    docker(&["tag", source, &target]);
    docker(&["push", &target]);
    docker(&["rmi", &target]);
    target
}

/// The standard test images (see scripts/test-images).
pub fn image(name_and_tag: &str) -> String {
    format!("{}/shiplog-test/{name_and_tag}", registry())
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Running containers of a stack's service: (id, image id).
pub fn service_containers(stack: &str, service: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={stack}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    out.split_whitespace().map(str::to_owned).collect()
}

pub fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container])
}

/// GET over loopback on the container's published port 8080.
pub async fn http_get_container(container: &str) -> String {
    let port = inspect(
        container,
        "{{(index (index .NetworkSettings.Ports \"8080/tcp\") 0).HostPort}}",
    );
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/")).await
            && let Ok(text) = r.text().await
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("container {container} does not answer on port {port}");
}

pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A catalog manifest for the single-service test stack `web` on container port 8080.
/// `extra` is appended under the service (indented four spaces), `variables` under
/// `x-shiplog.variables` (indented four spaces).
pub fn web_manifest(
    stack: &str,
    version: &str,
    image: &str,
    variables: &str,
    extra: &str,
) -> String {
    format!(
        "name: {stack}\nx-shiplog:\n  version: {version}\n  variables:\n{variables}\nservices:\n  web:\n    image: {image}\n    ports:\n      - \"127.0.0.1::8080\"\n{extra}\n"
    )
}

/// Path of a binary of this workspace, next to the test executable's `deps/` folder.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// Each projection table as one JSON value, rows in a stable order.
pub async fn snapshot_projections(pool: &PgPool) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for table in shiplog_events::projection::TABLES {
        let sql =
            format!("SELECT coalesce(json_agg(t ORDER BY t::text), '[]'::json) FROM {table} t");
        let value: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap();
        out.push((table.to_string(), value));
    }
    out
}

/// A TCP proxy in front of PostgreSQL that the test can cut: every connection through it
/// is dropped and new ones are closed at once, as when the database goes down.
pub struct PgProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    pub async fn start(upstream: &str) -> PgProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let upstream = upstream.to_owned();
        let flag = up.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cuts = cuts.clone();
                // Only cuts after this connection was accepted end it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        PgProxy {
            port,
            up,
            cut,
            accept,
        }
    }

    /// The database URL through this proxy.
    pub fn url(&self, database_url: &str) -> String {
        let (scheme_user, rest) = database_url.split_once('@').unwrap();
        let (_, path) = rest.split_once('/').unwrap();
        format!("{scheme_user}@127.0.0.1:{}/{path}", self.port)
    }

    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

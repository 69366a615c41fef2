//! Many Docker hosts, for real on loopback: the local engine behind a TLS-terminating proxy
//! (stunnel4, client certificates required) and behind a local sshd, each with credentials
//! the test creates; wrong credentials give a clear error; unreachable environments show up
//! in `GET /api/environments` with their last error.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use shiplog_tests::sshd::TestSshd;
use shiplog_tests::*;

/// A process the test started, with its own process group (socat and sshd fork one child
/// per connection): the whole group is killed when the guard drops.
struct Proc(Child);

impl Proc {
    fn spawn(command: &mut Command) -> Proc {
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} starts (scripts/setup-test-env): {e}"));
        Proc(child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).output();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A folder of the test's own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("shiplog-endpoints-{}", unique_name()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

fn docker_socket() -> String {
    let endpoint = docker_endpoint();
    endpoint
        .strip_prefix("unix://")
        .expect("these tests put a proxy in front of the local socket")
        .to_owned()
}

/// A CA (`ca.pem`) and a certificate signed by it, `<name>.pem` + `<name>-key.pem`.
fn ca(dir: &Path) {
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &d("ca-key.pem"),
            "-out",
            &d("ca.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=shiplog-test-ca",
        ],
    );
}

fn signed(dir: &Path, name: &str, ext: &str) {
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    std::fs::write(d(&format!("{name}.ext")), ext).unwrap();
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &d(&format!("{name}-key.pem")),
            "-out",
            &d(&format!("{name}.csr")),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &d(&format!("{name}.csr")),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca-key.pem"),
            "-CAcreateserial",
            "-out",
            &d(&format!("{name}.pem")),
            "-days",
            "1",
            "-extfile",
            &d(&format!("{name}.ext")),
        ],
    );
}

/// Docker's cert directory layout for a client: ca.pem, cert.pem, key.pem.
fn client_dir(dir: &Path, ca_dir: &Path, signer: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(ca_dir.join("ca.pem"), dir.join("ca.pem")).unwrap();
    std::fs::copy(signer.join("client.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(signer.join("client-key.pem"), dir.join("key.pem")).unwrap();
    dir.to_str().unwrap().to_owned()
}

async fn register(app: &TestApp, body: Value) {
    let r = app
        .admin(Method::POST, "/api/environments", Some(body))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// The listing's entry of `env` once a probe (or a deployment) has recorded a status.
async fn status_of(app: &TestApp, env: &str, reachable: bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        let r = app.admin(Method::GET, "/api/environments", None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        last = r
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == env)
            .cloned()
            .unwrap();
        if last["status"]["reachable"] == json!(reachable) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{env} never showed reachable={reachable}: {last:#}");
}

/// Installs then redeploys (hook, forced) the web stack in `env`; both must succeed on the
/// engine behind the endpoint.
async fn install_and_redeploy(app: &TestApp, env: &str, stack: &str) {
    let installed = app.install(env, stack, "1.0.0", json!({})).await;
    let done = app.wait_terminal(&installed).await;
    assert_eq!(done["status"], "success", "{done:#}");
    let first = service_containers(stack, "web");
    assert_eq!(first.len(), 1, "{first:?}");
    let key = app.create_key(&["Hooks.Redeploy"], Some(env)).await;
    let r = app
        .hook(
            "/api/hooks/redeploy",
            Some(&key),
            &json!({ "stackName": stack, "force": true }).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let redeployed = app
        .wait_terminal(r.body["deploymentId"].as_str().unwrap())
        .await;
    assert_eq!(redeployed["status"], "success", "{redeployed:#}");
    let second = service_containers(stack, "web");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(first, second, "a forced redeploy replaces the container");
}

/// Installs in `env` and expects the deployment to end `error`; returns its message.
async fn install_fails(app: &TestApp, env: &str, stack: &str) -> String {
    let id = app.install(env, stack, "1.0.0", json!({})).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "error", "{done:#}");
    done["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_endpoint_with_client_certificates_deploys_and_a_foreign_certificate_is_refused() {
    let app = spawn_app().await;
    let tmp = TempDir::new();
    let (good, other) = (tmp.0.join("ca"), tmp.0.join("other-ca"));
    for dir in [&good, &other] {
        std::fs::create_dir_all(dir).unwrap();
        ca(dir);
        signed(dir, "client", "extendedKeyUsage=clientAuth\n");
    }
    signed(
        &good,
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    let port = free_port();
    let d = |f: &str| good.join(f).to_str().unwrap().to_owned();
    // stunnel, not socat: socat sets no session id context, so OpenSSL refuses the session
    // resumption that rustls attempts on the second connection.
    std::fs::write(
        tmp.path("stunnel.conf"),
        format!(
            "foreground = yes\npid =\n[docker]\naccept = 127.0.0.1:{port}\nconnect = {}\n\
             cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
            docker_socket(),
            d("server.pem"),
            d("server-key.pem"),
            d("ca.pem")
        ),
    )
    .unwrap();
    let _proxy = Proc::spawn(
        Command::new("stunnel4")
            .arg(tmp.path("stunnel.conf"))
            .stderr(Stdio::null()),
    );
    wait_listening(port).await;
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let certs = client_dir(&tmp.0.join("client"), &good, &good);
    // Trusts the engine's CA, but its own certificate is signed by another CA.
    let foreign = client_dir(&tmp.0.join("foreign"), &good, &other);
    register(
        &app,
        json!({ "id": "tls", "name": "TLS", "dockerEndpoint": endpoint,
        "tls": { "certPath": certs } }),
    )
    .await;
    register(
        &app,
        json!({ "id": "foreign", "name": "Foreign cert", "dockerEndpoint": endpoint,
        "tls": { "caFile": format!("{foreign}/ca.pem"), "certFile": format!("{foreign}/cert.pem"),
                 "keyFile": format!("{foreign}/key.pem") } }),
    )
    .await;
    let (stack, refused) = (unique_name(), unique_name());
    let _guards = (StackGuard::new(&stack), StackGuard::new(&refused));
    for s in [&stack, &refused] {
        app.catalog.write(
            &format!("{s}.yml"),
            &web_manifest(s, "1.0.0", &image("web:v1"), "    {}", ""),
        );
    }
    assert_eq!(app.add_catalog_source().await.status, 201);

    install_and_redeploy(&app, "tls", &stack).await;
    let message = install_fails(&app, "foreign", &refused).await;
    assert!(
        message.contains("TLS") && message.contains("certificate"),
        "the message says TLS/certificate: {message}"
    );
    assert!(service_containers(&refused, "web").is_empty());

    let listed = status_of(&app, "foreign", false).await;
    let error = listed["status"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("TLS") && error.contains(&endpoint),
        "{listed:#}"
    );
    assert!(listed["status"]["lastErrorAt"].is_string(), "{listed:#}");
    let healthy = status_of(&app, "tls", true).await;
    assert_eq!(healthy["tls"]["keyFile"], format!("{certs}/key.pem"));
    assert!(
        !healthy.to_string().contains("PRIVATE KEY"),
        "paths only, never key material: {healthy:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_endpoint_deploys_and_a_wrong_key_or_unknown_host_key_is_refused() {
    let app = spawn_app().await;
    let sshd = TestSshd::start().await;
    let endpoint = format!("ssh://{}@127.0.0.1:{}", sshd.user(), sshd.port);
    let ssh = |identity: &str, known_hosts: &str| json!({ "identityFile": sshd.path(identity), "knownHostsFile": sshd.path(known_hosts) });
    for (id, settings) in [
        ("ssh", ssh("id", "known_hosts")),
        ("wrongkey", ssh("wrong_id", "known_hosts")),
        ("unknownhost", ssh("id", "empty_known_hosts")),
    ] {
        register(
            &app,
            json!({ "id": id, "name": id, "dockerEndpoint": endpoint, "ssh": settings }),
        )
        .await;
    }
    let (stack, refused) = (unique_name(), unique_name());
    let _guards = (StackGuard::new(&stack), StackGuard::new(&refused));
    for s in [&stack, &refused] {
        app.catalog.write(
            &format!("{s}.yml"),
            &web_manifest(s, "1.0.0", &image("web:v1"), "    {}", ""),
        );
    }
    assert_eq!(app.add_catalog_source().await.status, 201);

    install_and_redeploy(&app, "ssh", &stack).await;
    let message = install_fails(&app, "wrongkey", &refused).await;
    assert!(
        message.contains("SSH") && message.contains("Permission denied"),
        "ssh's own reason: {message}"
    );
    assert!(service_containers(&refused, "web").is_empty());

    let listed = status_of(&app, "unknownhost", false).await;
    let error = listed["status"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("Host key verification failed") && error.contains(&endpoint),
        "host keys are checked strictly: {listed:#}"
    );
    let listed = status_of(&app, "wrongkey", false).await;
    assert!(
        listed["status"]["lastError"]
            .as_str()
            .unwrap()
            .contains("Permission denied")
    );
    status_of(&app, "ssh", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_environments_show_up_with_their_last_error() {
    let app = spawn_app().await;
    app.register_local_environment("local").await;
    let dead = format!("tcp://127.0.0.1:{}", free_port());
    register(
        &app,
        json!({ "id": "dead", "name": "Dead", "dockerEndpoint": dead }),
    )
    .await;
    register(
        &app,
        json!({ "id": "nocerts", "name": "No certs", "dockerEndpoint": dead,
        "tls": { "certPath": "/nonexistent/shiplog-certs" } }),
    )
    .await;

    let listed = status_of(&app, "dead", false).await;
    let error = listed["status"]["lastError"].as_str().unwrap();
    assert!(
        error.contains(&dead),
        "the error names the endpoint: {listed:#}"
    );
    assert!(listed["status"]["checkedAt"].is_string(), "{listed:#}");
    let listed = status_of(&app, "nocerts", false).await;
    let error = listed["status"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("/nonexistent/shiplog-certs/ca.pem"),
        "the unreadable file is named: {listed:#}"
    );
    let local = status_of(&app, "local", true).await;
    assert!(local["status"]["lastError"].is_null(), "{local:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoint_settings_are_refused_by_field_and_write_nothing() {
    let app = spawn_app_with(AppOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    for (body, field) in [
        (
            json!({ "dockerEndpoint": "tcp://h:2376", "tls": { "certPath": "certs" } }),
            "tls.certPath",
        ),
        (
            json!({ "dockerEndpoint": "unix:///var/run/docker.sock", "tls": { "certPath": "/c" } }),
            "tls",
        ),
        (
            json!({ "dockerEndpoint": "tcp://h:2376", "tls": { "caFile": "/c/ca.pem", "certFile": "/c/cert.pem" } }),
            "tls.keyFile",
        ),
        (
            json!({ "dockerEndpoint": "tcp://h:2376", "tls": { "certPath": "/c", "key": "-----BEGIN" } }),
            "key",
        ),
        (
            json!({ "dockerEndpoint": "ssh://-oProxyCommand=x" }),
            "dockerEndpoint",
        ),
        (
            json!({ "dockerEndpoint": "ssh://u@h", "ssh": { "identityFile": "id_ed25519" } }),
            "ssh.identityFile",
        ),
        (
            json!({ "dockerEndpoint": "tcp://h:2375", "ssh": { "identityFile": "/k" } }),
            "ssh",
        ),
    ] {
        let mut body = body;
        body["id"] = json!("bad");
        body["name"] = json!("Bad");
        let r = app
            .admin(Method::POST, "/api/environments", Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        let message = r.body["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let listed = app.admin(Method::GET, "/api/environments", None).await;
    assert_eq!(listed.body, json!([]), "nothing written");
}

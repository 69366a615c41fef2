//! The Docker driver against the real engine and the local test registry
//! (`scripts/setup-test-env`: registry on 127.0.0.1:5000 with the shiplog-test images).
//!
//! Every test converges its own stack (`t` + 8 hex characters) and removes it at the end,
//! whatever happens (see [`StackGuard`]), so tests run in parallel.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use shiplog_events::spec::{PortSpec, ServiceSpec, StackSpec};
use shiplog_worker::docker::{
    ContainerInfo, ConvergeContext, ConvergeFailure, ConvergeObserver, ConvergeReport,
    DockerClient, DockerError, NoopObserver, PulledImage, ServiceAction, container_name, labels,
    network_name, old_container_name,
};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const PULL_DEADLINE: Duration = Duration::from_secs(60);

fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())
}

fn image(name: &str) -> String {
    let registry =
        std::env::var("SHIPLOG_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned());
    format!("{registry}/shiplog-test/{name}")
}

async fn client() -> DockerClient {
    DockerClient::connect(&endpoint(), CALL_TIMEOUT)
        .await
        .expect("the Docker engine answers (run scripts/setup-test-env)")
}

/// A fresh stack name, removed with everything it owns when the guard drops.
struct StackGuard {
    name: String,
}

impl StackGuard {
    fn new() -> Self {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        StackGuard {
            name: format!("t{}", &hex[..8]),
        }
    }
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        let stack = self.name.clone();
        // Drop cannot await: clean up on a thread with its own runtime, and wait for it.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = DockerClient::connect(&endpoint(), CALL_TIMEOUT).await?;
                client.remove_stack(&stack, true).await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("cleaning up stack {} failed: {done:?}", self.name);
        }
    }
}

fn service(name: &str, image_name: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        image: image(image_name),
        environment: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        command: None,
        entrypoint: None,
        ports: vec![PortSpec {
            host_ip: Some("127.0.0.1".to_owned()),
            host_port: None,
            container_port: 8080,
            protocol: "tcp".to_owned(),
        }],
        volumes: vec![],
        labels: BTreeMap::from([("org.example.team".to_owned(), "qa".to_owned())]),
        // The images' own health checks (1 s interval) apply.
        healthcheck: None,
        restart: None,
        depends_on: vec![],
        limits: Default::default(),
        options: Default::default(),
        networks: Vec::new(),
    }
}

fn stack(name: &str, version: &str, services: Vec<ServiceSpec>) -> StackSpec {
    StackSpec {
        name: name.to_owned(),
        version: version.to_owned(),
        services,
        networks: Vec::new(),
    }
}

fn ctx(force: bool) -> ConvergeContext {
    ConvergeContext {
        environment: "test".to_owned(),
        deployment_id: uuid::Uuid::new_v4().to_string(),
        force,
        health_timeout: None,
        deadline: None,
    }
}

async fn pull_all(client: &DockerClient, spec: &StackSpec) -> BTreeMap<String, PulledImage> {
    let mut images = BTreeMap::new();
    for service in &spec.services {
        let pulled = client
            .pull(&service.image, PULL_DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("pull {}: {e} (run scripts/setup-test-env)", service.image));
        images.insert(service.name.clone(), pulled);
    }
    images
}

/// Records what the converge reports; can refuse changes like a lost lease.
#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    deny_changes: bool,
    deny_replaced: bool,
    changes_asked: usize,
}

impl ConvergeObserver for Recorder {
    async fn before_change(&mut self) -> Result<(), String> {
        self.changes_asked += 1;
        if self.deny_changes {
            Err("lease held by another worker".to_owned())
        } else {
            Ok(())
        }
    }

    async fn service_unchanged(&mut self, service: &str, container_id: &str) -> Result<(), String> {
        self.events
            .push(format!("unchanged {service} {container_id}"));
        Ok(())
    }

    async fn container_replaced(
        &mut self,
        service: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<(), String> {
        self.events
            .push(format!("replaced {service} {} {new}", old.unwrap_or("-")));
        if self.deny_replaced {
            Err("lease expired while recording".to_owned())
        } else {
            Ok(())
        }
    }
}

async fn converge(
    client: &DockerClient,
    ctx: &ConvergeContext,
    spec: &StackSpec,
    observer: &mut impl ConvergeObserver,
) -> Result<ConvergeReport, ConvergeFailure> {
    let images = pull_all(client, spec).await;
    client.converge(ctx, spec, &images, observer).await
}

fn primary<'a>(containers: &'a [ContainerInfo], stack: &str, service: &str) -> &'a ContainerInfo {
    let name = container_name(stack, service);
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {containers:#?}"))
}

/// A tiny HTTP/1.0 GET of `/` on 127.0.0.1:`port`; returns the body.
async fn http_get(port: u16) -> String {
    tokio::task::spawn_blocking(move || {
        let mut last_error = None;
        // docker-proxy may need a moment after the container is healthy.
        for _ in 0..20 {
            let attempt = (|| -> std::io::Result<String> {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                Ok(response)
            })();
            match attempt {
                Ok(response) if response.starts_with("HTTP/1.") => {
                    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                    return body.trim().to_owned();
                }
                Ok(other) => last_error = Some(format!("unexpected answer {other:?}")),
                Err(err) => last_error = Some(err.to_string()),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("GET http://127.0.0.1:{port}/ failed: {last_error:?}");
    })
    .await
    .expect("http thread")
}

/// The body served by the stack's `web` service on its published port.
async fn serves(client: &DockerClient, stack: &str, service: &str) -> String {
    let containers = client.stack_containers(stack).await.unwrap();
    let web = primary(&containers, stack, service);
    let (_, host_ip, host_port) = web
        .ports
        .iter()
        .find(|(container_port, _, _)| *container_port == 8080)
        .unwrap_or_else(|| panic!("8080 is not published: {web:#?}"))
        .clone();
    assert_eq!(host_ip, "127.0.0.1");
    http_get(host_port).await
}

fn docker_cli(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_then_unchanged_then_force_replaces() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    client.ping().await.unwrap();
    let spec = stack(&name, "1.0.0", vec![service("web", "web:v1")]);
    let images = pull_all(&client, &spec).await;
    let v1 = images["web"].clone();
    assert!(v1.id.starts_with("sha256:"), "{v1:?}");
    assert!(
        v1.repo_digests
            .iter()
            .any(|d| d.starts_with(&format!("{}@sha256:", image("web")))),
        "{v1:?}"
    );

    // First converge: created, labelled, on the stack network, serving v1.
    let first_ctx = ctx(false);
    let mut recorder = Recorder::default();
    let future = client.converge(&first_ctx, &spec, &images, &mut recorder);
    assert_send(&future);
    let report = future.await.unwrap();
    assert_eq!(report.services.len(), 1);
    let created = &report.services[0];
    assert!(
        matches!(&created.action, ServiceAction::Created { new } if *new == created.container_id),
        "{report:?}"
    );
    assert_eq!(created.image_id, v1.id);
    assert_eq!(
        recorder.events,
        vec![format!("replaced web - {}", created.container_id)]
    );

    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    let web = primary(&containers, &name, "web");
    assert_eq!(web.id, created.container_id);
    assert_eq!(web.state, "running");
    assert_eq!(web.health.as_deref(), Some("healthy"));
    assert_eq!(web.image, image("web:v1"));
    assert_eq!(web.image_id, v1.id);
    assert_eq!(web.service.as_deref(), Some("web"));
    let expected_labels = [
        (labels::PROJECT, name.as_str()),
        (labels::SERVICE, "web"),
        (labels::CONTAINER_NUMBER, "1"),
        (labels::ONEOFF, "False"),
        (labels::STACK, name.as_str()),
        (labels::ENVIRONMENT, "test"),
        (labels::VERSION, "1.0.0"),
        (labels::DEPLOYMENT, first_ctx.deployment_id.as_str()),
        ("org.example.team", "qa"),
    ];
    for (key, value) in expected_labels {
        assert_eq!(
            web.labels.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    assert_eq!(
        web.labels.get(labels::CONFIG_HASH),
        Some(&spec.services[0].config_hash())
    );
    let network = network_name(&name);
    let attached = docker_cli(&[
        "inspect",
        "-f",
        &format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}"),
        &web.id,
    ]);
    assert!(attached.contains("\"web\""), "aliases: {attached}");
    let network_labels = docker_cli(&["network", "inspect", "-f", "{{json .Labels}}", &network]);
    assert!(
        network_labels.contains(&format!("\"com.docker.compose.project\":\"{name}\"")),
        "{network_labels}"
    );
    assert!(
        network_labels.contains("\"com.docker.compose.network\":\"default\""),
        "{network_labels}"
    );
    let env = docker_cli(&["inspect", "-f", "{{json .Config.Env}}", &web.id]);
    assert!(env.contains("GREETING=hello"), "{env}");
    assert_eq!(serves(&client, &name, "web").await, "web v1");

    // Same image, same config: nothing to do.
    let mut recorder = Recorder::default();
    let report = client
        .converge(&ctx(false), &spec, &images, &mut recorder)
        .await
        .unwrap();
    assert_eq!(report.services[0].action, ServiceAction::Unchanged);
    assert_eq!(report.services[0].container_id, created.container_id);
    assert_eq!(
        recorder.events,
        vec![format!("unchanged web {}", created.container_id)]
    );
    assert_eq!(
        recorder.changes_asked, 0,
        "an unchanged stack needs no change"
    );

    // force: a new container even so, and the old one is gone.
    let report = client
        .converge(&ctx(true), &spec, &images, &mut NoopObserver)
        .await
        .unwrap();
    let forced = &report.services[0];
    assert_ne!(forced.container_id, created.container_id);
    assert_eq!(
        forced.action,
        ServiceAction::Replaced {
            old: Some(created.container_id.clone()),
            new: forced.container_id.clone()
        }
    );
    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    assert_eq!(containers[0].id, forced.container_id);
    assert_eq!(serves(&client, &name, "web").await, "web v1");

    // remove_stack takes everything, and a second call is a no-op.
    client.remove_stack(&name, true).await.unwrap();
    client.remove_stack(&name, true).await.unwrap();
    assert!(client.stack_containers(&name).await.unwrap().is_empty());
    let networks = docker_cli(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={name}"),
    ]);
    assert!(networks.is_empty(), "networks left: {networks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_v2_replaces_and_leaves_no_old_container() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let v1 = stack(&name, "1.0.0", vec![service("web", "web:v1")]);
    let first = converge(&client, &ctx(false), &v1, &mut NoopObserver)
        .await
        .unwrap();
    let old_id = first.services[0].container_id.clone();
    assert_eq!(serves(&client, &name, "web").await, "web v1");

    let v2 = stack(&name, "2.0.0", vec![service("web", "web:v2")]);
    let mut recorder = Recorder::default();
    let report = converge(&client, &ctx(false), &v2, &mut recorder)
        .await
        .unwrap();
    let outcome = &report.services[0];
    assert_eq!(
        outcome.action,
        ServiceAction::Replaced {
            old: Some(old_id.clone()),
            new: outcome.container_id.clone()
        }
    );
    assert_ne!(outcome.image_id, first.services[0].image_id);
    assert_eq!(
        recorder.events,
        vec![format!("replaced web {old_id} {}", outcome.container_id)]
    );
    assert!(report.cleanup_errors.is_empty(), "{report:?}");
    assert_eq!(serves(&client, &name, "web").await, "web v2");

    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(
        containers.len(),
        1,
        "no -old container left: {containers:#?}"
    );
    assert_eq!(containers[0].labels[labels::VERSION], "2.0.0");
    assert_eq!(containers[0].image, image("web:v2"));
}

/// Converges v1, then `bad`, which must fail with `check`, leaving v1 as it was.
async fn failed_upgrade_rolls_back(bad: ServiceSpec, check: impl FnOnce(&DockerError)) {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let v1 = stack(&name, "1.0.0", vec![service("web", "web:v1")]);
    let first = converge(&client, &ctx(false), &v1, &mut NoopObserver)
        .await
        .unwrap();
    let v1_id = first.services[0].container_id.clone();

    let broken = stack(&name, "2.0.0", vec![bad]);
    let mut recorder = Recorder::default();
    let started = Instant::now();
    let failure = converge(&client, &ctx(false), &broken, &mut recorder)
        .await
        .unwrap_err();
    eprintln!("{name}: failed after {:?}: {failure}", started.elapsed());
    check(&failure.error);
    assert!(failure.rolled_back, "{failure:?}");
    assert!(failure.rollback_errors.is_empty(), "{failure:?}");
    assert!(recorder.events.is_empty(), "{:?}", recorder.events);
    assert!(!failure.error.is_transient());

    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 1, "no leftovers: {containers:#?}");
    let web = primary(&containers, &name, "web");
    assert_eq!(web.id, v1_id, "the v1 container itself is back");
    assert_eq!(web.state, "running");
    assert_eq!(web.health.as_deref(), Some("healthy"));
    assert_eq!(web.labels[labels::VERSION], "1.0.0");
    assert_eq!(serves(&client, &name, "web").await, "web v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_image_rolls_back_to_the_running_version() {
    failed_upgrade_rolls_back(service("web", "unhealthy:v1"), |error| {
        let DockerError::Unhealthy { service, detail } = error else {
            panic!("expected Unhealthy, got {error:?}");
        };
        assert_eq!(service, "web");
        assert!(detail.contains("exited with 1"), "{detail}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exiting_image_rolls_back_to_the_running_version() {
    failed_upgrade_rolls_back(service("web", "exits:v1"), |error| {
        assert_eq!(
            *error,
            DockerError::Exited {
                service: "web".to_owned(),
                exit_code: 1,
                // What the image prints to stderr before it exits.
                output: Some("exits v1: exiting with code 1".to_owned()),
            }
        );
        assert!(error.to_string().contains("exiting with code 1"), "{error}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_host_port_fails_the_start_and_rolls_back() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut bad = service("web", "web:v2");
    bad.ports[0].host_port = Some(port);
    failed_upgrade_rolls_back(bad, |error| {
        let DockerError::ContainerStart { service, message } = error else {
            panic!("expected ContainerStart, got {error:?}");
        };
        assert_eq!(service, "web");
        assert!(message.contains(&port.to_string()), "{message}");
        assert!(error.to_string().contains(&port.to_string()));
    })
    .await;
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tag_is_image_not_found_and_permanent() {
    let client = client().await;
    let missing = image("web:does-not-exist");
    let error = client.pull(&missing, PULL_DEADLINE).await.unwrap_err();
    assert!(
        matches!(&error, DockerError::ImageNotFound { image, .. } if *image == missing),
        "{error:?}"
    );
    assert!(!error.is_transient());
    eprintln!("{error}");
    assert!(error.to_string().contains(&missing), "{error}");

    let error = client
        .pull(&image("no-such-repo:v1"), PULL_DEADLINE)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DockerError::ImageNotFound { .. }),
        "{error:?}"
    );

    // A registry that does not listen: the engine answers 500, worth a retry.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = client
        .pull(&format!("127.0.0.1:{port}/x/web:v1"), PULL_DEADLINE)
        .await
        .unwrap_err();
    assert!(matches!(error, DockerError::PullFailed { .. }), "{error:?}");
    assert!(error.is_transient());
    eprintln!("{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_engine_is_transient() {
    let error = DockerClient::connect("unix:///nonexistent/docker.sock", CALL_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DockerError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    eprintln!("{error}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = DockerClient::connect(&format!("tcp://127.0.0.1:{port}"), CALL_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DockerError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    eprintln!("{error}");

    let error = DockerClient::connect("ftp://somewhere", CALL_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DockerError::InvalidEndpoint { .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_an_old_container_left_by_a_crash() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let v1 = stack(&name, "1.0.0", vec![service("web", "web:v1")]);
    let first = converge(&client, &ctx(false), &v1, &mut NoopObserver)
        .await
        .unwrap();
    let v1_id = first.services[0].container_id.clone();

    // A worker died between "stop + rename the old" and "start the new": only `-old`
    // exists, plus a `created` container that never started under the primary name.
    let old_name = old_container_name(&name, "web");
    let primary_name = container_name(&name, "web");
    docker_cli(&["stop", "-t", "10", &v1_id]);
    docker_cli(&["rename", &v1_id, &old_name]);
    docker_cli(&[
        "create",
        "--name",
        &primary_name,
        "--label",
        &format!("{}={name}", labels::PROJECT),
        "--label",
        &format!("{}=web", labels::SERVICE),
        &image("web:v1"),
    ]);

    let report = converge(&client, &ctx(false), &v1, &mut NoopObserver)
        .await
        .unwrap();
    // The old container got its name back and runs again: nothing else to do.
    assert_eq!(report.services[0].action, ServiceAction::Unchanged);
    assert_eq!(report.services[0].container_id, v1_id);
    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    assert_eq!(containers[0].name, primary_name);
    assert_eq!(containers[0].state, "running");
    assert_eq!(serves(&client, &name, "web").await, "web v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_a_crash_once_the_new_container_ran() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let v1 = stack(&name, "1.0.0", vec![service("web", "web:v1")]);
    let first = converge(&client, &ctx(false), &v1, &mut NoopObserver)
        .await
        .unwrap();
    let v1_id = first.services[0].container_id.clone();

    // The lease goes while the replacement is recorded: the converge stops there, with the
    // new container up and the old one stopped under `-old`, like a crash at that point.
    let v2 = stack(&name, "2.0.0", vec![service("web", "web:v2")]);
    let mut recorder = Recorder {
        deny_replaced: true,
        ..Default::default()
    };
    let failure = converge(&client, &ctx(false), &v2, &mut recorder)
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, DockerError::LeaseLost(_)),
        "{failure:?}"
    );
    assert!(!failure.rolled_back);
    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 2, "{containers:#?}");
    let old = containers
        .iter()
        .find(|c| c.name == old_container_name(&name, "web"))
        .expect("the old container is kept");
    assert_eq!(old.id, v1_id);
    assert_eq!(old.state, "exited");
    let v2_id = primary(&containers, &name, "web").id.clone();

    // The next attempt keeps the healthy new container and drops the old one.
    let report = converge(&client, &ctx(false), &v2, &mut NoopObserver)
        .await
        .unwrap();
    assert_eq!(report.services[0].action, ServiceAction::Unchanged);
    assert_eq!(report.services[0].container_id, v2_id);
    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    assert_eq!(serves(&client, &name, "web").await, "web v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_changes_nothing() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;

    // A fresh stack: not even the network is created.
    let v1 = stack(&name, "1.0.0", vec![service("web", "web:v1")]);
    let mut denied = Recorder {
        deny_changes: true,
        ..Default::default()
    };
    let failure = converge(&client, &ctx(false), &v1, &mut denied)
        .await
        .unwrap_err();
    assert!(
        matches!(&failure.error, DockerError::LeaseLost(why) if why.contains("another worker")),
        "{failure:?}"
    );
    assert!(!failure.rolled_back);
    assert!(!failure.error.is_transient());
    assert!(client.stack_containers(&name).await.unwrap().is_empty());
    let networks = docker_cli(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={}", network_name(&name)),
    ]);
    assert!(networks.is_empty(), "{networks}");

    // A running stack: the upgrade stops before touching the container.
    let first = converge(&client, &ctx(false), &v1, &mut NoopObserver)
        .await
        .unwrap();
    let v1_id = first.services[0].container_id.clone();
    let v2 = stack(&name, "2.0.0", vec![service("web", "web:v2")]);
    let mut denied = Recorder {
        deny_changes: true,
        ..Default::default()
    };
    let failure = converge(&client, &ctx(false), &v2, &mut denied)
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, DockerError::LeaseLost(_)),
        "{failure:?}"
    );
    assert!(!failure.rolled_back);
    assert_eq!(denied.changes_asked, 1);
    assert!(denied.events.is_empty());
    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    assert_eq!(containers[0].id, v1_id);
    assert_eq!(containers[0].state, "running");
    assert_eq!(containers[0].image, image("web:v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_start_in_dependency_order_and_find_each_other() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let mut db = service("db", "web:v1");
    db.ports.clear();
    let mut app = service("app", "web:v2");
    app.depends_on = vec!["db".to_owned()];
    let spec = stack(&name, "1.0.0", vec![db.clone(), app.clone()]);

    let mut recorder = Recorder::default();
    let report = converge(&client, &ctx(false), &spec, &mut recorder)
        .await
        .unwrap();
    let order: Vec<&str> = report.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(order, ["db", "app"]);
    assert!(
        recorder.events[0].starts_with("replaced db "),
        "{:?}",
        recorder.events
    );
    assert!(
        recorder.events[1].starts_with("replaced app "),
        "{:?}",
        recorder.events
    );
    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 2, "{containers:#?}");
    let db_started = docker_cli(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        &report.services[0].container_id,
    ]);
    let app_started = docker_cli(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        &report.services[1].container_id,
    ]);
    assert!(
        db_started < app_started,
        "db {db_started}, app {app_started}"
    );

    // The service name is an alias on the stack network.
    let from_app = docker_cli(&[
        "exec",
        &container_name(&name, "app"),
        "wget",
        "-q",
        "-O",
        "-",
        "http://db:8080/",
    ]);
    assert_eq!(from_app, "web v1");
    assert_eq!(serves(&client, &name, "app").await, "web v2");

    // A service that leaves the spec goes away; the other one stays as it is.
    let mut alone = app.clone();
    alone.depends_on.clear();
    let smaller = stack(&name, "1.1.0", vec![alone]);
    let report = converge(&client, &ctx(false), &smaller, &mut NoopObserver)
        .await
        .unwrap();
    assert!(report.cleanup_errors.is_empty(), "{report:?}");
    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    assert_eq!(containers[0].service.as_deref(), Some("app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_second_service_rolls_back_the_first() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let mut db = service("db", "web:v1");
    db.ports.clear();
    let app = service("app", "web:v1");
    let v1 = stack(&name, "1.0.0", vec![db.clone(), app]);
    let first = converge(&client, &ctx(false), &v1, &mut NoopObserver)
        .await
        .unwrap();
    let before: Vec<String> = first
        .services
        .iter()
        .map(|s| s.container_id.clone())
        .collect();

    let mut db2 = db.clone();
    db2.image = image("web:v2");
    let broken = stack(&name, "2.0.0", vec![db2, service("app", "exits:v1")]);
    let failure = converge(&client, &ctx(false), &broken, &mut NoopObserver)
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, DockerError::Exited { ref service, exit_code: 1, .. } if service == "app"),
        "{failure:?}"
    );
    assert!(failure.rolled_back, "{failure:?}");
    assert_eq!(failure.report.services.len(), 1, "db was replaced first");

    let containers = client.stack_containers(&name).await.unwrap();
    assert_eq!(containers.len(), 2, "{containers:#?}");
    assert_eq!(primary(&containers, &name, "db").id, before[0]);
    assert_eq!(primary(&containers, &name, "app").id, before[1]);
    for container in &containers {
        assert_eq!(container.state, "running", "{container:#?}");
        assert_eq!(container.image, image("web:v1"));
    }
    assert_eq!(serves(&client, &name, "app").await, "web v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_settings_reach_the_container_and_changing_them_replaces_it() {
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let mut web = service("web", "web:v1");
    web.limits = shiplog_events::spec::Limits {
        memory: Some(64 << 20),
        nano_cpus: Some(500_000_000),
    };
    web.options = shiplog_events::spec::ContainerOptions {
        hostname: Some("api-1".into()),
        user: Some("1000:1000".into()),
        working_dir: Some("/tmp".into()),
        stop_signal: Some("SIGINT".into()),
        stop_timeout_secs: Some(7),
        init: Some(true),
        cap_drop: vec!["NET_RAW".into()],
        extra_hosts: vec!["db.local:10.0.0.5".into()],
        expose: vec!["9000/tcp".into()],
        logging: Some(shiplog_events::spec::Logging {
            driver: "json-file".into(),
            options: [("max-size".to_string(), "1m".to_string())].into(),
        }),
        ..Default::default()
    };
    let first = converge(
        &client,
        &ctx(false),
        &stack(&name, "1.0.0", vec![web.clone()]),
        &mut NoopObserver,
    )
    .await
    .unwrap();
    let id = first.services[0].container_id.clone();
    let host = |id: String| {
        let out = std::process::Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
            ])
            .arg(id)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(host(id.clone()), "67108864 500000000");
    let settings = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.Config.Hostname}} {{.Config.User}} {{.Config.WorkingDir}} {{.Config.StopSignal}} \
             {{.Config.StopTimeout}} {{.HostConfig.Init}} {{.HostConfig.CapDrop}} \
             {{.HostConfig.ExtraHosts}} {{.HostConfig.LogConfig.Type}}:{{index .HostConfig.LogConfig.Config \"max-size\"}} {{json .Config.ExposedPorts}}",
        ])
        .arg(&id)
        .output()
        .unwrap();
    let settings = String::from_utf8_lossy(&settings.stdout).trim().to_owned();
    assert_eq!(
        settings,
        "api-1 1000:1000 /tmp SIGINT 7 true [NET_RAW] [db.local:10.0.0.5] json-file:1m \
         {\"8080/tcp\":{},\"9000/tcp\":{}}",
    );

    web.limits.memory = Some(128 << 20);
    let second = converge(
        &client,
        &ctx(false),
        &stack(&name, "1.0.0", vec![web]),
        &mut NoopObserver,
    )
    .await
    .unwrap();
    assert!(matches!(
        second.services[0].action,
        ServiceAction::Replaced { .. }
    ));
    assert_eq!(
        host(second.services[0].container_id.clone()),
        "134217728 500000000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_join_their_networks_with_aliases_and_remove_takes_them_all() {
    use shiplog_events::spec::{NetworkAttachment, NetworkSpec};
    let guard = StackGuard::new();
    let name = guard.name.clone();
    let client = client().await;
    let on = |network: &str, aliases: &[&str]| NetworkAttachment {
        network: network.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    let mut web = service("web", "web:v1");
    web.networks = vec![on("front", &[])];
    let mut api = service("api", "web:v1");
    api.ports.clear();
    api.networks = vec![on("front", &["backend"]), on("back", &[])];
    let mut db = service("db", "web:v1");
    db.ports.clear();
    db.networks = vec![on("back", &[])];
    let mut spec = stack(&name, "1.0.0", vec![web, api, db]);
    spec.networks = vec![
        NetworkSpec {
            name: "front".into(),
            internal: false,
        },
        NetworkSpec {
            name: "back".into(),
            internal: true,
        },
    ];
    converge(&client, &ctx(false), &spec, &mut NoopObserver)
        .await
        .unwrap();

    let inspect = |what: &str, format: &str| {
        let out = std::process::Command::new("docker")
            .args(["inspect", "--format", format, what])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let networks_of = |service: &str| {
        inspect(
            &format!("{name}-{service}-1"),
            "{{range $n, $e := .NetworkSettings.Networks}}{{$n}}={{range $e.Aliases}}{{.}},{{end}} {{end}}",
        )
    };
    assert!(
        networks_of("web").starts_with(&format!("{name}_front=")),
        "{}",
        networks_of("web")
    );
    assert!(
        !networks_of("web").contains("_back"),
        "web must not reach db's network"
    );
    let api = networks_of("api");
    assert!(api.contains(&format!("{name}_back=")), "{api}");
    assert!(
        api.contains(&format!("{name}_front=")) && api.contains("backend,"),
        "api answers as backend on front: {api}"
    );
    assert!(networks_of("db").starts_with(&format!("{name}_back=")));
    assert_eq!(inspect(&format!("{name}_back"), "{{.Internal}}"), "true");
    assert_eq!(inspect(&format!("{name}_front"), "{{.Internal}}"), "false");
    // No service joins `default`: it is not created.
    assert!(inspect(&format!("{name}_default"), "{{.Name}}").is_empty());

    client.remove_stack(&name, false).await.unwrap();
    for network in ["front", "back"] {
        assert!(
            inspect(&format!("{name}_{network}"), "{{.Name}}").is_empty(),
            "{network} left behind"
        );
    }
}

//! The deploy executor: takes a deployment id, holds the stack's lease, and converges the
//! Docker host to the requested version, recording every step as an event.
//! Idempotent: a retry after a crash converges again instead of doubling work.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shiplog_events::catalog;
use shiplog_events::commands::{deployments, environments};
use shiplog_events::endpoint::Endpoint;
use shiplog_events::event::{
    DeployedService, DeploymentKind, DeploymentRequest, Event, FailureKind, Metadata,
    RecordedEvent, stream,
};
use shiplog_events::inventory::ObservedContainer;
use shiplog_events::lease::{self, Lease};
use shiplog_events::spec::StackSpec;
use shiplog_events::store::{self, ExpectedVersion};
use sqlx::PgPool;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::Settings;
use crate::docker::{
    ConvergeContext, ConvergeObserver, ConvergeReport, DockerClient, DockerError, PulledImage,
};
use crate::error::WorkerError;
use crate::metrics::WorkerMetrics;

/// Beyond the deployment deadline, how long before the work is abandoned outright.
const DEADLINE_GRACE: Duration = Duration::from_secs(60);
const LEASE_POLL: Duration = Duration::from_millis(200);
const ORDER_POLL: Duration = Duration::from_millis(250);
/// Beyond an older deployment's own deadline, how long a newer one waits for it to end.
const ORDER_WAIT_SLACK: Duration = Duration::from_secs(120);
/// Appends racing the start of a deployment (joins, supersessions) before giving up.
const START_RACES: usize = 10;

pub struct Executor {
    pool: PgPool,
    worker: String,
    settings: Settings,
    /// One client per Docker endpoint (with its TLS/SSH settings), made on first use.
    clients: Mutex<HashMap<Endpoint, DockerClient>>,
    /// The process-wide limit of deployments carried out at once.
    permits: Semaphore,
    metrics: Arc<WorkerMetrics>,
}

/// How a deployment ended, before it is recorded.
enum Outcome {
    Succeeded {
        digests: BTreeMap<String, String>,
        services: Vec<DeployedService>,
    },
    /// A lifecycle deployment (start, stop, restart, remove) did its work.
    Changed { summary: String },
    Failed {
        kind: FailureKind,
        reason: String,
        rolled_back: bool,
    },
}

fn failed(kind: FailureKind, reason: impl Into<String>) -> Outcome {
    Outcome::Failed {
        kind,
        reason: reason.into(),
        rolled_back: false,
    }
}

impl Executor {
    pub fn new(
        pool: PgPool,
        worker: String,
        settings: Settings,
        metrics: Arc<WorkerMetrics>,
    ) -> Self {
        let settings_permits = settings.max_deployments;
        Executor {
            pool,
            worker,
            settings,
            clients: Mutex::new(HashMap::new()),
            permits: Semaphore::new(settings_permits),
            metrics,
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs one deployment to a terminal state. `Err` only when the database (or the
    /// lease) fails us: the queue then retries the job.
    #[tracing::instrument(skip(self), fields(worker = %self.worker, request_id = tracing::field::Empty))]
    pub async fn run(&self, deployment: Uuid) -> Result<(), WorkerError> {
        let stream_id = stream::deployment(deployment);
        let history = self.read(&stream_id).await?;
        let Some((kind, request, correlation)) = request_of(&history) else {
            tracing::warn!(%deployment, "job for a deployment with no request in the log: dropped");
            return Ok(());
        };
        // The API request's id on every log line of this run, as in the events.
        if let Some(id) = &correlation {
            tracing::Span::current().record("request_id", id.as_str());
        }
        if is_terminal(&history) {
            return Ok(());
        }
        let position = history.first().map_or(i64::MAX, |e| e.global_position);
        if !self.wait_for_older(deployment, &request, position).await? {
            return Ok(()); // ended (superseded) while it waited
        }
        let key = lease::stack_key(&request.environment, &request.stack);
        // The holder names this run, not just this process: two deployments of one stack in
        // one process, or the same job handed out twice by the queue after a missed
        // heartbeat, must exclude each other too.
        let holder = format!("{}/{deployment}/{}", self.worker, Uuid::new_v4().simple());
        let Some(lease) = self.acquire(&key, &holder, &stream_id).await? else {
            return Ok(()); // finished by someone else while we waited
        };
        let lost = Arc::new(AtomicBool::new(false));
        // Aborted on drop: a run cancelled mid-way (its consumer restarted after a database
        // outage) must not keep the stack's lease alive forever.
        let renewer = AbortOnDrop(self.spawn_renewer(lease.clone(), lost.clone()));
        // Taken once the lease is ours: waiting for a busy stack must not hold a slot.
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let _running = self.metrics.running();
        let result = self
            .run_leased(deployment, kind, &request, correlation, &lease, &lost)
            .await;
        drop(renewer);
        if let Err(e) = lease::release(&self.pool, &lease).await {
            tracing::warn!(error = %e, "could not release the stack lease; it will expire");
        }
        result
    }

    async fn run_leased(
        &self,
        deployment: Uuid,
        kind: DeploymentKind,
        request: &DeploymentRequest,
        correlation: Option<String>,
        lease: &Lease,
        lost: &Arc<AtomicBool>,
    ) -> Result<(), WorkerError> {
        let stream_id = stream::deployment(deployment);
        let metadata = Metadata {
            correlation_id: correlation,
            causation_id: Some(stream_id.clone()),
            actor: Some(format!("worker:{}", self.worker)),
            worker: Some(self.worker.clone()),
        };
        // Re-read under the lease: an earlier run may have finished it meanwhile, or a
        // newer request superseded it. The API appends to queued deployments (joins,
        // supersessions) with an expected version; so does this start, and the loser of a
        // race reads again.
        let mut attempt = 0;
        let mut requested_at = None;
        for _ in 0..START_RACES {
            let history = self.read(&stream_id).await?;
            if is_terminal(&history) {
                return Ok(());
            }
            requested_at = history.first().map(|e| e.recorded_at);
            attempt = history
                .iter()
                .filter(|e| matches!(e.event, Event::DeploymentStarted { .. }))
                .count() as u32
                + 1;
            let started = Event::DeploymentStarted {
                deployment,
                worker: self.worker.clone(),
                attempt,
            };
            let expected = ExpectedVersion::Exactly(history.last().map_or(0, |e| e.stream_version));
            match self
                .record(lease, deployment, expected, &[started], &metadata)
                .await
            {
                Ok(()) => break,
                Err(WorkerError::Domain(shiplog_events::Error::Conflict { .. })) => attempt = 0,
                Err(e) => return Err(e),
            }
        }
        if attempt == 0 {
            return Err(shiplog_events::Error::Queue(format!(
                "deployment {deployment} kept changing while starting"
            ))
            .into());
        }
        tracing::info!(%deployment, kind = kind.as_str(), stack = %request.stack, version = %request.version, attempt, "deployment started");
        let started = Instant::now();
        if attempt == 1
            && let Some(requested_at) = requested_at
        {
            let waited = (chrono::Utc::now() - requested_at)
                .to_std()
                .unwrap_or_default();
            self.metrics.picked_up(&request.environment, waited);
        }

        let mut recorder = Recorder {
            executor: self,
            lease,
            lost,
            deployment,
            metadata: &metadata,
        };
        let outcome = self
            .deploy_with_retries(kind, request, &mut recorder)
            .await?;
        let result = match &outcome {
            Outcome::Succeeded { .. } | Outcome::Changed { .. } => "success",
            Outcome::Failed { kind, .. } => kind.as_str(),
        };
        self.finish(deployment, kind, request, lease, &metadata, outcome)
            .await?;
        self.metrics.ended(kind.as_str(), result, started.elapsed());
        Ok(())
    }

    /// Runs the deployment; transient failures are retried with backoff, each retry
    /// recorded, all within the deployment's deadline.
    async fn deploy_with_retries(
        &self,
        kind: DeploymentKind,
        request: &DeploymentRequest,
        recorder: &mut Recorder<'_>,
    ) -> Result<Outcome, WorkerError> {
        let timeout = self.settings.deployment_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = self.settings.retry_backoff;
        for attempt in 1..=self.settings.transient_attempts {
            // The deadline is enforced cooperatively (pulls and health waits stop at it and
            // roll back); this outer bound only catches a call that ignores it.
            let work = self.deploy(kind, request, recorder, deadline);
            let outcome = match tokio::time::timeout(timeout + DEADLINE_GRACE, work).await {
                Ok(outcome) => outcome?,
                Err(_) => failed(FailureKind::Error, String::new()),
            };
            let Outcome::Failed {
                kind: FailureKind::Error,
                reason,
                rolled_back,
            } = outcome
            else {
                return Ok(outcome);
            };
            if Instant::now() >= deadline {
                let reason = format!(
                    "deployment timed out after {} s: {reason}",
                    timeout.as_secs()
                );
                return Ok(Outcome::Failed {
                    kind: FailureKind::Error,
                    reason,
                    rolled_back,
                });
            }
            if attempt == self.settings.transient_attempts || Instant::now() + backoff >= deadline {
                let reason = format!("{reason} (gave up after {attempt} attempts)");
                return Ok(Outcome::Failed {
                    kind: FailureKind::Error,
                    reason,
                    rolled_back,
                });
            }
            tracing::warn!(deployment = %recorder.deployment, %reason, ?backoff, "transient failure; retrying");
            let retrying = Event::DeploymentRetrying {
                deployment: recorder.deployment,
                reason,
                retry_in_ms: backoff.as_millis() as u64,
            };
            recorder.record(retrying).await?;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        unreachable!("the last attempt returns")
    }

    /// Resolve, pull everything, then converge. Returns the outcome to record.
    async fn deploy(
        &self,
        kind: DeploymentKind,
        request: &DeploymentRequest,
        recorder: &mut Recorder<'_>,
        deadline: Instant,
    ) -> Result<Outcome, WorkerError> {
        let deployment = recorder.deployment;
        let spec = self.resolve(request).await?;
        if kind.is_lifecycle() {
            return self.lifecycle(kind, request, spec.ok(), deadline).await;
        }
        let spec = match spec {
            Ok(spec) => spec,
            Err(outcome) => return Ok(outcome),
        };
        let (env, docker) = match self.engine(&request.environment).await? {
            Ok(engine) => engine,
            Err(outcome) => return Ok(outcome),
        };

        // Every image first: a failed pull ends the deployment before anything runs.
        let mut images = BTreeMap::new();
        for service in &spec.services {
            let left = deadline.saturating_duration_since(Instant::now());
            let pulled = match docker
                .pull(&service.image, self.settings.pull_timeout.min(left))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    self.engine_failed(&env.id, &e).await;
                    return Ok(failed(self.docker_failure(&e), e.to_string()));
                }
            };
            let event = Event::ImagePulled {
                deployment,
                service: service.name.clone(),
                image: service.image.clone(),
                image_id: pulled.id.clone(),
                digest: repo_digest(&pulled),
            };
            recorder.record(event).await?;
            images.insert(service.name.clone(), pulled);
        }

        let ctx = ConvergeContext {
            environment: request.environment.clone(),
            deployment_id: deployment.to_string(),
            force: request.force,
            health_timeout: None,
            deadline: Some(deadline.into_std()),
        };
        match docker.converge(&ctx, &spec, &images, recorder).await {
            Ok(report) => Ok(succeeded(&spec, &images, &report)),
            Err(failure) => {
                if let DockerError::LeaseLost(_) = failure.error {
                    return Err(shiplog_events::Error::LeaseLost(lease_key(request)).into());
                }
                self.engine_failed(&env.id, &failure.error).await;
                Ok(Outcome::Failed {
                    kind: self.docker_failure(&failure.error),
                    reason: failure.to_string(),
                    rolled_back: failure.rolled_back,
                })
            }
        }
    }

    /// Start, stop, restart or remove the stack's containers as they are. The manifest only
    /// gives the start order; without it (the version left the catalog) stop and remove
    /// still work, and start follows the containers' service names.
    async fn lifecycle(
        &self,
        kind: DeploymentKind,
        request: &DeploymentRequest,
        spec: Option<StackSpec>,
        deadline: Instant,
    ) -> Result<Outcome, WorkerError> {
        let (env, docker) = match self.engine(&request.environment).await? {
            Ok(engine) => engine,
            Err(outcome) => return Ok(outcome),
        };
        let stack = &request.stack;
        let work = async {
            let services = match &spec {
                Some(spec) => spec.services.iter().map(|s| s.name.clone()).collect(),
                None => stack_services(&docker, stack).await?,
            };
            let until = Some(deadline.into_std());
            let containers = |n: usize| format!("{n} container{}", if n == 1 { "" } else { "s" });
            Ok::<_, DockerError>(match kind {
                DeploymentKind::Stop => {
                    let n = docker.stop_stack(stack, &services).await?;
                    format!("Stopped {} of stack {stack}", containers(n))
                }
                DeploymentKind::Start => {
                    let n = docker.start_stack(stack, &services, until).await?;
                    format!("Started {} of stack {stack}", containers(n))
                }
                DeploymentKind::Restart => {
                    docker.stop_stack(stack, &services).await?;
                    docker.start_stack(stack, &services, until).await?;
                    format!("Restarted {} of stack {stack}", containers(services.len()))
                }
                _ => {
                    let removal = request.removal.unwrap_or_default();
                    let images = match removal.images {
                        true => docker.stack_images(stack).await?,
                        false => Vec::new(),
                    };
                    docker.remove_stack(stack, removal.volumes).await?;
                    let mut summary = format!("Removed stack {stack}");
                    if removal.volumes {
                        summary.push_str(" with its volumes");
                    }
                    if removal.images {
                        let done = docker.remove_images(&images).await?;
                        summary.push_str(&format!("; images removed: {}", done.removed.len()));
                        for (image, why) in done.kept {
                            summary.push_str(&format!("; kept {image}: {why}"));
                        }
                    }
                    summary
                }
            })
        };
        Ok(match work.await {
            Ok(summary) => Outcome::Changed { summary },
            Err(e) => {
                self.engine_failed(&env.id, &e).await;
                failed(self.docker_failure(&e), e.to_string())
            }
        })
    }

    /// The environment's engine, connected; or the outcome to record when it is gone or
    /// cannot be reached (recorded as the environment's last error too).
    async fn engine(
        &self,
        environment: &str,
    ) -> Result<Result<(environments::Environment, DockerClient), Outcome>, WorkerError> {
        let Some(env) = environments::get(&self.pool, environment).await? else {
            return Ok(Err(failed(
                FailureKind::Failure,
                format!("environment '{environment}' no longer exists"),
            )));
        };
        match self.client(&env.endpoint()).await {
            Ok(docker) => Ok(Ok((env, docker))),
            Err(e) => {
                self.engine_failed(&env.id, &e).await;
                Ok(Err(failed(self.docker_failure(&e), e.to_string())))
            }
        }
    }

    /// The catalog manifest of the requested version, with its variables.
    async fn resolve(
        &self,
        request: &DeploymentRequest,
    ) -> Result<Result<StackSpec, Outcome>, WorkerError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(shiplog_events::Error::from)?;
        let manifest = deployments::request_manifest(&mut conn, request).await?;
        let Some(manifest) = manifest else {
            return Ok(Err(failed(
                FailureKind::Failure,
                format!(
                    "version '{}' of stack '{}' is no longer in the catalog",
                    request.version, request.stack
                ),
            )));
        };
        let secrets = self.settings.secrets.as_ref();
        let variables =
            match catalog::open_passwords(&manifest.variables, &request.variables, secrets) {
                Ok(variables) => variables,
                Err(e) => return Ok(Err(failed(FailureKind::Failure, e))),
            };
        let mut spec = match catalog::resolve(&manifest, &variables) {
            Ok(spec) => spec,
            Err(e) => {
                let reason = format!("cannot resolve the manifest: {e}");
                return Ok(Err(failed(FailureKind::Failure, reason)));
            }
        };
        // A rollback pins every image by digest.
        for service in &mut spec.services {
            if let Some(pinned) = request.images.get(&service.name) {
                service.image = pinned.clone();
            }
        }
        Ok(Ok(spec))
    }

    async fn client(&self, endpoint: &Endpoint) -> Result<DockerClient, DockerError> {
        if let Some(client) = self.clients.lock().await.get(endpoint) {
            return Ok(client.clone());
        }
        // Not under the lock: an engine that hangs must not hold up the others.
        let client = DockerClient::connect_to(endpoint, self.settings.docker_timeout).await?;
        self.clients
            .lock()
            .await
            .insert(endpoint.clone(), client.clone());
        Ok(client)
    }

    /// Checks that an environment's engine answers a ping within the probe timeout, and
    /// lists the compose containers there (what the stack listing shows beside the log).
    pub async fn probe(
        &self,
        env: &environments::Environment,
    ) -> Result<Vec<ObservedContainer>, DockerError> {
        let endpoint = env.endpoint();
        let check = async {
            let client = self.client(&endpoint).await?;
            client.ping().await?;
            client.compose_containers().await
        };
        match tokio::time::timeout(self.settings.probe_timeout, check).await {
            Ok(result) => result,
            Err(_) => Err(DockerError::Unreachable {
                endpoint: endpoint.url,
                message: format!(
                    "no answer to a ping within {} ms",
                    self.settings.probe_timeout.as_millis()
                ),
            }),
        }
    }

    /// A deployment could not talk to the engine: the environment's status says so now,
    /// not only at the next probe.
    async fn engine_failed(&self, environment: &str, error: &DockerError) {
        if !error.is_connection() {
            return;
        }
        let text = error.to_string();
        if let Err(e) =
            environments::record_status(&self.pool, environment, &self.worker, Err(&text)).await
        {
            tracing::warn!(%environment, error = %e, "cannot record the engine's status");
        }
    }

    /// Records the terminal events: on success the stack's new state and the deployment's
    /// end in one transaction, so no reader sees one without the other.
    async fn finish(
        &self,
        deployment: Uuid,
        kind: DeploymentKind,
        request: &DeploymentRequest,
        lease: &Lease,
        metadata: &Metadata,
        outcome: Outcome,
    ) -> Result<(), WorkerError> {
        let stream_id = stream::deployment(deployment);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(shiplog_events::Error::from)?;
        lease::check(&mut tx, lease).await?;
        deployments::lock_row(&mut tx, deployment).await?;
        let (environment, stack) = (request.environment.clone(), request.stack.clone());
        let (change, summary, digests) = match outcome {
            Outcome::Succeeded { digests, services } => {
                let deployed = Event::StackDeployed {
                    environment,
                    stack,
                    version: request.version.clone(),
                    deployment,
                    digests: digests.clone(),
                    variables: request.variables.clone(),
                    services,
                    catalog_source: request.catalog_source.clone(),
                    catalog_revision: request.catalog_revision.clone(),
                };
                (deployed, None, digests)
            }
            Outcome::Changed { summary } => {
                let change = match kind {
                    DeploymentKind::Stop => Event::StackStopped {
                        environment,
                        stack,
                        deployment,
                    },
                    DeploymentKind::Remove => Event::StackRemoved {
                        environment,
                        stack,
                        deployment,
                        removal: request.removal.unwrap_or_default(),
                    },
                    _ => Event::StackStarted {
                        environment,
                        stack,
                        deployment,
                    },
                };
                (change, Some(summary), BTreeMap::new())
            }
            Outcome::Failed {
                kind,
                reason,
                rolled_back,
            } => {
                tracing::warn!(%deployment, ?kind, %reason, rolled_back, "deployment failed");
                let event = Event::DeploymentFailed {
                    deployment,
                    kind,
                    reason,
                    rolled_back,
                };
                store::append(
                    &mut tx,
                    &stream_id,
                    ExpectedVersion::Any,
                    &[event],
                    metadata,
                )
                .await?;
                tx.commit().await.map_err(shiplog_events::Error::from)?;
                return Ok(());
            }
        };
        // The stack's record with an expected version: two deployments can never both
        // claim to be current.
        let stack_stream = stream::stack(&request.environment, &request.stack);
        let version = store::stream_version(&mut tx, &stack_stream).await?;
        store::append(
            &mut tx,
            &stack_stream,
            ExpectedVersion::Exactly(version),
            &[change],
            metadata,
        )
        .await?;
        let succeeded = Event::DeploymentSucceeded {
            deployment,
            version: request.version.clone(),
            digests,
            summary,
        };
        store::append(
            &mut tx,
            &stream_id,
            ExpectedVersion::Any,
            &[succeeded],
            metadata,
        )
        .await?;
        tracing::info!(%deployment, kind = kind.as_str(), "deployment succeeded");
        tx.commit().await.map_err(shiplog_events::Error::from)?;
        Ok(())
    }

    /// A transient Docker problem (engine or registry unreachable, timeout) is Shiplog's
    /// `error`; anything about the stack itself is a `failure`. Counted either way.
    fn docker_failure(&self, e: &DockerError) -> FailureKind {
        let transient = e.is_transient();
        self.metrics.docker_error(transient);
        if transient {
            FailureKind::Error
        } else {
            FailureKind::Failure
        }
    }

    /// Waits for the stack's lease. `None` if the deployment ended while waiting.
    async fn acquire(
        &self,
        key: &str,
        holder: &str,
        stream_id: &str,
    ) -> Result<Option<Lease>, WorkerError> {
        let mut polls = 0u32;
        loop {
            if let Some(lease) =
                lease::try_acquire(&self.pool, key, holder, self.settings.lease_ttl).await?
            {
                return Ok(Some(lease));
            }
            polls += 1;
            // Now and then, check whether another run finished the deployment meanwhile.
            if polls.is_multiple_of(25) && is_terminal(&self.read(stream_id).await?) {
                return Ok(None);
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// Waits until every older deployment of the stack has ended, so that deployments of a
    /// stack start in request order even when an older one was interrupted (its worker
    /// killed, its run cancelled) and is only taken up again after its job is recovered.
    /// Bounded: an older deployment that never ends (its job lost) must not block the stack
    /// for good. `false` when this deployment itself ended meanwhile.
    async fn wait_for_older(
        &self,
        deployment: Uuid,
        request: &DeploymentRequest,
        position: i64,
    ) -> Result<bool, WorkerError> {
        let limit = self.settings.deployment_timeout + DEADLINE_GRACE + ORDER_WAIT_SLACK;
        let since = Instant::now();
        let mut waiting_for = None;
        loop {
            let older = {
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(shiplog_events::Error::from)?;
                deployments::older_unfinished(
                    &mut conn,
                    &request.environment,
                    &request.stack,
                    position,
                )
                .await?
            };
            let Some(older) = older else { return Ok(true) };
            if waiting_for != Some(older) {
                tracing::info!(%deployment, %older, stack = %request.stack, "waiting for an older deployment of the stack to end");
                waiting_for = Some(older);
            }
            if since.elapsed() >= limit {
                tracing::warn!(%deployment, %older, waited = ?since.elapsed(), "an older deployment of the stack has not ended: starting anyway");
                return Ok(true);
            }
            tokio::time::sleep(ORDER_POLL).await;
            if is_terminal(&self.read(&stream::deployment(deployment)).await?) {
                return Ok(false);
            }
        }
    }

    fn spawn_renewer(&self, lease: Lease, lost: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        let ttl = self.settings.lease_ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match lease::renew(&pool, &lease, ttl).await {
                    Ok(()) => {}
                    Err(shiplog_events::Error::LeaseLost(_)) => {
                        tracing::error!(stack = %lease.stack_key, "stack lease lost: stopping this deployment");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    // A passing database error: try again; the fence catches real loss.
                    Err(e) => tracing::warn!(error = %e, "could not renew the stack lease"),
                }
            }
        })
    }

    async fn read(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, WorkerError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(shiplog_events::Error::from)?;
        Ok(store::read_stream(&mut conn, stream_id).await?)
    }

    /// Appends on behalf of a lease: refused once the lease is no longer ours.
    async fn record(
        &self,
        lease: &Lease,
        deployment: Uuid,
        expected: ExpectedVersion,
        events: &[Event],
        metadata: &Metadata,
    ) -> Result<(), WorkerError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(shiplog_events::Error::from)?;
        lease::check(&mut tx, lease).await?;
        deployments::lock_row(&mut tx, deployment).await?;
        let stream_id = stream::deployment(deployment);
        store::append(&mut tx, &stream_id, expected, events, metadata).await?;
        tx.commit().await.map_err(shiplog_events::Error::from)?;
        Ok(())
    }
}

fn lease_key(request: &DeploymentRequest) -> String {
    lease::stack_key(&request.environment, &request.stack)
}

fn request_of(
    history: &[RecordedEvent],
) -> Option<(DeploymentKind, DeploymentRequest, Option<String>)> {
    let first = history.first()?;
    let (kind, request) = first.event.request()?;
    Some((kind, request.clone(), first.metadata.correlation_id.clone()))
}

fn is_terminal(history: &[RecordedEvent]) -> bool {
    history.iter().any(|e| e.event.is_terminal())
}

/// The registry's manifest digest (`sha256:…`) of the pulled reference, when it has one.
fn repo_digest(pulled: &PulledImage) -> Option<String> {
    let repo = shiplog_events::spec::repository_of(&pulled.reference);
    pulled
        .repo_digests
        .iter()
        .find_map(|d| d.strip_prefix(repo).and_then(|rest| rest.strip_prefix('@')))
        .or_else(|| {
            pulled
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@').map(|(_, x)| x))
        })
        .map(str::to_owned)
}

fn succeeded(
    spec: &StackSpec,
    images: &BTreeMap<String, PulledImage>,
    report: &ConvergeReport,
) -> Outcome {
    let mut digests = BTreeMap::new();
    let mut services = Vec::new();
    for service in &spec.services {
        let Some(pulled) = images.get(&service.name) else {
            continue;
        };
        let digest = repo_digest(pulled);
        digests.insert(
            service.name.clone(),
            digest.clone().unwrap_or_else(|| pulled.id.clone()),
        );
        let container = report
            .services
            .iter()
            .find(|o| o.service == service.name)
            .map(|o| o.container_id.clone())
            .unwrap_or_default();
        services.push(DeployedService {
            name: service.name.clone(),
            image: service.image.clone(),
            image_id: pulled.id.clone(),
            digest,
            container,
        });
    }
    Outcome::Succeeded { digests, services }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records converge progress and fences every Docker change with the stack lease.
struct Recorder<'a> {
    executor: &'a Executor,
    lease: &'a Lease,
    lost: &'a Arc<AtomicBool>,
    deployment: Uuid,
    metadata: &'a Metadata,
}

impl Recorder<'_> {
    async fn record(&mut self, event: Event) -> Result<(), WorkerError> {
        self.executor
            .record(
                self.lease,
                self.deployment,
                ExpectedVersion::Any,
                &[event],
                self.metadata,
            )
            .await
    }
}

impl ConvergeObserver for Recorder<'_> {
    async fn before_change(&mut self) -> Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(format!("lease on stack '{}' lost", self.lease.stack_key));
        }
        let mut tx = self
            .executor
            .pool
            .begin()
            .await
            .map_err(|e| e.to_string())?;
        lease::check(&mut tx, self.lease)
            .await
            .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    }

    async fn service_unchanged(&mut self, service: &str, container_id: &str) -> Result<(), String> {
        let event = Event::ServiceUnchanged {
            deployment: self.deployment,
            service: service.to_owned(),
            container: container_id.to_owned(),
        };
        self.record(event).await.map_err(|e| e.to_string())
    }

    async fn container_replaced(
        &mut self,
        service: &str,
        old: Option<&str>,
        new: &str,
    ) -> Result<(), String> {
        let event = Event::ContainerReplaced {
            deployment: self.deployment,
            service: service.to_owned(),
            old: old.map(str::to_owned),
            new: new.to_owned(),
        };
        self.record(event).await.map_err(|e| e.to_string())
    }
}

/// The services a stack's containers belong to (by compose label), in name order: the start
/// order when the manifest is not at hand.
async fn stack_services(docker: &DockerClient, stack: &str) -> Result<Vec<String>, DockerError> {
    let mut services: Vec<String> = docker
        .stack_containers(stack)
        .await?
        .into_iter()
        .filter(|c| {
            c.name == crate::docker::container_name(stack, c.service.as_deref().unwrap_or(""))
        })
        .filter_map(|c| c.service)
        .collect();
    services.sort();
    services.dedup();
    Ok(services)
}

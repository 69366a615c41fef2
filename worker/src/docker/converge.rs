//! Converging a Docker host to a [`StackSpec`]: the deploy executor's Docker half.
//!
//! The order of work, each step idempotent so that a retry after a crash finishes the job:
//! 1. validate the spec (nothing touched on error);
//! 2. ensure the stack network and named volumes;
//! 3. recover what a crashed earlier attempt left (`-old` containers, strays);
//! 4. per service, in order: unchanged, or replace (stop + rename the old, create + start
//!    the new, wait until ready); on failure remove the new one and roll back every service
//!    replaced in this run, in reverse order;
//! 5. when every service is done: remove the old containers and the containers of services
//!    that left the spec.
//!
//! The observer is asked before every change ([`ConvergeObserver::before_change`]); when it
//! refuses (the stack lease is lost) the converge stops at once and touches nothing more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, HealthConfig, HostConfig,
    HostConfigLogConfig, NetworkConnectRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptions;
use shiplog_events::spec::{ServiceSpec, StackSpec};

use super::health::SETTLE;
use super::ops::{label, summary_name};
use super::{
    DockerClient, DockerError, PulledImage, container_name, labels, network_name,
    old_container_name, stack_network_name, volume_name,
};

/// Who runs the converge, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvergeContext {
    /// Recorded as `io.shiplog.environment`.
    pub environment: String,
    /// Recorded as `io.shiplog.deployment`.
    pub deployment_id: String,
    /// Replace every container even when image and config are unchanged.
    pub force: bool,
    /// How long a new container may take to become healthy; `None` derives it from its
    /// health check: start_period + (interval + timeout) × (retries + 1) + 5 s.
    pub health_timeout: Option<Duration>,
    /// The deployment's deadline: a new container still not ready then is rolled back.
    pub deadline: Option<std::time::Instant>,
}

/// Told about every change, and asked before each one.
///
/// The executor implements it to record events and to check the stack lease: any `Err`
/// stops the converge at once with [`DockerError::LeaseLost`], without rollback (a stale
/// worker must not touch the stack any more; the next holder's converge recovers).
pub trait ConvergeObserver: Send {
    /// Called before each state-changing step; `Err` when the stack lease is lost.
    fn before_change(&mut self) -> impl Future<Output = Result<(), String>> + Send;

    /// The service's container already runs the pulled image with the same configuration.
    fn service_unchanged(
        &mut self,
        service: &str,
        container_id: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The service's new container is running (and healthy); `old` is the replaced
    /// container's id, kept stopped until the whole stack is done.
    fn container_replaced(
        &mut self,
        service: &str,
        old: Option<&str>,
        new: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// An observer that allows everything and records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl ConvergeObserver for NoopObserver {
    async fn before_change(&mut self) -> Result<(), String> {
        Ok(())
    }

    async fn service_unchanged(&mut self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }

    async fn container_replaced(
        &mut self,
        _: &str,
        _: Option<&str>,
        _: &str,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// What happened to a service's container. Ids are container ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAction {
    Unchanged,
    /// A container existed and was replaced (it has been removed once the stack was done).
    Replaced {
        old: Option<String>,
        new: String,
    },
    /// There was no container.
    Created {
        new: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOutcome {
    pub service: String,
    pub action: ServiceAction,
    /// The container that now runs the service.
    pub container_id: String,
    /// The image Id it runs.
    pub image_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvergeReport {
    /// One outcome per service, in spec order (on failure: the services done before it).
    pub services: Vec<ServiceOutcome>,
    /// Clean-up steps that failed after every service was up (removing replaced containers
    /// or containers of services that left the spec): the stack runs as asked, and the next
    /// converge retries them.
    pub cleanup_errors: Vec<String>,
}

/// A converge that did not reach the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvergeFailure {
    /// Why it failed; its message names the cause.
    pub error: DockerError,
    /// `true` when the services replaced in this run were all brought back. `false` when
    /// nothing had been replaced yet (then nothing needed restoring), when the failure was
    /// a lost lease (nothing more may be touched), or when restoring failed (see
    /// `rollback_errors`).
    pub rolled_back: bool,
    /// What was done before the failure (as it was before any rollback).
    pub report: ConvergeReport,
    /// Steps of the rollback that failed, one line each.
    pub rollback_errors: Vec<String>,
}

impl std::fmt::Display for ConvergeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if self.rolled_back {
            write!(f, "; the previous containers were restored")?;
        }
        if !self.rollback_errors.is_empty() {
            write!(
                f,
                "; rollback incomplete: {}",
                self.rollback_errors.join("; ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConvergeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl DockerClient {
    /// Converges the host to `stack`, with `images` pulled beforehand (by service name).
    /// See the module documentation for the steps.
    #[tracing::instrument(
        skip_all,
        fields(stack = %stack.name, version = %stack.version, deployment = %ctx.deployment_id)
    )]
    pub async fn converge<O: ConvergeObserver>(
        &self,
        ctx: &ConvergeContext,
        stack: &StackSpec,
        images: &BTreeMap<String, PulledImage>,
        observer: &mut O,
    ) -> Result<ConvergeReport, ConvergeFailure> {
        let mut run = Run {
            client: self,
            ctx,
            stack,
            images,
            observer,
            report: ConvergeReport::default(),
            changes: Vec::new(),
        };
        run.execute().await
    }
}

/// A container that the run stopped (and renamed) to make room for a new one.
#[derive(Debug)]
struct OldContainer {
    id: String,
    was_running: bool,
    renamed: bool,
}

/// One service touched by this run, kept for the rollback and the final clean-up.
#[derive(Debug)]
struct Change {
    service: String,
    old: Option<OldContainer>,
    new_id: Option<String>,
}

struct Run<'a, O> {
    client: &'a DockerClient,
    ctx: &'a ConvergeContext,
    stack: &'a StackSpec,
    images: &'a BTreeMap<String, PulledImage>,
    observer: &'a mut O,
    report: ConvergeReport,
    changes: Vec<Change>,
}

impl<O: ConvergeObserver> Run<'_, O> {
    async fn execute(&mut self) -> Result<ConvergeReport, ConvergeFailure> {
        if let Err(error) = validate(self.stack, self.images) {
            return Err(self.failure(error, false, Vec::new()));
        }
        if let Err(error) = self.prepare().await {
            return Err(self.failure(error, false, Vec::new()));
        }
        for service in &self.stack.services {
            match self.converge_service(service).await {
                Ok(outcome) => self.report.services.push(outcome),
                Err(error) => {
                    tracing::warn!(service = %service.name, %error, "service failed");
                    if matches!(error, DockerError::LeaseLost(_)) {
                        return Err(self.failure(error, false, Vec::new()));
                    }
                    let (rolled_back, rollback_errors) = self.rollback().await;
                    return Err(self.failure(error, rolled_back, rollback_errors));
                }
            }
        }
        if let Err(error) = self.finish().await {
            return Err(self.failure(error, false, Vec::new()));
        }
        Ok(std::mem::take(&mut self.report))
    }

    fn failure(
        &mut self,
        error: DockerError,
        rolled_back: bool,
        rollback_errors: Vec<String>,
    ) -> ConvergeFailure {
        ConvergeFailure {
            error,
            rolled_back,
            report: std::mem::take(&mut self.report),
            rollback_errors,
        }
    }

    /// Asks the observer before a change.
    async fn gate(&mut self) -> Result<(), DockerError> {
        self.observer
            .before_change()
            .await
            .map_err(DockerError::LeaseLost)
    }

    fn stack_name(&self) -> &str {
        &self.stack.name
    }

    /// Network, named volumes, and what a crashed attempt left behind.
    async fn prepare(&mut self) -> Result<(), DockerError> {
        let stack = self.stack_name().to_owned();
        for (network, internal) in used_networks(self.stack) {
            if !self.client.network_exists(&stack, &network).await? {
                self.gate().await?;
                self.client
                    .create_network(&stack, &network, internal)
                    .await?;
            }
        }

        let mut named: Vec<&str> = self
            .stack
            .services
            .iter()
            .flat_map(|s| s.volumes.iter())
            .filter(|v| !v.bind)
            .map(|v| v.source.as_str())
            .collect();
        named.sort_unstable();
        named.dedup();
        for volume in named {
            let name = volume_name(&stack, volume);
            if !self.client.volume_exists(&name).await? {
                self.gate().await?;
                self.client.create_volume(&stack, volume, &name).await?;
            }
        }

        for service in &self.stack.services {
            self.recover(&service.name).await?;
        }
        Ok(())
    }

    /// Puts a service back into a clean shape after a crash: one primary container at
    /// most, no `-old` one, no strays.
    async fn recover(&mut self, service: &str) -> Result<(), DockerError> {
        let stack = self.stack_name().to_owned();
        let primary_name = container_name(&stack, service);
        let old_name = old_container_name(&stack, service);
        let mut primary = None;
        let mut old = None;
        let mut strays = Vec::new();
        for container in self
            .client
            .project_containers(&stack, Some(service))
            .await?
        {
            let name = summary_name(&container);
            let Some(id) = container.id else { continue };
            if name == primary_name {
                primary = Some(id);
            } else if name == old_name {
                old = Some(id);
            } else {
                strays.push((id, name));
            }
        }
        if old.is_none() && strays.is_empty() {
            return Ok(());
        }
        self.gate().await?;
        for (id, name) in strays {
            tracing::warn!(%service, container = %name, "removing a stray container of the service");
            self.client.remove_container(&id).await?;
        }
        let Some(old) = old else { return Ok(()) };
        if let Some(primary) = primary {
            // Created but never started (the crash came between create and start): not
            // ready, and waiting for it would only run into the health deadline.
            let never_started = self
                .client
                .inspect_container_opt(&primary)
                .await?
                .and_then(|c| c.state)
                .and_then(|s| s.status)
                == Some(ContainerStateStatusEnum::CREATED);
            let ready = !never_started
                && match self
                    .client
                    .wait_ready(
                        service,
                        &primary,
                        self.ctx.health_timeout,
                        Duration::ZERO,
                        None,
                    )
                    .await
                {
                    Ok(()) => true,
                    Err(
                        DockerError::Exited { .. }
                        | DockerError::Unhealthy { .. }
                        | DockerError::ContainerStart { .. },
                    ) => false,
                    Err(other) => return Err(other),
                };
            if ready {
                tracing::info!(%service, "an earlier attempt replaced the container: removing the old one");
                return self.client.remove_container(&old).await;
            }
            tracing::warn!(%service, "an earlier attempt left a container that is not ready: restoring the old one");
            self.client.remove_container(&primary).await?;
        } else {
            tracing::warn!(%service, "an earlier attempt left only the old container: restoring it");
        }
        self.client.rename_container(&old, &primary_name).await?;
        self.client.start_container(&old).await
    }

    async fn converge_service(
        &mut self,
        service: &ServiceSpec,
    ) -> Result<ServiceOutcome, DockerError> {
        let stack = self.stack_name().to_owned();
        let pulled = self.images[&service.name].clone();
        let hash = service.config_hash();
        let name = container_name(&stack, &service.name);

        let current = self.client.inspect_container_opt(&name).await?;
        let mut old = None;
        if let Some(current) = &current {
            if label(current, labels::PROJECT) != Some(stack.as_str())
                || label(current, labels::SERVICE) != Some(service.name.as_str())
            {
                return Err(DockerError::ContainerStart {
                    service: service.name.clone(),
                    message: format!(
                        "the container name {name} is taken by a container that is not part \
                         of stack {stack}"
                    ),
                });
            }
            let id = current.id.clone().unwrap_or_else(|| name.clone());
            let running = current.state.as_ref().and_then(|s| s.status)
                == Some(ContainerStateStatusEnum::RUNNING);
            if !self.ctx.force
                && running
                && current.image.as_deref() == Some(pulled.id.as_str())
                && label(current, labels::CONFIG_HASH) == Some(hash.as_str())
            {
                self.observer
                    .service_unchanged(&service.name, &id)
                    .await
                    .map_err(DockerError::LeaseLost)?;
                tracing::info!(service = %service.name, container = %id, "unchanged");
                return Ok(ServiceOutcome {
                    service: service.name.clone(),
                    action: ServiceAction::Unchanged,
                    container_id: id,
                    image_id: pulled.id,
                });
            }
            old = Some((id, running));
        }

        let body = container_body(self.stack, self.ctx, service, &pulled, &hash)?;
        self.gate().await?;
        self.changes.push(Change {
            service: service.name.clone(),
            old: old.as_ref().map(|(id, was_running)| OldContainer {
                id: id.clone(),
                was_running: *was_running,
                renamed: false,
            }),
            new_id: None,
        });

        // Make room: the old one stops (releasing its host ports) and gives up the name.
        if let Some((old_id, _)) = &old {
            self.client.stop_container(old_id).await?;
            self.client
                .rename_container(old_id, &old_container_name(&stack, &service.name))
                .await?;
            if let Some(change) = self.changes.last_mut().and_then(|c| c.old.as_mut()) {
                change.renamed = true;
            }
        }

        let new_id = self.create(service, &name, &pulled, body).await?;
        if let Some(change) = self.changes.last_mut() {
            change.new_id = Some(new_id.clone());
        }
        if let Err(error) = self.start_and_wait(service, &new_id).await {
            // The failed container goes at once: a `created` one still holds the name.
            if let Err(cleanup) = self.client.remove_container(&new_id).await {
                tracing::warn!(service = %service.name, error = %cleanup, "could not remove the failed container");
            } else if let Some(change) = self.changes.last_mut() {
                change.new_id = None;
            }
            return Err(error);
        }

        let old_id = old.map(|(id, _)| id);
        self.observer
            .container_replaced(&service.name, old_id.as_deref(), &new_id)
            .await
            .map_err(DockerError::LeaseLost)?;
        tracing::info!(service = %service.name, old = ?old_id, new = %new_id, "container replaced");
        let action = match old_id {
            Some(old) => ServiceAction::Replaced {
                old: Some(old),
                new: new_id.clone(),
            },
            None => ServiceAction::Created {
                new: new_id.clone(),
            },
        };
        Ok(ServiceOutcome {
            service: service.name.clone(),
            action,
            container_id: new_id,
            image_id: pulled.id,
        })
    }

    /// Creates the container and checks it got the pulled image.
    async fn create(
        &mut self,
        service: &ServiceSpec,
        name: &str,
        pulled: &PulledImage,
        body: ContainerCreateBody,
    ) -> Result<String, DockerError> {
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let created = self
            .client
            .call(
                &format!("create container {name}"),
                self.client.docker.create_container(Some(options), body),
            )
            .await
            .map_err(|err| match err {
                // create never pulls: the pulled image went away (pruned?) since the pull.
                DockerError::Api {
                    status: 404,
                    message,
                    ..
                } => DockerError::ImageNotFound {
                    image: pulled.reference.clone(),
                    message: format!("gone from the host since the pull: {message}"),
                },
                DockerError::Api {
                    status: 400 | 409,
                    message,
                    ..
                } => DockerError::ContainerStart {
                    service: service.name.clone(),
                    message,
                },
                other => other,
            })?;
        let id = created.id;
        if let Some(change) = self.changes.last_mut() {
            change.new_id = Some(id.clone());
        }
        let inspected = self.client.inspect_container_opt(&id).await?;
        let actual = inspected.and_then(|c| c.image).unwrap_or_default();
        if actual != pulled.id {
            return Err(DockerError::ImageMoved {
                service: service.name.clone(),
                image: pulled.reference.clone(),
                expected: pulled.id.clone(),
                actual,
            });
        }
        self.connect_networks(service, &id).await?;
        Ok(id)
    }

    /// Joins the container to the service's networks after the first.
    async fn connect_networks(&self, service: &ServiceSpec, id: &str) -> Result<(), DockerError> {
        for attachment in service.networks.iter().skip(1) {
            let network = stack_network_name(self.stack_name(), &attachment.network);
            let request = NetworkConnectRequest {
                container: id.to_owned(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(aliases_of(service, &attachment.aliases)),
                    ..Default::default()
                }),
            };
            self.client
                .call(
                    &format!("connect container {id} to network {network}"),
                    self.client.docker.connect_network(&network, request),
                )
                .await?;
        }
        Ok(())
    }

    async fn start_and_wait(
        &mut self,
        service: &ServiceSpec,
        container: &str,
    ) -> Result<(), DockerError> {
        self.client
            .start_container(container)
            .await
            .map_err(|err| match err {
                // "port is already allocated", bad mounts, missing executables, …
                DockerError::Api { message, .. } => DockerError::ContainerStart {
                    service: service.name.clone(),
                    message,
                },
                other => other,
            })?;
        self.client
            .wait_ready(
                &service.name,
                container,
                self.ctx.health_timeout,
                SETTLE,
                self.ctx.deadline,
            )
            .await
    }

    /// Undoes this run's changes in reverse order: the new container goes, the old one
    /// gets its name back and runs again (if it ran before). Returns whether everything was
    /// restored, and what failed.
    async fn rollback(&mut self) -> (bool, Vec<String>) {
        let mut errors = Vec::new();
        if self.changes.is_empty() {
            return (false, errors);
        }
        if let Err(reason) = self.observer.before_change().await {
            errors.push(format!("rollback skipped: stack lease lost: {reason}"));
            return (false, errors);
        }
        let stack = self.stack_name().to_owned();
        let changes = std::mem::take(&mut self.changes);
        for change in changes.iter().rev() {
            let service = &change.service;
            if let Some(new) = &change.new_id
                && let Err(err) = self.client.remove_container(new).await
            {
                errors.push(format!(
                    "service {service}: removing the new container failed: {err}"
                ));
                continue;
            }
            let Some(old) = &change.old else { continue };
            if let Err(err) = self.restore(&stack, service, old).await {
                errors.push(format!(
                    "service {service}: restoring the previous container failed: {err}"
                ));
            }
        }
        tracing::info!(stack = %stack, ok = errors.is_empty(), "rollback done");
        (errors.is_empty(), errors)
    }

    async fn restore(
        &mut self,
        stack: &str,
        service: &str,
        old: &OldContainer,
    ) -> Result<(), DockerError> {
        let primary = container_name(stack, service);
        if old.renamed {
            // Whatever else holds the name (a half-created container) must go first.
            if let Some(holder) = self.client.inspect_container_opt(&primary).await?
                && holder.id.as_deref() != Some(old.id.as_str())
            {
                let holder_id = holder.id.unwrap_or_else(|| primary.clone());
                self.client.remove_container(&holder_id).await?;
            }
            self.client.rename_container(&old.id, &primary).await?;
        }
        if old.was_running {
            self.client.start_container(&old.id).await?;
            self.client
                .wait_ready(service, &old.id, self.ctx.health_timeout, SETTLE, None)
                .await?;
        }
        Ok(())
    }

    /// Every service is up: the replaced containers and those of services that left the
    /// spec go. Failures here are reported, not fatal: the stack runs as asked.
    async fn finish(&mut self) -> Result<(), DockerError> {
        let stack = self.stack_name().to_owned();
        let olds: Vec<(String, String)> = self
            .changes
            .iter()
            .filter_map(|c| c.old.as_ref().map(|o| (c.service.clone(), o.id.clone())))
            .collect();
        let wanted: HashSet<&str> = self
            .stack
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let orphans: Vec<(String, String)> = self
            .client
            .project_containers(&stack, None)
            .await?
            .into_iter()
            .filter_map(|c| {
                let service = c.labels.as_ref()?.get(labels::SERVICE)?.clone();
                (!wanted.contains(service.as_str())).then(|| (service, c.id.unwrap_or_default()))
            })
            .filter(|(_, id)| !id.is_empty())
            .collect();
        if olds.is_empty() && orphans.is_empty() {
            return Ok(());
        }
        self.gate().await?;
        for (service, id) in olds {
            if let Err(err) = self.client.remove_container(&id).await {
                self.report.cleanup_errors.push(format!(
                    "service {service}: removing the replaced container failed: {err}"
                ));
            }
        }
        for (service, id) in orphans {
            tracing::info!(%service, container = %id, "removing a service that left the stack");
            let removed = match self.client.stop_container(&id).await {
                Ok(()) => self.client.remove_container(&id).await,
                Err(err) => Err(err),
            };
            if let Err(err) = removed {
                self.report.cleanup_errors.push(format!(
                    "service {service} (no longer in the stack): removing its container \
                     failed: {err}"
                ));
            }
        }
        self.changes.clear();
        Ok(())
    }
}

/// Everything the container is created with.
fn container_body(
    stack: &StackSpec,
    ctx: &ConvergeContext,
    service: &ServiceSpec,
    pulled: &PulledImage,
    hash: &str,
) -> Result<ContainerCreateBody, DockerError> {
    let mut container_labels: HashMap<String, String> = service
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Ours last: a spec label cannot fake ownership.
    for (key, value) in [
        (labels::PROJECT, stack.name.as_str()),
        (labels::SERVICE, service.name.as_str()),
        (labels::CONTAINER_NUMBER, "1"),
        (labels::ONEOFF, "False"),
        (labels::STACK, stack.name.as_str()),
        (labels::ENVIRONMENT, ctx.environment.as_str()),
        (labels::VERSION, stack.version.as_str()),
        (labels::DEPLOYMENT, ctx.deployment_id.as_str()),
        (labels::CONFIG_HASH, hash),
    ] {
        container_labels.insert(key.to_owned(), value.to_owned());
    }

    let env: Vec<String> = service
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();

    let mut exposed_ports: Vec<String> = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &service.ports {
        let key = format!(
            "{}/{}",
            port.container_port,
            port.protocol.to_ascii_lowercase()
        );
        if !exposed_ports.contains(&key) {
            exposed_ports.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: port.host_ip.clone(),
                // None: the engine chooses a free port.
                host_port: port.host_port.map(|p| p.to_string()),
            });
    }

    let binds: Vec<String> = service
        .volumes
        .iter()
        .map(|v| {
            let source = if v.bind {
                v.source.clone()
            } else {
                volume_name(&stack.name, &v.source)
            };
            let mode = if v.read_only { ":ro" } else { "" };
            format!("{source}:{}{mode}", v.target)
        })
        .collect();

    let restart_policy = restart_policy(service)?.map(|name| RestartPolicy {
        name: Some(name),
        maximum_retry_count: None,
    });

    let healthcheck = service.healthcheck.as_ref().map(|h| {
        let nanos = |ms: Option<u64>| ms.map(|ms| (ms as i64).saturating_mul(1_000_000));
        HealthConfig {
            test: Some(h.test.clone()),
            interval: nanos(h.interval_ms),
            timeout: nanos(h.timeout_ms),
            retries: h.retries.map(i64::from),
            start_period: nanos(h.start_period_ms),
            start_interval: None,
        }
    });

    let options = &service.options;
    for port in &options.expose {
        if !exposed_ports.contains(port) {
            exposed_ports.push(port.clone());
        }
    }
    let list = |items: &Vec<String>| (!items.is_empty()).then(|| items.clone());
    // Created on its first network; `connect_networks` adds the others before the start
    // (engines before API 1.44 take one endpoint at creation).
    let (network, aliases) = match service.networks.first() {
        Some(first) => (
            stack_network_name(&stack.name, &first.network),
            aliases_of(service, &first.aliases),
        ),
        None => (network_name(&stack.name), aliases_of(service, &[])),
    };
    Ok(ContainerCreateBody {
        hostname: options.hostname.clone(),
        user: options.user.clone(),
        working_dir: options.working_dir.clone(),
        stop_signal: options.stop_signal.clone(),
        stop_timeout: options.stop_timeout_secs,
        tty: options.tty.then_some(true),
        open_stdin: options.stdin_open.then_some(true),
        image: Some(pulled.reference.clone()),
        labels: Some(container_labels),
        env: Some(env),
        cmd: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        exposed_ports: (!exposed_ports.is_empty()).then_some(exposed_ports),
        healthcheck,
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            binds: (!binds.is_empty()).then_some(binds),
            restart_policy,
            network_mode: Some(network.clone()),
            memory: service.limits.memory,
            nano_cpus: service.limits.nano_cpus,
            privileged: options.privileged.then_some(true),
            init: options.init,
            cap_add: list(&options.cap_add),
            cap_drop: list(&options.cap_drop),
            security_opt: list(&options.security_opt),
            dns: list(&options.dns),
            extra_hosts: list(&options.extra_hosts),
            sysctls: (!options.sysctls.is_empty())
                .then(|| options.sysctls.clone().into_iter().collect()),
            shm_size: options.shm_size,
            log_config: options.logging.as_ref().map(|l| HostConfigLogConfig {
                typ: Some(l.driver.clone()),
                config: Some(l.options.clone().into_iter().collect()),
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network,
                EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    })
}

/// The service's name and its extra aliases on one network.
fn aliases_of(service: &ServiceSpec, extra: &[String]) -> Vec<String> {
    let mut aliases = vec![service.name.clone()];
    aliases.extend(extra.iter().filter(|a| **a != service.name).cloned());
    aliases
}

/// Every network some service joins, with its `internal` flag: `default` when a service
/// names none (or names it), and each declared network a service names.
fn used_networks(stack: &StackSpec) -> Vec<(String, bool)> {
    let mut used: Vec<(String, bool)> = Vec::new();
    for service in &stack.services {
        let names: Vec<&str> = match service.networks.is_empty() {
            true => vec!["default"],
            false => service
                .networks
                .iter()
                .map(|a| a.network.as_str())
                .collect(),
        };
        for name in names {
            if used.iter().any(|(n, _)| n == name) {
                continue;
            }
            let internal = stack.networks.iter().any(|n| n.name == name && n.internal);
            used.push((name.to_owned(), internal));
        }
    }
    used
}

fn restart_policy(service: &ServiceSpec) -> Result<Option<RestartPolicyNameEnum>, DockerError> {
    Ok(match service.restart.as_deref() {
        None | Some("") => None,
        Some("no") => Some(RestartPolicyNameEnum::NO),
        Some("always") => Some(RestartPolicyNameEnum::ALWAYS),
        Some("on-failure") => Some(RestartPolicyNameEnum::ON_FAILURE),
        Some("unless-stopped") => Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        Some(other) => {
            return Err(DockerError::InvalidSpec(format!(
                "service {}: unknown restart policy {other:?} (expected no, always, \
                 on-failure or unless-stopped)",
                service.name
            )));
        }
    })
}

/// Compose's rule for project names: lowercase letters, digits, `-` and `_`, starting with a
/// letter or digit.
fn valid_stack_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Docker's rule for container names (the service name is part of them).
fn valid_object_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Refuses a spec that cannot be converged, before anything is touched.
fn validate(stack: &StackSpec, images: &BTreeMap<String, PulledImage>) -> Result<(), DockerError> {
    let invalid = |message: String| Err(DockerError::InvalidSpec(message));
    if !valid_stack_name(&stack.name) {
        return invalid(format!(
            "stack name {:?} must be lowercase letters, digits, '-' or '_', starting with a \
             letter or digit",
            stack.name
        ));
    }
    let mut defined: HashSet<&str> = HashSet::new();
    for service in &stack.services {
        let name = service.name.as_str();
        if !valid_object_name(name) {
            return invalid(format!(
                "service name {name:?} must be letters, digits, '_', '.' or '-'"
            ));
        }
        if defined.contains(name) {
            return invalid(format!("service {name} is defined twice"));
        }
        for dependency in &service.depends_on {
            if !defined.contains(dependency.as_str()) {
                return invalid(format!(
                    "service {name} depends on {dependency}, which is not defined before it"
                ));
            }
        }
        if !images.contains_key(name) {
            return invalid(format!("no pulled image for service {name}"));
        }
        restart_policy(service)?;
        for port in &service.ports {
            if port.container_port == 0 {
                return invalid(format!("service {name}: container port 0"));
            }
            if !matches!(
                port.protocol.to_ascii_lowercase().as_str(),
                "tcp" | "udp" | "sctp"
            ) {
                return invalid(format!(
                    "service {name}: unknown port protocol {:?}",
                    port.protocol
                ));
            }
        }
        for volume in &service.volumes {
            if !volume.target.starts_with('/') {
                return invalid(format!(
                    "service {name}: volume target {:?} is not an absolute path",
                    volume.target
                ));
            }
            if volume.bind && !volume.source.starts_with('/') {
                return invalid(format!(
                    "service {name}: bind source {:?} is not an absolute path",
                    volume.source
                ));
            }
            if !volume.bind && !valid_object_name(&volume.source) {
                return invalid(format!(
                    "service {name}: invalid volume name {:?}",
                    volume.source
                ));
            }
        }
        if let Some(health) = &service.healthcheck
            && !matches!(
                health.test.first().map(String::as_str),
                Some("CMD" | "CMD-SHELL" | "NONE")
            )
        {
            return invalid(format!(
                "service {name}: a health check test starts with CMD, CMD-SHELL or NONE"
            ));
        }
        defined.insert(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiplog_events::spec::{HealthSpec, PortSpec, VolumeSpec};

    fn service(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            image: "127.0.0.1:5000/x/web:v1".into(),
            environment: BTreeMap::from([("A".into(), "1".into())]),
            command: None,
            entrypoint: None,
            ports: vec![PortSpec {
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
                container_port: 8080,
                protocol: "tcp".into(),
            }],
            volumes: vec![VolumeSpec {
                source: "data".into(),
                target: "/data".into(),
                read_only: true,
                bind: false,
            }],
            labels: BTreeMap::from([(labels::STACK.into(), "forged".into())]),
            healthcheck: Some(HealthSpec {
                test: vec!["CMD".into(), "true".into()],
                interval_ms: Some(1500),
                timeout_ms: None,
                retries: Some(2),
                start_period_ms: None,
            }),
            restart: Some("unless-stopped".into()),
            depends_on: vec![],
            limits: Default::default(),
            options: Default::default(),
            networks: Vec::new(),
        }
    }

    fn stack(services: Vec<ServiceSpec>) -> StackSpec {
        StackSpec {
            name: "demo".into(),
            version: "1.2.3".into(),
            services,
            networks: Vec::new(),
        }
    }

    fn images(names: &[&str]) -> BTreeMap<String, PulledImage> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    PulledImage {
                        reference: "127.0.0.1:5000/x/web:v1".into(),
                        id: "sha256:abc".into(),
                        repo_digests: vec![],
                    },
                )
            })
            .collect()
    }

    fn ctx() -> ConvergeContext {
        ConvergeContext {
            environment: "prod".into(),
            deployment_id: "d-1".into(),
            force: false,
            health_timeout: None,
            deadline: None,
        }
    }

    #[test]
    fn body_carries_labels_ports_volumes_and_health_in_nanoseconds() {
        let spec = stack(vec![service("web")]);
        let body = container_body(
            &spec,
            &ctx(),
            &spec.services[0],
            &images(&["web"])["web"],
            "h",
        )
        .unwrap();
        let labels = body.labels.unwrap();
        assert_eq!(labels[labels::STACK], "demo");
        assert_eq!(labels[labels::PROJECT], "demo");
        assert_eq!(labels[labels::SERVICE], "web");
        assert_eq!(labels[labels::CONFIG_HASH], "h");
        assert_eq!(labels[labels::VERSION], "1.2.3");
        assert_eq!(labels[labels::ONEOFF], "False");
        assert_eq!(body.exposed_ports.unwrap(), vec!["8080/tcp".to_string()]);
        let host = body.host_config.unwrap();
        let binding = &host.port_bindings.unwrap()["8080/tcp"];
        assert_eq!(
            binding.as_ref().unwrap()[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(binding.as_ref().unwrap()[0].host_port, None);
        assert_eq!(host.binds.unwrap(), vec!["demo_data:/data:ro".to_string()]);
        assert_eq!(host.network_mode.as_deref(), Some("demo_default"));
        let health = body.healthcheck.unwrap();
        assert_eq!(health.interval, Some(1_500_000_000));
        assert_eq!(health.retries, Some(2));
        assert_eq!(health.timeout, None);
        assert_eq!(body.env.unwrap(), vec!["A=1".to_string()]);
    }

    #[test]
    fn validation_refuses_what_cannot_be_converged() {
        let mut late = service("api");
        late.depends_on = vec!["db".into()];
        let spec = stack(vec![late, service("db")]);
        let err = validate(&spec, &images(&["api", "db"])).unwrap_err();
        assert!(err.to_string().contains("depends on db"), "{err}");

        let spec = stack(vec![service("web")]);
        assert!(validate(&spec, &images(&[])).is_err());

        let mut bad = service("web");
        bad.restart = Some("sometimes".into());
        assert!(validate(&stack(vec![bad]), &images(&["web"])).is_err());

        let mut upper = stack(vec![service("web")]);
        upper.name = "Demo".into();
        assert!(validate(&upper, &images(&["web"])).is_err());

        let mut db = service("db");
        db.depends_on = vec![];
        let mut api = service("api");
        api.depends_on = vec!["db".into()];
        assert!(validate(&stack(vec![db, api]), &images(&["db", "api"])).is_ok());
    }
}

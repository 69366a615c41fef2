//! Waiting for a started container to be ready: running, and healthy when it has a health
//! check. The engine has no wait-for-healthy call, so poll with a deadline.

use std::time::{Duration, Instant};

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, HealthConfig, HealthStatusEnum,
};

use bollard::query_parameters::LogsOptions;
use futures::StreamExt;

use super::{DockerClient, DockerError};

/// How many of its last lines an exited container's error quotes.
const LOG_TAIL_LINES: u32 = 5;
const MAX_OUTPUT_CHARS: usize = 500;

/// How often the container is inspected while waiting.
const POLL: Duration = Duration::from_millis(200);
/// How long a container without a health check must stay up to count as started: long
/// enough to catch a process that exits at once.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);
/// How long a container without a health check may take to reach `running`.
const NO_HEALTH_DEADLINE: Duration = Duration::from_secs(10);

// The engine's defaults for a health check that leaves a value unset.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;

/// The health check a container really runs (the image's, or the spec's over it).
fn effective_health(container: &ContainerInspectResponse) -> Option<&HealthConfig> {
    let health = container.config.as_ref()?.healthcheck.as_ref()?;
    match health.test.as_deref() {
        None | Some([]) => None,
        Some([kind, ..]) if kind == "NONE" => None,
        Some(_) => Some(health),
    }
}

/// start_period + (interval + timeout) × (retries + 1) + 5 s: every check may use its whole
/// timeout, and the engine only declares `unhealthy` after `retries` failures.
pub(crate) fn default_health_deadline(health: &HealthConfig) -> Duration {
    let nanos = |value: Option<i64>, default: Duration| match value {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    };
    let interval = nanos(health.interval, DEFAULT_INTERVAL);
    let timeout = nanos(health.timeout, DEFAULT_TIMEOUT);
    let start_period = nanos(health.start_period, Duration::ZERO);
    let retries = match health.retries {
        Some(n) if n > 0 => n as u32,
        _ => DEFAULT_RETRIES,
    };
    start_period + (interval + timeout) * (retries + 1) + Duration::from_secs(5)
}

fn last_check(container: &ContainerInspectResponse) -> String {
    let last = container
        .state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last());
    match last {
        None => "no health check has completed".to_owned(),
        Some(result) => {
            let output = result.output.as_deref().unwrap_or_default().trim();
            let code = result
                .exit_code
                .map_or_else(|| "?".to_owned(), |c| c.to_string());
            if output.is_empty() {
                format!("last check exited with {code} (no output)")
            } else {
                format!("last check exited with {code}: {output}")
            }
        }
    }
}

impl DockerClient {
    /// The last lines a container printed (stdout and stderr), best effort: `None` when it
    /// printed nothing or the logs cannot be read.
    pub(crate) async fn last_output(&self, container: &str) -> Option<String> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: LOG_TAIL_LINES.to_string(),
            ..Default::default()
        };
        let read = async {
            let mut text = String::new();
            let mut logs = self.docker.logs(container, Some(options));
            while let Some(Ok(chunk)) = logs.next().await {
                text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
            }
            text
        };
        let text = tokio::time::timeout(self.call_timeout, read).await.ok()?;
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return None;
        }
        let mut joined = lines.join(" / ");
        if joined.len() > MAX_OUTPUT_CHARS {
            let cut = (0..=MAX_OUTPUT_CHARS)
                .rev()
                .find(|i| joined.is_char_boundary(*i))
                .unwrap_or(0);
            joined.truncate(cut);
            joined.push('…');
        }
        Some(joined)
    }

    /// Waits until `container` runs and, when it has a health check (from the spec or the
    /// image), is healthy. Without a health check it must stay running for `settle`.
    ///
    /// Fails with [`DockerError::Exited`] when it stops or its restart policy restarts it,
    /// [`DockerError::Unhealthy`] when the engine declares it unhealthy or the deadline
    /// (`health_timeout`, else derived from the health check) passes.
    pub(crate) async fn wait_ready(
        &self,
        service: &str,
        container: &str,
        health_timeout: Option<Duration>,
        settle: Duration,
        until: Option<Instant>,
    ) -> Result<(), DockerError> {
        let started = Instant::now();
        let mut baseline_restarts = None;
        loop {
            let Some(inspected) = self.inspect_container_opt(container).await? else {
                return Err(DockerError::ContainerStart {
                    service: service.to_owned(),
                    message: format!("container {container} disappeared after it was started"),
                });
            };
            let health = effective_health(&inspected);
            let deadline = match (health, health_timeout) {
                (Some(_), Some(limit)) => limit,
                (Some(health), None) => default_health_deadline(health),
                (None, limit) => settle + limit.unwrap_or(NO_HEALTH_DEADLINE),
            };
            let state = inspected.state.clone().unwrap_or_default();
            let restarts = inspected.restart_count.unwrap_or(0);
            let baseline = *baseline_restarts.get_or_insert(restarts);
            let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
            let stopped = matches!(
                status,
                ContainerStateStatusEnum::EXITED
                    | ContainerStateStatusEnum::DEAD
                    | ContainerStateStatusEnum::RESTARTING
            );
            if stopped || restarts > baseline {
                return Err(DockerError::Exited {
                    service: service.to_owned(),
                    exit_code: state.exit_code.unwrap_or(-1),
                    output: self.last_output(container).await,
                });
            }
            let running = status == ContainerStateStatusEnum::RUNNING;
            if running && health.is_some() {
                let health_status = state
                    .health
                    .as_ref()
                    .and_then(|h| h.status)
                    .unwrap_or(HealthStatusEnum::STARTING);
                match health_status {
                    HealthStatusEnum::HEALTHY => return Ok(()),
                    HealthStatusEnum::UNHEALTHY => {
                        return Err(DockerError::Unhealthy {
                            service: service.to_owned(),
                            detail: format!("the health check failed; {}", last_check(&inspected)),
                        });
                    }
                    _ => {}
                }
            } else if running && started.elapsed() >= settle {
                return Ok(());
            }
            // The deployment's own deadline: give up and let the caller roll back.
            if until.is_some_and(|until| Instant::now() >= until) {
                return Err(DockerError::Timeout {
                    operation: format!("waiting for service {service} to become ready"),
                    after: started.elapsed(),
                });
            }
            if started.elapsed() >= deadline {
                let detail = if !running {
                    format!(
                        "still {status} after {}s instead of running",
                        deadline.as_secs()
                    )
                } else {
                    format!(
                        "still starting after {}s; {}",
                        deadline.as_secs(),
                        last_check(&inspected)
                    )
                };
                return Err(DockerError::Unhealthy {
                    service: service.to_owned(),
                    detail,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deadline_uses_engine_defaults() {
        let unset = HealthConfig {
            test: Some(vec!["CMD".into(), "true".into()]),
            ..Default::default()
        };
        // (30 + 30) × 4 + 5
        assert_eq!(default_health_deadline(&unset), Duration::from_secs(245));
        let fast = HealthConfig {
            test: Some(vec!["CMD".into(), "true".into()]),
            interval: Some(1_000_000_000),
            timeout: Some(2_000_000_000),
            retries: Some(3),
            start_period: Some(500_000_000),
            ..Default::default()
        };
        // 0.5 + (1 + 2) × 4 + 5
        assert_eq!(
            default_health_deadline(&fast),
            Duration::from_millis(17_500)
        );
    }
}

//! Runs the queue consumers: one apalis worker per environment this process serves, each
//! supervised (restarted with backoff when the database goes away), new environments
//! picked up as they are registered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_postgres::{Config as QueueConfig, PostgresStorage};
use shiplog_events::commands::environments;
use shiplog_events::db;
use shiplog_events::queue::{self, DeployJob};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{Settings, WorkerConfig};
use crate::executor::Executor;
use crate::metrics::{self, WorkerMetrics};

const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A consumer that ran this long before failing was healthy: its restart backoff resets.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// A name no other process, and no earlier life of this one, has used: apalis keeps a
/// dead worker's name "alive" until it misses its heartbeats.
pub fn unique_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", Uuid::now_v7().simple())
}

/// Runs until `shutdown` turns true.
pub async fn run(
    config: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), shiplog_events::Error> {
    let pool = connect_with_retry(&config, shutdown.clone()).await?;
    db::migrate(&pool).await?;
    let name = unique_worker_name();
    tracing::info!(worker = %name, "shiplog-worker started");
    let metrics = Arc::new(WorkerMetrics::new());
    let metrics_server = match config.metrics_listen.0 {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                shiplog_events::Error::Invalid(format!("metrics listener {addr}: {e}"))
            })?;
            tracing::info!(address = %listener.local_addr().unwrap_or(addr), "metrics listening");
            let server = metrics::server(listener, metrics.clone()).map_err(|e| {
                shiplog_events::Error::Invalid(format!("metrics listener {addr}: {e}"))
            })?;
            let handle = server.handle();
            tokio::spawn(server);
            Some(handle)
        }
        None => None,
    };
    let executor = Arc::new(Executor::new(
        pool.clone(),
        name.clone(),
        config.settings(),
        metrics,
    ));
    let filter: HashSet<String> = config.environments.iter().cloned().collect();
    let mut running = HashSet::new();
    let mut tasks = Vec::new();
    let mut stop = shutdown.clone();
    loop {
        match environments::list(&pool).await {
            Ok(envs) => {
                for env in envs {
                    if (!filter.is_empty() && !filter.contains(&env.id))
                        || !running.insert(env.id.clone())
                    {
                        continue;
                    }
                    tracing::info!(environment = %env.id, "consuming deployments");
                    tasks.push(tokio::spawn(crate::probe::run(
                        pool.clone(),
                        executor.clone(),
                        env.id.clone(),
                        shutdown.clone(),
                    )));
                    tasks.push(tokio::spawn(supervise(
                        pool.clone(),
                        executor.clone(),
                        config.clone(),
                        env.id,
                        shutdown.clone(),
                    )));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list environments"),
        }
        tokio::select! {
            _ = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Some(handle) = metrics_server {
        handle.stop(true).await;
    }
    Ok(())
}

async fn connect_with_retry(
    config: &WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<PgPool, shiplog_events::Error> {
    let mut delay = Duration::from_millis(500);
    loop {
        let acquire = Duration::from_millis(config.db_acquire_timeout_ms);
        match db::connect(&config.database_url, config.db_max_connections, acquire).await {
            Ok(pool) => return Ok(pool),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unreachable, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|s| *s) => return Err(e),
                }
                delay = (delay * 2).min(MAX_RESTART_DELAY);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Keeps one environment's consumer alive: apalis stops for good when the database is
/// away longer than the pool's acquire timeout, so it is restarted here with backoff.
async fn supervise(
    pool: PgPool,
    executor: Arc<Executor>,
    config: WorkerConfig,
    environment: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = config.settings();
    let mut delay = Duration::from_millis(500);
    for generation in 0u64.. {
        let name = format!("{}/{environment}/{generation}", executor.worker());
        let started = tokio::time::Instant::now();
        let result = consume(
            &pool,
            &executor,
            &config,
            &settings,
            &environment,
            &name,
            shutdown.clone(),
        )
        .await;
        if *shutdown.borrow() {
            return;
        }
        // A consumer that ran well for a while starts the backoff afresh.
        if started.elapsed() > HEALTHY_RUN {
            delay = Duration::from_millis(500);
        }
        match result {
            Ok(()) => tracing::warn!(%environment, "queue consumer stopped; restarting"),
            Err(e) => {
                tracing::error!(%environment, error = %e, "queue consumer failed; restarting")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(MAX_RESTART_DELAY);
    }
}

async fn consume(
    pool: &PgPool,
    executor: &Arc<Executor>,
    config: &WorkerConfig,
    settings: &Settings,
    environment: &str,
    name: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let queue_config = QueueConfig::default()
        .queue(queue::queue_name(environment))
        .batch_size(config.concurrency.max(1))
        .heartbeat_interval(settings.heartbeat)
        .missed_heartbeats(3);
    let backend = PostgresStorage::<DeployJob>::new(pool)
        .with_config(queue_config)
        .with_pubsub();
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .data(executor.clone())
        .concurrency(config.concurrency.max(1))
        .build(handle);
    worker
        .run_until(async move {
            let _ = shutdown.wait_for(|s| *s).await;
            Ok::<(), WorkerError>(())
        })
        .await
}

async fn handle(job: DeployJob, executor: Data<Arc<Executor>>) -> Result<(), BoxDynError> {
    match executor.run(job.deployment).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(deployment = %job.deployment, error = %e, "deployment could not be carried out; the queue will retry");
            // apalis retries at once; pace it so a database outage does not burn attempts.
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err(Box::new(e))
        }
    }
}

//! Engine probes: every few seconds each worker pings the engine of every environment it
//! serves and records the outcome in `environment_status` (shown by
//! `GET /api/environments`), and the compose containers it saw in `environment_containers`
//! (unmanaged projects in `GET /api/environments/{env}/stacks`). Deployments that cannot reach an engine record it too, at once.
//!
//! Observed state, not a domain decision: a plain table overwritten by the newest check,
//! not events, which would fill the log with one observation per worker every few seconds.

use std::sync::Arc;

use shiplog_events::commands::environments;
use shiplog_events::inventory;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::executor::Executor;

/// Probes `environment` until `shutdown` turns true.
pub async fn run(
    pool: PgPool,
    executor: Arc<Executor>,
    environment: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let interval = executor.settings().probe_interval;
    loop {
        match environments::get(&pool, &environment).await {
            Ok(Some(env)) => {
                let outcome = executor.probe(&env).await;
                let text = match outcome {
                    Ok(containers) => {
                        let seen =
                            inventory::record(&pool, &environment, executor.worker(), containers);
                        if let Err(e) = seen.await {
                            tracing::warn!(%environment, error = %e, "cannot record the engine's containers");
                        }
                        None
                    }
                    Err(e) => {
                        tracing::debug!(%environment, error = %e, "engine probe failed");
                        Some(e.to_string())
                    }
                };
                let recorded = environments::record_status(
                    &pool,
                    &environment,
                    executor.worker(),
                    text.as_deref().map_or(Ok(()), Err),
                )
                .await;
                if let Err(e) = recorded {
                    tracing::warn!(%environment, error = %e, "cannot record the engine's status");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%environment, error = %e, "cannot read the environment"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

//! Connecting and migrating: the project's migrations and apalis's own (schema `apalis`).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::error::{Error, Result};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a request may wait for a connection before it is told the database is
/// unavailable (503): short, so clients never hang while the database is down.
/// Below 2 s so that the 503 reaches a client before its own 2 s timeout.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

pub async fn connect(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        // A few warm connections spare a burst the cost of connecting (SCRAM) first.
        .min_connections(2.min(max_connections))
        .acquire_timeout(acquire_timeout)
        .connect(url)
        .await?)
}

pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| Error::Database(sqlx::Error::Migrate(Box::new(e))))?;
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(|e| Error::Queue(format!("apalis migrations: {e}")))?;
    Ok(())
}

/// Readiness: the database answers and every migration this build knows is applied.
/// `Err` carries a message fit for an operator.
pub async fn check_ready(pool: &PgPool) -> std::result::Result<(), String> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .map_err(|e| format!("database unreachable: {e}"))?;
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("migrations not applied: {}", missing.join(", ")))
    }
}

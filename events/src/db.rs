//! Connecting and migrating: the project's migrations and apalis's own (schema `apalis`).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::error::{Error, Result};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        // Fail fast while the database is down, so callers can answer 503 promptly.
        .acquire_timeout(Duration::from_secs(2))
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

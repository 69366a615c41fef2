//! Environments: each is one Docker endpoint.

use sqlx::PgPool;

use super::validate_name;
use crate::error::{Error, Result};
use crate::event::{Event, Metadata, stream};
use crate::store::{self, ExpectedVersion};

const ENDPOINT_SCHEMES: &[&str] = &["unix://", "tcp://", "http://", "https://"];

pub fn decide_register(id: &str, name: &str, docker_endpoint: &str) -> Result<Event> {
    validate_name("environment id", id)?;
    if name.trim().is_empty() {
        return Err(Error::Invalid("environment name must not be empty".into()));
    }
    if !ENDPOINT_SCHEMES
        .iter()
        .any(|s| docker_endpoint.starts_with(s))
        || docker_endpoint.len() > 500
    {
        return Err(Error::Invalid(format!(
            "invalid dockerEndpoint '{docker_endpoint}': expected unix:///path or tcp://host:port"
        )));
    }
    Ok(Event::EnvironmentRegistered {
        id: id.to_owned(),
        name: name.trim().to_owned(),
        docker_endpoint: docker_endpoint.to_owned(),
    })
}

pub async fn register(
    pool: &PgPool,
    id: &str,
    name: &str,
    docker_endpoint: &str,
    metadata: &Metadata,
) -> Result<()> {
    let event = decide_register(id, name, docker_endpoint)?;
    let mut tx = pool.begin().await?;
    match store::append(
        &mut tx,
        &stream::environment(id),
        ExpectedVersion::NoStream,
        &[event],
        metadata,
    )
    .await
    {
        Err(Error::Conflict { .. }) => {
            return Err(Error::AlreadyExists(format!(
                "environment '{id}' already exists"
            )));
        }
        other => other?,
    };
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: String,
    pub name: String,
    pub docker_endpoint: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn list(pool: &PgPool) -> Result<Vec<Environment>> {
    Ok(
        sqlx::query_as(
            "SELECT id, name, docker_endpoint, created_at FROM environments ORDER BY id",
        )
        .fetch_all(pool)
        .await?,
    )
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Environment>> {
    Ok(sqlx::query_as(
        "SELECT id, name, docker_endpoint, created_at FROM environments WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_validates_id_and_endpoint() {
        assert!(decide_register("prod", "Production", "unix:///var/run/docker.sock").is_ok());
        assert!(decide_register("Prod", "Production", "unix:///x").is_err());
        assert!(decide_register("prod", " ", "unix:///x").is_err());
        assert!(decide_register("prod", "P", "ftp://x").is_err());
    }
}

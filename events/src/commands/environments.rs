//! Environments: each is one Docker endpoint.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;

use super::validate_name;
use crate::endpoint::{self, Endpoint, SshOptions, SshRequest, TlsFiles, TlsRequest};
use crate::error::{Error, Result};
use crate::event::{Event, Metadata, stream};
use crate::store::{self, ExpectedVersion};

/// What `POST /api/environments` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewEnvironment<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub docker_endpoint: &'a str,
    pub tls: Option<&'a TlsRequest>,
    pub ssh: Option<&'a SshRequest>,
}

pub fn decide_register(new: &NewEnvironment<'_>) -> Result<Event> {
    validate_name("environment id", new.id)?;
    if new.name.trim().is_empty() {
        return Err(Error::Invalid("environment name must not be empty".into()));
    }
    let endpoint = endpoint::decide(new.docker_endpoint, new.tls, new.ssh)?;
    Ok(Event::EnvironmentRegistered {
        id: new.id.to_owned(),
        name: new.name.trim().to_owned(),
        docker_endpoint: endpoint.url,
        tls: endpoint.tls,
        ssh: endpoint.ssh,
    })
}

pub async fn register(pool: &PgPool, new: &NewEnvironment<'_>, metadata: &Metadata) -> Result<()> {
    let id = new.id;
    let event = decide_register(new)?;
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

/// An environment as the API shows it: its endpoint, the credential file paths, and what
/// the workers saw at their last check of its engine.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: String,
    pub name: String,
    pub docker_endpoint: String,
    pub tls: Option<TlsView>,
    pub ssh: Option<SshView>,
    pub created_at: DateTime<Utc>,
    /// `null` until a worker that serves the environment has checked its engine.
    pub status: Option<EngineStatus>,
}

impl Environment {
    /// What a worker connects with.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: self.docker_endpoint.clone(),
            tls: self.tls.clone().map(|t| TlsFiles {
                ca_file: t.ca_file,
                cert_file: t.cert_file,
                key_file: t.key_file,
            }),
            ssh: self.ssh.clone().map(|s| SshOptions {
                identity_file: s.identity_file,
                known_hosts_file: s.known_hosts_file,
            }),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsView {
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SshView {
    pub identity_file: Option<String>,
    pub known_hosts_file: Option<String>,
}

/// The newest check of an environment's engine by a worker (operational state, not events).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStatus {
    pub reachable: bool,
    pub checked_at: DateTime<Utc>,
    pub checked_by: String,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    docker_endpoint: String,
    tls: Option<Json<TlsFiles>>,
    ssh: Option<Json<SshOptions>>,
    created_at: DateTime<Utc>,
    reachable: Option<bool>,
    checked_at: Option<DateTime<Utc>>,
    checked_by: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
}

impl From<Row> for Environment {
    fn from(r: Row) -> Self {
        let status = match (r.reachable, r.checked_at, r.checked_by) {
            (Some(reachable), Some(checked_at), Some(checked_by)) => Some(EngineStatus {
                reachable,
                checked_at,
                checked_by,
                last_error: r.last_error,
                last_error_at: r.last_error_at,
            }),
            _ => None,
        };
        Environment {
            id: r.id,
            name: r.name,
            docker_endpoint: r.docker_endpoint,
            tls: r.tls.map(|Json(t)| TlsView {
                ca_file: t.ca_file,
                cert_file: t.cert_file,
                key_file: t.key_file,
            }),
            ssh: r.ssh.map(|Json(s)| SshView {
                identity_file: s.identity_file,
                known_hosts_file: s.known_hosts_file,
            }),
            created_at: r.created_at,
            status,
        }
    }
}

const SELECT: &str = "SELECT e.id, e.name, e.docker_endpoint, e.tls, e.ssh, e.created_at,
        s.reachable, s.checked_at, s.checked_by, s.last_error, s.last_error_at
     FROM environments e LEFT JOIN environment_status s ON s.environment_id = e.id";

pub async fn list(pool: &PgPool) -> Result<Vec<Environment>> {
    let sql = format!("{SELECT} ORDER BY e.id");
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Environment::from).collect())
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Environment>> {
    let sql = format!("{SELECT} WHERE e.id = $1");
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(Environment::from))
}

/// Records a worker's check of an environment's engine: `Err` carries the error's text.
/// A check older than the stored one (another worker's, written first) changes nothing;
/// the last error stays after the engine recovers, with its time.
pub async fn record_status(
    pool: &PgPool,
    environment: &str,
    worker: &str,
    outcome: std::result::Result<(), &str>,
) -> Result<()> {
    let error: Option<String> = outcome.err().map(|e| e.chars().take(2000).collect());
    sqlx::query(
        "INSERT INTO environment_status AS s
             (environment_id, reachable, checked_at, checked_by, last_error, last_error_at)
         VALUES ($1, $2, clock_timestamp(), $3, $4,
                 CASE WHEN $4::text IS NULL THEN NULL ELSE clock_timestamp() END)
         ON CONFLICT (environment_id) DO UPDATE SET
             reachable = EXCLUDED.reachable,
             checked_at = EXCLUDED.checked_at,
             checked_by = EXCLUDED.checked_by,
             last_error = coalesce(EXCLUDED.last_error, s.last_error),
             last_error_at = coalesce(EXCLUDED.last_error_at, s.last_error_at)
         WHERE s.checked_at <= EXCLUDED.checked_at",
    )
    .bind(environment)
    .bind(error.is_none())
    .bind(worker)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(id: &'a str, name: &'a str, docker_endpoint: &'a str) -> NewEnvironment<'a> {
        NewEnvironment {
            id,
            name,
            docker_endpoint,
            ..Default::default()
        }
    }

    #[test]
    fn register_validates_id_and_endpoint() {
        assert!(decide_register(&new("prod", "Production", "unix:///var/run/docker.sock")).is_ok());
        assert!(decide_register(&new("Prod", "Production", "unix:///x")).is_err());
        assert!(decide_register(&new("prod", " ", "unix:///x")).is_err());
        assert!(decide_register(&new("prod", "P", "ftp://x")).is_err());
    }

    #[test]
    fn a_tls_registration_records_paths_only() {
        let tls = TlsRequest {
            cert_path: Some("/etc/shiplog/certs/prod".into()),
            ..Default::default()
        };
        let event = decide_register(&NewEnvironment {
            tls: Some(&tls),
            ..new("prod", "P", "tcp://10.0.0.2:2376")
        })
        .unwrap();
        let Event::EnvironmentRegistered { tls, ssh, .. } = event else {
            panic!("unexpected event");
        };
        assert_eq!(tls.unwrap().key_file, "/etc/shiplog/certs/prod/key.pem");
        assert!(ssh.is_none());
    }
}

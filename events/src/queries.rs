//! Reads of the deployment and stack projections, shaped for the API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;
use crate::event::RecordedEvent;
use crate::store;

pub const TERMINAL_STATES: &[&str] = &["success", "failure", "error", "inactive"];
pub const STATES: &[&str] = &[
    "queued",
    "in_progress",
    "success",
    "failure",
    "error",
    "inactive",
];

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: Uuid,
    pub environment_id: String,
    pub stack_name: String,
    pub kind: String,
    pub status: String,
    pub previous_version: Option<String>,
    pub target_version: String,
    pub force: bool,
    pub requested_by: String,
    pub attempt: i32,
    pub worker: Option<String>,
    pub digests: serde_json::Value,
    pub message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The catalog source and revision (git commit) the request resolved its manifest from.
    pub catalog_source: Option<String>,
    pub catalog_revision: Option<String>,
}

impl Deployment {
    pub fn is_terminal(&self) -> bool {
        TERMINAL_STATES.contains(&self.status.as_str())
    }
}

macro_rules! deployment_columns {
    () => {
        "id, environment_id, stack_name, kind, status, previous_version, target_version, force,
         requested_by, attempt, worker, digests, message, created_at, started_at, finished_at,
         catalog_source, catalog_revision"
    };
}

macro_rules! deployment_filter {
    () => {
        "($1::text IS NULL OR environment_id = $1)
         AND ($2::text IS NULL OR stack_name = $2)
         AND ($3::text IS NULL OR status = $3)"
    };
}

pub async fn deployment(pool: &PgPool, id: Uuid) -> Result<Option<Deployment>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        deployment_columns!(),
        " FROM deployments WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub environment: Option<String>,
    pub stack: Option<String>,
    pub status: Option<String>,
}

/// A page of deployments, newest first, and the total count for pagination links.
pub async fn deployments(
    pool: &PgPool,
    filter: &DeploymentFilter,
    per_page: i64,
    page: i64,
) -> Result<(Vec<Deployment>, i64)> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        deployment_columns!(),
        " FROM deployments WHERE ",
        deployment_filter!(),
        " ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(&filter.environment)
    .bind(&filter.stack)
    .bind(&filter.status)
    .bind(per_page)
    .bind((page - 1) * per_page)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(concat!(
        "SELECT count(*) FROM deployments WHERE ",
        deployment_filter!()
    ))
    .bind(&filter.environment)
    .bind(&filter.stack)
    .bind(&filter.status)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    #[sqlx(rename = "seq")]
    pub id: i64,
    pub state: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn statuses(pool: &PgPool, id: Uuid) -> Result<Vec<DeploymentStatus>> {
    Ok(sqlx::query_as(
        "SELECT seq, state, description, created_at FROM deployment_statuses
         WHERE deployment_id = $1 ORDER BY seq DESC",
    )
    .bind(id)
    .fetch_all(pool)
    .await?)
}

pub async fn deployment_events(pool: &PgPool, id: Uuid) -> Result<Vec<RecordedEvent>> {
    deployment_events_after(pool, id, 0).await
}

/// What a follower has not seen yet: the events above version `after`, and the status
/// changes they made (a status row shares its event's stream version).
pub async fn deployment_events_after(
    pool: &PgPool,
    id: Uuid,
    after: i64,
) -> Result<Vec<RecordedEvent>> {
    let mut conn = pool.acquire().await?;
    let mut events =
        store::read_stream_after(&mut conn, &crate::event::stream::deployment(id), after).await?;
    events.iter_mut().for_each(|e| mask_event(&mut e.event));
    Ok(events)
}

/// Readers see `********` for sealed values (passwords), never the sealed text.
fn mask_event(event: &mut crate::event::Event) {
    match event {
        crate::event::Event::DeployRequested(r)
        | crate::event::Event::RedeployRequested(r)
        | crate::event::Event::UpgradeRequested(r)
        | crate::event::Event::RollbackRequested(r)
        | crate::event::Event::StartRequested(r)
        | crate::event::Event::StopRequested(r)
        | crate::event::Event::RestartRequested(r)
        | crate::event::Event::RemoveRequested(r) => crate::catalog::mask_values(&mut r.variables),
        crate::event::Event::StackDeployed { variables, .. } => {
            crate::catalog::mask_values(variables)
        }
        _ => {}
    }
}

fn masked(mut stack: Stack) -> Stack {
    crate::catalog::mask_sealed(&mut stack.variables);
    stack
}

pub async fn statuses_after(pool: &PgPool, id: Uuid, after: i64) -> Result<Vec<DeploymentStatus>> {
    Ok(sqlx::query_as(
        "SELECT seq, state, description, created_at FROM deployment_statuses
         WHERE deployment_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(id)
    .bind(after)
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Stack {
    pub environment_id: String,
    pub stack_name: String,
    pub version: String,
    pub variables: serde_json::Value,
    pub digests: serde_json::Value,
    pub services: serde_json::Value,
    pub last_deployment_id: Uuid,
    pub state: String,
    pub updated_at: DateTime<Utc>,
    /// The catalog source and revision (git commit) the running version came from.
    pub catalog_source: Option<String>,
    pub catalog_revision: Option<String>,
}

macro_rules! stack_columns {
    () => {
        "environment_id, stack_name, version, variables, digests, services, last_deployment_id,
         state, updated_at, catalog_source, catalog_revision"
    };
}

pub async fn stacks(pool: &PgPool, environment: &str) -> Result<Vec<Stack>> {
    let rows: Vec<Stack> = sqlx::query_as(concat!(
        "SELECT ",
        stack_columns!(),
        " FROM stacks WHERE environment_id = $1 ORDER BY stack_name"
    ))
    .bind(environment)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(masked).collect())
}

/// An entry of an environment's stack listing: a stack Shiplog deployed, or a compose
/// project a worker saw on the engine that Shiplog does not manage (read-only).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ListedStack {
    Managed {
        #[serde(flatten)]
        stack: Stack,
        managed: bool,
    },
    Unmanaged(crate::inventory::UnmanagedProject),
}

/// Shiplog's stacks by name, then the unmanaged projects last seen on the engine.
pub async fn stack_listing(pool: &PgPool, environment: &str) -> Result<Vec<ListedStack>> {
    let managed = stacks(pool, environment).await?;
    let names: Vec<&str> = managed.iter().map(|s| s.stack_name.as_str()).collect();
    let unmanaged = crate::inventory::unmanaged(pool, environment, &names).await?;
    Ok(managed
        .into_iter()
        .map(|stack| ListedStack::Managed {
            stack,
            managed: true,
        })
        .chain(unmanaged.into_iter().map(ListedStack::Unmanaged))
        .collect())
}

/// The stack as it was at `at`, folded from its event stream (not from the read model):
/// the last deployment that had ended successfully by then. `None` if none had.
pub async fn stack_at(
    pool: &PgPool,
    environment: &str,
    name: &str,
    at: DateTime<Utc>,
) -> Result<Option<Stack>> {
    let mut conn = pool.acquire().await?;
    let stream_id = crate::event::stream::stack(environment, name);
    let events = store::read_stream_until(&mut conn, &stream_id, at).await?;
    Ok(fold_stack(environment, name, &events)?.map(masked))
}

/// The state a stack's events leave it in.
fn fold_stack(
    environment: &str,
    name: &str,
    events: &[RecordedEvent],
) -> serde_json::Result<Option<Stack>> {
    use crate::event::Event;
    let mut stack: Option<Stack> = None;
    for recorded in events {
        match &recorded.event {
            Event::StackDeployed {
                version,
                deployment,
                digests,
                variables,
                services,
                catalog_source,
                catalog_revision,
                ..
            } => {
                stack = Some(Stack {
                    environment_id: environment.to_owned(),
                    stack_name: name.to_owned(),
                    version: version.clone(),
                    variables: serde_json::to_value(variables)?,
                    digests: serde_json::to_value(digests)?,
                    services: serde_json::to_value(services)?,
                    last_deployment_id: *deployment,
                    state: "running".into(),
                    updated_at: recorded.recorded_at,
                    catalog_source: catalog_source.clone(),
                    catalog_revision: catalog_revision.clone(),
                });
            }
            Event::StackStopped { deployment, .. } | Event::StackStarted { deployment, .. } => {
                if let Some(stack) = &mut stack {
                    stack.state = match &recorded.event {
                        Event::StackStopped { .. } => "stopped".into(),
                        _ => "running".into(),
                    };
                    stack.last_deployment_id = *deployment;
                    stack.updated_at = recorded.recorded_at;
                }
            }
            Event::StackRemoved { .. } => stack = None,
            _ => {}
        }
    }
    Ok(stack)
}

pub async fn stack(pool: &PgPool, environment: &str, name: &str) -> Result<Option<Stack>> {
    Ok(stack_unmasked(pool, environment, name).await?.map(masked))
}

/// The `stacks` row with sealed values as stored: for decisions, never for answers.
pub async fn stack_unmasked(pool: &PgPool, environment: &str, name: &str) -> Result<Option<Stack>> {
    let row: Option<Stack> = sqlx::query_as(concat!(
        "SELECT ",
        stack_columns!(),
        " FROM stacks WHERE environment_id = $1 AND stack_name = $2"
    ))
    .bind(environment)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

//! Read models, derived only from events. `apply` runs inline with every append;
//! `rebuild` replays the whole log into empty tables and must give the same rows.
//! Timestamps come from `recorded_at`, never from `now()`, so a rebuild is exact.

use sqlx::PgConnection;

use crate::error::Result;
use crate::event::{DeploymentKind, Event, FailureKind, RecordedEvent};
use crate::store;

/// Every projection table.
pub const TABLES: &[&str] = &[
    "environments",
    "api_keys",
    "catalog_sources",
    "catalog_stacks",
    "deployments",
    "deployment_statuses",
    "stacks",
];
const TRUNCATE_ALL: &str = "TRUNCATE environments, api_keys, catalog_sources, catalog_stacks,
    deployments, deployment_statuses, stacks";

pub async fn apply(tx: &mut PgConnection, recorded: &RecordedEvent) -> Result<()> {
    let at = recorded.recorded_at;
    match &recorded.event {
        Event::EnvironmentRegistered {
            id,
            name,
            docker_endpoint,
            tls,
            ssh,
        } => {
            sqlx::query(
                "INSERT INTO environments (id, name, docker_endpoint, created_at, tls, ssh)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(name)
            .bind(docker_endpoint)
            .bind(at)
            .bind(tls.as_ref().map(sqlx::types::Json))
            .bind(ssh.as_ref().map(sqlx::types::Json))
            .execute(tx)
            .await?;
        }
        Event::ApiKeyCreated {
            id,
            name,
            hash,
            prefix,
            permissions,
            environment,
            expires_at,
            stacks,
        } => {
            sqlx::query(
                "INSERT INTO api_keys (id, name, key_hash, prefix, permissions, environment_id,
                                       expires_at, created_at, stacks)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id)
            .bind(name)
            .bind(hash)
            .bind(prefix)
            .bind(permissions)
            .bind(environment)
            .bind(expires_at)
            .bind(at)
            .bind(stacks)
            .execute(tx)
            .await?;
        }
        Event::ApiKeyRevoked { id, reason } => {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $2, revoke_reason = $3
                 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(at)
            .bind(reason)
            .execute(tx)
            .await?;
        }
        Event::CatalogSourceAdded {
            id,
            kind,
            location,
            git,
        } => {
            sqlx::query(
                "INSERT INTO catalog_sources (id, kind, location, created_at, git_ref, git_path,
                                              credentials)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(kind)
            .bind(location)
            .bind(at)
            .bind(git.as_ref().map(|g| &g.reference))
            .bind(git.as_ref().and_then(|g| g.path.as_ref()))
            .bind(
                git.as_ref()
                    .and_then(|g| g.credentials.as_ref())
                    .map(serde_json::to_value)
                    .transpose()?,
            )
            .execute(tx)
            .await?;
        }
        Event::CatalogSynced {
            source,
            revision,
            content_hash,
            stacks,
        } => {
            sqlx::query(
                "UPDATE catalog_sources SET revision = $2, content_hash = $3, synced_at = $4
                 WHERE id = $1",
            )
            .bind(source)
            .bind(revision)
            .bind(content_hash)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM catalog_stacks WHERE source_id = $1")
                .bind(source)
                .execute(&mut *tx)
                .await?;
            for s in stacks {
                // Two sources offering one stack version: the latest sync wins.
                sqlx::query(
                    "INSERT INTO catalog_stacks
                        (stack_name, version, source_id, file, description, variables, manifest)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (stack_name, version) DO UPDATE SET
                        source_id = EXCLUDED.source_id, file = EXCLUDED.file,
                        description = EXCLUDED.description, variables = EXCLUDED.variables,
                        manifest = EXCLUDED.manifest",
                )
                .bind(&s.name)
                .bind(&s.version)
                .bind(source)
                .bind(&s.file)
                .bind(&s.description)
                .bind(serde_json::to_value(&s.variables)?)
                .bind(&s.manifest)
                .execute(&mut *tx)
                .await?;
            }
        }
        Event::DeployRequested(r)
        | Event::RedeployRequested(r)
        | Event::UpgradeRequested(r)
        | Event::RollbackRequested(r)
        | Event::StartRequested(r)
        | Event::StopRequested(r)
        | Event::RestartRequested(r)
        | Event::RemoveRequested(r) => {
            let kind = match recorded.event.request() {
                Some((kind, _)) => kind,
                None => DeploymentKind::Install,
            };
            sqlx::query(
                "INSERT INTO deployments (id, environment_id, stack_name, kind, status,
                    previous_version, target_version, force, requested_by, created_at,
                    catalog_source, catalog_revision)
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(r.deployment)
            .bind(&r.environment)
            .bind(&r.stack)
            .bind(kind.as_str())
            .bind(&r.previous_version)
            .bind(&r.version)
            .bind(r.force)
            .bind(recorded.metadata.actor.as_deref().unwrap_or("unknown"))
            .bind(at)
            .bind(&r.catalog_source)
            .bind(&r.catalog_revision)
            .execute(&mut *tx)
            .await?;
            add_status(tx, recorded, r.deployment, "queued", "Deployment queued").await?;
        }
        Event::DeploymentStarted {
            deployment,
            worker,
            attempt,
        } => {
            sqlx::query(
                "UPDATE deployments SET status = 'in_progress', attempt = $2, worker = $3,
                    started_at = COALESCE(started_at, $4)
                 WHERE id = $1",
            )
            .bind(deployment)
            .bind(*attempt as i32)
            .bind(worker)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            let description = format!("Attempt {attempt} started on worker {worker}");
            add_status(tx, recorded, *deployment, "in_progress", &description).await?;
        }
        Event::ImagePulled {
            deployment,
            service,
            image_id,
            digest,
            ..
        } => {
            let digest = digest.as_deref().unwrap_or(image_id);
            sqlx::query(
                "UPDATE deployments SET digests = digests || jsonb_build_object($2::text, $3::text)
                 WHERE id = $1",
            )
            .bind(deployment)
            .bind(service)
            .bind(digest)
            .execute(tx)
            .await?;
        }
        Event::ContainerReplaced { .. }
        | Event::ServiceUnchanged { .. }
        | Event::RedeployJoined { .. } => {}
        Event::DeploymentRetrying {
            deployment,
            reason,
            retry_in_ms,
        } => {
            let description = format!("{reason}; retrying in {} ms", retry_in_ms);
            add_status(tx, recorded, *deployment, "in_progress", &description).await?;
        }
        Event::DeploymentSuperseded {
            deployment, reason, ..
        } => {
            finish(tx, recorded, *deployment, "inactive", reason).await?;
        }
        Event::DeploymentSucceeded {
            deployment,
            version,
            summary,
            ..
        } => {
            let message = match summary {
                Some(summary) => summary.clone(),
                None => format!("Deployed version {version}"),
            };
            finish(tx, recorded, *deployment, "success", &message).await?;
        }
        Event::DeploymentFailed {
            deployment,
            kind,
            reason,
            ..
        } => {
            let state = match kind {
                FailureKind::Failure => "failure",
                FailureKind::Error => "error",
            };
            finish(tx, recorded, *deployment, state, reason).await?;
        }
        Event::StackDeployed {
            environment,
            stack,
            version,
            deployment,
            digests,
            variables,
            services,
            catalog_source,
            catalog_revision,
        } => {
            sqlx::query(
                "INSERT INTO stacks (environment_id, stack_name, version, variables, digests,
                    services, last_deployment_id, state, updated_at, catalog_source,
                    catalog_revision)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10)
                 ON CONFLICT (environment_id, stack_name) DO UPDATE SET
                    version = EXCLUDED.version, variables = EXCLUDED.variables,
                    digests = EXCLUDED.digests, services = EXCLUDED.services,
                    last_deployment_id = EXCLUDED.last_deployment_id,
                    state = EXCLUDED.state, updated_at = EXCLUDED.updated_at,
                    catalog_source = EXCLUDED.catalog_source,
                    catalog_revision = EXCLUDED.catalog_revision",
            )
            .bind(environment)
            .bind(stack)
            .bind(version)
            .bind(serde_json::to_value(variables)?)
            .bind(serde_json::to_value(digests)?)
            .bind(serde_json::to_value(services)?)
            .bind(deployment)
            .bind(at)
            .bind(catalog_source)
            .bind(catalog_revision)
            .execute(tx)
            .await?;
        }
        Event::StackStopped {
            environment,
            stack,
            deployment,
        }
        | Event::StackStarted {
            environment,
            stack,
            deployment,
        } => {
            let state = match &recorded.event {
                Event::StackStopped { .. } => "stopped",
                _ => "running",
            };
            sqlx::query(
                "UPDATE stacks SET state = $3, last_deployment_id = $4, updated_at = $5
                 WHERE environment_id = $1 AND stack_name = $2",
            )
            .bind(environment)
            .bind(stack)
            .bind(state)
            .bind(deployment)
            .bind(at)
            .execute(tx)
            .await?;
        }
        Event::StackRemoved {
            environment, stack, ..
        } => {
            sqlx::query("DELETE FROM stacks WHERE environment_id = $1 AND stack_name = $2")
                .bind(environment)
                .bind(stack)
                .execute(tx)
                .await?;
        }
    }
    Ok(())
}

async fn finish(
    tx: &mut PgConnection,
    recorded: &RecordedEvent,
    deployment: uuid::Uuid,
    state: &str,
    message: &str,
) -> Result<()> {
    sqlx::query("UPDATE deployments SET status = $2, message = $3, finished_at = $4 WHERE id = $1")
        .bind(deployment)
        .bind(state)
        .bind(message)
        .bind(recorded.recorded_at)
        .execute(&mut *tx)
        .await?;
    add_status(tx, recorded, deployment, state, message).await
}

/// The status history row takes the event's stream version as its sequence number.
async fn add_status(
    tx: &mut PgConnection,
    recorded: &RecordedEvent,
    deployment: uuid::Uuid,
    state: &str,
    description: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO deployment_statuses (deployment_id, seq, state, description, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(deployment)
    .bind(recorded.stream_version)
    .bind(state)
    .bind(description)
    .bind(recorded.recorded_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Empties every projection and replays the whole log into it, in one transaction:
/// readers see the old tables until the new ones are complete.
pub async fn rebuild(tx: &mut PgConnection) -> Result<u64> {
    sqlx::query(TRUNCATE_ALL).execute(&mut *tx).await?;
    let mut after = 0;
    let mut replayed = 0;
    loop {
        let batch = store::read_all(&mut *tx, after, 1000).await?;
        let Some(last) = batch.last() else { break };
        after = last.global_position;
        for event in &batch {
            apply(&mut *tx, event).await?;
            replayed += 1;
        }
    }
    Ok(replayed)
}

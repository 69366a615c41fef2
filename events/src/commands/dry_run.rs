//! `?dryRun=true`: gathers what a plan needs with the same validation and the same
//! decisions as the real request, and writes nothing (no transaction, no lock, no event,
//! no job, no idempotency row).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::deployments::{
    self, CatalogEntry, DeployAction, Install, Redeploy, StackState, Upgrade, catalog_entry,
    decide_deploy, decide_install, decide_redeploy, decide_upgrade, validate_target,
    validate_version,
};
use crate::catalog::{self, VariableType};
use crate::error::{Error, Result};
use crate::event::{DeployedService, Event};
use crate::plan::{Current, Draft};
use crate::queries;
use crate::secret::{self, SecretKey};

/// `secrets`: the API's key. Password values are sealed by the decisions as in the real
/// request (so a missing key is the same 400) and opened again to compare them.
pub async fn redeploy(pool: &PgPool, cmd: &Redeploy, secrets: Option<&SecretKey>) -> Result<Draft> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    let running = running(pool, &cmd.environment, &cmd.stack).await?;
    let origin = match &running {
        Some((state, ..)) => manifest(pool, &cmd.stack, &state.version).await?,
        None => None,
    };
    let event = decide_redeploy(
        Uuid::nil(),
        cmd,
        running.as_ref().map(|r| &r.0),
        origin.as_ref(),
    )?;
    draft(pool, DeployAction::Redeploy, event, running, secrets).await
}

pub async fn upgrade(pool: &PgPool, cmd: &Upgrade, secrets: Option<&SecretKey>) -> Result<Draft> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    validate_version(&cmd.target_version)?;
    let running = running(pool, &cmd.environment, &cmd.stack).await?;
    let target = manifest(pool, &cmd.stack, &cmd.target_version).await?;
    let event = decide_upgrade(
        Uuid::nil(),
        cmd,
        running.as_ref().map(|r| &r.0),
        target.as_ref(),
        secrets,
    )?;
    draft(pool, DeployAction::Upgrade, event, running, secrets).await
}

async fn install(pool: &PgPool, cmd: &Install, secrets: Option<&SecretKey>) -> Result<Draft> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    validate_version(&cmd.version)?;
    let running = running(pool, &cmd.environment, &cmd.stack).await?;
    let target = manifest(pool, &cmd.stack, &cmd.version).await?;
    let event = decide_install(
        Uuid::nil(),
        cmd,
        running.as_ref().map(|r| &r.0),
        target.as_ref(),
        secrets,
    )?;
    draft(pool, DeployAction::Install, event, running, secrets).await
}

/// The ensure, as `deployments::deploy` decides it.
pub async fn deploy(
    pool: &PgPool,
    cmd: &deployments::Deploy,
    secrets: Option<&SecretKey>,
) -> Result<Draft> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    let target = match &cmd.version {
        Some(version) => version.clone(),
        None => deployments::latest_version(pool, &cmd.stack)
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "stack '{}' has no version in the catalog",
                    cmd.stack
                ))
            })?,
    };
    let running = running(pool, &cmd.environment, &cmd.stack).await?;
    let (environment, stack) = (cmd.environment.clone(), cmd.stack.clone());
    match decide_deploy(running.as_ref().map(|r| &r.0), &target, &cmd.variables) {
        DeployAction::Install => {
            let variables = cmd.variables.clone();
            let install_cmd = Install {
                environment,
                stack,
                version: target,
                variables,
            };
            self::install(pool, &install_cmd, secrets).await
        }
        DeployAction::Redeploy => {
            let force = cmd.force;
            self::redeploy(
                pool,
                &Redeploy {
                    environment,
                    stack,
                    force,
                },
                secrets,
            )
            .await
        }
        DeployAction::Upgrade => {
            let variables = cmd.variables.clone();
            self::upgrade(
                pool,
                &Upgrade {
                    environment,
                    stack,
                    target_version: target,
                    variables,
                },
                secrets,
            )
            .await
        }
    }
}

/// The `stacks` row: the decisions' view of it and the services it recorded.
type Running = (StackState, Vec<DeployedService>, bool);

/// Read raw (not through the masked read side): the decisions need the sealed values.
async fn running(pool: &PgPool, environment: &str, stack: &str) -> Result<Option<Running>> {
    let Some(row) = queries::stack_unmasked(pool, environment, stack).await? else {
        return Ok(None);
    };
    let state = StackState {
        version: row.version,
        variables: serde_json::from_value(row.variables)?,
    };
    let services: Vec<DeployedService> = serde_json::from_value(row.services)?;
    Ok(Some((state, services, row.state == "running")))
}

async fn manifest(pool: &PgPool, stack: &str, version: &str) -> Result<Option<CatalogEntry>> {
    let mut conn = pool.acquire().await?;
    catalog_entry(&mut conn, stack, version).await
}

/// Every sealed value opened when `key` opens it: plans compare clear values (a value
/// sealed twice differs in text), and show secrets only as "changed".
fn opened(values: &BTreeMap<String, String>, key: Option<&SecretKey>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(name, value)| {
            let clear = match key {
                Some(key) if secret::is_sealed(value) => key.open(value).ok(),
                _ => None,
            };
            (name.clone(), clear.unwrap_or_else(|| value.clone()))
        })
        .collect()
}

async fn draft(
    pool: &PgPool,
    action: DeployAction,
    event: Event,
    running: Option<Running>,
    key: Option<&SecretKey>,
) -> Result<Draft> {
    let Some((_, request)) = event.request() else {
        unreachable!("deployment decisions decide a request")
    };
    let mut conn = pool.acquire().await?;
    let mut secrets = BTreeSet::new();
    let target_variables = opened(&request.variables, key);
    let target = resolve(
        &mut conn,
        &request.stack,
        &request.version,
        &target_variables,
        &mut secrets,
    )
    .await?;
    let current = match running {
        Some((state, services, running)) => {
            let variables = opened(&state.variables, key);
            let spec = resolve(
                &mut conn,
                &request.stack,
                &state.version,
                &variables,
                &mut secrets,
            )
            .await?;
            Some(Current {
                version: state.version,
                variables,
                services,
                running,
                spec,
            })
        }
        None => None,
    };
    Ok(Draft {
        action,
        environment: request.environment.clone(),
        stack: request.stack.clone(),
        target_version: request.version.clone(),
        target_variables,
        force: request.force,
        current,
        target,
        secrets,
    })
}

/// A version resolved with its variables, as the worker will resolve it; collects the
/// names of its `password` variables.
async fn resolve(
    conn: &mut PgConnection,
    stack: &str,
    version: &str,
    variables: &BTreeMap<String, String>,
    secrets: &mut BTreeSet<String>,
) -> Result<std::result::Result<crate::spec::StackSpec, String>> {
    let Some(manifest) = catalog_entry(conn, stack, version)
        .await?
        .map(|e| e.manifest)
    else {
        return Ok(Err(format!(
            "version '{version}' of stack '{stack}' is no longer in the catalog"
        )));
    };
    secrets.extend(
        manifest
            .variables
            .iter()
            .filter(|v| v.kind == VariableType::Password)
            .map(|v| v.name.clone()),
    );
    Ok(catalog::resolve(&manifest, variables)
        .map_err(|e| format!("stack '{stack}' {version} cannot be resolved: {e}")))
}

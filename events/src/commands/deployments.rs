//! Deployment requests: install, redeploy, upgrade. Each becomes a `deployment-<id>` stream
//! whose first event is the request, appended together with its job.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::validate_name;
use crate::catalog::{self, Manifest};
use crate::error::{Error, Result};
use crate::event::{DeploymentRequest, Event, Metadata, stream};
use crate::queue::{self, DeployJob};
use crate::store::{self, ExpectedVersion};

/// What runs now, as the `stacks` projection says.
#[derive(Debug, Clone, PartialEq)]
pub struct StackState {
    pub version: String,
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Redeploy {
    pub environment: String,
    pub stack: String,
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct Upgrade {
    pub environment: String,
    pub stack: String,
    pub target_version: String,
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Install {
    pub environment: String,
    pub stack: String,
    pub version: String,
    pub variables: BTreeMap<String, String>,
}

pub fn validate_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid version '{}': use 1–64 letters, digits, '.', '_', '+' or '-'",
            version.chars().take(80).collect::<String>()
        )))
    }
}

fn not_deployed(stack: &str, environment: &str) -> Error {
    Error::Invalid(format!(
        "stack '{stack}' is not deployed in environment '{environment}'"
    ))
}

pub fn decide_redeploy(id: Uuid, cmd: &Redeploy, current: Option<&StackState>) -> Result<Event> {
    let current = current.ok_or_else(|| not_deployed(&cmd.stack, &cmd.environment))?;
    Ok(Event::RedeployRequested(DeploymentRequest {
        deployment: id,
        environment: cmd.environment.clone(),
        stack: cmd.stack.clone(),
        version: current.version.clone(),
        previous_version: Some(current.version.clone()),
        variables: current.variables.clone(),
        force: cmd.force,
    }))
}

/// Checks that the target version exists and that every variable resolves now, so a
/// missing variable is the caller's 400 and not a failed deployment later.
fn resolve_target(
    stack: &str,
    version: &str,
    target: Option<&Manifest>,
    stored: &BTreeMap<String, String>,
    overlay: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let manifest = target.ok_or_else(|| {
        Error::Invalid(format!(
            "version '{version}' of stack '{stack}' not found in the catalog"
        ))
    })?;
    let variables = catalog::effective_variables(&manifest.variables, stored, overlay)
        .map_err(|e| Error::Invalid(format!("stack '{stack}' {version}: {e}")))?;
    catalog::resolve(manifest, &variables)
        .map_err(|e| Error::Invalid(format!("stack '{stack}' {version}: {e}")))?;
    Ok(variables)
}

pub fn decide_upgrade(
    id: Uuid,
    cmd: &Upgrade,
    current: Option<&StackState>,
    target: Option<&Manifest>,
) -> Result<Event> {
    let current = current.ok_or_else(|| not_deployed(&cmd.stack, &cmd.environment))?;
    let variables = resolve_target(
        &cmd.stack,
        &cmd.target_version,
        target,
        &current.variables,
        &cmd.variables,
    )?;
    Ok(Event::UpgradeRequested(DeploymentRequest {
        deployment: id,
        environment: cmd.environment.clone(),
        stack: cmd.stack.clone(),
        version: cmd.target_version.clone(),
        previous_version: Some(current.version.clone()),
        variables,
        force: false,
    }))
}

pub fn decide_install(
    id: Uuid,
    cmd: &Install,
    current: Option<&StackState>,
    target: Option<&Manifest>,
) -> Result<Event> {
    let stored = current.map(|c| c.variables.clone()).unwrap_or_default();
    let variables = resolve_target(&cmd.stack, &cmd.version, target, &stored, &cmd.variables)?;
    Ok(Event::DeployRequested(DeploymentRequest {
        deployment: id,
        environment: cmd.environment.clone(),
        stack: cmd.stack.clone(),
        version: cmd.version.clone(),
        previous_version: current.map(|c| c.version.clone()),
        variables,
        force: false,
    }))
}

/// The outcome a hook reports.
#[derive(Debug, Clone)]
pub struct Requested {
    pub deployment: Uuid,
    pub request: DeploymentRequest,
}

pub async fn redeploy(pool: &PgPool, cmd: &Redeploy, metadata: &Metadata) -> Result<Requested> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let current = current_stack(&mut tx, &cmd.environment, &cmd.stack).await?;
    let event = decide_redeploy(id, cmd, current.as_ref())?;
    submit(tx, event, metadata).await
}

pub async fn upgrade(pool: &PgPool, cmd: &Upgrade, metadata: &Metadata) -> Result<Requested> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    validate_version(&cmd.target_version)?;
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let current = current_stack(&mut tx, &cmd.environment, &cmd.stack).await?;
    let target = catalog_manifest(&mut tx, &cmd.stack, &cmd.target_version).await?;
    let event = decide_upgrade(id, cmd, current.as_ref(), target.as_ref())?;
    submit(tx, event, metadata).await
}

pub async fn install(pool: &PgPool, cmd: &Install, metadata: &Metadata) -> Result<Requested> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    validate_version(&cmd.version)?;
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let current = current_stack(&mut tx, &cmd.environment, &cmd.stack).await?;
    let target = catalog_manifest(&mut tx, &cmd.stack, &cmd.version).await?;
    let event = decide_install(id, cmd, current.as_ref(), target.as_ref())?;
    submit(tx, event, metadata).await
}

async fn validate_target(pool: &PgPool, environment: &str, stack: &str) -> Result<()> {
    validate_name("environment id", environment)?;
    validate_name("stack name", stack)?;
    if super::environments::get(pool, environment).await?.is_none() {
        return Err(Error::Invalid(format!(
            "environment '{environment}' not found"
        )));
    }
    Ok(())
}

/// Appends the request and pushes its job in the same transaction: a client that got a
/// deployment id has a durable request and a queued job.
async fn submit(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    event: Event,
    metadata: &Metadata,
) -> Result<Requested> {
    let request = event
        .request()
        .map(|(_, r)| r.clone())
        .expect("deployment commands decide request events");
    let id = request.deployment;
    store::append(
        &mut tx,
        &stream::deployment(id),
        ExpectedVersion::NoStream,
        &[event],
        metadata,
    )
    .await?;
    queue::enqueue(&mut tx, &request.environment, DeployJob { deployment: id }).await?;
    tx.commit().await?;
    Ok(Requested {
        deployment: id,
        request,
    })
}

pub async fn current_stack(
    conn: &mut PgConnection,
    environment: &str,
    stack: &str,
) -> Result<Option<StackState>> {
    let row: Option<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT version, variables FROM stacks WHERE environment_id = $1 AND stack_name = $2",
    )
    .bind(environment)
    .bind(stack)
    .fetch_optional(conn)
    .await?;
    row.map(|(version, variables)| {
        Ok(StackState {
            version,
            variables: serde_json::from_value(variables)?,
        })
    })
    .transpose()
}

/// A catalog stack version, parsed again from the manifest text the log recorded.
pub async fn catalog_manifest(
    conn: &mut PgConnection,
    stack: &str,
    version: &str,
) -> Result<Option<Manifest>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT file, manifest FROM catalog_stacks WHERE stack_name = $1 AND version = $2",
    )
    .bind(stack)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    row.map(|(file, text)| {
        catalog::parse_manifest(&file, &text).map_err(|e| Error::Invalid(e.to_string()))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
name: shop
x-shiplog:
  version: 2.0.0
  variables:
    GREETING: { default: hello }
    TOKEN: { required: true }
services:
  web:
    image: registry.local/web:${TAG:-v2}
    environment:
      GREETING: ${GREETING}
      TOKEN: ${TOKEN}
"#;

    fn manifest() -> Manifest {
        catalog::parse_manifest("shop.yml", MANIFEST).unwrap()
    }

    fn running(vars: &[(&str, &str)]) -> StackState {
        StackState {
            version: "1.0.0".into(),
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn upgrade(vars: &[(&str, &str)]) -> Upgrade {
        Upgrade {
            environment: "prod".into(),
            stack: "shop".into(),
            target_version: "2.0.0".into(),
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn redeploy_of_a_stack_that_is_not_deployed_is_refused() {
        let cmd = Redeploy {
            environment: "prod".into(),
            stack: "shop".into(),
            force: false,
        };
        let err = decide_redeploy(Uuid::nil(), &cmd, None).unwrap_err();
        assert!(matches!(err, Error::Invalid(m) if m.contains("not deployed")));
    }

    #[test]
    fn redeploy_keeps_the_current_version_and_variables() {
        let cmd = Redeploy {
            environment: "prod".into(),
            stack: "shop".into(),
            force: true,
        };
        let state = running(&[("TOKEN", "t")]);
        let Event::RedeployRequested(r) = decide_redeploy(Uuid::nil(), &cmd, Some(&state)).unwrap()
        else {
            panic!("wrong event")
        };
        assert_eq!(r.version, "1.0.0");
        assert_eq!(r.variables, state.variables);
        assert!(r.force);
    }

    #[test]
    fn upgrade_overlays_request_variables_on_stored_ones_and_defaults() {
        let state = running(&[("TOKEN", "old"), ("GREETING", "hi")]);
        let event = decide_upgrade(
            Uuid::nil(),
            &upgrade(&[("TOKEN", "new")]),
            Some(&state),
            Some(&manifest()),
        )
        .unwrap();
        let Event::UpgradeRequested(r) = event else {
            panic!("wrong event")
        };
        assert_eq!(r.variables["TOKEN"], "new");
        assert_eq!(r.variables["GREETING"], "hi");
        assert_eq!(r.previous_version.as_deref(), Some("1.0.0"));
        assert_eq!(r.version, "2.0.0");
    }

    #[test]
    fn upgrade_with_a_missing_required_variable_is_refused_naming_it() {
        let err = decide_upgrade(
            Uuid::nil(),
            &upgrade(&[]),
            Some(&running(&[])),
            Some(&manifest()),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("TOKEN")),
            "{err}"
        );
    }

    #[test]
    fn upgrade_to_an_unknown_version_is_refused() {
        let err =
            decide_upgrade(Uuid::nil(), &upgrade(&[]), Some(&running(&[])), None).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("not found in the catalog")),
            "{err}"
        );
    }

    #[test]
    fn versions_are_validated() {
        assert!(validate_version("6.5.0-rc.1+b2").is_ok());
        assert!(validate_version("../../etc").is_err());
        assert!(validate_version("").is_err());
    }
}

//! Deployment requests: install, redeploy, upgrade. Each becomes a `deployment-<id>` stream
//! whose first event is the request, appended together with its job.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::validate_name;
use crate::catalog::{self, Manifest};
use crate::error::{Error, Result};
use crate::event::{DeploymentKind, DeploymentRequest, Event, Metadata, stream};
use crate::queue::{self, DeployJob};
use crate::secret::SecretKey;
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

pub(super) fn not_deployed(stack: &str, environment: &str) -> Error {
    Error::Invalid(format!(
        "stack '{stack}' is not deployed in environment '{environment}'"
    ))
}

/// `origin`: the catalog entry of the running version now, if the catalog still has it.
pub fn decide_redeploy(
    id: Uuid,
    cmd: &Redeploy,
    current: Option<&StackState>,
    origin: Option<&CatalogEntry>,
) -> Result<Event> {
    let current = current.ok_or_else(|| not_deployed(&cmd.stack, &cmd.environment))?;
    Ok(Event::RedeployRequested(DeploymentRequest {
        deployment: id,
        environment: cmd.environment.clone(),
        stack: cmd.stack.clone(),
        version: current.version.clone(),
        previous_version: Some(current.version.clone()),
        variables: current.variables.clone(),
        force: cmd.force,
        images: BTreeMap::new(),
        removal: None,
        catalog_source: origin.map(|o| o.source.clone()),
        catalog_revision: origin.and_then(|o| o.revision.clone()),
    }))
}

/// Checks that the target version exists and that every variable resolves now, so a
/// missing variable is the caller's 400 and not a failed deployment later.
fn resolve_target(
    stack: &str,
    version: &str,
    target: Option<&CatalogEntry>,
    stored: &BTreeMap<String, String>,
    overlay: &BTreeMap<String, String>,
    secrets: Option<&SecretKey>,
) -> Result<BTreeMap<String, String>> {
    let manifest = target.map(|t| &t.manifest).ok_or_else(|| {
        Error::Invalid(format!(
            "version '{version}' of stack '{stack}' not found in the catalog"
        ))
    })?;
    let mut variables = catalog::effective_variables(&manifest.variables, stored, overlay)
        .map_err(|e| Error::Invalid(format!("stack '{stack}' {version}: {e}")))?;
    catalog::resolve(manifest, &variables)
        .map_err(|e| Error::Invalid(format!("stack '{stack}' {version}: {e}")))?;
    catalog::seal_passwords(&manifest.variables, &mut variables, secrets)
        .map_err(|e| Error::Invalid(format!("stack '{stack}' {version}: {e}")))?;
    Ok(variables)
}

/// `secrets` seals the values of `password` variables (none configured: they are refused).
pub fn decide_upgrade(
    id: Uuid,
    cmd: &Upgrade,
    current: Option<&StackState>,
    target: Option<&CatalogEntry>,
    secrets: Option<&SecretKey>,
) -> Result<Event> {
    let current = current.ok_or_else(|| not_deployed(&cmd.stack, &cmd.environment))?;
    let variables = resolve_target(
        &cmd.stack,
        &cmd.target_version,
        target,
        &current.variables,
        &cmd.variables,
        secrets,
    )?;
    Ok(Event::UpgradeRequested(DeploymentRequest {
        deployment: id,
        environment: cmd.environment.clone(),
        stack: cmd.stack.clone(),
        version: cmd.target_version.clone(),
        previous_version: Some(current.version.clone()),
        variables,
        force: false,
        images: BTreeMap::new(),
        removal: None,
        catalog_source: target.map(|t| t.source.clone()),
        catalog_revision: target.and_then(|t| t.revision.clone()),
    }))
}

pub fn decide_install(
    id: Uuid,
    cmd: &Install,
    current: Option<&StackState>,
    target: Option<&CatalogEntry>,
    secrets: Option<&SecretKey>,
) -> Result<Event> {
    let stored = current.map(|c| c.variables.clone()).unwrap_or_default();
    let variables = resolve_target(
        &cmd.stack,
        &cmd.version,
        target,
        &stored,
        &cmd.variables,
        secrets,
    )?;
    Ok(Event::DeployRequested(DeploymentRequest {
        deployment: id,
        environment: cmd.environment.clone(),
        stack: cmd.stack.clone(),
        version: cmd.version.clone(),
        previous_version: current.map(|c| c.version.clone()),
        variables,
        force: false,
        images: BTreeMap::new(),
        removal: None,
        catalog_source: target.map(|t| t.source.clone()),
        catalog_revision: target.and_then(|t| t.revision.clone()),
    }))
}

/// What a hook reports: the deployment that will carry the request out.
#[derive(Debug, Clone)]
pub struct Requested {
    pub deployment: Uuid,
    pub kind: DeploymentKind,
    pub request: DeploymentRequest,
    /// The request joined an equal one that was still queued.
    pub joined: bool,
    /// An `Idempotency-Key` repeat: nothing new was recorded.
    pub replayed: bool,
}

/// A client's `Idempotency-Key` for one request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// Whose key: the caller's identity, so two clients never collide.
    pub scope: String,
    pub key: String,
    /// SHA-256 of the endpoint and body.
    pub fingerprint: String,
}

impl Idempotency {
    pub fn new(scope: &str, key: &str, endpoint: &str, body: &[u8]) -> Result<Self> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Invalid(
                "Idempotency-Key must be 1–255 visible ASCII characters".into(),
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update(endpoint.as_bytes());
        hasher.update([0]);
        hasher.update(body);
        Ok(Idempotency {
            scope: scope.to_owned(),
            key: key.to_owned(),
            fingerprint: hex::encode(hasher.finalize()),
        })
    }
}

/// How long an idempotency key is remembered.
const IDEMPOTENCY_RETENTION_HOURS: i32 = 24;

pub async fn redeploy(
    pool: &PgPool,
    cmd: &Redeploy,
    metadata: &Metadata,
    idempotency: Option<&Idempotency>,
) -> Result<Requested> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    let mut tx = pool.begin().await?;
    lock_stack_requests(&mut tx, &cmd.environment, &cmd.stack).await?;
    if let Some(done) = replay(&mut tx, idempotency).await? {
        return Ok(done);
    }
    let current = current_stack(&mut tx, &cmd.environment, &cmd.stack).await?;
    let origin = running_origin(&mut tx, &cmd.stack, current.as_ref()).await?;
    let event = decide_redeploy(Uuid::now_v7(), cmd, current.as_ref(), origin.as_ref())?;
    // A burst of redeploys for one stack becomes one deployment.
    for queued in queued(&mut tx, &cmd.environment, &cmd.stack).await? {
        if queued.kind != DeploymentKind::Redeploy || (cmd.force && !queued.force) {
            continue;
        }
        let joined = Event::RedeployJoined {
            deployment: queued.id,
            force: cmd.force,
        };
        if append_if_queued(&mut tx, queued.id, joined, metadata).await? {
            let mut requested = load(&mut tx, queued.id).await?;
            requested.joined = true;
            return finish(tx, idempotency, requested).await;
        }
    }
    submit(tx, event, metadata, idempotency).await
}

pub async fn upgrade(
    pool: &PgPool,
    cmd: &Upgrade,
    metadata: &Metadata,
    idempotency: Option<&Idempotency>,
    secrets: Option<&SecretKey>,
) -> Result<Requested> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    validate_version(&cmd.target_version)?;
    let mut tx = pool.begin().await?;
    lock_stack_requests(&mut tx, &cmd.environment, &cmd.stack).await?;
    if let Some(done) = replay(&mut tx, idempotency).await? {
        return Ok(done);
    }
    let current = current_stack(&mut tx, &cmd.environment, &cmd.stack).await?;
    let target = catalog_entry(&mut tx, &cmd.stack, &cmd.target_version).await?;
    let id = Uuid::now_v7();
    let event = decide_upgrade(id, cmd, current.as_ref(), target.as_ref(), secrets)?;
    // A newer upgrade makes queued redeploys and upgrades of the stack pointless.
    for queued in queued(&mut tx, &cmd.environment, &cmd.stack).await? {
        if !matches!(
            queued.kind,
            DeploymentKind::Redeploy | DeploymentKind::Upgrade
        ) {
            continue;
        }
        let superseded = Event::DeploymentSuperseded {
            deployment: queued.id,
            by: id,
            reason: format!(
                "Superseded by the upgrade to {} ({id}) before it started",
                cmd.target_version
            ),
        };
        append_if_queued(&mut tx, queued.id, superseded, metadata).await?;
    }
    submit(tx, event, metadata, idempotency).await
}

pub async fn install(
    pool: &PgPool,
    cmd: &Install,
    metadata: &Metadata,
    idempotency: Option<&Idempotency>,
    secrets: Option<&SecretKey>,
) -> Result<Requested> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    validate_version(&cmd.version)?;
    let mut tx = pool.begin().await?;
    lock_stack_requests(&mut tx, &cmd.environment, &cmd.stack).await?;
    if let Some(done) = replay(&mut tx, idempotency).await? {
        return Ok(done);
    }
    let current = current_stack(&mut tx, &cmd.environment, &cmd.stack).await?;
    let target = catalog_entry(&mut tx, &cmd.stack, &cmd.version).await?;
    let event = decide_install(
        Uuid::now_v7(),
        cmd,
        current.as_ref(),
        target.as_ref(),
        secrets,
    )?;
    submit(tx, event, metadata, idempotency).await
}

#[derive(Debug, Clone)]
pub struct Deploy {
    pub environment: String,
    pub stack: String,
    /// `None`: the newest version in the catalog.
    pub version: Option<String>,
    pub variables: BTreeMap<String, String>,
    pub force: bool,
}

/// What `deploy` turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployAction {
    Install,
    Upgrade,
    Redeploy,
}

impl DeployAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployAction::Install => "install",
            DeployAction::Upgrade => "upgrade",
            DeployAction::Redeploy => "redeploy",
        }
    }
}

/// Which request makes the stack run `target`: install it when absent, redeploy it when it
/// already runs that version (and no variable changes), upgrade it otherwise.
pub fn decide_deploy(
    current: Option<&StackState>,
    target: &str,
    variables: &BTreeMap<String, String>,
) -> DeployAction {
    match current {
        None => DeployAction::Install,
        Some(c) if c.version == target && variables.is_empty() => DeployAction::Redeploy,
        Some(_) => DeployAction::Upgrade,
    }
}

/// The idempotent "ensure": whatever state the stack is in, it ends up running the version.
pub async fn deploy(
    pool: &PgPool,
    cmd: &Deploy,
    metadata: &Metadata,
    idempotency: Option<&Idempotency>,
    secrets: Option<&SecretKey>,
) -> Result<(DeployAction, Requested)> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    let target = match &cmd.version {
        Some(version) => version.clone(),
        None => latest_version(pool, &cmd.stack).await?.ok_or_else(|| {
            Error::Invalid(format!(
                "stack '{}' has no version in the catalog",
                cmd.stack
            ))
        })?,
    };
    let current = {
        let mut conn = pool.acquire().await?;
        current_stack(&mut conn, &cmd.environment, &cmd.stack).await?
    };
    let action = decide_deploy(current.as_ref(), &target, &cmd.variables);
    let requested = match action {
        DeployAction::Install => {
            let install = Install {
                environment: cmd.environment.clone(),
                stack: cmd.stack.clone(),
                version: target,
                variables: cmd.variables.clone(),
            };
            self::install(pool, &install, metadata, idempotency, secrets).await?
        }
        DeployAction::Redeploy => {
            let redeploy = Redeploy {
                environment: cmd.environment.clone(),
                stack: cmd.stack.clone(),
                force: cmd.force,
            };
            self::redeploy(pool, &redeploy, metadata, idempotency).await?
        }
        DeployAction::Upgrade => {
            let upgrade = Upgrade {
                environment: cmd.environment.clone(),
                stack: cmd.stack.clone(),
                target_version: target,
                variables: cmd.variables.clone(),
            };
            self::upgrade(pool, &upgrade, metadata, idempotency, secrets).await?
        }
    };
    Ok((action, requested))
}

/// The newest version of a catalog stack (semver order).
pub async fn latest_version(pool: &PgPool, stack: &str) -> Result<Option<String>> {
    let versions: Vec<String> =
        sqlx::query_scalar("SELECT version FROM catalog_stacks WHERE stack_name = $1")
            .bind(stack)
            .fetch_all(pool)
            .await?;
    Ok(versions
        .into_iter()
        .max_by(|a, b| catalog::compare_versions(a, b)))
}

/// Redeploys exactly what an earlier successful deployment ran: its version, its variables
/// and every image pinned by the digest it pulled, so it works after a tag has moved.
pub async fn rollback(pool: &PgPool, to: Uuid, metadata: &Metadata) -> Result<Requested> {
    let mut tx = pool.begin().await?;
    let history = store::read_stream(&mut tx, &stream::deployment(to)).await?;
    let event = decide_rollback(Uuid::now_v7(), to, &history)?;
    let Some((_, request)) = event.request() else {
        unreachable!("decide_rollback decides a request")
    };
    if request_manifest(&mut tx, request).await?.is_none() {
        return Err(Error::Invalid(format!(
            "version '{}' of stack '{}' is no longer in the catalog",
            request.version, request.stack
        )));
    }
    // Requests for one stack are decided one at a time: workers rely on their order.
    lock_stack_requests(&mut tx, &request.environment, &request.stack).await?;
    let current = current_stack(&mut tx, &request.environment, &request.stack).await?;
    let event = match event {
        Event::RollbackRequested(mut r) => {
            r.previous_version = current.map(|c| c.version);
            Event::RollbackRequested(r)
        }
        other => other,
    };
    submit(tx, event, metadata, None).await
}

pub fn decide_rollback(
    id: Uuid,
    to: Uuid,
    history: &[crate::event::RecordedEvent],
) -> Result<Event> {
    let (_, earlier) = history
        .first()
        .and_then(|e| e.event.request())
        .ok_or_else(|| Error::NotFound(format!("deployment {to} not found")))?;
    if !history
        .iter()
        .any(|e| matches!(e.event, Event::DeploymentSucceeded { .. }))
    {
        return Err(Error::Invalid(format!(
            "deployment {to} did not succeed: only a successful deployment can be rolled back to"
        )));
    }
    let mut images = BTreeMap::new();
    for e in history {
        if let Event::ImagePulled {
            service,
            image,
            digest,
            ..
        } = &e.event
        {
            let digest = digest.as_ref().ok_or_else(|| {
                Error::Invalid(format!(
                    "deployment {to} ran service '{service}' from an image with no registry digest; it cannot be pinned"
                ))
            })?;
            images.insert(
                service.clone(),
                format!("{}@{digest}", crate::spec::repository_of(image)),
            );
        }
    }
    Ok(Event::RollbackRequested(DeploymentRequest {
        deployment: id,
        environment: earlier.environment.clone(),
        stack: earlier.stack.clone(),
        version: earlier.version.clone(),
        previous_version: None,
        variables: earlier.variables.clone(),
        force: false,
        images,
        removal: None,
        // Exactly the manifest that ran then, from the log if the catalog moved on.
        catalog_source: earlier.catalog_source.clone(),
        catalog_revision: earlier.catalog_revision.clone(),
    }))
}

pub(super) async fn validate_target(pool: &PgPool, environment: &str, stack: &str) -> Result<()> {
    validate_name("environment id", environment)?;
    validate_name("stack name", stack)?;
    if super::environments::get(pool, environment).await?.is_none() {
        return Err(Error::Invalid(format!(
            "environment '{environment}' not found"
        )));
    }
    Ok(())
}

/// Requests for one stack are decided one at a time (until their transaction ends), so a
/// burst sees the deployment the first request queued and joins it.
pub(super) async fn lock_stack_requests(
    tx: &mut PgConnection,
    environment: &str,
    stack: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("shiplog-requests:{environment}/{stack}"))
        .execute(tx)
        .await?;
    Ok(())
}

struct Queued {
    id: Uuid,
    kind: DeploymentKind,
    force: bool,
}

/// Deployments of the stack not yet started, newest first.
async fn queued(conn: &mut PgConnection, environment: &str, stack: &str) -> Result<Vec<Queued>> {
    let rows: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, kind, force FROM deployments
         WHERE environment_id = $1 AND stack_name = $2 AND status = 'queued'
         ORDER BY created_at DESC",
    )
    .bind(environment)
    .bind(stack)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, kind, force)| {
            let kind = serde_json::from_value(serde_json::Value::String(kind)).ok()?;
            Some(Queued { id, kind, force })
        })
        .collect())
}

/// Locks a deployment's projection row for the rest of the transaction. Everyone who
/// appends to a deployment stream takes this lock first (the API's joins and supersessions,
/// the worker's progress), so appends to one deployment queue up on the row instead of
/// deadlocking between the row and the stream's unique index.
pub async fn lock_row(tx: &mut PgConnection, deployment: Uuid) -> Result<()> {
    sqlx::query("SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE")
        .bind(deployment)
        .execute(tx)
        .await?;
    Ok(())
}

/// Appends to a deployment that has not started. The expected version is the guard: if a
/// worker starts it meanwhile, the append conflicts and nothing is written.
async fn append_if_queued(
    tx: &mut PgConnection,
    deployment: Uuid,
    event: Event,
    metadata: &Metadata,
) -> Result<bool> {
    // The projection row is locked first: the worker's start updates that row too, so a
    // join and a start are serialised and this one sees whether the other happened.
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM deployments WHERE id = $1 FOR UPDATE")
            .bind(deployment)
            .fetch_optional(&mut *tx)
            .await?;
    if status.as_deref() != Some("queued") {
        return Ok(false);
    }
    let stream = stream::deployment(deployment);
    let version = store::stream_version(&mut *tx, &stream).await?;
    match store::append(
        tx,
        &stream,
        ExpectedVersion::Exactly(version),
        &[event],
        metadata,
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The deployment a stream's request describes.
async fn load(conn: &mut PgConnection, deployment: Uuid) -> Result<Requested> {
    let first = store::read_first(conn, &stream::deployment(deployment)).await?;
    let (kind, request) = first
        .as_ref()
        .and_then(|e| e.event.request())
        .ok_or_else(|| Error::NotFound(format!("deployment {deployment} not found")))?;
    Ok(Requested {
        deployment,
        kind,
        request: request.clone(),
        joined: false,
        replayed: false,
    })
}

/// A repeat of an idempotent request answers what the first one did.
pub(super) async fn replay(
    conn: &mut PgConnection,
    idempotency: Option<&Idempotency>,
) -> Result<Option<Requested>> {
    let Some(idem) = idempotency else {
        return Ok(None);
    };
    let found: Option<(String, Uuid)> = sqlx::query_as(
        "SELECT fingerprint, deployment_id FROM idempotency_keys
         WHERE scope = $1 AND key = $2
           AND created_at > now() - make_interval(hours => $3)",
    )
    .bind(&idem.scope)
    .bind(&idem.key)
    .bind(IDEMPOTENCY_RETENTION_HOURS)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((fingerprint, deployment)) = found else {
        return Ok(None);
    };
    if fingerprint != idem.fingerprint {
        return Err(Error::Unprocessable(format!(
            "Idempotency-Key '{}' was already used for a different request",
            idem.key
        )));
    }
    let mut requested = load(conn, deployment).await?;
    requested.replayed = true;
    Ok(Some(requested))
}

/// Remembers the idempotency key with the deployment in the same transaction, then commits.
/// If a concurrent request with the same key committed first, answers what it did.
async fn finish(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    idempotency: Option<&Idempotency>,
    requested: Requested,
) -> Result<Requested> {
    if let Some(idem) = idempotency {
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE scope = $1 AND key = $2 AND created_at <= now() - make_interval(hours => $3)",
        )
        .bind(&idem.scope)
        .bind(&idem.key)
        .bind(IDEMPOTENCY_RETENTION_HOURS)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, deployment_id)
             VALUES ($1, $2, $3, $4) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(&idem.scope)
        .bind(&idem.key)
        .bind(&idem.fingerprint)
        .bind(requested.deployment)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // The insert waited for the other transaction to commit; under READ COMMITTED
            // the next statement sees its row. Ours is rolled back whole.
            let first = replay(&mut tx, Some(idem)).await?;
            tx.rollback().await?;
            return first.ok_or_else(|| {
                Error::Unprocessable(format!("Idempotency-Key '{}' is in use", idem.key))
            });
        }
    }
    tx.commit().await?;
    Ok(requested)
}

/// Appends the request and pushes its job in the same transaction: a client that got a
/// deployment id has a durable request and a queued job.
pub(super) async fn submit(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    event: Event,
    metadata: &Metadata,
    idempotency: Option<&Idempotency>,
) -> Result<Requested> {
    let (kind, request) = event
        .request()
        .map(|(kind, r)| (kind, r.clone()))
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
    let requested = Requested {
        deployment: id,
        kind,
        request,
        joined: false,
        replayed: false,
    };
    finish(tx, idempotency, requested).await
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

/// The oldest deployment of the same stack that was requested before the one whose request
/// sits at `before` (its global position) and has not ended. Deployments of a stack run in
/// request order: a newer one that overtook an interrupted older one would be undone by it.
/// Positions of one stack's requests are in commit order because requests for a stack are
/// decided one at a time (`lock_stack_requests`).
pub async fn older_unfinished(
    conn: &mut PgConnection,
    environment: &str,
    stack: &str,
    before: i64,
) -> Result<Option<Uuid>> {
    let id = sqlx::query_scalar(
        "SELECT d.id FROM deployments d
         JOIN events e ON e.stream_id = 'deployment-' || d.id AND e.stream_version = 1
         WHERE d.environment_id = $1 AND d.stack_name = $2
           AND d.status IN ('queued', 'in_progress') AND e.global_position < $3
         ORDER BY e.global_position LIMIT 1",
    )
    .bind(environment)
    .bind(stack)
    .bind(before)
    .fetch_optional(conn)
    .await?;
    Ok(id)
}

/// A catalog stack version as the catalog has it now, with where it came from.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub manifest: Manifest,
    pub source: String,
    /// The source's revision (a git commit); `None` for folders.
    pub revision: Option<String>,
}

/// The catalog entry of the version the stack runs, if it runs and the catalog has it.
pub async fn running_origin(
    conn: &mut PgConnection,
    stack: &str,
    current: Option<&StackState>,
) -> Result<Option<CatalogEntry>> {
    match current {
        Some(c) => catalog_entry(conn, stack, &c.version).await,
        None => Ok(None),
    }
}

/// A catalog stack version, parsed again from the manifest text the log recorded.
pub async fn catalog_entry(
    conn: &mut PgConnection,
    stack: &str,
    version: &str,
) -> Result<Option<CatalogEntry>> {
    let row: Option<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT c.file, c.manifest, c.source_id, s.revision
         FROM catalog_stacks c LEFT JOIN catalog_sources s ON s.id = c.source_id
         WHERE c.stack_name = $1 AND c.version = $2",
    )
    .bind(stack)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    row.map(|(file, text, source, revision)| {
        Ok(CatalogEntry {
            manifest: parse(&file, &text)?,
            source,
            revision,
        })
    })
    .transpose()
}

fn parse(file: &str, text: &str) -> Result<Manifest> {
    catalog::parse_manifest(file, text).map_err(|e| Error::Invalid(e.to_string()))
}

/// The manifest a request runs: the one of the catalog revision it was requested with,
/// read back from that source's `CatalogSynced` in the log when the catalog has moved on
/// since; else (older requests, folders) the catalog's current one.
pub async fn request_manifest(
    conn: &mut PgConnection,
    request: &DeploymentRequest,
) -> Result<Option<Manifest>> {
    let current = catalog_entry(&mut *conn, &request.stack, &request.version).await?;
    let (Some(source), Some(revision)) = (&request.catalog_source, &request.catalog_revision)
    else {
        return Ok(current.map(|c| c.manifest));
    };
    if let Some(c) = &current
        && &c.source == source
        && c.revision.as_ref() == Some(revision)
    {
        return Ok(current.map(|c| c.manifest));
    }
    let history = store::read_stream(&mut *conn, &stream::source(source)).await?;
    for recorded in history.iter().rev() {
        if let Event::CatalogSynced {
            revision: Some(r),
            stacks,
            ..
        } = &recorded.event
            && r == revision
            && let Some(s) = stacks
                .iter()
                .find(|s| s.name == request.stack && s.version == request.version)
        {
            return parse(&s.file, &s.manifest).map(Some);
        }
    }
    Ok(current.map(|c| c.manifest))
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

    fn manifest() -> CatalogEntry {
        CatalogEntry {
            manifest: catalog::parse_manifest("shop.yml", MANIFEST).unwrap(),
            source: "git-abc".into(),
            revision: Some("0123abcd".into()),
        }
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
        let err = decide_redeploy(Uuid::nil(), &cmd, None, None).unwrap_err();
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
        let Event::RedeployRequested(r) =
            decide_redeploy(Uuid::nil(), &cmd, Some(&state), None).unwrap()
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
            None,
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
    fn requests_record_the_catalog_revision_they_resolved() {
        let state = running(&[("TOKEN", "t")]);
        let entry = manifest();
        let Event::UpgradeRequested(r) =
            decide_upgrade(Uuid::nil(), &upgrade(&[]), Some(&state), Some(&entry), None).unwrap()
        else {
            panic!("wrong event")
        };
        assert_eq!(r.catalog_source.as_deref(), Some("git-abc"));
        assert_eq!(r.catalog_revision.as_deref(), Some("0123abcd"));
        let cmd = Redeploy {
            environment: "prod".into(),
            stack: "shop".into(),
            force: false,
        };
        let Event::RedeployRequested(r) =
            decide_redeploy(Uuid::nil(), &cmd, Some(&state), Some(&entry)).unwrap()
        else {
            panic!("wrong event")
        };
        assert_eq!(r.catalog_revision.as_deref(), Some("0123abcd"));
    }

    #[test]
    fn upgrade_with_a_missing_required_variable_is_refused_naming_it() {
        let err = decide_upgrade(
            Uuid::nil(),
            &upgrade(&[]),
            Some(&running(&[])),
            Some(&manifest()),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("TOKEN")),
            "{err}"
        );
    }

    #[test]
    fn upgrade_to_an_unknown_version_is_refused() {
        let err = decide_upgrade(Uuid::nil(), &upgrade(&[]), Some(&running(&[])), None, None)
            .unwrap_err();
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

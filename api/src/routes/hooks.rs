//! The CI/CD hooks. Their request and response shapes are a fixed contract.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use shiplog_events::apikey::Permission;
use shiplog_events::commands::lifecycle::{self, Action, Lifecycle};
use shiplog_events::commands::{catalog, deployments, dry_run};
use shiplog_events::{plan, queries};
use uuid::Uuid;

use crate::auth::KeyCaller;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RedeployRequest {
    stack_name: String,
    environment_id: Option<String>,
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpgradeRequest {
    stack_name: String,
    target_version: String,
    environment_id: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeployRequest {
    stack_name: String,
    environment_id: Option<String>,
    /// Default: the newest version in the catalog.
    version: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    force: bool,
}

/// `restart-containers` and `stop-containers`: the whole stack, as it runs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContainersRequest {
    stack_name: String,
    environment_id: Option<String>,
}

/// The fields every deployment hook's body has.
trait HookBody: serde::de::DeserializeOwned {
    fn stack_name(&self) -> &str;
    fn environment_id(&self) -> Option<&str>;
}

macro_rules! hook_body {
    ($($body:ty),*) => {$(
        impl HookBody for $body {
            fn stack_name(&self) -> &str {
                &self.stack_name
            }
            fn environment_id(&self) -> Option<&str> {
                self.environment_id.as_deref()
            }
        }
    )*};
}
hook_body!(
    RedeployRequest,
    UpgradeRequest,
    DeployRequest,
    ContainersRequest
);

/// What every deployment hook checks first, in this order: the permission, the body, the
/// key's stack scope, the `Idempotency-Key`, the environment (the key's scope or the body's).
fn accept<B: HookBody>(
    caller: &KeyCaller,
    permission: Permission,
    req: &HttpRequest,
    raw: &[u8],
) -> Result<(B, String, Option<deployments::Idempotency>), ApiError> {
    caller.require(permission)?;
    let body: B = parse_json(raw)?;
    caller.stack(body.stack_name())?;
    let idempotency = idempotency(req, caller, raw)?;
    let environment = caller.environment(body.environment_id())?;
    Ok((body, environment, idempotency))
}

/// `?wait=true&timeout=<seconds>`: answer when the deployment ends, or 202 at the timeout.
/// `?dryRun=true` (deploy, redeploy, upgrade): answer the plan instead, write nothing.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: bool,
    timeout: Option<u64>,
    #[serde(default, rename = "dryRun")]
    dry_run: bool,
}

const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// What every deployment hook answers, beside its own fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    success: bool,
    message: String,
    deployment_id: Uuid,
    /// Only with `?wait=true`: the deployment's status when the answer was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RedeployResponse {
    #[serde(flatten)]
    outcome: Outcome,
    stack_name: String,
    stack_version: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UpgradeResponse {
    #[serde(flatten)]
    outcome: Outcome,
    previous_version: Option<String>,
    new_version: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeployResponse {
    #[serde(flatten)]
    outcome: Outcome,
    stack_name: String,
    stack_version: String,
    previous_version: Option<String>,
    /// What the ensure turned into: install, upgrade or redeploy.
    action: &'static str,
}

trait HookAnswer: Serialize {
    fn outcome(&mut self) -> &mut Outcome;
}

impl HookAnswer for RedeployResponse {
    fn outcome(&mut self) -> &mut Outcome {
        &mut self.outcome
    }
}

impl HookAnswer for DeployResponse {
    fn outcome(&mut self) -> &mut Outcome {
        &mut self.outcome
    }
}

impl HookAnswer for UpgradeResponse {
    fn outcome(&mut self) -> &mut Outcome {
        &mut self.outcome
    }
}

/// Answers at once, or with `?wait=true` when the deployment ends: then `success` and
/// `message` tell how it ended; still running at the timeout, 202 with its status.
async fn answer(
    state: &AppState,
    query: &WaitQuery,
    mut body: impl HookAnswer,
) -> Result<HttpResponse, ApiError> {
    let id = body.outcome().deployment_id;
    let code = match wait_if_asked(state, query, id).await? {
        Waited::NotAsked => StatusCode::OK,
        Waited::Finished(d) => {
            let outcome = body.outcome();
            outcome.success = d.status == "success";
            outcome.message = ended_message(&d);
            outcome.status = Some(d.status);
            StatusCode::OK
        }
        Waited::TimedOut(current) => {
            body.outcome().status = Some(current);
            StatusCode::ACCEPTED
        }
    };
    Ok(HttpResponse::build(code).json(body))
}

/// A dry run's answer: the plan, with each target image's digest asked of its registry.
async fn answer_plan(state: &AppState, draft: plan::Draft) -> Result<HttpResponse, ApiError> {
    let digests = match &draft.target {
        Ok(spec) => state.registry.digests(spec).await,
        Err(_) => BTreeMap::new(),
    };
    Ok(HttpResponse::Ok().json(plan::build(&draft, &digests)))
}

#[post("/api/hooks/redeploy")]
#[tracing::instrument(name = "hook redeploy", skip_all, fields(key = %caller.key.id))]
async fn redeploy(
    state: web::Data<AppState>,
    caller: KeyCaller,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (body, environment, idempotency) =
        accept::<RedeployRequest>(&caller, Permission::HooksRedeploy, &req, &raw)?;
    let cmd = deployments::Redeploy {
        environment,
        stack: body.stack_name,
        force: body.force,
    };
    if query.dry_run {
        return answer_plan(
            &state,
            dry_run::redeploy(&state.pool, &cmd, state.catalog.secret_key.as_ref()).await?,
        )
        .await;
    }
    let requested =
        deployments::redeploy(&state.pool, &cmd, &caller.metadata, idempotency.as_ref()).await?;
    let response = RedeployResponse {
        outcome: Outcome {
            success: true,
            message: format!("Successfully triggered redeploy of '{}'.", cmd.stack),
            deployment_id: requested.deployment,
            status: None,
        },
        stack_name: cmd.stack.clone(),
        stack_version: requested.request.version.clone(),
    };
    answer(&state, &query, response).await
}

#[post("/api/hooks/upgrade")]
#[tracing::instrument(name = "hook upgrade", skip_all, fields(key = %caller.key.id))]
async fn upgrade(
    state: web::Data<AppState>,
    caller: KeyCaller,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (body, environment, idempotency) =
        accept::<UpgradeRequest>(&caller, Permission::HooksUpgrade, &req, &raw)?;
    let cmd = deployments::Upgrade {
        environment,
        stack: body.stack_name,
        target_version: body.target_version,
        variables: body.variables,
    };
    if query.dry_run {
        return answer_plan(
            &state,
            dry_run::upgrade(&state.pool, &cmd, state.catalog.secret_key.as_ref()).await?,
        )
        .await;
    }
    let requested = deployments::upgrade(
        &state.pool,
        &cmd,
        &caller.metadata,
        idempotency.as_ref(),
        state.catalog.secret_key.as_ref(),
    )
    .await?;
    let previous = requested.request.previous_version.clone();
    let response = UpgradeResponse {
        outcome: Outcome {
            success: true,
            message: format!(
                "Successfully upgraded '{}' from {} to {}.",
                cmd.stack,
                previous.as_deref().unwrap_or("nothing"),
                cmd.target_version
            ),
            deployment_id: requested.deployment,
            status: None,
        },
        previous_version: previous,
        new_version: cmd.target_version.clone(),
    };
    answer(&state, &query, response).await
}

/// The idempotent ensure: install the stack when absent, redeploy it when it runs the
/// version already, upgrade it otherwise.
#[post("/api/hooks/deploy")]
#[tracing::instrument(name = "hook deploy", skip_all, fields(key = %caller.key.id))]
async fn deploy(
    state: web::Data<AppState>,
    caller: KeyCaller,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (body, environment, idempotency) =
        accept::<DeployRequest>(&caller, Permission::HooksDeploy, &req, &raw)?;
    let cmd = deployments::Deploy {
        environment,
        stack: body.stack_name,
        version: body.version,
        variables: body.variables,
        force: body.force,
    };
    if query.dry_run {
        return answer_plan(
            &state,
            dry_run::deploy(&state.pool, &cmd, state.catalog.secret_key.as_ref()).await?,
        )
        .await;
    }
    let (action, requested) = deployments::deploy(
        &state.pool,
        &cmd,
        &caller.metadata,
        idempotency.as_ref(),
        state.catalog.secret_key.as_ref(),
    )
    .await?;
    let version = requested.request.version.clone();
    let response = DeployResponse {
        outcome: Outcome {
            success: true,
            message: format!(
                "Successfully triggered {} of '{}' {version}.",
                action.as_str(),
                cmd.stack
            ),
            deployment_id: requested.deployment,
            status: None,
        },
        stack_name: cmd.stack.clone(),
        stack_version: version,
        previous_version: requested.request.previous_version.clone(),
        action: action.as_str(),
    };
    answer(&state, &query, response).await
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncResponse {
    success: bool,
    stacks_loaded: usize,
    sources_synced: usize,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<SyncFailure>,
}

#[derive(Debug, Serialize)]
struct SyncFailure {
    source: String,
    message: String,
}

/// Sources that fail to sync are reported by name (400); the others are synced anyway.
#[post("/api/hooks/sync-sources")]
#[tracing::instrument(name = "hook sync-sources", skip_all, fields(key = %caller.key.id))]
async fn sync_sources(
    state: web::Data<AppState>,
    caller: KeyCaller,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::HooksSyncSources)?;
    let report = catalog::sync_all(&state.pool, &state.catalog, &caller.metadata).await?;
    let mut message = format!(
        "Synced {} source(s), loaded {} stack(s).",
        report.sources_synced, report.stacks_loaded
    );
    let failed = !report.failures.is_empty();
    if failed {
        message.push_str(&format!(
            " {} source(s) failed to sync.",
            report.failures.len()
        ));
    }
    let body = SyncResponse {
        success: !failed,
        stacks_loaded: report.stacks_loaded,
        sources_synced: report.sources_synced,
        message,
        errors: report
            .failures
            .into_iter()
            .map(|(source, message)| SyncFailure { source, message })
            .collect(),
    };
    Ok(if failed {
        HttpResponse::BadRequest().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// An `Idempotency-Key` header makes a hook safe to retry: a repeat with the same body
/// answers the original deployment, the same key with another body is a 422.
fn idempotency(
    req: &HttpRequest,
    caller: &KeyCaller,
    body: &[u8],
) -> Result<Option<deployments::Idempotency>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    let scope = format!("apikey:{}", caller.key.id);
    Ok(Some(deployments::Idempotency::new(
        &scope,
        key,
        req.path(),
        body,
    )?))
}

enum Waited {
    NotAsked,
    Finished(Box<queries::Deployment>),
    TimedOut(String),
}

fn ended_message(d: &queries::Deployment) -> String {
    let detail = d.message.as_deref().unwrap_or("");
    format!(
        "Deployment {} ended with status '{}'. {detail}",
        d.id, d.status
    )
    .trim_end()
    .to_owned()
}

async fn wait_if_asked(state: &AppState, query: &WaitQuery, id: Uuid) -> Result<Waited, ApiError> {
    if !query.wait {
        return Ok(Waited::NotAsked);
    }
    let timeout = query
        .timeout
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let deployment = queries::deployment(&state.pool, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("deployment {id} not found")))?;
        if deployment.is_terminal() {
            return Ok(Waited::Finished(Box::new(deployment)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Waited::TimedOut(deployment.status));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Restart or stop every container of a stack: a deployment of its own, in request order
/// with the stack's other deployments.
async fn containers_hook(
    state: &AppState,
    caller: &KeyCaller,
    query: &WaitQuery,
    req: &HttpRequest,
    raw: &[u8],
    (permission, action): (Permission, Action),
) -> Result<HttpResponse, ApiError> {
    let (body, environment, idempotency) =
        accept::<ContainersRequest>(caller, permission, req, raw)?;
    // Restarting or stopping for real when a plan was asked for would be the worst answer.
    if query.dry_run {
        return Err(ApiError::BadRequest(
            "dryRun: only deploy, redeploy and upgrade can plan; restart-containers and \
             stop-containers cannot"
                .into(),
        ));
    }
    let cmd = Lifecycle {
        environment,
        stack: body.stack_name,
        action,
    };
    let requested =
        lifecycle::request(&state.pool, &cmd, &caller.metadata, idempotency.as_ref()).await?;
    let response = RedeployResponse {
        outcome: Outcome {
            success: true,
            message: format!(
                "Successfully triggered {} of the containers of '{}'.",
                action.as_str(),
                cmd.stack
            ),
            deployment_id: requested.deployment,
            status: None,
        },
        stack_name: cmd.stack.clone(),
        stack_version: requested.request.version.clone(),
    };
    answer(state, query, response).await
}

#[post("/api/hooks/restart-containers")]
#[tracing::instrument(name = "hook restart-containers", skip_all, fields(key = %caller.key.id))]
async fn restart_containers(
    state: web::Data<AppState>,
    caller: KeyCaller,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let what = (Permission::HooksRestartContainers, Action::Restart);
    containers_hook(&state, &caller, &query, &req, &raw, what).await
}

#[post("/api/hooks/stop-containers")]
#[tracing::instrument(name = "hook stop-containers", skip_all, fields(key = %caller.key.id))]
async fn stop_containers(
    state: web::Data<AppState>,
    caller: KeyCaller,
    query: web::Query<WaitQuery>,
    req: HttpRequest,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let what = (Permission::HooksStopContainers, Action::Stop);
    containers_hook(&state, &caller, &query, &req, &raw, what).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(redeploy)
        .service(upgrade)
        .service(deploy)
        .service(restart_containers)
        .service(stop_containers)
        .service(sync_sources);
}

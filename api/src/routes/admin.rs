//! The administration API (admin token): environments, keys, catalog, stack installs.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shiplog_events::catalog::git::{GitCredentials, GitLocation};
use shiplog_events::commands::{catalog, deployments, environments, keys};
use shiplog_events::endpoint::{SshRequest, TlsRequest};
use shiplog_events::queries;
use uuid::Uuid;

use crate::auth::Admin;
use crate::error::{ApiError, parse_json};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewEnvironment {
    id: String,
    name: String,
    docker_endpoint: String,
    /// `tcp://` endpoints: the TLS client files on the workers' hosts.
    tls: Option<TlsRequest>,
    /// `ssh://` endpoints: identity and known_hosts files on the workers' hosts.
    ssh: Option<SshRequest>,
}

#[post("/api/environments")]
async fn create_environment(
    state: web::Data<AppState>,
    admin: Admin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: NewEnvironment = parse_json(&body)?;
    let new = environments::NewEnvironment {
        id: &body.id,
        name: &body.name,
        docker_endpoint: &body.docker_endpoint,
        tls: body.tls.as_ref(),
        ssh: body.ssh.as_ref(),
    };
    environments::register(&state.pool, &new, &admin.metadata).await?;
    let created = environments::get(&state.pool, &body.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("environment '{}' not found", body.id)))?;
    Ok(HttpResponse::Created().json(created))
}

#[get("/api/environments")]
async fn list_environments(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(environments::list(&state.pool).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewKeyRequest {
    name: String,
    permissions: Vec<String>,
    environment_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    /// Limit the key to these stacks.
    stacks: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyView {
    id: Uuid,
    name: String,
    prefix: String,
    permissions: Vec<String>,
    environment_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    /// `null`: every stack.
    stacks: Option<Vec<String>>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoke_reason: Option<String>,
    last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedKey {
    id: Uuid,
    /// The key in clear: shown in this response and never again.
    key: String,
    name: String,
    permissions: Vec<String>,
    environment_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    stacks: Option<Vec<String>>,
    created_at: DateTime<Utc>,
}

#[post("/api/keys")]
async fn create_key(
    state: web::Data<AppState>,
    admin: Admin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: NewKeyRequest = parse_json(&body)?;
    let new = keys::NewKey {
        name: body.name,
        permissions: body.permissions,
        environment_id: body.environment_id,
        expires_at: body.expires_at,
        stacks: body.stacks,
    };
    let (stored, plain) = keys::create(&state.pool, &new, &admin.metadata).await?;
    Ok(HttpResponse::Created().json(CreatedKey {
        id: stored.id,
        key: plain.expose().to_owned(),
        name: stored.name,
        permissions: stored.permissions,
        environment_id: stored.environment_id,
        expires_at: stored.expires_at,
        stacks: stored.stacks,
        created_at: stored.created_at,
    }))
}

#[get("/api/keys")]
async fn list_keys(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let listed: Vec<KeyView> = keys::list(&state.pool)
        .await?
        .into_iter()
        .map(|k| KeyView {
            id: k.key.id,
            name: k.key.name,
            prefix: k.key.prefix,
            permissions: k.key.permissions,
            environment_id: k.key.environment_id,
            expires_at: k.key.expires_at,
            stacks: k.key.stacks,
            created_at: k.key.created_at,
            revoked_at: k.key.revoked_at,
            revoke_reason: k.revoke_reason,
            last_used_at: k.last_used_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(listed))
}

#[derive(Debug, Deserialize)]
struct RevokeQuery {
    reason: Option<String>,
}

#[delete("/api/keys/{id}")]
async fn revoke_key(
    state: web::Data<AppState>,
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<RevokeQuery>,
) -> Result<HttpResponse, ApiError> {
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::NotFound(format!("API key {id} not found")))?;
    keys::revoke(&state.pool, id, query.into_inner().reason, &admin.metadata).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `{"type":"directory","path"}` or `{"type":"git","url","ref","path"?,"credentials"?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSource {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
    url: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    credentials: Option<NewCredentials>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum NewCredentials {
    Https {
        username: String,
        password: String,
    },
    #[serde(rename_all = "camelCase")]
    Ssh {
        private_key: String,
        known_hosts: Option<String>,
    },
}

// Hand-written so a request logged with `{:?}` never shows a secret.
impl std::fmt::Debug for NewCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NewCredentials::Https { .. } => "Https(<redacted>)",
            NewCredentials::Ssh { .. } => "Ssh(<redacted>)",
        })
    }
}

fn required(value: Option<String>, field: &str, kind: &str) -> Result<String, ApiError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("{field} is required for a {kind} source")))
}

fn refuse(value: &Option<impl Sized>, field: &str, kind: &str) -> Result<(), ApiError> {
    match value {
        Some(_) => Err(ApiError::BadRequest(format!(
            "{field} is not a field of a {kind} source"
        ))),
        None => Ok(()),
    }
}

fn git_credentials(c: NewCredentials) -> Result<GitCredentials, ApiError> {
    Ok(match c {
        NewCredentials::Https { username, password } => {
            if username.is_empty() || password.is_empty() {
                return Err(ApiError::BadRequest(
                    "credentials.username and credentials.password must not be empty".into(),
                ));
            }
            GitCredentials::Https { username, password }
        }
        NewCredentials::Ssh {
            private_key,
            known_hosts,
        } => {
            if !private_key.contains("PRIVATE KEY") {
                return Err(ApiError::BadRequest(
                    "credentials.privateKey must be a private key in OpenSSH or PEM form".into(),
                ));
            }
            if known_hosts
                .as_deref()
                .is_some_and(|l| l.contains('\n') || l.trim().is_empty())
            {
                return Err(ApiError::BadRequest(
                    "credentials.knownHosts must be one known_hosts line".into(),
                ));
            }
            GitCredentials::Ssh {
                private_key,
                known_hosts,
            }
        }
    })
}

#[post("/api/catalog/sources")]
async fn add_source(
    state: web::Data<AppState>,
    admin: Admin,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: NewSource = parse_json(&body)?;
    let (source, stacks) = match body.kind.as_str() {
        catalog::DIRECTORY => {
            let kind = catalog::DIRECTORY;
            refuse(&body.url, "url", kind)?;
            refuse(&body.reference, "ref", kind)?;
            refuse(&body.credentials, "credentials", kind)?;
            let path = required(body.path, "path", kind)?;
            catalog::add_directory(&state.pool, &path, &admin.metadata).await?
        }
        catalog::GIT => {
            let location = GitLocation {
                url: required(body.url, "url", catalog::GIT)?,
                reference: required(body.reference, "ref", catalog::GIT)?,
                path: body.path.filter(|p| !p.trim_matches('/').is_empty()),
            };
            let credentials = body.credentials.map(git_credentials).transpose()?;
            catalog::add_git(
                &state.pool,
                &state.catalog,
                location,
                credentials,
                &admin.metadata,
            )
            .await?
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "unsupported catalog source type '{other}': supported: directory, git"
            )));
        }
    };
    Ok(HttpResponse::Created()
        .json(serde_json::json!({ "source": source, "stacksLoaded": stacks })))
}

#[get("/api/catalog/sources")]
async fn list_sources(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog::list_sources(&state.pool).await?))
}

#[get("/api/catalog/stacks")]
async fn list_catalog_stacks(
    state: web::Data<AppState>,
    _: Admin,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(catalog::list_stacks(&state.pool).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstallRequest {
    stack_name: String,
    version: String,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[post("/api/environments/{env}/stacks")]
async fn install_stack(
    state: web::Data<AppState>,
    admin: Admin,
    env: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: InstallRequest = parse_json(&body)?;
    let cmd = deployments::Install {
        environment: env.into_inner(),
        stack: body.stack_name,
        version: body.version,
        variables: body.variables,
    };
    let requested = deployments::install(
        &state.pool,
        &cmd,
        &admin.metadata,
        None,
        state.catalog.secret_key.as_ref(),
    )
    .await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "success": true,
        "message": format!("Deployment of '{}' {} queued.", cmd.stack, cmd.version),
        "deploymentId": requested.deployment,
        "stackName": cmd.stack,
        "stackVersion": cmd.version,
    })))
}

async fn existing_environment(state: &AppState, env: &str) -> Result<(), ApiError> {
    match environments::get(&state.pool, env).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("environment '{env}' not found"))),
    }
}

#[get("/api/environments/{env}/stacks")]
async fn list_stacks(
    state: web::Data<AppState>,
    _: Admin,
    env: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    existing_environment(&state, &env).await?;
    Ok(HttpResponse::Ok().json(queries::stack_listing(&state.pool, &env).await?))
}

#[derive(Debug, Deserialize)]
struct StackQuery {
    /// RFC 3339: answer what was current then, folded from the event log.
    at: Option<String>,
}

#[get("/api/environments/{env}/stacks/{name}")]
async fn get_stack(
    state: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
    query: web::Query<StackQuery>,
) -> Result<HttpResponse, ApiError> {
    let (env, name) = path.into_inner();
    existing_environment(&state, &env).await?;
    let at = match &query.at {
        None => None,
        Some(at) => Some(
            DateTime::parse_from_rfc3339(at)
                .map_err(|e| {
                    ApiError::BadRequest(format!(
                        "at must be an RFC 3339 time like 2026-11-22T10:00:00Z, not '{at}': {e}"
                    ))
                })?
                .with_timezone(&Utc),
        ),
    };
    let stack = match at {
        None => queries::stack(&state.pool, &env, &name).await?,
        Some(at) => queries::stack_at(&state.pool, &env, &name, at).await?,
    };
    let stack = stack.ok_or_else(|| {
        ApiError::NotFound(match at {
            None => format!("stack '{name}' is not deployed in environment '{env}'"),
            Some(at) => format!(
                "stack '{name}' was not deployed in environment '{env}' at {}",
                at.to_rfc3339()
            ),
        })
    })?;
    Ok(HttpResponse::Ok().json(stack))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_environment)
        .service(list_environments)
        .service(create_key)
        .service(list_keys)
        .service(revoke_key)
        .service(add_source)
        .service(list_sources)
        .service(list_catalog_stacks)
        .service(install_stack)
        .service(list_stacks)
        .service(get_stack);
}

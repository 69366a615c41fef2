//! Stack lifecycle for operators (admin token): start, stop, restart, remove. Each answers
//! 202 with the deployment that carries it out; poll `/api/deployments/{id}` for its end.

use actix_web::{HttpResponse, delete, post, web};
use serde::Deserialize;
use shiplog_events::commands::lifecycle::{self, Action, Lifecycle};
use shiplog_events::event::Removal;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

async fn request(
    state: &AppState,
    admin: &Admin,
    (environment, stack): (String, String),
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let cmd = Lifecycle {
        environment,
        stack,
        action,
    };
    let requested = lifecycle::request(&state.pool, &cmd, &admin.metadata, None).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "success": true,
        "message": format!("{} of stack '{}' queued.", capitalised(action.as_str()), cmd.stack),
        "deploymentId": requested.deployment,
        "stackName": cmd.stack,
        "stackVersion": requested.request.version,
        "action": action.as_str(),
    })))
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[post("/api/environments/{env}/stacks/{name}/start")]
async fn start(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    request(&state, &admin, path.into_inner(), Action::Start).await
}

#[post("/api/environments/{env}/stacks/{name}/stop")]
async fn stop(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    request(&state, &admin, path.into_inner(), Action::Stop).await
}

#[post("/api/environments/{env}/stacks/{name}/restart")]
async fn restart(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    request(&state, &admin, path.into_inner(), Action::Restart).await
}

/// Unlike doco-cd, volumes are kept unless asked: their data cannot be pulled again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    #[serde(default)]
    volumes: bool,
    #[serde(default)]
    images: bool,
}

#[delete("/api/environments/{env}/stacks/{name}")]
async fn remove(
    state: web::Data<AppState>,
    admin: Admin,
    path: web::Path<(String, String)>,
    query: web::Query<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    let removal = Removal {
        volumes: query.volumes,
        images: query.images,
    };
    request(&state, &admin, path.into_inner(), Action::Remove(removal)).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(start)
        .service(stop)
        .service(restart)
        .service(remove);
}

//! Deployment status, for the admin and for keys within their scope (that is how CI polls).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;
use shiplog_events::apikey::Permission;
use shiplog_events::commands::deployments;
use shiplog_events::queries::{self, DeploymentFilter};
use uuid::Uuid;

use crate::auth::Reader;
use crate::error::ApiError;
use crate::state::AppState;

const DEFAULT_PER_PAGE: i64 = 30;
const MAX_PER_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1_000_000_000;

pub(crate) async fn readable(
    state: &AppState,
    reader: &Reader,
    id: &str,
) -> Result<queries::Deployment, ApiError> {
    let not_found = || ApiError::NotFound(format!("deployment {id} not found"));
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let deployment = queries::deployment(&state.pool, id)
        .await?
        .ok_or_else(not_found)?;
    reader.may_read_stack(&deployment.environment_id, &deployment.stack_name)?;
    Ok(deployment)
}

#[get("/api/deployments/{id}")]
async fn get_deployment(
    state: web::Data<AppState>,
    reader: Reader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(readable(&state, &reader, &id).await?))
}

#[get("/api/deployments/{id}/statuses")]
async fn get_statuses(
    state: web::Data<AppState>,
    reader: Reader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let deployment = readable(&state, &reader, &id).await?;
    Ok(HttpResponse::Ok().json(queries::statuses(&state.pool, deployment.id).await?))
}

#[get("/api/deployments/{id}/events")]
async fn get_events(
    state: web::Data<AppState>,
    reader: Reader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let deployment = readable(&state, &reader, &id).await?;
    Ok(HttpResponse::Ok().json(queries::deployment_events(&state.pool, deployment.id).await?))
}

/// Redeploys exactly what an earlier successful deployment ran (images by digest).
#[post("/api/deployments/{id}/rollback")]
async fn rollback(
    state: web::Data<AppState>,
    reader: Reader,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Reader::Key(key) = &reader
        && !key.allows(Permission::HooksRollback)
    {
        return Err(ApiError::Forbidden(format!(
            "API key lacks the permission '{}'",
            Permission::HooksRollback.as_str()
        )));
    }
    let earlier = readable(&state, &reader, &id).await?;
    let metadata = reader.metadata(&req);
    let requested = deployments::rollback(&state.pool, earlier.id, &metadata).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "success": true,
        "message": format!(
            "Rolling back '{}' to {} as deployed by {}.",
            requested.request.stack, requested.request.version, earlier.id
        ),
        "deploymentId": requested.deployment,
        "stackName": requested.request.stack,
        "stackVersion": requested.request.version,
        "images": requested.request.images,
    })))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    environment: Option<String>,
    stack: Option<String>,
    status: Option<String>,
    per_page: Option<i64>,
    page: Option<i64>,
}

#[get("/api/deployments")]
async fn list_deployments(
    state: web::Data<AppState>,
    reader: Reader,
    query: web::Query<ListQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let per_page = query.per_page.unwrap_or(DEFAULT_PER_PAGE);
    if per_page < 1 {
        return Err(ApiError::BadRequest("per_page must be at least 1".into()));
    }
    let per_page = per_page.min(MAX_PER_PAGE);
    let page = query.page.unwrap_or(1);
    // Beyond this the offset would overflow; no listing has that many pages anyway.
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(ApiError::BadRequest(format!(
            "page must be between 1 and {MAX_PAGE}"
        )));
    }
    if let Some(status) = &query.status
        && !queries::STATES.contains(&status.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown status '{status}': expected one of {}",
            queries::STATES.join(", ")
        )));
    }
    let environment = match (reader.scope(), query.environment) {
        (Some(scope), Some(asked)) if scope != asked => {
            return Err(ApiError::Forbidden(format!(
                "API key is scoped to environment '{scope}'"
            )));
        }
        (Some(scope), _) => Some(scope.to_owned()),
        (None, asked) => asked,
    };
    // A key limited to named stacks lists one of them at a time.
    let stack = match (reader.stack_scope(), query.stack) {
        (Some(stacks), Some(asked)) if !stacks.contains(&asked) => {
            return Err(ApiError::Forbidden(format!(
                "API key is scoped to the stacks {} and cannot read '{asked}'",
                stacks.join(", ")
            )));
        }
        (Some([only]), None) => Some(only.clone()),
        (Some(stacks), None) => {
            return Err(ApiError::BadRequest(format!(
                "this API key is scoped to the stacks {}: filter by one of them (stack=…)",
                stacks.join(", ")
            )));
        }
        (_, asked) => asked,
    };
    let filter = DeploymentFilter {
        environment,
        stack,
        status: query.status,
    };
    let (rows, total) = queries::deployments(&state.pool, &filter, per_page, page).await?;
    let last_page = ((total + per_page - 1) / per_page).max(1);
    let mut response = HttpResponse::Ok();
    if let Some(link) = link_header(&req, &filter, per_page, page, last_page) {
        response.insert_header(("Link", link));
    }
    Ok(response.json(rows))
}

/// GitHub-style pagination: `<…?page=2&per_page=30>; rel="next"`, and prev, first, last.
fn link_header(
    req: &HttpRequest,
    filter: &DeploymentFilter,
    per_page: i64,
    page: i64,
    last: i64,
) -> Option<String> {
    let info = req.connection_info();
    let base = format!("{}://{}{}", info.scheme(), info.host(), req.path());
    let mut params = Vec::new();
    for (name, value) in [
        ("environment", &filter.environment),
        ("stack", &filter.stack),
        ("status", &filter.status),
    ] {
        if let Some(v) = value {
            params.push(format!("{name}={}", url_encode(v)));
        }
    }
    let url = |p: i64| {
        let mut all = params.clone();
        all.push(format!("per_page={per_page}"));
        all.push(format!("page={p}"));
        format!("<{base}?{}>", all.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
        links.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_deployments)
        .service(get_deployment)
        .service(get_statuses)
        .service(get_events)
        .service(rollback);
}

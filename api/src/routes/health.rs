//! Health for orchestrators: `/health` (the process answers), `/ready` (database reachable,
//! migrations applied) and doco-cd's `/v1/health` shape for tools that expect it.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use serde_json::json;
use shiplog_events::db;

use crate::state::AppState;

/// A probe answers within this, whatever the database does.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readiness(state: &AppState) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, db::check_ready(&state.pool)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "database did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

#[get("/ready")]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match readiness(&state).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(error) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "error": error })),
    }
}

#[get("/v1/health")]
async fn doco_health(state: web::Data<AppState>) -> HttpResponse {
    match readiness(&state).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "details": "healthy" })),
        Err(error) => HttpResponse::ServiceUnavailable()
            .json(json!({ "details": "unhealthy", "error": error })),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health).service(ready).service(doco_health);
}

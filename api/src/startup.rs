//! Builds the application: database, migrations, catalog folder, HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{App, HttpResponse, HttpServer, web};
use sha2::{Digest, Sha256};
use shiplog_events::commands::catalog;
use shiplog_events::event::Metadata;
use shiplog_events::{Error, db};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::{self, ApiMetrics};
use crate::registry::Registry;
use crate::request_id;
use crate::routes;
use crate::state::AppState;

/// How long start-up waits for an unreachable database before giving up.
const STARTUP_DB_WAIT: Duration = Duration::from_secs(60);

/// Largest request body accepted; hook bodies are a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    metrics_server: Option<Server>,
    pub state: AppState,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Domain(#[from] Error),
}

impl Application {
    /// Connects, migrates, registers the catalog folder and binds the listener
    /// (port 0 picks a free port: see `port()`).
    pub async fn build(config: &Config) -> Result<Self, StartupError> {
        config
            .admin_token_is_usable()
            .map_err(StartupError::Config)?;
        let pool = connect_with_retry(config).await?;
        db::migrate(&pool).await?;
        let state = AppState {
            pool,
            admin_token_hash: config
                .admin_token
                .as_ref()
                .map(|t| Sha256::digest(t.trim().as_bytes()).into()),
            metrics: Arc::new(ApiMetrics::new()),
            catalog: config.catalog_settings().map_err(StartupError::Config)?,
            registry: Registry::new(),
        };
        if let Some(dir) = &config.catalog_dir {
            register_catalog_dir(&state, dir).await?;
        }
        let listener = TcpListener::bind(config.listen).map_err(|source| StartupError::Listen {
            addr: config.listen,
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Listen {
                addr: config.listen,
                source,
            })?
            .port();
        let server = server(listener, state.clone()).map_err(|source| StartupError::Listen {
            addr: config.listen,
            source,
        })?;
        let (metrics_port, metrics_server) = match config.metrics_listen.0 {
            Some(addr) => {
                let listen_error = |source| StartupError::Listen { addr, source };
                let listener = TcpListener::bind(addr).map_err(listen_error)?;
                let port = listener.local_addr().map_err(listen_error)?.port();
                let server = metrics::server(listener, state.metrics.clone(), state.pool.clone())
                    .map_err(listen_error)?;
                (Some(port), Some(server))
            }
            None => (None, None),
        };
        Ok(Application {
            port,
            metrics_port,
            server,
            metrics_server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port, when it is on.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        match self.metrics_server {
            Some(metrics) => {
                let metrics_handle = metrics.handle();
                let result = tokio::select! {
                    r = self.server => r,
                    r = metrics => r,
                };
                metrics_handle.stop(true).await;
                result
            }
            None => self.server.await,
        }
    }
}

/// A database that is not up yet (a host booting, compose starting) is waited for, a
/// bounded while; a wrong URL or password fails at once.
async fn connect_with_retry(config: &Config) -> Result<sqlx::PgPool, StartupError> {
    let acquire = Duration::from_millis(config.db_acquire_timeout_ms);
    let mut waited = Duration::ZERO;
    loop {
        match db::connect(&config.database_url, config.db_max_connections, acquire).await {
            Err(e) if e.is_unavailable() && waited < STARTUP_DB_WAIT => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += Duration::from_secs(1) + acquire;
            }
            other => return Ok(other?),
        }
    }
}

/// `SHIPLOG_CATALOG_DIR` is registered once, then synced at every start.
async fn register_catalog_dir(state: &AppState, dir: &std::path::Path) -> Result<(), StartupError> {
    let path = dir.canonicalize().map_err(|e| {
        StartupError::Config(format!("SHIPLOG_CATALOG_DIR '{}': {e}", dir.display()))
    })?;
    let path = path.to_string_lossy().into_owned();
    let metadata = Metadata::actor("system");
    match catalog::add_directory(&state.pool, &path, &metadata).await {
        Ok((source, stacks)) => {
            tracing::info!(source = %source.id, stacks, "catalog folder registered");
        }
        Err(Error::AlreadyExists(_)) => {
            let report = catalog::sync_all(&state.pool, &state.catalog, &metadata).await?;
            for (source, why) in &report.failures {
                tracing::warn!(%source, %why, "catalog source failed to sync at start-up");
            }
        }
        Err(Error::Invalid(why)) => {
            return Err(StartupError::Config(format!("SHIPLOG_CATALOG_DIR: {why}")));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn server(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::BadRequest(format!("invalid query string: {err}")).into()
            }))
            .app_data(web::PathConfig::default().error_handler(|err, _| {
                ApiError::BadRequest(format!("invalid path: {err}")).into()
            }))
            // Innermost first: the access log sees the echoed request id.
            .wrap(json_errors())
            .wrap(actix_web::middleware::from_fn(refuse_nul_in_url))
            .wrap(actix_web::middleware::from_fn(metrics::count_hooks))
            .wrap(actix_web::middleware::from_fn(request_id::middleware))
            .wrap(tracing_actix())
            .configure(routes::health::configure)
            .configure(routes::hooks::configure)
            .configure(routes::admin::configure)
            .configure(routes::lifecycle::configure)
            .configure(routes::deployments::configure)
            .configure(routes::stream::configure)
            .configure(routes::openapi::configure)
            .default_service(web::to(|| async {
                HttpResponse::NotFound()
                    .json(serde_json::json!({ "success": false, "message": "no such endpoint" }))
            }))
    })
    .listen(listener)?
    .shutdown_timeout(10)
    .run();
    Ok(server)
}

/// Errors raised by actix itself (body too large, method not allowed, …) get the same
/// JSON body as ours; answers that already are JSON pass untouched.
fn json_errors<B: actix_web::body::MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new()
        .default_handler_client(to_json)
        .default_handler_server(to_json)
}

fn to_json<B: actix_web::body::MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let (req, _) = res.into_parts();
    let body = serde_json::json!({ "success": false, "message": message });
    let response = HttpResponse::build(status).json(body).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(
        req, response,
    )))
}

/// PostgreSQL stores no NUL character: a URL that would put one into a path or query value
/// is refused here, once for every route (bodies are checked in `parse_json`).
async fn refuse_nul_in_url(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let uri = req.uri();
    let has_nul = |s: &str| s.to_ascii_lowercase().contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        let error = ApiError::BadRequest("the URL contains a NUL character (%00)".into());
        return Ok(req.error_response(error).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Access log lines through `tracing` (never headers: they carry keys).
fn tracing_actix() -> actix_web::middleware::Logger {
    actix_web::middleware::Logger::new("%r %s %b %Dms request_id=%{x-request-id}o")
        .log_target("shiplog_api::access")
}

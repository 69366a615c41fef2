//! Prometheus metrics of the API process, served on their own listener
//! (`SHIPLOG_METRICS_LISTEN`) so that scraping never competes with CI traffic and the
//! metrics port need not be exposed where the API is.
//!
//! Counters of this process (hook requests) plus, refreshed at each scrape from the
//! database, the cluster's view: queue depth per environment, deployments by status, and
//! the size of the event log.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use shiplog_events::queue;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::state::AppState;

const HOOKS_PREFIX: &str = "/api/hooks/";

/// A scrape never waits longer than this for the database; stale gauges beat a hung scrape.
const SCRAPE_DB_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ApiMetrics {
    registry: Registry,
    pub hook_requests: IntCounterVec,
    pub hook_duration: HistogramVec,
    queue_depth: IntGaugeVec,
    deployments: IntGaugeVec,
    events_appended: IntCounter,
    scrape_errors: IntCounter,
}

impl ApiMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let hook_requests = IntCounterVec::new(
            Opts::new(
                "shiplog_hook_requests_total",
                "CI/CD hook requests by endpoint and HTTP status",
            ),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        let hook_duration = HistogramVec::new(
            HistogramOpts::new(
                "shiplog_hook_request_duration_seconds",
                "Time to answer a CI/CD hook request",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["endpoint"],
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "shiplog_queue_depth",
                "Deployment jobs waiting to be taken, per environment",
            ),
            &["environment"],
        )
        .expect("valid metric");
        let deployments = IntGaugeVec::new(
            Opts::new(
                "shiplog_deployments",
                "Deployments by status (queued, in_progress, success, failure, error, inactive)",
            ),
            &["status"],
        )
        .expect("valid metric");
        let events_appended = IntCounter::new(
            "shiplog_events_appended_total",
            "Events in the event log (it is append-only)",
        )
        .expect("valid metric");
        let scrape_errors = IntCounter::new(
            "shiplog_metrics_scrape_errors_total",
            "Scrapes whose database figures could not be refreshed",
        )
        .expect("valid metric");
        for collector in [
            Box::new(hook_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(hook_duration.clone()),
            Box::new(queue_depth.clone()),
            Box::new(deployments.clone()),
            Box::new(events_appended.clone()),
            Box::new(scrape_errors.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        ApiMetrics {
            registry,
            hook_requests,
            hook_duration,
            queue_depth,
            deployments,
            events_appended,
            scrape_errors,
        }
    }

    /// Counts one answered hook request.
    pub fn observe_hook(&self, endpoint: &str, status: u16, elapsed: Duration) {
        self.hook_requests
            .with_label_values(&[endpoint, &status.to_string()])
            .inc();
        self.hook_duration
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
    }

    async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let queues: Vec<(String, i64)> = sqlx::query_as(
            "SELECT job_type, count(*) FILTER (WHERE status IN ('Pending', 'Queued'))
             FROM apalis.jobs GROUP BY job_type",
        )
        .fetch_all(pool)
        .await?;
        self.queue_depth.reset();
        for (queue_name, waiting) in queues {
            if let Some(environment) = queue::environment_of(&queue_name) {
                self.queue_depth
                    .with_label_values(&[environment])
                    .set(waiting);
            }
        }
        let statuses: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM deployments GROUP BY status")
                .fetch_all(pool)
                .await?;
        self.deployments.reset();
        for (status, count) in statuses {
            self.deployments.with_label_values(&[&status]).set(count);
        }
        let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await?;
        let seen = self.events_appended.get();
        if logged as u64 > seen {
            self.events_appended.inc_by(logged as u64 - seen);
        }
        Ok(())
    }

    pub async fn render(&self, pool: &PgPool) -> String {
        match tokio::time::timeout(SCRAPE_DB_TIMEOUT, self.refresh(pool)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.scrape_errors.inc();
                tracing::warn!(error = %e, "metrics: database figures not refreshed");
            }
            Err(_) => {
                self.scrape_errors.inc();
                tracing::warn!("metrics: database figures not refreshed (timeout)");
            }
        }
        encode(&self.registry)
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn encode(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("text encoding does not fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// Counts the answers of the hook routes (by route pattern: unknown paths are not hooks).
pub async fn count_hooks(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let res = next.call(req).await?;
    let endpoint = res
        .request()
        .match_pattern()
        .and_then(|p| p.strip_prefix(HOOKS_PREFIX).map(str::to_owned));
    if let (Some(metrics), Some(endpoint)) = (metrics, endpoint) {
        metrics.observe_hook(&endpoint, res.status().as_u16(), started.elapsed());
    }
    Ok(res)
}

struct MetricsState {
    metrics: std::sync::Arc<ApiMetrics>,
    pool: PgPool,
}

async fn scrape(state: web::Data<MetricsState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&state.pool).await)
}

/// The metrics listener: `GET /metrics` only.
pub fn server(
    listener: TcpListener,
    metrics: std::sync::Arc<ApiMetrics>,
    pool: PgPool,
) -> std::io::Result<Server> {
    let state = web::Data::new(MetricsState { metrics, pool });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(scrape))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .shutdown_timeout(2)
    .run())
}

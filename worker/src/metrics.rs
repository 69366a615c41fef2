//! Prometheus metrics of one worker process, served on `SHIPLOG_METRICS_LISTEN` (default
//! `0.0.0.0:9121`, next to the API's 9120, so both fit on one host).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

const DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
const PICKUP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub struct WorkerMetrics {
    registry: Registry,
    deployments: IntCounterVec,
    duration: HistogramVec,
    running: IntGauge,
    pickup: HistogramVec,
    docker_errors: IntCounterVec,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let deployments = IntCounterVec::new(
            Opts::new(
                "shiplog_worker_deployments_total",
                "Deployments this worker ended, by kind and result",
            ),
            &["kind", "result"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "shiplog_worker_deployment_duration_seconds",
                "From a run's start (stack lease taken) to its terminal event",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["kind"],
        )
        .expect("valid metric");
        let running = IntGauge::new(
            "shiplog_worker_running_deployments",
            "Deployments this worker is carrying out now",
        )
        .expect("valid metric");
        let pickup = HistogramVec::new(
            HistogramOpts::new(
                "shiplog_worker_queue_pickup_seconds",
                "From the request's event to the deployment's first start",
            )
            .buckets(PICKUP_BUCKETS.to_vec()),
            &["environment"],
        )
        .expect("valid metric");
        let docker_errors = IntCounterVec::new(
            Opts::new(
                "shiplog_worker_docker_errors_total",
                "Docker calls that ended a deployment attempt, by cause: 'transient' (engine or \
                 registry unreachable, timeout) or 'stack' (image missing, port taken, …)",
            ),
            &["cause"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(deployments.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(running.clone()),
            Box::new(pickup.clone()),
            Box::new(docker_errors.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        WorkerMetrics {
            registry,
            deployments,
            duration,
            running,
            pickup,
            docker_errors,
        }
    }

    pub fn ended(&self, kind: &str, result: &str, took: Duration) {
        self.deployments.with_label_values(&[kind, result]).inc();
        self.duration
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
    }

    pub fn picked_up(&self, environment: &str, waited: Duration) {
        self.pickup
            .with_label_values(&[environment])
            .observe(waited.as_secs_f64());
    }

    pub fn docker_error(&self, transient: bool) {
        let cause = if transient { "transient" } else { "stack" };
        self.docker_errors.with_label_values(&[cause]).inc();
    }

    /// Counts a running deployment until the guard is dropped.
    pub fn running(self: &Arc<Self>) -> RunningGuard {
        self.running.inc();
        RunningGuard(self.clone())
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pub struct RunningGuard(Arc<WorkerMetrics>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.dec();
    }
}

async fn scrape(metrics: web::Data<Arc<WorkerMetrics>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /metrics` and `GET /health` (the process answers) of the worker.
pub fn server(listener: TcpListener, metrics: Arc<WorkerMetrics>) -> std::io::Result<Server> {
    let data = web::Data::new(metrics);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(scrape))
            .route("/health", web::get().to(health))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .shutdown_timeout(2)
    .run())
}

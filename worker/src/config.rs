//! Worker configuration: environment variables, each also a flag.

use std::time::Duration;

use shiplog_events::listen::OptionalAddress;
use shiplog_events::secret::SecretKey;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Only take deployments of these environments (comma-separated ids). Default: all.
    #[arg(long, env = "SHIPLOG_ENVIRONMENTS", value_delimiter = ',')]
    pub environments: Vec<String>,

    /// Deployments this process runs at once, per environment.
    #[arg(long, env = "SHIPLOG_WORKER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// Deployments this process carries out at once, over all environments.
    #[arg(long, env = "SHIPLOG_WORKER_MAX_DEPLOYMENTS", default_value_t = 8)]
    pub max_deployments: usize,

    /// Timeout of each Docker API call, in seconds.
    #[arg(long, env = "SHIPLOG_DOCKER_TIMEOUT", default_value_t = 60)]
    pub docker_timeout_secs: u64,

    /// Deadline for pulling one image, in seconds.
    #[arg(long, env = "SHIPLOG_PULL_TIMEOUT", default_value_t = 300)]
    pub pull_timeout_secs: u64,

    /// Deadline for a whole deployment, in seconds.
    #[arg(long, env = "SHIPLOG_DEPLOYMENT_TIMEOUT", default_value_t = 1800)]
    pub deployment_timeout_secs: u64,

    /// Tries of a deployment that meets a transient failure (Docker or registry
    /// unreachable) before it ends in `error`; each retry is recorded.
    #[arg(long, env = "SHIPLOG_TRANSIENT_ATTEMPTS", default_value_t = 3)]
    pub transient_attempts: u32,

    /// Wait before the first retry, in milliseconds; doubled on each further one.
    #[arg(long, env = "SHIPLOG_RETRY_BACKOFF_MS", default_value_t = 2000)]
    pub retry_backoff_ms: u64,

    /// How long a stack lease lives without renewal, in seconds. A crashed worker's stack
    /// is free again after this long.
    #[arg(long, env = "SHIPLOG_LEASE_TTL", default_value_t = 6)]
    pub lease_ttl_secs: u64,

    /// Queue heartbeat, in milliseconds: also the fallback poll period, and (×3) the time
    /// after which a dead worker's job is handed to another.
    #[arg(long, env = "SHIPLOG_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_ms: u64,

    /// How often each served environment's engine is pinged (its status in
    /// `GET /api/environments`), in milliseconds.
    #[arg(long, env = "SHIPLOG_PROBE_INTERVAL_MS", default_value_t = 5000)]
    pub probe_interval_ms: u64,

    /// How long a ping may take before the engine counts as unreachable, in milliseconds.
    #[arg(long, env = "SHIPLOG_PROBE_TIMEOUT_MS", default_value_t = 5000)]
    pub probe_timeout_ms: u64,

    /// Maximum PostgreSQL connections of this process.
    #[arg(long, env = "SHIPLOG_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// How long to wait for a database connection before counting the database as down.
    #[arg(long, env = "SHIPLOG_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 1500)]
    pub db_acquire_timeout_ms: u64,

    /// Address of the Prometheus metrics listener (`GET /metrics`, `GET /health`), or `off`.
    #[arg(long, env = "SHIPLOG_METRICS_LISTEN", default_value = "0.0.0.0:9121")]
    pub metrics_listen: OptionalAddress,

    /// The API's `SHIPLOG_SECRET_KEY` (64 hex digits or base64 of 32 bytes): opens the
    /// sealed values of `password` variables to hand them to containers.
    #[arg(long, env = "SHIPLOG_SECRET_KEY", hide_env_values = true, value_parser = parse_secret_key)]
    pub secret_key: Option<SecretKey>,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "SHIPLOG_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

fn parse_secret_key(value: &str) -> Result<SecretKey, String> {
    SecretKey::from_config(value).map_err(|e| e.to_string())
}

impl WorkerConfig {
    pub fn settings(&self) -> Settings {
        Settings {
            docker_timeout: Duration::from_secs(self.docker_timeout_secs),
            pull_timeout: Duration::from_secs(self.pull_timeout_secs),
            deployment_timeout: Duration::from_secs(self.deployment_timeout_secs),
            lease_ttl: Duration::from_secs(self.lease_ttl_secs.max(2)),
            heartbeat: Duration::from_millis(self.heartbeat_ms.max(200)),
            transient_attempts: self.transient_attempts.max(1),
            max_deployments: self.max_deployments.max(1),
            retry_backoff: Duration::from_millis(self.retry_backoff_ms),
            probe_interval: Duration::from_millis(self.probe_interval_ms.max(100)),
            probe_timeout: Duration::from_millis(self.probe_timeout_ms.max(100)),
            secrets: self.secret_key.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub docker_timeout: Duration,
    pub pull_timeout: Duration,
    pub deployment_timeout: Duration,
    pub lease_ttl: Duration,
    pub heartbeat: Duration,
    pub transient_attempts: u32,
    pub retry_backoff: Duration,
    pub max_deployments: usize,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub secrets: Option<SecretKey>,
}

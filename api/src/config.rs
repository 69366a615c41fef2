//! Configuration: environment variables, each also a flag. A bad value stops start-up with
//! a message naming the variable (clap does that for us).

use std::net::SocketAddr;
use std::path::PathBuf;

use shiplog_events::catalog::git::GitSettings;
use shiplog_events::commands::catalog::CatalogSettings;
use shiplog_events::listen::OptionalAddress;
use shiplog_events::secret::SecretKey;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Address the HTTP API listens on.
    #[arg(long, env = "SHIPLOG_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Bearer token for the administration API. Unset: the administration API refuses
    /// every request.
    #[arg(long, env = "SHIPLOG_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A folder of stack manifests registered as a catalog source at start-up.
    #[arg(long, env = "SHIPLOG_CATALOG_DIR")]
    pub catalog_dir: Option<PathBuf>,

    /// Maximum PostgreSQL connections of this process.
    #[arg(long, env = "SHIPLOG_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection before answering 503.
    #[arg(long, env = "SHIPLOG_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 1500)]
    pub db_acquire_timeout_ms: u64,

    /// Address of the Prometheus metrics listener (`GET /metrics`), or `off`.
    #[arg(long, env = "SHIPLOG_METRICS_LISTEN", default_value = "0.0.0.0:9120")]
    pub metrics_listen: OptionalAddress,

    /// 32-byte key (64 hex digits or base64) that seals secrets stored in the event log,
    /// such as git source credentials. Unset: sources with credentials are refused.
    #[arg(long, env = "SHIPLOG_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Where git catalog sources keep their cache repositories (created on demand).
    /// Default: `shiplog-git-cache` in the system's temporary directory.
    #[arg(long, env = "SHIPLOG_GIT_CACHE_DIR")]
    pub git_cache_dir: Option<PathBuf>,

    /// Longest a single git call (fetch, checkout…) may take, in seconds.
    #[arg(long, env = "SHIPLOG_GIT_TIMEOUT_SECS", default_value_t = 120)]
    pub git_timeout_secs: u64,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "SHIPLOG_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl Config {
    pub fn catalog_settings(&self) -> Result<CatalogSettings, String> {
        let secret_key = match self.secret_key.as_deref().filter(|k| !k.trim().is_empty()) {
            None => None,
            Some(k) => {
                Some(SecretKey::from_config(k).map_err(|e| format!("SHIPLOG_SECRET_KEY: {e}"))?)
            }
        };
        let mut git = GitSettings::default();
        if let Some(dir) = &self.git_cache_dir {
            git.cache_dir = dir.clone();
        }
        if self.git_timeout_secs == 0 {
            return Err("SHIPLOG_GIT_TIMEOUT_SECS must be at least 1".into());
        }
        git.timeout = std::time::Duration::from_secs(self.git_timeout_secs);
        Ok(CatalogSettings { git, secret_key })
    }

    pub fn admin_token_is_usable(&self) -> Result<(), String> {
        match &self.admin_token {
            Some(t) if t.len() < 16 => {
                Err("SHIPLOG_ADMIN_TOKEN must be at least 16 characters long".into())
            }
            _ => Ok(()),
        }
    }
}

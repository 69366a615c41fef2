//! What every handler can reach.

use std::sync::Arc;

use shiplog_events::commands::catalog::CatalogSettings;
use sqlx::PgPool;

use crate::metrics::ApiMetrics;
use crate::registry::Registry;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// SHA-256 of the admin token; `None` disables the administration API.
    pub admin_token_hash: Option<[u8; 32]>,
    pub metrics: Arc<ApiMetrics>,
    /// Git cache, timeout and the key that seals source credentials.
    pub catalog: CatalogSettings,
    /// For dry runs: what an image tag points at now.
    pub registry: Registry,
}

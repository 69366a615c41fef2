//! What every handler can reach.

use sqlx::PgPool;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// SHA-256 of the admin token; `None` disables the administration API.
    pub admin_token_hash: Option<[u8; 32]>,
}

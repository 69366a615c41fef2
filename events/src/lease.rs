//! One lease per stack: whoever holds it may deploy that stack, nobody else. The fencing
//! token grows on every acquisition; appends made on behalf of a lease check it in their
//! own transaction, so a worker whose lease expired can no longer record anything.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub stack_key: String,
    pub holder: String,
    pub token: i64,
}

pub fn stack_key(environment: &str, stack: &str) -> String {
    format!("{environment}/{stack}")
}

/// Takes the lease if it is free, expired, or already ours. `None` if someone else holds it.
pub async fn try_acquire(
    pool: &PgPool,
    stack_key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>> {
    let token: Option<i64> = sqlx::query_scalar(
        "INSERT INTO stack_leases (stack_key, holder, token, expires_at)
         VALUES ($1, $2, 1, now() + $3 * interval '1 millisecond')
         ON CONFLICT (stack_key) DO UPDATE
            SET holder = EXCLUDED.holder, token = stack_leases.token + 1,
                expires_at = EXCLUDED.expires_at
            WHERE stack_leases.expires_at < now() OR stack_leases.holder = EXCLUDED.holder
         RETURNING token",
    )
    .bind(stack_key)
    .bind(holder)
    .bind(ttl.as_millis() as f64)
    .fetch_optional(pool)
    .await?;
    Ok(token.map(|token| Lease {
        stack_key: stack_key.to_owned(),
        holder: holder.to_owned(),
        token,
    }))
}

/// Extends the lease; `LeaseLost` if it expired and was taken over meanwhile.
pub async fn renew(pool: &PgPool, lease: &Lease, ttl: Duration) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE stack_leases SET expires_at = now() + $4 * interval '1 millisecond'
         WHERE stack_key = $1 AND holder = $2 AND token = $3",
    )
    .bind(&lease.stack_key)
    .bind(&lease.holder)
    .bind(lease.token)
    .bind(ttl.as_millis() as f64)
    .execute(pool)
    .await?;
    if updated.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Error::LeaseLost(lease.stack_key.clone()))
    }
}

/// The fence: inside the caller's transaction, proves the lease is still ours and unexpired,
/// and holds a share lock so nobody can take it over before this transaction ends.
pub async fn check(tx: &mut PgConnection, lease: &Lease) -> Result<()> {
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM stack_leases
         WHERE stack_key = $1 AND holder = $2 AND token = $3 AND expires_at > now()
         FOR SHARE",
    )
    .bind(&lease.stack_key)
    .bind(&lease.holder)
    .bind(lease.token)
    .fetch_optional(tx)
    .await?;
    held.map(|_| ())
        .ok_or_else(|| Error::LeaseLost(lease.stack_key.clone()))
}

/// Gives the lease up so the next deployment of the stack need not wait for it to expire.
/// The row stays (expired) so the token keeps growing.
pub async fn release(pool: &PgPool, lease: &Lease) -> Result<()> {
    sqlx::query(
        "UPDATE stack_leases SET expires_at = now() - interval '1 second'
         WHERE stack_key = $1 AND holder = $2 AND token = $3",
    )
    .bind(&lease.stack_key)
    .bind(&lease.holder)
    .bind(lease.token)
    .execute(pool)
    .await?;
    Ok(())
}

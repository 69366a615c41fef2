//! API keys: create (shown once), list, revoke, authenticate.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::apikey::{self, ApiKey, KeyRejection, Permission, PlainApiKey};
use crate::error::{Error, Result};
use crate::event::{Event, Metadata, stream};
use crate::store::{self, ExpectedVersion};

pub struct NewKey {
    pub name: String,
    pub permissions: Vec<String>,
    pub environment_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Limit the key to these stacks; `None`: all.
    pub stacks: Option<Vec<String>>,
}

pub fn decide_create(
    id: Uuid,
    key: &PlainApiKey,
    new: &NewKey,
    environment_exists: bool,
    now: DateTime<Utc>,
) -> Result<Event> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Error::Invalid("key name must be 1–200 characters".into()));
    }
    if new.permissions.is_empty() {
        return Err(Error::Invalid(format!(
            "permissions must not be empty; known permissions: {}",
            known_permissions()
        )));
    }
    let mut permissions = Vec::new();
    for p in &new.permissions {
        if !apikey::is_valid_grant(p) {
            return Err(Error::Invalid(format!(
                "unknown permission '{p}'; known permissions: {}, or the wildcards Hooks.* and *.*",
                known_permissions()
            )));
        }
        if !permissions.contains(p) {
            permissions.push(p.clone());
        }
    }
    if let Some(env) = &new.environment_id
        && !environment_exists
    {
        return Err(Error::Invalid(format!("environment '{env}' not found")));
    }
    if let Some(stacks) = &new.stacks {
        if stacks.is_empty() {
            return Err(Error::Invalid(
                "stacks must name at least one stack (leave it out for every stack)".into(),
            ));
        }
        for stack in stacks {
            super::validate_name("stack name", stack)?;
        }
    }
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::Invalid("expiresAt must be in the future".into()));
    }
    Ok(Event::ApiKeyCreated {
        id,
        name: name.to_owned(),
        hash: key.hash(),
        prefix: key.display_prefix(),
        permissions,
        environment: new.environment_id.clone(),
        expires_at: new.expires_at,
        stacks: new.stacks.clone(),
    })
}

fn known_permissions() -> String {
    Permission::ALL.map(|p| p.as_str()).join(", ")
}

/// Creates a key; the returned plaintext is the only copy there will ever be.
pub async fn create(
    pool: &PgPool,
    new: &NewKey,
    metadata: &Metadata,
) -> Result<(ApiKey, PlainApiKey)> {
    let environment_exists = match &new.environment_id {
        Some(env) => super::environments::get(pool, env).await?.is_some(),
        None => false,
    };
    let id = Uuid::now_v7();
    let key = PlainApiKey::generate();
    let event = decide_create(id, &key, new, environment_exists, Utc::now())?;
    let mut tx = pool.begin().await?;
    store::append(
        &mut tx,
        &stream::api_key(id),
        ExpectedVersion::NoStream,
        &[event],
        metadata,
    )
    .await?;
    tx.commit().await?;
    let stored = find(pool, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("API key {id} not found")))?;
    Ok((stored, key))
}

macro_rules! key_columns {
    () => {
        "id, name, prefix, permissions, environment_id, expires_at, created_at, revoked_at, stacks"
    };
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<ApiKey>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM api_keys WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyListing {
    #[sqlx(flatten)]
    pub key: ApiKey,
    pub revoke_reason: Option<String>,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub async fn list(pool: &PgPool) -> Result<Vec<KeyListing>> {
    Ok(sqlx::query_as(
        "SELECT k.id, k.name, k.prefix, k.permissions, k.environment_id, k.expires_at,
                k.created_at, k.revoked_at, k.stacks, k.revoke_reason, u.last_used_at
         FROM api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id
         ORDER BY k.created_at, k.id",
    )
    .fetch_all(pool)
    .await?)
}

pub async fn revoke(
    pool: &PgPool,
    id: Uuid,
    reason: Option<String>,
    metadata: &Metadata,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let stream = stream::api_key(id);
    let version = store::stream_version(&mut tx, &stream).await?;
    let events = store::read_stream(&mut tx, &stream).await?;
    if events.is_empty() {
        return Err(Error::NotFound(format!("API key {id} not found")));
    }
    if events
        .iter()
        .any(|e| matches!(e.event, Event::ApiKeyRevoked { .. }))
    {
        return Err(Error::AlreadyExists(format!(
            "API key {id} is already revoked"
        )));
    }
    let reason = reason.map(|r| r.chars().take(500).collect());
    let event = Event::ApiKeyRevoked { id, reason };
    store::append(
        &mut tx,
        &stream,
        ExpectedVersion::Exactly(version),
        &[event],
        metadata,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How stale `last_used_at` may be.
const USAGE_RESOLUTION_SECS: i64 = 60;

#[derive(sqlx::FromRow)]
struct KeyWithUse {
    #[sqlx(flatten)]
    key: ApiKey,
    last_used_at: Option<DateTime<Utc>>,
}

/// Resolves a presented `X-Api-Key` value to a usable key and records its use.
pub async fn authenticate(
    pool: &PgPool,
    presented: Option<&str>,
) -> Result<Result<ApiKey, KeyRejection>> {
    authenticate_with(pool, presented, true).await
}

/// As [`authenticate`], without recording the use: a dry run writes nothing.
pub async fn authenticate_unrecorded(
    pool: &PgPool,
    presented: Option<&str>,
) -> Result<Result<ApiKey, KeyRejection>> {
    authenticate_with(pool, presented, false).await
}

async fn authenticate_with(
    pool: &PgPool,
    presented: Option<&str>,
    record_use: bool,
) -> Result<Result<ApiKey, KeyRejection>> {
    let Some(presented) = presented else {
        return Ok(Err(KeyRejection::Missing));
    };
    let Some(plain) = PlainApiKey::parse(presented.trim()) else {
        return Ok(Err(KeyRejection::Unknown));
    };
    let found: Option<KeyWithUse> = sqlx::query_as(
        "SELECT k.id, k.name, k.prefix, k.permissions, k.environment_id, k.expires_at,
                k.created_at, k.revoked_at, k.stacks, u.last_used_at
         FROM api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id
         WHERE k.key_hash = $1",
    )
    .bind(plain.hash())
    .fetch_optional(pool)
    .await?;
    let Some(KeyWithUse { key, last_used_at }) = found else {
        return Ok(Err(KeyRejection::Unknown));
    };
    let now = Utc::now();
    if let Err(rejection) = key.check_usable(now) {
        return Ok(Err(rejection));
    }
    // Recorded to the minute: a write (and a WAL flush) on every hook call would cost
    // more than the hook itself.
    if record_use
        && last_used_at
            .is_none_or(|at| now - at >= chrono::Duration::seconds(USAGE_RESOLUTION_SECS))
    {
        sqlx::query(
            "INSERT INTO api_key_usage (key_id, last_used_at) VALUES ($1, now())
             ON CONFLICT (key_id) DO UPDATE SET last_used_at = EXCLUDED.last_used_at",
        )
        .bind(key.id)
        .execute(pool)
        .await?;
    }
    Ok(Ok(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(permissions: &[&str]) -> NewKey {
        NewKey {
            name: "ci".into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            environment_id: None,
            expires_at: None,
            stacks: None,
        }
    }

    #[test]
    fn create_records_only_the_hash() {
        let key = PlainApiKey::generate();
        let event = decide_create(
            Uuid::nil(),
            &key,
            &new_key(&["Hooks.Redeploy"]),
            false,
            Utc::now(),
        )
        .unwrap();
        let json = serde_json::to_string(&event).unwrap();
        assert!(!json.contains(key.expose()));
        assert!(json.contains(&key.hash()));
    }

    #[test]
    fn create_rejects_unknown_permissions_past_expiry_and_unknown_environment() {
        let key = PlainApiKey::generate();
        let now = Utc::now();
        let err =
            decide_create(Uuid::nil(), &key, &new_key(&["Hooks.Nope"]), false, now).unwrap_err();
        assert!(err.to_string().contains("Hooks.Nope"));
        assert!(decide_create(Uuid::nil(), &key, &new_key(&[]), false, now).is_err());
        let mut expired = new_key(&["Hooks.Upgrade"]);
        expired.expires_at = Some(now - chrono::Duration::seconds(1));
        assert!(decide_create(Uuid::nil(), &key, &expired, false, now).is_err());
        let mut scoped = new_key(&["Hooks.Upgrade"]);
        scoped.environment_id = Some("nope".into());
        assert!(decide_create(Uuid::nil(), &key, &scoped, false, now).is_err());
        assert!(decide_create(Uuid::nil(), &key, &scoped, true, now).is_ok());
    }
}

//! Who is calling: the admin (Bearer token) or a CI key (`X-Api-Key`).

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use sha2::{Digest, Sha256};
use shiplog_events::apikey::{ApiKey, Permission};
use shiplog_events::commands::keys;
use shiplog_events::event::Metadata;

use crate::error::ApiError;
use crate::state::AppState;

const API_KEY_HEADER: &str = "X-Api-Key";

/// A caller holding the admin token.
pub struct Admin {
    pub metadata: Metadata,
}

/// A caller holding a valid, unexpired, unrevoked API key.
pub struct KeyCaller {
    pub key: ApiKey,
    pub metadata: Metadata,
}

/// Either: who may read deployments.
pub enum Reader {
    Admin,
    Key(ApiKey),
}

impl KeyCaller {
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.key.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "API key lacks the permission '{}'",
                permission.as_str()
            )))
        }
    }

    /// A key limited to named stacks acts on those only.
    pub fn stack(&self, stack: &str) -> Result<(), ApiError> {
        stack_scope(&self.key, stack)
    }

    /// The environment to act on: the key's scope, or the request's when the key has none.
    pub fn environment(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match (self.key.environment_id.as_deref(), requested) {
            (Some(scope), Some(requested)) if scope != requested => {
                Err(ApiError::Forbidden(format!(
                    "API key is scoped to environment '{scope}' and cannot act on '{requested}'"
                )))
            }
            (Some(scope), _) => Ok(scope.to_owned()),
            (None, Some(requested)) => Ok(requested.to_owned()),
            (None, None) => Err(ApiError::BadRequest(
                "environmentId is required: this API key is not scoped to an environment".into(),
            )),
        }
    }
}

fn stack_scope(key: &ApiKey, stack: &str) -> Result<(), ApiError> {
    match &key.stacks {
        Some(stacks) if !key.covers_stack(stack) => Err(ApiError::Forbidden(format!(
            "API key is scoped to the stacks {} and cannot act on '{stack}'",
            stacks.join(", ")
        ))),
        _ => Ok(()),
    }
}

impl Reader {
    /// Keys read only what lies in their environment scope.
    pub fn may_read(&self, environment: &str) -> Result<(), ApiError> {
        match self {
            Reader::Key(key) => match &key.environment_id {
                Some(scope) if scope != environment => Err(ApiError::Forbidden(format!(
                    "API key is scoped to environment '{scope}'"
                ))),
                _ => Ok(()),
            },
            Reader::Admin => Ok(()),
        }
    }

    /// … and, for a key limited to named stacks, only those stacks.
    pub fn may_read_stack(&self, environment: &str, stack: &str) -> Result<(), ApiError> {
        self.may_read(environment)?;
        match self {
            Reader::Key(key) => stack_scope(key, stack),
            Reader::Admin => Ok(()),
        }
    }

    /// The stacks a listing must stay within (`None`: no limit).
    pub fn stack_scope(&self) -> Option<&[String]> {
        match self {
            Reader::Key(key) => key.stacks.as_deref(),
            Reader::Admin => None,
        }
    }

    /// Event metadata for what this caller asks for.
    pub fn metadata(&self, req: &HttpRequest) -> Metadata {
        match self {
            Reader::Admin => metadata(req, "admin".into()),
            Reader::Key(key) => metadata(req, format!("apikey:{}", key.id)),
        }
    }

    pub fn scope(&self) -> Option<&str> {
        match self {
            Reader::Key(key) => key.environment_id.as_deref(),
            Reader::Admin => None,
        }
    }
}

fn state(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone()
}

/// The request id (given by the client or made here) becomes the correlation id.
fn metadata(req: &HttpRequest, actor: String) -> Metadata {
    Metadata::actor(actor).with_correlation(crate::request_id::of(req))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn is_admin(req: &HttpRequest, state: &AppState) -> Result<bool, ApiError> {
    let Some(token) = bearer(req) else {
        return Ok(false);
    };
    let Some(expected) = &state.admin_token_hash else {
        return Err(ApiError::Unauthorized(
            "the administration API is disabled: SHIPLOG_ADMIN_TOKEN is not set".into(),
        ));
    };
    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    // Comparing digests keeps the comparison's time independent of the token.
    if presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
    {
        Ok(true)
    } else {
        Err(ApiError::Unauthorized("invalid admin token".into()))
    }
}

async fn authenticate_key(req: &HttpRequest, state: &AppState) -> Result<ApiKey, ApiError> {
    let presented = req
        .headers()
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok());
    let key = if is_dry_run(req) {
        keys::authenticate_unrecorded(&state.pool, presented).await
    } else {
        keys::authenticate(&state.pool, presented).await
    };
    Ok(key??)
}

/// `?dryRun=true` (see the hooks): not even the key's last use is recorded.
fn is_dry_run(req: &HttpRequest) -> bool {
    #[derive(serde::Deserialize)]
    struct DryRun {
        #[serde(default, rename = "dryRun")]
        dry_run: bool,
    }
    web::Query::<DryRun>::from_query(req.query_string()).is_ok_and(|q| q.dry_run)
}

type Extracted<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            if is_admin(&req, &state(&req))? {
                Ok(Admin {
                    metadata: metadata(&req, "admin".into()),
                })
            } else {
                Err(ApiError::Unauthorized(
                    "missing admin token (Authorization: Bearer …)".into(),
                ))
            }
        })
    }
}

impl FromRequest for KeyCaller {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let key = authenticate_key(&req, &state(&req)).await?;
            let metadata = metadata(&req, format!("apikey:{}", key.id));
            Ok(KeyCaller { key, metadata })
        })
    }
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req);
            if is_admin(&req, &state)? {
                return Ok(Reader::Admin);
            }
            Ok(Reader::Key(authenticate_key(&req, &state).await?))
        })
    }
}

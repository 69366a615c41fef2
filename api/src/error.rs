//! The API's one error type, and the one place errors become responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use shiplog_events::Error as DomainError;
use shiplog_events::apikey::KeyRejection;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The database is unreachable: the client should retry shortly.
    #[error("service temporarily unavailable: {0}")]
    Unavailable(#[source] DomainError),
    #[error("internal error")]
    Internal(#[source] DomainError),
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => ApiError::BadRequest(m),
            DomainError::NotFound(m) => ApiError::NotFound(m),
            DomainError::AlreadyExists(m) => ApiError::Conflict(m),
            DomainError::Unprocessable(m) => ApiError::Unprocessable(m),
            e if e.is_unavailable() => ApiError::Unavailable(e),
            e => ApiError::Internal(e),
        }
    }
}

impl From<KeyRejection> for ApiError {
    fn from(r: KeyRejection) -> Self {
        ApiError::Unauthorized(r.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Server-side causes are logged with their chain and never shown to clients.
        let message = match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, cause = ?cause, "request failed");
                "internal server error".to_owned()
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                "service temporarily unavailable, retry later".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unavailable(_) = self {
            response.insert_header(("Retry-After", "5"));
        }
        if let ApiError::Unauthorized(_) = self {
            response.insert_header(("WWW-Authenticate", "ApiKey header=\"X-Api-Key\""));
        }
        response.json(json!({ "success": false, "message": message }))
    }
}

/// Parses a JSON body; every failure is a 400 naming what is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    // PostgreSQL stores no NUL character (in text nor jsonb): refuse it here, by name,
    // rather than fail on the insert.
    if let Some(path) = nul_at(&value, "") {
        return Err(ApiError::BadRequest(format!(
            "invalid request body: {path} contains a NUL character (\\u0000)"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

/// Where a string (or key) of `value` holds a NUL character, as a JSON path.
fn nul_at(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
            "the body".into()
        } else {
            path.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            if k.contains('\0') {
                Some(format!(
                    "a field name in {}",
                    if path.is_empty() { "the body" } else { path }
                ))
            } else {
                nul_at(v, &here)
            }
        }),
        _ => None,
    }
}

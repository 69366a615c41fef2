//! `X-Request-Id`: taken from the client when it is sensible, made here otherwise, kept in
//! the request for the event metadata (as the correlation id) and echoed on every answer,
//! so a CI log line, an API answer, the events and the worker's log lines share one id.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};

pub const HEADER: &str = "x-request-id";
const MAX_LEN: usize = 200;

/// The request's id, in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A client's id is kept when it is 1–200 visible ASCII characters; anything else (empty,
/// too long, spaces, control characters) is replaced rather than refused.
fn usable(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    Ok(res)
}

/// The id the middleware stored (a fresh one if the middleware did not run).
pub fn of(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

#[cfg(test)]
mod tests {
    use super::usable;

    #[test]
    fn only_sensible_client_ids_are_kept() {
        assert!(usable("build-4711"));
        assert!(usable(&"a".repeat(200)));
        assert!(!usable(""));
        assert!(!usable(&"a".repeat(201)));
        assert!(!usable("two words"));
        assert!(!usable("tab\there"));
    }
}

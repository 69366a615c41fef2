//! `GET /api/deployments/{id}/stream`: a deployment's progress as Server-Sent Events.
//!
//! Each event of the deployment's stream is sent as it is appended (`event:` its type,
//! `data:` the recorded event as `/events` shows it), preceded by a `status` message when it
//! changed the deployment's status. The SSE `id` is the event's stream version, so a client
//! that reconnects with `Last-Event-ID` gets exactly what it missed. The stream ends after
//! the terminal event; a reconnect after that ends at once.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, web};
use shiplog_events::event::RecordedEvent;
use shiplog_events::queries::{self, DeploymentStatus};
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::Reader;
use crate::error::ApiError;
use crate::routes::deployments::readable;
use crate::state::AppState;

/// How often the log is read for new events while a deployment runs.
const POLL: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A stream lives at most this long; the client resumes with `Last-Event-ID`.
const MAX_STREAM: Duration = Duration::from_secs(3600);

/// `Last-Event-ID` (header, or `?lastEventId=` for clients that cannot set headers).
fn resume_point(req: &HttpRequest) -> Result<i64, ApiError> {
    let given = req
        .headers()
        .get("Last-Event-ID")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .or_else(|| {
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.get("lastEventId").cloned())
        });
    match given {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Last-Event-ID must be an event id from this stream (a number), not '{v}'"
                ))
            }),
    }
}

/// One SSE message; `data` is a single JSON line, so it needs no splitting.
fn message(id: i64, event: &str, data: &serde_json::Value) -> String {
    format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
}

/// The messages for a batch of new events, with the status changes they made.
fn messages(events: &[RecordedEvent], statuses: &[DeploymentStatus]) -> String {
    let mut out = String::new();
    for event in events {
        let version = event.stream_version;
        if let Some(status) = statuses.iter().find(|s| s.id == version) {
            let data = serde_json::to_value(status).expect("a status serializes");
            out.push_str(&message(version, "status", &data));
        }
        let data = serde_json::to_value(event).expect("an event serializes");
        out.push_str(&message(version, event.event.to_stored().0, &data));
    }
    out
}

struct Follower {
    pool: PgPool,
    deployment: Uuid,
    after: i64,
    started: Instant,
    last_sent: Instant,
    ended: bool,
    over_at_start: bool,
}

impl Follower {
    /// The next chunk to send, or `None` when the stream is over.
    async fn next(&mut self) -> Option<String> {
        loop {
            if self.ended || self.started.elapsed() >= MAX_STREAM {
                return None;
            }
            let (events, statuses) = match self.read().await {
                Ok(batch) => batch,
                Err(e) => {
                    // The client reconnects with Last-Event-ID and loses nothing.
                    tracing::warn!(deployment = %self.deployment, error = %e, "event stream ended by a database error");
                    return None;
                }
            };
            if let Some(last) = events.last() {
                self.after = last.stream_version;
                self.ended = self.over_at_start || events.iter().any(|e| e.event.is_terminal());
                self.last_sent = Instant::now();
                return Some(messages(&events, &statuses));
            }
            if self.over_at_start {
                return None;
            }
            if self.last_sent.elapsed() >= KEEP_ALIVE {
                self.last_sent = Instant::now();
                return Some(": keep-alive\n\n".into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn read(&self) -> shiplog_events::Result<(Vec<RecordedEvent>, Vec<DeploymentStatus>)> {
        let events =
            queries::deployment_events_after(&self.pool, self.deployment, self.after).await?;
        let statuses = if events.is_empty() {
            Vec::new()
        } else {
            queries::statuses_after(&self.pool, self.deployment, self.after).await?
        };
        Ok((events, statuses))
    }
}

#[get("/api/deployments/{id}/stream")]
async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    reader: Reader,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let deployment = readable(&state, &reader, &id).await?;
    let after = resume_point(&req)?;
    let now = Instant::now();
    let follower = Follower {
        pool: state.pool.clone(),
        deployment: deployment.id,
        after,
        started: now,
        last_sent: now,
        ended: false,
        // Already over: what was missed is sent, then the stream ends (at once if nothing).
        over_at_start: deployment.is_terminal(),
    };
    let body = futures::stream::unfold(follower, |mut follower| async move {
        let chunk = follower.next().await?;
        Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), follower))
    });
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Tell nginx-style proxies not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"));
    Ok(response.streaming(body))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(stream);
}

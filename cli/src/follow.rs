//! Following a deployment to its end: its Server-Sent Events, printed as progress lines,
//! reconnecting with `Last-Event-ID` when the connection drops.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{CliError, Client, error_of};

const TERMINAL: &[&str] = &["success", "failure", "error", "inactive"];
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// One SSE message.
struct Message {
    id: Option<i64>,
    event: String,
    data: Value,
}

fn parse_block(block: &str) -> Option<Message> {
    let mut id = None;
    let mut event = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    Some(Message {
        id,
        event: event?,
        data: serde_json::from_str(&data).ok()?,
    })
}

/// A progress line for an event, from the fields people look for.
fn describe(event: &str, data: &Value) -> String {
    let fields = &data["event"]["data"];
    let mut line = format!("  {event}");
    for key in ["service", "image", "digest", "version", "reason"] {
        if let Some(v) = fields.get(key).and_then(Value::as_str) {
            line.push_str(&format!(" {key}={v}"));
        }
    }
    line
}

/// Follows the deployment until it ends or `timeout` passes. `Ok` only for `success`.
pub async fn follow(client: &Client, id: &str, timeout: Duration) -> Result<(), CliError> {
    let started = Instant::now();
    let mut last_id: Option<i64> = None;
    let mut status = String::from("queued");
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(CliError::StillRunning {
                id: id.to_owned(),
                status,
                waited: timeout.as_secs(),
            });
        }
        let mut req = client.request(Method::GET, &format!("/api/deployments/{id}/stream"));
        if let Some(last) = last_id {
            req = req.header("Last-Event-ID", last.to_string());
        }
        let mut response = match client.send(req).await {
            Ok(r) => r,
            Err(e) if started.elapsed() < timeout => {
                eprintln!("shiplog: {e}; reconnecting");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if !response.status().is_success() {
            let code = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(error_of(code, &body));
        }
        let mut buffer = String::new();
        loop {
            let chunk = tokio::time::timeout(left, response.chunk()).await;
            let chunk = match chunk {
                Err(_) => break,                    // out of time: reported above on the next turn
                Ok(Err(_)) | Ok(Ok(None)) => break, // dropped or ended: resume
                Ok(Ok(Some(bytes))) => bytes,
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(message) = parse_block(&block) else {
                    continue; // a keep-alive comment
                };
                last_id = message.id.or(last_id);
                if message.event == "status" {
                    status = message.data["state"].as_str().unwrap_or("?").to_owned();
                    let description = message.data["description"].as_str().unwrap_or("");
                    eprintln!("{status}: {description}");
                } else {
                    eprintln!("{}", describe(&message.event, &message.data));
                }
            }
            if TERMINAL.contains(&status.as_str()) {
                return finish(client, id, &status).await;
            }
        }
        // The stream ended: at the terminal state (seen above) or with the connection
        // dropped. A finished deployment's stream answers empty; ask for the status then.
        let current = client
            .json(client.request(Method::GET, &format!("/api/deployments/{id}")))
            .await?;
        if let Some(s) = current["status"].as_str()
            && TERMINAL.contains(&s)
        {
            return finish(client, id, s).await;
        }
        tokio::time::sleep(RECONNECT_PAUSE.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

async fn finish(client: &Client, id: &str, status: &str) -> Result<(), CliError> {
    if status == "success" {
        return Ok(());
    }
    let message = client
        .json(client.request(Method::GET, &format!("/api/deployments/{id}")))
        .await
        .ok()
        .and_then(|d| d["message"].as_str().map(str::to_owned));
    Err(CliError::DeploymentFailed {
        id: id.to_owned(),
        status: status.to_owned(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_progress_lines() {
        let m = parse_block(
            "id: 4\nevent: ImagePulled\ndata: {\"event\":{\"type\":\"ImagePulled\",\"data\":{\"service\":\"web\",\"image\":\"r/web:v1\"}}}\n\n",
        )
        .unwrap();
        assert_eq!(m.id, Some(4));
        assert_eq!(
            describe(&m.event, &m.data),
            "  ImagePulled service=web image=r/web:v1"
        );
        assert!(parse_block(": keep-alive\n\n").is_none());
    }
}

//! HTTP to a Shiplog API, and the one error type of the CLI with its exit codes.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Shiplog refused the request (4xx): wrong input, key, permission or scope.
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    /// Shiplog could not be reached or failed (5xx, 503, network).
    #[error("{0}")]
    Unavailable(String),
    /// The deployment ended without success.
    #[error("deployment {id} ended {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    DeploymentFailed {
        id: String,
        status: String,
        message: Option<String>,
    },
    /// `--wait` ran out of time; the deployment goes on.
    #[error(
        "deployment {id} still {status} after {waited} s; follow it with `shiplog status {id} --wait`"
    )]
    StillRunning {
        id: String,
        status: String,
        waited: u64,
    },
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// 1 deployment failed, 2 refused / usage, 3 unreachable, 4 still running.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::DeploymentFailed { .. } => 1,
            CliError::Refused { .. } | CliError::Usage(_) => 2,
            CliError::Unavailable(_) => 3,
            CliError::StillRunning { .. } => 4,
        }
    }
}

/// Who the CLI is: a CI key (`X-Api-Key`) or the admin token (`Bearer`).
#[derive(Clone)]
pub enum Credential {
    ApiKey(String),
    Admin(String),
}

pub struct Client {
    base: String,
    http: reqwest::Client,
    credential: Option<Credential>,
    request_id: Option<String>,
}

impl Client {
    pub fn new(
        base: &str,
        credential: Option<Credential>,
        request_id: Option<String>,
    ) -> Result<Self, CliError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "SHIPLOG_URL must start with http:// or https://, not '{base}'"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("shiplog-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Client {
            base,
            http,
            credential,
            request_id,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        req = match &self.credential {
            Some(Credential::ApiKey(key)) => req.header("X-Api-Key", key),
            Some(Credential::Admin(token)) => req.bearer_auth(token),
            None => req,
        };
        if let Some(id) = &self.request_id {
            req = req.header("X-Request-Id", id);
        }
        req
    }

    /// Sends and returns the JSON answer of a 2xx; anything else becomes a `CliError`.
    pub async fn json(&self, req: RequestBuilder) -> Result<Value, CliError> {
        let response = self.send(req.timeout(Duration::from_secs(60))).await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(error_of(status, &body))
        }
    }

    pub async fn send(&self, req: RequestBuilder) -> Result<Response, CliError> {
        req.send()
            .await
            .map_err(|e| CliError::Unavailable(format!("cannot reach {}: {e}", self.base)))
    }
}

pub fn error_of(status: StatusCode, body: &Value) -> CliError {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    if status.is_client_error() {
        CliError::Refused {
            status: status.as_u16(),
            message,
        }
    } else {
        CliError::Unavailable(format!("Shiplog answered {}: {message}", status.as_u16()))
    }
}

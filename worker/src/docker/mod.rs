//! The Docker driver (bollard): a bounded, idempotent state machine in the style of
//! shuttle's gateway.
//!
//! - **Ownership labels**: every container, network and volume carries the compose project
//!   labels (so `docker compose ls/ps` understand them) and Shiplog's own `io.shiplog.*`.
//! - **404 means absent, "already exists" is success**: every step first looks at what is
//!   there and only changes what differs, so running a converge twice, or again after a
//!   crash, finishes the job instead of doubling it.
//! - **A deadline on every call**: each engine call goes through [`DockerClient::call`],
//!   which wraps it in `tokio::time::timeout`; pulls and health waits have their own
//!   deadlines.
//!
//! Entry points: [`DockerClient::connect`], [`DockerClient::pull`],
//! [`DockerClient::converge`], [`DockerClient::stack_containers`],
//! [`DockerClient::remove_stack`].

mod converge;
mod error;
mod health;
mod image;
mod lifecycle;
mod ops;
mod ssh;
mod stack;
mod transport;

use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use shiplog_events::endpoint::Endpoint;

pub use converge::{
    ConvergeContext, ConvergeFailure, ConvergeObserver, ConvergeReport, NoopObserver,
    ServiceAction, ServiceOutcome,
};
pub use error::DockerError;
pub use image::{ImageReference, PulledImage};
pub use lifecycle::ImageRemoval;
pub use stack::ContainerInfo;

/// Label names shared with docker compose, and Shiplog's own.
pub mod labels {
    pub const PROJECT: &str = "com.docker.compose.project";
    pub const SERVICE: &str = "com.docker.compose.service";
    pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    pub const NETWORK: &str = "com.docker.compose.network";
    pub const VOLUME: &str = "com.docker.compose.volume";
    pub const STACK: &str = "io.shiplog.stack";
    pub const ENVIRONMENT: &str = "io.shiplog.environment";
    pub const VERSION: &str = "io.shiplog.version";
    pub const DEPLOYMENT: &str = "io.shiplog.deployment";
    pub const CONFIG_HASH: &str = "io.shiplog.config-hash";
}

/// Name of a service's container: `<stack>-<service>-1`, as docker compose v2 names it.
pub fn container_name(stack: &str, service: &str) -> String {
    format!("{stack}-{service}-1")
}

/// Name a replaced container carries until the new one is up: `<stack>-<service>-1-old`.
pub fn old_container_name(stack: &str, service: &str) -> String {
    format!("{stack}-{service}-1-old")
}

/// The stack's network, as compose names it: `<stack>_default`.
pub fn network_name(stack: &str) -> String {
    stack_network_name(stack, "default")
}

/// A network of the stack, as compose names it: `<stack>_<network>`.
pub fn stack_network_name(stack: &str, network: &str) -> String {
    format!("{stack}_{network}")
}

/// A named volume of the stack, as compose names it: `<stack>_<name>`.
pub fn volume_name(stack: &str, volume: &str) -> String {
    format!("{stack}_{volume}")
}

/// The longest grace period between SIGTERM and SIGKILL a stop call waits for: the
/// container's own (`stop_grace_period`, the engine's default 10 s) applies, bounded here.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(120);

/// A connection to one Docker engine. Cheap to clone; every call is bounded.
#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
    endpoint: String,
    call_timeout: Duration,
}

impl std::fmt::Debug for DockerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerClient")
            .field("endpoint", &self.endpoint)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl DockerClient {
    /// Connects to a plain endpoint (`unix:///path`, a bare socket path, `tcp://host:port`,
    /// `http://host:port`, or `ssh://…` with ssh's own defaults): see [`Self::connect_to`].
    pub async fn connect(endpoint: &str, call_timeout: Duration) -> Result<Self, DockerError> {
        Self::connect_to(&Endpoint::plain(endpoint), call_timeout).await
    }

    /// Connects to an environment's endpoint (with its TLS files or SSH settings) and
    /// negotiates the API version with the engine (so a newer client talks to an older
    /// engine in the engine's version). `call_timeout` bounds every later call (stops get
    /// the stop grace period on top).
    pub async fn connect_to(
        endpoint: &Endpoint,
        call_timeout: Duration,
    ) -> Result<Self, DockerError> {
        // bollard's own timeout only covers the wait for response headers; keep it above
        // ours so that ours is the one that fires, stops included.
        let client_timeout = call_timeout.as_secs() + STOP_GRACE.as_secs() + 5;
        let docker = transport::open(endpoint, client_timeout, call_timeout)?;
        let mut client = DockerClient {
            docker: docker.clone(),
            endpoint: endpoint.url.clone(),
            call_timeout,
        };
        client.docker = client
            .call("negotiate API version", docker.negotiate_version())
            .await?;
        Ok(client)
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The deadline of a single call.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.call("ping", self.docker.ping()).await.map(|_| ())
    }

    /// Runs one engine call under the client's call timeout.
    pub(crate) async fn call<T, F>(&self, operation: &str, call: F) -> Result<T, DockerError>
    where
        F: Future<Output = Result<T, bollard::errors::Error>>,
    {
        self.call_within(operation, self.call_timeout, call).await
    }

    /// Runs one engine call under an explicit deadline.
    pub(crate) async fn call_within<T, F>(
        &self,
        operation: &str,
        deadline: Duration,
        call: F,
    ) -> Result<T, DockerError>
    where
        F: Future<Output = Result<T, bollard::errors::Error>>,
    {
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.map_error(operation, deadline, err)),
            Err(_) => Err(DockerError::Timeout {
                operation: operation.to_owned(),
                after: deadline,
            }),
        }
    }

    /// Sorts a bollard error by what it means for us: an engine answer (by its status,
    /// never by its text), a transport failure, bollard's own timeout, or anything else.
    pub(crate) fn map_error(
        &self,
        operation: &str,
        deadline: Duration,
        err: bollard::errors::Error,
    ) -> DockerError {
        use bollard::errors::Error as E;
        match err {
            E::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Api {
                operation: operation.to_owned(),
                status: status_code,
                message,
            },
            E::RequestTimeoutError => DockerError::Timeout {
                operation: operation.to_owned(),
                after: deadline,
            },
            E::HyperLegacyError { .. } | E::HyperResponseError { .. } | E::IOError { .. }
                if !matches!(transport::cause(&err), transport::Cause::Other) =>
            {
                let message = format!("{operation}: {}", error::chain(&err));
                let endpoint = self.endpoint.clone();
                match transport::cause(&err) {
                    transport::Cause::Tls => DockerError::Tls { endpoint, message },
                    _ => DockerError::Ssh { endpoint, message },
                }
            }
            E::HyperLegacyError { .. }
            | E::HyperResponseError { .. }
            | E::IOError { .. }
            | E::SocketNotFoundError(_) => DockerError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: format!("{operation}: {}", error::chain(&err)),
            },
            other => DockerError::Client {
                operation: operation.to_owned(),
                message: error::chain(&other),
            },
        }
    }
}

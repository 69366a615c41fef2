//! One error type for everything the Docker driver does. Its messages become the
//! deployment's message, so each names the cause in plain words.

use std::time::Duration;

/// Why a Docker operation failed.
///
/// [`DockerError::is_transient`] tells the executor whether a retry with backoff may help
/// (engine or registry unreachable, timeouts, engine 5xx) or whether the deployment should
/// end now (missing image, a container that exits or never becomes healthy, a port that is
/// already taken, an invalid spec).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    /// The endpoint string cannot be used (unknown scheme, TLS without TLS support, …).
    #[error("invalid Docker endpoint {endpoint}: {message}")]
    InvalidEndpoint { endpoint: String, message: String },

    /// The engine could not be reached (socket missing, connection refused or reset).
    #[error("Docker engine at {endpoint} is unreachable: {message}")]
    Unreachable { endpoint: String, message: String },

    /// The TLS connection failed on a certificate (the engine refused ours, or we refused
    /// the engine's), or this worker cannot read the TLS files the environment names.
    #[error(
        "TLS connection to the Docker engine at {endpoint} failed (certificate or TLS files): {message}"
    )]
    Tls { endpoint: String, message: String },

    /// ssh gave up before the engine answered (key refused, unknown or changed host key,
    /// host unreachable, no docker on the host): `message` carries ssh's own words.
    #[error("SSH connection to the Docker engine at {endpoint} failed: {message}")]
    Ssh { endpoint: String, message: String },

    /// A call did not complete within its deadline.
    #[error("Docker call timed out after {}s: {operation}", .after.as_secs_f32())]
    Timeout { operation: String, after: Duration },

    /// The registry has no such image or tag (or it is not visible with our credentials).
    #[error("image {image} not found: {message}")]
    ImageNotFound { image: String, message: String },

    /// The pull failed for another reason (registry down, broken layer, …).
    #[error("pulling image {image} failed: {message}")]
    PullFailed { image: String, message: String },

    /// The new container could not be created or started (e.g. its host port is already
    /// allocated).
    #[error("container of service {service} could not start: {message}")]
    ContainerStart { service: String, message: String },

    /// The new container did not become healthy in time, or its health check failed.
    #[error("service {service} did not become healthy: {detail}")]
    Unhealthy { service: String, detail: String },

    /// The new container stopped (or was restarted by its restart policy) right after start.
    /// `output` holds the last lines it printed, when there were any.
    #[error(
        "service {service} exited with code {exit_code} right after it started{}",
        output_suffix(.output)
    )]
    Exited {
        service: String,
        exit_code: i64,
        output: Option<String>,
    },

    /// The tag moved between the pull and the container creation: the container would not
    /// run the image that was pulled and recorded.
    #[error(
        "image {image} of service {service} changed during the deployment \
         (pulled {expected}, the container got {actual})"
    )]
    ImageMoved {
        service: String,
        image: String,
        expected: String,
        actual: String,
    },

    /// The stack spec cannot be converged as it is (bad name, missing image, unknown
    /// dependency, unknown restart policy, …). Nothing was touched.
    #[error("invalid stack spec: {0}")]
    InvalidSpec(String),

    /// The engine answered with an error status.
    #[error("Docker call failed ({operation}): status {status}: {message}")]
    Api {
        operation: String,
        status: u16,
        message: String,
    },

    /// Any other client-side failure (an answer that cannot be decoded, …).
    #[error("Docker call failed ({operation}): {message}")]
    Client { operation: String, message: String },

    /// The observer refused to go on (the stack lease is lost, or the change could not be
    /// recorded): the converge stopped at once without touching anything more.
    #[error("stack lease lost: {0}")]
    LeaseLost(String),
}

impl DockerError {
    /// `true` when retrying the same deployment later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            // A refused certificate or ssh key is retried like an unreachable engine: the
            // deployment still ends in `error` (infrastructure), and a rotation in progress
            // may finish meanwhile.
            DockerError::Unreachable { .. }
            | DockerError::Tls { .. }
            | DockerError::Ssh { .. }
            | DockerError::Timeout { .. }
            | DockerError::PullFailed { .. }
            | DockerError::ImageMoved { .. } => true,
            DockerError::Api { status, .. } => *status >= 500,
            DockerError::InvalidEndpoint { .. }
            | DockerError::ImageNotFound { .. }
            | DockerError::ContainerStart { .. }
            | DockerError::Unhealthy { .. }
            | DockerError::Exited { .. }
            | DockerError::InvalidSpec(_)
            | DockerError::Client { .. }
            | DockerError::LeaseLost(_) => false,
        }
    }

    /// The HTTP status of an engine error answer, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            DockerError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `true` when the engine itself could not be talked to (as opposed to an engine that
    /// answered with an error): what the environment's status records.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            DockerError::Unreachable { .. }
                | DockerError::Tls { .. }
                | DockerError::Ssh { .. }
                | DockerError::InvalidEndpoint { .. }
        )
    }

    pub(crate) fn is_status(&self, wanted: u16) -> bool {
        self.status() == Some(wanted)
    }
}

fn output_suffix(output: &Option<String>) -> String {
    match output {
        Some(output) if !output.is_empty() => format!("; last output: {output}"),
        _ => String::new(),
    }
}

/// An error's message followed by its sources (`a: b: c`), without repeating a source whose
/// text is already part of the message.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent() {
        let api = |status| DockerError::Api {
            operation: "x".into(),
            status,
            message: String::new(),
        };
        assert!(api(500).is_transient());
        assert!(api(503).is_transient());
        assert!(!api(404).is_transient());
        assert!(!api(409).is_transient());
        assert!(
            DockerError::Timeout {
                operation: "x".into(),
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(
            !DockerError::ContainerStart {
                service: "web".into(),
                message: "port is already allocated".into()
            }
            .is_transient()
        );
        assert!(
            !DockerError::Exited {
                service: "web".into(),
                exit_code: 1,
                output: None,
            }
            .is_transient()
        );
        assert!(!DockerError::LeaseLost("gone".into()).is_transient());
    }

    #[test]
    fn messages_name_the_cause() {
        let e = DockerError::Exited {
            service: "web".into(),
            exit_code: 1,
            output: None,
        };
        assert_eq!(
            e.to_string(),
            "service web exited with code 1 right after it started"
        );
        let e = DockerError::Exited {
            service: "web".into(),
            exit_code: 2,
            output: Some("config missing".into()),
        };
        assert_eq!(
            e.to_string(),
            "service web exited with code 2 right after it started; last output: config missing"
        );
        let e = DockerError::Timeout {
            operation: "stop container a".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(
            e.to_string(),
            "Docker call timed out after 1.5s: stop container a"
        );
    }
}

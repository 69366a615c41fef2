//! The worker's one error type: what can stop a job from being carried out at all.
//! Deployment failures (bad image, unhealthy container…) are not errors here: they are
//! recorded as `DeploymentFailed` and the job ends normally.

use crate::docker::DockerError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Domain(#[from] shiplog_events::Error),
    #[error(transparent)]
    Docker(#[from] DockerError),
}

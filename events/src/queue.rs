//! The job queue (apalis on PostgreSQL). A job carries only the deployment id; the worker
//! reads the request from the log. Jobs are pushed on the caller's transaction.

use apalis_core::task::builder::TaskBuilder;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};

/// How often apalis re-runs a job whose handler failed on infrastructure (database) errors.
/// Deployment failures are recorded as events and end the job; they do not come back here.
pub const MAX_ATTEMPTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployJob {
    pub deployment: Uuid,
}

/// One queue per environment, so a worker restricted to some environments only ever
/// fetches their jobs.
pub fn queue_name(environment: &str) -> String {
    format!("{QUEUE_PREFIX}{environment}")
}

const QUEUE_PREFIX: &str = "shiplog.deploy.";

/// The environment a queue serves; `None` for queues that are not Shiplog's.
pub fn environment_of(queue: &str) -> Option<&str> {
    queue.strip_prefix(QUEUE_PREFIX)
}

pub async fn enqueue(tx: &mut PgConnection, environment: &str, job: DeployJob) -> Result<()> {
    let args = serde_json::to_vec(&job)?;
    let task = TaskBuilder::new(args).max_attempts(MAX_ATTEMPTS).build();
    apalis_postgres::queries::push_tasks(tx, &queue_name(environment), vec![task])
        .await
        .map_err(|e| Error::Queue(e.to_string()))
}

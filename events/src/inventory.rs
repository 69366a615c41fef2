//! What workers observe on an engine, beside what the log says: the containers of every
//! compose project there. The stack listing shows the projects Shiplog does not manage as
//! read-only entries. Observed state, overwritten by the newest probe, never events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::Result;

/// One container carrying a `com.docker.compose.project` label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObservedContainer {
    pub project: String,
    pub name: String,
    pub service: Option<String>,
    pub image: String,
    /// The engine's state: `running`, `exited`, `created`, …
    pub state: String,
}

/// A compose project on the engine that is not a stack deployed by Shiplog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedProject {
    pub environment_id: String,
    pub stack_name: String,
    /// Always false: Shiplog shows these, it does not act on them.
    pub managed: bool,
    pub read_only: bool,
    /// `running` when every container runs, `stopped` when none does, else `partial`.
    pub state: String,
    pub containers: Vec<ObservedContainer>,
    pub observed_at: DateTime<Utc>,
}

pub async fn record(
    pool: &PgPool,
    environment: &str,
    worker: &str,
    mut containers: Vec<ObservedContainer>,
) -> Result<()> {
    containers.sort();
    sqlx::query(
        "INSERT INTO environment_containers AS c (environment_id, containers, observed_at, observed_by)
         VALUES ($1, $2, clock_timestamp(), $3)
         ON CONFLICT (environment_id) DO UPDATE SET
             containers = EXCLUDED.containers, observed_at = EXCLUDED.observed_at,
             observed_by = EXCLUDED.observed_by
         WHERE c.observed_at <= EXCLUDED.observed_at",
    )
    .bind(environment)
    .bind(serde_json::to_value(&containers)?)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

/// The projects last seen on `environment` that are not among `managed` stacks.
pub async fn unmanaged(
    pool: &PgPool,
    environment: &str,
    managed: &[&str],
) -> Result<Vec<UnmanagedProject>> {
    let row: Option<(serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT containers, observed_at FROM environment_containers WHERE environment_id = $1",
    )
    .bind(environment)
    .fetch_optional(pool)
    .await?;
    let Some((containers, observed_at)) = row else {
        return Ok(Vec::new());
    };
    let containers: Vec<ObservedContainer> = serde_json::from_value(containers)?;
    Ok(group_unmanaged(
        environment,
        containers,
        managed,
        observed_at,
    ))
}

pub fn group_unmanaged(
    environment: &str,
    containers: Vec<ObservedContainer>,
    managed: &[&str],
    observed_at: DateTime<Utc>,
) -> Vec<UnmanagedProject> {
    let mut projects: BTreeMap<String, Vec<ObservedContainer>> = BTreeMap::new();
    for container in containers {
        if !managed.contains(&container.project.as_str()) {
            projects
                .entry(container.project.clone())
                .or_default()
                .push(container);
        }
    }
    projects
        .into_iter()
        .map(|(project, containers)| {
            let running = containers.iter().filter(|c| c.state == "running").count();
            let state = match running {
                0 => "stopped",
                n if n == containers.len() => "running",
                _ => "partial",
            };
            UnmanagedProject {
                environment_id: environment.to_owned(),
                stack_name: project,
                managed: false,
                read_only: true,
                state: state.to_owned(),
                containers,
                observed_at,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(project: &str, name: &str, state: &str) -> ObservedContainer {
        ObservedContainer {
            project: project.into(),
            name: name.into(),
            service: Some("app".into()),
            image: "nginx:1".into(),
            state: state.into(),
        }
    }

    #[test]
    fn projects_shiplog_deploys_are_left_out_and_the_rest_grouped_with_a_state() {
        let now = Utc::now();
        let grouped = group_unmanaged(
            "prod",
            vec![
                container("web", "web-app-1", "running"),
                container("legacy", "legacy-a-1", "running"),
                container("legacy", "legacy-b-1", "exited"),
                container("old", "old-a-1", "exited"),
            ],
            &["web"],
            now,
        );
        let summary: Vec<(&str, &str, usize)> = grouped
            .iter()
            .map(|p| (p.stack_name.as_str(), p.state.as_str(), p.containers.len()))
            .collect();
        assert_eq!(
            summary,
            vec![("legacy", "partial", 2), ("old", "stopped", 1)]
        );
        assert!(grouped.iter().all(|p| !p.managed && p.read_only));
    }
}

//! Stack lifecycle: start, stop, restart, remove. Each is a deployment like any other (its
//! own stream, status and job), run in request order with the stack's other deployments.
//! They act on the containers the stack has; none pulls or changes a version.

use std::collections::BTreeMap;

use sqlx::PgPool;
use uuid::Uuid;

use super::deployments::{
    CatalogEntry, Idempotency, Requested, StackState, lock_stack_requests, not_deployed, replay,
    running_origin, submit, validate_target,
};
use crate::error::Result;
use crate::event::{DeploymentRequest, Event, Metadata, Removal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Remove(Removal),
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Remove(_) => "remove",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub environment: String,
    pub stack: String,
    pub action: Action,
}

/// Only a deployed stack has containers to act on. `origin`: the catalog entry of the
/// running version (the manifest gives the start order).
pub fn decide_lifecycle(
    id: Uuid,
    cmd: &Lifecycle,
    current: Option<&StackState>,
    origin: Option<&CatalogEntry>,
) -> Result<Event> {
    let current = current.ok_or_else(|| not_deployed(&cmd.stack, &cmd.environment))?;
    let request = DeploymentRequest {
        deployment: id,
        environment: cmd.environment.clone(),
        stack: cmd.stack.clone(),
        version: current.version.clone(),
        previous_version: Some(current.version.clone()),
        variables: current.variables.clone(),
        force: false,
        images: BTreeMap::new(),
        removal: match cmd.action {
            Action::Remove(removal) => Some(removal),
            _ => None,
        },
        catalog_source: origin.map(|o| o.source.clone()),
        catalog_revision: origin.and_then(|o| o.revision.clone()),
    };
    Ok(match cmd.action {
        Action::Start => Event::StartRequested(request),
        Action::Stop => Event::StopRequested(request),
        Action::Restart => Event::RestartRequested(request),
        Action::Remove(_) => Event::RemoveRequested(request),
    })
}

pub async fn request(
    pool: &PgPool,
    cmd: &Lifecycle,
    metadata: &Metadata,
    idempotency: Option<&Idempotency>,
) -> Result<Requested> {
    validate_target(pool, &cmd.environment, &cmd.stack).await?;
    let mut tx = pool.begin().await?;
    lock_stack_requests(&mut tx, &cmd.environment, &cmd.stack).await?;
    if let Some(done) = replay(&mut tx, idempotency).await? {
        return Ok(done);
    }
    let current = super::deployments::current_stack(&mut tx, &cmd.environment, &cmd.stack).await?;
    let origin = running_origin(&mut tx, &cmd.stack, current.as_ref()).await?;
    let event = decide_lifecycle(Uuid::now_v7(), cmd, current.as_ref(), origin.as_ref())?;
    submit(tx, event, metadata, idempotency).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeploymentKind;

    fn cmd(action: Action) -> Lifecycle {
        Lifecycle {
            environment: "prod".into(),
            stack: "web".into(),
            action,
        }
    }

    #[test]
    fn an_absent_stack_cannot_be_started_stopped_or_removed() {
        for action in [
            Action::Start,
            Action::Stop,
            Action::Restart,
            Action::Remove(Removal::default()),
        ] {
            let err = decide_lifecycle(Uuid::nil(), &cmd(action), None, None).unwrap_err();
            assert!(err.to_string().contains("not deployed"), "{err}");
        }
    }

    #[test]
    fn requests_keep_the_running_version_and_carry_the_removal_flags() {
        let current = StackState {
            version: "1.2.0".into(),
            variables: BTreeMap::from([("A".into(), "1".into())]),
        };
        let removal = Removal {
            volumes: true,
            images: false,
        };
        let event = decide_lifecycle(
            Uuid::nil(),
            &cmd(Action::Remove(removal)),
            Some(&current),
            None,
        )
        .unwrap();
        let (kind, request) = event.request().unwrap();
        assert_eq!(kind, DeploymentKind::Remove);
        assert_eq!(request.version, "1.2.0");
        assert_eq!(request.variables, current.variables);
        assert_eq!(request.removal, Some(removal));

        let event =
            decide_lifecycle(Uuid::nil(), &cmd(Action::Stop), Some(&current), None).unwrap();
        assert_eq!(event.event_type(), "StopRequested");
        assert_eq!(event.request().unwrap().1.removal, None);
    }
}

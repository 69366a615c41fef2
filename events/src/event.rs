//! Every event Shiplog records. Names are past tense; payloads carry ids and the facts of
//! the decision, not copies of read-model state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::VariableDef;
use crate::endpoint::{SshOptions, TlsFiles};

/// Streams are named `<kind>-<id>`; these build the names in one place.
pub mod stream {
    use uuid::Uuid;

    pub fn deployment(id: Uuid) -> String {
        format!("deployment-{id}")
    }
    pub fn stack(environment: &str, stack: &str) -> String {
        format!("stack-{environment}/{stack}")
    }
    pub fn api_key(id: Uuid) -> String {
        format!("apikey-{id}")
    }
    pub fn environment(id: &str) -> String {
        format!("environment-{id}")
    }
    pub fn source(id: &str) -> String {
        format!("source-{id}")
    }
}

/// What a deployment does; the kind of its request event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    Install,
    Redeploy,
    Upgrade,
    Rollback,
    Start,
    Stop,
    Restart,
    Remove,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentKind::Install => "install",
            DeploymentKind::Redeploy => "redeploy",
            DeploymentKind::Upgrade => "upgrade",
            DeploymentKind::Rollback => "rollback",
            DeploymentKind::Start => "start",
            DeploymentKind::Stop => "stop",
            DeploymentKind::Restart => "restart",
            DeploymentKind::Remove => "remove",
        }
    }

    /// Start, stop, restart, remove: act on the stack's containers as they are, without
    /// pulling or converging to a manifest.
    pub fn is_lifecycle(self) -> bool {
        matches!(
            self,
            DeploymentKind::Start
                | DeploymentKind::Stop
                | DeploymentKind::Restart
                | DeploymentKind::Remove
        )
    }
}

/// What a remove takes with the containers and networks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The stack's named volumes (their data is gone for good).
    pub volumes: bool,
    /// The images the stack's containers ran, unless another container uses them.
    pub images: bool,
}

/// `failure`: the deployment ran and the stack did not come up (GitHub's "failure").
/// `error`: Shiplog could not carry it out (Docker unreachable, timeout, lost lease…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Failure,
    Error,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Failure => "failure",
            FailureKind::Error => "error",
        }
    }
}

/// The request shared by every deployment kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRequest {
    pub deployment: Uuid,
    pub environment: String,
    pub stack: String,
    /// The version this deployment will run.
    pub version: String,
    /// The version current when it was requested, if the stack ran at all.
    pub previous_version: Option<String>,
    /// Effective variables (catalog defaults, stored values, request overlay).
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub force: bool,
    /// Images pinned by digest (`repo@sha256:…`) per service, overriding the manifest's
    /// references: a rollback runs exactly what ran before, even after a tag moved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Only on `RemoveRequested`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<Removal>,
    /// The catalog source the manifest came from when this was requested (absent in
    /// requests recorded before sources had revisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_source: Option<String>,
    /// That source's revision (a git commit; `None` for folders): the manifest this
    /// deployment runs is the one of this revision, even after the catalog moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_revision: Option<String>,
}

/// Where a git catalog source reads from. Credentials are stored sealed (`secret.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitSourceSpec {
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SealedCredentials>,
}

/// Credentials of a git source with every secret sealed (`sealed:v1:…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SealedCredentials {
    Https {
        username: String,
        password: String,
    },
    Ssh {
        private_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        known_hosts: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogStackVersion {
    pub name: String,
    pub version: String,
    pub file: String,
    pub description: Option<String>,
    pub variables: Vec<VariableDef>,
    /// The manifest text: the log alone must be able to rebuild the catalog.
    pub manifest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedService {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub digest: Option<String>,
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    EnvironmentRegistered {
        id: String,
        name: String,
        docker_endpoint: String,
        /// Where the worker finds the TLS client files of a `tcp://` endpoint (paths only:
        /// key material never enters the log).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<TlsFiles>,
        /// How the worker authenticates an `ssh://` endpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssh: Option<SshOptions>,
    },
    ApiKeyCreated {
        id: Uuid,
        name: String,
        hash: String,
        prefix: String,
        permissions: Vec<String>,
        environment: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        /// The stacks the key may act on; absent: all (keys made before this field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stacks: Option<Vec<String>>,
    },
    ApiKeyRevoked {
        id: Uuid,
        reason: Option<String>,
    },
    CatalogSourceAdded {
        id: String,
        kind: String,
        location: String,
        /// Git sources only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        git: Option<GitSourceSpec>,
    },
    CatalogSynced {
        source: String,
        revision: Option<String>,
        content_hash: String,
        stacks: Vec<CatalogStackVersion>,
    },
    DeployRequested(DeploymentRequest),
    RedeployRequested(DeploymentRequest),
    UpgradeRequested(DeploymentRequest),
    RollbackRequested(DeploymentRequest),
    StartRequested(DeploymentRequest),
    StopRequested(DeploymentRequest),
    RestartRequested(DeploymentRequest),
    RemoveRequested(DeploymentRequest),
    /// A redeploy request that arrived while an equal one was still queued: it joins that
    /// deployment instead of queueing another.
    RedeployJoined {
        deployment: Uuid,
        force: bool,
    },
    /// A queued deployment made pointless by a newer request (`by`); it ends `inactive`.
    DeploymentSuperseded {
        deployment: Uuid,
        by: Uuid,
        reason: String,
    },
    DeploymentStarted {
        deployment: Uuid,
        worker: String,
        attempt: u32,
    },
    ImagePulled {
        deployment: Uuid,
        service: String,
        image: String,
        image_id: String,
        digest: Option<String>,
    },
    ContainerReplaced {
        deployment: Uuid,
        service: String,
        old: Option<String>,
        new: String,
    },
    ServiceUnchanged {
        deployment: Uuid,
        service: String,
        container: String,
    },
    /// A transient failure (engine or registry unreachable, timeout of a call); the
    /// deployment is tried again after `retry_in_ms`.
    DeploymentRetrying {
        deployment: Uuid,
        reason: String,
        retry_in_ms: u64,
    },
    DeploymentSucceeded {
        deployment: Uuid,
        version: String,
        digests: BTreeMap<String, String>,
        /// What was done, for lifecycle deployments ("Stopped 2 containers"); absent: the
        /// version was deployed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
    DeploymentFailed {
        deployment: Uuid,
        kind: FailureKind,
        reason: String,
        rolled_back: bool,
    },
    StackDeployed {
        environment: String,
        stack: String,
        version: String,
        deployment: Uuid,
        digests: BTreeMap<String, String>,
        variables: BTreeMap<String, String>,
        services: Vec<DeployedService>,
        /// The catalog source and revision the deployment ran (from its request).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        catalog_source: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        catalog_revision: Option<String>,
    },
    /// The stack's containers were stopped by a deployment (they still exist).
    StackStopped {
        environment: String,
        stack: String,
        deployment: Uuid,
    },
    /// The stack's containers were started (or restarted) by a deployment.
    StackStarted {
        environment: String,
        stack: String,
        deployment: Uuid,
    },
    /// The stack's containers and network are gone; it is no longer deployed.
    StackRemoved {
        environment: String,
        stack: String,
        deployment: Uuid,
        removal: Removal,
    },
}

impl Event {
    /// Stored in `event_type`: the variant name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::EnvironmentRegistered { .. } => "EnvironmentRegistered",
            Event::ApiKeyCreated { .. } => "ApiKeyCreated",
            Event::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            Event::CatalogSourceAdded { .. } => "CatalogSourceAdded",
            Event::CatalogSynced { .. } => "CatalogSynced",
            Event::DeployRequested(_) => "DeployRequested",
            Event::RedeployRequested(_) => "RedeployRequested",
            Event::UpgradeRequested(_) => "UpgradeRequested",
            Event::RollbackRequested(_) => "RollbackRequested",
            Event::RedeployJoined { .. } => "RedeployJoined",
            Event::DeploymentSuperseded { .. } => "DeploymentSuperseded",
            Event::DeploymentStarted { .. } => "DeploymentStarted",
            Event::ImagePulled { .. } => "ImagePulled",
            Event::ContainerReplaced { .. } => "ContainerReplaced",
            Event::ServiceUnchanged { .. } => "ServiceUnchanged",
            Event::DeploymentRetrying { .. } => "DeploymentRetrying",
            Event::DeploymentSucceeded { .. } => "DeploymentSucceeded",
            Event::DeploymentFailed { .. } => "DeploymentFailed",
            Event::StackDeployed { .. } => "StackDeployed",
            Event::StackStopped { .. } => "StackStopped",
            Event::StackStarted { .. } => "StackStarted",
            Event::StackRemoved { .. } => "StackRemoved",
            Event::StartRequested(_) => "StartRequested",
            Event::StopRequested(_) => "StopRequested",
            Event::RestartRequested(_) => "RestartRequested",
            Event::RemoveRequested(_) => "RemoveRequested",
        }
    }

    /// Schema version of the payload written today. Bump it when a payload changes shape
    /// and teach `upcast` to lift the old one.
    pub fn event_version(&self) -> i32 {
        1
    }

    /// Splits the event into (`event_type`, `data`) for storage.
    pub fn to_stored(&self) -> (&'static str, serde_json::Value) {
        let mut value = serde_json::to_value(self).expect("events serialize");
        let data = value
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or(serde_json::Value::Null);
        (self.event_type(), data)
    }

    pub fn from_stored(
        event_type: &str,
        event_version: i32,
        data: serde_json::Value,
    ) -> Result<Event, serde_json::Error> {
        let data = upcast(event_type, event_version, data);
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": data }))
    }

    /// Whether this event ends a deployment.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::DeploymentSucceeded { .. }
                | Event::DeploymentFailed { .. }
                | Event::DeploymentSuperseded { .. }
        )
    }

    pub fn request(&self) -> Option<(DeploymentKind, &DeploymentRequest)> {
        match self {
            Event::DeployRequested(r) => Some((DeploymentKind::Install, r)),
            Event::RedeployRequested(r) => Some((DeploymentKind::Redeploy, r)),
            Event::UpgradeRequested(r) => Some((DeploymentKind::Upgrade, r)),
            Event::RollbackRequested(r) => Some((DeploymentKind::Rollback, r)),
            Event::StartRequested(r) => Some((DeploymentKind::Start, r)),
            Event::StopRequested(r) => Some((DeploymentKind::Stop, r)),
            Event::RestartRequested(r) => Some((DeploymentKind::Restart, r)),
            Event::RemoveRequested(r) => Some((DeploymentKind::Remove, r)),
            _ => None,
        }
    }
}

/// Lifts old payload versions to the current one on read; the log itself is never rewritten.
fn upcast(_event_type: &str, _event_version: i32, data: serde_json::Value) -> serde_json::Value {
    // Every event is at version 1 so far.
    data
}

/// Who and what caused an event. Stored in `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The request (X-Request-Id) or job that led to the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event or command this one follows from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// `admin`, `apikey:<id>`, `worker:<name>`, `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl Metadata {
    pub fn actor(actor: impl Into<String>) -> Self {
        Metadata {
            actor: Some(actor.into()),
            ..Default::default()
        }
    }

    pub fn with_correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

/// An event as read back from the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    pub global_position: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event: Event,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips() {
        let event = Event::DeploymentStarted {
            deployment: Uuid::nil(),
            worker: "w1".into(),
            attempt: 2,
        };
        let (ty, data) = event.to_stored();
        assert_eq!(ty, "DeploymentStarted");
        assert_eq!(data["attempt"], 2);
        assert_eq!(Event::from_stored(ty, 1, data).unwrap(), event);
    }

    #[test]
    fn newtype_request_events_store_their_fields_flat() {
        let event = Event::RedeployRequested(DeploymentRequest {
            deployment: Uuid::nil(),
            environment: "prod".into(),
            stack: "web".into(),
            version: "1.0.0".into(),
            previous_version: Some("1.0.0".into()),
            variables: BTreeMap::new(),
            force: true,
            images: BTreeMap::new(),
            removal: None,
            catalog_source: None,
            catalog_revision: None,
        });
        let (ty, data) = event.to_stored();
        assert_eq!(ty, "RedeployRequested");
        assert_eq!(data["stack"], "web");
        assert_eq!(Event::from_stored(ty, 1, data).unwrap(), event);
    }

    #[test]
    fn requests_recorded_before_catalog_revisions_still_read() {
        let old = serde_json::json!({
            "deployment": Uuid::nil(), "environment": "prod", "stack": "web",
            "version": "1.0.0", "previous_version": null, "variables": {}
        });
        let Event::UpgradeRequested(r) = Event::from_stored("UpgradeRequested", 1, old).unwrap()
        else {
            panic!("wrong event")
        };
        assert_eq!((r.catalog_source, r.catalog_revision), (None, None));
        let old_source =
            serde_json::json!({ "id": "dir-1", "kind": "directory", "location": "/c" });
        assert!(matches!(
            Event::from_stored("CatalogSourceAdded", 1, old_source).unwrap(),
            Event::CatalogSourceAdded { git: None, .. }
        ));
    }
}

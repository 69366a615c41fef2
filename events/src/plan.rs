//! Dry runs: what a deployment request would change, worked out from the recorded state
//! (the `stacks` projection and the catalog) and the registry's answer for each image,
//! without touching anything. Pure: the caller gathers the inputs.
//!
//! It predicts what the worker's converge does: a service's container is kept when it runs,
//! its image is the one pulled and its `config_hash` is unchanged, unless the request is
//! forced; otherwise it is recreated. Services that left the spec have their containers
//! stopped and removed once the others are up. The image is compared by registry digest
//! (what the last successful deployment pulled, as `RepoDigests` recorded it, against the
//! registry's manifest digest for the tag now): the same manifest digest is the same image.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::commands::deployments::DeployAction;
use crate::event::DeployedService;
use crate::spec::StackSpec;

/// The stack as it runs now.
#[derive(Debug, Clone)]
pub struct Current {
    pub version: String,
    pub variables: BTreeMap<String, String>,
    /// As the last successful deployment recorded them (`digest`: the registry digest).
    pub services: Vec<DeployedService>,
    /// `false` when the stack was stopped: converge recreates containers that do not run.
    pub running: bool,
    /// The current version resolved with the current variables; `Err`: why it cannot be
    /// (e.g. that version left the catalog), so configuration changes are unknown.
    pub spec: Result<StackSpec, String>,
}

/// What the registry says the target image reference points at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetDigest {
    Known(String),
    /// Why it is unknown (registry unreachable, needs credentials…).
    Unknown(String),
}

/// Everything a plan is made of.
#[derive(Debug, Clone)]
pub struct Draft {
    pub action: DeployAction,
    pub environment: String,
    pub stack: String,
    pub target_version: String,
    /// Effective variables the real request would record.
    pub target_variables: BTreeMap<String, String>,
    pub force: bool,
    pub current: Option<Current>,
    /// `Err`: why the target cannot be resolved (the real deployment would fail).
    pub target: Result<StackSpec, String>,
    /// Names of `password` variables (in the current or the target version).
    pub secrets: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub dry_run: bool,
    pub action: &'static str,
    pub stack_name: String,
    pub environment_id: String,
    pub current_version: Option<String>,
    pub target_version: String,
    pub force: bool,
    pub services: Vec<ServicePlan>,
    pub variables: VariablesDiff,
    /// `false`: something could not be known (see `notes`); the plan is partial.
    pub complete: bool,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceAction {
    Create,
    Recreate,
    Unchanged,
    Remove,
    /// Recreated only if the image changed, which could not be found out.
    Unknown,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlan {
    pub name: String,
    pub action: ServiceAction,
    pub reasons: Vec<String>,
    /// The target image reference (for `remove`: the current one).
    pub image: String,
    pub digest: DigestChange,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DigestChange {
    pub current: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VariablesDiff {
    pub added: BTreeMap<String, Added>,
    pub removed: Vec<String>,
    pub changed: BTreeMap<String, Changed>,
}

/// A secret's value is never shown: `{"secret": true}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Added {
    Value { value: String },
    Secret { secret: bool },
}

/// A secret's values are never shown: `{"changed": true, "secret": true}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Changed {
    Values { old: String, new: String },
    Secret { changed: bool, secret: bool },
}

const REMOVED_REASON: &str = "no longer in the stack: its container is stopped and removed \
                              once the other services are up";

/// The plan for `draft`, given the target digest of each target service.
pub fn build(draft: &Draft, digests: &BTreeMap<String, TargetDigest>) -> Plan {
    let mut notes = Vec::new();
    let mut services = Vec::new();
    match &draft.target {
        Ok(target) => {
            for service in &target.services {
                let digest = digests
                    .get(&service.name)
                    .cloned()
                    .unwrap_or_else(|| TargetDigest::Unknown("the registry was not asked".into()));
                services.push(plan_service(draft, service, digest));
            }
            if let Some(current) = &draft.current {
                let wanted: BTreeSet<&str> =
                    target.services.iter().map(|s| s.name.as_str()).collect();
                for gone in current
                    .services
                    .iter()
                    .filter(|s| !wanted.contains(s.name.as_str()))
                {
                    services.push(ServicePlan {
                        name: gone.name.clone(),
                        action: ServiceAction::Remove,
                        reasons: vec![REMOVED_REASON.into()],
                        image: gone.image.clone(),
                        digest: DigestChange {
                            current: gone.digest.clone(),
                            target: None,
                        },
                        note: None,
                    });
                }
            }
        }
        Err(why) => notes.push(format!(
            "{why}: the request would be accepted but its deployment would fail"
        )),
    }
    for s in &services {
        if let Some(note) = &s.note {
            notes.push(format!("service {}: {note}", s.name));
        }
    }
    Plan {
        dry_run: true,
        action: draft.action.as_str(),
        stack_name: draft.stack.clone(),
        environment_id: draft.environment.clone(),
        current_version: draft.current.as_ref().map(|c| c.version.clone()),
        target_version: draft.target_version.clone(),
        force: draft.force,
        complete: notes.is_empty(),
        services,
        variables: diff_variables(
            draft.current.as_ref().map(|c| &c.variables),
            &draft.target_variables,
            &draft.secrets,
        ),
        notes,
    }
}

fn plan_service(
    draft: &Draft,
    service: &crate::spec::ServiceSpec,
    target_digest: TargetDigest,
) -> ServicePlan {
    let (target, digest_note) = match target_digest {
        TargetDigest::Known(d) => (Some(d), None),
        TargetDigest::Unknown(why) => (None, Some(why)),
    };
    let running = draft
        .current
        .as_ref()
        .and_then(|c| Some((c, c.services.iter().find(|s| s.name == service.name)?)));
    let Some((current, deployed)) = running else {
        let reason = if draft.current.is_some() {
            "new service"
        } else {
            "the stack is not deployed"
        };
        return ServicePlan {
            name: service.name.clone(),
            action: ServiceAction::Create,
            reasons: vec![reason.into()],
            image: service.image.clone(),
            digest: DigestChange {
                current: None,
                target,
            },
            note: digest_note.map(|why| format!("target digest unknown: {why}")),
        };
    };

    let mut reasons = Vec::new();
    let mut unknown = Vec::new();
    if draft.force {
        reasons.push("forced: every container is recreated".to_owned());
    }
    if !current.running {
        reasons.push("the stack is stopped: a container that does not run is recreated".into());
    }
    match (&deployed.digest, &target) {
        (Some(old), Some(new)) if old != new => {
            let what = if deployed.image == service.image {
                String::new()
            } else {
                format!(" ({} → {})", deployed.image, service.image)
            };
            reasons.push(format!("image digest {old} → {new}{what}"));
        }
        (Some(_), Some(_)) => {}
        (None, _) => unknown.push(format!(
            "no registry digest was recorded for the running image {} (image id {}): \
             cannot tell whether the image changed",
            deployed.image, deployed.image_id
        )),
        (_, None) => unknown.push(format!(
            "target digest unknown: {}",
            digest_note.as_deref().unwrap_or("no answer")
        )),
    }
    match &current.spec {
        Ok(spec) => match spec.services.iter().find(|s| s.name == service.name) {
            Some(old) if old.config_hash() == service.config_hash() => {}
            _ => reasons.push("configuration changed".into()),
        },
        Err(why) => unknown.push(format!(
            "cannot compare the configuration with the running one: {why}"
        )),
    }

    let action = if !reasons.is_empty() {
        ServiceAction::Recreate
    } else if !unknown.is_empty() {
        ServiceAction::Unknown
    } else {
        ServiceAction::Unchanged
    };
    ServicePlan {
        name: service.name.clone(),
        action,
        reasons,
        image: service.image.clone(),
        digest: DigestChange {
            current: deployed.digest.clone(),
            target,
        },
        note: (!unknown.is_empty()).then(|| unknown.join("; ")),
    }
}

fn diff_variables(
    current: Option<&BTreeMap<String, String>>,
    target: &BTreeMap<String, String>,
    secrets: &BTreeSet<String>,
) -> VariablesDiff {
    let empty = BTreeMap::new();
    let current = current.unwrap_or(&empty);
    let secret = |name: &str, values: &[&String]| {
        secrets.contains(name) || values.iter().any(|v| crate::secret::is_sealed(v))
    };
    let mut diff = VariablesDiff::default();
    for (name, new) in target {
        match current.get(name) {
            None if secret(name, &[new]) => {
                diff.added
                    .insert(name.clone(), Added::Secret { secret: true });
            }
            None => {
                diff.added
                    .insert(name.clone(), Added::Value { value: new.clone() });
            }
            Some(old) if old == new => {}
            Some(old) if secret(name, &[old, new]) => {
                diff.changed.insert(
                    name.clone(),
                    Changed::Secret {
                        changed: true,
                        secret: true,
                    },
                );
            }
            Some(old) => {
                diff.changed.insert(
                    name.clone(),
                    Changed::Values {
                        old: old.clone(),
                        new: new.clone(),
                    },
                );
            }
        }
    }
    diff.removed = current
        .keys()
        .filter(|name| !target.contains_key(*name))
        .cloned()
        .collect();
    diff
}

#[cfg(test)]
mod tests;

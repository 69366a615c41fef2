//! The desired state of a stack once its catalog manifest and variables are resolved:
//! what the worker converges a Docker host to. Produced by `catalog`, consumed by the worker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A stack version with every variable interpolated, services in start order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSpec {
    /// Stack name; also the compose project name on the Docker host.
    pub name: String,
    pub version: String,
    /// Ordered so that every service comes after the services it depends on.
    pub services: Vec<ServiceSpec>,
    /// Networks declared at the top level (beyond `default`, which always exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// Image reference as written in the manifest (`repo[:tag]` or `repo@sha256:…`).
    pub image: String,
    pub environment: BTreeMap<String, String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub ports: Vec<PortSpec>,
    pub volumes: Vec<VolumeSpec>,
    pub labels: BTreeMap<String, String>,
    pub healthcheck: Option<HealthSpec>,
    /// `no`, `always`, `on-failure`, `unless-stopped`.
    pub restart: Option<String>,
    pub depends_on: Vec<String>,
    /// `deploy.resources.limits` (or `mem_limit` / `cpus`). Left out of the serialized form
    /// when absent, so the config hash of services without limits stays what it was.
    #[serde(default, skip_serializing_if = "Limits::is_none")]
    pub limits: Limits,
    /// The other container settings compose files use (user, capabilities, …); left out of
    /// the serialized form when empty, so existing config hashes stay what they were.
    #[serde(default, skip_serializing_if = "ContainerOptions::is_empty")]
    pub options: ContainerOptions,
    /// The stack networks the service joins, the first one at creation; empty: only
    /// `default` (left out of the serialized form then, so config hashes stay stable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
}

/// A service on one of its stack's networks (`<stack>_<network>` on the engine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network: String,
    /// More names the service answers to on that network (its own name always).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// A network of the stack, as the compose file declares it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    /// No route out of the host (`internal: true`).
    #[serde(default)]
    pub internal: bool,
}

/// Container settings beyond image, command, ports and volumes, as compose names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `stop_grace_period`, in seconds (the engine's `StopTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// `host:ip` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Container ports without host ports (`8080/tcp`), as `expose` lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl ContainerOptions {
    pub fn is_empty(&self) -> bool {
        self == &ContainerOptions::default()
    }
}

/// Resource limits of a service's container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// CPUs in billionths (`cpus: 0.5` → 500 000 000), as the engine's `NanoCpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.memory.is_none() && self.nano_cpus.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Host address to bind; `None` binds all addresses.
    pub host_ip: Option<String>,
    /// Host port; `None` lets the engine choose one.
    pub host_port: Option<u16>,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// A named volume (created as `<stack>_<name>`) or an absolute host path (bind mount).
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub bind: bool,
}

/// Durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// Docker's form: `["CMD", …]`, `["CMD-SHELL", "…"]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub start_period_ms: Option<u64>,
}

impl ServiceSpec {
    /// Hash of everything that defines the container except the image, stored as the
    /// `io.shiplog.config-hash` label: equal hash + equal image id means nothing to do.
    pub fn config_hash(&self) -> String {
        let mut hasher = Sha256::new();
        let mut without_image = self.clone();
        without_image.image = String::new();
        hasher.update(serde_json::to_vec(&without_image).expect("spec serializes"));
        hex::encode(hasher.finalize())
    }
}

/// The repository of an image reference, without tag or digest:
/// `registry:5000/team/web:1.2@sha256:…` → `registry:5000/team/web`.
pub fn repository_of(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(repo, _)| repo);
    match image.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_drops_tag_and_digest_but_keeps_a_registry_port() {
        assert_eq!(
            repository_of("127.0.0.1:5000/x/web:v1"),
            "127.0.0.1:5000/x/web"
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/x/web"),
            "127.0.0.1:5000/x/web"
        );
        assert_eq!(repository_of("web@sha256:abc"), "web");
        assert_eq!(repository_of("web:1@sha256:abc"), "web");
        assert_eq!(repository_of("nginx"), "nginx");
    }
}

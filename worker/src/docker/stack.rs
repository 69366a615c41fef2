//! Stack-wide objects: the network, named volumes, listing and removal.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerInspectResponse, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions, RemoveVolumeOptions};

use super::ops::{inspect_name, summary_name};
use super::{DockerClient, DockerError, labels, network_name, stack_network_name};

/// One container of a stack, as `stack_containers` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// The `com.docker.compose.service` label.
    pub service: Option<String>,
    /// The reference the container was created from (e.g. `127.0.0.1:5000/x/web:v1`).
    pub image: String,
    /// The image Id (`sha256:…`) the container runs.
    pub image_id: String,
    /// `created`, `running`, `exited`, …
    pub state: String,
    /// `starting`, `healthy`, `unhealthy`; `None` without a health check.
    pub health: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Published ports: (container port, host ip, host port).
    pub ports: Vec<(u16, String, u16)>,
}

impl ContainerInfo {
    fn from_inspect(container: ContainerInspectResponse) -> Self {
        let state = container.state.clone().unwrap_or_default();
        let config = container.config.clone().unwrap_or_default();
        let labels: BTreeMap<String, String> =
            config.labels.unwrap_or_default().into_iter().collect();
        let mut ports = Vec::new();
        let bindings = container
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.clone())
            .unwrap_or_default();
        for (key, bound) in bindings {
            let Some(container_port) = key.split('/').next().and_then(|p| p.parse().ok()) else {
                continue;
            };
            for binding in bound.unwrap_or_default() {
                let host_port = binding.host_port.as_deref().and_then(|p| p.parse().ok());
                if let Some(host_port) = host_port {
                    ports.push((
                        container_port,
                        binding.host_ip.unwrap_or_default(),
                        host_port,
                    ));
                }
            }
        }
        ports.sort();
        ContainerInfo {
            id: container.id.clone().unwrap_or_default(),
            name: inspect_name(&container),
            service: labels.get(labels::SERVICE).cloned(),
            image: config.image.unwrap_or_default(),
            image_id: container.image.unwrap_or_default(),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            labels,
            ports,
        }
    }
}

impl DockerClient {
    /// Every container of the stack's compose project, in any state, sorted by name.
    pub async fn stack_containers(&self, stack: &str) -> Result<Vec<ContainerInfo>, DockerError> {
        let mut found = Vec::new();
        for summary in self.project_containers(stack, None).await? {
            let id = summary.id.clone().unwrap_or_else(|| summary_name(&summary));
            // Gone between the list and the inspect: skip it.
            if let Some(container) = self.inspect_container_opt(&id).await? {
                found.push(ContainerInfo::from_inspect(container));
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Removes the stack's containers (killing them), its networks and, when `volumes`, its
    /// named volumes. What is already gone is fine; calling it twice is a no-op.
    pub async fn remove_stack(&self, stack: &str, volumes: bool) -> Result<(), DockerError> {
        for container in self.project_containers(stack, None).await? {
            let id = container
                .id
                .clone()
                .unwrap_or_else(|| summary_name(&container));
            self.remove_container(&id).await?;
        }

        // By label, and by exact name for a network created by someone else; by id, so that
        // duplicates (engine 20.10 can hold two networks with one name) go too.
        let project_label = format!("{}={stack}", labels::PROJECT);
        let name = network_name(stack);
        let mut network_ids = Vec::new();
        for filters in [
            HashMap::from([("label".to_owned(), vec![project_label.clone()])]),
            HashMap::from([("name".to_owned(), vec![name.clone()])]),
        ] {
            let options = ListNetworksOptions {
                filters: Some(filters),
            };
            let networks = self
                .call(
                    &format!("list networks of stack {stack}"),
                    self.docker.list_networks(Some(options)),
                )
                .await?;
            for network in networks {
                let ours = network.name.as_deref() == Some(name.as_str())
                    || network
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(labels::PROJECT))
                        .is_some_and(|p| p == stack);
                if let (true, Some(id)) = (ours, network.id)
                    && !network_ids.contains(&id)
                {
                    network_ids.push(id);
                }
            }
        }
        for id in network_ids {
            match self
                .call(
                    &format!("remove network {id}"),
                    self.docker.remove_network(&id),
                )
                .await
            {
                Ok(()) => {}
                Err(err) if err.is_status(404) => {}
                Err(err) => return Err(err),
            }
        }

        if volumes {
            let options = ListVolumesOptions {
                filters: Some(HashMap::from([("label".to_owned(), vec![project_label])])),
            };
            let listed = self
                .call(
                    &format!("list volumes of stack {stack}"),
                    self.docker.list_volumes(Some(options)),
                )
                .await?;
            for volume in listed.volumes.unwrap_or_default() {
                if volume.labels.get(labels::PROJECT).map(String::as_str) != Some(stack) {
                    continue;
                }
                match self
                    .call(
                        &format!("remove volume {}", volume.name),
                        self.docker
                            .remove_volume(&volume.name, None::<RemoveVolumeOptions>),
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(err) if err.is_status(404) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(())
    }

    /// Whether a network of the stack exists. Inspect, never create blindly: engine 20.10
    /// creates a second network with the same name instead of answering 409.
    pub(crate) async fn network_exists(
        &self,
        stack: &str,
        network: &str,
    ) -> Result<bool, DockerError> {
        let name = stack_network_name(stack, network);
        match self
            .call(
                &format!("inspect network {name}"),
                self.docker.inspect_network(&name, None),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.is_status(404) => Ok(false),
            Err(err) => Err(err),
        }
    }

    pub(crate) async fn create_network(
        &self,
        stack: &str,
        network: &str,
        internal: bool,
    ) -> Result<(), DockerError> {
        let name = stack_network_name(stack, network);
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            internal: internal.then_some(true),
            labels: Some(HashMap::from([
                (labels::PROJECT.to_owned(), stack.to_owned()),
                (labels::NETWORK.to_owned(), network.to_owned()),
                (labels::STACK.to_owned(), stack.to_owned()),
            ])),
            ..Default::default()
        };
        match self
            .call(
                &format!("create network {name}"),
                self.docker.create_network(request),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Newer engines refuse a duplicate name: it exists, which is what we want.
            Err(err) if err.is_status(409) => Ok(()),
            Err(err) => Err(err),
        }
    }

    pub(crate) async fn volume_exists(&self, name: &str) -> Result<bool, DockerError> {
        match self
            .call(
                &format!("inspect volume {name}"),
                self.docker.inspect_volume(name),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.is_status(404) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Creates a named volume with compose's labels (creating an existing one is a no-op
    /// for the engine).
    pub(crate) async fn create_volume(
        &self,
        stack: &str,
        volume: &str,
        name: &str,
    ) -> Result<(), DockerError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(HashMap::from([
                (labels::PROJECT.to_owned(), stack.to_owned()),
                (labels::VOLUME.to_owned(), volume.to_owned()),
                (labels::STACK.to_owned(), stack.to_owned()),
            ])),
            ..Default::default()
        };
        match self
            .call(
                &format!("create volume {name}"),
                self.docker.create_volume(request),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.is_status(409) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

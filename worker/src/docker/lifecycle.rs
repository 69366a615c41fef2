//! Stack lifecycle on the engine: stop, start, restart and remove the containers a stack
//! has, without pulling or recreating anything.

use std::time::Instant;

use bollard::query_parameters::RemoveImageOptions;

use super::health::SETTLE;
use super::ops::summary_name;
use super::{DockerClient, DockerError, container_name};

/// What `remove_stack_images` did with each image reference.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageRemoval {
    pub removed: Vec<String>,
    /// Still used by another container (or otherwise refused by the engine), with why.
    pub kept: Vec<(String, String)>,
}

impl DockerClient {
    /// Stops the stack's containers, dependents first (`services` is in start order), then
    /// any other container of the project. Returns how many were running.
    pub async fn stop_stack(&self, stack: &str, services: &[String]) -> Result<usize, DockerError> {
        let mut stopped = 0;
        let mut names: Vec<String> = services
            .iter()
            .rev()
            .map(|s| container_name(stack, s))
            .collect();
        for summary in self.project_containers(stack, None).await? {
            let name = summary_name(&summary);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        for name in names {
            let Some(container) = self.inspect_container_opt(&name).await? else {
                continue;
            };
            if container.state.and_then(|s| s.running).unwrap_or(false) {
                self.stop_container(&name).await?;
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    /// Starts the stack's containers in `services` order, each waited for as a deployment
    /// waits (running, and healthy when it has a health check) before the next, so a
    /// dependency is ready before its dependents start. A missing container is an error:
    /// only a deployment creates containers. Returns how many were not running.
    pub async fn start_stack(
        &self,
        stack: &str,
        services: &[String],
        until: Option<Instant>,
    ) -> Result<usize, DockerError> {
        let mut started = 0;
        for service in services {
            let name = container_name(stack, service);
            let Some(container) = self.inspect_container_opt(&name).await? else {
                return Err(DockerError::ContainerStart {
                    service: service.clone(),
                    message: format!(
                        "container {name} does not exist; redeploy the stack to create it"
                    ),
                });
            };
            if !container.state.and_then(|s| s.running).unwrap_or(false) {
                self.start_container(&name).await.map_err(|e| match e {
                    DockerError::Api { message, .. } => DockerError::ContainerStart {
                        service: service.clone(),
                        message,
                    },
                    other => other,
                })?;
                started += 1;
            }
            self.wait_ready(service, &name, None, SETTLE, until).await?;
        }
        Ok(started)
    }

    /// The image references the stack's containers were created from, deduplicated.
    pub async fn stack_images(&self, stack: &str) -> Result<Vec<String>, DockerError> {
        let mut images: Vec<String> = self
            .stack_containers(stack)
            .await?
            .into_iter()
            .map(|c| c.image)
            .filter(|i| !i.is_empty())
            .collect();
        images.sort();
        images.dedup();
        Ok(images)
    }

    /// Removes image references (not forced): one another container still uses is kept
    /// and reported; one already gone counts as removed.
    pub async fn remove_images(&self, images: &[String]) -> Result<ImageRemoval, DockerError> {
        let mut outcome = ImageRemoval::default();
        for image in images {
            match self
                .call(
                    &format!("remove image {image}"),
                    self.docker
                        .remove_image(image, None::<RemoveImageOptions>, None),
                )
                .await
            {
                Ok(_) => outcome.removed.push(image.clone()),
                Err(err) if err.is_status(404) => outcome.removed.push(image.clone()),
                Err(DockerError::Api {
                    status: 409,
                    message,
                    ..
                }) => outcome.kept.push((image.clone(), message)),
                Err(err) => return Err(err),
            }
        }
        Ok(outcome)
    }
}

impl DockerClient {
    /// Every container on the engine that belongs to a compose project, in any state.
    pub async fn compose_containers(
        &self,
    ) -> Result<Vec<shiplog_events::inventory::ObservedContainer>, DockerError> {
        use std::collections::HashMap;

        use bollard::query_parameters::ListContainersOptions;

        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![super::labels::PROJECT.to_owned()],
            )])),
            ..Default::default()
        };
        let found = self
            .call(
                "list compose containers",
                self.docker.list_containers(Some(options)),
            )
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.clone().unwrap_or_default();
                Some(shiplog_events::inventory::ObservedContainer {
                    project: labels.get(super::labels::PROJECT)?.clone(),
                    name: summary_name(&c),
                    service: labels.get(super::labels::SERVICE).cloned(),
                    image: c.image.clone().unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                })
            })
            .collect())
    }
}

//! Idempotent single steps: 404 means absent, "already in that state" is success.

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};

use super::{DockerClient, DockerError, STOP_GRACE, labels};

impl DockerClient {
    /// Inspects a container by id or name; `None` when there is none.
    pub(crate) async fn inspect_container_opt(
        &self,
        container: &str,
    ) -> Result<Option<ContainerInspectResponse>, DockerError> {
        match self
            .call(
                &format!("inspect container {container}"),
                self.docker.inspect_container(container, None),
            )
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(err) if err.is_status(404) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Containers of a compose project (all states), optionally of one service.
    pub(crate) async fn project_containers(
        &self,
        stack: &str,
        service: Option<&str>,
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut label_filters = vec![format!("{}={stack}", labels::PROJECT)];
        if let Some(service) = service {
            label_filters.push(format!("{}={service}", labels::SERVICE));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), label_filters)])),
            ..Default::default()
        };
        let mut found = self
            .call(
                &format!("list containers of stack {stack}"),
                self.docker.list_containers(Some(options)),
            )
            .await?;
        // The label filter is exact, but stay on the safe side: only what carries the labels.
        found.retain(|c| {
            let labels = c.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
            label(labels::PROJECT) == Some(stack)
                && service.is_none_or(|service| label(labels::SERVICE) == Some(service))
        });
        Ok(found)
    }

    /// Stops a container with its own grace period (`stop_grace_period`, else the engine's
    /// 10 s); stopped or gone already is fine.
    pub(crate) async fn stop_container(&self, container: &str) -> Result<(), DockerError> {
        let options = StopContainerOptions::default();
        match self
            .call_within(
                &format!("stop container {container}"),
                self.call_timeout + STOP_GRACE,
                self.docker.stop_container(container, Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if err.is_status(404) || err.is_status(304) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Removes a container (killing it if it runs) with its anonymous volumes; gone
    /// already is fine, and so is a removal already in progress.
    pub(crate) async fn remove_container(&self, container: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .call(
                &format!("remove container {container}"),
                self.docker.remove_container(container, Some(options)),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if err.is_status(404) => Ok(()),
            Err(err) => Err(err),
        }
    }

    pub(crate) async fn rename_container(
        &self,
        container: &str,
        new_name: &str,
    ) -> Result<(), DockerError> {
        self.call(
            &format!("rename container {container} to {new_name}"),
            self.docker.rename_container(
                container,
                RenameContainerOptions {
                    name: new_name.to_owned(),
                },
            ),
        )
        .await
    }

    /// Starts a container; running already is fine (the engine answers 304).
    pub(crate) async fn start_container(&self, container: &str) -> Result<(), DockerError> {
        match self
            .call(
                &format!("start container {container}"),
                self.docker.start_container(container, None),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if err.is_status(304) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// A container name without the leading `/` the engine puts before it.
pub(crate) fn summary_name(container: &ContainerSummary) -> String {
    container
        .names
        .as_ref()
        .and_then(|names| names.first())
        .map(|name| name.trim_start_matches('/').to_owned())
        .unwrap_or_default()
}

pub(crate) fn inspect_name(container: &ContainerInspectResponse) -> String {
    container
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned()
}

pub(crate) fn label<'a>(container: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    container
        .config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

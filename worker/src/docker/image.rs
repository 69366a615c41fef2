//! Image references and pulls.

use std::time::Duration;

use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;

use super::{DockerClient, DockerError};

/// An image reference split the way the engine's pull call wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `registry[:port]/path/name`, without tag or digest.
    pub repository: String,
    /// The tag (`latest` when none was given) or the digest (`sha256:…`).
    pub tag_or_digest: String,
}

impl ImageReference {
    /// Parses `repo`, `repo:tag`, `repo@sha256:…` or `repo:tag@sha256:…` (the digest wins),
    /// where the repository may start with a registry that has a port
    /// (`127.0.0.1:5000/x/web:v1`).
    pub fn parse(image: &str) -> Result<Self, DockerError> {
        let invalid = |why: &str| DockerError::InvalidSpec(format!("image {image:?}: {why}"));
        let image = image.trim();
        if image.is_empty() {
            return Err(invalid("empty image reference"));
        }
        if image.chars().any(char::is_whitespace) {
            return Err(invalid("contains whitespace"));
        }
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (image, None),
        };
        // A tag can only follow the last path component: `host:5000/web` has no tag.
        let last_component = name.rfind('/').map_or(0, |slash| slash + 1);
        let (repository, tag) = match name[last_component..].rfind(':') {
            Some(colon) => {
                let colon = last_component + colon;
                (&name[..colon], Some(&name[colon + 1..]))
            }
            None => (name, None),
        };
        if repository.is_empty() || repository.ends_with('/') {
            return Err(invalid("no repository name"));
        }
        let tag_or_digest = match (digest, tag) {
            (Some(digest), _) => {
                if !digest.contains(':') || digest.ends_with(':') {
                    return Err(invalid("malformed digest"));
                }
                digest
            }
            (None, Some("")) => return Err(invalid("empty tag")),
            (None, Some(tag)) => tag,
            (None, None) => "latest",
        };
        Ok(ImageReference {
            repository: repository.to_owned(),
            tag_or_digest: tag_or_digest.to_owned(),
        })
    }

    pub fn is_digest(&self) -> bool {
        self.tag_or_digest.contains(':')
    }

    /// The full reference: `repo:tag` or `repo@sha256:…`.
    pub fn reference(&self) -> String {
        if self.is_digest() {
            format!("{}@{}", self.repository, self.tag_or_digest)
        } else {
            format!("{}:{}", self.repository, self.tag_or_digest)
        }
    }
}

/// What a pull left on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The normalized reference that was pulled (`repo:tag` or `repo@digest`); containers
    /// are created from it so that `docker ps` shows it.
    pub reference: String,
    /// The image Id (config digest): what a container's `.Image` is compared with.
    pub id: String,
    /// `repo@sha256:<manifest digest>` entries, one per registry name.
    pub repo_digests: Vec<String>,
}

impl DockerClient {
    /// Pulls `image` (a no-op transfer when the host already has it) and inspects it.
    /// The whole pull, progress stream included, must finish within `deadline`.
    ///
    /// A tag or repository the registry does not know → [`DockerError::ImageNotFound`]
    /// (permanent); a registry that fails or cannot be reached → [`DockerError::PullFailed`]
    /// (transient).
    #[tracing::instrument(skip(self), fields(endpoint = %self.endpoint))]
    pub async fn pull(&self, image: &str, deadline: Duration) -> Result<PulledImage, DockerError> {
        let parsed = ImageReference::parse(image)?;
        let reference = parsed.reference();
        let options = CreateImageOptions {
            from_image: Some(parsed.repository.clone()),
            tag: Some(parsed.tag_or_digest.clone()),
            ..Default::default()
        };
        let operation = format!("pull {reference}");
        let drain = async {
            let mut progress = self.docker.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail {
                            return Err(DockerError::PullFailed {
                                image: reference.clone(),
                                message: detail
                                    .message
                                    .unwrap_or_else(|| format!("error code {:?}", detail.code)),
                            });
                        }
                    }
                    Err(err) => return Err(self.pull_error(&reference, &operation, deadline, err)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(deadline, drain).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(DockerError::Timeout {
                    operation,
                    after: deadline,
                });
            }
        }

        let inspected = self
            .call(
                &format!("inspect image {reference}"),
                self.docker.inspect_image(&reference),
            )
            .await
            .map_err(|err| match err {
                DockerError::Api {
                    status: 404,
                    message,
                    ..
                } => DockerError::ImageNotFound {
                    image: reference.clone(),
                    message: format!("not on the host after the pull: {message}"),
                },
                other => other,
            })?;
        let id = inspected.id.ok_or_else(|| DockerError::Client {
            operation: format!("inspect image {reference}"),
            message: "the engine returned no image Id".to_owned(),
        })?;
        tracing::debug!(%reference, %id, "image pulled");
        Ok(PulledImage {
            reference,
            id,
            repo_digests: inspected.repo_digests.unwrap_or_default(),
        })
    }

    fn pull_error(
        &self,
        reference: &str,
        operation: &str,
        deadline: Duration,
        err: bollard::errors::Error,
    ) -> DockerError {
        match err {
            bollard::errors::Error::DockerStreamError { error } => DockerError::PullFailed {
                image: reference.to_owned(),
                message: error,
            },
            other => match self.map_error(operation, deadline, other) {
                // Unknown repository or tag ("manifest unknown", "repository does not exist
                // or may require 'docker login'").
                DockerError::Api {
                    status: 404,
                    message,
                    ..
                } => DockerError::ImageNotFound {
                    image: reference.to_owned(),
                    message,
                },
                DockerError::Api {
                    status: 400,
                    message,
                    ..
                } => DockerError::InvalidSpec(format!("image {reference}: {message}")),
                // Registry down or failing: the engine answers 500.
                DockerError::Api {
                    status, message, ..
                } => DockerError::PullFailed {
                    image: reference.to_owned(),
                    message: format!("engine answered {status}: {message}"),
                },
                other => other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(image: &str) -> (String, String) {
        let r = ImageReference::parse(image).unwrap();
        (r.repository, r.tag_or_digest)
    }

    #[test]
    fn registry_with_port_and_tag() {
        assert_eq!(
            split("127.0.0.1:5000/shiplog-test/web:v1"),
            ("127.0.0.1:5000/shiplog-test/web".into(), "v1".into())
        );
    }

    #[test]
    fn registry_with_port_without_tag_is_latest() {
        assert_eq!(
            split("127.0.0.1:5000/shiplog-test/web"),
            ("127.0.0.1:5000/shiplog-test/web".into(), "latest".into())
        );
        assert_eq!(split("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            ImageReference::parse("busybox").unwrap().reference(),
            "busybox:latest"
        );
    }

    #[test]
    fn digests() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let r = ImageReference::parse(&format!("127.0.0.1:5000/x/web@{digest}")).unwrap();
        assert_eq!(r.repository, "127.0.0.1:5000/x/web");
        assert_eq!(r.tag_or_digest, digest);
        assert_eq!(r.reference(), format!("127.0.0.1:5000/x/web@{digest}"));
        // A tag next to a digest is ignored, as the engine does.
        let r = ImageReference::parse(&format!("127.0.0.1:5000/x/web:v1@{digest}")).unwrap();
        assert_eq!(r.repository, "127.0.0.1:5000/x/web");
        assert_eq!(r.tag_or_digest, digest);
    }

    #[test]
    fn invalid_references() {
        for bad in ["", "  ", "web:", "x/", "web@sha256", "a b:c", ":v1"] {
            assert!(
                matches!(ImageReference::parse(bad), Err(DockerError::InvalidSpec(_))),
                "{bad:?} should be rejected"
            );
        }
    }
}

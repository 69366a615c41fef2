//! Asks an image's registry which manifest digest a tag points at now (Docker Registry
//! HTTP API v2: `HEAD /v2/<repository>/manifests/<tag>`, `Docker-Content-Digest`), for dry
//! runs. Never fails: an answer it cannot get is [`TargetDigest::Unknown`] with the reason.
//!
//! - References are normalized as docker does: no registry host → Docker Hub
//!   (`registry-1.docker.io`, `library/` for one-component names).
//! - HTTPS, except for loopback registries (`localhost`, 127.0.0.0/8, ::1), which docker
//!   treats as insecure by default: HTTPS with any certificate first, then plain HTTP.
//!   Other insecure registries (the engine's `insecure-registries`) are not known here: for
//!   them the digest is unknown.
//! - A `401` with a `Bearer` challenge gets an anonymous token (Docker Hub's dance); a
//!   registry that wants credentials gives an unknown digest.
//! - Every call is bounded by a short timeout.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use shiplog_events::plan::TargetDigest;
use shiplog_events::spec::StackSpec;

/// What the engine accepts when it pulls: the digest answered is then the one `RepoDigests`
/// records (an index's digest for a multi-platform image, else the manifest's).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json";

const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One image's whole lookup (fallback and token included).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(6);

#[derive(Clone)]
pub struct Registry {
    client: reqwest::Client,
    /// For loopback registries only: their certificates are not checked, as docker does.
    insecure: reqwest::Client,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT)
                .danger_accept_invalid_certs(insecure)
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .expect("the TLS backend initializes")
        };
        Registry {
            client: build(false),
            insecure: build(true),
        }
    }

    /// The target digest of every service of `spec`, asked concurrently.
    pub async fn digests(&self, spec: &StackSpec) -> BTreeMap<String, TargetDigest> {
        let lookups = spec.services.iter().map(|s| async move {
            let digest = match tokio::time::timeout(LOOKUP_TIMEOUT, self.digest(&s.image)).await {
                Ok(digest) => digest,
                Err(_) => TargetDigest::Unknown(format!(
                    "the registry did not answer within {} s",
                    LOOKUP_TIMEOUT.as_secs()
                )),
            };
            (s.name.clone(), digest)
        });
        futures::future::join_all(lookups)
            .await
            .into_iter()
            .collect()
    }

    /// The manifest digest `image` points at now.
    pub async fn digest(&self, image: &str) -> TargetDigest {
        let reference = match Reference::parse(image) {
            Ok(r) => r,
            Err(why) => return TargetDigest::Unknown(why),
        };
        if let Some(digest) = &reference.digest {
            return TargetDigest::Known(digest.clone());
        }
        let mut last = String::new();
        for (scheme, client) in self.endpoints(&reference) {
            match self.head(client, scheme, &reference).await {
                Ok(answer) => return answer,
                // Connection or TLS failure: the next scheme, if any.
                Err(why) => last = why,
            }
        }
        TargetDigest::Unknown(format!(
            "registry {} unreachable: {last}",
            reference.registry
        ))
    }

    fn endpoints(&self, r: &Reference) -> Vec<(&'static str, &reqwest::Client)> {
        if is_loopback(&r.registry) {
            vec![("https", &self.insecure), ("http", &self.client)]
        } else {
            vec![("https", &self.client)]
        }
    }

    /// `Err`: the registry could not be reached on this scheme.
    async fn head(
        &self,
        client: &reqwest::Client,
        scheme: &str,
        r: &Reference,
    ) -> Result<TargetDigest, String> {
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            r.api_host(),
            r.repository,
            r.tag
        );
        let send = |token: Option<&str>| {
            let mut req = client.head(&url).header(ACCEPT, MANIFEST_TYPES);
            if let Some(token) = token {
                req = req.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            req.send()
        };
        let mut response = send(None).await.map_err(|e| describe(&e))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(BearerChallenge::parse);
            let Some(challenge) = challenge else {
                return Ok(needs_credentials());
            };
            let token = match self.anonymous_token(client, &challenge, r).await {
                Ok(token) => token,
                Err(why) => return Ok(TargetDigest::Unknown(why)),
            };
            response = send(Some(&token)).await.map_err(|e| describe(&e))?;
        }
        Ok(match response.status() {
            StatusCode::OK => match response
                .headers()
                .get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok())
            {
                Some(digest) => TargetDigest::Known(digest.to_owned()),
                None => TargetDigest::Unknown(
                    "the registry answered without a Docker-Content-Digest header".into(),
                ),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => needs_credentials(),
            StatusCode::NOT_FOUND => TargetDigest::Unknown(format!(
                "{}:{} is not in the registry: the deployment's pull would fail",
                r.repository, r.tag
            )),
            other => TargetDigest::Unknown(format!("the registry answered {other}")),
        })
    }

    async fn anonymous_token(
        &self,
        client: &reqwest::Client,
        challenge: &BearerChallenge,
        r: &Reference,
    ) -> Result<String, String> {
        let scope = challenge
            .scope
            .clone()
            .unwrap_or_else(|| format!("repository:{}:pull", r.repository));
        let mut query = vec![("scope", scope)];
        if let Some(service) = &challenge.service {
            query.push(("service", service.clone()));
        }
        let response = client
            .get(&challenge.realm)
            .query(&query)
            .send()
            .await
            .map_err(|e| format!("token service unreachable: {}", describe(&e)))?;
        if !response.status().is_success() {
            return Err(format!(
                "the token service answered {}: the registry may need credentials",
                response.status()
            ));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = response
            .json()
            .await
            .map_err(|e| format!("the token service's answer is not a token: {e}"))?;
        token
            .token
            .or(token.access_token)
            .ok_or_else(|| "the token service answered no token".into())
    }
}

fn needs_credentials() -> TargetDigest {
    TargetDigest::Unknown(
        "the registry needs credentials, which the API does not hold (the worker's engine \
         may have them)"
            .into(),
    )
}

/// reqwest's own message is "error sending request": the cause says what happened.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An image reference split as the registry API wants it.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    /// `host[:port]`; `docker.io` for Docker Hub.
    registry: String,
    repository: String,
    tag: String,
    digest: Option<String>,
}

impl Reference {
    fn parse(image: &str) -> Result<Reference, String> {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_owned())),
            None => (image, None),
        };
        let last = name.rfind('/').map_or(0, |slash| slash + 1);
        let (name, tag) = match name[last..].rfind(':') {
            Some(colon) => (&name[..last + colon], &name[last + colon + 1..]),
            None => (name, "latest"),
        };
        // As docker: the first component is a registry if it looks like a host.
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            Some(_) => ("docker.io".to_owned(), name.to_owned()),
            None => ("docker.io".to_owned(), format!("library/{name}")),
        };
        if repository.is_empty() || tag.is_empty() {
            return Err(format!("cannot parse the image reference {image:?}"));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.to_owned(),
            digest,
        })
    }

    fn api_host(&self) -> &str {
        match self.registry.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            other => other,
        }
    }
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<BearerChallenge> {
        let params = header.strip_prefix("Bearer ")?;
        let mut fields = BTreeMap::new();
        let mut rest = params.trim();
        while let Some((key, after)) = rest.split_once('=') {
            let after = after.trim_start();
            let (value, next) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => after.split_at(after.find(',').unwrap_or(after.len())),
            };
            fields.insert(key.trim().to_ascii_lowercase(), value.to_owned());
            rest = next.trim_start().trim_start_matches(',').trim_start();
        }
        Some(BearerChallenge {
            realm: fields.remove("realm")?,
            service: fields.remove("service"),
            scope: fields.remove("scope"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(image: &str) -> (String, String, String, Option<String>) {
        let r = Reference::parse(image).unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    #[test]
    fn references_are_normalized_as_docker_does() {
        assert_eq!(
            parsed("127.0.0.1:5000/shiplog-test/web:v1"),
            (
                "127.0.0.1:5000".into(),
                "shiplog-test/web".into(),
                "v1".into(),
                None
            )
        );
        assert_eq!(
            parsed("nginx"),
            (
                "docker.io".into(),
                "library/nginx".into(),
                "latest".into(),
                None
            )
        );
        assert_eq!(
            parsed("grafana/grafana:11"),
            (
                "docker.io".into(),
                "grafana/grafana".into(),
                "11".into(),
                None
            )
        );
        assert_eq!(
            parsed("localhost/web@sha256:ab"),
            (
                "localhost".into(),
                "web".into(),
                "latest".into(),
                Some("sha256:ab".into())
            )
        );
        assert_eq!(
            Reference::parse("nginx").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn loopback_registries_are_the_insecure_ones() {
        for host in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["docker.io", "10.0.0.1:5000", "registry.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn docker_hub_challenges_are_parsed() {
        let c = BearerChallenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/nginx:pull"));
        assert_eq!(BearerChallenge::parse("Basic realm=\"x\""), None);
    }

    #[tokio::test]
    async fn a_pinned_digest_needs_no_registry_and_a_closed_port_is_unknown() {
        let registry = Registry::new();
        assert_eq!(
            registry.digest("127.0.0.1:1/x/web@sha256:ab").await,
            TargetDigest::Known("sha256:ab".into())
        );
        let TargetDigest::Unknown(why) = registry.digest("127.0.0.1:1/x/web:v1").await else {
            panic!("a closed port gives no digest")
        };
        assert!(why.contains("unreachable"), "{why}");
    }
}

//! How a worker reaches an environment's Docker engine: the endpoint URL, and for TLS or
//! SSH the paths of the credential files **on the worker's host**. Like Docker's own
//! `DOCKER_CERT_PATH`, only paths are recorded: no private key ever enters the log or a
//! response, and the worker reads the files when it connects.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The three files of a TLS client, as Docker names them in a cert directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The CA that signed the engine's certificate.
    pub ca_file: String,
    /// The client certificate the engine checks.
    pub cert_file: String,
    /// The client certificate's private key.
    pub key_file: String,
}

/// How the system `ssh` client authenticates to an `ssh://` engine. Both optional: without
/// them ssh uses the worker user's own `~/.ssh` identity and known_hosts. Host keys are
/// always checked strictly (an unknown or changed host key is refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SshOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<String>,
}

/// Everything a worker needs to connect to one environment's engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub url: String,
    pub tls: Option<TlsFiles>,
    pub ssh: Option<SshOptions>,
}

impl Endpoint {
    pub fn plain(url: &str) -> Endpoint {
        Endpoint {
            url: url.to_owned(),
            tls: None,
            ssh: None,
        }
    }
}

/// The `tls` field of a registration: a cert directory holding `ca.pem`, `cert.pem` and
/// `key.pem`, or the three files one by one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRequest {
    pub cert_path: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// The `ssh` field of a registration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshRequest {
    pub identity_file: Option<String>,
    pub known_hosts_file: Option<String>,
}

/// Where `ssh` should go: `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshTarget {
    pub fn parse(url: &str) -> std::result::Result<SshTarget, String> {
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| "expected ssh://[user@]host[:port]".to_owned())?;
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "unclosed '[' in the host".to_owned())?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').unwrap_or("x"))),
            }
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("invalid port '{p}'"))
            })
            .transpose()?;
        // Only characters that ssh cannot take as options or a second argument.
        let plain = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
        };
        if !plain(host) {
            return Err(format!("invalid host '{host}'"));
        }
        if let Some(user) = user
            && (!plain(user) || user.contains(':'))
        {
            return Err(format!("invalid user '{user}'"));
        }
        Ok(SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        })
    }
}

/// Checks the endpoint's shape and resolves the TLS and SSH settings into what the event
/// records. Errors name the field.
pub fn decide(url: &str, tls: Option<&TlsRequest>, ssh: Option<&SshRequest>) -> Result<Endpoint> {
    let invalid = |field: &str, why: &str| Err(Error::Invalid(format!("invalid {field}: {why}")));
    if url.len() > 500 {
        return invalid("dockerEndpoint", "longer than 500 characters");
    }
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "unix" if url["unix://".len()..].starts_with('/') => {}
        "tcp" | "http" | "https" if url.len() > scheme.len() + 3 => {}
        "ssh" => {
            if let Err(why) = SshTarget::parse(url) {
                return invalid("dockerEndpoint", &format!("'{url}': {why}"));
            }
        }
        _ => {
            return invalid(
                "dockerEndpoint",
                &format!(
                    "'{url}': expected unix:///path, tcp://host:port (optionally with tls) \
                     or ssh://[user@]host[:port]"
                ),
            );
        }
    }
    if scheme == "https" && tls.is_none() {
        return invalid(
            "tls",
            "an https:// endpoint needs tls (a certPath or caFile, certFile and keyFile)",
        );
    }
    let tls = match tls {
        None => None,
        Some(_) if !matches!(scheme, "tcp" | "https") => {
            return invalid("tls", "only tcp:// (or https://) endpoints take tls");
        }
        Some(t) => Some(resolve_tls(t)?),
    };
    let ssh = match ssh {
        None => None,
        Some(_) if scheme != "ssh" => return invalid("ssh", "only ssh:// endpoints take ssh"),
        Some(s) => {
            for (field, path) in [
                ("ssh.identityFile", &s.identity_file),
                ("ssh.knownHostsFile", &s.known_hosts_file),
            ] {
                if let Some(path) = path {
                    check_path(field, path)?;
                }
            }
            Some(SshOptions {
                identity_file: s.identity_file.clone(),
                known_hosts_file: s.known_hosts_file.clone(),
            })
        }
    };
    Ok(Endpoint {
        url: url.to_owned(),
        tls,
        ssh,
    })
}

fn resolve_tls(t: &TlsRequest) -> Result<TlsFiles> {
    let files = [&t.ca_file, &t.cert_file, &t.key_file];
    let files = match &t.cert_path {
        Some(dir) => {
            if files.iter().any(|f| f.is_some()) {
                return Err(Error::Invalid(
                    "invalid tls: give certPath or caFile, certFile and keyFile, not both".into(),
                ));
            }
            check_path("tls.certPath", dir)?;
            let dir = dir.trim_end_matches('/');
            TlsFiles {
                ca_file: format!("{dir}/ca.pem"),
                cert_file: format!("{dir}/cert.pem"),
                key_file: format!("{dir}/key.pem"),
            }
        }
        None => {
            let get = |field: &str, value: &Option<String>| match value {
                Some(path) => check_path(field, path).map(|_| path.clone()),
                None => Err(Error::Invalid(format!(
                    "invalid tls: {field} is missing (give tls.certPath, or caFile, certFile \
                     and keyFile)"
                ))),
            };
            TlsFiles {
                ca_file: get("tls.caFile", &t.ca_file)?,
                cert_file: get("tls.certFile", &t.cert_file)?,
                key_file: get("tls.keyFile", &t.key_file)?,
            }
        }
    };
    Ok(files)
}

/// Paths on the worker's host: absolute (a relative one would depend on the worker's
/// working directory), printable, bounded.
fn check_path(field: &str, path: &str) -> Result<()> {
    if path.len() > 500 || path.chars().any(char::is_control) || !Path::new(path).is_absolute() {
        return Err(Error::Invalid(format!(
            "invalid {field} '{}': expected an absolute path on the worker's host",
            path.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_dir(dir: &str) -> TlsRequest {
        TlsRequest {
            cert_path: Some(dir.into()),
            ..Default::default()
        }
    }

    #[test]
    fn plain_endpoints_need_no_settings() {
        for ok in [
            "unix:///var/run/docker.sock",
            "tcp://10.0.0.2:2375",
            "http://h:2375",
        ] {
            assert_eq!(decide(ok, None, None).unwrap(), Endpoint::plain(ok));
        }
        for bad in [
            "ftp://x",
            "unix://",
            "unix://relative",
            "tcp://",
            "",
            "ssh://",
        ] {
            assert!(decide(bad, None, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cert_directory_resolves_to_dockers_three_file_names() {
        let e = decide("tcp://h:2376", Some(&tls_dir("/etc/shiplog/certs/")), None).unwrap();
        assert_eq!(
            e.tls.unwrap(),
            TlsFiles {
                ca_file: "/etc/shiplog/certs/ca.pem".into(),
                cert_file: "/etc/shiplog/certs/cert.pem".into(),
                key_file: "/etc/shiplog/certs/key.pem".into(),
            }
        );
    }

    #[test]
    fn tls_settings_are_checked_and_name_the_field() {
        let msg = |r: Result<Endpoint>| match r {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert!(msg(decide("tcp://h:1", Some(&tls_dir("certs")), None)).contains("tls.certPath"));
        assert!(msg(decide("unix:///s", Some(&tls_dir("/c")), None)).contains("tls"));
        assert!(msg(decide("https://h:1", None, None)).contains("tls"));
        let partial = TlsRequest {
            ca_file: Some("/c/ca.pem".into()),
            cert_file: Some("/c/cert.pem".into()),
            ..Default::default()
        };
        assert!(msg(decide("tcp://h:1", Some(&partial), None)).contains("tls.keyFile"));
        let both = TlsRequest {
            key_file: Some("/c/key.pem".into()),
            ..tls_dir("/c")
        };
        assert!(msg(decide("tcp://h:1", Some(&both), None)).contains("not both"));
    }

    #[test]
    fn ssh_targets_parse_user_host_and_port() {
        let t = SshTarget::parse("ssh://deploy@10.0.0.3:2222").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host.as_str(), t.port),
            (Some("deploy"), "10.0.0.3", Some(2222))
        );
        let t = SshTarget::parse("ssh://[::1]:22").unwrap();
        assert_eq!((t.user, t.host.as_str(), t.port), (None, "::1", Some(22)));
        for bad in [
            "ssh://h:0",
            "ssh://h:x",
            "ssh://-oProxyCommand=x",
            "ssh://a b@h",
            "ssh://h/path",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_settings_only_on_ssh_endpoints_with_absolute_paths() {
        let ssh = SshRequest {
            identity_file: Some("/root/.ssh/id".into()),
            known_hosts_file: None,
        };
        assert!(decide("ssh://u@h", None, Some(&ssh)).is_ok());
        assert!(decide("tcp://h:1", None, Some(&ssh)).is_err());
        let relative = SshRequest {
            identity_file: Some("id".into()),
            known_hosts_file: None,
        };
        assert!(decide("ssh://u@h", None, Some(&relative)).is_err());
    }
}

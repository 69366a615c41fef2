//! Opens a bollard client for an environment's endpoint: the local socket, plain TCP,
//! TCP with TLS client certificates (Docker's `ca.pem`/`cert.pem`/`key.pem`), or SSH.
//! Also tells TLS and SSH failures apart from a plain unreachable engine, by the error's
//! type in the source chain (never by its text).

use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use shiplog_events::endpoint::{Endpoint, TlsFiles};

use super::DockerError;
use super::error::chain;
use super::ssh::{self, SshFailure};

/// A client for `endpoint`; nothing is sent yet.
pub(crate) fn open(
    endpoint: &Endpoint,
    client_timeout: u64,
    connect_timeout: Duration,
) -> Result<Docker, DockerError> {
    let url = endpoint.url.as_str();
    let version = bollard::API_DEFAULT_VERSION;
    let invalid = |message: &str| DockerError::InvalidEndpoint {
        endpoint: url.to_owned(),
        message: message.to_owned(),
    };
    if let Some(tls) = &endpoint.tls {
        if !(url.starts_with("tcp://") || url.starts_with("https://")) {
            return Err(invalid("TLS settings need a tcp:// endpoint"));
        }
        check_tls_files(url, tls)?;
        return Docker::connect_with_ssl(
            url,
            Path::new(&tls.key_file),
            Path::new(&tls.cert_file),
            Path::new(&tls.ca_file),
            client_timeout,
            version,
        )
        .map_err(|e| DockerError::Tls {
            endpoint: url.to_owned(),
            message: chain(&e),
        });
    }
    let connected = if url.starts_with("unix://") || url.starts_with('/') {
        Docker::connect_with_unix(url, client_timeout, version)
    } else if url.starts_with("tcp://") || url.starts_with("http://") {
        Docker::connect_with_http(url, client_timeout, version)
    } else if url.starts_with("ssh://") {
        let options = endpoint.ssh.clone().unwrap_or_default();
        return ssh::connect(url, &options, client_timeout, connect_timeout).map_err(|message| {
            DockerError::InvalidEndpoint {
                endpoint: url.to_owned(),
                message,
            }
        });
    } else if url.starts_with("https://") {
        return Err(invalid(
            "https:// needs TLS settings (ca, cert and key files)",
        ));
    } else {
        return Err(invalid(
            "expected unix:///path, tcp://host:port (optionally with TLS) or \
             ssh://[user@]host[:port]",
        ));
    };
    connected.map_err(|err| DockerError::Unreachable {
        endpoint: url.to_owned(),
        message: chain(&err),
    })
}

/// bollard reads the client key and certificate only during the handshake and, when it
/// cannot, silently sends none: check them first so the operator reads which file is wrong.
fn check_tls_files(url: &str, tls: &TlsFiles) -> Result<(), DockerError> {
    for (what, path) in [
        ("CA certificate", &tls.ca_file),
        ("client certificate", &tls.cert_file),
        ("client key", &tls.key_file),
    ] {
        if let Err(e) = std::fs::File::open(path) {
            return Err(DockerError::Tls {
                endpoint: url.to_owned(),
                message: format!("cannot read the {what} {path} on this worker: {e}"),
            });
        }
    }
    Ok(())
}

/// What a transport failure was: TLS (a certificate refused on either side), SSH (ssh gave
/// up: key refused, unknown host key, …), or neither.
pub(crate) enum Cause {
    Tls,
    Ssh,
    Other,
}

pub(crate) fn cause(err: &(dyn std::error::Error + 'static)) -> Cause {
    if err.is::<rustls::Error>() {
        return Cause::Tls;
    }
    if err.is::<SshFailure>() {
        return Cause::Ssh;
    }
    // `io::Error::source` skips the error it wraps (and hyper-rustls wraps rustls's
    // io::Error in another one): look inside.
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let found @ (Cause::Tls | Cause::Ssh) = cause(inner) {
            return found;
        }
    }
    match err.source() {
        Some(source) => cause(source),
        None => Cause::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_wrapped_twice_in_io_errors_is_tls() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        let wrapped =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, alert));
        assert!(matches!(cause(&wrapped), Cause::Tls));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(cause(&refused), Cause::Other));
    }
}

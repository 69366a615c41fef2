//! `ssh://` endpoints the way the docker CLI does them: every HTTP connection is a
//! `ssh … docker system dial-stdio` process on the system ssh client, its stdin/stdout
//! carrying the engine's API.
//!
//! Why not bollard's own `ssh` feature (0.21): it goes through the `openssh` crate with
//! that crate's defaults: `StrictHostKeyChecking=accept-new` (an unknown host is trusted
//! silently), no known_hosts file of our choosing, and a `user@host:port` authority is
//! handed to ssh as a host name (no custom port). Here host keys are checked strictly,
//! the identity and known_hosts files are the operator's, and ssh's own words (`Permission
//! denied (publickey)`, `Host key verification failed`) become the error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use shiplog_events::endpoint::{SshOptions, SshTarget};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// What ssh printed when it ended before the engine answered (auth refused, host key
/// unknown, connection refused, …). Found in an error's source chain by type.
#[derive(Debug, thiserror::Error)]
#[error("ssh to {destination} failed: {stderr}")]
pub struct SshFailure {
    pub destination: String,
    pub stderr: String,
}

/// A bollard client whose every connection is an ssh process.
pub fn connect(
    url: &str,
    options: &SshOptions,
    client_timeout: u64,
    connect_timeout: Duration,
) -> Result<Docker, String> {
    let target = SshTarget::parse(url)?;
    let connector = SshConnector {
        args: Arc::new(ssh_args(&target, options, connect_timeout)),
        destination: Arc::new(url.to_owned()),
    };
    let client = Arc::new(
        Client::builder(TokioExecutor::new())
            // An idle connection is a live ssh process: do not keep it long.
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
    );
    let transport = move |req: BollardRequest| {
        let client = Arc::clone(&client);
        async move {
            client
                .request(req)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    // The host part only shapes request URIs; the connector knows where to go.
    Docker::connect_with_custom_transport(
        transport,
        Some("http://docker.ssh"),
        client_timeout,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| e.to_string())
}

fn ssh_args(target: &SshTarget, options: &SshOptions, connect_timeout: Duration) -> Vec<String> {
    let mut args: Vec<String> = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ServerAliveInterval=15",
    ]
    .map(String::from)
    .into();
    args.push("-o".into());
    args.push(format!(
        "ConnectTimeout={}",
        connect_timeout.as_secs().max(1)
    ));
    if let Some(file) = &options.known_hosts_file {
        args.push("-o".into());
        args.push(format!("UserKnownHostsFile={file}"));
    }
    if let Some(file) = &options.identity_file {
        args.extend(["-o".into(), "IdentitiesOnly=yes".into(), "-i".into()]);
        args.push(file.clone());
    }
    if let Some(port) = target.port {
        args.push("-p".into());
        args.push(port.to_string());
    }
    if let Some(user) = &target.user {
        args.push("-l".into());
        args.push(user.clone());
    }
    args.push("--".into());
    args.push(target.host.clone());
    args.extend(["docker", "system", "dial-stdio"].map(String::from));
    args
}

#[derive(Clone)]
struct SshConnector {
    args: Arc<Vec<String>>,
    destination: Arc<String>,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = SshStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<SshStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let (args, destination) = (self.args.clone(), self.destination.clone());
        Box::pin(async move {
            let mut child = Command::new("ssh")
                .args(args.iter())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot start ssh: {e}")))?;
            let (Some(stdin), Some(stdout), Some(mut stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err(io::Error::other("ssh started without its pipes"));
            };
            let stderr = tokio::spawn(async move {
                let mut text = String::new();
                let _ = (&mut stderr).take(8 * 1024).read_to_string(&mut text).await;
                text.trim().to_owned()
            });
            Ok(SshStream(TokioIo::new(SshIo {
                stdout,
                stdin,
                stderr: Some(stderr),
                received: false,
                destination: destination.to_string(),
                _child: child,
            })))
        })
    }
}

/// One connection: the ssh process's stdout and stdin.
struct SshIo {
    stdout: ChildStdout,
    stdin: ChildStdin,
    stderr: Option<JoinHandle<String>>,
    received: bool,
    destination: String,
    /// Killed when the connection is dropped.
    _child: Child,
}

impl AsyncRead for SshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stdout).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.received = true;
        }
        if this.received || buf.remaining() == 0 || buf.filled().len() > before {
            return Poll::Ready(Ok(()));
        }
        // End of output before the engine said a word: ssh gave up; its stderr says why.
        if let Some(task) = this.stderr.as_mut() {
            let stderr = ready!(Pin::new(task).poll(cx)).unwrap_or_default();
            this.stderr = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                SshFailure {
                    destination: this.destination.clone(),
                    stderr: if stderr.is_empty() {
                        "ssh closed the connection".into()
                    } else {
                        stderr
                    },
                },
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SshIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stdin).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_shutdown(cx)
    }
}

/// `hyper`'s view of the connection (a local type, so it can be a `Connection`).
struct SshStream(TokioIo<SshIo>);

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_checked_strictly_and_options_come_before_the_host() {
        let target = SshTarget::parse("ssh://deploy@10.0.0.3:2222").unwrap();
        let options = SshOptions {
            identity_file: Some("/keys/id".into()),
            known_hosts_file: Some("/keys/known_hosts".into()),
        };
        let args = ssh_args(&target, &options, Duration::from_secs(5)).join(" ");
        assert!(args.contains("StrictHostKeyChecking=yes"), "{args}");
        assert!(
            args.contains("UserKnownHostsFile=/keys/known_hosts"),
            "{args}"
        );
        assert!(args.contains("-i /keys/id"), "{args}");
        assert!(
            args.ends_with("-p 2222 -l deploy -- 10.0.0.3 docker system dial-stdio"),
            "{args}"
        );
    }
}

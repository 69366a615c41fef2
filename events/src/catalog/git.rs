//! Git catalog sources, driven through the `git` CLI (no shell, a timeout on every call,
//! never a prompt). Each source keeps a bare cache repository; a sync fetches the ref into
//! it with `--force` (so a force-push is followed), resolves the commit, checks the tree at
//! `path` out into a temporary directory and reads it like a folder source.
//!
//! Credentials never reach a command line: https passwords are answered by a `GIT_ASKPASS`
//! script that reads a 0600 file, ssh keys are 0600 files named in `GIT_SSH_COMMAND`; both
//! live in a 0700 temporary directory removed when the call ends.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use super::directory::{DirectoryScan, read_directory};

/// Transports a source may use; `ext::` and friends could run commands.
const ALLOWED_PROTOCOLS: &str = "file:https:http:ssh:git";

#[derive(Debug, Clone)]
pub struct GitSettings {
    /// The `git` program.
    pub program: PathBuf,
    /// Where per-source cache repositories live (created on demand).
    pub cache_dir: PathBuf,
    /// Longest one git call may take.
    pub timeout: Duration,
}

impl Default for GitSettings {
    fn default() -> Self {
        GitSettings {
            program: "git".into(),
            cache_dir: std::env::temp_dir().join("shiplog-git-cache"),
            timeout: Duration::from_secs(120),
        }
    }
}

/// Where a git source reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLocation {
    pub url: String,
    /// A branch or tag name.
    pub reference: String,
    /// A folder inside the repository; `None`: the whole tree.
    pub path: Option<String>,
}

/// Credentials in clear, only in memory while a sync runs. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub enum GitCredentials {
    Https {
        username: String,
        password: String,
    },
    Ssh {
        private_key: String,
        /// One `known_hosts` line for the server; `None`: trust on first use.
        known_hosts: Option<String>,
    },
}

impl std::fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitCredentials::Https { username, .. } => f
                .debug_struct("Https")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            GitCredentials::Ssh { known_hosts, .. } => f
                .debug_struct("Ssh")
                .field("private_key", &"<redacted>")
                .field("known_hosts", known_hosts)
                .finish(),
        }
    }
}

impl GitCredentials {
    fn secret(&self) -> &str {
        match self {
            GitCredentials::Https { password, .. } => password,
            GitCredentials::Ssh { private_key, .. } => private_key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Git refused: unreachable repository, unknown ref, bad credentials… The message is
    /// git's own, with credentials removed.
    #[error("{0}")]
    Git(String),
    #[error("git did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot run git: {0}")]
    Io(String),
    #[error("{0}")]
    Catalog(String),
}

/// What a sync read: the commit and the folder's stack versions.
#[derive(Debug)]
pub struct GitScan {
    pub commit: String,
    pub scan: DirectoryScan,
}

/// Checks what can be checked without the network, with a message naming the field.
pub fn validate(location: &GitLocation) -> Result<(), String> {
    let url = &location.url;
    let known_scheme = ["https://", "http://", "ssh://", "file://", "git://"]
        .iter()
        .any(|s| url.starts_with(s));
    // `[user@]host:path`; `transport::address` (e.g. `ext::`) is not one.
    let scp_like = url.split_once(':').is_some_and(|(host, rest)| {
        !host.is_empty()
            && !rest.starts_with(':')
            && !rest.starts_with("//")
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
            && !host.starts_with('-')
    }) && !url.chars().any(char::is_whitespace);
    if url.is_empty() || url.len() > 2048 || url.chars().any(char::is_control) {
        return Err("url must be a non-empty git URL".into());
    }
    if !(known_scheme || scp_like || url.starts_with('/')) {
        return Err(format!(
            "url '{}' is not a git URL: use https://, ssh://, file://, git@host:path or an absolute path",
            redact_url(url)
        ));
    }
    if userinfo_password(url) {
        return Err(
            "url must not carry a password: pass it in \"credentials\" so it is stored sealed"
                .into(),
        );
    }
    let r = &location.reference;
    let bad_ref = r.is_empty()
        || r.len() > 255
        || r.starts_with('-')
        || r.starts_with('/')
        || r.ends_with('/')
        || r.ends_with('.')
        || r.ends_with(".lock")
        || r.contains("..")
        || r.contains("@{")
        || r.contains("//")
        || r.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad_ref {
        return Err(format!("ref '{r}' is not a valid branch or tag name"));
    }
    if let Some(path) = &location.path {
        let bad = path.starts_with('/')
            || path.chars().any(char::is_control)
            || path.split('/').any(|c| c == ".." || c == ".git");
        if bad {
            return Err(format!(
                "path '{path}' must be a folder inside the repository (relative, no '..')"
            ));
        }
    }
    Ok(())
}

fn userinfo_password(url: &str) -> bool {
    userinfo(url).is_some_and(|(start, end)| url[start..end].contains(':'))
}

/// The byte range of `user[:password]` in `scheme://user[:password]@host/…`.
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let at = url[start..authority_end].rfind('@')? + start;
    Some((start, at))
}

/// The URL with any `user:password@` reduced to `user@`, for messages and the projection.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some((start, end)) => {
            let user = url[start..end].split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..start], &url[end..])
        }
        None => url.to_owned(),
    }
}

/// One lock per cache repository: two syncs of one source in this process take turns.
fn cache_lock(path: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    locks.entry(path.to_owned()).or_default().clone()
}

/// Fetches `location` into the source's cache and reads the folder at its commit.
pub async fn sync(
    settings: &GitSettings,
    source_id: &str,
    location: &GitLocation,
    credentials: Option<&GitCredentials>,
) -> Result<GitScan, GitError> {
    validate(location).map_err(GitError::Catalog)?;
    let cache = settings.cache_dir.join(format!("{source_id}.git"));
    let lock = cache_lock(&cache);
    let _held = lock.lock().await;
    let git = Git {
        settings,
        credentials,
        url: &location.url,
    };
    if !cache.join("HEAD").exists() {
        std::fs::create_dir_all(&settings.cache_dir).map_err(|e| {
            GitError::Io(format!(
                "cannot create git cache directory '{}': {e}",
                settings.cache_dir.display()
            ))
        })?;
        git.run(None, &["init", "--bare", "--quiet", path_arg(&cache)?])
            .await?;
    }
    let refspec = format!("+{}:refs/shiplog/fetched", location.reference);
    git.run(
        Some(&cache),
        &[
            "fetch",
            "--force",
            "--no-tags",
            "--quiet",
            "--",
            &location.url,
            &refspec,
        ],
    )
    .await?;
    let commit = git
        .run(
            Some(&cache),
            &["rev-parse", "--verify", "refs/shiplog/fetched^{commit}"],
        )
        .await?
        .trim()
        .to_owned();
    let scan = checkout_and_read(&git, &cache, &commit, location.path.as_deref()).await?;
    Ok(GitScan { commit, scan })
}

async fn checkout_and_read(
    git: &Git<'_>,
    cache: &Path,
    commit: &str,
    path: Option<&str>,
) -> Result<DirectoryScan, GitError> {
    let path = path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
    if let Some(path) = path {
        let kind = git
            .run(
                Some(cache),
                &["cat-file", "-t", &format!("{commit}:{path}")],
            )
            .await
            .map_err(|_| {
                GitError::Catalog(format!("path '{path}' does not exist at commit {commit}"))
            })?;
        if kind.trim() != "tree" {
            return Err(GitError::Catalog(format!(
                "path '{path}' is not a folder at commit {commit}"
            )));
        }
    }
    let temp = tempfile::Builder::new()
        .prefix("shiplog-git-tree-")
        .tempdir()
        .map_err(|e| GitError::Io(format!("cannot create a temporary directory: {e}")))?;
    let tree = temp.path().join("tree");
    std::fs::create_dir(&tree).map_err(|e| GitError::Io(e.to_string()))?;
    let work_tree = format!("--work-tree={}", path_arg(&tree)?);
    let pathspec = path.unwrap_or(".");
    // A private index keeps the cache repository untouched by checkouts.
    let index = temp.path().join("index");
    git.run_env(
        Some(cache),
        &[
            &work_tree, "checkout", "--quiet", "-f", commit, "--", pathspec,
        ],
        &[("GIT_INDEX_FILE", index.as_os_str())],
    )
    .await?;
    let root = match path {
        Some(p) => tree.join(p),
        None => tree,
    };
    read_directory(&root).map_err(|e| GitError::Catalog(e.to_string()))
}

fn path_arg(path: &Path) -> Result<&str, GitError> {
    path.to_str()
        .ok_or_else(|| GitError::Io(format!("path '{}' is not UTF-8", path.display())))
}

struct Git<'a> {
    settings: &'a GitSettings,
    credentials: Option<&'a GitCredentials>,
    url: &'a str,
}

impl Git<'_> {
    async fn run(&self, repo: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
        self.run_env(repo, args, &[]).await
    }

    async fn run_env(
        &self,
        repo: Option<&Path>,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<String, GitError> {
        let helper = match self.credentials {
            Some(c) => Some(CredentialFiles::write(c).map_err(|e| {
                GitError::Io(format!("cannot write temporary credential files: {e}"))
            })?),
            None => None,
        };
        let mut cmd = tokio::process::Command::new(&self.settings.program);
        if let Some(repo) = repo {
            cmd.arg("--git-dir").arg(repo);
        }
        // No configured helper may store or offer credentials, no hook may run.
        cmd.args(["-c", "credential.helper=", "-c", "core.hooksPath=/dev/null"])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
            .env("LC_ALL", "C")
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(files) = &helper {
            files.configure(&mut cmd);
        }
        let output = tokio::time::timeout(self.settings.timeout, cmd.output())
            .await
            .map_err(|_| GitError::Timeout(self.settings.timeout))?
            .map_err(|e| {
                GitError::Io(format!(
                    "'{}': {e}",
                    self.settings.program.to_string_lossy()
                ))
            })?;
        drop(helper);
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(GitError::Git(self.clean(&stderr, args.first().copied())))
    }

    /// Git's complaint, credentials and the URL's userinfo removed, one line per line.
    fn clean(&self, stderr: &str, command: Option<&str>) -> String {
        let mut text = stderr.replace(self.url, &redact_url(self.url));
        if let Some(c) = self.credentials {
            for line in c.secret().lines().filter(|l| l.trim().len() >= 4) {
                text = text.replace(line.trim(), "<redacted>");
            }
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let reason = if lines.is_empty() {
            "no message".to_owned()
        } else {
            lines.join("; ")
        };
        format!("git {} failed: {reason}", command.unwrap_or(""))
    }
}

/// The 0700 directory with what git needs to authenticate; removed on drop.
struct CredentialFiles {
    dir: tempfile::TempDir,
    kind: CredentialKind,
}

enum CredentialKind {
    Askpass,
    Ssh { known_hosts: bool },
}

impl CredentialFiles {
    fn write(credentials: &GitCredentials) -> std::io::Result<CredentialFiles> {
        let dir = tempfile::Builder::new()
            .prefix("shiplog-git-cred-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let private = |name: &str, content: &str, mode: u32| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.path().join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)?;
            file.write_all(content.as_bytes())?;
            Ok(())
        };
        let kind = match credentials {
            GitCredentials::Https { username, password } => {
                private("username", username, 0o600)?;
                private("password", password, 0o600)?;
                // Git asks "Username for …" then "Password for …"; the answer is the file.
                let d = shell_quote(&dir.path().to_string_lossy());
                let script = format!(
                    "#!/bin/sh\ncase \"$1\" in\n  Username*) cat {d}/username ;;\n  *) cat {d}/password ;;\nesac\n"
                );
                private("askpass", &script, 0o700)?;
                CredentialKind::Askpass
            }
            GitCredentials::Ssh {
                private_key,
                known_hosts,
            } => {
                let mut key = private_key.trim_end().to_owned();
                key.push('\n');
                private("id", &key, 0o600)?;
                if let Some(line) = known_hosts {
                    private("known_hosts", &format!("{}\n", line.trim()), 0o600)?;
                }
                CredentialKind::Ssh {
                    known_hosts: known_hosts.is_some(),
                }
            }
        };
        Ok(CredentialFiles { dir, kind })
    }

    fn configure(&self, cmd: &mut tokio::process::Command) {
        let dir = self.dir.path();
        match self.kind {
            CredentialKind::Askpass => {
                cmd.env("GIT_ASKPASS", dir.join("askpass"));
            }
            CredentialKind::Ssh { known_hosts } => {
                cmd.env("GIT_SSH_COMMAND", ssh_command(dir, known_hosts));
            }
        }
    }
}

/// Git runs `GIT_SSH_COMMAND` through the shell: every path in it is quoted.
fn ssh_command(dir: &Path, known_hosts: bool) -> String {
    let key = shell_quote(&dir.join("id").to_string_lossy());
    let hosts = if known_hosts {
        format!(
            "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
            shell_quote(&dir.join("known_hosts").to_string_lossy())
        )
    } else {
        "-o StrictHostKeyChecking=accept-new".to_owned()
    };
    format!("ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes {hosts}")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(url: &str, reference: &str, path: Option<&str>) -> GitLocation {
        GitLocation {
            url: url.into(),
            reference: reference.into(),
            path: path.map(Into::into),
        }
    }

    #[test]
    fn urls_refs_and_paths_are_checked_naming_the_field() {
        for ok in [
            loc("https://example.com/a.git", "main", None),
            loc("file:///srv/a.git", "v1.2.0", Some("stacks/prod")),
            loc("git@github.com:org/repo.git", "release/2026", None),
            loc("/srv/repos/a.git", "main", None),
        ] {
            assert_eq!(validate(&ok), Ok(()), "{ok:?}");
        }
        let err = |l: GitLocation| validate(&l).unwrap_err();
        assert!(err(loc("ext::sh -c id", "main", None)).starts_with("url"));
        assert!(err(loc("-uhello", "main", None)).starts_with("url"));
        assert!(err(loc("relative/dir", "main", None)).starts_with("url"));
        assert!(err(loc("https://u:tok@h/r.git", "main", None)).contains("password"));
        assert!(err(loc("/a", "-f", None)).starts_with("ref"));
        assert!(err(loc("/a", "a..b", None)).starts_with("ref"));
        assert!(err(loc("/a", "main:x", None)).starts_with("ref"));
        assert!(err(loc("/a", "", None)).starts_with("ref"));
        assert!(err(loc("/a", "main", Some("../etc"))).starts_with("path"));
        assert!(err(loc("/a", "main", Some("/etc"))).starts_with("path"));
    }

    #[test]
    fn redaction_keeps_the_user_and_drops_the_password() {
        assert_eq!(
            redact_url("https://bob:s3cret@git.example.com/x.git"),
            "https://bob@git.example.com/x.git"
        );
        assert_eq!(redact_url("https://h/x@y"), "https://h/x@y");
        assert_eq!(redact_url("git@h:x.git"), "git@h:x.git");
    }

    #[test]
    fn credentials_debug_shows_no_secret() {
        let https = GitCredentials::Https {
            username: "bob".into(),
            password: "tok-123456".into(),
        };
        let ssh = GitCredentials::Ssh {
            private_key: "-----BEGIN KEY-----abc".into(),
            known_hosts: None,
        };
        let shown = format!("{https:?} {ssh:?}");
        assert!(
            !shown.contains("tok-123456") && !shown.contains("BEGIN"),
            "{shown}"
        );
        assert!(shown.contains("bob"));
    }

    #[test]
    fn credential_files_are_private_and_removed_afterwards() {
        let c = GitCredentials::Ssh {
            private_key: "KEY".into(),
            known_hosts: Some("host ssh-ed25519 AAAA".into()),
        };
        let files = CredentialFiles::write(&c).unwrap();
        let dir = files.dir.path().to_owned();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("id")), 0o600);
        let command = ssh_command(&dir, true);
        assert!(command.contains("IdentitiesOnly=yes"), "{command}");
        assert!(command.contains("StrictHostKeyChecking=yes"), "{command}");
        assert!(!command.contains("KEY"));
        drop(files);
        assert!(!dir.exists());
    }

    #[test]
    fn git_messages_lose_credentials() {
        let settings = GitSettings::default();
        let creds = GitCredentials::Https {
            username: "bob".into(),
            password: "tok-secret-1".into(),
        };
        let git = Git {
            settings: &settings,
            credentials: Some(&creds),
            url: "https://bob@h/r.git",
        };
        let msg = git.clean(
            "fatal: Authentication failed for 'https://bob@h/r.git' tok-secret-1\n",
            Some("fetch"),
        );
        assert!(!msg.contains("tok-secret-1"), "{msg}");
        assert!(msg.starts_with("git fetch failed: fatal: Authentication failed"));
    }
}

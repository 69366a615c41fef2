//! Real git repositories for catalog tests, made with the git CLI in a temp dir: a bare
//! "origin" and a work clone that commits and pushes to it; and a tiny HTTP git server
//! (`git http-backend` as CGI) that demands basic auth.

use std::path::{Path, PathBuf};
use std::process::Command;

use actix_web::{HttpRequest, HttpResponse, web};

/// Runs git with a fixed identity and no user or system configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git CLI runs (scripts/setup-test-env installs it)");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `origin.git` (bare) and `work` (its clone, on branch `main`), removed at the end.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let dir = tempfile::Builder::new()
            .prefix("shiplog-git-test-")
            .tempdir()
            .unwrap();
        git(
            dir.path(),
            &["init", "--quiet", "--bare", "-b", "main", "origin.git"],
        );
        git(dir.path(), &["init", "--quiet", "-b", "main", "work"]);
        let repo = GitRepo { dir };
        git(
            &repo.work(),
            &["remote", "add", "origin", repo.origin().to_str().unwrap()],
        );
        repo
    }

    pub fn origin(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.origin().display())
    }

    /// Writes files (relative path, content), commits them all, pushes `main`, and
    /// returns the commit.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (file, content) in files {
            let path = self.work().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&self.work(), &["add", "--all"]);
        git(&self.work(), &["commit", "--quiet", "-m", message]);
        git(&self.work(), &["push", "--quiet", "origin", "main"]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.work(), &["rev-parse", "HEAD"])
    }

    /// Rewrites `main` to `commit` and force-pushes it: history after it is gone.
    pub fn force_push_to(&self, commit: &str) {
        git(&self.work(), &["reset", "--quiet", "--hard", commit]);
        git(
            &self.work(),
            &["push", "--quiet", "--force", "origin", "main"],
        );
    }

    pub fn tag(&self, name: &str) {
        git(&self.work(), &["tag", "-a", name, "-m", name]);
        git(&self.work(), &["push", "--quiet", "origin", name]);
    }

    pub fn delete_branch(&self, name: &str) {
        // The bare repository's HEAD names `main`; deleting it is refused by default.
        git(
            &self.origin(),
            &["config", "receive.denyDeleteCurrent", "ignore"],
        );
        git(
            &self.work(),
            &["push", "--quiet", "origin", "--delete", name],
        );
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves the repositories under `root` over smart HTTP on 127.0.0.1, to one user.
pub struct GitHttpServer {
    pub port: u16,
    handle: actix_web::dev::ServerHandle,
}

#[derive(Clone)]
struct Served {
    root: PathBuf,
    authorization: String,
}

impl GitHttpServer {
    pub fn start(root: &Path, username: &str, password: &str) -> GitHttpServer {
        use base64::Engine;
        let served = Served {
            root: root.to_owned(),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(web::Data::new(served.clone()))
                .app_data(web::PayloadConfig::new(64 << 20))
                .default_service(web::to(cgi))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        GitHttpServer { port, handle }
    }

    pub fn url(&self, repository: &str) -> String {
        format!("http://127.0.0.1:{}/{repository}", self.port)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// One CGI call of `git http-backend` (RFC 3875 variables in, `Status:` + headers out).
async fn cgi(req: HttpRequest, body: web::Bytes, served: web::Data<Served>) -> HttpResponse {
    use tokio::io::AsyncWriteExt;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if header("authorization") != served.authorization {
        return HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Basic realm=\"git\""))
            .finish();
    }
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &served.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", req.path())
        .env("QUERY_STRING", req.query_string())
        .env("REQUEST_METHOD", req.method().as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git http-backend runs");
    let mut stdin = child.stdin.take().unwrap();
    // actix has already undone any Content-Encoding of the body.
    stdin.write_all(&body).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .unwrap_or((out.stdout.len(), 0));
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let mut response = HttpResponse::Ok();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("500");
            response.status(
                actix_web::http::StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap(),
            );
        } else {
            response.insert_header((name.trim().to_owned(), value.to_owned()));
        }
    }
    response.body(out.stdout[split.0 + split.1..].to_vec())
}

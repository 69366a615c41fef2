//! A real `sshd` on a free loopback port, for the ssh transports (Docker endpoints, git
//! sources): a host key, an authorized key `id`, an unknown key `wrong_id`, and the
//! `known_hosts` that pins the host key (plus an empty one). Killed with its process group
//! (one child per connection) when dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TestSshd {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

fn keygen(path: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", path])
        .output()
        .expect("ssh-keygen runs (scripts/setup-test-env installs openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestSshd {
    pub async fn start() -> TestSshd {
        let dir = tempfile::Builder::new()
            .prefix("shiplog-sshd-")
            .tempdir()
            .unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        for key in ["host_key", "id", "wrong_id"] {
            keygen(&path(key));
        }
        std::fs::copy(path("id.pub"), path("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host_key = std::fs::read_to_string(path("host_key.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::write(
            path("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
        )
        .unwrap();
        std::fs::write(path("empty_known_hosts"), "").unwrap();
        std::fs::write(
            path("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
                path("host_key"),
                path("authorized_keys")
            ),
        )
        .unwrap();
        // sshd's privilege separation directory (root runs these tests).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f", &path("sshd_config")])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts (scripts/setup-test-env installs openssh-server)");
        let sshd = TestSshd { port, dir, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return sshd;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sshd does not listen on 127.0.0.1:{port}");
    }

    /// A file of its folder: `id`, `wrong_id`, `known_hosts`, `empty_known_hosts`, ….
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// The line of `known_hosts` that pins the host key.
    pub fn known_hosts_line(&self) -> String {
        std::fs::read_to_string(self.path("known_hosts"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The user the tests log in as (whoever runs them; root on CI).
    pub fn user(&self) -> String {
        std::env::var("USER").unwrap_or_else(|_| "root".into())
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

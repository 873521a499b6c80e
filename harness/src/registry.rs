//! A real OCI registry for node tests: Debian's `docker-registry` on 127.0.0.1, storage and access
//! log in a private temp dir, optionally behind htpasswd basic auth.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use crate::packages::{self, Package};

/// How long the registry may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A user the registry accepts (basic auth from an htpasswd file).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A running `docker-registry`; dropping it stops the process (also on panic) and removes its files.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    credentials: Option<Credentials>,
}

impl Registry {
    /// An anonymous registry on a free port of 127.0.0.1.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// A registry that only answers `credentials` (htpasswd, bcrypt), or anyone when `None`.
    pub fn start_with(credentials: Option<Credentials>) -> Result<Self> {
        let mut needed = vec![Package::DockerRegistry];
        if credentials.is_some() {
            needed.push(Package::Htpasswd);
        }
        packages::ensure_installed(&needed)?;
        let dir = tempfile::Builder::new()
            .prefix("wasmkube-registry-")
            .tempdir()
            .ctx(|| "creating the registry's temp dir".to_string())?
            .keep();
        // From here on, dropping `me` removes the dir.
        let mut me = Registry { dir, port: free_port()?, child: None, credentials };
        me.write_config()?;
        me.spawn()?;
        Ok(me)
    }

    /// `127.0.0.1:PORT`, the registry part of references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The credentials the registry demands, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The registry's combined application and access log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How many successful `GET`s of blob `digest` the access log holds.
    pub fn blob_gets(&self, digest: &str) -> usize {
        count_blob_gets(&self.log(), digest)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the registry (its storage stays): references to it become unreachable.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a stopped registry again on the same port with the same storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Copies an OCI layout directory to `REPO:TAG` of this registry with `skopeo` (a foreign pusher).
    pub fn skopeo_copy_layout(&self, layout_dir: &Path, repo_tag: &str) -> Result<()> {
        packages::ensure_installed(&[Package::Skopeo])?;
        let mut c = Command::new("skopeo");
        c.args(["copy", "--dest-tls-verify=false"]);
        if let Some(creds) = &self.credentials {
            c.arg(format!("--dest-creds={}:{}", creds.username, creds.password));
        }
        c.arg(format!("oci:{}", layout_dir.display())).arg(format!("docker://{}/{repo_tag}", self.host()));
        cmd::run_checked(&mut c, Duration::from_secs(60)).map(|_| ())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    fn write_config(&self) -> Result<()> {
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data).ctx(|| format!("creating {}", data.display()))?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {}\n",
            data.display(),
            self.host()
        );
        if let Some(creds) = &self.credentials {
            let htpasswd = self.dir.join("htpasswd");
            let mut c = Command::new("htpasswd");
            c.args(["-Bbn", &creds.username, &creds.password]);
            let out = cmd::run_checked(&mut c, Duration::from_secs(30))?;
            std::fs::write(&htpasswd, out.stdout.trim()).ctx(|| format!("writing {}", htpasswd.display()))?;
            config
                .push_str(&format!("auth:\n  htpasswd:\n    realm: wasmkube-test\n    path: {}\n", htpasswd.display()));
        }
        let path = self.dir.join("config.yml");
        std::fs::write(&path, config).ctx(|| format!("writing {}", path.display()))
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .ctx(|| "opening the registry log".to_string())?;
        let log2 = log.try_clone().ctx(|| "duplicating the registry log handle".to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .env("PATH", packages::search_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| Error::Spawn { program: "docker-registry".into(), source })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(Error::Setup(format!("docker-registry exited with {status}: {}", self.log())));
            }
            if Instant::now() > deadline {
                return Err(Error::Setup(format!("docker-registry not listening within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(host = %self.host(), dir = %self.dir.display(), "registry ready");
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- registry log ({}) ---\n{}",
                self.log_path().display(),
                crate::containerd::tail(&self.log(), 40)
            );
        }
        self.stop();
        if !std::env::var(crate::containerd::KEEP_DIRS_ENV).is_ok_and(|v| v == "1") {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port of 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").ctx(|| "binding a free port".to_string())?;
    let port = listener.local_addr().ctx(|| "reading the bound port".to_string())?.port();
    Ok(port)
}

/// Successful blob GETs in a registry access log (combined log format, one line per request).
fn count_blob_gets(log: &str, digest: &str) -> usize {
    let wanted = format!("/blobs/{digest} ");
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(&wanted))
        .filter(|l| l.split('"').nth(2).is_some_and(|after| after.trim_start().starts_with('2')))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_gets_count_only_successful_gets_of_that_blob() {
        let log = "\
127.0.0.1 - - [21/Nov/2026:20:00:00 +0000] \"GET /v2/app/blobs/sha256:aa HTTP/1.1\" 200 10 \"\" \"x\"
127.0.0.1 - - [21/Nov/2026:20:00:00 +0000] \"HEAD /v2/app/blobs/sha256:aa HTTP/1.1\" 200 10 \"\" \"x\"
127.0.0.1 - - [21/Nov/2026:20:00:00 +0000] \"GET /v2/app/blobs/sha256:aa HTTP/1.1\" 401 10 \"\" \"x\"
127.0.0.1 - - [21/Nov/2026:20:00:00 +0000] \"GET /v2/app/blobs/sha256:bb HTTP/1.1\" 200 10 \"\" \"x\"
time=\"x\" level=info msg=\"response completed\" http.request.uri=\"/v2/app/blobs/sha256:aa\"
127.0.0.1 - - [21/Nov/2026:20:00:01 +0000] \"GET /v2/app/blobs/sha256:aa HTTP/1.1\" 200 10 \"\" \"x\"
";
        assert_eq!(count_blob_gets(log, "sha256:aa"), 2);
    }
}

//! A private etcd and kube-apiserver from `KUBE_BIN_DIR`, on ports apart from a local cluster's, with static token
//! users and an audit log of the operator's requests; stopped (and its directory removed) when dropped.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// etcd's client port: `make local-up` uses 23791, a default etcd 2379.
const ETCD_CLIENT_PORT: u16 = 22379;
/// etcd's peer port.
const ETCD_PEER_PORT: u16 = 22380;
/// kube-apiserver's port: a local cluster's is 6443.
const APISERVER_PORT: u16 = 26443;
/// The user the operator's requests are made as; the audit policy records only this user's requests.
pub const OPERATOR_USER: &str = "wasmkube-operator";
/// The user of the benchmark's own requests (creating apps, standing in for the kubelet).
const BENCH_USER: &str = "wasmkube-bench";
/// Longest etcd and the API server may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A process the benchmark started, stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    /// Start `cmd` with its output in `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("opening {} twice", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self { name, child })
    }

    /// The process id (the operator keeps it when it executes itself again).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fail when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited: {status}", self.name),
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; the exit status when it exited by itself in time.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(name = self.name, "did not stop on SIGTERM within 10 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// etcd and kube-apiserver in a private directory.
pub struct ControlPlane {
    // Why this order: fields drop in order, and the API server must go before its etcd.
    apiserver: Process,
    etcd: Process,
    dir: PathBuf,
    /// Kubeconfig of the operator's user.
    pub operator_kubeconfig: PathBuf,
    /// Kubeconfig of the benchmark's user.
    bench_kubeconfig: PathBuf,
    /// The audit log (the operator's requests only).
    pub audit_log: PathBuf,
}

impl ControlPlane {
    /// Start etcd and kube-apiserver from `bin` with their state in `dir` (created; removed on drop).
    pub fn start(bin: &Path, dir: &Path) -> Result<Self> {
        for (what, port) in [("etcd", ETCD_CLIENT_PORT), ("etcd", ETCD_PEER_PORT), ("kube-apiserver", APISERVER_PORT)] {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| {
                format!("port {port} for {what} is taken: is another operator-scale benchmark running?")
            })?;
        }
        for tool in ["etcd", "kube-apiserver"] {
            ensure!(bin.join(tool).is_file(), "KUBE_BIN_DIR {} has no {tool}", bin.display());
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        openssl(&["genrsa", "-out", path(&sa_key)?, "2048"])?;
        openssl(&["rsa", "-in", path(&sa_key)?, "-pubout", "-out", path(&sa_pub)?])?;
        let operator_token = token()?;
        let bench_token = token()?;
        // Why system:masters for both: the benchmark measures the operator's load, not RBAC (the scripted API
        // server of the tests checks every request against the chart's RBAC).
        let tokens = format!(
            "{operator_token},{OPERATOR_USER},{OPERATOR_USER},\"system:masters\"\n\
             {bench_token},{BENCH_USER},{BENCH_USER},\"system:masters\"\n"
        );
        write(&dir.join("tokens.csv"), &tokens)?;
        let policy = format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
             - level: Metadata\n  users: [\"{OPERATOR_USER}\"]\n- level: None\n"
        );
        write(&dir.join("audit-policy.yaml"), &policy)?;
        let operator_kubeconfig = dir.join("operator.kubeconfig");
        let bench_kubeconfig = dir.join("bench.kubeconfig");
        write(&operator_kubeconfig, &kubeconfig(OPERATOR_USER, &operator_token))?;
        write(&bench_kubeconfig, &kubeconfig(BENCH_USER, &bench_token))?;
        let audit_log = dir.join("audit.log");

        let mut etcd = Command::new(bin.join("etcd"));
        let client_url = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
        let peer_url = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
        etcd.args(["--name", "bench", "--data-dir", path(&dir.join("etcd"))?])
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .current_dir(dir);
        let etcd = Process::spawn("etcd", etcd, &dir.join("etcd.log"))?;
        wait_for_port(ETCD_CLIENT_PORT, "etcd")?;

        let mut apiserver = Command::new(bin.join("kube-apiserver"));
        apiserver
            .arg(format!("--etcd-servers={client_url}"))
            .args(["--bind-address=127.0.0.1", &format!("--secure-port={APISERVER_PORT}")])
            .arg(format!("--cert-dir={}", path(&dir.join("certs"))?))
            .arg(format!("--token-auth-file={}", path(&dir.join("tokens.csv"))?))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", path(&sa_pub)?))
            .arg(format!("--service-account-signing-key-file={}", path(&sa_key)?))
            .arg("--service-cluster-ip-range=10.96.0.0/12")
            .arg(format!("--audit-policy-file={}", path(&dir.join("audit-policy.yaml"))?))
            .arg(format!("--audit-log-path={}", path(&audit_log)?))
            .args(["--audit-log-format=json", "--profiling=false"])
            .current_dir(dir);
        let apiserver = Process::spawn("kube-apiserver", apiserver, &dir.join("kube-apiserver.log"))?;
        let mut plane =
            Self { apiserver, etcd, dir: dir.to_path_buf(), operator_kubeconfig, bench_kubeconfig, audit_log };
        wait_for_port(APISERVER_PORT, "kube-apiserver")?;
        plane.apiserver.check_running()?;
        Ok(plane)
    }

    /// A client as the benchmark's user, once the API server is ready.
    pub async fn client(&self) -> Result<kube::Client> {
        let kc = Kubeconfig::read_from(&self.bench_kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        let client = kube::Client::try_from(config).context("building the benchmark's client")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => return Ok(client),
                Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
                Ok(text) => bail!("kube-apiserver not ready within {START_TIMEOUT:?}: {text}"),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("kube-apiserver not ready within {START_TIMEOUT:?} (log {})", self.log().display())
                    })
                }
            }
        }
    }

    /// The API server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("kube-apiserver.log")
    }

    /// Fail when etcd or the API server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        self.etcd.check_running()?;
        self.apiserver.check_running()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.apiserver.stop();
        self.etcd.stop();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the control plane's directory");
        }
    }
}

fn kubeconfig(user: &str, token: &str) -> String {
    // Why no CA: the API server made its own self-signed certificate in its private directory; the connection is
    // to 127.0.0.1 and only carries benchmark objects.
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: https://127.0.0.1:{APISERVER_PORT}\n    \
         insecure-skip-tls-verify: true\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: bench\n  \
         context: {{cluster: bench, user: {user}}}\ncurrent-context: bench\n"
    )
}

fn token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut bytes).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).output().context("running openssl (install Debian's openssl)")?;
    ensure!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn write(file: &Path, text: &str) -> Result<()> {
    fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}

fn path(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        ensure!(Instant::now() < deadline, "{what} did not listen on {addr} within {START_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A free port on 127.0.0.1 for the operator's listeners.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

//! A private containerd for one test: its own socket, root, state and config under a temp dir,
//! torn down completely when the guard drops.

mod binaries;
mod config;
mod dirs;
mod overlay;
mod tasks;
mod teardown;

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use binaries::{parse_major_version, Binaries, BIN_DIR_ENV as CONTAINERD_BIN_DIR_ENV};
pub use config::{
    bridge_name, render_cni_conflist, render_config, CniOpts, ConfigParams, Snapshotter, CNI_NETWORK, RUNC_HANDLER,
    RUNC_RUNTIME_TYPE, WASMKUBE_HANDLER, WASMKUBE_RUNTIME_TYPE,
};
pub use dirs::{Dirs, DIR_PREFIX};
pub use tasks::{parse_task_ls, TaskRow};
pub use teardown::reap_stale;

use crate::cmd::{self, CmdOutput};
use crate::error::{Error, IoContext, Result};
use crate::images;
use crate::oci::{ImageInfo, OciImage};
use crate::packages::{self, Package};

/// Namespace `ctr` uses unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "wasmkube-test";
/// Namespace the CRI plugin keeps its images and containers in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The variable naming the shim's node configuration; when a test does not set it, the harness points it at
/// a config whose `cache_dir` is in the private temp dir.
pub use wasmkube_contract::node::SHIM_CONFIG_ENV;
/// Set to `1` to keep the temp dir of every instance for debugging.
pub const KEEP_DIRS_ENV: &str = "WASMKUBE_KEEP_TEST_DIRS";
/// containerd's log level when the caller does not choose one (`debug` shows CRI's steps, with times).
pub const LOG_LEVEL_ENV: &str = "WASMKUBE_CONTAINERD_LOG_LEVEL";

/// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How to start a private containerd.
#[derive(Debug, Clone)]
pub struct ContainerdOpts {
    /// The shim binary `containerd-shim-wasmkube-v1`; its dir goes first on containerd's PATH.
    pub shim: Option<PathBuf>,
    /// Namespace for [`PrivateContainerd::ctr`].
    pub namespace: String,
    /// CRI `sandbox_image`.
    pub sandbox_image: String,
    /// Writes a CNI bridge network for CRI pods when set.
    pub cni: Option<CniOpts>,
    /// Forces a snapshotter instead of probing for overlay.
    pub snapshotter: Option<Snapshotter>,
    /// Extra environment for containerd, which passes it on to shims.
    pub env: Vec<(String, String)>,
    /// Registries (`host:port`) the shim may reach over plain HTTP (its `insecure_registries`).
    pub insecure_registries: Vec<String>,
    /// More lines (`key = value`) for the shim configuration the harness writes.
    pub shim_settings: Vec<String>,
    /// Where the temp dir is created (default: the system temp dir).
    pub base_dir: Option<PathBuf>,
    /// containerd log level.
    pub log_level: String,
    /// Bound on containerd becoming ready.
    pub start_timeout: Duration,
    /// Bound on every `ctr` command.
    pub command_timeout: Duration,
    /// Registers the wasmkube runtime in config.toml (default); off for tests of the node installer.
    pub wasmkube_runtime: bool,
}

impl Default for ContainerdOpts {
    fn default() -> Self {
        ContainerdOpts {
            shim: None,
            namespace: DEFAULT_NAMESPACE.into(),
            sandbox_image: images::PAUSE_IMAGE.into(),
            cni: None,
            snapshotter: None,
            env: Vec::new(),
            insecure_registries: Vec::new(),
            shim_settings: Vec::new(),
            base_dir: None,
            log_level: std::env::var(LOG_LEVEL_ENV).unwrap_or_else(|_| "info".into()),
            start_timeout: Duration::from_secs(20),
            command_timeout: Duration::from_secs(120),
            wasmkube_runtime: true,
        }
    }
}

impl ContainerdOpts {
    /// Default options with the wasmkube shim binary at `shim`.
    pub fn with_shim(shim: impl Into<PathBuf>) -> Self {
        ContainerdOpts { shim: Some(shim.into()), ..Default::default() }
    }
}

/// A running private containerd; dropping it tears everything down, also when a test panics.
#[derive(Debug)]
pub struct PrivateContainerd {
    dirs: Dirs,
    namespace: String,
    snapshotter: Snapshotter,
    bridge: Option<String>,
    /// Debian's containerd or the developer's ([`CONTAINERD_BIN_DIR_ENV`]).
    binaries: Binaries,
    path_env: String,
    command_timeout: Duration,
    /// The shim's metrics endpoint, when the harness writes the shim configuration.
    shim_metrics: Option<SocketAddr>,
    /// Kept for [`restart`](PrivateContainerd::restart).
    opts: ContainerdOpts,
    child: Option<Child>,
}

impl PrivateContainerd {
    /// Starts containerd and waits until it answers `ctr version`.
    pub fn start(opts: ContainerdOpts) -> Result<Self> {
        let binaries = Binaries::from_env()?;
        let mut needed = binaries.packages();
        if opts.cni.is_some() {
            needed.push(Package::CniPlugins);
        }
        packages::ensure_installed(&needed)?;
        let base = opts.base_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).ctx(|| format!("creating {}", base.display()))?;
        teardown::reap_stale(&base);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&base)
            .ctx(|| format!("creating a temp dir in {}", base.display()))?
            .keep();
        // From here on, dropping `me` cleans up whatever was created.
        let mut me = PrivateContainerd {
            dirs: Dirs::new(dir),
            namespace: opts.namespace.clone(),
            snapshotter: Snapshotter::Native,
            bridge: None,
            path_env: containerd_path(opts.shim.as_deref(), binaries.dir()),
            binaries,
            command_timeout: opts.command_timeout,
            shim_metrics: None,
            opts: opts.clone(),
            child: None,
        };
        me.prepare(&opts)?;
        if !opts.env.iter().any(|(k, _)| k == SHIM_CONFIG_ENV) {
            // A port of its own: the default 9464 would be shared by every test's daemon.
            let port = crate::registry::free_port()?;
            me.shim_metrics = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        me.spawn(&opts)?;
        me.wait_ready(opts.start_timeout)?;
        tracing::info!(socket = %me.socket().display(), snapshotter = me.snapshotter.as_str(), "private containerd ready");
        Ok(me)
    }

    /// Creates dirs, probes the snapshotter and writes config.toml and the CNI conflist.
    fn prepare(&mut self, opts: &ContainerdOpts) -> Result<()> {
        let d = self.dirs.clone();
        write(&d.owner_pid(), std::process::id().to_string())?;
        if d.socket().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Setup(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter base_dir",
                d.socket().display()
            )));
        }
        for dir in d.to_create() {
            std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        }
        if let Some(shim) = &opts.shim {
            check_shim(shim)?;
        }
        self.snapshotter = opts.snapshotter.unwrap_or_else(|| overlay::probe(&d.overlay_probe()));
        if let Some(cni) = &opts.cni {
            let bridge = bridge_name(&d);
            let conflist = render_cni_conflist(cni, &bridge, &d.cni_ipam_dir());
            write(&d.cni_conf_dir().join("10-wasmkube-test.conflist"), conflist)?;
            self.bridge = Some(bridge);
        }
        let version = self.binaries.config_version(Duration::from_secs(10))?;
        let config = render_config(&ConfigParams {
            dirs: &d,
            snapshotter: self.snapshotter,
            sandbox_image: &opts.sandbox_image,
            log_level: &opts.log_level,
            wasmkube_runtime: opts.wasmkube_runtime,
            version,
        })
        .map_err(|e| {
            Error::io("rendering containerd's config", std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        write(&d.config(), config)
    }

    fn spawn(&mut self, opts: &ContainerdOpts) -> Result<()> {
        let log_path = self.dirs.log();
        // Appends, so a restarted containerd's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .ctx(|| format!("opening {}", log_path.display()))?;
        let log_err = log.try_clone().ctx(|| "duplicating the log file".into())?;
        let mut c = Command::new(self.binaries.program("containerd"));
        c.arg("--config")
            .arg(self.dirs.config())
            .env("PATH", &self.path_env)
            // A containerd started under systemd would otherwise notify the test's unit.
            .env_remove("NOTIFY_SOCKET")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // Shims inherit containerd's environment: without a configuration of the test's own, the shim's
        // node cache would land in the host's /var/lib/wasmkube.
        if let Some(metrics) = self.shim_metrics {
            let config = self.dirs.work().join("shim.toml");
            write(&config, shim_config(&self.shim_cache_dir(), metrics, opts))?;
            c.env(SHIM_CONFIG_ENV, &config);
        }
        let child = c.spawn().map_err(|source| Error::Spawn {
            program: self.binaries.program("containerd").to_string_lossy().into_owned(),
            source,
        })?;
        write(&self.dirs.containerd_pid(), child.id().to_string())?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(self.start_error(format!("containerd exited with {status}")));
            }
            let probe = cmd::run(self.ctr_command(&self.namespace).arg("version"), Duration::from_secs(5));
            match probe {
                Ok(out) if out.success() => return Ok(()),
                Ok(out) if Instant::now() >= deadline => {
                    return Err(self
                        .start_error(format!("`ctr version` still failing after {timeout:?}: {}", out.stderr.trim())))
                }
                Err(e) if Instant::now() >= deadline => return Err(self.start_error(format!("after {timeout:?}: {e}"))),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn start_error(&self, reason: String) -> Error {
        Error::ContainerdStart { reason, log: self.dirs.log(), log_tail: self.log_tail() }
    }

    /// The gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dirs.socket()
    }

    /// The temp dir holding everything of this instance.
    pub fn dir(&self) -> &Path {
        &self.dirs.base
    }

    /// The full file layout of this instance.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// The shim's node cache (`cache_dir` of the shim configuration the harness writes).
    pub fn shim_cache_dir(&self) -> PathBuf {
        self.dirs.work().join("wasmkube-cache")
    }

    /// The shim daemon's metrics endpoint (`metrics_address` of the shim configuration the harness
    /// writes: a free port of 127.0.0.1); `None` when the test brought its own configuration.
    pub fn shim_metrics_addr(&self) -> Option<SocketAddr> {
        self.shim_metrics
    }

    /// Scratch dir for the test (image tarballs, built binaries).
    pub fn work_dir(&self) -> PathBuf {
        self.dirs.work()
    }

    /// The default namespace of [`ctr`](Self::ctr).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The snapshotter in use.
    pub fn snapshotter(&self) -> Snapshotter {
        self.snapshotter
    }

    /// The CNI bridge interface, when a CNI network was configured.
    pub fn bridge(&self) -> Option<&str> {
        self.bridge.as_deref()
    }

    /// PID of the containerd process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The PATH containerd (and so every shim) runs with.
    pub fn path_env(&self) -> &str {
        &self.path_env
    }

    /// Puts `dir` first on containerd's PATH from the next [`restart`](Self::restart) on, as a node's
    /// `/usr/local/bin` is on its containerd's PATH.
    pub fn prepend_path(&mut self, dir: &Path) {
        self.path_env = format!("{}:{}", dir.display(), self.path_env);
    }

    /// Environment that points `ctr` and other clients at this instance.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_in(&self.namespace)
    }

    /// Like [`env`](Self::env) for another namespace.
    pub fn env_in(&self, namespace: &str) -> Vec<(String, String)> {
        vec![
            ("CONTAINERD_ADDRESS".into(), self.socket().to_string_lossy().into_owned()),
            ("CONTAINERD_NAMESPACE".into(), namespace.into()),
            // ctr defaults to overlayfs on its own, whatever the daemon uses.
            ("CONTAINERD_SNAPSHOTTER".into(), self.snapshotter.as_str().into()),
        ]
    }

    /// A `ctr --address SOCK --namespace NS` command to add arguments to.
    pub fn ctr_command(&self, namespace: &str) -> Command {
        let mut c = Command::new(self.binaries.program("ctr"));
        c.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(namespace)
            .env("PATH", &self.path_env)
            .envs(self.env_in(namespace));
        c
    }

    /// Runs `ctr` in the default namespace; a non-zero exit is returned, not an error.
    pub fn ctr<I, S>(&self, args: I) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ctr_in(&self.namespace, args)
    }

    /// Runs `ctr` in `namespace`; a non-zero exit is returned, not an error.
    ///
    /// `run`, `task start` and `task exec` get `--fifo-dir` inside the temp dir unless given one,
    /// so their FIFOs never outlive the instance.
    pub fn ctr_in<I, S>(&self, namespace: &str, args: I) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = with_fifo_dir(args, &self.dirs.fifo());
        cmd::run(self.ctr_command(namespace).args(args), self.command_timeout)
    }

    /// Imports an OCI layout tarball into the default namespace and unpacks it.
    pub fn import_image(&self, tar: &Path) -> Result<()> {
        self.import_image_in(&self.namespace, tar)
    }

    /// Imports an OCI layout tarball into `namespace` (use [`CRI_NAMESPACE`] for CRI).
    pub fn import_image_in(&self, namespace: &str, tar: &Path) -> Result<()> {
        let mut c = self.ctr_command(namespace);
        // Our tars hold one manifest without an index above it; --all-platforms skips platform filtering.
        c.args(["images", "import", "--all-platforms", "--snapshotter"]).arg(self.snapshotter.as_str()).arg(tar);
        cmd::run_checked(&mut c, self.command_timeout).map(|_| ())
    }

    /// Writes `image` to the work dir and imports it into the default namespace.
    pub fn import(&self, image: &OciImage) -> Result<ImageInfo> {
        self.import_in(&self.namespace, image)
    }

    /// Writes `image` to the work dir and imports it into `namespace`.
    pub fn import_in(&self, namespace: &str, image: &OciImage) -> Result<ImageInfo> {
        let file: String = image.name().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let tar = self.work_dir().join(format!("{file}.oci.tar"));
        let info = image.write_tar(&tar)?;
        self.import_image_in(namespace, &tar)?;
        Ok(info)
    }

    /// A CRI client on this instance's socket; pod log directories go under `<temp dir>/pods`.
    pub fn cri(&self) -> Result<crate::cri::CriClient> {
        crate::cri::CriClient::connect(&self.socket(), &self.dirs.base.join("pods"))
    }

    /// Processes of the wasmkube shim (`containerd-shim-wasmkube-v1`) started for this instance.
    pub fn shim_daemons(&self) -> Vec<i32> {
        crate::procs::with_address(&self.socket())
            .into_iter()
            .filter(|pid| {
                crate::procs::read(*pid)
                    .is_some_and(|p| p.cmdline.first().is_some_and(|a| a.ends_with(crate::paths::SHIM_BINARY)))
            })
            .collect()
    }

    /// Server version reported by `ctr version`.
    pub fn server_version(&self) -> Result<String> {
        let out = self.ctr(["version"])?.check("ctr version")?;
        Ok(parse_server_version(&out.stdout).unwrap_or_else(|| "unknown".into()))
    }

    /// The whole containerd log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dirs.log()).unwrap_or_default()
    }

    /// The last lines of the containerd log.
    pub fn log_tail(&self) -> String {
        tail(&self.log(), 60)
    }

    /// Restarts containerd on the same directories and config, as a node's containerd restarts: shims
    /// and their tasks keep running, and the new containerd must find them again.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_containerd();
        let opts = self.opts.clone();
        self.spawn(&opts)?;
        self.wait_ready(opts.start_timeout)?;
        tracing::info!(socket = %self.socket().display(), "private containerd restarted");
        Ok(())
    }

    /// Stops containerd: SIGTERM, bounded wait, then SIGKILL.
    fn stop_containerd(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(pid = child.id(), "containerd ignored SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- containerd log tail ({}) ---\n{}", self.dirs.log().display(), self.log_tail());
        }
        self.stop_containerd();
        let keep = std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1");
        teardown::cleanup_after_containerd(&self.dirs, self.bridge.as_deref(), keep);
    }
}

/// The shim's test configuration: its cache in the temp dir, the metrics endpoint on `metrics`, and the
/// test's own settings.
fn shim_config(cache: &Path, metrics: SocketAddr, opts: &ContainerdOpts) -> String {
    let mut text = format!(
        "cache_dir = {:?}\ninsecure_registries = {:?}\nmetrics_address = \"{metrics}\"\n",
        cache.display().to_string(),
        opts.insecure_registries
    );
    for line in &opts.shim_settings {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// `<dir of shim>:<containerd's bin dir>:$PATH` (plus sbin dirs, where runc lives). containerd looks its runc
/// shim up on PATH before its own directory, so a bin dir goes ahead of Debian's.
fn containerd_path(shim: Option<&Path>, bin_dir: Option<&Path>) -> String {
    let dirs = [shim.and_then(Path::parent), bin_dir];
    let mut path: Vec<String> =
        dirs.iter().flatten().filter(|d| !d.as_os_str().is_empty()).map(|d| d.display().to_string()).collect();
    path.push(packages::search_path());
    path.join(":")
}

/// containerd resolves `io.containerd.wasmkube.v1` by this exact file name on its PATH.
fn check_shim(shim: &Path) -> Result<()> {
    let named_right = shim.file_name() == Some(OsStr::new(crate::paths::SHIM_BINARY));
    if !named_right {
        return Err(Error::Setup(format!(
            "shim binary {} must be named {}",
            shim.display(),
            crate::paths::SHIM_BINARY
        )));
    }
    if !shim.is_file() {
        return Err(Error::Setup(format!("shim binary {} does not exist", shim.display())));
    }
    Ok(())
}

/// Inserts `--fifo-dir DIR` after the subcommands of ctr that create FIFOs.
pub fn with_fifo_dir<I, S>(args: I, fifo_dir: &Path) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let word = |i: usize| args.get(i).and_then(|a| a.to_str()).unwrap_or("");
    let at = match (word(0), word(1)) {
        ("run", _) => Some(1),
        ("task" | "tasks" | "t", "start" | "exec") => Some(2),
        _ => None,
    };
    if let Some(at) = at {
        if !args.iter().any(|a| a == "--fifo-dir") {
            args.splice(at..at, [OsString::from("--fifo-dir"), fifo_dir.into()]);
        }
    }
    args
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).ctx(|| format!("writing {}", path.display()))
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `Version:` line of the `Server:` block of `ctr version`.
pub fn parse_server_version(out: &str) -> Option<String> {
    let server = &out[out.find("Server:")?..];
    server.lines().find_map(|l| l.trim().strip_prefix("Version:")).map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_dir_goes_first_on_path() {
        let p = containerd_path(Some(Path::new("/opt/x/containerd-shim-wasmkube-v1")), None);
        assert!(p.starts_with("/opt/x:"));
        assert!(p.split(':').any(|d| d == "/usr/sbin"));
        let p = containerd_path(Some(Path::new("/opt/x/containerd-shim-wasmkube-v1")), Some(Path::new("/c2/bin")));
        assert!(p.starts_with("/opt/x:/c2/bin:"), "{p}");
        assert_eq!(containerd_path(None, None), packages::search_path());
    }

    #[test]
    fn server_version_is_parsed() {
        let out = "Client:\n  Version:  1.6.20~ds1\n\nServer:\n  Version:  1.6.21\n  UUID: x\n";
        assert_eq!(parse_server_version(out).as_deref(), Some("1.6.21"));
    }

    #[test]
    fn fifo_dir_is_injected_where_fifos_are_made() {
        let f = Path::new("/d/fifo");
        let s = |v: Vec<OsString>| v.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>();
        assert_eq!(
            s(with_fifo_dir(["run", "--rm", "img", "id"], f)),
            ["run", "--fifo-dir", "/d/fifo", "--rm", "img", "id"]
        );
        assert_eq!(
            s(with_fifo_dir(["task", "exec", "--exec-id", "e", "id"], f))[..4],
            ["task", "exec", "--fifo-dir", "/d/fifo"]
        );
        assert_eq!(s(with_fifo_dir(["images", "ls"], f)), ["images", "ls"]);
        assert_eq!(s(with_fifo_dir(["run", "--fifo-dir", "/x", "i", "c"], f)), ["run", "--fifo-dir", "/x", "i", "c"]);
    }

    #[test]
    fn shim_config_has_the_cache_registries_metrics_and_the_tests_settings() {
        let opts = ContainerdOpts {
            insecure_registries: vec!["127.0.0.1:5000".into()],
            shim_settings: vec!["http_max_in_flight_requests = 3".into()],
            ..Default::default()
        };
        let text = shim_config(Path::new("/t/cache"), "127.0.0.1:19464".parse().unwrap(), &opts);
        assert_eq!(
            text,
            "cache_dir = \"/t/cache\"\ninsecure_registries = [\"127.0.0.1:5000\"]\n\
             metrics_address = \"127.0.0.1:19464\"\nhttp_max_in_flight_requests = 3\n"
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn wrongly_named_shim_is_rejected() {
        assert!(check_shim(Path::new("/bin/sh")).is_err());
    }
}

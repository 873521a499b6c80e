//! The seam between the task protocol and whatever runs a container's workload.
//!
//! The protocol side hands a [`Runtime`] a [`Launch`] (what containerd asked for, with stdio already
//! opened); the runtime answers with a [`Workload`] ready to start, or a [`LaunchError`] that the task
//! reports as its container's exit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use oci_spec::runtime::Spec;
use tokio::io::AsyncWrite;
use tokio::sync::watch;

/// Where a container's stdout and stderr go (already-open writers; `None` discards).
pub struct Stdio {
    /// The container's standard output.
    pub stdout: Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
    /// The container's standard error.
    pub stderr: Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
}

/// Everything a runtime needs to prepare one container.
pub struct Launch {
    /// The container id.
    pub id: String,
    /// The bundle directory (holds `config.json`).
    pub bundle: PathBuf,
    /// The OCI runtime spec from the bundle.
    pub spec: Spec,
    /// The container's root filesystem, mounted.
    pub rootfs: PathBuf,
    /// The container's stdio.
    pub stdio: Stdio,
    /// The network namespace the spec names (the pod's, for a CRI container); see [`network_namespace`].
    pub network_namespace: Option<PathBuf>,
}

/// The CRI annotation that says whether a container is a pod's sandbox or one of its containers.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// What kind of container containerd asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// A pod's sandbox (pause) container: it holds the pod's namespaces.
    Sandbox,
    /// An application container (of a pod, or started directly with `ctr`).
    App,
}

impl ContainerKind {
    /// Reads the kind from CRI's annotation; containers without it (`ctr run`) are applications.
    pub fn of(spec: &Spec) -> Self {
        let kind = spec.annotations().as_ref().and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION));
        match kind.map(String::as_str) {
            Some("sandbox") => ContainerKind::Sandbox,
            _ => ContainerKind::App,
        }
    }
}

/// The network namespace the spec puts the container in (`linux.namespaces[type=network].path`):
/// for a pod's containers, the pod's namespace. `None` means the host's or a new one.
pub fn network_namespace(spec: &Spec) -> Option<&Path> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)?
        .path()
        .as_deref()
}

/// Why a container could not be prepared; it ends with this code and message instead of starting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LaunchError {
    /// The exit code the container reports (shell conventions: 127 not found, 126 cannot run).
    pub exit_code: u32,
    /// A message for the container log and the termination-message file.
    pub message: String,
}

impl LaunchError {
    /// The component (or other entry point) does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { exit_code: 127, message: message.into() }
    }

    /// The entry point exists but cannot be run (invalid, fails to compile or link).
    pub fn cannot_run(message: impl Into<String>) -> Self {
        Self { exit_code: 126, message: message.into() }
    }
}

/// How a workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code as a process would report it (128+N for signal N).
    pub code: u32,
    /// Why it ended, when that is worth telling the user (a trap, a limit).
    pub reason: Option<String>,
    /// Ended by its memory limit: containerd hears a TaskOOM event, and the kubelet says `OOMKilled`.
    pub oom_killed: bool,
}

impl Exit {
    /// A plain exit with a code and no message.
    pub fn code(code: u32) -> Self {
        Self { code, reason: None, oom_killed: false }
    }

    /// An exit the user should be told about.
    pub fn failed(code: u32, reason: impl Into<String>) -> Self {
        Self { code, reason: Some(reason.into()), oom_killed: false }
    }

    /// Ended by the memory limit, with the exit code of a kernel OOM kill (128+SIGKILL).
    pub fn out_of_memory(reason: impl Into<String>) -> Self {
        Self { code: 128 + libc::SIGKILL as u32, reason: Some(reason.into()), oom_killed: true }
    }
}

/// Resource usage of a running workload, for `stats`.
#[derive(Debug, Default)]
pub struct Usage {
    /// Bytes of linear memories and tables the instance holds now.
    pub memory_bytes: AtomicU64,
    /// Highest value `memory_bytes` reached.
    pub memory_peak_bytes: AtomicU64,
    /// CPU time spent running the guest, in nanoseconds.
    pub cpu_nanos: AtomicU64,
}

impl Usage {
    /// Records the instance's current memory and keeps the peak.
    pub fn set_memory(&self, bytes: u64) {
        self.memory_bytes.store(bytes, Ordering::Relaxed);
        self.memory_peak_bytes.fetch_max(bytes, Ordering::Relaxed);
    }
}

/// A termination request, as `kill` delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub u32);

impl Signal {
    /// SIGTERM: stop gracefully.
    pub const TERM: Signal = Signal(libc::SIGTERM as u32);
    /// SIGKILL: stop at once.
    pub const KILL: Signal = Signal(libc::SIGKILL as u32);
}

/// A prepared container, ready to start.
pub trait Workload: Send {
    /// Runs the workload until it exits or a signal arrives on `signals`.
    fn start(self: Box<Self>, signals: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit>;

    /// Live resource usage, updated while the workload runs.
    fn usage(&self) -> Arc<Usage>;

    /// The workload's own process, when it has one (a delegated sandbox); `None` means it runs as an
    /// instance inside the daemon, which then reports its own pid.
    fn pid(&self) -> Option<u32> {
        None
    }
}

/// Prepares containers; one per daemon, shared by all tasks.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Loads, compiles and links what the container runs: every error a user can cause surfaces here.
    async fn prepare(&self, launch: Launch) -> Result<Box<dyn Workload>, LaunchError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, SpecBuilder};
    use std::collections::HashMap;

    fn annotated(kind: Option<&str>) -> Spec {
        let annotations: HashMap<String, String> =
            kind.map(|k| (CONTAINER_TYPE_ANNOTATION.to_string(), k.to_string())).into_iter().collect();
        SpecBuilder::default().annotations(annotations).build().unwrap()
    }

    #[test]
    fn cri_annotation_tells_sandboxes_from_containers() {
        assert_eq!(ContainerKind::of(&annotated(Some("sandbox"))), ContainerKind::Sandbox);
        assert_eq!(ContainerKind::of(&annotated(Some("container"))), ContainerKind::App);
        assert_eq!(ContainerKind::of(&annotated(None)), ContainerKind::App, "ctr run has no annotation");
    }

    #[test]
    fn network_namespace_path_comes_from_the_spec() {
        let ns = |typ, path: Option<&str>| {
            let mut b = LinuxNamespaceBuilder::default().typ(typ);
            if let Some(p) = path {
                b = b.path(p);
            }
            b.build().unwrap()
        };
        let linux = LinuxBuilder::default()
            .namespaces(vec![
                ns(LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc")),
                ns(LinuxNamespaceType::Network, Some("/proc/42/ns/net")),
            ])
            .build()
            .unwrap();
        let spec = SpecBuilder::default().linux(linux).build().unwrap();
        assert_eq!(network_namespace(&spec), Some(Path::new("/proc/42/ns/net")));
        let fresh = LinuxBuilder::default().namespaces(vec![ns(LinuxNamespaceType::Network, None)]).build().unwrap();
        assert_eq!(network_namespace(&SpecBuilder::default().linux(fresh).build().unwrap()), None);
    }
}

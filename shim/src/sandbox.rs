//! Pod sandboxes held by the daemon itself, with no process (docs/shim.md, "Pod sandboxes").
//!
//! containerd pins a pod's network namespace before it creates the sandbox and names it in the
//! sandbox's spec; the pod's components are instances in the daemon and need nothing else a pause
//! process would hold. So a held sandbox is a record of that namespace, kept while the sandbox lives.
//! CRI names an application container's network namespace through the sandbox's pid
//! (`/proc/<pid>/ns/net`), which for a held sandbox is the daemon's own; the record replaces it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::runtime::{next_signal, Exit, Launch, LaunchError, Signal, Usage, Workload};
use crate::spec::ContainerSpec;

/// Sandbox id → the pod's network namespace (`None`: the node's, for host-network pods).
type Records = HashMap<String, Option<PathBuf>>;

/// The sandboxes the daemon holds; cheap to clone, one per daemon.
#[derive(Clone, Default)]
pub struct HeldSandboxes {
    records: Arc<Mutex<Records>>,
}

impl HeldSandboxes {
    /// A sandbox for `launch`, recorded until its workload ends (or is dropped unstarted).
    pub fn hold(&self, launch: Launch) -> Box<dyn Workload> {
        let network = launch.spec.network_namespace.clone();
        tracing::info!(id = %launch.id, netns = ?network, "pod sandbox held by the daemon, with no process");
        self.records().insert(launch.id.clone(), network);
        Box::new(HeldSandbox { record: Record { records: self.records.clone(), id: launch.id }, usage: Arc::default() })
    }

    /// Puts an application container into its pod's network namespace when the daemon holds the pod's
    /// sandbox; `daemon_pid` is the pid the daemon reports for its tasks.
    pub fn place(&self, spec: &mut ContainerSpec, daemon_pid: u32) -> Result<(), LaunchError> {
        let held = spec.sandbox_id.as_ref().and_then(|id| self.records().get(id).cloned());
        match held {
            Some(network) => spec.network_namespace = network,
            // The spec points at the daemon's own namespace only when it came from a held sandbox's pid:
            // one this daemon no longer knows (it was restarted, or the sandbox is gone).
            None if spec.network_namespace.as_deref().is_some_and(|p| is_namespace_of(p, daemon_pid)) => {
                return Err(LaunchError::cannot_run(format!(
                    "the pod's sandbox {} is not held by this node daemon any more (the daemon was restarted or \
                     the sandbox stopped); the pod has to be created again",
                    spec.sandbox_id.as_deref().unwrap_or("(not named in the spec)")
                )));
            }
            None => {}
        }
        Ok(())
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        // A panic while holding the lock cannot leave the map half-changed: each use is one call.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `path` is a namespace file of process `pid` (`/proc/<pid>/ns/<type>`).
fn is_namespace_of(path: &Path, pid: u32) -> bool {
    path.parent() == Some(Path::new(&format!("/proc/{pid}/ns")))
}

/// Removes its sandbox's record when dropped.
struct Record {
    records: Arc<Mutex<Records>>,
    id: String,
}

impl Drop for Record {
    fn drop(&mut self) {
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.id);
    }
}

/// A sandbox that runs nothing: it lives until it is signalled, and ends as a pause process would.
struct HeldSandbox {
    record: Record,
    usage: Arc<Usage>,
}

impl Workload for HeldSandbox {
    fn start(self: Box<Self>, mut signals: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit> {
        Box::pin(async move {
            let signal = next_signal(&mut signals).await;
            tracing::info!(id = %self.record.id, signal = signal.0, "held pod sandbox stops");
            drop(self.record);
            exit_of(signal)
        })
    }

    fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }
}

/// The pause process exits 0 on SIGINT and SIGTERM; other signals end it as they end any process.
fn exit_of(signal: Signal) -> Exit {
    if signal == Signal::TERM || signal.0 == libc::SIGINT as u32 {
        Exit::code(0)
    } else {
        Exit::code(128 + signal.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Stdio;
    use crate::spec::ContainerKind;

    fn launch(id: &str, network: Option<&str>) -> Launch {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": { "io.kubernetes.cri.container-type": "sandbox" },
            "linux": { "namespaces": network.map(|p| vec![serde_json::json!({ "type": "network", "path": p })]) },
        });
        let spec = ContainerSpec::from_oci(id, &serde_json::from_value(spec).unwrap()).unwrap();
        Launch {
            id: id.into(),
            bundle: PathBuf::from("/nonexistent"),
            spec,
            rootfs: PathBuf::from("/nonexistent/rootfs"),
            stdio: Stdio { stdout: None, stderr: None },
        }
    }

    fn app(sandbox: &str, network: &str) -> ContainerSpec {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": sandbox,
            },
            "linux": { "namespaces": [{ "type": "network", "path": network }] },
        });
        ContainerSpec::from_oci("c", &serde_json::from_value(spec).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_pods_containers_get_its_namespace_until_the_sandbox_ends() {
        let held = HeldSandboxes::default();
        let sandbox = held.hold(launch("pod-a", Some("/var/run/netns/cni-a")));
        let _host = held.hold(launch("pod-host", None));

        // CRI points the container at the sandbox's pid, which is the daemon's.
        let mut spec = app("pod-a", "/proc/4242/ns/net");
        assert_eq!(spec.kind, ContainerKind::App);
        held.place(&mut spec, 4242).unwrap();
        assert_eq!(spec.network_namespace, Some(PathBuf::from("/var/run/netns/cni-a")));
        let mut spec = app("pod-host", "/proc/4242/ns/net");
        held.place(&mut spec, 4242).unwrap();
        assert_eq!(spec.network_namespace, None, "a host-network pod runs in the node's namespace");
        // A pod whose sandbox is a real process keeps the path CRI gave.
        let mut spec = app("pod-with-pause", "/proc/77/ns/net");
        held.place(&mut spec, 4242).unwrap();
        assert_eq!(spec.network_namespace, Some(PathBuf::from("/proc/77/ns/net")));

        let (signals, rx) = watch::channel(None);
        let running = tokio::spawn(sandbox.start(rx));
        signals.send_replace(Some(Signal::KILL));
        assert_eq!(running.await.unwrap(), Exit::code(137), "SIGKILL ends it as it ends a process");
        let mut spec = app("pod-a", "/proc/4242/ns/net");
        let err = held.place(&mut spec, 4242).unwrap_err();
        assert_eq!(err.exit_code, 126);
        assert!(err.message.contains("pod's sandbox pod-a is not held by this node daemon"), "{}", err.message);
    }

    #[tokio::test]
    async fn sigterm_ends_a_held_sandbox_with_0_and_an_unstarted_one_leaves_no_record() {
        let held = HeldSandboxes::default();
        let sandbox = held.hold(launch("pod-b", Some("/var/run/netns/cni-b")));
        let (signals, rx) = watch::channel(None);
        let running = tokio::spawn(sandbox.start(rx));
        signals.send_replace(Some(Signal::TERM));
        assert_eq!(running.await.unwrap(), Exit::code(0), "as the pause process exits on SIGTERM");

        drop(held.hold(launch("pod-c", Some("/var/run/netns/cni-c"))));
        assert!(held.records().is_empty(), "{:?}", held.records().keys().collect::<Vec<_>>());
    }
}

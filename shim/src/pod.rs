//! The daemon's [`Runtime`]: routes a pod's sandbox to the daemon's own records or to runc, and its
//! application containers to the wasmtime engine, by CRI's annotations (docs/shim.md, "Pod sandboxes").

use async_trait::async_trait;

use crate::engine::NodeEngine;
use crate::runc::RuncSandboxes;
use crate::runtime::{Launch, LaunchError, Runtime, Workload};
use crate::sandbox::HeldSandboxes;
use crate::spec::{ContainerKind, SandboxHolder};

/// Every container of the node: sandboxes held by the daemon (or run by runc when a pod needs a
/// process), components in the one engine.
pub struct NodeRuntime {
    engine: NodeEngine,
    held: HeldSandboxes,
    processes: RuncSandboxes,
    /// The pid the daemon's tasks report; CRI names held sandboxes' namespaces through it.
    daemon_pid: u32,
}

impl NodeRuntime {
    /// Routes to `engine`, the daemon's held sandboxes, and `processes` for sandboxes that need one.
    pub fn new(engine: NodeEngine, processes: RuncSandboxes) -> Self {
        Self { engine, held: HeldSandboxes::default(), processes, daemon_pid: std::process::id() }
    }

    /// The wasmtime side.
    pub fn engine(&self) -> &NodeEngine {
        &self.engine
    }
}

#[async_trait]
impl Runtime for NodeRuntime {
    async fn prepare(&self, mut launch: Launch) -> Result<Box<dyn Workload>, LaunchError> {
        match launch.spec.kind {
            ContainerKind::Sandbox(SandboxHolder::Daemon) => Ok(self.held.hold(launch)),
            ContainerKind::Sandbox(SandboxHolder::Process(why)) => {
                tracing::info!(id = %launch.id, ?why, "pod sandbox needs a process: runc runs its pause");
                self.processes.prepare(launch).await
            }
            ContainerKind::App => {
                self.held.place(&mut launch.spec, self.daemon_pid)?;
                self.engine.prepare(launch).await
            }
        }
    }
}

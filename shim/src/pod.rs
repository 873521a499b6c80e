//! The daemon's [`Runtime`]: routes a pod's sandbox to runc and its application containers to the
//! wasmtime engine, by CRI's container-type annotation.

use async_trait::async_trait;

use crate::engine::NodeEngine;
use crate::runc::RuncSandboxes;
use crate::runtime::{Launch, LaunchError, Runtime, Workload};
use crate::spec::ContainerKind;

/// Every container of the node: sandboxes through runc, components in the one engine.
pub struct NodeRuntime {
    engine: NodeEngine,
    sandboxes: RuncSandboxes,
}

impl NodeRuntime {
    /// Routes to `engine` and `sandboxes`.
    pub fn new(engine: NodeEngine, sandboxes: RuncSandboxes) -> Self {
        Self { engine, sandboxes }
    }

    /// The wasmtime side.
    pub fn engine(&self) -> &NodeEngine {
        &self.engine
    }
}

#[async_trait]
impl Runtime for NodeRuntime {
    async fn prepare(&self, launch: Launch) -> Result<Box<dyn Workload>, LaunchError> {
        match launch.spec.kind {
            ContainerKind::Sandbox => self.sandboxes.prepare(launch).await,
            ContainerKind::App => self.engine.prepare(launch).await,
        }
    }
}

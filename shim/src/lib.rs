//! wasmkube's containerd shim: every WebAssembly container of a node runs as an instance inside one
//! long-lived daemon with one wasmtime engine.
//!
//! The crate is split the way runwasi splits its crates, but inside one daemon:
//! - [`task`] speaks containerd's runtime v2 task protocol and knows nothing about wasmtime;
//! - [`engine`] runs components and knows nothing about ttrpc;
//! - [`runtime`] is the seam between them, and [`spec`] what both use of a container's OCI spec;
//! - [`daemon`] is the `start`/`delete` side of the shim binary (finding or starting the node daemon);
//! - [`metrics`] counts every wasi:http container's requests for the node's metrics endpoint;
//! - [`pod`] routes a pod's sandbox to the daemon's [`sandbox`] records (or to [`runc`] when the pod needs
//!   a process) and its components to the engine.

pub mod config;
pub mod daemon;
pub mod engine;
pub mod metrics;
pub mod pod;
pub mod runc;
pub mod runtime;
pub mod sandbox;
pub mod spec;
pub mod striped;
pub mod task;

/// The containerd runtime type this shim serves (design: names).
pub use wasmkube_contract::runtime::RUNTIME_TYPE;

//! Label keys and values that more than one part reads or writes.

/// The node label the installer sets when the runtime is ready; the RuntimeClass selects nodes by it.
pub const NODE_RUNTIME_LABEL: &str = "wasmkube.dev/runtime";
/// The value of [`NODE_RUNTIME_LABEL`] on a ready node.
pub const NODE_RUNTIME_READY: &str = "ready";
/// The label that names a WasmApp in external-metric selectors (HPA metric selector ↔ metrics API).
pub const APP_METRIC_LABEL: &str = "wasmkube.dev/app";

//! How containerd and the CRI reach the shim: runtime names, and the CRI annotations the shim reads.

/// The RuntimeClass name and its CRI handler (the runtime's name in containerd's config).
pub const HANDLER: &str = "wasmkube";
/// The containerd runtime type; containerd starts `containerd-shim-wasmkube-v1` for it.
pub const RUNTIME_TYPE: &str = "io.containerd.wasmkube.v1";
/// The shim binary containerd resolves [`RUNTIME_TYPE`] to (on its PATH).
pub const SHIM_BINARY: &str = "containerd-shim-wasmkube-v1";

/// CRI annotation: whether a container is a pod's `sandbox` or one of its `container`s.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// CRI annotation: the pod's namespace.
pub const SANDBOX_NAMESPACE_ANNOTATION: &str = "io.kubernetes.cri.sandbox-namespace";
/// CRI annotation: the pod's name.
pub const SANDBOX_NAME_ANNOTATION: &str = "io.kubernetes.cri.sandbox-name";
/// CRI annotation: the id of the pod sandbox a container belongs to (on application containers).
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// CRI annotation: the container's name in its pod.
pub const CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";
/// The pod's own `terminationMessagePath`. CRI copies it into the spec only when the runtime entry lists it
/// in `container_annotations`, so the runtime entry names it (see [`PASSED_ANNOTATIONS`]).
pub const TERMINATION_MESSAGE_PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
/// Where Kubernetes expects the termination message when the pod names no path.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// Container annotations the runtime entry asks CRI to pass into the spec.
pub const PASSED_ANNOTATIONS: [&str; 1] = [TERMINATION_MESSAGE_PATH_ANNOTATION];

/// Pod annotation: `"true"` gives the pod a real pause process as its sandbox (docs/shim.md, "Pod sandboxes").
/// Without it a wasm pod's sandbox is held by the node daemon, with no process of its own.
pub const SANDBOX_PROCESS_ANNOTATION: &str = "wasmkube.dev/sandbox-process";

/// Pod annotations the runtime entry asks CRI to pass into the sandbox's and the containers' specs.
pub const PASSED_POD_ANNOTATIONS: [&str; 1] = [SANDBOX_PROCESS_ANNOTATION];

//! Metric names and labels: the node metrics endpoint and the activator serve them, the operator scrapes
//! them, and the HPA asks the external metrics API for the derived ones.

/// Counter: requests a wasi:http container answered, kubelet probes excluded.
pub const REQUESTS_TOTAL: &str = "wasmkube_http_requests_total";
/// Gauge: requests a wasi:http container is handling now, kubelet probes excluded.
pub const REQUESTS_IN_FLIGHT: &str = "wasmkube_http_requests_in_flight";
/// Gauge: requests an activator holds for an app that has no ready replica.
pub const ACTIVATOR_HELD: &str = "wasmkube_activator_requests_held";
/// Counter: wake-ups (scale from zero) an activator asked for.
pub const ACTIVATOR_WAKES: &str = "wasmkube_activator_wakes_total";
/// External metric: an app's request rate over the operator's window.
pub const EXTERNAL_REQUESTS_PER_SECOND: &str = "wasmkube_http_requests_per_second";
/// External metric: an app's requests in flight, summed over its pods and activators.
pub const EXTERNAL_IN_FLIGHT: &str = REQUESTS_IN_FLIGHT;

/// Label: the Kubernetes namespace of the series' app.
pub const LABEL_NAMESPACE: &str = "namespace";
/// Label: the WasmApp's name.
pub const LABEL_WASMAPP: &str = "wasmapp";
/// Label: the pod's name.
pub const LABEL_POD: &str = "pod";
/// Label: the container's name in its pod.
pub const LABEL_CONTAINER: &str = "container";

//! Per-container HTTP request metrics of the node (requests and requests in flight of every wasi:http
//! container), served in Prometheus text format on a node endpoint for the operator's autoscaling.

mod endpoint;
mod exposition;
mod labels;
mod registry;

pub use endpoint::{respond, spawn_endpoint};
pub use exposition::{render, CONTENT_TYPE, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL};
pub use labels::{
    ContainerLabels, APP_ENV, CONTAINER_NAME_ANNOTATION, NAMESPACE_ENV, SANDBOX_NAMESPACE_ANNOTATION,
    SANDBOX_NAME_ANNOTATION,
};
pub use registry::{is_kubelet_probe, ContainerSeries, HttpMetrics, InFlight, Registration, Sample};

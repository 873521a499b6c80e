//! Per-container HTTP request metrics of the node (requests and requests in flight of every wasi:http
//! container), served in Prometheus text format on a node endpoint for the operator's autoscaling.

mod endpoint;
mod exposition;
mod labels;
mod registry;

pub use endpoint::{respond, spawn_endpoint};
pub use exposition::{render, CONTENT_TYPE};
pub use labels::ContainerLabels;
pub use registry::{is_kubelet_probe, ContainerSeries, HttpMetrics, Registration, Sample};

//! wasmkube operator: the `WasmApp` CRD and the controller that turns it into Kubernetes objects.

pub mod activator;
pub mod app_key;
pub mod children;
pub mod component;
pub mod controller;
pub mod crd;
pub mod demand;
pub mod error;
pub mod events;
pub mod external_metrics;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod net;
pub mod render;
pub mod resolve;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod status;

//! Demand of WasmApps: scrape the node shims' and the activators' metrics, keep a short window of
//! samples, and compute per app the request rate and in-flight requests the HPA scales on.

pub mod kube_targets;
pub mod node_token;
pub mod parse;
pub mod scrape;
pub mod store;

use std::time::Duration;

use wasmkube_contract::node::NODE_METRICS_PORT;

pub use kube_targets::KubeTargets;
pub use scrape::{run, scrape_once, Targets, TargetsError};
pub use store::{AppDemand, AppKey, Demand, PodRef};

/// Settings of the demand pipeline (window, scraping, where the targets are).
#[derive(Clone, Debug)]
pub struct DemandSettings {
    /// Span of the window rates are computed over; series silent for longer are dropped.
    pub window: Duration,
    /// Time between two scrape rounds.
    pub scrape_interval: Duration,
    /// Time one target has to answer.
    pub scrape_timeout: Duration,
    /// Targets fetched at the same time.
    pub scrape_concurrency: usize,
    /// Port of the node shim daemon's metrics endpoint (on the node's host IP).
    pub node_metrics_port: u16,
    /// Port of the operator pods' `/metrics` (the activator's held requests).
    pub operator_metrics_port: u16,
    /// Name of the Service whose EndpointSlices list the activator (operator) pods.
    pub activator_service: String,
    /// Sent with every scrape: the nodes' endpoints serve only scrapes that carry it.
    pub node_token: Option<node_token::BearerToken>,
}

impl Default for DemandSettings {
    fn default() -> Self {
        Self {
            window: store::DEFAULT_WINDOW,
            scrape_interval: Duration::from_secs(5),
            scrape_timeout: Duration::from_secs(3),
            scrape_concurrency: 16,
            node_metrics_port: NODE_METRICS_PORT,
            operator_metrics_port: 8080,
            activator_service: "wasmkube-activator".to_string(),
            node_token: None,
        }
    }
}

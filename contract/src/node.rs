//! What the node installer puts on a node for the shim, and where the operator finds the shim's endpoint.

#[cfg(feature = "node-config")]
pub mod config;

#[cfg(feature = "node-config")]
pub use config::{NodeConfig, NodeConfigError};

/// The shim daemon's node config file, written by the installer from the chart's values.
pub const SHIM_CONFIG_PATH: &str = "/etc/wasmkube/shim.toml";
/// Environment variable naming another node config file (containerd passes its environment to shims).
pub const SHIM_CONFIG_ENV: &str = "WASMKUBE_SHIM_CONFIG";
/// Port of the shim daemon's metrics endpoint on every node, which the operator scrapes.
pub const NODE_METRICS_PORT: u16 = 9464;
/// The node file holding the bearer token the metrics endpoint asks for: the installer writes it from the
/// operator's Secret, shim.toml names it in `metrics_token_file`.
pub const METRICS_TOKEN_PATH: &str = "/etc/wasmkube/metrics-token";
/// The key of the token in that Secret (the operator fills it, the installer reads it).
pub const METRICS_TOKEN_KEY: &str = "token";

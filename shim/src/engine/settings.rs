//! The node settings the engine runs with; the daemon maps its configuration file onto them.

use std::path::PathBuf;
use std::time::Duration;

use wasmkube_contract::node::NodeConfig;

/// Node-wide settings of the engine (design: node configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    /// Node cache of blobs and precompiled code.
    pub cache_dir: PathBuf,
    /// Size bound of the cache in bytes.
    pub cache_max_bytes: u64,
    /// Registries (`host:port`) that may be reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// How wasi:http components are served.
    pub http: HttpSettings,
}

impl Default for EngineSettings {
    fn default() -> Self {
        // The file's defaults are the engine's: one place (the contract) says what an absent key means.
        crate::config::engine_settings(&NodeConfig::default())
    }
}

/// Node-wide settings of wasi:http serving (node config keys `default_http_port` and `http_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Port when the container's env does not name one.
    pub default_port: u16,
    /// Requests one container handles at once; more are answered 503 at once.
    pub max_in_flight: usize,
    /// Longest a request may run in the guest; then it is stopped and answered 504.
    pub request_timeout: Duration,
    /// Largest request body a guest receives; a larger declared one is answered 413.
    pub max_request_body_bytes: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        EngineSettings::default().http
    }
}

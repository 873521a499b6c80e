//! The node configuration file of the shim daemon (docs/design.md; its keys in docs/shim.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::{EngineSettings, HttpSettings};

pub use wasmkube_contract::node::{SHIM_CONFIG_ENV as CONFIG_ENV, SHIM_CONFIG_PATH as DEFAULT_CONFIG_PATH};

/// Where the node's metrics endpoint listens unless configured: every address of the host's network, on the
/// port the operator scrapes.
fn default_metrics_address() -> String {
    format!("0.0.0.0:{}", wasmkube_contract::node::NODE_METRICS_PORT)
}

/// Settings of the node daemon; every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Node cache of blobs and precompiled code.
    pub cache_dir: PathBuf,
    /// Size bound of the cache in bytes.
    pub cache_max_bytes: u64,
    /// Registries (`host:port`) that may be reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Port a wasi:http component listens on when the spec names none.
    pub default_http_port: u16,
    /// Seconds the daemon stays up after its last task is deleted, so that the next pod finds the
    /// engine and compiled components warm; then it exits.
    pub idle_exit_seconds: u64,
    /// Requests one wasi:http container handles at once; more are answered 503.
    pub http_max_in_flight_requests: usize,
    /// Seconds a request may run in a wasi:http guest before it is stopped and answered 504.
    pub http_request_timeout_seconds: u64,
    /// Largest request body a wasi:http guest receives, in bytes.
    pub http_max_request_body_bytes: u64,
    /// `host:port` of the node's metrics endpoint (`GET /metrics`); empty disables it.
    pub metrics_address: String,
    /// File holding the bearer token the metrics endpoint asks every scrape for (the chart's installer
    /// writes it); empty: the endpoint asks for none.
    pub metrics_token_file: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        // The engine's defaults are the file's: one place says what an absent key means.
        let EngineSettings { cache_dir, cache_max_bytes, insecure_registries, http } = EngineSettings::default();
        Self {
            cache_dir,
            cache_max_bytes,
            insecure_registries,
            default_http_port: http.default_port,
            idle_exit_seconds: 5,
            http_max_in_flight_requests: http.max_in_flight,
            http_request_timeout_seconds: http.request_timeout.as_secs(),
            http_max_request_body_bytes: http.max_request_body_bytes,
            metrics_address: default_metrics_address(),
            metrics_token_file: PathBuf::new(),
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read the shim configuration {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML for these keys.
    #[error("invalid shim configuration {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
}

impl NodeConfig {
    /// Loads from `$WASMKUBE_SHIM_CONFIG`, else the default path; a missing file means defaults.
    pub fn load() -> Result<Self, ConfigError> {
        let path = std::env::var_os(CONFIG_ENV).map(PathBuf::from).unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
        Self::load_from(&path)
    }

    /// Loads from `path`; a missing file means defaults.
    pub fn load_from(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path: path.into(), source }),
        }
    }
}

impl NodeConfig {
    /// The settings the engine runs with.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            cache_dir: self.cache_dir.clone(),
            cache_max_bytes: self.cache_max_bytes,
            insecure_registries: self.insecure_registries.clone(),
            http: HttpSettings {
                default_port: self.default_http_port,
                max_in_flight: self.http_max_in_flight_requests.max(1),
                request_timeout: Duration::from_secs(self.http_request_timeout_seconds.max(1)),
                max_request_body_bytes: self.http_max_request_body_bytes,
            },
        }
    }

    /// The metrics endpoint's address, `None` when disabled (an empty `metrics_address`).
    pub fn metrics_address(&self) -> Option<&str> {
        Some(self.metrics_address.trim()).filter(|a| !a.is_empty())
    }

    /// The metrics endpoint's token file, `None` when no token is asked for.
    pub fn metrics_token_file(&self) -> Option<&Path> {
        Some(self.metrics_token_file.as_path()).filter(|p| !p.as_os_str().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_means_defaults() {
        let cfg = NodeConfig::load_from(Path::new("/nonexistent/shim.toml")).unwrap();
        assert_eq!(cfg, NodeConfig::default());
    }

    #[test]
    fn keys_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.toml");
        std::fs::write(&path, "cache_dir = \"/tmp/c\"\ninsecure_registries = [\"127.0.0.1:5000\"]\n").unwrap();
        let cfg = NodeConfig::load_from(&path).unwrap();
        assert_eq!(cfg.cache_dir, PathBuf::from("/tmp/c"));
        assert_eq!(cfg.insecure_registries, vec!["127.0.0.1:5000"]);
        assert_eq!(cfg.default_http_port, 8080);
    }

    #[test]
    fn metrics_endpoint_is_on_by_default_and_an_empty_address_disables_it() {
        assert_eq!(NodeConfig::default().metrics_address(), Some("0.0.0.0:9464"));
        let off: NodeConfig = toml::from_str("metrics_address = \"\"\n").unwrap();
        assert_eq!(off.metrics_address(), None);
        let local: NodeConfig = toml::from_str("metrics_address = \"127.0.0.1:19464\"\n").unwrap();
        assert_eq!(local.metrics_address(), Some("127.0.0.1:19464"));
    }

    #[test]
    fn defaults_map_onto_the_engines_defaults() {
        assert_eq!(NodeConfig::default().engine_settings(), EngineSettings::default());
        let zeros: NodeConfig =
            toml::from_str("http_max_in_flight_requests = 0\nhttp_request_timeout_seconds = 0\n").unwrap();
        let http = zeros.engine_settings().http;
        assert_eq!((http.max_in_flight, http.request_timeout), (1, Duration::from_secs(1)), "zero would serve nothing");
    }

    #[test]
    fn unknown_keys_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.toml");
        std::fs::write(&path, "cache_size = 3\n").unwrap();
        let err = NodeConfig::load_from(&path).unwrap_err().to_string();
        assert!(err.contains("cache_size") && err.contains("shim.toml"), "{err}");
    }
}

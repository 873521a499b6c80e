//! The node configuration file of the shim daemon: where it is read from, and how its settings map onto the
//! engine. Its keys, defaults and checks are the contract's (`wasmkube_contract::node::config`; docs/shim.md).

use std::path::{Path, PathBuf};

use crate::engine::{EngineSettings, HttpSettings};

pub use wasmkube_contract::node::{NodeConfig, NodeConfigError};
pub use wasmkube_contract::node::{SHIM_CONFIG_ENV as CONFIG_ENV, SHIM_CONFIG_PATH as DEFAULT_CONFIG_PATH};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read the shim configuration {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML for these keys, or a value is out of range.
    #[error("invalid shim configuration {path}: {source}")]
    Parse { path: PathBuf, source: NodeConfigError },
}

/// Loads from `$WASMKUBE_SHIM_CONFIG`, else the default path; a missing file means defaults.
pub fn load() -> Result<NodeConfig, ConfigError> {
    let path = std::env::var_os(CONFIG_ENV).map(PathBuf::from).unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    load_from(&path)
}

/// Loads from `path`; a missing file means defaults.
pub fn load_from(path: &Path) -> Result<NodeConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => NodeConfig::parse(&text).map_err(|source| ConfigError::Parse { path: path.into(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeConfig::default()),
        Err(source) => Err(ConfigError::Read { path: path.into(), source }),
    }
}

/// The settings the engine runs with.
pub fn engine_settings(config: &NodeConfig) -> EngineSettings {
    EngineSettings {
        cache_dir: config.cache_dir.clone(),
        cache_max_bytes: config.cache_max_bytes,
        insecure_registries: config.insecure_registries.clone(),
        http: HttpSettings {
            default_port: config.default_http_port,
            max_in_flight: config.http_max_in_flight(),
            request_timeout: config.http_request_timeout(),
            max_request_body_bytes: config.http_max_request_body_bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn missing_file_means_defaults() {
        let cfg = load_from(Path::new("/nonexistent/shim.toml")).unwrap();
        assert_eq!(cfg, NodeConfig::default());
    }

    #[test]
    fn keys_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.toml");
        std::fs::write(&path, "cache_dir = \"/tmp/c\"\nhttp_request_timeout_seconds = 0\n").unwrap();
        let settings = engine_settings(&load_from(&path).unwrap());
        assert_eq!(settings.cache_dir, PathBuf::from("/tmp/c"));
        assert_eq!(settings.http.request_timeout, Duration::from_secs(1), "zero would stop every request");
    }

    #[test]
    fn the_largest_in_flight_bound_fits_a_semaphore() {
        let most = NodeConfig {
            http_max_in_flight_requests: wasmkube_contract::node::config::MAX_HTTP_IN_FLIGHT_REQUESTS,
            ..NodeConfig::default()
        };
        let permits = engine_settings(&most).http.max_in_flight;
        assert!(permits <= tokio::sync::Semaphore::MAX_PERMITS);
        assert_eq!(tokio::sync::Semaphore::new(permits).available_permits(), permits);
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.toml");
        std::fs::write(&path, "cache_size = 3\n").unwrap();
        let err = load_from(&path).unwrap_err().to_string();
        assert!(err.contains("cache_size") && err.contains("shim.toml"), "{err}");
        std::fs::write(&path, "http_max_in_flight_requests = 9223372036854775807\n").unwrap();
        let err = load_from(&path).unwrap_err().to_string();
        assert!(err.contains("http_max_in_flight_requests") && err.contains("shim.toml"), "{err}");
    }
}

//! The shim's node config file (`shim.toml`): its keys, what an absent key means, and the checks a file must
//! pass. Text in, typed settings out, no I/O: the shim reads the file and maps the settings onto its engine.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NODE_METRICS_PORT;

/// Most requests one wasi:http container may be allowed to handle at once.
// Why a bound: the shim counts them with a tokio semaphore, which panics above `usize::MAX >> 3` permits.
pub const MAX_HTTP_IN_FLIGHT_REQUESTS: usize = 1_000_000;

/// Settings of the node daemon; every key is optional (docs/shim.md, "Node configuration").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Requests one wasi:http container handles at once; more are answered 503 (0 counts as 1).
    pub http_max_in_flight_requests: usize,
    /// Seconds a request may run in a wasi:http guest before it is stopped and answered 504 (0 counts as 1).
    pub http_request_timeout_seconds: u64,
    /// Largest request body a wasi:http guest receives, in bytes.
    pub http_max_request_body_bytes: u64,
    /// `host:port` of the node's metrics endpoint (`GET /metrics`); empty disables it.
    pub metrics_address: String,
    /// File holding the bearer token the metrics endpoint asks every scrape for (the chart's installer
    /// writes it, `super::METRICS_TOKEN_PATH`); empty: the endpoint asks for none.
    pub metrics_token_file: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("/var/lib/wasmkube/cache"),
            cache_max_bytes: 10 * 1024 * 1024 * 1024,
            insecure_registries: Vec::new(),
            default_http_port: 8080,
            idle_exit_seconds: 5,
            http_max_in_flight_requests: 100,
            http_request_timeout_seconds: 60,
            http_max_request_body_bytes: 16 * 1024 * 1024,
            // Every address of the host's network, on the port the operator scrapes.
            metrics_address: format!("0.0.0.0:{NODE_METRICS_PORT}"),
            metrics_token_file: PathBuf::new(),
        }
    }
}

/// Why a node config text cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// A value outside what the shim can run with.
    #[error("{key} = {value} is out of range (at most {max})")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value given.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
}

impl NodeConfig {
    /// Parses and checks the text of a node config file.
    pub fn parse(text: &str) -> Result<Self, NodeConfigError> {
        let config: Self = toml::from_str(text)?;
        if config.http_max_in_flight_requests > MAX_HTTP_IN_FLIGHT_REQUESTS {
            return Err(NodeConfigError::OutOfRange {
                key: "http_max_in_flight_requests",
                value: config.http_max_in_flight_requests as u64,
                max: MAX_HTTP_IN_FLIGHT_REQUESTS as u64,
            });
        }
        Ok(config)
    }

    /// Requests one wasi:http container handles at once: from 1 to [`MAX_HTTP_IN_FLIGHT_REQUESTS`].
    pub fn http_max_in_flight(&self) -> usize {
        // Why at least 1: zero would serve nothing.
        self.http_max_in_flight_requests.clamp(1, MAX_HTTP_IN_FLIGHT_REQUESTS)
    }

    /// Longest a request may run in a wasi:http guest: at least one second.
    pub fn http_request_timeout(&self) -> Duration {
        Duration::from_secs(self.http_request_timeout_seconds.max(1))
    }

    /// How long the daemon lingers after its last task.
    pub fn idle_exit(&self) -> Duration {
        Duration::from_secs(self.idle_exit_seconds)
    }

    /// The metrics endpoint's address, `None` when disabled (an empty `metrics_address`).
    pub fn metrics_address(&self) -> Option<&str> {
        Some(self.metrics_address.trim()).filter(|a| !a.is_empty())
    }

    /// The metrics endpoint's token file, `None` when no token is asked for.
    pub fn metrics_token_file(&self) -> Option<&std::path::Path> {
        Some(self.metrics_token_file.as_path()).filter(|p| !p.as_os_str().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_means_defaults_and_keys_override_them() {
        assert_eq!(NodeConfig::parse("").unwrap(), NodeConfig::default());
        let cfg = NodeConfig::parse("cache_dir = \"/tmp/c\"\ninsecure_registries = [\"127.0.0.1:5000\"]\n").unwrap();
        assert_eq!(cfg.cache_dir, PathBuf::from("/tmp/c"));
        assert_eq!(cfg.insecure_registries, vec!["127.0.0.1:5000"]);
        assert_eq!(cfg.default_http_port, 8080);
    }

    #[test]
    fn metrics_endpoint_is_on_by_default_and_an_empty_address_disables_it() {
        assert_eq!(NodeConfig::default().metrics_address(), Some("0.0.0.0:9464"));
        assert_eq!(NodeConfig::parse("metrics_address = \"\"\n").unwrap().metrics_address(), None);
        let local = NodeConfig::parse("metrics_address = \"127.0.0.1:19464\"\n").unwrap();
        assert_eq!(local.metrics_address(), Some("127.0.0.1:19464"));
    }

    #[test]
    fn zero_limits_count_as_one() {
        let zeros = NodeConfig::parse("http_max_in_flight_requests = 0\nhttp_request_timeout_seconds = 0\n").unwrap();
        assert_eq!((zeros.http_max_in_flight(), zeros.http_request_timeout()), (1, Duration::from_secs(1)));
    }

    #[test]
    fn more_in_flight_requests_than_the_shim_can_count_are_refused() {
        // i64::MAX: a valid TOML integer and usize on 64-bit hosts, beyond what a semaphore holds.
        let err = NodeConfig::parse("http_max_in_flight_requests = 9223372036854775807\n").unwrap_err();
        assert!(err.to_string().contains("http_max_in_flight_requests"), "{err}");
        let max = format!("http_max_in_flight_requests = {MAX_HTTP_IN_FLIGHT_REQUESTS}\n");
        assert_eq!(NodeConfig::parse(&max).unwrap().http_max_in_flight(), MAX_HTTP_IN_FLIGHT_REQUESTS);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let err = NodeConfig::parse("cache_size = 3\n").unwrap_err().to_string();
        assert!(err.contains("cache_size"), "{err}");
        let err = NodeConfig::parse("cache_max_bytes = -1\n").unwrap_err().to_string();
        assert!(err.contains("cache_max_bytes"), "{err}");
    }
}

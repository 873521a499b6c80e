//! The command line: subcommands and the flags of `run`, each also read from an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

use wasmkube_contract::node::NODE_METRICS_PORT;

use crate::activator;
use crate::render::{self, ActivatorPorts, DEFAULT_PLACEHOLDER_IMAGE};

/// The `wasmkube-operator` command.
#[derive(Parser, Debug)]
#[command(name = "wasmkube-operator", version, about = "Reconciles WasmApp objects")]
pub struct Cli {
    /// What to do; running the controller when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the controller.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the WasmApp CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller (the default).
    Run,
}

/// Format of the log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    // Variants without docs: clap would list them and make `--help` long.
    Json,
    Text,
}

/// Flags of the controller, as given; [`super::Settings`] is what they mean. Global, so that they may come
/// before or after `run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Container image of `oci://` pods (pulled by the kubelet, never run).
    #[arg(long, env = "WASMKUBE_PLACEHOLDER_IMAGE", default_value = DEFAULT_PLACEHOLDER_IMAGE, global = true)]
    pub placeholder_image: String,
    /// DNS suffix of in-cluster Service URLs.
    #[arg(long, env = "WASMKUBE_CLUSTER_DOMAIN", default_value = "cluster.local", global = true)]
    pub cluster_domain: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "WASMKUBE_HTTP_ADDR", default_value = "0.0.0.0:8080", global = true)]
    pub http_addr: SocketAddr,
    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "WASMKUBE_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set, global = true)]
    pub leader_election: bool,
    /// Name of the leader-election Lease (in the namespace of POD_NAMESPACE, else default).
    #[arg(long, env = "WASMKUBE_LEASE_NAME", default_value = "wasmkube-operator", global = true)]
    pub lease_name: String,
    /// Reconciles run at once, at most; the others wait in the controller's queue.
    #[arg(long, env = "WASMKUBE_MAX_CONCURRENT_RECONCILES", default_value_t = crate::controller::DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub max_concurrent_reconciles: u16,
    /// Resolve component tags to digests through the registry.
    #[arg(long, env = "WASMKUBE_RESOLVE_DIGESTS", default_value_t = true, action = ArgAction::Set, global = true)]
    pub resolve_digests: bool,
    /// Registries (`host:port`) reached over plain HTTP for digest resolution; repeatable.
    #[arg(long = "insecure-registry", env = "WASMKUBE_INSECURE_REGISTRIES", value_delimiter = ',', global = true)]
    pub insecure_registries: Vec<String>,
    /// PEM file of extra CA certificates for registries with a private CA, trusted besides the bundled Mozilla
    /// roots (the host's certificate store is never read).
    #[arg(long, env = "WASMKUBE_REGISTRY_CA_FILE", global = true)]
    pub registry_ca_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "WASMKUBE_LOG_FORMAT", value_enum, default_value = "json", global = true)]
    pub log_format: LogFormat,
    /// Service (in POD_NAMESPACE) whose endpoints are the activator pods; empty: no activator.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_SERVICE", default_value = "wasmkube-activator", global = true)]
    pub activator_service: String,
    /// Address of the external metrics API (HTTPS); empty: not served.
    #[arg(long, env = "WASMKUBE_METRICS_API_ADDR", default_value = "0.0.0.0:6443", global = true)]
    pub metrics_api_addr: String,
    /// Service (in POD_NAMESPACE) in front of the external metrics API: its DNS names go into the serving
    /// certificate, which is kept in Secret `SERVICE-tls`.
    #[arg(long, env = "WASMKUBE_METRICS_API_SERVICE", default_value = "wasmkube-metrics-api", global = true)]
    pub metrics_api_service: String,
    /// Port of the shims' node metrics endpoint (their `metrics_address`).
    #[arg(long, env = "WASMKUBE_NODE_METRICS_PORT", default_value_t = NODE_METRICS_PORT, global = true)]
    pub node_metrics_port: u16,
    /// Secret (in POD_NAMESPACE) holding the token the nodes' metrics endpoints ask for; the operator makes the
    /// token when the Secret has none. Unset or empty: scrapes carry no token.
    #[arg(long, env = "WASMKUBE_NODE_METRICS_TOKEN_SECRET", global = true)]
    pub node_metrics_token_secret: Option<String>,
    /// Address the activator listens on (idle apps' Services send their requests there).
    #[arg(long, env = "WASMKUBE_ACTIVATOR_ADDR", default_value = activator::DEFAULT_ADDR, global = true)]
    pub activator_addr: SocketAddr,
    /// Longest a request waits at the activator for a ready replica before a 503.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_HOLD_TIMEOUT_SECONDS", default_value_t = 60, global = true)]
    pub activator_hold_timeout_seconds: u64,
    /// Ports handed out to scale-to-zero apps, one each (`FIRST-LAST`): the activator listens on them and an
    /// app's activator EndpointSlice names its port, so a request's port tells its app after kube-proxy's NAT.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_PORTS", default_value_t = render::DEFAULT_ACTIVATOR_PORTS, global = true)]
    pub activator_ports: ActivatorPorts,
    /// Requests of one app held at once by one activator; the one beyond gets a 503.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_MAX_HELD_PER_APP", default_value_t = 256, global = true)]
    pub activator_max_held_per_app: usize,
    /// Requests of all apps held at once by one activator; the one beyond gets a 503.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_MAX_HELD", default_value_t = 4096, global = true)]
    pub activator_max_held: usize,
    /// Client connections one activator keeps open at once (each app port also at most 1,000); a connection
    /// beyond is closed at once.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_MAX_CONNECTIONS", default_value_t = 10_000, global = true)]
    pub activator_max_connections: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_go_before_or_after_run() {
        for argv in
            [["wasmkube-operator", "run", "--namespace", "apps"], ["wasmkube-operator", "--namespace", "apps", "run"]]
        {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert!(matches!(cli.command, Some(Command::Run)));
            assert_eq!(cli.run.namespace.as_deref(), Some("apps"), "{argv:?}");
        }
        let bare = Cli::try_parse_from(["wasmkube-operator", "--lease-name", "x"]).unwrap();
        assert!(bare.command.is_none());
        assert_eq!(bare.run.lease_name, "x");
    }
}

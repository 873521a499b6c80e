//! What the flags mean, checked once at start: typed values and the settings of each part.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::activator::ActivatorSettings;
use crate::controller::{ActivatorService, Config};
use crate::demand::DemandSettings;
use crate::external_metrics::setup::MetricsApiSettings;
use crate::leader::LeaseConfig;
use crate::render::{ActivatorPorts, RenderConfig};

use super::args::{LogFormat, RunArgs};

/// The operator's settings, built from [`RunArgs`] by [`Settings::from_args`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Format of the log lines.
    pub log_format: LogFormat,
    /// Address of /metrics, /healthz and /readyz.
    pub http_addr: SocketAddr,
    /// Watch only this namespace; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Container image of `oci://` pods.
    pub placeholder_image: String,
    /// DNS suffix of in-cluster Service URLs.
    pub cluster_domain: String,
    /// Name of the leader-election Lease; `None`: no election, this replica reconciles at once.
    pub lease_name: Option<String>,
    /// Reconciles running at once, at most.
    pub max_concurrent_reconciles: u16,
    /// Tag → digest resolution; `None`: tags go to the shim as written.
    pub resolve: Option<ResolveSettings>,
    /// Service in front of the activator pods; `None`: no activator.
    pub activator_service: Option<String>,
    /// The external metrics API; `None`: not served.
    pub metrics_api: Option<MetricsApiSettings>,
    /// Port of the shims' node metrics endpoint.
    pub node_metrics_port: u16,
    /// Secret of the node metrics token; `None`: scrapes carry no token.
    pub node_metrics_token_secret: Option<String>,
    /// Address of the activator's main port.
    pub activator_addr: SocketAddr,
    /// Limits of the activator.
    pub activator: ActivatorSettings,
    /// Ports handed out to scale-to-zero apps.
    pub activator_ports: ActivatorPorts,
}

/// How tags are resolved to digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveSettings {
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// PEM file of extra CA certificates.
    pub ca_file: Option<PathBuf>,
}

/// Where this replica runs, from the downward API's environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The operator's namespace (`POD_NAMESPACE`, else `default`): the Lease's and the activator Service's.
    pub namespace: String,
    /// This replica's name in the election and in Events (`POD_NAME`, else `HOSTNAME`, else one from the pid).
    pub identity: String,
}

impl Pod {
    /// From the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `var`, which returns an environment variable's value.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            namespace: var("POD_NAMESPACE").unwrap_or_else(|| "default".into()),
            identity: var("POD_NAME")
                .or_else(|| var("HOSTNAME"))
                .unwrap_or_else(|| format!("wasmkube-operator-{}", std::process::id())),
        }
    }
}

/// How long a leader keeps the Lease without renewing it.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews and a candidate retries.
const LEASE_RETRY_PERIOD: Duration = Duration::from_secs(2);

impl Settings {
    /// Check the flags and give them their types; the error names the flag.
    pub fn from_args(args: RunArgs) -> anyhow::Result<Self> {
        let metrics_api = if args.metrics_api_addr.is_empty() {
            None
        } else {
            let addr = args.metrics_api_addr.parse().map_err(|e| {
                anyhow::anyhow!(
                    "--metrics-api-addr (WASMKUBE_METRICS_API_ADDR) {:?}: {e}; give IP:PORT, or nothing to not serve \
                     the metrics API",
                    args.metrics_api_addr
                )
            })?;
            anyhow::ensure!(
                !args.metrics_api_service.is_empty(),
                "--metrics-api-service (WASMKUBE_METRICS_API_SERVICE) is empty; the metrics API needs its Service's name"
            );
            Some(MetricsApiSettings { addr, service: args.metrics_api_service })
        };
        check_activator_ports(args.activator_ports, args.activator_addr.port(), args.http_addr.port())?;
        Ok(Self {
            log_format: args.log_format,
            http_addr: args.http_addr,
            namespace: args.namespace,
            placeholder_image: args.placeholder_image,
            cluster_domain: args.cluster_domain,
            lease_name: args.leader_election.then_some(args.lease_name),
            max_concurrent_reconciles: args.max_concurrent_reconciles,
            resolve: args.resolve_digests.then_some(ResolveSettings {
                insecure_registries: args.insecure_registries,
                ca_file: args.registry_ca_file,
            }),
            activator_service: Some(args.activator_service).filter(|s| !s.is_empty()),
            metrics_api,
            node_metrics_port: args.node_metrics_port,
            node_metrics_token_secret: args.node_metrics_token_secret.filter(|s| !s.is_empty()),
            activator_addr: args.activator_addr,
            activator: ActivatorSettings {
                hold_timeout: Duration::from_secs(args.activator_hold_timeout_seconds),
                max_held_per_app: args.activator_max_held_per_app,
                max_held: args.activator_max_held,
                max_connections: args.activator_max_connections,
                ..ActivatorSettings::default()
            },
            activator_ports: args.activator_ports,
        })
    }

    /// The Lease this replica competes for, when leader election is on.
    pub fn lease(&self, pod: &Pod) -> Option<LeaseConfig> {
        self.lease_name.as_ref().map(|name| LeaseConfig {
            name: name.clone(),
            namespace: pod.namespace.clone(),
            identity: pod.identity.clone(),
            lease_duration: LEASE_DURATION,
            retry_period: LEASE_RETRY_PERIOD,
        })
    }

    /// Settings of the demand scraper.
    pub fn demand(&self) -> DemandSettings {
        DemandSettings {
            node_metrics_port: self.node_metrics_port,
            // Why: the activators' held requests are on the operator pods' /metrics.
            operator_metrics_port: self.http_addr.port(),
            activator_service: self.activator_service.clone().unwrap_or_default(),
            ..DemandSettings::default()
        }
    }

    /// Settings of the controller.
    pub fn controller(&self, pod: &Pod) -> Config {
        Config {
            render: RenderConfig {
                placeholder_image: self.placeholder_image.clone(),
                cluster_domain: self.cluster_domain.clone(),
                ..RenderConfig::default()
            },
            namespace: self.namespace.clone(),
            activator: self
                .activator_service
                .as_ref()
                .map(|name| ActivatorService { namespace: pod.namespace.clone(), name: name.clone() }),
            activator_ports: self.activator_ports,
            concurrency: self.max_concurrent_reconciles,
            ..Config::default()
        }
    }
}

/// Fail when the scale-to-zero ports include a port the activator or the HTTP endpoint already listens on.
pub fn check_activator_ports(ports: ActivatorPorts, activator_port: u16, http_port: u16) -> anyhow::Result<()> {
    for (what, port) in [("the activator's main port", activator_port), ("the HTTP endpoint", http_port)] {
        if ports.contains(port) {
            anyhow::bail!("--activator-ports {ports} contains {what} {port}; choose a range without it");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;
    use crate::render::DEFAULT_PLACEHOLDER_IMAGE;

    /// `RunArgs` from `flags`, ignoring the environment so the developer's shell cannot change the result.
    fn args(flags: &[&str]) -> anyhow::Result<RunArgs> {
        let command = RunArgs::augment_args(clap::Command::new("run")).mut_args(|a| a.env(None::<&str>));
        let matches = command.try_get_matches_from(std::iter::once("run").chain(flags.iter().copied()))?;
        Ok(RunArgs::from_arg_matches(&matches)?)
    }

    fn settings(flags: &[&str]) -> anyhow::Result<Settings> {
        Settings::from_args(args(flags)?)
    }

    fn pod() -> Pod {
        Pod { namespace: "ops".into(), identity: "op-0".into() }
    }

    #[test]
    fn defaults() -> anyhow::Result<()> {
        let s = settings(&[])?;
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.http_addr, "0.0.0.0:8080".parse::<SocketAddr>()?);
        assert_eq!(s.namespace, None);
        assert_eq!(s.placeholder_image, DEFAULT_PLACEHOLDER_IMAGE);
        assert_eq!(s.cluster_domain, "cluster.local");
        assert_eq!(s.lease_name.as_deref(), Some("wasmkube-operator"));
        assert_eq!(s.resolve, Some(ResolveSettings { insecure_registries: vec![], ca_file: None }));
        assert_eq!(s.activator_service.as_deref(), Some("wasmkube-activator"));
        assert_eq!(
            s.metrics_api,
            Some(MetricsApiSettings { addr: "0.0.0.0:6443".parse()?, service: "wasmkube-metrics-api".into() })
        );
        assert_eq!(s.node_metrics_port, 9464);
        assert_eq!(s.activator_addr, "0.0.0.0:8090".parse::<SocketAddr>()?);
        assert_eq!(s.activator.hold_timeout, Duration::from_secs(60));
        assert_eq!(s.activator.max_held_per_app, 256);
        assert_eq!(s.activator_ports, ActivatorPorts { first: 20000, last: 29999 });
        assert_eq!(s.controller(&pod()).concurrency, 2);
        Ok(())
    }

    #[test]
    fn flags_given() -> anyhow::Result<()> {
        let s = settings(&[
            "--namespace=apps",
            "--log-format=text",
            "--leader-election=false",
            "--insecure-registry=a:5000,b:5000",
            "--insecure-registry=c:5000",
            "--registry-ca-file=/etc/ca.pem",
            "--metrics-api-addr=127.0.0.1:7443",
            "--activator-hold-timeout-seconds=5",
            "--activator-max-held-per-app=3",
            "--activator-ports=40000-40009",
            "--max-concurrent-reconciles=5",
        ])?;
        assert_eq!(s.namespace.as_deref(), Some("apps"));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.lease_name, None);
        assert!(s.lease(&pod()).is_none());
        let resolve = s.resolve.as_ref().ok_or_else(|| anyhow::anyhow!("resolution is on"))?;
        assert_eq!(resolve.insecure_registries, ["a:5000", "b:5000", "c:5000"]);
        assert_eq!(resolve.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(s.metrics_api.as_ref().map(|m| m.addr), Some("127.0.0.1:7443".parse()?));
        assert_eq!(s.activator.hold_timeout, Duration::from_secs(5));
        assert_eq!(s.activator.max_held_per_app, 3);
        assert_eq!(s.activator_ports, ActivatorPorts { first: 40000, last: 40009 });
        assert_eq!(s.controller(&pod()).concurrency, 5);
        Ok(())
    }

    #[test]
    fn empty_values_turn_parts_off() -> anyhow::Result<()> {
        let s = settings(&["--metrics-api-addr=", "--activator-service=", "--resolve-digests=false"])?;
        assert_eq!(s.metrics_api, None);
        assert_eq!(s.activator_service, None);
        assert_eq!(s.controller(&pod()).activator, None);
        assert_eq!(s.demand().activator_service, "");
        assert_eq!(s.resolve, None);
        Ok(())
    }

    #[test]
    fn bad_metrics_api_addr_names_the_flag() -> anyhow::Result<()> {
        let err = settings(&["--metrics-api-addr=6443"]).err().ok_or_else(|| anyhow::anyhow!("accepted 6443"))?;
        let text = format!("{err:#}");
        assert!(text.contains("--metrics-api-addr") && text.contains("\"6443\""), "{text}");
        Ok(())
    }

    #[test]
    fn bad_flag_values_are_refused() {
        for flag in [
            "--http-addr=localhost",
            "--activator-ports=30-20",
            "--leader-election=maybe",
            "--log-format=xml",
            // 0 would mean unbounded to kube-rs: a thousand apps reconciled at once at start.
            "--max-concurrent-reconciles=0",
        ] {
            assert!(args(&[flag]).is_err(), "{flag} accepted");
        }
    }

    #[test]
    fn activator_ports_must_leave_out_the_listening_ports() {
        let ports = ActivatorPorts { first: 8000, last: 8100 };
        assert!(check_activator_ports(ports, 8090, 9000).is_err_and(|e| e.to_string().contains("main port 8090")));
        assert!(check_activator_ports(ports, 9090, 8080).is_err_and(|e| e.to_string().contains("HTTP endpoint 8080")));
        assert!(check_activator_ports(ports, 8101, 7999).is_ok());
        // The defaults do not conflict, and a conflict fails the start rather than the first bind.
        assert!(settings(&[]).is_ok());
        assert!(settings(&["--activator-ports=8000-8100"])
            .is_err_and(|e| e.to_string().contains("--activator-ports 8000-8100 contains")));
    }

    #[test]
    fn parts_get_their_settings() -> anyhow::Result<()> {
        let s = settings(&[
            "--http-addr=0.0.0.0:9999",
            "--node-metrics-port=1234",
            "--activator-service=act",
            "--lease-name=lead",
            "--placeholder-image=pause:1",
            "--cluster-domain=example.org",
            "--namespace=apps",
        ])?;
        let lease = s.lease(&pod()).ok_or_else(|| anyhow::anyhow!("election is on"))?;
        assert_eq!((lease.name.as_str(), lease.namespace.as_str(), lease.identity.as_str()), ("lead", "ops", "op-0"));
        assert_eq!((lease.lease_duration, lease.retry_period), (Duration::from_secs(15), Duration::from_secs(2)));

        let demand = s.demand();
        assert_eq!((demand.node_metrics_port, demand.operator_metrics_port), (1234, 9999));
        assert_eq!(demand.activator_service, "act");

        let config = s.controller(&pod());
        assert_eq!(config.activator, Some(ActivatorService { namespace: "ops".into(), name: "act".into() }));
        assert_eq!(config.render.placeholder_image, "pause:1");
        assert_eq!(config.render.cluster_domain, "example.org");
        assert_eq!(config.namespace.as_deref(), Some("apps"));
        Ok(())
    }

    #[test]
    fn pod_from_the_downward_api() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let full = Pod::from_lookup(env(&[("POD_NAMESPACE", "ops"), ("POD_NAME", "op-1"), ("HOSTNAME", "host")]));
        assert_eq!(full, Pod { namespace: "ops".into(), identity: "op-1".into() });
        let host = Pod::from_lookup(env(&[("HOSTNAME", "host")]));
        assert_eq!(host, Pod { namespace: "default".into(), identity: "host".into() });
        let bare = Pod::from_lookup(env(&[]));
        assert_eq!(bare.identity, format!("wasmkube-operator-{}", std::process::id()));
    }
}

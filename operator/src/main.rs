//! `wasmkube-operator`: runs the WasmApp controller, or prints the CRD (`wasmkube-operator crd`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use kube::config::{Config as KubeConfig, KubeConfigOptions};
use kube::Client;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use wasmkube_operator::activator;
use wasmkube_operator::controller::{self, ActivatorService, Config, Context};
use wasmkube_operator::demand::{self, Demand, DemandSettings, KubeTargets, Targets};
use wasmkube_operator::external_metrics::{self, service_dns_names, ServingCert};
use wasmkube_operator::leader::{LeaderElector, LeaseConfig};
use wasmkube_operator::metrics::Metrics;
use wasmkube_operator::render::{self, ActivatorPorts, RenderConfig, DEFAULT_PLACEHOLDER_IMAGE};
use wasmkube_operator::resolve::{OciResolver, Resolver};
use wasmkube_operator::server::{router, Health};

#[derive(Parser, Debug)]
#[command(name = "wasmkube-operator", version, about = "Reconciles WasmApp objects")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the WasmApp CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller (the default).
    Run,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Container image of `oci://` pods (pulled by the kubelet, never run).
    #[arg(long, env = "WASMKUBE_PLACEHOLDER_IMAGE", default_value = DEFAULT_PLACEHOLDER_IMAGE)]
    placeholder_image: String,
    /// DNS suffix of in-cluster Service URLs.
    #[arg(long, env = "WASMKUBE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "WASMKUBE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "WASMKUBE_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader-election Lease (in the namespace of POD_NAMESPACE, else default).
    #[arg(long, env = "WASMKUBE_LEASE_NAME", default_value = "wasmkube-operator")]
    lease_name: String,
    /// Resolve component tags to digests through the registry.
    #[arg(long, env = "WASMKUBE_RESOLVE_DIGESTS", default_value_t = true, action = ArgAction::Set)]
    resolve_digests: bool,
    /// Registries (`host:port`) reached over plain HTTP for digest resolution; repeatable.
    #[arg(long = "insecure-registry", env = "WASMKUBE_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// PEM file of extra CA certificates for registries with a private CA, trusted besides the bundled Mozilla
    /// roots (the host's certificate store is never read).
    #[arg(long, env = "WASMKUBE_REGISTRY_CA_FILE")]
    registry_ca_file: Option<std::path::PathBuf>,
    /// Log format.
    #[arg(long, env = "WASMKUBE_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Service (in POD_NAMESPACE) whose endpoints are the activator pods; empty: no activator.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_SERVICE", default_value = "wasmkube-activator")]
    activator_service: String,
    /// Address of the external metrics API (HTTPS, self-signed); empty: not served.
    #[arg(long, env = "WASMKUBE_METRICS_API_ADDR", default_value = "0.0.0.0:6443")]
    metrics_api_addr: String,
    /// Port of the shims' node metrics endpoint (their `metrics_address`).
    #[arg(long, env = "WASMKUBE_NODE_METRICS_PORT", default_value_t = 9464)]
    node_metrics_port: u16,
    /// Address the activator listens on (idle apps' Services send their requests there).
    #[arg(long, env = "WASMKUBE_ACTIVATOR_ADDR", default_value = activator::DEFAULT_ADDR)]
    activator_addr: SocketAddr,
    /// Longest a request waits at the activator for a ready replica before a 503.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_HOLD_TIMEOUT_SECONDS", default_value_t = 60)]
    activator_hold_timeout_seconds: u64,
    /// Ports handed out to scale-to-zero apps, one each (`FIRST-LAST`): the activator listens on them and an
    /// app's activator EndpointSlice names its port, so a request's port tells its app after kube-proxy's NAT.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_PORTS", default_value_t = render::DEFAULT_ACTIVATOR_PORTS)]
    activator_ports: ActivatorPorts,
    /// Requests of one app held at once by one activator; the one beyond gets a 503.
    #[arg(long, env = "WASMKUBE_ACTIVATOR_MAX_HELD_PER_APP", default_value_t = 256)]
    activator_max_held_per_app: usize,
}

// The binaries are static musl executables, whose malloc is slow under many threads (docs/install.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            let yaml = wasmkube_operator::crd::crd_yaml()?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes())
                .context("writing the CRD to stdout")
        }
        Some(Command::Run) | None => run(cli.run).await,
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// In-cluster configuration when running in a pod, else `KUBECONFIG` / `~/.kube/config`.
async fn kube_config() -> anyhow::Result<KubeConfig> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return KubeConfig::incluster().context("reading the in-cluster configuration");
    }
    KubeConfig::from_kubeconfig(&KubeConfigOptions::default()).await.context("reading KUBECONFIG or ~/.kube/config")
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    // Why: oci-client's rustls is built without a provider; kube brings ring, so use that one.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        tracing::info!("termination signal received, shutting down");
        let _ = stop_tx.send(true);
    });

    let activator_metrics = activator::ActivatorMetrics::default();
    let mut metrics = Metrics::default();
    metrics.register_activator(&activator_metrics);
    let metrics = Arc::new(metrics);
    let ready = Arc::new(AtomicBool::new(false));
    let listener =
        tokio::net::TcpListener::bind(args.http_addr).await.with_context(|| format!("binding {}", args.http_addr))?;
    let app = router(Health { metrics: metrics.clone(), ready: ready.clone() });
    let mut server_stop = stop_rx.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP endpoint failed");
        }
    });

    let client = Client::try_from(kube_config().await?).context("building the Kubernetes client")?;
    let version = client.apiserver_version().await.context("contacting the API server")?;
    tracing::info!(version = %version.git_version, "connected to the API server");
    ready.store(true, Ordering::Relaxed);

    // Why before the election: the API server and kube-proxy reach any replica, leader or not.
    let operator_namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into());
    let demand = start_demand(&args, &client, &operator_namespace, &stop_rx).await?;
    start_activator(&args, &client, activator_metrics, demand, &stop_rx).await?;

    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("wasmkube-operator-{}", std::process::id()));
    let elector = args.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace: operator_namespace.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(2),
            },
        )
    });
    // Before the election, so a bad CA bundle fails the start rather than the first reconcile.
    let resolver: Option<Arc<dyn Resolver>> = if args.resolve_digests {
        let timeout = Duration::from_secs(10);
        match OciResolver::new(args.insecure_registries.clone(), args.registry_ca_file.as_deref(), timeout) {
            Ok(resolver) => Some(Arc::new(resolver)),
            // A bad CA file is the user's to fix; a host without a CA store must not stop the operator.
            Err(e @ wasmkube_operator::resolve::ResolverSetupError::NoHostCaStore) => {
                tracing::warn!(error = %e, "digest resolution disabled: tags go to the shim unpinned");
                None
            }
            Err(e) => return Err(e).context("digest resolution"),
        }
    } else {
        None
    };
    if let Some(elector) = &elector {
        tracing::info!(identity, "waiting for leadership");
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = elector.acquire() => tracing::info!(identity, "leading"),
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }

    let config = Config {
        render: RenderConfig {
            placeholder_image: args.placeholder_image,
            cluster_domain: args.cluster_domain,
            ..RenderConfig::default()
        },
        namespace: args.namespace,
        activator: (!args.activator_service.is_empty())
            .then(|| ActivatorService { namespace: operator_namespace.clone(), name: args.activator_service.clone() }),
        activator_ports: args.activator_ports,
        ..Config::default()
    };
    let ctx = Arc::new(Context::new(client, config, metrics, resolver, Some(identity)));

    // Stop reconciling on SIGTERM, or when the lease is lost (another replica leads now).
    let lost = Arc::new(AtomicBool::new(false));
    let mut stop = stop_rx.clone();
    let shutdown = {
        let lost = lost.clone();
        let elector_ref = elector.as_ref();
        let hold = async move {
            match elector_ref {
                Some(e) => e.hold().await,
                None => std::future::pending().await,
            }
        };
        async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {},
                _ = hold => {
                    tracing::error!("leadership lost");
                    lost.store(true, Ordering::Relaxed);
                },
            }
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(ctx, async move {
        let _ = rx.await;
    }));
    shutdown.await;
    let _ = tx.send(());
    controller.await.context("controller task")?;
    if let Some(elector) = &elector {
        if !lost.load(Ordering::Relaxed) {
            elector.release().await;
        }
    }
    if lost.load(Ordering::Relaxed) {
        anyhow::bail!("lost the leader lease");
    }
    tracing::info!("stopped");
    Ok(())
}

/// A future that resolves when the stop flag is raised.
fn stopped(stop: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Scrape request metrics from the nodes and the activators, and serve them as external metrics.
async fn start_demand(
    args: &RunArgs,
    client: &Client,
    operator_namespace: &str,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Arc<Demand>> {
    let settings = DemandSettings {
        node_metrics_port: args.node_metrics_port,
        operator_metrics_port: args.http_addr.port(),
        activator_service: args.activator_service.clone(),
        ..DemandSettings::default()
    };
    let demand = Arc::new(Demand::new(settings.window));
    let targets: Arc<dyn Targets> =
        Arc::new(KubeTargets::new(client.clone(), args.namespace.as_deref(), operator_namespace, &settings));
    tokio::spawn(demand::run(targets, demand.clone(), settings, stopped(stop)));

    if args.metrics_api_addr.is_empty() {
        return Ok(demand);
    }
    let addr: SocketAddr =
        args.metrics_api_addr.parse().with_context(|| format!("metrics API address {:?}", args.metrics_api_addr))?;
    let names = service_dns_names("wasmkube-metrics-api", operator_namespace, &args.cluster_domain);
    let cert = ServingCert::self_signed(&names).context("making the metrics API's certificate")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "serving external.metrics.k8s.io");
    let shutdown = stopped(stop);
    let served = demand.clone();
    tokio::spawn(async move {
        if let Err(e) = external_metrics::serve(listener, &cert, served, shutdown).await {
            tracing::error!(error = %e, "external metrics API failed");
        }
    });
    Ok(demand)
}

/// Hold requests for idle apps, wake them, and proxy the requests once a replica is ready.
async fn start_activator(
    args: &RunArgs,
    client: &Client,
    metrics: activator::ActivatorMetrics,
    demand: Arc<Demand>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = activator::ActivatorSettings {
        hold_timeout: Duration::from_secs(args.activator_hold_timeout_seconds),
        max_held_per_app: args.activator_max_held_per_app,
        ..activator::ActivatorSettings::default()
    };
    for (what, port) in
        [("the activator's main port", args.activator_addr.port()), ("the HTTP endpoint", args.http_addr.port())]
    {
        if args.activator_ports.contains(port) {
            anyhow::bail!(
                "--activator-ports {} contains {what} {port}; choose a range without it",
                args.activator_ports
            );
        }
    }
    let waker: Arc<dyn activator::Waker> = Arc::new(activator::ScaleWaker::new(client.clone()));
    let activator = activator::Activator::new(settings, waker, metrics);
    activator.set_wake_hook(Box::new(move |app| demand.note_local_wake(app, std::time::Instant::now())));
    let listener = tokio::net::TcpListener::bind(args.activator_addr)
        .await
        .with_context(|| format!("binding the activator to {}", args.activator_addr))?;
    tracing::info!(addr = %args.activator_addr, "activator listening");
    tokio::spawn(activator::serve(activator.clone(), listener, stopped(stop)));
    tokio::spawn(activator::serve_app_ports(activator.clone(), args.activator_addr.ip(), stopped(stop)));
    tokio::spawn(activator::watch::run(client.clone(), activator, stopped(stop)));
    Ok(())
}

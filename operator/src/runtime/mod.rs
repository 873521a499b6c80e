//! The operator process: flags, logs, the Kubernetes client, the servers started before the election, leadership
//! and the controller, in the order they must start. The binary only parses the flags and calls [`run`].

mod args;
pub mod leadership;
pub mod services;
mod settings;
pub mod stop;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use kube::config::{Config as KubeConfig, KubeConfigOptions};
use kube::Client;
use tracing_subscriber::EnvFilter;

pub use args::{Cli, Command, LogFormat, RunArgs};
pub use settings::{check_activator_ports, Pod, ResolveSettings, Settings};

use crate::activator::ActivatorMetrics;
use crate::controller::{self, Context};
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::server::Health;

/// Run the operator until SIGTERM or SIGINT (`Ok`), or until the leader lease is lost (an error).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    init_logs(settings.log_format);
    // Why: oci-client's rustls is built without a provider; kube brings ring, so use that one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stop = stop::on_signal();

    let activator_metrics = ActivatorMetrics::default();
    let mut metrics = Metrics::default();
    metrics.register_activator(&activator_metrics);
    let metrics = Arc::new(metrics);
    let ready = Arc::new(AtomicBool::new(false));
    services::serve_http(settings.http_addr, Health { metrics: metrics.clone(), ready: ready.clone() }, &stop).await?;

    let client = Client::try_from(kube_config().await?).context("building the Kubernetes client")?;
    let version = client.apiserver_version().await.context("contacting the API server")?;
    tracing::info!(version = %version.git_version, "connected to the API server");
    ready.store(true, Ordering::Relaxed);

    // Why before the election: the API server and kube-proxy reach any replica, leader or not.
    let pod = Pod::from_env();
    let demand = services::start_demand(&settings, &client, &pod.namespace, &stop).await?;
    services::start_activator(&settings, &client, activator_metrics, demand, &stop).await?;

    let elector = settings.lease(&pod).map(|lease| LeaderElector::new(client.clone(), lease));
    // Before the election, so a bad CA bundle fails the start rather than the first reconcile.
    let resolver = services::resolver(settings.resolve.as_ref())?;
    let config = settings.controller(&pod);
    let identity = pod.identity;
    leadership::lead(elector.as_ref(), &identity, &stop, |shutdown| {
        let ctx = Arc::new(Context::new(client, config, metrics, resolver, Some(identity.clone())));
        controller::run(ctx, shutdown)
    })
    .await
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

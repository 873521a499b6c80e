//! The parts started before the election (the API server and kube-proxy reach any replica, leader or not): the
//! HTTP endpoint, the demand scraper and external metrics API, the activator; and the digest resolver.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio::sync::watch;

use crate::activator::{self, ActivatorMetrics};
use crate::demand::{self, node_token, Demand, KubeTargets, Targets};
use crate::external_metrics;
use crate::resolve::{OciResolver, Resolver, ResolverSetupError};
use crate::server::{router, Health};

use super::settings::{ResolveSettings, Settings};
use super::stop::stopped;

/// Time a registry has to answer a digest lookup.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve /metrics, /healthz and /readyz on `addr` until the stop flag is raised.
pub async fn serve_http(addr: SocketAddr, health: Health, stop: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let app = router(health);
    let shutdown = stopped(stop);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP endpoint failed");
        }
    });
    Ok(())
}

/// Scrape request metrics from the nodes and the activators, and serve them as external metrics.
pub async fn start_demand(
    settings: &Settings,
    client: &Client,
    operator_namespace: &str,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Arc<Demand>> {
    let mut demand_settings = settings.demand();
    if let Some(secret) = &settings.node_metrics_token_secret {
        let secrets = kube::Api::namespaced(client.clone(), operator_namespace);
        let token = node_token::ensure(&secrets, secret).await.context("the node metrics token")?;
        demand_settings.node_token = Some(token);
    }
    let demand = Arc::new(Demand::new(demand_settings.window));
    let targets: Arc<dyn Targets> =
        Arc::new(KubeTargets::new(client.clone(), settings.namespace.as_deref(), operator_namespace, &demand_settings));
    tokio::spawn(demand::run(targets, demand.clone(), demand_settings, stopped(stop)));

    if let Some(api) = &settings.metrics_api {
        let (domain, served) = (&settings.cluster_domain, demand.clone());
        external_metrics::setup::start(client.clone(), api, operator_namespace, domain, served, stopped(stop))
            .await
            .context("starting the external metrics API")?;
    }
    Ok(demand)
}

/// Hold requests for idle apps, wake them, and proxy the requests once a replica is ready.
pub async fn start_activator(
    settings: &Settings,
    client: &Client,
    metrics: ActivatorMetrics,
    demand: Arc<Demand>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let waker: Arc<dyn activator::Waker> = Arc::new(activator::ScaleWaker::new(client.clone()));
    let activator = activator::Activator::new(settings.activator.clone(), waker, metrics);
    activator.set_wake_hook(Box::new(move |app| demand.note_local_wake(app, std::time::Instant::now())));
    let addr = settings.activator_addr;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the activator to {addr}"))?;
    tracing::info!(%addr, "activator listening");
    tokio::spawn(activator::serve(activator.clone(), listener, stopped(stop)));
    tokio::spawn(activator::serve_app_ports(activator.clone(), addr.ip(), stopped(stop)));
    tokio::spawn(activator::watch::run(client.clone(), activator, stopped(stop)));
    Ok(())
}

/// The digest resolver, `None` when resolution is off or the host cannot support it.
pub fn resolver(settings: Option<&ResolveSettings>) -> anyhow::Result<Option<Arc<dyn Resolver>>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    match OciResolver::new(settings.insecure_registries.clone(), settings.ca_file.as_deref(), RESOLVE_TIMEOUT) {
        Ok(resolver) => Ok(Some(Arc::new(resolver))),
        // A bad CA file is the user's to fix; a host without a CA store must not stop the operator.
        Err(e @ ResolverSetupError::NoHostCaStore) => {
            tracing::warn!(error = %e, "digest resolution disabled: tags go to the shim unpinned");
            Ok(None)
        }
        Err(e) => Err(e).context("digest resolution"),
    }
}

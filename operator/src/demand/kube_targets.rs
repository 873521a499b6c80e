//! Scrape targets found in Kubernetes: the nodes running our pods, and the activator's endpoints.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};

use super::scrape::{Targets, TargetsError};
use super::store::PodRef;
use super::DemandSettings;
use crate::labels::{FIELD_MANAGER, LABEL_MANAGED_BY};

/// Label of an EndpointSlice naming its Service.
const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// [`Targets`] from the API server: one URL per node hosting a WasmApp pod, one per ready activator.
pub struct KubeTargets {
    pods: Api<Pod>,
    pod_starts: Mutex<HashMap<PodRef, Instant>>,
    slices: Api<EndpointSlice>,
    node_metrics_port: u16,
    operator_metrics_port: u16,
    activator_service: String,
}

impl KubeTargets {
    /// Targets for the WasmApps of `watch_namespace` (all namespaces when `None`) and the activator
    /// Service of `operator_namespace`.
    pub fn new(
        client: Client,
        watch_namespace: Option<&str>,
        operator_namespace: &str,
        settings: &DemandSettings,
    ) -> Self {
        let pods = match watch_namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        Self {
            pods,
            pod_starts: Mutex::default(),
            slices: Api::namespaced(client, operator_namespace),
            node_metrics_port: settings.node_metrics_port,
            operator_metrics_port: settings.operator_metrics_port,
            activator_service: settings.activator_service.clone(),
        }
    }
}

#[async_trait]
impl Targets for KubeTargets {
    async fn targets(&self) -> Result<Vec<String>, TargetsError> {
        let pods = self
            .pods
            .list(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}")))
            .await
            .map_err(|e| TargetsError { what: "WasmApp pods".into(), source: e.into() })?;
        let slices = self
            .slices
            .list(&ListParams::default().labels(&format!("{LABEL_SERVICE_NAME}={}", self.activator_service)))
            .await
            .map_err(|e| TargetsError {
                what: format!("EndpointSlices of Service {}", self.activator_service),
                source: e.into(),
            })?;
        *self.pod_starts.lock().unwrap_or_else(PoisonError::into_inner) =
            pod_starts(&pods.items, Timestamp::now(), Instant::now());
        let mut urls = node_targets(&pods.items, self.node_metrics_port);
        urls.extend(activator_targets(&slices.items, self.operator_metrics_port));
        Ok(urls)
    }

    fn pod_starts(&self) -> HashMap<PodRef, Instant> {
        self.pod_starts.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// When each of `pods` started (`status.startTime`), as an instant of this process's clock given that the
/// wall clock reads `wall_now` at `now`. Pods not started yet, or "starting" in the future, are left out.
pub fn pod_starts(pods: &[Pod], wall_now: Timestamp, now: Instant) -> HashMap<PodRef, Instant> {
    pods.iter()
        .filter_map(|pod| {
            let started = pod.status.as_ref()?.start_time.as_ref()?.0;
            let age = std::time::Duration::try_from(wall_now.duration_since(started)).ok()?;
            let key = (pod.metadata.namespace.clone()?, pod.metadata.name.clone()?);
            Some((key, now.checked_sub(age)?))
        })
        .collect()
}

/// `http://{hostIP}:{port}/metrics` once per node hosting one of `pods`.
pub fn node_targets(pods: &[Pod], port: u16) -> Vec<String> {
    let hosts: BTreeSet<IpAddr> =
        pods.iter().filter_map(|p| p.status.as_ref()?.host_ip.as_deref()).filter_map(|ip| ip.parse().ok()).collect();
    hosts.into_iter().map(|ip| metrics_url(ip, port)).collect()
}

/// `http://{ip}:{port}/metrics` for each ready address of the activator's EndpointSlices.
pub fn activator_targets(slices: &[EndpointSlice], port: u16) -> Vec<String> {
    let ips: BTreeSet<IpAddr> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        // An unset `ready` means ready (EndpointSlice API contract).
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.into_iter().map(|ip| metrics_url(ip, port)).collect()
}

fn metrics_url(ip: IpAddr, port: u16) -> String {
    format!("http://{}/metrics", SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(host_ip: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus { host_ip: host_ip.map(str::to_string), ..Default::default() }),
            ..Default::default()
        }
    }

    fn endpoint(ip: &str, ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions { ready, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn one_target_per_node() {
        let pods =
            [pod(Some("10.0.0.2")), pod(Some("10.0.0.1")), pod(Some("10.0.0.2")), pod(None), pod(Some("fd00::1"))];
        assert_eq!(
            node_targets(&pods, 9464),
            vec!["http://10.0.0.1:9464/metrics", "http://10.0.0.2:9464/metrics", "http://[fd00::1]:9464/metrics"]
        );
    }

    #[test]
    fn only_ready_activators() {
        let slice = EndpointSlice {
            endpoints: vec![
                endpoint("10.1.0.5", Some(true)),
                endpoint("10.1.0.6", Some(false)),
                endpoint("10.1.0.7", None),
            ],
            ..Default::default()
        };
        assert_eq!(
            activator_targets(&[slice], 8080),
            vec!["http://10.1.0.5:8080/metrics", "http://10.1.0.7:8080/metrics"]
        );
    }

    #[test]
    fn pod_starts_are_instants_of_this_process() {
        let wall_now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let now = Instant::now();
        let started = |name: &str, at: Option<&str>| {
            let mut pod = pod(Some("10.0.0.1"));
            pod.metadata.namespace = Some("apps".into());
            pod.metadata.name = Some(name.into());
            pod.status.as_mut().unwrap().start_time = at.map(|t| Time(t.parse().unwrap()));
            pod
        };
        let pods = [
            started("p-new", Some("2026-12-01T11:59:57Z")),
            started("p-pending", None),
            started("p-future", Some("2026-12-01T12:00:09Z")),
        ];
        let starts = pod_starts(&pods, wall_now, now);
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert_eq!(starts[&("apps".to_string(), "p-new".to_string())], now - std::time::Duration::from_secs(3));
    }
}

//! The Kubernetes feed: watches our Services and their EndpointSlices (the pods' and our activator slices) and
//! rewrites the routing state: routes, app ports, backends.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::routes::{backends_from_slices, ports_from_slices, routes_from_services};
use super::Activator;
use crate::controller::slim;
use crate::labels::{FIELD_MANAGER, LABEL_MANAGED_BY};

/// Label selector of the objects the activator watches: ours (the EndpointSlice controller copies the
/// Service's labels onto its slices).
pub fn selector() -> String {
    format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}")
}

/// Feed `activator` from the API server (all namespaces) until `shutdown` resolves.
pub async fn run(client: Client, activator: Arc<Activator>, shutdown: impl Future<Output = ()>) {
    let services = follow(Api::<Service>::all(client.clone()), routing_view, {
        let activator = activator.clone();
        move |store: &Store<Service>| {
            let services = store.state();
            activator.state().set_routes(routes_from_services(services.iter().map(AsRef::as_ref)));
        }
    });
    let slices = follow(Api::<EndpointSlice>::all(client), slim, {
        let activator = activator.clone();
        move |store: &Store<EndpointSlice>| {
            let slices = store.state();
            // Why one watch: the activator slices carry our labels too (the operator renders them).
            activator.state().set_ports(ports_from_slices(slices.iter().map(AsRef::as_ref)));
            activator.state().replace_backends(backends_from_slices(slices.iter().map(AsRef::as_ref)));
        }
    });
    tokio::select! {
        _ = shutdown => {}
        _ = services => {}
        _ = slices => {}
    }
}

/// What routing reads of a Service ([`routes_from_services`]): its name, namespace, cluster IPs and ports. Why keep
/// no more: the store holds every Service of ours for the life of the process, and a Service as the API server sends
/// it is mostly its managedFields and defaults (docs/operator.md, "At scale").
pub fn routing_view(svc: &mut Service) {
    let meta = std::mem::take(&mut svc.metadata);
    svc.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        ..ObjectMeta::default()
    };
    svc.spec = svc.spec.take().map(|spec| ServiceSpec {
        cluster_ip: spec.cluster_ip,
        cluster_ips: spec.cluster_ips,
        ports: spec.ports,
        ..ServiceSpec::default()
    });
    svc.status = None;
}

/// Mirror the objects of `api`, as `keep` leaves them, in a store and call `update` with the store after every
/// change.
async fn follow<K>(api: Api<K>, keep: fn(&mut K), update: impl Fn(&Store<K>))
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&selector());
    let events = reflector::reflector(writer, watcher(api, config).modify(keep)).default_backoff();
    futures::pin_mut!(events);
    let kind = K::kind(&K::DynamicType::default()).to_string();
    while let Some(event) = events.next().await {
        match event {
            Ok(_) => update(&store),
            // Why: the backoff retries the watch; the last known state keeps serving meanwhile.
            Err(e) => tracing::warn!(kind, error = %e, "activator watch failed, retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_view_routes_as_the_whole_service() -> Result<(), serde_json::Error> {
        let whole: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "hello", "namespace": "apps", "uid": "u-1", "resourceVersion": "7",
                "labels": { LABEL_MANAGED_BY: FIELD_MANAGER },
                "managedFields": [{ "manager": FIELD_MANAGER, "operation": "Apply", "fieldsType": "FieldsV1",
                                    "fieldsV1": { "f:spec": { "f:ports": {} } } }],
            },
            "spec": {
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                "ports": [{ "name": "http", "port": 80, "targetPort": "http" }],
                "selector": { "app": "hello" }, "sessionAffinity": "None",
            },
            "status": { "loadBalancer": {} },
        }))?;
        let mut view = whole.clone();
        routing_view(&mut view);
        assert_eq!(routes_from_services([&view]), routes_from_services([&whole]));
        assert_eq!(routes_from_services([&view]).len(), 2);
        assert_eq!((view.metadata.managed_fields, view.metadata.labels, view.status), (None, None, None));
        assert_eq!(view.spec.and_then(|s| s.selector), None);
        Ok(())
    }
}

//! The Kubernetes feed: watches our Services and their EndpointSlices (the pods' and our activator slices) and
//! rewrites the routing state: routes, app ports, backends.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::routes::{backends_from_slices, ports_from_slices, routes_from_services};
use super::Activator;
use crate::labels::{FIELD_MANAGER, LABEL_MANAGED_BY};

/// Label selector of the objects the activator watches: ours (the EndpointSlice controller copies the
/// Service's labels onto its slices).
pub fn selector() -> String {
    format!("{LABEL_MANAGED_BY}={FIELD_MANAGER}")
}

/// Feed `activator` from the API server (all namespaces) until `shutdown` resolves.
pub async fn run(client: Client, activator: Arc<Activator>, shutdown: impl Future<Output = ()>) {
    let services = follow(Api::<Service>::all(client.clone()), {
        let activator = activator.clone();
        move |store: &Store<Service>| {
            let services = store.state();
            activator.state().set_routes(routes_from_services(services.iter().map(AsRef::as_ref)));
        }
    });
    let slices = follow(Api::<EndpointSlice>::all(client), {
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

/// Mirror the objects of `api` in a store and call `update` with the store after every change.
async fn follow<K>(api: Api<K>, update: impl Fn(&Store<K>))
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&selector());
    let events = reflector::reflector(writer, watcher(api, config)).default_backoff();
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

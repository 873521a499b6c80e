//! The EndpointSlice that puts the activator behind an idle app's Service.
//!
//! The app's Service keeps its selector, so Kubernetes keeps a slice of the pods. While the app has no ready
//! pod (or is being scaled to zero), the operator adds this second slice, whose endpoints are the activator
//! pods: kube-proxy then sends the Service's traffic to the activator, which holds it and wakes the app.
//! Once a pod is ready the slice is deleted and traffic goes straight to the pods again.

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::ResourceExt;

use super::{child_meta, desired_replicas, RenderConfig, HTTP_PORT_NAME};
use crate::crd::WasmApp;
use crate::error::Error;
use crate::render::hpa::scales_to_zero;

/// Label tying an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the controller of an EndpointSlice (the EndpointSlice controller leaves others' slices alone).
pub const LABEL_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`LABEL_SLICE_MANAGED_BY`] on activator slices; the activator ignores these slices as backends.
pub const ACTIVATOR_SLICE_MANAGER: &str = "wasmkube.dev-activator";

/// The ready activator pods, as read from the activator Service's EndpointSlices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivatorEndpoints {
    /// `IPv4` or `IPv6`: one family per slice.
    pub address_type: String,
    /// Ready pod addresses, sorted.
    pub addresses: Vec<String>,
    /// The activator's port (the slice port named `http`).
    pub port: Option<i32>,
}

/// The ready endpoints of the activator Service; IPv4 is preferred when the slices hold both families.
pub fn activator_endpoints(slices: &[EndpointSlice]) -> ActivatorEndpoints {
    let mut by_family: Vec<ActivatorEndpoints> = Vec::new();
    for slice in slices {
        let port =
            slice.ports.iter().flatten().find(|p| p.name.as_deref() == Some(HTTP_PORT_NAME)).and_then(|p| p.port);
        let ready = slice
            .endpoints
            .iter()
            // Why `!= Some(false)`: the API defines an absent `ready` as ready.
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses.iter().cloned());
        let entry = match by_family.iter_mut().find(|f| f.address_type == slice.address_type) {
            Some(entry) => entry,
            None => {
                by_family.push(ActivatorEndpoints { address_type: slice.address_type.clone(), ..Default::default() });
                let last = by_family.len() - 1;
                &mut by_family[last]
            }
        };
        entry.addresses.extend(ready);
        entry.port = entry.port.or(port);
    }
    for f in &mut by_family {
        f.addresses.sort();
        f.addresses.dedup();
    }
    by_family.retain(|f| !f.addresses.is_empty() && f.port.is_some());
    by_family.sort_by_key(|f| f.address_type != "IPv4");
    by_family.into_iter().next().unwrap_or_default()
}

/// Name of an app's activator slice.
pub fn activator_slice_name(app: &WasmApp) -> String {
    format!("{}-activator", app.name_any())
}

/// The activator slice of an HTTP app that scales to zero, while it has no ready pod or is scaled to zero;
/// `None` otherwise, or when no activator pod is ready (an empty slice would only hide the problem).
pub fn render_activator_slice(
    app: &WasmApp,
    activator: &ActivatorEndpoints,
    ready_replicas: i32,
    cfg: &RenderConfig,
) -> Result<Option<EndpointSlice>, Error> {
    let idle = desired_replicas(app, cfg) == 0 || ready_replicas == 0;
    let wanted = app.spec.http.is_some() && scales_to_zero(app) && cfg.scale_to_zero && idle;
    let Some(port) = activator.port.filter(|_| wanted && !activator.addresses.is_empty()) else {
        return Ok(None);
    };
    let mut meta = child_meta(app)?;
    meta.name = Some(activator_slice_name(app));
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.insert(LABEL_SERVICE_NAME.to_string(), app.name_any());
    labels.insert(LABEL_SLICE_MANAGED_BY.to_string(), ACTIVATOR_SLICE_MANAGER.to_string());
    Ok(Some(EndpointSlice {
        metadata: meta,
        address_type: activator.address_type.clone(),
        endpoints: activator
            .addresses
            .iter()
            .map(|address| Endpoint {
                addresses: vec![address.clone()],
                conditions: Some(EndpointConditions { ready: Some(true), ..EndpointConditions::default() }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some(HTTP_PORT_NAME.to_string()),
            port: Some(port),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }]),
    }))
}

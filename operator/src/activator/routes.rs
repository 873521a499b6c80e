//! Pure routing data: which app a request is for, and where an app's ready pods are.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

// Why from render: the slice the operator writes and the slices the activator skips must agree.
use super::state::AppPorts;
pub use crate::labels::{ACTIVATOR_SLICE_MANAGER, LABEL_SERVICE_NAME as LABEL_SLICE_SERVICE, LABEL_SLICE_MANAGED_BY};
use crate::render::{slice_activator_port, HTTP_PORT_NAME};

pub use crate::app_key::AppKey;

/// Ready backends of each app.
pub type Backends = HashMap<AppKey, Vec<SocketAddr>>;

/// The app a `Host` header names: `name.ns`, `name.ns.svc` or `name.ns.svc.<domain>`, with an optional port.
pub fn app_from_host(host: &str) -> Option<AppKey> {
    let host = strip_port(host.trim()).trim_end_matches('.');
    let mut labels = host.split('.');
    let name = labels.next().filter(|l| !l.is_empty())?;
    let namespace = labels.next().filter(|l| !l.is_empty())?;
    // Why: past `name.ns`, only `svc` and a domain of non-empty labels name a Service.
    let valid = match labels.next() {
        None => true,
        Some("svc") => !labels.any(str::is_empty),
        Some(_) => false,
    };
    valid.then(|| AppKey::new(namespace, name))
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// ClusterIP:port → app for every port of every Service (each Service names its WasmApp).
pub fn routes_from_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> HashMap<SocketAddr, AppKey> {
    let mut routes = HashMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(namespace) = svc.namespace() else { continue };
        let app = AppKey::new(namespace, svc.name_any());
        let ips = spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter());
        for ip in ips.filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            for port in spec.ports.iter().flatten() {
                let Ok(port) = u16::try_from(port.port) else { continue };
                routes.insert(SocketAddr::new(ip, port), app.clone());
            }
        }
    }
    routes
}

/// Each app's activator port, from the activator slices the operator writes (one port per slice).
pub fn ports_from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> AppPorts {
    let mut ports = AppPorts::new();
    for slice in slices {
        let labels = slice.labels();
        if labels.get(LABEL_SLICE_MANAGED_BY).map(String::as_str) != Some(ACTIVATOR_SLICE_MANAGER) {
            continue;
        }
        let (Some(service), Some(namespace), Some(port)) =
            (labels.get(LABEL_SLICE_SERVICE), slice.namespace(), slice_activator_port(slice))
        else {
            continue;
        };
        let app = AppKey::new(namespace, service.as_str());
        // Why keep the first by app order: two slices on one port (a leader handover) must resolve the same way
        // on every activator, and the operator moves the later app (see `allocate_activator_port`).
        match ports.get(&port) {
            Some(known) if *known <= app => {}
            _ => {
                ports.insert(port, app);
            }
        }
    }
    ports
}

/// The ClusterIP route a `Host` of the form `IP[:PORT]` names (port 80 when none): what a client that dials a
/// ClusterIP by address sends.
pub fn route_key_from_host(host: &str) -> Option<SocketAddr> {
    let host = host.trim();
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok()?;
    Some(SocketAddr::new(ip, 80))
}

/// Ready pod addresses (port named `http`) of each app, from the Kubernetes-managed EndpointSlices.
///
/// Slices managed by the activator are skipped: they point at the activator itself, and proxying to them
/// would loop.
pub fn backends_from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Backends {
    let mut backends = Backends::new();
    for slice in slices {
        let labels = slice.labels();
        if labels.get(LABEL_SLICE_MANAGED_BY).map(String::as_str) == Some(ACTIVATOR_SLICE_MANAGER) {
            continue;
        }
        let (Some(service), Some(namespace)) = (labels.get(LABEL_SLICE_SERVICE), slice.namespace()) else {
            continue;
        };
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(HTTP_PORT_NAME))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        let addrs = backends.entry(AppKey::new(namespace, service.clone())).or_default();
        for endpoint in &slice.endpoints {
            // Why: an absent `ready` condition means ready, as the EndpointSlice API documents.
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for ip in endpoint.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                let addr = SocketAddr::new(ip, port);
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
    }
    backends.retain(|_, addrs| !addrs.is_empty());
    backends
}

//! Pure routing data: which app a request is for, and where an app's ready pods are.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::render::HTTP_PORT_NAME;

/// `endpointslice.kubernetes.io/managed-by` value of the slice that points a Service at the activator.
pub const ACTIVATOR_SLICE_MANAGER: &str = "wasmkube.dev-activator";
/// Label naming the controller that manages an EndpointSlice.
pub const LABEL_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Label naming the Service an EndpointSlice belongs to.
pub const LABEL_SLICE_SERVICE: &str = "kubernetes.io/service-name";

/// An app the activator serves: the namespace and name of its WasmApp (and of its Service).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    /// Namespace of the WasmApp.
    pub namespace: String,
    /// Name of the WasmApp.
    pub name: String,
}

impl AppKey {
    /// The app `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

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

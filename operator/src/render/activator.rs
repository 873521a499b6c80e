//! The EndpointSlice that puts the activator behind an idle app's Service.
//!
//! The app's Service keeps its selector, so Kubernetes keeps a slice of the pods. While the app has no ready
//! pod (or is being scaled to zero), the operator adds this second slice, whose endpoints are the activator
//! pods: kube-proxy then sends the Service's traffic to the activator, which holds it and wakes the app.
//! Once a pod is ready the slice is deleted and traffic goes straight to the pods again.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::ResourceExt;

use super::{child_meta, desired_replicas, RenderConfig, HTTP_PORT_NAME, SERVICE_PORT_NAME};
use crate::app_key::AppKey;
use crate::crd::WasmApp;
use crate::error::Error;
use crate::labels::{ACTIVATOR_SLICE_MANAGER, LABEL_SERVICE_NAME, LABEL_SLICE_MANAGED_BY};
use crate::render::hpa::scales_to_zero;

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

/// Whether `app` needs its activator slice now: an HTTP app that scales to zero, while it has no ready pod or
/// is scaled to zero, and some activator pod is ready (an empty slice would only hide the problem).
pub fn wants_activator_slice(
    app: &WasmApp,
    activator: &ActivatorEndpoints,
    ready_replicas: i32,
    cfg: &RenderConfig,
) -> bool {
    let idle = desired_replicas(app, cfg) == 0 || ready_replicas == 0;
    app.spec.http.is_some()
        && scales_to_zero(app)
        && cfg.scale_to_zero
        && idle
        && activator.port.is_some()
        && !activator.addresses.is_empty()
}

/// The activator slice of `app` with the app's activator `port` when [`wants_activator_slice`]; `None` otherwise.
///
/// The slice's port carries the Service port's name: kube-proxy and ingress controllers pair a Service port
/// with the slice port of the same name and dial that port on the endpoints, so requests for this app reach
/// the activator on a port that names the app whatever their destination address or `Host`.
pub fn render_activator_slice(
    app: &WasmApp,
    activator: &ActivatorEndpoints,
    ready_replicas: i32,
    cfg: &RenderConfig,
    port: u16,
) -> Result<Option<EndpointSlice>, Error> {
    if !wants_activator_slice(app, activator, ready_replicas, cfg) {
        return Ok(None);
    }
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
            name: Some(SERVICE_PORT_NAME.to_string()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }]),
    }))
}

/// The app's activator port recorded in its activator slice (the first port), if any.
pub fn slice_activator_port(slice: &EndpointSlice) -> Option<u16> {
    slice.ports.iter().flatten().find_map(|p| p.port).and_then(|p| u16::try_from(p).ok())
}

/// The ports the operator hands out to scale-to-zero apps, one each (`--activator-ports FIRST-LAST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivatorPorts {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (included).
    pub last: u16,
}

/// The default range: below Linux's ephemeral ports (32768+) and Kubernetes' NodePorts (30000-32767).
pub const DEFAULT_ACTIVATOR_PORTS: ActivatorPorts = ActivatorPorts { first: 20000, last: 29999 };

impl Default for ActivatorPorts {
    fn default() -> Self {
        DEFAULT_ACTIVATOR_PORTS
    }
}

impl ActivatorPorts {
    /// How many ports, i.e. how many scale-to-zero apps can have one.
    pub fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for ActivatorPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for ActivatorPorts {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = s.split_once('-').ok_or_else(|| format!("{s:?} is not a port range FIRST-LAST"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{p:?} in {s:?} is not a port (1-65535)"))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(format!("port range {s:?} ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

/// No free port is left for an app's activator slice.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("all {} activator ports ({range}) are in use by other scale-to-zero apps; widen the operator's --activator-ports (chart: scaleToZero.activatorPorts)", .range.size())]
pub struct PortsExhausted {
    /// The range that is full.
    pub range: ActivatorPorts,
}

/// The activator port of `app`: the one it has (`current`) if that is in `range` and no other app's slice
/// claims it first, else the first free port probing upward (wrapping) from a hash of `namespace/name`, so an
/// app gets the same port each time it goes idle. `taken` lists the ports of the other apps' activator slices.
pub fn allocate_activator_port(
    app: &AppKey,
    current: Option<u16>,
    taken: &[(AppKey, u16)],
    range: ActivatorPorts,
) -> Result<u16, PortsExhausted> {
    // Why the order: should two slices ever claim one port (two leaders during a handover), the app that sorts
    // first keeps it and the other moves, the same answer on every replica.
    let claimed_before_us = |port: u16| taken.iter().any(|(other, p)| *p == port && other != app && other < app);
    if let Some(port) = current.filter(|p| range.contains(*p) && !claimed_before_us(*p)) {
        return Ok(port);
    }
    let used: BTreeSet<u16> = taken.iter().filter(|(other, _)| other != app).map(|(_, p)| *p).collect();
    let len = range.size();
    let start = fnv1a(format!("{}/{}", app.namespace, app.name).as_bytes()) % u64::from(len);
    (0..len)
        .map(|i| {
            let offset = (start + u64::from(i)) % u64::from(len);
            // Why the conversion cannot fail: offset < len ≤ 65535 - first + 1.
            range.first.saturating_add(u16::try_from(offset).unwrap_or(u16::MAX))
        })
        .find(|p| !used.contains(p))
        .ok_or(PortsExhausted { range })
}

/// FNV-1a (64 bit): stable across Rust versions and processes, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

//! The labels the operator puts on what it creates, and the selectors built from them.

use std::collections::BTreeMap;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "wasmkube-operator";
/// Label naming the app (pod selector, with `managed-by`).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label naming the manager (pod selector, with `name`).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label marking the role of the objects.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Label marking the system the objects belong to.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Label tying an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the controller of an EndpointSlice (the EndpointSlice controller leaves others' slices alone).
pub const LABEL_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`LABEL_SLICE_MANAGED_BY`] on activator slices; the activator ignores these slices as backends.
pub const ACTIVATOR_SLICE_MANAGER: &str = "wasmkube.dev-activator";

/// Labels that select the pods of a WasmApp.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), name.to_string()),
        (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
    ])
}

/// The pod selector as the string the scale subresource reports.
pub fn selector_string(name: &str) -> String {
    selector_labels(name).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Labels on every object the operator creates for a WasmApp.
pub fn common_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(LABEL_COMPONENT.to_string(), "wasmapp".to_string());
    labels.insert(LABEL_PART_OF.to_string(), "wasmkube".to_string());
    labels
}

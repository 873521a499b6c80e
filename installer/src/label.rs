//! The node label `wasmkube.dev/runtime=ready` that the RuntimeClass's nodeSelector schedules on.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use wasmkube_contract::labels::{NODE_RUNTIME_LABEL, NODE_RUNTIME_READY};

/// The JSON merge patch that sets (or, with `ready = false`, removes) the label.
pub fn label_patch(ready: bool) -> Value {
    let value = if ready { json!(NODE_RUNTIME_READY) } else { Value::Null };
    json!({ "metadata": { "labels": { NODE_RUNTIME_LABEL: value } } })
}

/// Applies [`label_patch`] to node `name`.
pub async fn set_label(client: kube::Client, name: &str, ready: bool) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client);
    nodes.patch(name, &PatchParams::default(), &Patch::Merge(label_patch(ready))).await?;
    tracing::info!(node = name, ready, "node label {NODE_RUNTIME_LABEL} updated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_set_and_remove_only_our_label() {
        assert_eq!(label_patch(true), json!({"metadata": {"labels": {"wasmkube.dev/runtime": "ready"}}}));
        assert_eq!(label_patch(false), json!({"metadata": {"labels": {"wasmkube.dev/runtime": null}}}));
    }
}

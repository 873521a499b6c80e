//! Uninstall on every node at once, for the chart's pre-delete hook: the hook switches the node-installer
//! DaemonSet's mode to `uninstall` and waits until every node's pod has run it. One Job cannot reach every
//! node; the DaemonSet already does.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

/// Name of the installer container in the DaemonSet.
pub const CONTAINER: &str = "installer";
/// Env var whose value the DaemonSet passes as the subcommand (`$(WASMKUBE_MODE)` in its args).
pub const MODE_ENV: &str = "WASMKUBE_MODE";

/// Strategic merge patch that sets the installer container's mode (`install` or `uninstall`).
pub fn mode_patch(mode: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [
        {"name": CONTAINER, "env": [{"name": MODE_ENV, "value": mode}]}
    ]}}}})
}

/// Whether every scheduled pod of the DaemonSet runs the current template and is ready (has finished).
pub fn rollout_done(ds: &DaemonSet) -> bool {
    let generation = ds.metadata.generation.unwrap_or(0);
    let Some(status) = &ds.status else {
        return false;
    };
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_number_scheduled.unwrap_or(0) == status.desired_number_scheduled
        && status.number_ready == status.desired_number_scheduled
        && status.number_unavailable.unwrap_or(0) == 0
}

/// Switches DaemonSet `namespace/name` to `uninstall` and waits up to `timeout` for every node, reading its
/// status every `poll`.
pub async fn uninstall_everywhere(
    client: kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = Api::namespaced(client, namespace);
    api.patch(name, &PatchParams::default(), &Patch::Strategic(mode_patch("uninstall"))).await?;
    tracing::info!(namespace, name, "node installer switched to uninstall; waiting for every node");
    let deadline = Instant::now() + timeout;
    loop {
        // Let the controller observe the new generation before reading its status.
        tokio::time::sleep(poll).await;
        let ds = api.get(name).await?;
        if rollout_done(&ds) {
            tracing::info!("uninstalled on every node");
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "DaemonSet {namespace}/{name} did not finish uninstalling within {timeout:?}: {:?}",
            ds.status
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetStatus;

    fn ds(generation: i64, status: DaemonSetStatus) -> DaemonSet {
        let mut ds = DaemonSet::default();
        ds.metadata.generation = Some(generation);
        ds.status = Some(status);
        ds
    }

    fn status(observed: i64, desired: i32, updated: i32, ready: i32) -> DaemonSetStatus {
        DaemonSetStatus {
            observed_generation: Some(observed),
            desired_number_scheduled: desired,
            updated_number_scheduled: Some(updated),
            number_ready: ready,
            ..Default::default()
        }
    }

    #[test]
    fn rollout_is_done_only_when_every_node_ran_the_new_mode() {
        assert!(rollout_done(&ds(2, status(2, 3, 3, 3))));
        assert!(!rollout_done(&ds(2, status(1, 3, 3, 3))), "the controller has not seen the patch");
        assert!(!rollout_done(&ds(2, status(2, 3, 2, 3))), "one node still runs the old pod");
        assert!(!rollout_done(&ds(2, status(2, 3, 3, 2))), "one node has not finished");
        assert!(!rollout_done(&DaemonSet::default()));
    }

    #[test]
    fn the_patch_merges_into_the_installer_container_env() {
        let p = mode_patch("uninstall");
        assert_eq!(p["spec"]["template"]["spec"]["containers"][0]["name"], "installer");
        assert_eq!(
            p["spec"]["template"]["spec"]["containers"][0]["env"][0],
            json!({"name": "WASMKUBE_MODE", "value": "uninstall"})
        );
    }
}

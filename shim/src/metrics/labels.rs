//! Which workload a container's series belong to: the operator's env vars first, then CRI's annotations,
//! then the container id.

use std::collections::HashMap;

use wasmkube_contract::env::ContainerEnv;
use wasmkube_contract::runtime::{CONTAINER_NAME_ANNOTATION, SANDBOX_NAMESPACE_ANNOTATION, SANDBOX_NAME_ANNOTATION};

/// The label values of one container's series.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerLabels {
    /// The Kubernetes namespace ("" when unknown).
    pub namespace: String,
    /// The WasmApp's name ("" when the operator did not render it).
    pub wasmapp: String,
    /// The pod's name ("" outside CRI).
    pub pod: String,
    /// The container's name in its pod, else its containerd id.
    pub container: String,
}

impl ContainerLabels {
    /// Resolves the labels of container `id` from the operator's settings and the spec's annotations.
    pub fn resolve(id: &str, env: &ContainerEnv, annotations: &HashMap<String, String>) -> Self {
        let annotation = |key: &str| annotations.get(key).cloned();
        Self {
            namespace: env.namespace.clone().or_else(|| annotation(SANDBOX_NAMESPACE_ANNOTATION)).unwrap_or_default(),
            wasmapp: env.app.clone().unwrap_or_default(),
            pod: annotation(SANDBOX_NAME_ANNOTATION).unwrap_or_default(),
            container: annotation(CONTAINER_NAME_ANNOTATION).unwrap_or_else(|| id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cri() -> HashMap<String, String> {
        [
            (SANDBOX_NAMESPACE_ANNOTATION, "pod-ns"),
            (SANDBOX_NAME_ANNOTATION, "hello-7d9f-abcde"),
            (CONTAINER_NAME_ANNOTATION, "app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn operator_env_wins_over_cri_annotations() {
        let env = ContainerEnv { app: Some("hello".into()), namespace: Some("apps".into()), ..Default::default() };
        let want = ContainerLabels {
            namespace: "apps".into(),
            wasmapp: "hello".into(),
            pod: "hello-7d9f-abcde".into(),
            container: "app".into(),
        };
        assert_eq!(ContainerLabels::resolve("c1", &env, &cri()), want);
    }

    #[test]
    fn cri_annotations_fill_in_without_the_operator_env() {
        let labels = ContainerLabels::resolve("c1", &ContainerEnv::default(), &cri());
        assert_eq!((labels.namespace.as_str(), labels.wasmapp.as_str()), ("pod-ns", ""));
        assert_eq!((labels.pod.as_str(), labels.container.as_str()), ("hello-7d9f-abcde", "app"));
    }

    #[test]
    fn without_either_the_container_id_names_the_series() {
        let labels = ContainerLabels::resolve("3f9a", &ContainerEnv::default(), &HashMap::new());
        assert_eq!(labels, ContainerLabels { container: "3f9a".into(), ..Default::default() });
    }
}

//! Which workload a container's series belong to: the operator's env vars first, then CRI's annotations,
//! then the container id.

use oci_spec::runtime::Spec;

use crate::engine::spec_env;

/// Env var the operator renders with the WasmApp's name.
pub const APP_ENV: &str = "WASMKUBE_APP";
/// Env var the operator renders with the WasmApp's namespace.
pub const NAMESPACE_ENV: &str = "WASMKUBE_NAMESPACE";
/// CRI annotation with the pod's namespace.
pub const SANDBOX_NAMESPACE_ANNOTATION: &str = "io.kubernetes.cri.sandbox-namespace";
/// CRI annotation with the pod's name.
pub const SANDBOX_NAME_ANNOTATION: &str = "io.kubernetes.cri.sandbox-name";
/// CRI annotation with the container's name in its pod.
pub const CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";

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
    /// Resolves the labels of container `id` from its spec.
    pub fn from_spec(id: &str, spec: &Spec) -> Self {
        let annotation = |key: &str| spec.annotations().as_ref().and_then(|a| a.get(key)).map(String::as_str);
        let first = |candidates: &[Option<&str>]| candidates.iter().flatten().next().map(|v| v.to_string());
        Self {
            namespace: first(&[spec_env(spec, NAMESPACE_ENV), annotation(SANDBOX_NAMESPACE_ANNOTATION)])
                .unwrap_or_default(),
            wasmapp: spec_env(spec, APP_ENV).unwrap_or_default().to_string(),
            pod: annotation(SANDBOX_NAME_ANNOTATION).unwrap_or_default().to_string(),
            container: annotation(CONTAINER_NAME_ANNOTATION).unwrap_or(id).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder};
    use std::collections::HashMap;

    fn spec(env: &[&str], annotations: &[(&str, &str)]) -> Spec {
        let process = ProcessBuilder::default().env(env.iter().map(|e| e.to_string()).collect::<Vec<_>>()).build();
        let annotations: HashMap<String, String> =
            annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SpecBuilder::default().process(process.unwrap()).annotations(annotations).build().unwrap()
    }

    const CRI: [(&str, &str); 3] = [
        (SANDBOX_NAMESPACE_ANNOTATION, "pod-ns"),
        (SANDBOX_NAME_ANNOTATION, "hello-7d9f-abcde"),
        (CONTAINER_NAME_ANNOTATION, "app"),
    ];

    #[test]
    fn operator_env_wins_over_cri_annotations() {
        let labels = ContainerLabels::from_spec("c1", &spec(&["WASMKUBE_APP=hello", "WASMKUBE_NAMESPACE=apps"], &CRI));
        let want = ContainerLabels {
            namespace: "apps".into(),
            wasmapp: "hello".into(),
            pod: "hello-7d9f-abcde".into(),
            container: "app".into(),
        };
        assert_eq!(labels, want);
    }

    #[test]
    fn cri_annotations_fill_in_without_the_operator_env() {
        let labels = ContainerLabels::from_spec("c1", &spec(&["OTHER=1"], &CRI));
        assert_eq!((labels.namespace.as_str(), labels.wasmapp.as_str()), ("pod-ns", ""));
        assert_eq!((labels.pod.as_str(), labels.container.as_str()), ("hello-7d9f-abcde", "app"));
    }

    #[test]
    fn without_either_the_container_id_names_the_series() {
        let labels = ContainerLabels::from_spec("3f9a", &spec(&[], &[]));
        assert_eq!(labels, ContainerLabels { container: "3f9a".into(), ..Default::default() });
    }
}

//! The chart's and deploy/'s copies of the CRD are the generated one in crds/ (itself checked against the Rust
//! types by operator/tests/crd.rs). The full render of deploy/ is compared by `make chart-check`, which needs helm.

use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn crd_copies_are_current() {
    let generated = read("crds/wasmapps.wasmkube.dev.yaml");
    for copy in ["charts/wasmkube/crds/wasmapps.wasmkube.dev.yaml", "deploy/01-crd-wasmapps.wasmkube.dev.yaml"] {
        assert!(read(copy) == generated, "{copy} differs from crds/: run `make crds deploy`");
    }
}

#[test]
fn the_chart_uses_the_contract_names() {
    let runtime_class = read("charts/wasmkube/templates/runtimeclass.yaml");
    assert!(runtime_class.contains("name: wasmkube\n") && runtime_class.contains("handler: wasmkube\n"));
    assert!(runtime_class.contains("wasmkube.dev/runtime: ready"), "scheduled on nodes the installer labelled");
    let deploy = read("deploy/02-wasmkube.yaml");
    assert!(deploy.contains("kind: RuntimeClass") && deploy.contains("kind: DaemonSet"));
    assert!(!deploy.contains("helm.sh/hook"), "plain manifests carry no hooks");
}

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
    use wasmkube_contract::labels::{NODE_RUNTIME_LABEL, NODE_RUNTIME_READY};
    use wasmkube_contract::runtime::HANDLER;
    let runtime_class = read("charts/wasmkube/templates/runtimeclass.yaml");
    assert!(
        runtime_class.contains(&format!("name: {HANDLER}\n"))
            && runtime_class.contains(&format!("handler: {HANDLER}\n"))
    );
    assert!(
        runtime_class.contains(&format!("{NODE_RUNTIME_LABEL}: {NODE_RUNTIME_READY}")),
        "scheduled on nodes the installer labelled"
    );
    let deploy = read("deploy/02-wasmkube.yaml");
    assert!(deploy.contains("kind: RuntimeClass") && deploy.contains("kind: DaemonSet"));
    assert!(!deploy.contains("helm.sh/hook"), "plain manifests carry no hooks");
}

#[test]
fn the_dockerfile_builds_every_workspace_member() {
    // The Dockerfile's dependency layer copies each member's manifest; a member it misses makes
    // `cargo fetch --locked` fail in the image build, which CI (no Docker) cannot run.
    let manifest: toml_edit::DocumentMut = read("Cargo.toml").parse().unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    let members = manifest["workspace"]["members"].as_array().unwrap_or_else(|| panic!("no workspace.members"));
    let dockerfile = read("Dockerfile");
    for member in members.iter().filter_map(|m| m.as_str()) {
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "the Dockerfile does not copy {member}/Cargo.toml"
        );
    }
}

//! The node config the chart installs on every node is one the shim accepts: an unknown or misspelt key
//! would stop every node's daemon (the config rejects unknown keys).

use std::path::Path;

use wasmkube_shim::config;

/// The `shim.toml` block of the node installer's ConfigMap in the rendered manifests.
fn chart_shim_toml() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifests = std::fs::read_to_string(root.join("deploy/02-wasmkube.yaml")).unwrap();
    let mut lines = manifests.lines().skip_while(|l| l.trim() != "shim.toml: |").skip(1);
    let mut toml = String::new();
    for line in lines.by_ref() {
        let Some(body) = line.strip_prefix("    ") else { break };
        toml.push_str(body);
        toml.push('\n');
    }
    assert!(!toml.is_empty(), "no shim.toml in deploy/02-wasmkube.yaml");
    toml
}

#[test]
fn the_charts_node_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shim.toml");
    std::fs::write(&path, chart_shim_toml()).unwrap();
    let config = config::load_from(&path).unwrap();
    assert_eq!(config.metrics_address(), Some("0.0.0.0:9464"));
    assert_eq!(config::engine_settings(&config).http.default_port, 8080);
}

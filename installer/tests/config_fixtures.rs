//! containerd configs of each layout: `before.toml` → install → `after.toml`; a second install changes
//! nothing; uninstall gives `before.toml` back byte for byte. Also what a drop-in and a k3s template get.
//!
//! `WASMKUBE_BLESS_FIXTURES=1` rewrites the expected files from the code (review the diff before committing).

use std::path::{Path, PathBuf};

use wasmkube_node_installer::config::{self, ConfigVersion};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the expected file, or writes it when blessing.
fn expect_file(path: &Path, actual: &str) {
    if std::env::var("WASMKUBE_BLESS_FIXTURES").is_ok_and(|v| v == "1") {
        std::fs::write(path, actual).unwrap();
    }
    assert_eq!(actual, read(path), "{} differs", path.display());
}

/// Install, install again, uninstall on `<name>/before.toml`; `version` is what containerd reports.
fn round_trip(name: &str, version: ConfigVersion) -> String {
    let dir = fixtures().join(name);
    let before = read(&dir.join("before.toml"));
    let after = config::add_runtime(&before, version).unwrap();
    expect_file(&dir.join("after.toml"), &after);
    assert_eq!(config::add_runtime(&after, version).unwrap(), after, "{name}: a second install changes nothing");
    let doc = config::parse(&after).unwrap();
    let layout = config::version_of(&doc).unwrap().unwrap();
    assert!(config::has_runtime(&doc, layout), "{name}: the runtime is there");
    assert_eq!(config::remove_runtime(&after).unwrap(), before, "{name}: uninstall restores the file");
    assert_eq!(config::remove_runtime(&before).unwrap(), before, "{name}: uninstall of nothing changes nothing");
    after
}

/// The value at a dotted key path of TOML text.
fn lookup<'a>(table: &'a toml_edit::Table, path: &[&str]) -> Option<&'a toml_edit::Item> {
    let mut item = table.get(path[0])?;
    for key in &path[1..] {
        item = item.as_table_like()?.get(key)?;
    }
    Some(item)
}

fn runtime_type(text: &str, cri: &str, handler: &str) -> Option<String> {
    let doc = config::parse(text).unwrap();
    lookup(doc.as_table(), &["plugins", cri, "containerd", "runtimes", handler, "runtime_type"])
        .and_then(|i| i.as_str())
        .map(str::to_string)
}

#[test]
fn containerd_1x_version_2() {
    let after = round_trip("containerd1-v2", ConfigVersion::V2);
    let cri = "io.containerd.grpc.v1.cri";
    assert_eq!(runtime_type(&after, cri, "wasmkube").as_deref(), Some("io.containerd.wasmkube.v1"));
    assert_eq!(runtime_type(&after, cri, "runc").as_deref(), Some("io.containerd.runc.v2"), "runc is kept");
    assert!(after.contains("SystemdCgroup = true # the kubelet uses the systemd cgroup driver"), "comments kept");
    let doc = config::parse(&after).unwrap();
    let annotations =
        lookup(doc.as_table(), &["plugins", cri, "containerd", "runtimes", "wasmkube", "container_annotations"]);
    let annotations: Vec<&str> =
        annotations.and_then(|a| a.as_array()).unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(annotations, ["io.kubernetes.container.terminationMessagePath"]);
}

#[test]
fn containerd_2x_version_3() {
    let after = round_trip("containerd2-v3", ConfigVersion::V3);
    let cri = "io.containerd.cri.v1.runtime";
    assert_eq!(runtime_type(&after, cri, "wasmkube").as_deref(), Some("io.containerd.wasmkube.v1"));
    assert_eq!(runtime_type(&after, cri, "crun").as_deref(), Some("io.containerd.runc.v2"));
    assert!(!after.contains("io.containerd.grpc.v1.cri"), "no containerd 1.x section in a version 3 file");
}

#[test]
fn containerd_1x_without_version() {
    let after = round_trip("containerd1-v1", ConfigVersion::V2);
    assert_eq!(runtime_type(&after, "cri", "wasmkube").as_deref(), Some("io.containerd.wasmkube.v1"));
    assert!(!after.contains("version ="), "the layout is kept, not converted");
}

#[test]
fn microk8s_template() {
    let after = round_trip("microk8s", ConfigVersion::V2);
    assert_eq!(runtime_type(&after, "io.containerd.grpc.v1.cri", "runc").as_deref(), Some("${RUNTIME_TYPE}"));
    assert_eq!(
        runtime_type(&after, "io.containerd.grpc.v1.cri", "wasmkube").as_deref(),
        Some("io.containerd.wasmkube.v1")
    );
}

#[test]
fn kind_node() {
    let after = round_trip("kind", ConfigVersion::V2);
    assert_eq!(
        runtime_type(&after, "io.containerd.grpc.v1.cri", "test-handler").as_deref(),
        Some("io.containerd.runc.v2")
    );
}

#[test]
fn an_empty_file_takes_the_installed_containerd_layout() {
    let dir = fixtures().join("empty");
    let before = read(&dir.join("before.toml"));
    let v2 = config::add_runtime(&before, ConfigVersion::V2).unwrap();
    expect_file(&dir.join("after-containerd1.toml"), &v2);
    let v3 = config::add_runtime(&before, ConfigVersion::V3).unwrap();
    expect_file(&dir.join("after-containerd2.toml"), &v3);
    assert_eq!(config::add_runtime(&v3, ConfigVersion::V2).unwrap(), v3, "the file's version wins once written");
}

#[test]
fn drop_ins_and_templates() {
    let dir = fixtures().join("drop-ins");
    for (version, file) in [(ConfigVersion::V2, "wasmkube-v2.toml"), (ConfigVersion::V3, "wasmkube-v3.toml")] {
        let text = config::drop_in(version).unwrap();
        expect_file(&dir.join(file), &text);
        let doc = config::parse(&text).unwrap();
        assert_eq!(config::version_of(&doc).unwrap(), Some(version));
        assert!(config::has_runtime(&doc, version));
    }
    let created = config::add_template_block(None, ConfigVersion::V2);
    expect_file(&dir.join("k3s-config.toml.tmpl"), &created);
    let created_v3 = config::add_template_block(None, ConfigVersion::V3);
    expect_file(&dir.join("k3s-config-v3.toml.tmpl"), &created_v3);
    // The block (without the Go template line) is TOML with our runtime in it.
    let block = created_v3.replace(config::TEMPLATE_BASE, "version = 3");
    assert!(config::has_runtime(&config::parse(&block).unwrap(), ConfigVersion::V3));
}

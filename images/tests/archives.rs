//! `make images` end to end: the archives written from this build's static binaries import into a containerd
//! that has no registry to pull from, their binaries start through runc in images that hold nothing but them
//! (no libc, no shell), and skopeo copies them, index and all, to a registry.

use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use wasmkube_harness::registry::Registry;
use wasmkube_harness::{cmd, init_test_tracing, paths, require_root, ContainerdOpts, PrivateContainerd};
use wasmkube_images::catalog::{Build, INSTALLER_BINARY, NODE, OPERATOR, OPERATOR_BINARY};
use wasmkube_images::layout::Platform;
use wasmkube_node_installer::install::{IMAGE_SHIM_PATH, SHIM_BINARY};

fn build(tag: &str) -> Result<Build> {
    for (binary, package) in [
        (OPERATOR_BINARY, "wasmkube-operator"),
        (INSTALLER_BINARY, "wasmkube-node-installer"),
        (SHIM_BINARY, "wasmkube-shim"),
    ] {
        paths::built_binary(binary, package)?;
    }
    Ok(Build {
        repository_prefix: "registry.test/wasmkube".into(),
        tag: tag.into(),
        binaries: vec![(Platform::host(), paths::bin_dir())],
    })
}

#[test]
fn archives_import_and_run_without_a_registry() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let out = tempfile::tempdir()?;
    let build = build("t1")?;
    let archives = build.write(out.path())?;
    ensure!(archives.len() == 2, "two archives, got {archives:?}");

    // No registry mirrors, no network pull: an image not imported cannot be run.
    let ctrd = PrivateContainerd::start(ContainerdOpts { wasmkube_runtime: false, ..Default::default() })?;
    for archive in &archives {
        ctrd.import_image(&archive.path)?;
    }
    let listed = ctrd.ctr(["images", "ls", "-q"])?.check("ctr images ls")?.stdout;
    for image in [OPERATOR, NODE] {
        ensure!(
            listed.lines().any(|l| l == build.reference(image)),
            "{} not imported: {listed}",
            build.reference(image)
        );
    }

    let run = |image: &str, id: &str, argv: &[&str]| -> Result<String> {
        let mut args = vec!["run", "--rm", image, id];
        args.extend_from_slice(argv);
        let out = ctrd.ctr(&args)?;
        ensure!(out.success(), "`ctr run {image} {argv:?}` failed: {}{}\n{}", out.stdout, out.stderr, ctrd.log_tail());
        Ok(out.stdout)
    };
    // The operator image's entrypoint, as its non-root user, with a subcommand that needs no cluster.
    let operator = build.reference(OPERATOR);
    let crd = run(&operator, "t-operator", &["/usr/local/bin/wasmkube-operator", "crd"])?;
    ensure!(crd.contains("kind: CustomResourceDefinition") && crd.contains("wasmapps.wasmkube.dev"), "{crd}");
    // The node image: the installer and the shim it installs start without any library beside them.
    let node = build.reference(NODE);
    let help = run(&node, "t-installer", &["wasmkube-node-installer", "--help"])?;
    ensure!(help.contains("uninstall"), "{help}");
    let shim = run(&node, "t-shim", &[IMAGE_SHIM_PATH, "--version"])?;
    ensure!(shim.contains(env!("CARGO_PKG_VERSION")), "{shim}");
    Ok(())
}

#[test]
fn skopeo_copies_the_archives_to_a_registry() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let out = tempfile::tempdir()?;
    let build = build("t2")?;
    let archives = build.write(out.path())?;
    let registry = Registry::start()?;
    for archive in &archives {
        let dest = format!("docker://{}/{}", registry.host(), archive.info.name.split_once('/').map_or("", |(_, r)| r));
        let mut copy = Command::new("skopeo");
        copy.args(["copy", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.path.display()))
            .arg(&dest);
        cmd::run_checked(&mut copy, Duration::from_secs(120)).with_context(|| format!("skopeo copy to {dest}"))?;
        let mut inspect = Command::new("skopeo");
        inspect.args(["inspect", "--raw", "--tls-verify=false", &dest]);
        let raw = cmd::run_checked(&mut inspect, Duration::from_secs(60))?.stdout;
        let index: Value = serde_json::from_str(&raw).with_context(|| format!("manifest of {dest}: {raw}"))?;
        ensure!(index["mediaType"] == "application/vnd.oci.image.index.v1+json", "{dest} is not an index: {raw}");
        ensure!(index["manifests"][0]["platform"]["architecture"] == Platform::host().architecture.as_str(), "{raw}");
        ensure!(
            wasmkube_harness::oci::sha256_digest(raw.as_bytes()) == archive.info.manifest_digest,
            "the registry holds a different index than the archive: {raw}"
        );
    }
    Ok(())
}

/// The chart installs exactly the images `make images` names (its defaults and the tag it takes).
#[test]
fn the_chart_names_these_images() -> Result<()> {
    let root = paths::workspace_root();
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("charts/wasmkube/values.yaml"))?)?;
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("charts/wasmkube/Chart.yaml"))?)?;
    let build = Build {
        repository_prefix: wasmkube_images::catalog::DEFAULT_REPOSITORY_PREFIX.into(),
        tag: env!("CARGO_PKG_VERSION").into(),
        binaries: vec![],
    };
    let image = |section: &str| {
        format!(
            "{}:{}",
            values[section]["image"]["repository"].as_str().unwrap_or(""),
            chart["appVersion"].as_str().unwrap_or("")
        )
    };
    assert_eq!(image("operator"), build.reference(OPERATOR));
    assert_eq!(image("nodeInstaller"), build.reference(NODE));
    Ok(())
}

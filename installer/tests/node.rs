//! The installer against a real private containerd that starts without the wasmkube runtime: install →
//! restart → a CRI pod with handler `wasmkube` runs hello-cli → uninstall → restart → the handler is unknown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, WASMKUBE_HANDLER};
use wasmkube_harness::cri::{ContainerSpec, ContainerState, CriClient};
use wasmkube_harness::images::{component_image_at, pause_image, PAUSE_IMAGE};
use wasmkube_harness::{guests, init_test_tracing, paths, require_root, wait_until, ContainerdOpts, PrivateContainerd};

const INSTALLER: &str = env!("CARGO_BIN_EXE_wasmkube-node-installer");
const HELLO: &str = "docker.io/wasmkube/hello-cli:test";

/// The shim built by this workspace (`cargo test --workspace` builds it with the shim's tests).
fn shim_binary() -> Result<PathBuf> {
    Ok(paths::built_binary(paths::SHIM_BINARY, "wasmkube-shim")?)
}

/// Runs the installer with the private containerd's dir as the host root and its config.toml as the config.
fn installer(host_root: &Path, config: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(INSTALLER)
        .args(args)
        .arg("--host-root")
        .arg(host_root)
        .arg("--containerd-config")
        .arg(config)
        // The harness restarts its containerd itself; the installer must say what to run instead.
        .args(["--restart", "skip"])
        .env_remove("NODE_NAME")
        .output()
        .context("running wasmkube-node-installer")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "installer {args:?} failed ({}): {stderr}", out.status);
    Ok(stderr)
}

fn run_hello(cri: &CriClient) -> Result<()> {
    let pod = cri.run_pod_sandbox("installed-pod", WASMKUBE_HANDLER)?;
    let spec = ContainerSpec { name: "hello".into(), image: HELLO.into(), ..Default::default() };
    let id = cri.create_container(&pod, &spec)?;
    cri.start_container(&id)?;
    let status = cri.wait_container_state(&id, ContainerState::Exited, Duration::from_secs(30))?;
    ensure!(status.exit_code == 0, "hello-cli exited with {status:?}");
    Ok(cri.remove_pod(&pod)?)
}

#[test]
fn install_makes_the_handler_work_and_uninstall_takes_it_away() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    init_test_tracing();
    let shim = shim_binary()?;
    let opts = ContainerdOpts {
        cni: Some(CniOpts { subnet: "10.88.41.0/24".into() }),
        wasmkube_runtime: false,
        ..Default::default()
    };
    let mut ctrd = PrivateContainerd::start(opts)?;
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    ctrd.import_in(
        CRI_NAMESPACE,
        &component_image_at(HELLO, std::fs::read(guests::guest_wasm("hello-cli")?)?, "/app.wasm"),
    )?;
    let cri = ctrd.cri()?;
    wait_until("CRI sees the imported image", Duration::from_secs(10), || {
        cri.image_id(HELLO).is_ok_and(|id| id.is_some())
    })?;
    unknown_handler(&cri, "before").context("before install")?;

    // The private containerd's dir plays the host's root; its config.toml is a host path below it.
    let host_root = ctrd.dir().to_path_buf();
    let config = Path::new("/").join(ctrd.dirs().config().strip_prefix(&host_root)?);
    let original = std::fs::read_to_string(ctrd.dirs().config())?;
    let shim_toml = ctrd.work_dir().join("shim.toml");
    std::fs::write(&shim_toml, "cache_max_bytes = 1048576\n")?;
    let shim_config_arg = shim_toml.to_string_lossy().into_owned();
    let log = installer(
        &host_root,
        &config,
        &["install", "--shim-source", &shim.to_string_lossy(), "--shim-config", &shim_config_arg],
    )?;
    ensure!(log.contains("systemctl restart containerd"), "a skipped restart says what to run: {log}");
    let installed = std::fs::read_to_string(ctrd.dirs().config())?;
    ensure!(installed.contains("io.containerd.wasmkube.v1") && installed.starts_with(&original[..40]), "{installed}");
    let bin_dir = host_root.join("usr/local/bin");
    ensure!(bin_dir.join(paths::SHIM_BINARY).is_file(), "the shim is on the host");
    ensure!(std::fs::read_to_string(host_root.join("etc/wasmkube/shim.toml"))? == "cache_max_bytes = 1048576\n");

    // Idempotent: a second run leaves the config as it was.
    installer(&host_root, &config, &["install", "--shim-source", &shim.to_string_lossy()])?;
    ensure!(std::fs::read_to_string(ctrd.dirs().config())? == installed, "a second install changed the config");

    ctrd.prepend_path(&bin_dir);
    ctrd.restart()?;
    let cri = ctrd.cri()?;
    run_hello(&cri).context("a pod under the installed handler")?;

    installer(&host_root, &config, &["uninstall"])?;
    ensure!(std::fs::read_to_string(ctrd.dirs().config())? == original, "uninstall restores the config");
    ensure!(!bin_dir.join(paths::SHIM_BINARY).exists(), "uninstall removes the shim");
    ensure!(!host_root.join("etc/wasmkube").exists(), "uninstall removes the shim's config");
    let backup = format!("{}.wasmkube-backup", ctrd.dirs().config().display());
    ensure!(!Path::new(&backup).exists(), "a restored file needs no backup");
    ctrd.restart()?;
    let cri = ctrd.cri()?;
    unknown_handler(&cri, "after").context("after uninstall")
}

/// RunPodSandbox with handler `wasmkube` fails because containerd has no such runtime.
fn unknown_handler(cri: &CriClient, name: &str) -> Result<()> {
    let err = match cri.run_pod_sandbox(name, WASMKUBE_HANDLER) {
        Ok(pod) => anyhow::bail!("RunPodSandbox with handler wasmkube succeeded: {}", pod.id),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains(r#"no runtime for "wasmkube" is configured"#), "not the unknown-handler error: {err}");
    Ok(())
}

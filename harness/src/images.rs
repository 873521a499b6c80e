//! Ready-made test images: busybox under runc, a component for the shim, and the CRI pause image.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cmd;
use crate::error::{IoContext, Result};
use crate::oci::OciImage;
use crate::packages::{self, Package};

/// Name of the busybox test image.
pub const BUSYBOX_IMAGE: &str = "docker.io/wasmkube/busybox:test";
/// Name of the pause image, and the default CRI `sandbox_image` of a private containerd.
pub const PAUSE_IMAGE: &str = "docker.io/wasmkube/pause:test";
/// Where [`component_image`] puts the component inside the image.
pub const COMPONENT_PATH: &str = "/app.wasm";

/// Applets linked next to busybox in the image.
const BUSYBOX_APPLETS: &[&str] = &["true", "false", "sleep", "sh", "echo", "cat", "ls", "env", "sync"];

/// The C source of the pause binary.
pub const PAUSE_C: &str = include_str!("pause.c");

/// An image with Debian's static busybox and a few applets in `/bin`; entrypoint `/bin/true`.
pub fn busybox_image(name: &str) -> Result<OciImage> {
    packages::ensure_installed(&[Package::BusyboxStatic])?;
    let busybox = std::fs::read(packages::BUSYBOX).ctx(|| format!("reading {}", packages::BUSYBOX))?;
    let mut image =
        OciImage::new(name).file("/bin/busybox", busybox, 0o755).dir("/tmp", 0o1777).entrypoint(["/bin/true"]);
    for applet in BUSYBOX_APPLETS {
        image = image.symlink(&format!("/bin/{applet}"), "busybox");
    }
    Ok(image)
}

/// A `FROM scratch` image holding one component at [`COMPONENT_PATH`], which is also its entrypoint.
pub fn component_image(name: &str, wasm: impl Into<Vec<u8>>) -> OciImage {
    component_image_at(name, wasm, COMPONENT_PATH)
}

/// Like [`component_image`] with the component at `path_in_image`.
pub fn component_image_at(name: &str, wasm: impl Into<Vec<u8>>, path_in_image: &str) -> OciImage {
    OciImage::new(name).file(path_in_image, wasm, 0o644).entrypoint([path_in_image])
}

/// An image whose entrypoint `/pause` is compiled from [`PAUSE_C`] in `build_dir`.
pub fn pause_image(name: &str, build_dir: &Path) -> Result<OciImage> {
    let binary = build_pause(build_dir)?;
    let bytes = std::fs::read(&binary).ctx(|| format!("reading {}", binary.display()))?;
    Ok(OciImage::new(name).file("/pause", bytes, 0o755).entrypoint(["/pause"]))
}

/// Compiles the static pause binary into `build_dir` and returns its path.
pub fn build_pause(build_dir: &Path) -> Result<std::path::PathBuf> {
    packages::ensure_installed(&[Package::StaticCToolchain])?;
    std::fs::create_dir_all(build_dir).ctx(|| format!("creating {}", build_dir.display()))?;
    let source = build_dir.join("pause.c");
    let binary = build_dir.join("pause");
    std::fs::write(&source, PAUSE_C).ctx(|| format!("writing {}", source.display()))?;
    let mut gcc = Command::new("gcc");
    gcc.args(["-static", "-O2", "-s", "-o"]).arg(&binary).arg(&source);
    cmd::run_checked(&mut gcc, Duration::from_secs(120))?;
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_image_runs_the_component_directly() {
        let layout = component_image("example.test/c:1", b"\0asm".to_vec()).layout().unwrap();
        let config = layout.blobs.get(&layout.info.config_digest).unwrap();
        let config: serde_json::Value = serde_json::from_slice(config).unwrap();
        assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/app.wasm"]));
    }

    #[test]
    fn pause_compiles_static_and_stops_on_sigterm() {
        if !Package::StaticCToolchain.is_present() {
            eprintln!("gcc/libc6-dev missing: pause build not checked");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let binary = build_pause(dir.path()).unwrap();
        assert!(packages::is_static_elf(&binary));
        let mut child = Command::new(&binary).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}

//! hello-http on a private containerd with our shim: the node set up once, and pods that serve it through CRI.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmkube_harness::containerd::{CniOpts, CRI_NAMESPACE, WASMKUBE_HANDLER};
use wasmkube_harness::cri::{ContainerSpec, ContainerState, CriClient, Pod};
use wasmkube_harness::images::{component_image_at, pause_image, PAUSE_IMAGE};
use wasmkube_harness::{guests, wait_until, ContainerdOpts, PrivateContainerd};

/// Image name of the hello-http component.
pub const IMAGE: &str = "docker.io/wasmkube/hello-http:bench";
/// Port hello-http listens on in its pod.
pub const PORT: u16 = 8080;
/// What hello-http answers to `GET /`.
pub const GREETING: &str = "hello from wasmkube";

/// A private containerd running `shim`, with CNI on `subnet` and the pause and hello-http images imported
/// and visible to CRI; also returns the component's bytes.
pub fn node(shim: &Path, subnet: &str) -> Result<(PrivateContainerd, CriClient, Vec<u8>)> {
    let wasm_path = guests::guest_wasm("hello_http")?;
    let wasm = std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let (ctrd, cri) = node_with(shim, subnet, IMAGE, wasm.clone())?;
    Ok((ctrd, cri, wasm))
}

/// A private containerd running `shim`, with CNI on `subnet` and the pause image and `wasm` as `image`
/// imported and visible to CRI.
pub fn node_with(shim: &Path, subnet: &str, image: &str, wasm: Vec<u8>) -> Result<(PrivateContainerd, CriClient)> {
    let mut opts = ContainerdOpts::with_shim(shim);
    opts.cni = Some(CniOpts { subnet: subnet.into() });
    let ctrd = PrivateContainerd::start(opts)?;
    ctrd.import_in(CRI_NAMESPACE, &pause_image(PAUSE_IMAGE, &ctrd.work_dir().join("pause"))?)?;
    ctrd.import_in(CRI_NAMESPACE, &component_image_at(image, wasm, "/app.wasm"))?;
    let cri = ctrd.cri()?;
    wait_until("CRI sees the images", Duration::from_secs(10), || {
        [PAUSE_IMAGE, image].iter().all(|i| cri.image_id(i).is_ok_and(|id| id.is_some()))
    })?;
    Ok((ctrd, cri))
}

/// A pod whose wasi:http container runs.
pub struct Started {
    pub pod: Pod,
    /// The container's id.
    pub container: String,
    /// Where it serves.
    pub addr: SocketAddr,
}

/// RunPodSandbox + CreateContainer + StartContainer of hello-http under our handler, as the kubelet does,
/// with the env and mounts of `container` (its name and image are set here); returns once its container runs
/// (it may not answer yet).
pub fn start_pod(cri: &CriClient, name: &str, container: ContainerSpec) -> Result<Started> {
    start_pod_of(cri, name, IMAGE, container)
}

/// The same for the wasi:http component `image`.
pub fn start_pod_of(cri: &CriClient, name: &str, image: &str, container: ContainerSpec) -> Result<Started> {
    let pod = cri.run_pod_sandbox(name, WASMKUBE_HANDLER)?;
    let spec = ContainerSpec { name: "web".into(), image: image.into(), ..container };
    let container = cri.create_container(&pod, &spec)?;
    cri.start_container(&container)?;
    cri.wait_container_state(&container, ContainerState::Running, Duration::from_secs(30))?;
    let addr = SocketAddr::new(cri.pod_ip(&pod)?, PORT);
    Ok(Started { pod, container, addr })
}

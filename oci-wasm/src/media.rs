//! Media types of WebAssembly OCI artifacts and of the images that may carry a component.

/// Config of a CNCF Wasm OCI artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Layer of a CNCF Wasm OCI artifact: the component itself.
pub const WASM_LAYER: &str = "application/wasm";
/// Layer type of older Bytecode Alliance tooling (`wkg`).
pub const BYTECODEALLIANCE_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Layer type of runwasi-style images.
pub const WASM_CONTENT_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Layer types whose blob is the component itself.
pub const RAW_WASM_LAYERS: &[&str] = &[WASM_LAYER, BYTECODEALLIANCE_LAYER, WASM_CONTENT_LAYER];
/// Uncompressed tar layers of plain images (one `.wasm` file inside).
pub const TAR_LAYERS: &[&str] =
    &["application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"];
/// Gzip-compressed tar layers of plain images (one `.wasm` file inside).
pub const TAR_GZIP_LAYERS: &[&str] =
    &["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"];

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest type a pull accepts.
pub const MANIFESTS: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

/// Platform of an index entry for a component: architecture `wasm`, then these OSes in order.
pub const WASM_ARCH: &str = "wasm";
/// Preferred index OSes, best first.
pub const WASM_OSES: &[&str] = &["wasip2", "wasip1"];

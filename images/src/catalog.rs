//! The images wasmkube ships, as the chart's defaults name them: what each holds and how it starts.
//! Both are `FROM scratch`: static binaries need no libc, and the operator needs no CA store (it bundles
//! its roots, issue 13).

use std::path::{Path, PathBuf};

use wasmkube_node_installer::install::{IMAGE_INSTALLER_PATH, IMAGE_SHIM_PATH, SHIM_BINARY};

use crate::elf::require_static;
use crate::error::{IoContext, Result};
use crate::layout::{multi_platform, ImageInfo, OciImage, Platform};

/// Registry and namespace of the published images (the chart's `*.image.repository` prefix).
pub const DEFAULT_REPOSITORY_PREFIX: &str = "ghcr.io/wasmkube";
/// The operator image: `wasmkube-operator run`, as the non-root user of distroless images.
pub const OPERATOR: &str = "wasmkube-operator";
/// The node image: the node installer and the shim it copies onto each node.
pub const NODE: &str = "wasmkube-node";
/// The operator binary, and where the operator image carries it.
pub const OPERATOR_BINARY: &str = "wasmkube-operator";
const OPERATOR_PATH: &str = "/usr/local/bin/wasmkube-operator";
/// The node installer binary.
pub const INSTALLER_BINARY: &str = "wasmkube-node-installer";
/// UID:GID the operator runs as (distroless' `nonroot`, so `runAsNonRoot` holds without a `runAsUser`).
pub const NONROOT: &str = "65532:65532";

/// What to build: the binaries of each platform, and how to name the images.
#[derive(Debug, Clone)]
pub struct Build {
    /// `ghcr.io/wasmkube` or a registry of the user's.
    pub repository_prefix: String,
    /// The tag (the chart's appVersion by default).
    pub tag: String,
    /// For each platform, the directory holding its static `wasmkube-operator`, `wasmkube-node-installer`
    /// and `containerd-shim-wasmkube-v1`.
    pub binaries: Vec<(Platform, PathBuf)>,
}

/// One written archive.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The archive file (`<out>/<image>.tar`).
    pub path: PathBuf,
    /// Name and index digest.
    pub info: ImageInfo,
}

impl Build {
    /// The full reference of one of [`OPERATOR`] and [`NODE`].
    pub fn reference(&self, image: &str) -> String {
        format!("{}/{image}:{}", self.repository_prefix.trim_end_matches('/'), self.tag)
    }

    /// Writes `<out>/wasmkube-operator.tar` and `<out>/wasmkube-node.tar`.
    pub fn write(&self, out: &Path) -> Result<Vec<Archive>> {
        std::fs::create_dir_all(out).ctx(|| format!("creating {}", out.display()))?;
        let mut written = Vec::new();
        for (image, define) in [(OPERATOR, operator as Define), (NODE, node as Define)] {
            let name = self.reference(image);
            let per_platform = self
                .binaries
                .iter()
                .map(|(platform, dir)| Ok(define(&name, dir)?.platform(platform.clone()).gzip(true)))
                .collect::<Result<Vec<_>>>()?;
            let layout = multi_platform(&name, &per_platform)?;
            let path = out.join(format!("{image}.tar"));
            layout.write_tar(&path)?;
            tracing::info!(image = %name, digest = %layout.info.manifest_digest, archive = %path.display(), "wrote image");
            written.push(Archive { path, info: layout.info });
        }
        Ok(written)
    }
}

type Define = fn(&str, &Path) -> Result<OciImage>;

/// The operator image from the binaries in `dir`.
pub fn operator(name: &str, dir: &Path) -> Result<OciImage> {
    Ok(OciImage::new(name)
        .file(OPERATOR_PATH, static_binary(dir, OPERATOR_BINARY)?, 0o755)
        .entrypoint([OPERATOR_PATH])
        .cmd(["run"])
        .user(NONROOT)
        .label("org.opencontainers.image.title", OPERATOR))
}

/// The node image from the binaries in `dir`; it runs as root (it edits the host's containerd config).
pub fn node(name: &str, dir: &Path) -> Result<OciImage> {
    Ok(OciImage::new(name)
        .file(IMAGE_INSTALLER_PATH, static_binary(dir, INSTALLER_BINARY)?, 0o755)
        .file(IMAGE_SHIM_PATH, static_binary(dir, SHIM_BINARY)?, 0o755)
        .entrypoint([IMAGE_INSTALLER_PATH])
        .cmd(["install"])
        .label("org.opencontainers.image.title", NODE))
}

fn static_binary(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    require_static(&path)?;
    std::fs::read(&path).ctx(|| format!("reading {}", path.display()))
}

//! The images wasmkube ships, as the chart's defaults name them: what each holds and how it starts.
//! Both are `FROM scratch`: static binaries need no libc. The operator trusts only the roots it bundles, but
//! carries them as a CA file too, for the registry client that insists on a system store (see [`CA_BUNDLE_PATH`]).

use std::path::{Path, PathBuf};

use base64::Engine;

use wasmkube_node_installer::install::{IMAGE_INSTALLER_PATH, IMAGE_SHIM_PATH, SHIM_BINARY};

use crate::elf::{require_static, without_debug_info};
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
/// Where the operator image carries its CA bundle: the Mozilla roots the operator itself bundles
/// (`webpki-root-certs`), at the path Debian and rustls-native-certs use. oci-client 0.18 builds a reqwest
/// client that loads the system store and fails without one, whatever roots it is given; the operator
/// survives that, but then cannot pin tags to digests (seen on a real cluster).
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";
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
        .file(CA_BUNDLE_PATH, ca_bundle(), 0o644)
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
    without_debug_info(&path)
}

/// The bundled roots as one PEM file.
pub fn ca_bundle() -> Vec<u8> {
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_holds_every_bundled_root_as_pem() {
        let pem = String::from_utf8(ca_bundle()).unwrap();
        let blocks: Vec<&str> = pem.split("-----END CERTIFICATE-----\n").filter(|b| !b.is_empty()).collect();
        assert_eq!(blocks.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(blocks.len() > 100, "the Mozilla roots: {}", blocks.len());
        for (block, der) in blocks.iter().zip(webpki_root_certs::TLS_SERVER_ROOT_CERTS) {
            let body = block.strip_prefix("-----BEGIN CERTIFICATE-----\n").unwrap();
            assert!(body.lines().all(|l| l.len() <= 64), "PEM lines are at most 64 characters");
            let decoded = base64::engine::general_purpose::STANDARD.decode(body.replace('\n', "")).unwrap();
            assert_eq!(decoded, der.as_ref());
        }
    }
}

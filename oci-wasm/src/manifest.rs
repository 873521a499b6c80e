//! Manifests and indexes as the registry sends them, and the rules that find the component in them.

use std::cell::Cell;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::{media, Error};

/// The largest component (and the largest layer, packed or unpacked) a pull accepts. Components are
/// held in memory by the node daemon, which every pod of the node shares: a layer that unpacks to
/// gigabytes (a gzip bomb, or a mistake) must fail its own pod, not the daemon. The largest components
/// seen are tens of MB (an interpreter with its standard library).
pub const MAX_COMPONENT_BYTES: u64 = 512 << 20;

/// A content descriptor (config, layer, or index entry).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    pub media_type: String,
    /// `sha256:…` digest of the content.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// Platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Platform {
    /// CPU architecture (`wasm` for components).
    pub architecture: String,
    /// Operating system (`wasip2`, `wasip1`).
    pub os: String,
}

/// An image manifest or an index (the fields both can have).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Media type the document declares (optional in OCI).
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config descriptor of an image manifest.
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// The layers of an image manifest.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The entries of an index.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// How the component sits in its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The layer blob is the component.
    Raw,
    /// The layer is an uncompressed tar holding one `.wasm` file.
    Tar,
    /// The layer is a gzip-compressed tar holding one `.wasm` file.
    TarGzip,
}

impl Manifest {
    /// Parses the manifest whose digest is `digest`.
    pub fn parse(bytes: &[u8], digest: &str) -> Result<Self, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidManifest { digest: digest.to_string(), reason: e.to_string() })
    }

    /// Whether this is an index (OCI index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        !self.manifests.is_empty()
            || matches!(self.media_type.as_deref(), Some(media::OCI_INDEX | media::DOCKER_MANIFEST_LIST))
    }

    /// The index entry for a component: architecture `wasm`, OS `wasip2`, else `wasip1`.
    pub fn pick_platform(&self, reference: &str) -> Result<&Descriptor, Error> {
        let on = |os: &str| {
            self.manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.architecture == media::WASM_ARCH && p.os == os))
        };
        media::WASM_OSES.iter().find_map(|os| on(os)).ok_or_else(|| {
            let found: Vec<String> = self
                .manifests
                .iter()
                .map(|d| d.platform.as_ref().map_or("no platform".into(), |p| format!("{}/{}", p.os, p.architecture)))
                .collect();
            Error::NoComponent {
                reference: reference.to_string(),
                reason: format!(
                    "the image index has no wasip2/wasm or wasip1/wasm entry (platforms: {})",
                    found.join(", ")
                ),
            }
        })
    }

    /// The layer that holds the component, and how.
    pub fn component_layer(&self, reference: &str) -> Result<(&Descriptor, LayerKind), Error> {
        if let Some(raw) = self.layers.iter().find(|l| media::RAW_WASM_LAYERS.contains(&l.media_type.as_str())) {
            return Ok((raw, LayerKind::Raw));
        }
        if let [only] = self.layers.as_slice() {
            if media::TAR_LAYERS.contains(&only.media_type.as_str()) {
                return Ok((only, LayerKind::Tar));
            }
            if media::TAR_GZIP_LAYERS.contains(&only.media_type.as_str()) {
                return Ok((only, LayerKind::TarGzip));
            }
        }
        let config = self.config.as_ref().map_or("none".to_string(), |c| c.media_type.clone());
        let layers: Vec<&str> = self.layers.iter().map(|l| l.media_type.as_str()).collect();
        Err(Error::NoComponent {
            reference: reference.to_string(),
            reason: format!(
                "no WebAssembly component found: config {config}, layers [{}]; expected a layer of type {} \
                 or a single tar layer (uncompressed or gzip) holding one .wasm file",
                layers.join(", "),
                media::RAW_WASM_LAYERS.join(" / ")
            ),
        })
    }
}

/// The one `.wasm` regular file in a tar layer of `kind` ([`LayerKind::Tar`] or [`LayerKind::TarGzip`]).
pub fn wasm_from_layer(layer: Vec<u8>, kind: LayerKind, reference: &str) -> Result<Vec<u8>, Error> {
    unpack(layer, kind, reference, MAX_COMPONENT_BYTES)
}

fn unpack(layer: Vec<u8>, kind: LayerKind, reference: &str, max: u64) -> Result<Vec<u8>, Error> {
    let len = layer.len() as u64;
    if len > max {
        return Err(too_large(reference, "the image layer is larger than", max));
    }
    match kind {
        LayerKind::Raw => Ok(layer),
        LayerKind::Tar => wasm_from_tar(layer.as_slice(), reference, max),
        LayerKind::TarGzip => wasm_from_tar(flate2::read::GzDecoder::new(layer.as_slice()), reference, max),
    }
}

/// The error for content over `max` bytes; `what` is "the image layer is larger than" or the like.
pub(crate) fn too_large(reference: &str, what: &str, max: u64) -> Error {
    Error::NoComponent {
        reference: reference.to_string(),
        reason: format!("{what} {} MiB, the most a node accepts for one component", max >> 20),
    }
}

/// A reader that fails once more than `left` bytes came through it, and says so in `exceeded` (the tar
/// reader wraps the error it gets).
struct AtMost<'a, R> {
    inner: R,
    left: u64,
    exceeded: &'a Cell<bool>,
}

impl<R: Read> Read for AtMost<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => self.left = left,
            None => {
                self.exceeded.set(true);
                return Err(std::io::Error::other("the layer unpacks past the bound"));
            }
        }
        Ok(n)
    }
}

fn wasm_from_tar(tar_stream: impl Read, reference: &str, max: u64) -> Result<Vec<u8>, Error> {
    let exceeded = Cell::new(false);
    let none = |reason: String| Error::NoComponent { reference: reference.to_string(), reason };
    // Unpacking stops at the bound (plus a tar's headers), so a small layer cannot make the daemon
    // unpack gigabytes.
    let limit = max.saturating_add(1 << 20);
    let mut archive = tar::Archive::new(AtMost { inner: tar_stream, left: limit, exceeded: &exceeded });
    let entries = archive.entries().map_err(|e| none(format!("the image layer is not a tar archive: {e}")))?;
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            if exceeded.get() {
                return too_large(reference, "the image layer unpacks to more than", max);
            }
            none(format!("the image layer is not a valid tar archive: {e}"))
        })?;
        let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
        if entry.header().entry_type().is_file() && path.ends_with(".wasm") {
            if entry.size() > max {
                return Err(too_large(reference, &format!("{path} in the image layer is larger than"), max));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| {
                if exceeded.get() {
                    return too_large(reference, "the image layer unpacks to more than", max);
                }
                none(format!("cannot read {path} from the image layer: {e}"))
            })?;
            found.push((path, bytes));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0).1),
        0 => Err(none("the image layer holds no .wasm file".into())),
        _ => {
            let names: Vec<String> = found.into_iter().map(|(p, _)| p).collect();
            Err(none(format!("the image layer holds several .wasm files ({}); expected one", names.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media_type: &str) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest: "sha256:00".into(), size: 1, platform: None }
    }

    fn entry(os: &str, digest: &str) -> Descriptor {
        let platform = Some(Platform { architecture: "wasm".into(), os: os.into() });
        Descriptor { digest: digest.into(), platform, ..desc(media::OCI_MANIFEST) }
    }

    #[test]
    fn every_wasm_layer_type_is_found_and_others_are_named() {
        for t in media::RAW_WASM_LAYERS {
            let m = Manifest { media_type: None, config: None, layers: vec![desc("x/y"), desc(t)], manifests: vec![] };
            assert_eq!(m.component_layer("r").unwrap().1, LayerKind::Raw);
        }
        let tar =
            Manifest { media_type: None, config: None, layers: vec![desc(media::TAR_LAYERS[0])], manifests: vec![] };
        assert_eq!(tar.component_layer("r").unwrap().1, LayerKind::Tar);
        let gz = Manifest { layers: vec![desc(media::TAR_GZIP_LAYERS[0])], ..tar };
        assert_eq!(gz.component_layer("r").unwrap().1, LayerKind::TarGzip);
        let gz = "application/vnd.oci.image.layer.v1.tar+zstd";
        let m = Manifest { media_type: None, config: Some(desc("c/j")), layers: vec![desc(gz)], manifests: vec![] };
        let err = m.component_layer("oci://r/a:b").unwrap_err().to_string();
        assert!(err.contains(gz) && err.contains("config c/j") && err.contains("oci://r/a:b"), "{err}");
    }

    #[test]
    fn index_prefers_wasip2_then_wasip1() {
        let both = Manifest {
            media_type: Some(media::OCI_INDEX.into()),
            config: None,
            layers: vec![],
            manifests: vec![entry("wasip1", "sha256:p1"), entry("wasip2", "sha256:p2")],
        };
        assert_eq!(both.pick_platform("r").unwrap().digest, "sha256:p2");
        let p1 = Manifest { manifests: vec![entry("wasip1", "sha256:p1")], ..both.clone() };
        assert_eq!(p1.pick_platform("r").unwrap().digest, "sha256:p1");
        let linux = Manifest { manifests: vec![entry("linux", "sha256:l")], ..both };
        assert!(linux.pick_platform("r").unwrap_err().to_string().contains("linux/wasm"));
    }

    #[test]
    fn tar_layer_must_hold_exactly_one_wasm_file() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "app/app.wasm", &b"abc"[..]).unwrap();
        let one = b.into_inner().unwrap();
        assert_eq!(wasm_from_layer(one.clone(), LayerKind::Tar, "r").unwrap(), b"abc");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &one).unwrap();
        assert_eq!(wasm_from_layer(gz.finish().unwrap(), LayerKind::TarGzip, "r").unwrap(), b"abc");
        assert!(wasm_from_layer(b"not a tar at all, certainly".to_vec(), LayerKind::Tar, "r").is_err());
        assert!(wasm_from_layer(one, LayerKind::TarGzip, "r").is_err(), "not gzip");
    }

    fn tar_of(files: &[(&str, usize)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, len) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(*len as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, std::io::repeat(0).take(*len as u64)).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_layer_that_unpacks_past_the_bound_is_refused_with_the_reason() {
        const MAX: u64 = 4 << 20;
        // 8 MiB of zeros compress to a few KiB: the gzip layer is small, what it unpacks to is not.
        for files in [&[("app.wasm", 8 << 20)][..], &[("padding.bin", 8 << 20), ("app.wasm", 10)][..]] {
            let bomb = gzip(&tar_of(files));
            assert!((bomb.len() as u64) < MAX);
            let err = unpack(bomb, LayerKind::TarGzip, "oci://r/a:b", MAX).unwrap_err().to_string();
            assert!(
                err.contains("than 4 MiB, the most a node accepts") && err.contains("oci://r/a:b"),
                "{files:?}: {err}"
            );
        }
        let raw = vec![0u8; (MAX + 1) as usize];
        let err = unpack(raw, LayerKind::Raw, "r", MAX).unwrap_err().to_string();
        assert!(err.contains("the image layer is larger than 4 MiB"), "{err}");
        // Under the bound, the same shapes unpack.
        let fine = gzip(&tar_of(&[("padding.bin", 1 << 20), ("app.wasm", 10)]));
        assert_eq!(unpack(fine, LayerKind::TarGzip, "r", MAX).unwrap().len(), 10);
    }
}

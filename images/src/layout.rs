//! OCI image layouts built in memory and written as tarballs that `ctr images import`, `kind load
//! image-archive` and `skopeo copy oci-archive:` accept: the test images of the node harness (one platform,
//! uncompressed) and wasmkube's own images (one manifest per platform under an image index, gzip layers).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// Media type of an OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Index annotation containerd reads to name an imported image.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Standard OCI annotation naming a manifest in a layout (the tag, as containerd's exporter writes it).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// OCI `os` and `architecture` of the machine the tests run on.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

#[derive(Debug, Clone)]
enum Entry {
    File { bytes: Vec<u8>, mode: u32 },
    Symlink { target: String },
    Dir { mode: u32 },
}

/// A single-layer image under construction: files, symlinks and the process config.
#[derive(Debug, Clone)]
pub struct OciImage {
    name: String,
    entries: Vec<(String, Entry)>,
    entrypoint: Vec<String>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
    platform: Platform,
    gzip: bool,
}

/// OCI `os` and `architecture` of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
}

impl Platform {
    /// The machine this code runs on.
    pub fn host() -> Self {
        let (os, arch) = host_platform();
        Platform { os: os.into(), architecture: arch.into() }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once('/') {
            Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
                Ok(Platform { os: os.into(), architecture: arch.into() })
            }
            _ => Err(format!("`{s}` is not a platform such as linux/amd64")),
        }
    }
}

/// What was written: the image name and the digests that identify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The image reference the layout names (`io.containerd.image.name`).
    pub name: String,
    /// Digest of the manifest (what `ctr images ls` shows).
    pub manifest_digest: String,
    /// Size of the manifest in bytes.
    pub manifest_size: u64,
    /// Digest of the config blob.
    pub config_digest: String,
    /// Digest of the layer blob (equal to its diff_id when the layer is uncompressed).
    pub layer_digest: String,
}

/// A complete image layout in memory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Names and digests.
    pub info: ImageInfo,
    /// `index.json` contents.
    pub index: Vec<u8>,
    /// Blobs by digest: layer, config, manifest.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl OciImage {
    /// Starts an empty image called `name` (a full reference such as `docker.io/library/x:tag`).
    pub fn new(name: impl Into<String>) -> Self {
        OciImage {
            name: name.into(),
            entries: Vec::new(),
            entrypoint: Vec::new(),
            cmd: None,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            platform: Platform::host(),
            gzip: false,
        }
    }

    /// The image reference.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the image.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a regular file; missing parent directories are created with mode 0755.
    pub fn file(mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Self {
        let bytes = bytes.into();
        self.entries.push((path.into(), Entry::File { bytes, mode }));
        self
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let target = target.into();
        self.entries.push((path.into(), Entry::Symlink { target }));
        self
    }

    /// Adds every file, symbolic link and directory under `root` (modes kept, owners root).
    pub fn contents_of(mut self, root: &Path) -> Result<Self> {
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))?;
            let mut entries =
                entries.collect::<std::io::Result<Vec<_>>>().ctx(|| format!("reading {}", dir.display()))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
                let Some(inside) = path.strip_prefix(root).ok().and_then(Path::to_str).map(str::to_string) else {
                    return Err(self.invalid(format!("`{}` is not a UTF-8 path", path.display())));
                };
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).ctx(|| format!("reading {}", path.display()))?;
                    self = self.symlink(&inside, &target.to_string_lossy());
                } else if meta.is_dir() {
                    self = self.dir(&inside, mode);
                    pending.push(path);
                } else if meta.is_file() {
                    let bytes = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
                    self = self.file(&inside, bytes, mode);
                } else {
                    return Err(self.invalid(format!("`{}` is neither a file, a directory nor a link", path.display())));
                }
            }
        }
        Ok(self)
    }

    /// Adds a directory with an explicit mode.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entries.push((path.into(), Entry::Dir { mode }));
        self
    }

    /// Sets `config.Entrypoint`.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `config.Cmd`.
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds (or replaces) an environment variable in `config.Env`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        self.env.retain(|e| !e.starts_with(&prefix));
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Sets `config.WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets `config.User` (`UID:GID`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the platform the config and the index name (the host's by default).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Compresses the layer with gzip (as registries store layers); uncompressed by default.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// Adds a label to `config.Labels`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Builds the layer, config, manifest and index in memory.
    pub fn layout(&self) -> Result<Layout> {
        let tar = self.layer_tar()?;
        let diff_id = sha256_digest(&tar);
        let (layer, layer_type) =
            if self.gzip { (gzip(&tar)?, MEDIA_TYPE_LAYER_GZIP) } else { (tar, MEDIA_TYPE_LAYER_TAR) };
        let layer_digest = sha256_digest(&layer);
        let config = serde_json::to_vec(&self.config_json(&diff_id))?;
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": descriptor(MEDIA_TYPE_CONFIG, &config_digest, config.len()),
            "layers": [descriptor(layer_type, &layer_digest, layer.len())],
        }))?;
        let manifest_digest = sha256_digest(&manifest);
        let info = ImageInfo {
            name: self.name.clone(),
            manifest_digest,
            manifest_size: manifest.len() as u64,
            config_digest,
            layer_digest,
        };
        let index = serde_json::to_vec(&self.index_json(&info))?;
        let blobs = BTreeMap::from([
            (info.layer_digest.clone(), layer),
            (info.config_digest.clone(), config),
            (info.manifest_digest.clone(), manifest),
        ]);
        Ok(Layout { info, index, blobs })
    }

    /// Writes the image as an OCI layout tarball at `out`.
    pub fn write_tar(&self, out: &Path) -> Result<ImageInfo> {
        let layout = self.layout()?;
        layout.write_tar(out)?;
        tracing::debug!(image = %self.name, digest = %layout.info.manifest_digest, out = %out.display(), "wrote OCI tar");
        Ok(layout.info)
    }

    /// Writes the image as an OCI layout directory at `dir` (skopeo's `oci:DIR`).
    pub fn write_dir(&self, dir: &Path) -> Result<ImageInfo> {
        let layout = self.layout()?;
        for (path, bytes) in layout.files() {
            let target = dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&target, bytes).ctx(|| format!("writing {}", target.display()))?;
        }
        Ok(layout.info)
    }

    fn config_json(&self, diff_id: &str) -> Value {
        let mut config = json!({ "Env": self.env, "Entrypoint": self.entrypoint });
        if let Some(cmd) = &self.cmd {
            config["Cmd"] = json!(cmd);
        }
        if let Some(wd) = &self.working_dir {
            config["WorkingDir"] = json!(wd);
        }
        if let Some(user) = &self.user {
            config["User"] = json!(user);
        }
        if !self.labels.is_empty() {
            config["Labels"] = json!(self.labels);
        }
        json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": "wasmkube-images" }],
        })
    }

    fn index_json(&self, info: &ImageInfo) -> Value {
        let mut manifest = self.platform_descriptor(info);
        manifest["annotations"] = name_annotations(&self.name);
        index(vec![manifest])
    }

    fn platform_descriptor(&self, info: &ImageInfo) -> Value {
        let mut manifest = descriptor(MEDIA_TYPE_MANIFEST, &info.manifest_digest, info.manifest_size as usize);
        manifest["platform"] = json!({ "os": self.platform.os, "architecture": self.platform.architecture });
        manifest
    }

    /// The single uncompressed layer: every entry plus its parent directories, parents first.
    fn layer_tar(&self) -> Result<Vec<u8>> {
        let tree = self.tree()?;
        let mut tar = tar::Builder::new(Vec::new());
        let ctx = || format!("building layer of {}", self.name);
        for (path, entry) in &tree {
            match entry {
                Entry::File { bytes, mode } => append_file(&mut tar, path, bytes, *mode),
                Entry::Dir { mode } => append_dir(&mut tar, path, *mode),
                Entry::Symlink { target } => append_symlink(&mut tar, path, target),
            }
            .ctx(ctx)?;
        }
        tar.into_inner().ctx(ctx)
    }

    /// Normalized paths to entries; a BTreeMap puts every parent before its children.
    fn tree(&self) -> Result<BTreeMap<String, Entry>> {
        let mut tree = BTreeMap::new();
        for (raw, entry) in &self.entries {
            let path = self.normalize(raw)?;
            for parent in parents(&path) {
                match tree.get(&parent) {
                    None => {
                        tree.insert(parent, Entry::Dir { mode: 0o755 });
                    }
                    Some(Entry::Dir { .. }) => {}
                    Some(_) => return Err(self.invalid(format!("`{parent}` is not a directory"))),
                }
            }
            let explicit_dir = matches!(entry, Entry::Dir { .. });
            match tree.get(&path) {
                Some(Entry::Dir { .. }) if !explicit_dir => {
                    return Err(self.invalid(format!("`{path}` is already a directory")))
                }
                _ => {
                    tree.insert(path, entry.clone());
                }
            }
        }
        Ok(tree)
    }

    fn normalize(&self, raw: &str) -> Result<String> {
        let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(self.invalid(format!("bad path `{raw}`")));
        }
        Ok(parts.join("/"))
    }

    fn invalid(&self, reason: String) -> Error {
        Error::Image { image: self.name.clone(), reason }
    }
}

/// One image for several platforms: an archive whose `index.json` names an image index (as `docker buildx
/// --output type=oci` writes it), which lists one manifest per platform.
pub fn multi_platform(name: &str, images: &[OciImage]) -> Result<Layout> {
    let invalid = |reason: String| Error::Image { image: name.to_string(), reason };
    let mut blobs = BTreeMap::new();
    let mut manifests = Vec::new();
    let mut platforms = Vec::new();
    for image in images {
        if image.name != name {
            return Err(invalid(format!("an image named `{}` cannot be one of its platforms", image.name)));
        }
        if platforms.contains(&image.platform) {
            return Err(invalid(format!("platform {} given twice", image.platform)));
        }
        platforms.push(image.platform.clone());
        let layout = image.layout()?;
        manifests.push(image.platform_descriptor(&layout.info));
        blobs.extend(layout.blobs);
    }
    let Some(first) = images.first() else { return Err(invalid("no platform".into())) };
    let platform_index = serde_json::to_vec(&index(manifests))?;
    let index_digest = sha256_digest(&platform_index);
    let mut top = descriptor(MEDIA_TYPE_INDEX, &index_digest, platform_index.len());
    top["annotations"] = name_annotations(name);
    let first = first.layout()?.info;
    let info = ImageInfo {
        name: name.to_string(),
        manifest_digest: index_digest.clone(),
        manifest_size: platform_index.len() as u64,
        config_digest: first.config_digest,
        layer_digest: first.layer_digest,
    };
    blobs.insert(index_digest, platform_index);
    Ok(Layout { info, index: serde_json::to_vec(&index(vec![top]))?, blobs })
}

fn index(manifests: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests })
}

/// The name as containerd's importer reads it, and the tag as the OCI layout spec (and skopeo) reads it.
fn name_annotations(name: &str) -> Value {
    json!({ ANNOTATION_CONTAINERD_NAME: name, ANNOTATION_REF_NAME: ref_name(name) })
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // No file name and mtime 0 in the header, so the digest depends on the contents alone.
    let mut encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).ctx(|| "compressing a layer".to_string())?;
    encoder.finish().ctx(|| "compressing a layer".to_string())
}

impl Layout {
    /// Writes the layout as a tarball at `out`.
    pub fn write_tar(&self, out: &Path) -> Result<()> {
        let ctx = || format!("writing OCI tar {}", out.display());
        let file = std::fs::File::create(out).ctx(ctx)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        for (path, bytes) in self.files() {
            append_file(&mut tar, &path, &bytes, 0o644).ctx(ctx)?;
        }
        let mut w = tar.into_inner().ctx(ctx)?;
        w.flush().ctx(ctx)
    }

    /// Every file of the layout directory: `oci-layout`, `index.json` and the blobs.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = vec![
            ("oci-layout".to_string(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json".to_string(), self.index.clone()),
        ];
        for (digest, bytes) in &self.blobs {
            let hex = digest.trim_start_matches("sha256:");
            files.push((format!("blobs/sha256/{hex}"), bytes.clone()));
        }
        files
    }
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// The tag of a reference (`latest` when it has none), as containerd's exporter writes it.
pub fn ref_name(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !last.contains('@') => tag,
        _ => "latest",
    }
}

fn parents(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    (1..parts.len()).map(|n| parts[..n].join("/")).collect()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    // A fixed mtime keeps digests reproducible between runs.
    h.set_mtime(0);
    h
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, bytes.len() as u64);
    tar.append_data(&mut h, path, bytes)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
}

fn append_symlink<W: Write>(tar: &mut tar::Builder<W>, path: &str, target: &str) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, path, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_tar(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, u32, Vec<u8>, Option<String>)> {
        let mut out = BTreeMap::new();
        let mut archive = tar::Archive::new(bytes);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap();
            let link = entry.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.insert(path, (kind, mode, data, link));
        }
        out
    }

    fn sample() -> OciImage {
        OciImage::new("example.test/ns/sample:v1")
            .file("/usr/bin/tool", b"#!tool".to_vec(), 0o755)
            .file("etc/conf", b"x=1".to_vec(), 0o644)
            .symlink("/bin/sh", "busybox")
            .entrypoint(["/usr/bin/tool", "--flag"])
            .env("GREETING", "hi")
    }

    #[test]
    fn layout_digests_match_contents() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.tar");
        let info = sample().write_tar(&out).unwrap();
        let files = read_tar(&std::fs::read(&out).unwrap());

        assert_eq!(files["oci-layout"].2, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
        for (path, (_, _, data, _)) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_digest(data), format!("sha256:{hex}"), "{path}");
            }
        }
        let blob = |d: &str| &files[&format!("blobs/sha256/{}", &d[7..])].2;

        let index: Value = serde_json::from_slice(&files["index.json"].2).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], info.manifest_digest.as_str());
        assert_eq!(m["size"], blob(&info.manifest_digest).len());
        assert_eq!(m["annotations"][ANNOTATION_CONTAINERD_NAME], "example.test/ns/sample:v1");
        assert_eq!(m["annotations"][ANNOTATION_REF_NAME], "v1");
        assert_eq!(m["platform"]["architecture"], host_platform().1);

        let manifest: Value = serde_json::from_slice(blob(&info.manifest_digest)).unwrap();
        assert_eq!(manifest["config"]["digest"], info.config_digest.as_str());
        assert_eq!(manifest["layers"][0]["digest"], info.layer_digest.as_str());
        assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_TAR);

        let config: Value = serde_json::from_slice(blob(&info.config_digest)).unwrap();
        let layer = blob(&info.layer_digest);
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256_digest(layer).as_str());
        assert_eq!(config["config"]["Entrypoint"], json!(["/usr/bin/tool", "--flag"]));
        assert!(config["config"]["Env"].as_array().unwrap().contains(&json!("GREETING=hi")));
        assert_eq!(config["os"], "linux");
    }

    #[test]
    fn layer_has_parents_modes_and_links() {
        let layout = sample().layout().unwrap();
        let layer = read_tar(&layout.blobs[&layout.info.layer_digest]);
        let names: Vec<&str> = layer.keys().map(String::as_str).collect();
        assert_eq!(names, ["bin/", "bin/sh", "etc/", "etc/conf", "usr/", "usr/bin/", "usr/bin/tool"]);
        let (kind, mode, data, _) = &layer["usr/bin/tool"];
        assert_eq!((*kind, *mode, data.as_slice()), (tar::EntryType::Regular, 0o755, &b"#!tool"[..]));
        assert_eq!(layer["usr/bin/"].0, tar::EntryType::Directory);
        assert_eq!(layer["bin/sh"].0, tar::EntryType::Symlink);
        assert_eq!(layer["bin/sh"].3.as_deref(), Some("busybox"));
    }

    #[test]
    fn digests_are_reproducible() {
        let a = sample().layout().unwrap().info;
        let b = sample().layout().unwrap().info;
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_bad_paths() {
        let err = OciImage::new("x").file("../etc", vec![], 0o644).layout();
        assert!(matches!(err, Err(Error::Image { .. })));
        let err = OciImage::new("x").file("a", vec![], 0o644).file("a/b", vec![], 0o644).layout();
        assert!(matches!(err, Err(Error::Image { .. })));
    }

    #[test]
    fn a_directory_tree_becomes_the_layer() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::write(root.path().join("usr/bin/tool"), b"#!tool").unwrap();
        std::fs::set_permissions(root.path().join("usr/bin/tool"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        let layout = OciImage::new("x:1").contents_of(root.path()).unwrap().layout().unwrap();
        let layer = read_tar(&layout.blobs[&layout.info.layer_digest]);
        assert_eq!((layer["usr/bin/tool"].1, layer["usr/bin/tool"].2.as_slice()), (0o755, &b"#!tool"[..]));
        assert_eq!(layer["bin"].3.as_deref(), Some("usr/bin"));
        assert_eq!(layer["usr/bin/"].0, tar::EntryType::Directory);
    }

    #[test]
    fn ref_name_is_the_tag() {
        assert_eq!(ref_name("docker.io/library/busybox:1.36"), "1.36");
        assert_eq!(ref_name("localhost:5000/repo"), "latest");
        assert_eq!(ref_name("localhost:5000/repo:t"), "t");
    }
}

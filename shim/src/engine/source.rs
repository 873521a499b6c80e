//! Components that are files in the container's rootfs.
//!
//! `process.args[0]` names the component (design: the component reference). A path is a file in the
//! container's rootfs, read here; `oci://` references are pulled by [`super::registry`].

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::runtime::LaunchError;

/// A component's bytes and their content digest.
pub struct ComponentBytes {
    /// `sha256:<hex>` of the bytes: the key compiled code is shared under.
    pub digest: String,
    /// The component binary.
    pub bytes: Vec<u8>,
    /// Where it came from, for messages.
    pub origin: String,
    /// Something the container's log should say before the component runs (a tag started from the cache).
    pub notice: Option<String>,
}

/// Reads the component named by `reference` for a container whose root filesystem is `rootfs`.
pub fn read(reference: &str, rootfs: &Path) -> Result<ComponentBytes, LaunchError> {
    let path = resolve_in_rootfs(reference, rootfs)?;
    let bytes = std::fs::read(&path).map_err(|e| {
        LaunchError::not_found(format!("component {reference}: cannot read it from the container image: {e}"))
    })?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    Ok(ComponentBytes { digest, bytes, origin: reference.to_string(), notice: None })
}

/// Joins `reference` to `rootfs`, refusing paths (or symlinks) that lead outside it.
fn resolve_in_rootfs(reference: &str, rootfs: &Path) -> Result<PathBuf, LaunchError> {
    if !reference.starts_with('/') {
        return Err(LaunchError::not_found(format!(
            "component {reference:?}: process.args[0] must be an absolute path in the image or an oci:// reference"
        )));
    }
    let root = rootfs
        .canonicalize()
        .map_err(|e| LaunchError::cannot_run(format!("container rootfs {} is not usable: {e}", rootfs.display())))?;
    let joined = root.join(reference.trim_start_matches('/'));
    let real = joined
        .canonicalize()
        .map_err(|e| LaunchError::not_found(format!("component {reference} not found in the container image: {e}")))?;
    if !real.starts_with(&root) {
        return Err(LaunchError::cannot_run(format!(
            "component {reference} resolves outside the container's root filesystem"
        )));
    }
    if !real.is_file() {
        return Err(LaunchError::cannot_run(format!("component {reference} is not a regular file")));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_in_the_rootfs_with_its_digest() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("app.wasm"), b"abc").unwrap();
        let c = read("/app.wasm", root.path()).unwrap();
        assert_eq!(c.digest, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn missing_file_is_exit_127_naming_the_path() {
        let root = tempfile::tempdir().unwrap();
        let err = read("/nope.wasm", root.path()).err().unwrap();
        assert_eq!(err.exit_code, 127);
        assert!(err.message.contains("/nope.wasm"), "{}", err.message);
    }

    #[test]
    fn symlinks_out_of_the_rootfs_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("app.wasm")).unwrap();
        let err = read("/app.wasm", root.path()).err().unwrap();
        assert!(err.message.contains("outside"), "{}", err.message);
    }

    #[test]
    fn relative_paths_are_refused() {
        let root = tempfile::tempdir().unwrap();
        assert!(read("app.wasm", root.path()).is_err());
    }
}

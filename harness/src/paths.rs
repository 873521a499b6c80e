//! Where the repository and its build outputs are.

use std::path::{Path, PathBuf};

pub use wasmkube_contract::runtime::SHIM_BINARY;

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (made absolute) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| workspace_root());
    resolve_target_dir(std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from), &cwd, &workspace_root())
}

/// Target-dir rule, separated from the environment for tests.
pub fn resolve_target_dir(env: Option<PathBuf>, cwd: &Path, root: &Path) -> PathBuf {
    match env {
        Some(dir) if dir.as_os_str().is_empty() => root.join("target"),
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => cwd.join(dir),
        None => root.join("target"),
    }
}

/// The host target every binary and test is built for (`.cargo/config.toml`): static musl executables.
pub const HOST_TARGET: &str = "x86_64-unknown-linux-musl";

/// Where a release build puts the shim binary.
pub fn shim_release_binary() -> PathBuf {
    target_dir().join(HOST_TARGET).join("release").join(SHIM_BINARY)
}

/// The directory of this build's binaries (`<target>/<triple>/debug` for `cargo test`): the running
/// executable's own directory, or its parent when that is `deps/` (where cargo puts test executables).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    bin_dir_of(&exe)
}

/// Binary-dir rule, separated from the environment for tests.
pub fn bin_dir_of(exe: &Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("."));
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// A binary of this build, with a message naming the command that builds it when it is missing
/// (`cargo test --workspace` builds every binary before any test runs; a single crate's tests do not).
pub fn built_binary(name: &str, package: &str) -> crate::Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(crate::Error::Setup(format!("{} is not built: run `cargo build -p {package}` first", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_sit_beside_deps() {
        let t = Path::new("/w/target/x86_64-unknown-linux-musl/debug");
        assert_eq!(bin_dir_of(&t.join("deps/node-0123abcd")), t);
        assert_eq!(bin_dir_of(&t.join("wasmkube-demo")), t);
    }

    #[test]
    fn root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("harness").is_dir());
    }

    #[test]
    fn target_dir_rules() {
        let (cwd, root) = (Path::new("/c"), Path::new("/r"));
        assert_eq!(resolve_target_dir(None, cwd, root), Path::new("/r/target"));
        assert_eq!(resolve_target_dir(Some("/t".into()), cwd, root), Path::new("/t"));
        assert_eq!(resolve_target_dir(Some("rel".into()), cwd, root), Path::new("/c/rel"));
        assert_eq!(resolve_target_dir(Some("".into()), cwd, root), Path::new("/r/target"));
    }
}

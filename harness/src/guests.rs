//! The guest components under `examples/`, built for wasm32-wasip2 on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cmd;
use crate::error::{Error, Result};
use crate::paths;

/// Target triple the guest workspace is built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// Outcome of the one guest build of this process (errors as text: they are reported to every caller).
static BUILD: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Path of the release build of guest `name`, building the guest workspace once if it is missing.
pub fn guest_wasm(name: &str) -> Result<PathBuf> {
    let path = guest_path(&paths::target_dir(), name);
    if path.is_file() {
        return Ok(path);
    }
    let built = BUILD.get_or_init(|| build_guests().map_err(|e| format!("{e}")));
    if let Err(reason) = built {
        return Err(Error::Guest { name: name.into(), reason: reason.clone() });
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Guest {
            name: name.into(),
            reason: format!("not found at {} after building examples/", path.display()),
        })
    }
}

/// Where cargo puts guest `name` for a release build in `target_dir`.
pub fn guest_path(target_dir: &Path, name: &str) -> PathBuf {
    target_dir.join(GUEST_TARGET).join("release").join(format!("{name}.wasm"))
}

/// Builds every guest in release mode.
pub fn build_guests() -> Result<()> {
    let examples = paths::workspace_root().join("examples");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(examples.join("Cargo.toml"))
        // Cargo finds `examples/.cargo/config.toml` (target and target-dir) from the working directory.
        .current_dir(&examples)
        .env("CARGO_TARGET_DIR", paths::target_dir());
    tracing::info!(command = %cmd::describe(&c), "building guest components");
    cmd::run_checked(&mut c, Duration::from_secs(1800)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_path_layout() {
        assert_eq!(
            guest_path(Path::new("/w/target"), "hello-cli"),
            Path::new("/w/target/wasm32-wasip2/release/hello-cli.wasm")
        );
    }

    #[test]
    fn guest_workspace_exists_where_expected() {
        assert!(paths::workspace_root().join("examples/Cargo.toml").is_file());
    }
}

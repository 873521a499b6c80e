//! Which containerd the private instance runs: Debian's package by default, or the binaries of a directory a
//! developer names in [`BIN_DIR_ENV`] (e.g. a containerd 2.x build, which Debian bookworm does not package).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmkube_contract::containerd::ConfigVersion;

use crate::cmd;
use crate::error::{Error, Result};
use crate::packages::Package;

/// A directory holding `containerd`, `ctr` and `containerd-shim-runc-v2`; the harness runs those instead of
/// Debian's. Unset or empty: Debian's containerd (installed on demand).
pub const BIN_DIR_ENV: &str = "WASMKUBE_CONTAINERD_BIN_DIR";

/// The binaries the harness takes from [`BIN_DIR_ENV`]; the runc shim too, since containerd 2.x would
/// otherwise find Debian's 1.6 one first on its PATH.
pub const BINARIES: [&str; 3] = ["containerd", "ctr", "containerd-shim-runc-v2"];

/// The containerd installation of a private instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `None`: the programs on the search path (Debian's package).
    dir: Option<PathBuf>,
}

impl Binaries {
    /// From [`BIN_DIR_ENV`]; a directory that lacks one of [`BINARIES`] is an error, not a silent fallback
    /// to Debian's containerd.
    pub fn from_env() -> Result<Self> {
        match std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()) {
            None => Ok(Binaries { dir: None }),
            Some(dir) => Binaries::in_dir(PathBuf::from(dir)),
        }
    }

    /// The binaries of `dir`, which must hold every one of [`BINARIES`].
    pub fn in_dir(dir: PathBuf) -> Result<Self> {
        let missing: Vec<&str> = BINARIES.iter().copied().filter(|b| !is_executable(&dir.join(b))).collect();
        if !missing.is_empty() {
            return Err(Error::Setup(format!(
                "{BIN_DIR_ENV}={} has no executable {}",
                dir.display(),
                missing.join(", ")
            )));
        }
        Ok(Binaries { dir: Some(dir) })
    }

    /// The directory named by [`BIN_DIR_ENV`], if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The Debian packages still needed: runc always; containerd and ctr only without a directory.
    pub fn packages(&self) -> Vec<Package> {
        match self.dir {
            None => vec![Package::Containerd, Package::Ctr, Package::Runc],
            Some(_) => vec![Package::Runc],
        }
    }

    /// The program to run for `name` (one of [`BINARIES`]).
    pub fn program(&self, name: &str) -> OsString {
        match &self.dir {
            Some(dir) => dir.join(name).into_os_string(),
            None => name.into(),
        }
    }

    /// The config layout this containerd reads natively: version 3 from containerd 2.0 on (2.x would migrate a
    /// version 2 file, but not every key: 2.1 drops the CRI snapshotter), version 2 before.
    pub fn config_version(&self, timeout: Duration) -> Result<ConfigVersion> {
        let mut c = std::process::Command::new(self.program("containerd"));
        let out = cmd::run_checked(c.arg("--version"), timeout)?;
        let major = parse_major_version(&out.stdout).ok_or_else(|| {
            Error::Setup(format!("cannot read a version from `containerd --version`: {:?}", out.stdout.trim()))
        })?;
        Ok(if major >= 2 { ConfigVersion::V3 } else { ConfigVersion::V2 })
    }
}

/// The major version in `containerd --version`'s `containerd <package> <version> <revision>`
/// (`1.6.20~ds1` from Debian, `v2.1.5` from a build).
pub fn parse_major_version(out: &str) -> Option<u32> {
    let version = out.split_whitespace().nth(2)?;
    version.trim_start_matches('v').split('.').next()?.parse().ok()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn versions_of_debian_and_of_a_build_are_read() {
        let debian = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n";
        assert_eq!(parse_major_version(debian), Some(1));
        let build = "containerd github.com/containerd/containerd/v2 v2.1.5 fcd43222d6b07379a4be9786bda52438f0dd16a1\n";
        assert_eq!(parse_major_version(build), Some(2));
        assert_eq!(parse_major_version("containerd"), None);
        assert_eq!(parse_major_version("containerd x dev"), None);
    }

    #[test]
    fn a_directory_must_hold_all_three_binaries() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["containerd", "ctr"] {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let err = Binaries::in_dir(dir.path().into()).unwrap_err().to_string();
        assert!(err.contains("no executable containerd-shim-runc-v2"), "{err}");

        let shim = dir.path().join("containerd-shim-runc-v2");
        std::fs::write(&shim, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bins = Binaries::in_dir(dir.path().into()).unwrap();
        assert_eq!(bins.program("ctr"), dir.path().join("ctr").into_os_string());
        assert_eq!(bins.packages(), [Package::Runc], "containerd and ctr come from the directory");
    }

    #[test]
    fn without_a_directory_debians_programs_are_used() {
        let bins = Binaries { dir: None };
        assert_eq!(bins.program("containerd"), OsString::from("containerd"));
        assert_eq!(bins.packages(), [Package::Containerd, Package::Ctr, Package::Runc]);
    }
}

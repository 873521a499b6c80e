//! Debian packages a node test needs, installed on demand with apt-get.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::cmd;
use crate::error::{Error, Result};

/// Directory where Debian's containernetworking-plugins puts the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A tool a node test needs, and the Debian packages that provide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Package {
    /// The containerd daemon.
    Containerd,
    /// containerd's `ctr` client (shipped in the same Debian package).
    Ctr,
    /// The runc OCI runtime.
    Runc,
    /// A statically linked `/bin/busybox`, copied into test images.
    BusyboxStatic,
    /// The CNI plugins (bridge, host-local, loopback).
    CniPlugins,
    /// The `docker-registry` OCI registry server.
    DockerRegistry,
    /// `skopeo`, used to push image layouts to a registry.
    Skopeo,
    /// `htpasswd` (apache2-utils), for the bcrypt password file of an authenticating registry.
    Htpasswd,
    /// gcc with a static libc, for the pause binary.
    StaticCToolchain,
    /// `curl`, an independent HTTP client (HTTP/2 prior knowledge) for the wasi:http tests.
    Curl,
    /// `wrk`, the HTTP load generator of the benchmarks.
    Wrk,
}

impl Package {
    /// Everything a full node test uses.
    pub const ALL: &'static [Package] = &[
        Package::Containerd,
        Package::Ctr,
        Package::Runc,
        Package::BusyboxStatic,
        Package::CniPlugins,
        Package::DockerRegistry,
        Package::Skopeo,
        Package::Htpasswd,
        Package::StaticCToolchain,
        Package::Curl,
        Package::Wrk,
    ];

    /// Debian package names that provide this tool.
    pub fn debian_packages(self) -> &'static [&'static str] {
        match self {
            Package::Containerd | Package::Ctr => &["containerd"],
            Package::Runc => &["runc"],
            Package::BusyboxStatic => &["busybox-static"],
            Package::CniPlugins => &["containernetworking-plugins"],
            Package::DockerRegistry => &["docker-registry"],
            Package::Skopeo => &["skopeo"],
            Package::Htpasswd => &["apache2-utils"],
            Package::StaticCToolchain => &["gcc", "libc6-dev"],
            Package::Curl => &["curl"],
            Package::Wrk => &["wrk"],
        }
    }

    /// Whether the tool is usable right now.
    pub fn is_present(self) -> bool {
        match self {
            Package::Containerd => which("containerd").is_some(),
            Package::Ctr => which("ctr").is_some(),
            Package::Runc => which("runc").is_some(),
            Package::BusyboxStatic => is_static_elf(Path::new(BUSYBOX)),
            Package::CniPlugins => {
                ["bridge", "host-local", "loopback"].iter().all(|p| Path::new(CNI_BIN_DIR).join(p).is_file())
            }
            Package::DockerRegistry => which("docker-registry").is_some(),
            Package::Skopeo => which("skopeo").is_some(),
            Package::Htpasswd => which("htpasswd").is_some(),
            Package::StaticCToolchain => which("gcc").is_some() && static_libc_present(),
            Package::Curl => which("curl").is_some(),
            Package::Wrk => which("wrk").is_some(),
        }
    }
}

/// Path of the static busybox from Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";

/// Serializes installs across test threads: apt holds a global lock anyway.
static APT: Mutex<bool> = Mutex::new(false);

/// Makes sure every tool in `packages` is present, installing missing ones with apt-get.
pub fn ensure_installed(packages: &[Package]) -> Result<()> {
    if packages.iter().all(|p| p.is_present()) {
        return Ok(());
    }
    let mut updated = APT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Another thread may have installed them while this one waited.
    let missing = missing_debian_packages(packages);
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Packages { packages: missing, reason: "not root, cannot run apt-get".into() });
    }
    tracing::info!(?missing, "installing Debian packages");
    if !*updated {
        apt(&["update"]).map_err(|e| packages_error(&missing, e))?;
        *updated = true;
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    apt(&args).map_err(|e| packages_error(&missing, e))?;
    let still = missing_debian_packages(packages);
    if still.is_empty() {
        Ok(())
    } else {
        Err(Error::Packages { packages: still, reason: "still missing after apt-get install".into() })
    }
}

fn missing_debian_packages(packages: &[Package]) -> Vec<String> {
    let mut names: Vec<String> = packages
        .iter()
        .filter(|p| !p.is_present())
        .flat_map(|p| p.debian_packages().iter().map(|s| s.to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn packages_error(missing: &[String], e: Error) -> Error {
    Error::Packages { packages: missing.to_vec(), reason: e.to_string() }
}

fn apt(args: &[&str]) -> Result<()> {
    let mut c = Command::new("apt-get");
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive").env("PATH", search_path());
    cmd::run_checked(&mut c, Duration::from_secs(900)).map(|_| ())
}

/// `$PATH` plus the sbin directories, which root needs for runc and apt.
pub fn search_path() -> String {
    let mut dirs: Vec<String> =
        std::env::var("PATH").unwrap_or_default().split(':').filter(|d| !d.is_empty()).map(str::to_string).collect();
    for extra in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        if !dirs.iter().any(|d| d == extra) {
            dirs.push(extra.to_string());
        }
    }
    dirs.join(":")
}

/// The first executable called `name` on [`search_path`].
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    search_path()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

fn static_libc_present() -> bool {
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    [format!("/usr/lib/{multiarch}/libc.a"), "/usr/lib/libc.a".to_string()].iter().any(|p| Path::new(p).is_file())
}

/// True for a 64-bit little-endian ELF executable without an interpreter (statically linked).
pub fn is_static_elf(path: &Path) -> bool {
    std::fs::read(path).map(|bytes| elf_has_no_interpreter(&bytes)).unwrap_or(false)
}

fn elf_has_no_interpreter(b: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let off = phoff + i * phentsize;
        match b.get(off..off + 4) {
            Some(t) => u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP,
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_not_static() {
        assert!(!is_static_elf(Path::new("/bin/sh")));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        assert!(!elf_has_no_interpreter(b"not an elf"));
    }

    #[test]
    fn search_path_has_sbin() {
        assert!(search_path().split(':').any(|d| d == "/usr/sbin"));
        assert!(which("sh").is_some());
    }

    #[test]
    fn present_tools_need_no_install() {
        let present: Vec<Package> = Package::ALL.iter().copied().filter(|p| p.is_present()).collect();
        assert!(missing_debian_packages(&present).is_empty());
        ensure_installed(&present).unwrap();
    }
}

//! What a guest sees of its container: args, env, stdio, and only the spec's volume mounts as preopens.

use std::path::Path;

use oci_spec::runtime::{Mount, Spec};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::log_pipe::LogPipe;
use crate::runtime::LaunchError;

/// Mount destinations that belong to the container's plumbing, not to the guest. `/var/run/wasmkube`
/// holds what the operator mounts for the shim itself (registry credentials).
const SYSTEM_MOUNTS: [&str; 4] = ["/proc", "/sys", "/dev", "/var/run/wasmkube"];
/// Env vars the operator sets for the shim (HTTP port, outbound allowlist, the metrics labels `WASMKUBE_APP`
/// and `WASMKUBE_NAMESPACE`); the guest never sees them.
const SHIM_ENV_PREFIX: &str = "WASMKUBE_";

/// Builds the WASI context of one instance from its container spec.
pub fn for_spec(spec: &Spec, stdout: LogPipe, stderr: LogPipe) -> Result<WasiCtx, LaunchError> {
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout).stderr(stderr);
    if let Some(process) = spec.process() {
        if let Some(args) = process.args() {
            b.args(args);
        }
        for entry in process.env().iter().flatten() {
            // Entries without '=' are invalid in an OCI spec; a process would not see them either.
            match entry.split_once('=') {
                Some((k, _)) if k.starts_with(SHIM_ENV_PREFIX) => {}
                Some((k, v)) => {
                    b.env(k, v);
                }
                None => {}
            }
        }
    }
    for mount in spec.mounts().iter().flatten().filter(|m| is_guest_volume(m)) {
        let (Some(source), dest) = (mount.source(), mount.destination()) else { continue };
        let perms = if is_read_only(mount) { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        let guest = dest.to_string_lossy();
        b.preopened_dir(source, guest.as_ref(), perms).map_err(|e| {
            LaunchError::cannot_run(format!(
                "volume mount {} (from {}) cannot be opened for the component: {e:#}",
                guest,
                source.display()
            ))
        })?;
    }
    Ok(b.build())
}

/// The value of env var `name` in the container spec (the operator's `WASMKUBE_*` settings for the shim).
pub fn spec_env<'a>(spec: &'a Spec, name: &str) -> Option<&'a str> {
    let env = spec.process().as_ref()?.env().as_ref()?;
    env.iter().filter_map(|e| e.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// A bind mount of a directory outside the system paths: a volume the guest may use.
fn is_guest_volume(mount: &Mount) -> bool {
    let dest = mount.destination();
    let is_bind =
        mount.typ().as_deref() == Some("bind") || mount.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
    let system = SYSTEM_MOUNTS.iter().any(|s| dest.starts_with(Path::new(s)));
    let is_dir = mount.source().as_ref().is_some_and(|s| s.is_dir());
    is_bind && !system && is_dir
}

fn is_read_only(mount: &Mount) -> bool {
    mount.options().iter().flatten().any(|o| o == "ro")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn bind(dest: &str, source: &Path, ro: bool) -> Mount {
        let mut options = vec!["rbind".to_string()];
        if ro {
            options.push("ro".into());
        }
        MountBuilder::default().destination(dest).source(source).typ("bind").options(options).build().unwrap()
    }

    #[test]
    fn only_directory_binds_outside_system_paths_become_preopens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        assert!(is_guest_volume(&bind("/data", dir.path(), false)));
        assert!(!is_guest_volume(&bind("/etc/hosts", &file, true)), "files cannot be preopens");
        assert!(!is_guest_volume(&bind("/dev/shm", dir.path(), false)));
        assert!(!is_guest_volume(&bind("/var/run/wasmkube/pull-secrets/reg", dir.path(), true)));
        let proc = MountBuilder::default().destination("/proc").typ("proc").source("proc").build().unwrap();
        assert!(!is_guest_volume(&proc));
        assert!(is_read_only(&bind("/cfg", dir.path(), true)));
    }
}

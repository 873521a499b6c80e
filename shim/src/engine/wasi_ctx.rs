//! What a guest sees of its container: args, env, stdio, and only the spec's volume mounts as preopens.
//!
//! A [`WasiTemplate`] is set up once per container; every instance (each wasi:http request, the one run of
//! a wasi:cli component) gets its own `WasiCtx` from it.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::log_pipe::LogPipe;
use crate::runtime::LaunchError;
use crate::spec::ContainerSpec;

/// A volume resolved to a directory that opened once.
#[derive(Debug, Clone)]
struct Preopen {
    host: PathBuf,
    guest: String,
    perms: FsPerms,
}

/// The per-container part of every instance's WASI context, resolved and checked once.
#[derive(Clone)]
pub struct WasiTemplate {
    inner: Arc<Template>,
}

struct Template {
    args: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    stdout: LogPipe,
    stderr: LogPipe,
}

impl WasiTemplate {
    /// Resolves the container's volumes: bind mounts whose source is a directory become preopens (files
    /// such as `/etc/hosts` cannot be), and each must open now, so a bad volume fails the container at
    /// create rather than each request.
    pub fn new(spec: &ContainerSpec, stdout: LogPipe, stderr: LogPipe) -> Result<Self, LaunchError> {
        let mut preopens = Vec::new();
        for volume in spec.volumes.iter().filter(|v| v.host.is_dir()) {
            let perms = if volume.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            let preopen = Preopen { host: volume.host.clone(), guest: volume.guest.clone(), perms };
            // The builder's own open, so the error is the one an instance would meet.
            preopen.add_to(&mut WasiCtxBuilder::new())?;
            preopens.push(preopen);
        }
        let template = Template { args: spec.args.clone(), env: spec.guest_env.clone(), preopens, stdout, stderr };
        Ok(Self { inner: Arc::new(template) })
    }

    /// A fresh context for one instance.
    ///
    /// Per instance stays what wasmtime-wasi cannot share: a `WasiCtx` is not `Clone`, and its builder
    /// takes preopens only as paths, so each instance opens its directories again (one `open` each, no
    /// re-validation) and copies args and env into its own context.
    pub fn instantiate(&self) -> Result<WasiCtx, LaunchError> {
        let t = &*self.inner;
        let mut b = WasiCtxBuilder::new();
        b.stdout(t.stdout.clone()).stderr(t.stderr.clone()).args(&t.args).envs(&t.env);
        for preopen in &t.preopens {
            preopen.add_to(&mut b)?;
        }
        Ok(b.build())
    }
}

impl Preopen {
    fn add_to(&self, b: &mut WasiCtxBuilder) -> Result<(), LaunchError> {
        b.preopened_dir(&self.host, &self.guest, self.perms).map_err(|e| {
            LaunchError::cannot_run(format!(
                "volume mount {} (from {}) cannot be opened for the component: {e:#}",
                self.guest,
                self.host.display()
            ))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::GuestVolume;

    fn spec_with(volumes: Vec<GuestVolume>) -> ContainerSpec {
        let oci: oci_spec::runtime::Spec = serde_json::from_str(r#"{"ociVersion": "1.0.2"}"#).unwrap();
        ContainerSpec { volumes, ..ContainerSpec::from_oci("c", &oci).unwrap() }
    }

    fn volume(host: PathBuf, guest: &str) -> GuestVolume {
        GuestVolume { host, guest: guest.into(), read_only: false }
    }

    #[tokio::test]
    async fn only_directories_become_preopens_and_instances_reuse_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "").unwrap();
        let (out, _d1) = LogPipe::new(None);
        let (err, _d2) = LogPipe::new(None);
        let spec = spec_with(vec![volume(dir.path().into(), "/data"), volume(file, "/etc/hosts")]);
        let template = WasiTemplate::new(&spec, out, err).unwrap();
        let guests: Vec<&str> = template.inner.preopens.iter().map(|p| p.guest.as_str()).collect();
        assert_eq!(guests, ["/data"], "files cannot be preopens");
        for _ in 0..3 {
            template.instantiate().unwrap();
        }
    }

    #[tokio::test]
    async fn a_directory_gone_after_create_is_a_clear_error_for_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let (out, _d1) = LogPipe::new(None);
        let (err, _d2) = LogPipe::new(None);
        let template = WasiTemplate::new(&spec_with(vec![volume(data.clone(), "/data")]), out, err).unwrap();
        std::fs::remove_dir(&data).unwrap();
        let e = template.instantiate().err().unwrap();
        assert_eq!(e.exit_code, 126);
        assert!(e.message.starts_with("volume mount /data (from "), "{}", e.message);
    }
}
